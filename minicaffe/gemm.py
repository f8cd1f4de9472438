"""out = a @ b (or out += a @ b) for the convolutions' skinny products, in AVX-512 vector code.

A convolution's products have one short side (the output channels, or the columns of a block of
weight gradients) and one long one. OpenBLAS runs them at 200-240 GFLOP/s on this 2-core Zen 5
with its AVX2 kernels (the ones it takes there, or is told to take by OPENBLAS_CORETYPE), well
under the 470 its AVX-512 kernels reach on a square product. Here a tile of R rows by V vectors of
`out` (R * V <= 24 of the 32 vector registers) stays in registers for the whole inner dimension: a
step loads V vectors of one row of b, broadcasts R values of a column of a and does R * V
multiply-adds. The columns of out are cut into panels of 64 (then 32, 16); a panel of b stays in
the core's cache while every row tile of out passes over it; the tiles are split between threads.
On the cifar10_quick shapes that is 360-510 GFLOP/s (32x800x2560 0.62 -> 0.32 ms; 75x27648x32,
conv1's weight gradient, 0.95 -> 0.31 ms).

The last N % 16 columns go through masked vectors. Used only where LLVM targets AVX-512
(`AVAILABLE`) and the rows of b and out are contiguous; elsewhere numpy's matmul. Nothing here
calls OpenBLAS, which two threads calling at once slowed down (LeNet's step 6.8 -> 9.7 ms).
"""
import numba as nb
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba.core import cgutils, config, types
from numba.extending import intrinsic

from . import kernels

LANES = 16                      # floats in a vector register
SUMS = 24                       # registers a tile keeps its sums in
PANELS = (4, 2, 1)              # vectors across a panel, widest first
SPLIT_ABOVE = 1 << 24           # multiply-adds: below, a thread's hand-off (40-110 us) costs more
U = np.uint64


def _avx512():
    try:
        return config.CPU_NAME is None and bool(llvm.get_host_cpu_features().get("avx512f"))
    except Exception:           # no host features on this platform: take numpy's
        return False


AVAILABLE = _avx512()


def _max_rows(v):
    return min(SUMS // v, 12)


def _tile_intrinsic(v, masked=False):
    """tile(a, b, out, m0, rows, n0, k, accumulate, lanes): out[m0:m0+rows, n0:n0+w] (+)=
    a[m0:m0+rows, :k] @ b[:k, n0:n0+w], w = 16(v-1) + lanes, rows <= _max_rows(v); strides are
    read from the arrays (in bytes), so a may be any view, b and out any arrays whose rows are
    contiguous. With `masked`, the last vector of a row holds only `lanes` columns (the end of
    out's rows); a mask on every panel's last vector cost the full panels 10-15%."""
    r_max = _max_rows(v)

    @intrinsic
    def tile(typingctx, a, b, out, m0, rows, n0, k, accumulate, lanes):
        def codegen(context, builder, sig, args):
            i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
            vec = ir.VectorType(ir.FloatType(), LANES)
            arrays = [context.make_array(sig.args[i])(context, builder, args[i]) for i in range(3)]
            (pa, pb, po) = (builder.bitcast(x.data, i8.as_pointer()) for x in arrays)
            (sam, sak), (ldb, _), (ldo, _) = (cgutils.unpack_tuple(builder, x.strides) for x in arrays)
            m0, rows, n0, kk, acc_flag, lanes = args[3:]
            zero = ir.Constant(vec, [0.0] * LANES)
            four = ir.Constant(i32, 4)

            def intrinsic_fn(name, ret, *params):
                return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, params), name)
            fma = intrinsic_fn(f"llvm.fmuladd.v{LANES}f32", vec, vec, vec, vec)

            def splat(x, ty):
                """x in every lane of a vector of type ty."""
                one = builder.insert_element(ir.Constant(ty, None), x, ir.Constant(i32, 0))
                return builder.shuffle_vector(one, ir.Constant(ty, None),
                                              ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))

            i64s = ir.VectorType(i64, LANES)
            mask = builder.icmp_unsigned("<", ir.Constant(i64s, list(range(LANES))), splat(lanes, i64s))
            masked_load = intrinsic_fn(f"llvm.masked.load.v{LANES}f32.p0", vec,
                                       vec.as_pointer(), i32, mask.type, vec)
            masked_store = intrinsic_fn(f"llvm.masked.store.v{LANES}f32.p0", ir.VoidType(),
                                        vec, vec.as_pointer(), i32, mask.type)

            def at(base, offset, ty):
                return builder.bitcast(builder.gep(base, [offset]), ty.as_pointer())

            def vector(base, offset, j):
                return at(base, builder.add(offset, ir.Constant(i64, 4 * LANES * j)), vec)

            def load(p, j):
                if not masked or j < v - 1:
                    return builder.load(p, align=4)
                return builder.call(masked_load, [p, four, mask, zero])

            def store(x, p, j):
                if not masked or j < v - 1:
                    builder.store(x, p, align=4)
                else:
                    builder.call(masked_store, [x, p, four, mask])

            sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(v)] for _ in range(r_max)]
            a0 = builder.mul(m0, sam)
            b0 = builder.mul(n0, ir.Constant(i64, 4))
            o0 = builder.add(builder.mul(m0, ldo), b0)
            end = builder.append_basic_block("tile.end")
            switch = builder.switch(rows, end)
            for r in range(1, r_max + 1):
                block = builder.append_basic_block(f"tile.rows{r}")
                switch.add_case(ir.Constant(i64, r), block)
                builder.position_at_end(block)
                for row in sums[:r]:
                    for acc in row:
                        builder.store(zero, acc)
                with cgutils.for_range(builder, kk) as loop:
                    brow = builder.add(b0, builder.mul(loop.index, ldb))
                    bv = [load(vector(pb, brow, j), j) for j in range(v)]
                    acol = builder.add(a0, builder.mul(loop.index, sak))
                    for i in range(r):
                        x = builder.load(at(pa, builder.add(acol, builder.mul(ir.Constant(i64, i), sam)),
                                            ir.FloatType()))
                        x = splat(x, vec)
                        for j in range(v):
                            builder.store(builder.call(fma, [x, bv[j], builder.load(sums[i][j])]),
                                          sums[i][j])
                add = builder.icmp_unsigned("!=", acc_flag, ir.Constant(i64, 0))
                with builder.if_else(add) as (then, otherwise):
                    for adding in (then, otherwise):
                        with adding:
                            for i in range(r):
                                orow = builder.add(o0, builder.mul(ir.Constant(i64, i), ldo))
                                for j in range(v):
                                    p = vector(po, orow, j)
                                    total = builder.load(sums[i][j])
                                    if adding is then:
                                        total = builder.fadd(load(p, j), total)
                                    store(total, p, j)
                builder.branch(end)
            builder.position_at_end(end)
            return context.get_dummy_value()

        u = types.uint64
        return types.void(a, b, out, u, u, u, u, u, u), codegen
    return tile


