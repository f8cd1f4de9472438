"""Log lines in glog's format, so Caffe's log parsers (tools/extra/parse_log.py) read them."""
import datetime
import os
import sys

stream = sys.stdout
quiet = False
_said = set()


def _line(level, msg, depth):
    f = sys._getframe(depth)     # inspect.stack() would read every caller's source: ~1 ms a line
    now = datetime.datetime.now()
    return (f"{level}{now:%m%d %H:%M:%S}.{now.microsecond:06d} {os.getpid():5d} "
            f"{os.path.basename(f.f_code.co_filename).replace('.py', '.cpp')}:{f.f_lineno}] {msg}\n")


def info(msg):
    if quiet:
        return
    stream.write(_line("I", msg, 2))
    stream.flush()


def warning(msg, depth=2):
    """A warning on stderr, as glog's LOG(WARNING): shown even when info lines are quiet."""
    sys.stderr.write(_line("W", msg, depth))
    sys.stderr.flush()


def warn_once(msg):
    """A warning, the first time only (asking for a GPU, say, in every script)."""
    if msg in _said:
        return
    _said.add(msg)
    warning(msg, 3)


def cpu_only(what):
    warn_once(f"{what}: minicaffe has no GPU mode; running on the CPU")
