"""pycaffe's caffe.coord_map: how blob coordinates map through layers (crop offsets for FCNs)."""
