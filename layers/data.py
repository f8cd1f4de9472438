"""Data layers: Data (LMDB, with a prefetch thread), ImageData, HDF5Data, MemoryData."""
import os
import queue
import threading

import numpy as np

from minicaffe import io, log
from minicaffe import minicaffe_pb2 as pb
from minicaffe import rng
from minicaffe.errors import CaffeError
from minicaffe.layer import Layer, register
from minicaffe.transform import Transformer, read_datum


class BatchSource(Layer):
    """A data layer whose batch k is a pure function of k: prefetchable and resumable."""
    n_bottom = 0
    min_top = 1
    max_top = 2
    prefetch = 2
    rank, count = 0, 1    # data-parallel training (solvers/parallel.py): this rank's share of K

    def setup(self, bottom, top):
        self.transformer = Transformer(self.param.transform_param, self.phase)
        self.seed = int(rng.get().integers(0, 2 ** 31))
        self.open()
        self.batch_index = 0
        self.queue = None
        for t, a in zip(top, self.make_batch(0)):
            t.reshape(a.shape)

    def reshape(self, bottom, top):
        pass

    def _start(self):
        self.queue = queue.Queue(maxsize=self.prefetch)
        self.stop = threading.Event()
        start, q, stop = self.batch_index, self.queue, self.stop

        def work():
            k = start
            while not stop.is_set():
                try:
                    item = self.make_batch(k)
                except Exception as e:      # surfaced in forward
                    item = e
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                k += 1
        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    def skip_batches(self, n):
        """Resume: continue with batch n, as if n batches had been read."""
        if self.queue is not None:
            self.stop.set()
            self.queue = None
        self.batch_index = n

    def forward(self, bottom, top):
        if self.queue is None:
            self._start()
        item = self.queue.get()
        if isinstance(item, Exception):
            raise item
        self.batch_index += 1
        for t, a in zip(top, item):      # one array per top: data, label, or HDF5 datasets
            t.reshape(a.shape)
            t.data[...] = a

    def batch_rng(self, k):
        """Transform draws of batch k; each rank's share of it draws its own."""
        return np.random.default_rng([self.seed, k * self.count + self.rank])

    def indices(self, k, n, batch, skip=0, shuffle=False):
        """Item indices of batch k over n items; a fresh permutation each epoch when shuffling.
        Rank r of K takes the r-th `batch` of the K*batch items one process would take."""
        pos = skip + (k * self.count + self.rank) * batch + np.arange(batch)
        if not shuffle:
            return pos % n
        epoch, off = pos // n, pos % n
        out = np.empty(batch, np.int64)
        for e in np.unique(epoch):
            perm = np.random.default_rng([self.seed, 7, int(e)]).permutation(n)
            out[epoch == e] = perm[off[epoch == e]]
        return out


@register("Data")
class Data(BatchSource):
    def open(self):
        dp = self.param.data_param
        if not dp.batch_size:
            raise self.error("data_param.batch_size is required")
        self.prefetch = max(1, dp.prefetch)
        src = dp.source
        # LEVELDB is Caffe's default backend, so nets that read an LMDB often leave backend out
        if dp.backend == pb.DataParameter.LEVELDB and not io.lmdb_data_file(src):
            if not os.path.exists(src):
                raise self.error(f"database '{src}' not found (backend: LEVELDB, the default; "
                                 "minicaffe reads LMDB databases only)")
            raise self.error(f"'{src}' is not an LMDB, and LevelDB (backend: LEVELDB, the default) is not "
                             "supported; rebuild the data as an LMDB (minicaffe convert_imageset, "
                             "convert_mnist_data or convert_cifar_data) and set backend: LMDB")
        try:
            self.env = io.open_lmdb(src)
        except CaffeError as e:
            raise self.error(str(e)) from None
        self.keys = self._read(lambda txn: list(txn.cursor().iternext(values=False)))
        if not self.keys:
            raise self.error(f"LMDB '{src}' is empty")

    def _read(self, fn):
        """fn(txn) in a read transaction, an lmdb failure (a database being rewritten, a broken
        file) becoming a CaffeError."""
        import lmdb
        try:
            with self.env.begin() as txn:
                return fn(txn)
        except lmdb.Error as e:
            raise self.error(f"cannot read LMDB '{self.param.data_param.source}': {e}") from None

    def make_batch(self, k):
        dp, tp = self.param.data_param, self.param.transform_param
        idx = self.indices(k, len(self.keys), dp.batch_size, dp.rand_skip)
        values = self._read(lambda txn: [txn.get(self.keys[i]) for i in idx])
        pairs = []
        for i, v in zip(idx, values):
            try:
                pairs.append(read_datum(v, f"LMDB '{dp.source}': the entry {self.keys[i]!r}",
                                        tp.force_color, tp.force_gray))
            except CaffeError as e:
                raise self.error(str(e)) from None
        imgs = [im for im, _ in pairs]
        if any(im.shape != imgs[0].shape for im in imgs):
            raise self.error("images in one batch differ in size; resize them when converting")
        labels = np.array([lab for _, lab in pairs], np.float32)
        return self.transformer(np.stack(imgs), self.batch_rng(k)), labels


