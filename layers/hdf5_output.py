"""HDF5Output: writes its bottoms to an HDF5 file as Caffe does."""
import numpy as np

from minicaffe import io, log
from minicaffe.layer import Layer, register


def _legacy_shape(shape):
    """Caffe's (num, channels, height, width): missing axes are 1."""
    return tuple(shape) + (1,) * (4 - len(shape))


@register("HDF5Output")
class HDF5Output(Layer):
    """Datasets "data" and "label", float32, in Caffe's 4-D legacy shapes.

    Caffe creates the file at setup and fails on the second forward (the datasets exist already,
    BVLC/caffe#1726). Here every forward appends its rows instead, so the file after one forward is
    Caffe's and after k forwards holds the k batches. Each forward rewrites the file atomically
    from the rows kept in memory: a crash leaves the previous batches' file, never a broken one.
    """
    n_bottom = 2
    n_top = 0

    def setup(self, bottom, top):
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is required")
        self.rows = [], []
        self._write()

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        data, label = bottom
        if data.shape[0] != label.shape[0]:
            raise self.error(f"data and label must have the same batch size, got {data.shape[0]} "
                             f"and {label.shape[0]}")
        for rows, b, what in zip(self.rows, bottom, ("data", "label")):
            if len(b.shape) > 4:
                raise self.error(f"the {what} bottom has {len(b.shape)} axes {b.shape}; "
                                 "Caffe's HDF5 output takes at most 4")
            shape = _legacy_shape(b.shape)
            if rows and rows[0].shape[1:] != shape[1:]:
                raise self.error(f"the {what} rows changed shape from {rows[0].shape[1:]} to "
                                 f"{shape[1:]}; one file holds rows of one shape")
            rows.append(b.peek.reshape(shape).copy())
        log.info(f"Saving HDF5 file {self.file_name}")
        self._write()
        log.info(f"Successfully saved {data.shape[0]} rows")

    def _write(self):
        h5py = io._h5()

        def write(f):
            with h5py.File(f, "w") as h:
                for name, rows in zip(("data", "label"), self.rows):
                    if rows:
                        h.create_dataset(name, data=np.concatenate(rows).astype(np.float32))
        io.atomic_write(self.file_name, write)
