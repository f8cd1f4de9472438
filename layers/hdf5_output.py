"""HDF5Output: writes its bottoms to an HDF5 file as Caffe does."""
