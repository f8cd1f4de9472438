"""WindowData: R-CNN style windows cut from images listed in Caffe's window file."""
