"""pycaffe's caffe.Detector: classify given windows of images (R-CNN style)."""
