"""pycaffe's NetSpec: nets written in Python (caffe.layers as L, caffe.params as P, to_proto)."""
