"""caffe_pb2 is minicaffe's schema: wire- and text-compatible with BVLC caffe.proto."""
from minicaffe.minicaffe_pb2 import *  # noqa: F401,F403
from minicaffe.minicaffe_pb2 import DESCRIPTOR  # noqa: F401
