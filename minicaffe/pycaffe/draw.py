"""pycaffe's caffe.draw: a net's graph through pydot and graphviz."""
