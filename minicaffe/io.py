"""Every byte minicaffe reads or writes: prototxt, caffemodel, solverstate, binaryproto, HDF5."""
import os
import shutil
import tempfile

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from . import minicaffe_pb2 as pb
from .errors import CaffeError
from .upgrade import upgrade_net, upgrade_solver


# ---------------------------------------------------------------- text
def parse_text(text, msg, path="<string>"):
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        where = f"{path}:{line}:{col}" if line else path
        detail = str(e).split(" : ", 1)[-1]
        raise CaffeError(f"{where}: {detail}") from None
    return msg


def read_text(path, msg):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CaffeError(f"cannot read {path}: {e.strerror}") from None
    return parse_text(text, msg, path)


def read_net(path):
    """A NetParameter from prototxt, with legacy V1 layers and net inputs upgraded."""
    return upgrade_net(read_text(path, pb.NetParameter()), path)


def read_solver(path):
    return upgrade_solver(read_text(path, pb.SolverParameter()))


def to_text(msg):
    return text_format.MessageToString(msg)


def write_text(path, msg):
    atomic_write(path, to_text(msg).encode())


# ---------------------------------------------------------------- binary
def atomic_write(path, data):
    """Temp file + fsync + rename: a crash leaves the old file or the new one, never half."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "w+b") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_binary(path, msg):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CaffeError(f"cannot read {path}: {e.strerror}") from None
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError) as e:
        raise CaffeError(f"{path}: not a valid {msg.DESCRIPTOR.name} file ({e})") from None
    return msg


def write_binary(path, msg):
    atomic_write(path, msg.SerializeToString())


# ---------------------------------------------------------------- blobs
def blob_shape(bp):
    if bp.HasField("shape"):
        return tuple(int(d) for d in bp.shape.dim)
    if bp.num or bp.channels or bp.height or bp.width:
        return (bp.num, bp.channels, bp.height, bp.width)
    n = len(bp.data) or len(bp.double_data)
    return (n,)


def blob_to_array(bp, diff=False):
    shape = blob_shape(bp)
    if diff:
        src = bp.diff if len(bp.diff) else bp.double_diff
    else:
        src = bp.data if len(bp.data) else bp.double_data
    a = np.asarray(src, dtype=np.float32)
    count = int(np.prod(shape, dtype=np.int64))
    if a.size != count:
        raise CaffeError(f"blob of shape {shape} holds {a.size} values instead of {count}")
    return a.reshape(shape)


def array_to_blob(a, bp=None, diff=None):
    bp = bp if bp is not None else pb.BlobProto()
    a = np.asarray(a, dtype=np.float32)
    bp.shape.dim.extend(a.shape)
    bp.data.extend(a.ravel().tolist())
    if diff is not None:
        bp.diff.extend(np.asarray(diff, np.float32).ravel().tolist())
    return bp


def read_blobproto(path):
    """A mean file (.binaryproto) as a float32 array."""
    return blob_to_array(read_binary(path, pb.BlobProto()))


def write_blobproto(path, a):
    write_binary(path, array_to_blob(a))


# ---------------------------------------------------------------- weights
def is_hdf5(path):
    return str(path).endswith(".h5")


def read_weights(path, fmt=None):
    """A trained model as a NetParameter with blobs; .caffemodel(.h5) as Caffe writes them."""
    if not os.path.exists(path):
        raise CaffeError(f"weights file not found: {path}")
    if fmt == "hdf5" or is_hdf5(path):
        return _read_weights_h5(path)
    if str(path).endswith(".mcz"):
        from . import mcz
        return mcz.read(path)
    return upgrade_net(read_binary(path, pb.NetParameter()), path)


def write_weights(path, net_param, fmt="binaryproto"):
    if fmt == "hdf5" or is_hdf5(path):
        _write_weights_h5(path, net_param)
    else:
        write_binary(path, net_param)


def _h5():
    try:
        import h5py
    except ImportError:
        raise CaffeError("HDF5 files need h5py: pip install h5py") from None
    return h5py


def _read_weights_h5(path):
    h5py = _h5()
    net = pb.NetParameter()
    try:
        with h5py.File(path, "r") as f:
            data = f["data"]
            for name in data:
                lp = net.layer.add(name=name)
                group = data[name]
                for i in range(len(group)):
                    array_to_blob(np.asarray(group[str(i)]), lp.blobs.add())
    except (OSError, KeyError) as e:
        raise CaffeError(f"{path}: not a Caffe HDF5 weights file ({e})") from None
    return net


def _write_weights_h5(path, net_param):
    h5py = _h5()

    def write(f):
        with h5py.File(f, "w") as h:
            data = h.create_group("data")
            for lp in net_param.layer:
                if not lp.blobs:
                    continue
                g = data.create_group(lp.name)
                for i, bp in enumerate(lp.blobs):
                    g.create_dataset(str(i), data=blob_to_array(bp))
    atomic_write(path, write)


def read_solverstate(path):
    if is_hdf5(path):
        h5py = _h5()
        st = pb.SolverState()
        try:
            with h5py.File(path, "r") as f:
                st.iter = int(f["iter"][()])
                st.learned_net = f["learned_net"][()].decode() if isinstance(
                    f["learned_net"][()], bytes) else str(f["learned_net"][()])
                st.current_step = int(f["current_step"][()])
                hist = f["history"]
                for i in range(len(hist)):
                    array_to_blob(np.asarray(hist[str(i)]), st.history.add())
        except (OSError, KeyError) as e:
            raise CaffeError(f"{path}: not a Caffe HDF5 solverstate ({e})") from None
        return st
    return read_binary(path, pb.SolverState())


def write_solverstate(path, st):
    if not is_hdf5(path):
        return write_binary(path, st)
    h5py = _h5()

    def write(f):
        with h5py.File(f, "w") as h:
            h.create_dataset("iter", data=st.iter)
            h.create_dataset("learned_net", data=st.learned_net.encode())
            h.create_dataset("current_step", data=st.current_step)
            g = h.create_group("history")
            for i, bp in enumerate(st.history):
                g.create_dataset(str(i), data=blob_to_array(bp))
    atomic_write(path, write)


# ---------------------------------------------------------------- LMDB
_LMDB_MAGIC = b"\xde\xc0\xef\xbe"   # a meta page's mm_magic, after the 16-byte page header
_LMDB_ENVS = {}     # (device, inode) of a data file -> its read-only Environment, shared


def _lmdb():
    try:
        import lmdb
    except ImportError:
        raise CaffeError("LMDB data needs the lmdb package: pip install lmdb") from None
    return lmdb


def lmdb_data_file(path):
    """The data file of the LMDB at path (a directory holding data.mdb, or a one-file LMDB), or
    None if path is not an LMDB."""
    if os.path.isdir(path):
        data = os.path.join(path, "data.mdb")
        return data if os.path.exists(data) else None
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return path if os.path.isfile(path) else None     # unreadable: lmdb will say why
    return path if head[16:20] == _LMDB_MAGIC else None


def _lmdb_error(path, e, doing="read"):
    if "already open in this process" in str(e):
        return CaffeError(f"cannot open LMDB '{path}': it is already open in this process (an "
                          "lmdb.Environment in your script?); close it first (env.close())")
    return CaffeError(f"cannot {doing} LMDB '{path}': {e}")


def open_lmdb(path, share=True):
    """A read-only Environment on the LMDB at path. lmdb refuses to open one database twice in a
    process, so shared ones (Data layers, and readers while one is open) are kept and reused."""
    lmdb = _lmdb()
    data = lmdb_data_file(path)
    if data is None:
        if not os.path.exists(path):
            raise CaffeError(f"LMDB '{path}' not found")
        raise CaffeError(f"'{path}' is not an LMDB (a directory holding data.mdb, or an LMDB file)")
    st = os.stat(data)
    key = (st.st_dev, st.st_ino)      # a database rebuilt under the same name is another one
    if key in _LMDB_ENVS:
        return _LMDB_ENVS[key]
    try:
        env = lmdb.open(path, subdir=data != path, readonly=True, lock=False, readahead=False,
                        max_readers=64)
    except lmdb.Error as e:
        raise _lmdb_error(path, e) from None
    if share:
        _LMDB_ENVS[key] = env
    return env


def write_lmdb(path, items, map_size=1 << 34):
    """Write (key bytes, value bytes) pairs to a new LMDB, as Caffe's db::LMDB does. It is built in
    a temporary directory beside path and renamed into place when complete, so an error, Ctrl-C or
    a kill never leaves a half-made database under the name."""
    lmdb = _lmdb()
    if os.path.lexists(path):
        raise CaffeError(f"{path} already exists: remove it first, or give another name "
                         "(a database is never overwritten)")
    parent, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(parent, f".tmp-{base}-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.mkdir(tmp, 0o777)     # the umask decides the mode, as for any directory the user makes
    except OSError as e:
        raise CaffeError(f"cannot create LMDB '{path}': {e.strerror}") from None
    n = 0
    try:
        env = lmdb.open(tmp, map_size=map_size, subdir=True)
        try:
            txn = env.begin(write=True)
            for key, value in items:
                txn.put(key, value)
                n += 1
                if n % 1000 == 0:
                    txn.commit()
                    txn = env.begin(write=True)
            txn.commit()
        finally:
            env.close()
        if os.path.lexists(path):
            raise CaffeError(f"{path} appeared while it was being written; the new database was dropped")
        try:
            os.rename(tmp, path)
        except OSError as e:
            raise CaffeError(f"cannot move the new LMDB into place as '{path}': {e.strerror}") from None
    except lmdb.Error as e:
        raise _lmdb_error(path, e, "write") from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return n


def read_lmdb(path):
    """Yield (key, value) pairs of an LMDB in key order."""
    lmdb = _lmdb()
    env = open_lmdb(path, share=False)
    try:
        with env.begin() as txn:
            for k, v in txn.cursor():
                yield k, v
    except lmdb.Error as e:
        raise _lmdb_error(path, e) from None
    finally:
        if env not in _LMDB_ENVS.values():
            env.close()


def datum(array, label, encoded=None):
    """A Datum from a (C, H, W) uint8 array, or from encoded image bytes."""
    d = pb.Datum(label=int(label))
    if encoded is not None:
        d.encoded = True
        d.data = encoded
        c, h, w = array.shape if array is not None else (0, 0, 0)
    else:
        c, h, w = array.shape
        d.data = np.ascontiguousarray(array, np.uint8).tobytes()
    d.channels, d.height, d.width = c, h, w
    return d
