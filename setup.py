from setuptools import setup

setup(
    name="minicaffe",
    version="0.1.0",
    description="Caffe's prototxt nets, solvers and caffemodels in Python, with pruning built in",
    python_requires=">=3.9",
    # `caffe` is pycaffe's face over minicaffe, installed beside it so pycaffe scripts run unchanged
    packages=["minicaffe", "minicaffe.compress", "minicaffe.layers", "minicaffe.solvers",
              "minicaffe.tools", "caffe", "caffe.proto"],
    package_dir={"minicaffe": "minicaffe", "minicaffe.compress": "minicaffe/compress",
                 "minicaffe.layers": "layers", "minicaffe.solvers": "solvers", "minicaffe.tools": "tools",
                 "caffe": "minicaffe/pycaffe", "caffe.proto": "minicaffe/pycaffe/proto"},
    install_requires=["numpy>=1.24", "numba>=0.58", "protobuf>=7.35.1,<8", "pillow", "lmdb", "h5py",
                      "matplotlib", "pydot"],
    extras_require={"test": ["pytest", "grpcio-tools==1.85.1", "scipy", "hypothesis"],
                    "mpi": ["mpi4py", "mpich"]},
    entry_points={"console_scripts": ["minicaffe=minicaffe.cli:main"]},
)
