"""`minicaffe <command>`: caffe's train/test/time plus the tools, one module each in minicaffe.tools.

Caffe's flag spellings all work: -solver x, --solver=x, --solver x.
"""
import argparse
import importlib
import re
import sys

import numpy as np

from . import log
from .errors import CaffeError

COMMANDS = ["train", "test", "time", "convert_imageset", "convert_mnist_data", "convert_cifar_data",
            "compute_image_mean", "prune", "inspect", "compress", "decompress", "draw", "thin",
            "sensitivity", "lowrank", "quantize"]


def _caffe_flags(argv):
    """gflags accept -flag as well as --flag; argparse wants the latter."""
    return [("-" + a) if re.match(r"^-[a-zA-Z_]{2,}", a) else a for a in argv]


def main(argv=None):
    argv = _caffe_flags(sys.argv[1:] if argv is None else list(argv))
    parser = argparse.ArgumentParser(prog="minicaffe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="command")
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f"minicaffe.tools.{name}")
        modules[name] = mod
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.HELP))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    if getattr(args, "gpu", None) is not None:
        log.cpu_only(f"-gpu {args.gpu}")
    try:
        with np.errstate(all="ignore"):     # a diverging run says so in one warning line
            return modules[args.command].run(args) or 0
    except CaffeError as e:
        msg = " ".join(str(e).split("\n"))      # one line, whatever a file's names hold
        print(f"minicaffe {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"minicaffe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
