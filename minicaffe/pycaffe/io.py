"""pycaffe's caffe.io: image loading and the Transformer's preprocessing, blob/datum conversion."""
