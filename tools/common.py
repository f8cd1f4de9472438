"""Flags shared by train, test and time, as caffe's tool defines them."""
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError


def add_net_state(p):
    p.add_argument("--phase", default=None, help="TRAIN or TEST")
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--stage", default="", help="comma-separated stages")
    p.add_argument("--gpu", default=None, help="accepted for compatibility; minicaffe runs on the CPU")


def phase(a, default):
    if a.phase is None:
        return default
    if a.phase.upper() not in ("TRAIN", "TEST"):
        raise CaffeError(f"--phase must be TRAIN or TEST, got '{a.phase}'")
    return pb.TRAIN if a.phase.upper() == "TRAIN" else pb.TEST


def stages(a):
    return [s for s in a.stage.split(",") if s]
