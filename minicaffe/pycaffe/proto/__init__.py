"""caffe.proto: the schema module, as pycaffe's."""
