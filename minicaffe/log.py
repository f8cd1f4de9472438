"""Log lines in glog's format, so Caffe's log parsers (tools/extra/parse_log.py) read them."""
import datetime
import inspect
import os
import sys

stream = sys.stdout
quiet = False


def info(msg):
    if quiet:
        return
    f = inspect.stack()[1]
    now = datetime.datetime.now()
    prefix = f"I{now:%m%d %H:%M:%S}.{now.microsecond:06d} {os.getpid():5d} " \
             f"{os.path.basename(f.filename).replace('.py', '.cpp')}:{f.lineno}] "
    stream.write(prefix + msg + "\n")
    stream.flush()
