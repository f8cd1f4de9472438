"""Every byte minicaffe reads or writes: prototxt, caffemodel, solverstate, binaryproto, HDF5."""
import math
import os
import re
import shutil
import stat
import struct
import tempfile
import threading

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError

from . import minicaffe_pb2 as pb
from .errors import CaffeError
from .upgrade import upgrade_net, upgrade_solver

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


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


def read_file(path):
    """The bytes of a user's file. Devices (/dev/zero) are refused: they never end."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                raise CaffeError(f"cannot read {path}: not a regular file")
            return f.read()
    except OSError as e:
        raise CaffeError(f"cannot read {path}: {e.strerror}") from None


_NOT_TEXT = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")    # control bytes no prototxt holds


def looks_binary(data):
    """True for bytes that are not text: a NUL, or over a tenth of the start not printable UTF-8."""
    head = data[:4096]
    bad = len(_NOT_TEXT.findall(head)) + head.decode("utf-8", "replace").count("\ufffd")
    return b"\0" in head or 10 * bad > len(head)


def decode_text(data, path):
    """A prototxt's bytes as text; a binary file given as a prototxt (a caffemodel as --model or
    --solver) or a stray non-UTF-8 byte is an error at its line and column."""
    if data.startswith(b"\xef\xbb\xbf"):      # a UTF-8 byte order mark, as some editors write
        data = data[3:]
    bad = _NOT_TEXT.search(data)
    pos = bad.start() if bad else None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        pos = e.start if pos is None else min(pos, e.start)
        text = None
    if pos is None:
        return text
    start = data.rfind(b"\n", 0, pos) + 1
    line = data.count(b"\n", 0, pos) + 1
    col = len(data[start:pos].decode("utf-8", "replace")) + 1
    where = f"{path}:{line}:{col}: byte 0x{data[pos]:02x} is not text"
    if looks_binary(data):
        kind = ("an HDF5 file" if data.startswith(HDF5_SIGNATURE) else "a .mcz compressed model"
                if data.startswith(b"MCZ\0") else "a .caffemodel, .solverstate or .binaryproto?")
        raise CaffeError(f"{where}: the file looks binary ({kind}), not a prototxt")
    raise CaffeError(f"{where}: a stray binary byte in the prototxt; it must be UTF-8 text")


def read_text(path, msg):
    return parse_text(decode_text(read_file(path), path), msg, path)


def read_net(path):
    """A NetParameter from prototxt, with legacy V1 layers and net inputs upgraded."""
    net = upgrade_net(read_text(path, pb.NetParameter()), path)
    if not net.ByteSize():
        raise CaffeError(f"{path}: the file is empty (no net in it)")
    return net


def read_solver(path):
    return upgrade_solver(read_text(path, pb.SolverParameter()))


def to_text(msg):
    return text_format.MessageToString(msg)


def write_text(path, msg):
    atomic_write(path, to_text(msg).encode())


# ---------------------------------------------------------------- binary
_UMASK_LOCK = threading.Lock()


def umask():
    """The process umask, read from /proc where it can be: setting it to read it back is racy."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:       # a file another thread makes meanwhile gets 0o077: stricter, not looser
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def atomic_write(path, data):
    """Temp file + fsync + rename: a crash leaves the old file or the new one, never half. The file
    gets the umask's permissions (0644 under the usual 022), as Caffe's do, not mkstemp's 0600."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "w+b") as f:
            os.fchmod(f.fileno(), 0o666 & ~umask())
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


KINDS = {"NetParameter": "caffemodel", "SolverState": "solverstate", "BlobProto": "binaryproto"}


def parse_binary(data, msg, path):
    """A binary protobuf; an empty file, a text file, or bytes that hold none of msg's fields (a
    caffemodel given as a solverstate) are errors that say so."""
    kind = KINDS.get(msg.DESCRIPTOR.name, msg.DESCRIPTOR.name)
    if not data:
        raise CaffeError(f"{path}: the file is empty, not a {kind}")
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeError):
        hint = ("; it looks like a text file (a prototxt?)" if not looks_binary(data)
                else " (truncated or corrupted)")
        raise CaffeError(f"{path}: not a valid {kind} file{hint}") from None
    if not msg.ListFields():
        raise CaffeError(f"{path}: holds nothing a {kind} holds; is it another kind of file?")
    _check_strings(msg, path)
    return msg


def _check_strings(msg, path):
    """A string field whose bytes are not UTF-8 reads back as bytes (and fails when it is assigned
    or joined): find any now, rather than in whatever reads the field."""
    for fd, value in msg.ListFields():
        if fd.type == fd.TYPE_MESSAGE:
            for m in (value if fd.is_repeated else (value,)):
                _check_strings(m, path)
        elif fd.type == fd.TYPE_STRING and any(
                isinstance(v, bytes) for v in (value if fd.is_repeated else (value,))):
            raise CaffeError(f"{path}: the {fd.name} field of a {msg.DESCRIPTOR.name} is not UTF-8 "
                             "text (the file is corrupted)")


def read_binary(path, msg):
    return parse_binary(read_file(path), msg, path)


def write_binary(path, msg):
    atomic_write(path, msg.SerializeToString())


# ---------------------------------------------------------------- blobs
MAX_AXES = 32       # Caffe's kMaxBlobAxes
MAX_COUNT = 2 ** 31 - 1     # Caffe's blobs count in int


def blob_shape(bp):
    """The shape a BlobProto declares, chosen as Caffe's Blob::FromProto does: the legacy
    num/channels/height/width when any is set, else `shape`; (count,) when it declares none."""
    if bp.HasField("num") or bp.HasField("channels") or bp.HasField("height") or bp.HasField("width"):
        return (bp.num, bp.channels, bp.height, bp.width)
    if bp.HasField("shape"):
        return tuple(int(d) for d in bp.shape.dim)
    return (len(bp.double_data) or len(bp.data),)


def shape_problem(shape):
    """What is wrong with a blob shape read from a file, or None. A blob holds at most 2^31-1
    values, as in Caffe: a forged shape is refused before anything is allocated for it."""
    if len(shape) > MAX_AXES:
        return f"{len(shape)} axes, more than Caffe's {MAX_AXES}"
    if any(d < 0 for d in shape):
        return f"negative dimension in its shape {shape}"
    size = math.prod(d for d in shape if d)        # exact: no int64 wrap-round
    if size > MAX_COUNT:
        return f"shape {shape} of {size} values, beyond the {MAX_COUNT} a blob can hold"
    return None


def check_blob(bp, what="blob"):
    """The blob's shape, once it is sane and its values fill it exactly."""
    shape = blob_shape(bp)
    problem = shape_problem(shape)
    if problem:
        raise CaffeError(f"{what}: {problem}")
    count = math.prod(shape)
    for name, n in (("values", len(bp.double_data) or len(bp.data)),
                    ("diff values", len(bp.double_diff) or len(bp.diff))):
        if n != count and (n or name == "values"):
            raise CaffeError(f"{what}: shape {shape} needs {count} {name}, the file holds {n}")
    return shape


