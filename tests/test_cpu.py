"""Which OpenBLAS kernels minicaffe asks for, by CPU."""
from minicaffe.cpu import openblas_coretype

AVX512 = "fpu sse avx2 fma avx512f avx512dq avx512bw avx512vl"


def test_zen5_gets_the_avx512_kernels():
    assert openblas_coretype({"vendor_id": "AuthenticAMD", "cpu family": "26", "flags": AVX512}) == "SkylakeX"


def test_cpus_openblas_knows_are_left_to_it():
    assert openblas_coretype({"vendor_id": "AuthenticAMD", "cpu family": "25", "flags": AVX512}) is None
    assert openblas_coretype({"vendor_id": "GenuineIntel", "cpu family": "6", "flags": AVX512}) is None
    assert openblas_coretype({"vendor_id": "AuthenticAMD", "cpu family": "26", "flags": "avx2 fma"}) is None
    assert openblas_coretype({}) is None
