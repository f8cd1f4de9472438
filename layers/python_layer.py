"""type: "Python": a user's class, imported as Caffe imports it, runs as a layer.

The instance *is* the layer (its class subclasses caffe.Layer = minicaffe.layer.Layer), so its
blobs train, snapshot and load like any layer's. An exception from the user's code keeps its type
(scripts may catch it) and also becomes a CaffeError naming the layer and the user's file and line.
"""
import functools
import importlib
import os
import sys
import traceback

from minicaffe.errors import CaffeError
from minicaffe.layer import Layer, register

USER_METHODS = ("setup", "reshape", "forward", "backward")


@register("Python")
def python_layer(param, phase):
    pp = param.python_param
    where = f"layer '{param.name}' (Python, module '{pp.module}', layer '{pp.layer}')"
    if not pp.module or not pp.layer:
        raise CaffeError(f"{where}: python_param needs both `module` and `layer`")
    if os.getcwd() not in sys.path and "" not in sys.path:    # Caffe finds modules in the cwd
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(pp.module)
    except Exception as e:
        raise _user_error(where, e, None) from e
    cls = getattr(module, pp.layer, None)
    if cls is None:
        raise CaffeError(f"{where}: module {module.__file__} has no class '{pp.layer}'")
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise CaffeError(f"{where}: '{pp.layer}' must be a class derived from caffe.Layer")
    try:
        layer = cls(param)
    except Exception as e:
        raise _user_error(where, e, module) from e
    layer.phase = phase
    layer.param_str = pp.param_str
    for name in USER_METHODS:
        setattr(layer, name, _guarded(getattr(layer, name), where, module))
    return layer


def _guarded(method, where, module):
    @functools.wraps(method)
    def call(*args):
        try:
            return method(*args)
        except CaffeError:
            raise
        except Exception as e:
            raise _user_error(f"{where}, in {method.__name__}", e, module) from e
    return call


def _user_error(where, exc, module):
    """The same kind of exception (so `except RuntimeError` still works) that is also a CaffeError
    (so the CLI prints it in one line), pointing at the user's own file and line."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = getattr(module, "__file__", None)
    user = [f for f in frames if mine and os.path.samefile(f.filename, mine)] if mine else []
    f = (user or frames or [None])[-1]
    at = f" at {f.filename}:{f.lineno}" if f is not None else ""
    msg = f"{where}: {type(exc).__name__}: {exc}{at}"
    if isinstance(exc, CaffeError) or type(exc) in CaffeError.__mro__:
        return CaffeError(msg)              # a RuntimeError already
    try:
        return type(type(exc).__name__, (type(exc), CaffeError), {"__str__": lambda self: msg})(msg)
    except Exception:                       # a type that cannot be combined or built from a message
        return CaffeError(msg)