def blob_to_array(bp, diff=False, what="blob"):
    shape = check_blob(bp, what)
    if diff:
        src = bp.double_diff if len(bp.double_diff) else bp.diff
    else:
        src = bp.double_data if len(bp.double_data) else bp.data
    return np.asarray(src, dtype=np.float32).reshape(shape)


def _packed_floats(field, a):
    """The wire bytes of a packed float field: far faster and smaller than extending it in Python."""
    raw = np.ascontiguousarray(a, "<f4").tobytes()
    n, size = field << 3 | 2, len(raw)
    out = bytearray()
    for v in (n, size):
        while v > 0x7F:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out) + raw


def array_to_blob(a, bp=None, diff=None):
    bp = bp if bp is not None else pb.BlobProto()
    a = np.asarray(a, dtype=np.float32)
    bp.shape.dim.extend(a.shape)
    if a.size:
        bp.MergeFromString(_packed_floats(5, a.ravel()))
    if diff is not None and np.size(diff):
        bp.MergeFromString(_packed_floats(6, np.ravel(diff)))
    return bp


def check_blobs(blobs, what):
    for i, bp in enumerate(blobs):
        check_blob(bp, f"{what} {i}")


def read_blobproto(path):
    """A mean file (.binaryproto) as a float32 array."""
    return blob_to_array(read_binary(path, pb.BlobProto()), what=str(path))


