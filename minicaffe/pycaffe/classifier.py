"""pycaffe's caffe.Classifier: predict classes of images, with optional oversampling."""
