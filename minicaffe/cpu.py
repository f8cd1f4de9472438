"""What the CPU is, read before numpy loads OpenBLAS (so no numpy here)."""


def cpuinfo():
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def openblas_coretype(info):
    """The OpenBLAS kernels to ask for, where its own detection is wrong; None elsewhere.

    OpenBLAS 0.3.31 does not know AMD Zen 5 (family 26) and falls back to its AVX2 (Haswell)
    kernels; its AVX-512 ones (SkylakeX), which it already picks on Zen 4, run Zen 5's full-width
    FMA units: 2048^3 SGEMM 259 -> 473 GFLOP/s, a cifar10_quick training step 59 -> 49 ms."""
    flags = set(info.get("flags", "").split())
    try:
        family = int(info.get("cpu family", "0"))
    except ValueError:
        return None
    if (info.get("vendor_id") == "AuthenticAMD" and family >= 26
            and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags):
        return "SkylakeX"
    return None