_tile4, _tile2, _tile1 = (_tile_intrinsic(v) for v in PANELS)
_tile_end = _tile_intrinsic(1, masked=True)


@nb.njit(cache=True, nogil=True)
def _tiles(t0, t1, a, b, out, panels, acc):
    """Tiles t0 to t1 of the plan: panel by panel (b's panel stays in cache), in each the row
    tiles, rows shared out evenly (32 rows of six at most: 6, 6, 5, 5, 5, 5)."""
    m, k = a.shape
    t = 0
    for p in range(panels.shape[0]):
        n0, v, count, lanes = panels[p, 0], panels[p, 1], panels[p, 2], U(panels[p, 3])
        if t + count <= t0:
            t += count
            continue
        for i in range(count):
            if t0 <= t < t1:
                lo, hi = i * m // count, (i + 1) * m // count
                if lanes < U(LANES):
                    _tile_end(a, b, out, U(lo), U(hi - lo), U(n0), U(k), U(acc), lanes)
                elif v == 4:
                    _tile4(a, b, out, U(lo), U(hi - lo), U(n0), U(k), U(acc), lanes)
                elif v == 2:
                    _tile2(a, b, out, U(lo), U(hi - lo), U(n0), U(k), U(acc), lanes)
                else:
                    _tile1(a, b, out, U(lo), U(hi - lo), U(n0), U(k), U(acc), lanes)
            t += 1
        if t >= t1:
            return


def _plan(m, n):
    """(first column, vectors, row tiles, columns in the last vector) per panel: 64 columns at a
    time, then 32, 16, and the last n % 16 through a masked vector."""
    panels, n0 = [], 0
    for v in PANELS:
        while n - n0 >= v * LANES:
            panels.append((n0, v, -(-m // _max_rows(v)), LANES))
            n0 += v * LANES
    if n0 < n:
        panels.append((n0, 1, -(-m // _max_rows(1)), n - n0))
    return np.array(panels, np.int64).reshape(-1, 4)


_plans = {}


def matmul(a, b, out, accumulate=False, threads=None):
    """out = a @ b, or out += a @ b; float32, any strides for a. threads: how many to split over
    (None: all the cores for a large product, else one)."""
    m, k = a.shape
    n = b.shape[1]
    if (not AVAILABLE or {a.dtype, b.dtype, out.dtype} != {np.dtype(np.float32)}
            or b.strides[1] != 4 or out.strides[1] != 4 or min(a.strides + b.strides + out.strides) < 0):
        if accumulate:
            out += a @ b
        else:
            np.matmul(a, b, out=out)
        return
    if (m, n) not in _plans:
        _plans[m, n] = _plan(m, n)
    panels = _plans[m, n]
    total = int(panels[:, 2].sum())
    nt = threads or (kernels.THREADS if m * n * k >= SPLIT_ABOVE else 1)
    kernels.split(_tiles, total, nt, a, b, out, panels, int(accumulate))