def write_blobproto(path, a):
    write_binary(path, array_to_blob(a))


# ---------------------------------------------------------------- weights
def is_hdf5(path):
    return str(path).endswith(".h5")


def read_weights(path, fmt=None):
    """A trained model as a NetParameter with blobs; .caffemodel(.h5) as Caffe writes them. Every
    blob's shape is checked against the values it holds."""
    if not os.path.exists(path):
        raise CaffeError(f"weights file not found: {path}")
    if fmt == "hdf5" or is_hdf5(path):
        return _read_weights_h5(path)
    if str(path).endswith(".mcz"):
        from .compress import mcz
        return mcz.read(path)
    data = read_file(path)
    if data.startswith(HDF5_SIGNATURE):      # an HDF5 model under another name
        return _read_weights_h5(path, data)
    net = upgrade_net(parse_binary(data, pb.NetParameter(), path), path)
    for lp in net.layer:
        check_blobs(lp.blobs, f"{path}: layer '{lp.name}' blob")
    return net


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


# Deflate, the strongest filter Caffe's HDF5 files could use, expands at most 1032-fold.
_H5_MAX_EXPANSION = 1032


class H5Reader:
    """Checked reads from an HDF5 file: each dataset is refused, before it is read, unless it is
    a plain numeric array (or string) whose size the bytes in the file can account for."""

    def __init__(self, path, what, data=None):
        self.h5py, self.path, self.what, self.data = _h5(), path, what, data
        self.size = os.path.getsize(path) if data is None else len(data)

    def fail(self, msg):
        raise CaffeError(f"{self.path}: {msg}; not a Caffe HDF5 {self.what}")

    def node(self, parent, name, kind):
        h5py = self.h5py
        link = parent.get(name, getlink=True)
        if link is None:
            self.fail(f"no '{name}' in {parent.name}")
        if not isinstance(link, h5py.HardLink):     # a link may name another file, or loop
            self.fail(f"'{parent.name.rstrip('/')}/{name}' is a link")
        obj = parent[name]
        if not isinstance(obj, kind):
            self.fail(f"'{obj.name}' is not a {'group' if kind is h5py.Group else 'dataset'}")
        return obj

    def read(self, parent, name, kinds="fiub"):
        ds = self.node(parent, name, self.h5py.Dataset)
        if ds.shape is None or ds.dtype.kind not in kinds or ds.dtype.fields or ds.dtype.subdtype:
            self.fail(f"'{ds.name}' holds {ds.dtype} of shape {ds.shape}")
        problem = shape_problem(ds.shape)
        if problem:
            self.fail(f"'{ds.name}' has {problem}")
        plist = ds.id.get_create_plist()
        if plist.get_external_count():
            self.fail(f"'{ds.name}' keeps its data in other files")
        nbytes = math.prod(ds.shape) * ds.dtype.itemsize
        stored = min(ds.id.get_storage_size(), self.size)
        limit = stored * (_H5_MAX_EXPANSION if plist.get_nfilters() else 1)
        if nbytes > max(limit, 64):
            self.fail(f"'{ds.name}' claims shape {ds.shape} ({nbytes} bytes), more than the file holds")
        return ds[()]

    def blobs(self, group, out):
        """Datasets '0', '1', ... of a group as blobs appended to `out`."""
        for i in range(len(group)):
            a = np.asarray(self.read(group, str(i), "fiu"), np.float32)
            array_to_blob(a, out.add())

    def scalar(self, parent, name, lo=-2 ** 31, hi=2 ** 31 - 1):
        """An int32, stored as a scalar or, as Caffe's hdf5_save_int does, a one-element array."""
        a = np.asarray(self.read(parent, name, "iu"))
        if a.size != 1 or not lo <= int(a.ravel()[0]) <= hi:
            self.fail(f"'{name}' is not an integer in [{lo}, {hi}]")
        return int(a.ravel()[0])

    def text(self, parent, name):
        """A string, fixed-length as Caffe writes it, or variable-length."""
        ds = self.node(parent, name, self.h5py.Dataset)
        kind = self.h5py.check_string_dtype(ds.dtype)
        if ds.shape != () or kind is None:
            self.fail(f"'{name}' is not a string")
        v = self.read(parent, name, "S") if kind.length is not None else self.vlen_bytes(ds)
        try:
            return bytes(v).rstrip(b"\0").decode()
        except UnicodeDecodeError:
            self.fail(f"'{name}' is not UTF-8 text")

    def vlen_bytes(self, ds):
        """A variable-length string, found in the file's bytes: HDF5 itself loops forever on some
        corrupted global heaps (an object of size 0), so it is not asked to."""
        if self.data is None:
            self.data = read_file(self.path)
        d, off = self.data, ds.id.get_offset()
        version = d[8] if len(d) > 16 and d.startswith(HDF5_SIGNATURE) else -1
        sizes = d[13:15] if version in (0, 1) else d[9:11] if version in (2, 3) else b""
        if off is None or sizes != b"\x08\x08" or off + 16 > len(d):
            self.fail(f"'{ds.name}' is a string stored in a way minicaffe does not read")
        n, addr, idx = struct.unpack_from("<IQI", d, off)        # length, heap address, object index
        if d[addr:addr + 5] != b"GCOL\x01" or addr + 16 > len(d):
            self.fail(f"'{ds.name}' points to no string heap")
        end = addr + struct.unpack_from("<Q", d, addr + 8)[0]
        p = addr + 16
        while idx and p + 16 <= min(end, len(d)):
            i, _, _, size = struct.unpack_from("<HHIQ", d, p)
            if i == idx:
                if n > size or p + 16 + n > len(d):
                    break
                return d[p + 16:p + 16 + n]
            if i == 0:      # free space: the rest of the heap
                break
            p += 16 + (size + 7) // 8 * 8
        self.fail(f"'{ds.name}': its string is not in the heap it points to")

    def run(self, fn):
        """fn(open file); whatever else the HDF5 library finds wrong becomes a CaffeError."""
        try:
            with self.h5py.File(self.path, "r") as f:
                return fn(f)
        except CaffeError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
            self.fail(f"unreadable ({e})")


