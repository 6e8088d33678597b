"""A Pallas kernel for batches of small real symmetric matrices (issue 16, item 4).

One kernel runs the whole cyclic Jacobi method: each lane (a GPU thread, under the
Triton lowering) holds one matrix in registers and runs every sweep, the sort and the
writes, so the batch is read once and the results written once. The pure-JAX entry
solver (:func:`eigjax._small._eigh_unrolled`) computes the same rotations, but XLA:GPU
launches one kernel per Jacobi step and re-reads the entries in between
(BENCHMARKS.md, "GPU (H200)").

Layout. A program of the grid takes ``block`` consecutive matrices. Every entry
``a[:, i, j]`` is loaded as a vector of shape ``(block,)`` over those matrices (the
batch on the lane axis), so each rotation is elementwise over the block and no lane
talks to another. ``layout="strided"`` (the default) loads the entries from the
``(B, n*n)`` view of the input, a stride of ``n*n`` elements between lanes (each
matrix's ``n*n`` values share cache lines, so every byte comes from memory once), and
stores the results the same way; ``layout="transposed"`` lets XLA transpose the batch
to ``(n*n, B)`` first and back afterwards (contiguous loads, but two more passes over
memory). Both are there to be measured on the GPU.

Maths: the formulas of :mod:`eigjax._small` (Rutishauser's rotation without division by
``a_pq``, the power-of-two scaling, an odd-even transposition sort), with

* the cyclic row order ``(0,1), (0,2), ..., (n-2,n-1)`` and a fixed number of sweeps
  (``_SWEEPS``, measured: see its comment), fully unrolled at trace time (at most
  ``28`` rotations per sweep at ``n = 8``);
* the skip threshold of the tiled solver and the native kernel: ``a_pq`` is rotated
  only if ``|a_pq| > max(eps sqrt|a_pp a_qq|, eps ||A||_F / n)``; otherwise the exact
  identity is applied, so a converged pair (inside an exactly degenerate cluster, say)
  does not churn rounding errors through the remaining fixed sweeps;
* the NaN check done by arithmetic (``sum(a_ij * 0) == 0``), since the Triton lowering
  of ``max`` is ``maxnumf``, which drops NaN; the power-of-two scales computed from the
  exponent bits (``frexp`` in bit operations).

On an H200 (benchmarks/results_gpu_pallas.md) it meets the accuracy bounds below on
random, exactly degenerate, clustered and 1e+-30 batches at n = 2, 3, 4 (float32 and
float64), where the Triton compile takes 1-3 s; at n = 5 the compile took 14-16 s and at
n = 8 over 100 s, unrolled or looped.

Contract: that of :func:`eigjax._small.eigh_small_accel` for real float32/float64
``(..., n, n)``, ``2 <= n <= 16``: the lower triangle (or with ``symmetrize`` the
symmetric part ``(a + a^T) / 2``), ascending eigenvalues ``(..., n)`` and orthonormal
eigenvectors ``(..., n, n)`` as columns (no sign convention), all NaN for a matrix
with a NaN or inf entry in the part read; ``vectors=False`` gives the eigenvalues
alone. Forward only: ``eigjax.eigh`` reaches it through the small-matrix primitive
(eigjax/_small_dispatch.py, ``PALLAS_PLAN``: float32 ``n = 3, 4`` on CUDA, measured on
an H200), whose derivative rules are those of every other solver.

On a GPU it lowers through Triton; ``interpret=True`` runs the same kernel body on any
backend (how the tests run it on the CPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from ._small import _sort_network

# Fixed sweep counts (cyclic order, skip threshold) for n <= 4, measured with
# ``sweeps_needed`` below on 4096 matrices of each hard family (random, exactly
# degenerate, clustered within 4 eps, a cluster of n - 1 spread by 1e-3, graded
# 1..10^-(n-1), 1e30): the number of sweeps after which no matrix rotates any pair any
# more (a further sweep is then the identity): n = 3: 4 (float32 and float64); n = 4: 5
# (float32), 6 (float64). These are the counts used (n = 3 float64 keeps one more).
# For n >= 5 the same measurement (tests/library/test_small.py's families, 638 matrices)
# gave n = 5: 5/6 (float32/float64), 6: 5/7, 7: 6/7, 8: 5/8; the table keeps one sweep
# more. n = 9..16 were not measured (XLA:CPU took over 10 minutes to compile one sweep
# at n = 12): ``n // 2 + 6`` there, a guess. On the H200 (jax 0.11.2) Triton took 14-16 s
# to compile the kernel at n = 5 and over 100 s at n = 8 (unrolled or looped), so only
# n <= 4 is dispatched to it (eigjax/_small_dispatch.py); a loop that stops once a sweep
# rotates nothing (a block-wide max in the loop condition) crashed Triton's compiler.
_SWEEPS = {
    (2, np.dtype(np.float32)): 1,
    (2, np.dtype(np.float64)): 1,
    (3, np.dtype(np.float32)): 4,
    (3, np.dtype(np.float64)): 5,
    (4, np.dtype(np.float32)): 5,
    (4, np.dtype(np.float64)): 6,
    (5, np.dtype(np.float32)): 6,
    (5, np.dtype(np.float64)): 7,
    (6, np.dtype(np.float32)): 6,
    (6, np.dtype(np.float64)): 8,
    (7, np.dtype(np.float32)): 7,
    (7, np.dtype(np.float64)): 8,
    (8, np.dtype(np.float32)): 6,
    (8, np.dtype(np.float64)): 9,
}
_FIXED_MAX_N = 4
_MAX_N = 16


def default_sweeps(n: int, dtype) -> int:
    """The fixed sweep count (``_SWEEPS``; ``n // 2 + 6`` for ``n > 8``, not measured)."""
    return _SWEEPS.get((n, np.dtype(dtype)), n // 2 + 6)


def _pow2_scales(amax, finite):
    """``(2^-e, 2^e)`` with ``2^-e amax`` in [0.5, 1), from the exponent bits of
    ``amax`` (what :func:`eigjax._small._scales` does with ``frexp``, written with the
    bit operations the Triton lowering has): ``e`` clipped so that both are normal
    numbers (a subnormal ``amax`` is scaled up as far as that allows), ``(1, 1)`` for a
    zero ``amax``, ``(1, NaN)`` where not ``finite``."""
    if amax.dtype == jnp.float32:
        itype, mant, bias = jnp.int32, 23, 127
    else:
        itype, mant, bias = jnp.int64, 52, 1023
    bits = jax.lax.bitcast_convert_type(amax, itype)
    ebits = jax.lax.shift_right_logical(bits, jnp.full_like(bits, mant)) & (2 * bias + 1)
    e = ebits - (bias - 1)  # frexp's exponent for a normal amax
    ok = (amax > 0) & finite
    e = jnp.where(ok, e, jnp.zeros_like(e))
    e = jnp.minimum(jnp.maximum(e, 2 - bias), bias - 2)
    shift = jnp.full_like(e, mant)
    scale = jax.lax.bitcast_convert_type(jax.lax.shift_left(bias - e, shift), amax.dtype)
    unscale = jax.lax.bitcast_convert_type(jax.lax.shift_left(bias + e, shift), amax.dtype)
    unscale = jnp.where(finite, unscale, jnp.full_like(unscale, jnp.nan))
    return scale, unscale


def _lin(a, x, b, y):
    """``a x + b y`` where ``x`` or ``y`` may be the Python constant 0.0 or 1.0 (the
    untouched entries of the identity that the eigenvectors start from): the constant
    terms are folded at trace time."""
    terms = []
    for coef, val in ((a, x), (b, y)):
        if isinstance(val, float):
            if val == 0.0:
                continue
            terms.append(coef if val == 1.0 else coef * val)
        else:
            terms.append(coef * val)
    if not terms:
        return 0.0
    return terms[0] + terms[1] if len(terms) == 2 else terms[0]


def _jacobi_lists(
    m: dict,
    n: int,
    sweeps: int,
    eps: float,
    with_vectors: bool = True,
    counts: bool = False,
    loop: bool = False,
    barrier: bool = False,
):
    """Cyclic Jacobi on entries ``m[(i, j)]`` (``i <= j``; arrays of the same shape,
    scaled so that ``max |a_ij|`` is in [0.5, 1)). Returns the diagonal (list) and
    ``v[row][col]`` (lists; entries may be the Python floats 0.0/1.0 where never
    touched), unsorted, and with ``counts`` the number of rotations done in each sweep
    (a list of arrays of the same shape: how ``sweeps_needed`` measures convergence).
    ``loop``: the sweeps after the first in a ``fori_loop`` (a body of one sweep)
    instead of unrolled."""
    m = dict(m)
    x0 = m[(0, 0)]
    zero = jnp.zeros_like(x0)
    one = jnp.ones_like(x0)
    # ||A||_F of the scaled input, for the absolute part of the skip threshold
    fro2 = functools.reduce(lambda s, k: s + (m[k] * m[k]) * (1.0 if k[0] == k[1] else 2.0), m, zero)
    floor = (eps / n) * jnp.sqrt(fro2)
    v = [[1.0 if r == c else 0.0 for c in range(n)] for r in range(n)] if with_vectors else None

    def key(i, j):
        return (i, j) if i <= j else (j, i)

    def sweep(m, v, counts):
        m = dict(m)
        count = zero
        for p in range(n - 1):
            for q in range(p + 1, n):
                app, aqq, apq = m[(p, p)], m[(q, q)], m[(p, q)]
                rot = jnp.abs(apq) > jnp.maximum(eps * jnp.sqrt(jnp.abs(app * aqq)), floor)
                d = aqq - app
                sign = jnp.where(d >= 0, one, -one)
                den = jnp.abs(d) + jnp.sqrt(d * d + 4.0 * (apq * apq))
                t = jnp.where(rot, (2.0 * sign) * apq / jnp.where(rot, den, one), zero)
                t = jnp.minimum(jnp.maximum(t, -one), one)
                if barrier:  # see _solve: one decision per rotation, wherever it is used
                    t, rot = jax.lax.optimization_barrier((t, rot))
                c = jax.lax.rsqrt(1.0 + t * t)
                s = t * c
                m[(p, p)], m[(q, q)] = app - t * apq, aqq + t * apq
                m[(p, q)] = jnp.where(rot, zero, apq)
                for r in range(n):
                    if r != p and r != q:
                        arp, arq = m[key(r, p)], m[key(r, q)]
                        m[key(r, p)], m[key(r, q)] = c * arp - s * arq, s * arp + c * arq
                if v is not None:
                    v = [list(row) for row in v]
                    for row in v:
                        vrp, vrq = row[p], row[q]
                        row[p], row[q] = _lin(c, vrp, -s, vrq), _lin(s, vrp, c, vrq)
                if counts:
                    count = count + jnp.where(rot, one, zero)
        return m, v, count

    done = []
    if loop and sweeps > 1 and not counts:
        # the first sweep unrolled (the identity's zeros folded), the others in a loop
        m, v, _ = sweep(m, v, False)
        keys = list(m)
        if v is not None:
            v = [[x if not isinstance(x, float) else x * one for x in row] for row in v]

        def body(_, carry):
            mm, vv = carry
            mm, vv, _ = sweep(dict(zip(keys, mm)), vv, False)
            return tuple(mm[k] for k in keys), vv

        mt, v = jax.lax.fori_loop(0, sweeps - 1, body, (tuple(m[k] for k in keys), v))
        m = dict(zip(keys, mt))
    else:
        for _ in range(sweeps):
            m, v, count = sweep(m, v, counts)
            done.append(count)
    return [m[(i, i)] for i in range(n)], v, done


def _solve(
    load, n: int, sweeps: int, symmetrize: bool, loop: bool = False, barrier: bool = False, vectors: bool = True
):
    """The whole solver on entries: ``load(i, j)`` gives ``a[:, i, j]`` (one array over
    the matrices). Returns the sorted eigenvalues (list of ``n`` arrays) and the
    eigenvector columns ``cols[c][r]`` (``[]`` without ``vectors``)."""
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    if symmetrize:
        raw = {k: (load(k[1], k[0]), load(k[0], k[1]) if k[0] != k[1] else None) for k in pairs}
        read = [x for lo, up in raw.values() for x in (lo, up) if x is not None]
    else:
        raw = {k: (load(k[1], k[0]), None) for k in pairs}  # the lower triangle a[j, i]
        read = [lo for lo, _ in raw.values()]
    x0 = read[0]
    dtype = x0.dtype
    eps = float(jnp.finfo(dtype).eps)
    amax = functools.reduce(jnp.maximum, [jnp.abs(x) for x in read])
    # NaN or inf anywhere gives NaN here (max in Triton drops NaN, arithmetic does not)
    finite = functools.reduce(lambda s, x: s + x * 0.0, read, jnp.zeros_like(x0)) == 0.0
    scale, unscale = _pow2_scales(amax, finite)
    m = {}
    for k, (lo, up) in raw.items():
        m[k] = lo * scale if up is None else (lo * scale) * 0.5 + (up * scale) * 0.5
    w, v, _ = _jacobi_lists(m, n, sweeps, eps, with_vectors=vectors, loop=loop, barrier=barrier)
    poison = jnp.where(finite, jnp.ones_like(x0), jnp.full_like(x0, jnp.nan))
    w = [x * unscale for x in w]
    cols = [] if v is None else [[v[r][c] * poison for r in range(n)] for c in range(n)]
    if barrier:
        # XLA (the interpreter's compiler) may duplicate a computation into several
        # fusions with different FMA contraction, so that one decision (rotate or skip a
        # pair, swap two nearly equal eigenvalues) comes out differently for different
        # entries: seen at n = 4 on degenerate input, where some rows of V were rotated
        # and others not (residual 1e6 eps). Barriers pin each decision (here and in
        # _jacobi_lists). The Triton lowering has no such barrier and needs none: each
        # value is one SSA value there, computed once.
        w, cols = jax.lax.optimization_barrier((w, cols))
    return _sort_network(w, cols)


def _kernel(x_ref, w_ref, *v_ref, n, b, block, sweeps, symmetrize, layout, masked, loop, interpret):
    start = pl.program_id(0) * block
    rows = pl.ds(start, block)
    mask = (start + jax.lax.broadcasted_iota(jnp.int32, (block,), 0)) < b if masked else None

    def at(ref, k):
        return ref.at[rows, k] if layout == "strided" else ref.at[k, rows]

    def load(i, j):
        if mask is None:
            return at(x_ref, i * n + j)[...]
        return plgpu.load(at(x_ref, i * n + j), mask=mask, other=0.0)

    def store(ref, k, val):
        if mask is None:
            at(ref, k)[...] = val
        else:
            plgpu.store(at(ref, k), val, mask=mask)

    w, cols = _solve(load, n, sweeps, symmetrize, loop, barrier=interpret, vectors=bool(v_ref))
    for i in range(n):
        store(w_ref, i, w[i])
    for c in range(len(cols)):
        for r in range(n):
            store(v_ref[0], r * n + c, cols[c][r])


@functools.partial(
    jax.jit,
    static_argnames=("sweeps", "block", "num_warps", "symmetrize", "layout", "loop", "vectors", "interpret"),
)
def eigh_small_pallas(
    a: jax.Array,
    *,
    sweeps: int | None = None,
    block: int = 128,
    num_warps: int | None = None,
    symmetrize: bool = False,
    layout: str = "strided",
    loop: bool | None = None,
    vectors: bool = True,
    interpret: bool = False,
):
    """Eigenvalues (ascending) and eigenvectors (columns) of real symmetric
    ``(..., n, n)`` input, ``2 <= n <= 16``, in one Pallas kernel (module docstring).

    Args:
      a: float32 or float64 ``(..., n, n)``; the lower triangle is read, or with
        ``symmetrize`` the symmetric part.
      sweeps: Jacobi sweeps (default: ``default_sweeps(n, dtype)``).
      block: matrices per program of the grid (a power of two: the Triton lowering
        needs power-of-two array sizes).
      num_warps: Triton warps per program (default ``block // 32``, clipped to 1..8: one
        matrix per thread).
      layout: ``"strided"`` (read and write the batch in place) or ``"transposed"``
        (XLA transposes to batch-last around the kernel).
      loop: the sweeps after the first in a loop (one sweep per iteration) instead of
        unrolled; default: unrolled for ``n <= 4`` on a GPU, looped otherwise (under
        ``interpret`` XLA:CPU compiles the unrolled form slowly, and the unrolled
        ``n = 4`` kernel once gave wrong eigenvectors on degenerate input under the
        interpreter, not diagnosed, see the tests).
      vectors: ``False``: eigenvalues only (no rotation is accumulated); returns ``w``.
      interpret: run the kernel body with Pallas' interpreter (any backend; the tests).

    Returns:
      ``(w, v)``: ``(..., n)`` ascending and ``(..., n, n)`` orthonormal columns, all NaN
      for a matrix with a NaN or inf entry in the part read (``w`` alone without
      ``vectors``).

    Raises:
      TypeError: a dtype other than float32/float64.
      ValueError: ``n`` outside 2..16, ``block`` not a power of two, unknown ``layout``
        or ``loop``.

    Example:
      >>> import jax.numpy as jnp
      >>> w, v = eigh_small_pallas(jnp.array([[[2.0, 1.0], [1.0, 2.0]]]), interpret=True)
      >>> w.round(6).tolist()
      [[1.0, 3.0]]
    """
    where = "eigjax.internal.eigh_small_pallas"
    if a.dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"{where}: argument `a` must be float32 or float64; got dtype {a.dtype}.")
    *batch, n, n2 = a.shape
    if n != n2 or not 2 <= n <= _MAX_N:
        raise ValueError(f"{where}: need (..., n, n) with 2 <= n <= 16; got {a.shape}.")
    if block < 1 or block & (block - 1):
        raise ValueError(f"{where}: block must be a power of two; got {block}.")
    if layout not in ("strided", "transposed"):
        raise ValueError(f"{where}: unknown layout {layout!r}.")
    if loop not in (None, False, True):
        raise ValueError(f"{where}: loop must be None, False or True; got {loop!r}.")
    sweeps = default_sweeps(n, a.dtype) if sweeps is None else int(sweeps)
    if loop is None:
        loop = n > _FIXED_MAX_N or bool(interpret)
    b = int(np.prod(batch, dtype=np.int64))
    x = a.reshape(b, n * n)
    nblocks = max(1, -(-b // block))
    bp = nblocks * block
    # On a GPU the last, partial block is masked. Pallas' interpreter clamps an
    # out-of-bounds block to the array (a masked store would land on the wrong rows),
    # so there the batch is padded with identity matrices instead.
    masked = bp != b and not interpret
    if bp != b and interpret:
        pad = jnp.broadcast_to(jnp.eye(n, dtype=a.dtype).reshape(1, n * n), (bp - b, n * n))
        x = jnp.concatenate([x, pad])
    rows = bp if interpret else b
    shapes = ((rows, n), (rows, n * n))
    if layout == "transposed":
        x = x.T
        shapes = tuple(s[::-1] for s in shapes)
    out_shape = tuple(jax.ShapeDtypeStruct(s, a.dtype) for s in shapes[: 2 if vectors else 1])
    warps = num_warps if num_warps is not None else max(1, min(8, block // 32))
    kernel = functools.partial(
        _kernel,
        n=n,
        b=b,
        block=block,
        sweeps=sweeps,
        symmetrize=symmetrize,
        layout=layout,
        masked=masked,
        loop=loop,
        interpret=interpret,
    )
    out = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(nblocks,),
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=warps, num_stages=1),
        name=f"eigjax_jacobi_{n}x{n}",
    )(x)
    if layout == "transposed":
        out = tuple(y.T for y in out)
    w = out[0][:b].reshape(*batch, n)
    if not vectors:
        return w
    return w, out[1][:b].reshape(*batch, n, n)


def eigh_entries_jax(a: jax.Array, *, sweeps: int | None = None, symmetrize: bool = False):
    """The kernel's arithmetic as plain JAX on ``(B, n, n)`` (entries sliced from the
    input): a fast reference on the CPU, and how ``sweeps_needed`` runs."""
    n = a.shape[-1]
    sweeps = default_sweeps(n, a.dtype) if sweeps is None else int(sweeps)
    w, cols = _solve(lambda i, j: a[:, i, j], n, sweeps, symmetrize, barrier=True)
    return jnp.stack(w, axis=-1), jnp.stack([jnp.stack(col, axis=-1) for col in cols], axis=-1)


def sweeps_needed(a: np.ndarray, max_sweeps: int = 12) -> int:
    """Development measure (``_SWEEPS``): the smallest ``k`` such that no matrix of the
    batch ``a`` (``(B, n, n)``, symmetric) rotates any pair in sweep ``k + 1``, i.e. the
    sweep count after which another sweep is the identity for every matrix."""
    n = a.shape[-1]
    x = jnp.asarray(a)
    amax = jnp.max(jnp.abs(x), axis=(-2, -1))
    scale, _ = _pow2_scales(amax, jnp.isfinite(amax))
    x = x * scale[:, None, None]
    eps = float(jnp.finfo(x.dtype).eps)
    m = {(i, j): x[:, j, i] for i in range(n) for j in range(i, n)}
    run = jax.jit(lambda m: _jacobi_lists(m, n, max_sweeps, eps, with_vectors=False, counts=True)[2])
    rotated = [bool(jnp.any(c > 0)) for c in run(m)]
    # a sweep that rotates nothing leaves the matrix as it is, so every later one does too
    return rotated.index(False) if False in rotated else max_sweeps