@register("ImageData")
class ImageData(BatchSource):
    def open(self):
        p = self.param.image_data_param
        self.items = []
        try:
            with open(p.source) as f:
                for ln, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    path, _, label = line.rpartition(" ")
                    if not path:
                        raise self.error(f"{p.source}:{ln}: expected 'path label'")
                    self.items.append((os.path.join(p.root_folder, path) if p.root_folder else path,
                                       int(label)))
        except OSError as e:
            raise self.error(f"cannot read image list {p.source}: {e.strerror}") from None
        if not self.items:
            raise self.error(f"image list {p.source} is empty")

    def make_batch(self, k):
        from PIL import Image
        p = self.param.image_data_param
        idx = self.indices(k, len(self.items), p.batch_size, p.rand_skip, p.shuffle)
        imgs = []
        for i in idx:
            path = self.items[i][0]
            try:
                img = Image.open(path)
                img = img.convert("RGB" if p.is_color else "L")
            except OSError as e:
                raise self.error(f"cannot open image {path}: {e}") from None
            if p.new_height and p.new_width:
                img = img.resize((p.new_width, p.new_height), Image.BILINEAR)
            a = np.asarray(img)
            imgs.append(a[:, :, ::-1].transpose(2, 0, 1) if a.ndim == 3 else a[None])
        if any(im.shape != imgs[0].shape for im in imgs):
            raise self.error("images differ in size; set new_height and new_width")
        labels = np.array([self.items[i][1] for i in idx], np.float32)
        return self.transformer(np.stack(imgs), self.batch_rng(k)), labels


@register("HDF5Data")
class HDF5Data(BatchSource):
    max_top = None

    def setup(self, bottom, top):
        self.top_names = list(self.param.top)
        BatchSource.setup(self, bottom, top)

    def open(self):
        p = self.param.hdf5_data_param
        try:
            with open(p.source) as f:
                files = [ln.strip() for ln in f if ln.strip()]
        except OSError as e:
            raise self.error(f"cannot read HDF5 file list {p.source}: {e.strerror}") from None
        arrays = {n: [] for n in self.top_names}
        for fn in files:
            if not os.path.isfile(fn):
                raise self.error(f"HDF5 file {fn} (listed in {p.source}) not found")
            r = io.H5Reader(fn, "HDF5 data file")
            found = r.run(lambda h: [r.read(h, name, "fiu") for name in self.top_names])
            for name, a in zip(self.top_names, found):
                arrays[name].append(np.asarray(a, np.float32))
        self.arrays = [np.concatenate(arrays[n]) for n in self.top_names]
        if len({len(a) for a in self.arrays}) != 1:
            raise self.error("datasets differ in their number of rows")

    def make_batch(self, k):
        p = self.param.hdf5_data_param
        idx = self.indices(k, len(self.arrays[0]), p.batch_size, 0, p.shuffle)
        return tuple(a[idx] for a in self.arrays)


@register("MemoryData")
class MemoryData(Layer):
    """Batches from arrays handed over by Python: net.set_input_arrays(data, labels)."""
    n_bottom = 0
    n_top = 2

    def setup(self, bottom, top):
        p = self.param.memory_data_param
        self.shape = (p.batch_size, p.channels, p.height, p.width)
        if not p.batch_size:
            raise self.error("memory_data_param.batch_size is required")
        if self.param.HasField("transform_param"):   # as Caffe's Reset: arrays are taken as they are
            log.warning(f"layer '{self.name}': MemoryData does not transform arrays given with "
                        "set_input_arrays; transform_param is ignored")
        self.data = None
        self.pos = 0
        top[0].reshape(self.shape)
        top[1].reshape((p.batch_size,))

    def set_input_arrays(self, data, labels):
        data = np.asarray(data, np.float32)
        labels = np.asarray(labels, np.float32).ravel()
        if data.shape[1:] != self.shape[1:] or len(data) != len(labels):
            raise self.error(f"arrays must be (N,{self.shape[1]},{self.shape[2]},{self.shape[3]}) and (N,)")
        if len(data) % self.shape[0]:
            raise self.error(f"the number of items must be a multiple of batch_size {self.shape[0]}")
        self.data, self.labels, self.pos = data, labels, 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        if self.data is None:
            raise self.error("no data: call net.set_input_arrays(data, labels) first")
        b = self.shape[0]
        sl = slice(self.pos, self.pos + b)
        top[0].data[...] = self.data[sl]
        top[1].data[...] = self.labels[sl]
        self.pos = (self.pos + b) % len(self.data)