def _read_weights_h5(path, data=None):
    r = H5Reader(path, "weights file", data)
    net = pb.NetParameter()

    def read(f):
        data = r.node(f, "data", r.h5py.Group)
        for name in data:
            r.blobs(r.node(data, name, r.h5py.Group), net.layer.add(name=name).blobs)
    r.run(read)
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
    """A SolverState, binary or HDF5, with whole history blobs and a learned_net that is a path."""
    data = read_file(path)
    if is_hdf5(path) or data.startswith(HDF5_SIGNATURE):
        r = H5Reader(path, "solverstate", data)
        st = pb.SolverState()

        def read(f):
            st.iter = r.scalar(f, "iter")
            st.learned_net = r.text(f, "learned_net")
            st.current_step = r.scalar(f, "current_step")
            r.blobs(r.node(f, "history", r.h5py.Group), st.history)
        r.run(read)
    else:
        st = parse_binary(data, pb.SolverState(), path)
        check_blobs(st.history, f"{path}: history blob")
    if any(c < " " for c in st.learned_net):
        raise CaffeError(f"{path}: its learned_net {st.learned_net!r} is not a file name "
                         "(the file is corrupted)")
    return st


def write_solverstate(path, st):
    if not is_hdf5(path):
        return write_binary(path, st)
    h5py = _h5()

    def write(f):
        with h5py.File(f, "w") as h:
            h.create_dataset("iter", data=st.iter)
            # a fixed-length string, as Caffe's hdf5_save_string writes it
            h.create_dataset("learned_net", data=np.bytes_(st.learned_net.encode()))
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
