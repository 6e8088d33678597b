"""Fast forward solvers for batches of small real symmetric matrices.

Maths. Every solver here is the cyclic Jacobi method (Jacobi 1846; Golub & Van Loan,
*Matrix Computations*, 4th ed., sec. 8.5; Rutishauser 1966 for the rotation). One
rotation annihilates the pair ``(p, q)``:

    theta = (a_qq - a_pp) / (2 a_pq),   t = sign(theta) / (|theta| + hypot(1, theta)),
    c = 1 / sqrt(1 + t^2),   s = t c,
    a_pp' = a_pp - t a_pq,   a_qq' = a_qq + t a_pq,   a_pq' = 0,
    a_rp' = c a_rp - s a_rq, a_rq' = s a_rp + c a_rq  (r != p, q),

and the same column rotation accumulates the eigenvectors ``V``. ``t`` is the
smaller root of ``t^2 + 2 theta t - 1 = 0`` (``|t| <= 1``, rotation angle at most
pi/4), computed without cancellation and, through ``hypot``, without overflow for
``|theta|`` up to the largest float; ``a_pq = 0`` gives exactly ``c = 1, s = 0``.
This is the "numerically careful" 2x2 closed form: for ``n = 2`` one rotation is the
exact eigendecomposition, with no quadratic formula and no cancellation.

Jacobi is backward stable: each rotation is an exact orthogonal similarity of a
matrix within ``O(eps ||A||)`` of the current one, so the residual
``||A V - V diag(w)|| / ||A||`` and ``||V^T V - I||`` stay at a small multiple of
``eps`` times the number of sweeps (Demmel & Veselic 1992). Convergence of the
cyclic orderings is quadratic once ``off(A)`` is below half the smallest gap between
distinct eigenvalue clusters (Schonhage 1964; Hari 1991 for clusters, including
exact multiple eigenvalues), so a fixed small number of sweeps suffices:
``off(A)^2`` drops from ``O(||A||^2)`` to below ``eps^2 ||A||^2`` in 4-6 sweeps for
``n <= 4`` (verified on random, exactly degenerate, nearly degenerate and badly
scaled batches of 10^5 matrices in tests/library/test_small.py and during development).

Scaling. The matrix is first multiplied by ``2^-e`` with ``2^e`` the power of two
just above ``max |a_ij|`` (exact in binary floating point) and the eigenvalues
scaled back, so inputs of size 1e-30 or 1e+30 in float32 neither underflow nor
overflow inside the rotations.

Two implementations share these formulas:

* ``n <= 4``: unrolled over the matrix entries, each entry an array over the batch,
  with a fixed sweep count. XLA does not fuse a whole sweep into one loop over the
  batch: it materialises each rotation's ``sqrt``/division results and re-reads the
  entries in 30-45 elementwise kernels per sweep, so the solver is bound by memory
  traffic in the last-level cache (measured from the compiled HLO; this is what the
  rotation schedule below minimises).
  For ``5 <= n <= 16`` the same unrolling runs the round-robin schedule below with the
  native kernel's skip rule and a stop test (an accelerators' candidate, see
  :func:`_eigh_unrolled`).
* ``5 <= n``: the parallel (round-robin, Brent & Luk 1985) ordering on arrays of
  shape ``(n, n, T)`` with the batch last (vectorized), tiles of ``T`` matrices
  processed by ``lax.map`` so a tile stays in cache, and a ``while_loop`` over sweeps
  stopped when ``off(A) <= eps ||A||_F`` for the whole tile (or at a cap). Each round
  rotates the ``n/2`` disjoint pairs ``(2k, 2k+1)`` at once, then applies a fixed
  permutation of the indices so every pair meets once in ``n - 1`` rounds. Odd ``n``
  is padded with one decoupled row/column whose diagonal lies above every
  eigenvalue; zero couplings give exact identity rotations, so it never mixes in,
  sorts last and is dropped.

Complex Hermitian input is not handled here (the caller routes it to the backend
solver). On the CPU, ``eigjax.eigh`` prefers the native kernel (:mod:`eigjax._native`,
the same rotations vectorised across matrices in C++) for ``3 <= n <= 16`` and for
small batches; these solvers are its fallback where the kernel cannot be built, and the
``n = 2`` solver (one pass over memory) stays the first choice for batches of 128 or more.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _rotation(app, aqq, apq):
    """``(t, c, s)`` of the Jacobi rotation annihilating ``apq`` (arrays, scaled input).

    ``t = 2 a_pq sign(d) / (|d| + sqrt(d^2 + 4 a_pq^2))`` with ``d = a_qq - a_pp`` is
    Rutishauser's ``sign(theta) / (|theta| + sqrt(1 + theta^2))`` multiplied through by
    ``|2 a_pq|``: no division by ``a_pq``, no cancellation. Entries are at most
    ``||A||_F <= n`` after scaling, so the squares cannot overflow; if they underflow
    (``|d|, |a_pq| < 1e-19`` in float32, far below ``eps ||A||``) the rotation may be
    skipped or be off the small-angle branch, which changes nothing beyond rounding.
    """
    d = aqq - app
    one = jnp.ones_like(d)
    sign = jnp.where(d >= 0, one, -one)
    den = jnp.abs(d) + jnp.sqrt(d * d + 4 * (apq * apq))
    t = jnp.where(den > 0, (2 * sign) * apq / jnp.where(den > 0, den, one), jnp.zeros_like(d))
    t = jnp.clip(t, -one, one)
    c = jax.lax.rsqrt(1 + t * t)
    s = t * c
    return t, c, s


def _rotates(app, aqq, apq, floor, eps):
    """The skip rule of the native kernel (_small_native.cc): rotate the pair only if
    ``|a_pq| > max(eps sqrt|a_pp a_qq|, floor)``; below it the pair is left exactly as it is."""
    return jnp.abs(apq) > jnp.maximum(eps * jnp.sqrt(jnp.abs(app * aqq)), floor)


def _scales(amax, finite):
    """Powers of two ``(2^-e, 2^e)`` with ``2^-e amax`` in [0.5, 1); ``(1, 1)`` for zero
    ``amax``, and ``(1, NaN)`` where not ``finite`` (a NaN or inf entry: the caller's
    outputs are then all NaN). ``finite`` comes from the caller: ``isfinite(amax)`` in
    the unrolled solver, an explicit reduction over the entries in the tiled one.
    Computed once per matrix; multiplying by them is exact."""
    _, e = jnp.frexp(amax)
    ok = (amax > 0) & finite
    # clipped so that 2^e and 2^-e are normal numbers: a subnormal amax is scaled up
    # only as far as that allows (2^-e would overflow otherwise)
    fi = jnp.finfo(amax.dtype)
    lo, hi = max(int(fi.minexp), 1 - int(fi.maxexp)), min(int(fi.maxexp) - 1, -int(fi.minexp))
    e = jnp.clip(jnp.where(ok, e, jnp.zeros_like(e)), lo, hi)
    one = jnp.ones_like(amax)
    unscale = jnp.where(finite, jnp.ldexp(one, e), jnp.nan)
    return jnp.ldexp(one, -e), unscale


# Fixed sweep counts for the unrolled solvers. Measured (development script in
# tests/library/test_small.py::test_sweep_count_margin): the worst max off-diagonal after
# k sweeps over 10^5 random / degenerate / nearly degenerate matrices reaches the
# rounding floor at k = 3 (n = 3) and k = 4 (n = 4) in float32, k = 4 and k = 5 in
# float64; one more sweep is added as margin.
_UNROLLED_SWEEPS = {
    (3, np.dtype(np.float32)): 4,
    (3, np.dtype(np.float64)): 5,
    (4, np.dtype(np.float32)): 5,
    (4, np.dtype(np.float64)): 6,
}

# Rotation schedule of the unrolled solvers: ``(pairs, src, unroll)``. One loop step
# rotates the disjoint ``pairs`` and then relabels the indices, ``new[i] = old[src[i]]``,
# so that the next step rotates the same positions again; three steps make a sweep in
# which every pair meets once (n = 3: the cyclic order (0,1), (1,2), (2,0); n = 4: the
# round-robin order of the tiled solver below). Relabelling is free here (it reorders
# Python references), and every step has the same body, so the loop body can be one
# step: its entries then depend on at most two rotations, which keeps XLA's fusions
# shallow. At n = 4 one step per loop body is faster than one cyclic sweep per body;
# at n = 3 a whole sweep per body (``unroll`` = 3) is the faster of the two
# (BENCHMARKS.md, "Against the targets").
_SCHEDULES = {3: ([(0, 1)], (1, 2, 0), 3), 4: ([(0, 1), (2, 3)], None, 1)}


def _sort_network(w, cols):
    """Sort eigenvalues ascending (list of arrays), permuting the eigenvector columns
    (lists of entries; an empty list for values only).

    Odd-even transposition network: ``n`` passes of compare-and-swap with
    ``jnp.where``, all elementwise over the batch.
    """
    n = len(w)
    w, cols = list(w), [list(c) for c in cols]
    for pass_ in range(n):
        for i in range(pass_ % 2, n - 1, 2):
            swap = w[i + 1] < w[i]
            w[i], w[i + 1] = jnp.where(swap, w[i + 1], w[i]), jnp.where(swap, w[i], w[i + 1])
            if not cols:
                continue
            ci, cj = cols[i], cols[i + 1]
            cols[i] = [jnp.where(swap, y, x) for x, y in zip(ci, cj)]
            cols[i + 1] = [jnp.where(swap, x, y) for x, y in zip(ci, cj)]
    return w, cols


def _eigh_unrolled(
    a: jax.Array, symmetrize: bool = False, *, unroll_sweep: bool | None = None
) -> tuple[jax.Array, jax.Array]:
    """Jacobi unrolled over entries, for real ``(..., n, n)`` (``symmetrize``: of
    ``(a + a^T) / 2``, formed entry by entry after the power-of-two scaling, so entries
    near the largest float cannot overflow in the sum).

    Every entry is one array over the batch, read by a strided slice of the input and
    written by one stack into the output: no transposes, so XLA fuses the scaling,
    the symmetrisation and the reads into the first loop step (at n = 2, the whole
    solver into one pass: faster than transposing to batch-last first; BENCHMARKS.md,
    "Against the issue's targets").

    ``n <= 4``: a fixed number of sweeps (``_UNROLLED_SWEEPS``), in a ``fori_loop``
    (shallow fusions, fast to compile; unrolled in Python it took minutes to compile on
    XLA:CPU at n = 3, so that form was dropped).

    ``5 <= n <= 16`` (an accelerators' candidate, chosen by nothing yet: see
    :func:`accel_plan`): the round-robin schedule of the tiled solver on entries
    (odd ``n`` padded with one decoupled index), one sweep of ``n - 1`` steps per
    ``while_loop`` iteration (unrolled in Python with ``unroll_sweep``, the default up
    to n = 8: above, XLA:CPU took over 16 GB and minutes to compile the n = 16 sweep;
    else a ``fori_loop`` over its steps), with the native kernel's skip rule: the pair ``(p, q)``
    is rotated only if ``|a_pq| > max(eps sqrt|a_pp a_qq|, eps ||A||_F / n)``, so a
    converged matrix is left exactly as it is, and the loop ends when no pair of any
    matrix of the batch is above that threshold (at most ``_MAX_SWEEPS``): the sweep that
    would rotate nothing is not run. A first form without the
    skip rule, which rotated until ``off(A) <= eps ||A||_F``, churned rounding inside
    exactly degenerate clusters (residual 1e4 eps in float64; BENCHMARKS.md,
    "GPU (H200)").
    """
    n = a.shape[-1]
    dtype = np.dtype(a.dtype)
    batch = a.shape[:-2]
    a = a.reshape(-1, n, n)
    amax = functools.reduce(jnp.maximum, [jnp.abs(a[:, i, j]) for i in range(n) for j in range(n)])
    finite = jnp.isfinite(amax)  # max and abs propagate NaN and inf
    scale, unscale = _scales(amax, finite)
    if n > ACCEL_ENTRIES_MAX_N:
        raise ValueError(f"eigjax._small._eigh_unrolled: n must be at most {ACCEL_ENTRIES_MAX_N}; got {n}.")
    npad = n + (n % 2) if n >= 5 else n
    keys = [(i, j) for i in range(npad) for j in range(i, npad)]  # symmetric storage, i <= j
    one, zero = jnp.ones_like(amax), jnp.zeros_like(amax)

    def entry(i, j):  # lower triangle, like the backend solver, or the Hermitian part
        if i >= n or j >= n:  # padding: decoupled, above every eigenvalue (|w| <= n)
            return jnp.full_like(amax, 2.0 * n + 4.0) if i == j else zero
        low = a[:, j, i] * scale
        return low * 0.5 + (a[:, i, j] * scale) * 0.5 if symmetrize and i != j else low

    def key(i, j):
        return (i, j) if i <= j else (j, i)

    m0 = tuple(entry(i, j) for i, j in keys)
    v0 = tuple(tuple(one if r == c else zero for c in range(npad)) for r in range(npad))  # v[row][col]
    if n >= 5:
        pairs, src, unroll = [(2 * k, 2 * k + 1) for k in range(npad // 2)], None, 1
        per_sweep = npad - 1
    else:
        pairs, src, unroll = _SCHEDULES.get(n, ([(0, 1)], (0, 1), 1))
        per_sweep = 3  # steps after which the labels are back in place
    if src is None:
        src = tuple(int(i) for i in _round_robin_perm(npad))
    eps = float(np.finfo(dtype).eps)

    def step(carry, floor=None) -> tuple:
        """One step; with ``floor`` (the skip rule's absolute part), pairs at or below
        the threshold are left exactly as they are."""
        m, v = dict(zip(keys, carry[0])), [list(row) for row in carry[1]]
        for p, q in pairs:
            app, aqq, apq = m[(p, p)], m[(q, q)], m[(p, q)]
            t, c, s = _rotation(app, aqq, apq)
            new_apq = zero
            if floor is not None:
                rot = _rotates(app, aqq, apq, floor, eps)
                t, c, s = jnp.where(rot, t, zero), jnp.where(rot, c, one), jnp.where(rot, s, zero)
                new_apq = jnp.where(rot, zero, apq)
            m[(p, p)], m[(q, q)], m[(p, q)] = app - t * apq, aqq + t * apq, new_apq
            for r in range(npad):
                if r != p and r != q:
                    arp, arq = m[key(r, p)], m[key(r, q)]
                    m[key(r, p)], m[key(r, q)] = c * arp - s * arq, s * arp + c * arq
            for row in v:
                vrp, vrq = row[p], row[q]
                row[p], row[q] = c * vrp - s * vrq, s * vrp + c * vrq
        return (tuple(m[key(src[i], src[j])] for i, j in keys), tuple(tuple(row[k] for k in src) for row in v))

    # 1, or NaN for a non-finite input (the eigenvectors are then NaN too)
    poison = jnp.where(finite, one, jnp.nan)
    state = (m0, v0)
    if n == 2:  # one rotation is the exact eigendecomposition
        state = step(state)
    elif n <= 4:
        # unscale and poison ride along unchanged: materialised once, instead of XLA
        # recomputing max |a_ij| in every output kernel (slower at n = 3)
        steps = per_sweep * _UNROLLED_SWEEPS[(n, dtype)]
        body = lambda i, c: (*step(c[:2]), c[2])  # noqa: E731
        *state, (unscale, poison) = jax.lax.fori_loop(0, steps, body, (*state, (unscale, poison)), unroll=unroll)
    else:
        # ||A||_F of the scaled input, from one triangle and the diagonal (padding excluded)
        sq = [(1.0 if i == j else 2.0) * m0[k] * m0[k] for k, (i, j) in enumerate(keys) if j < n]
        floor = eps * jnp.sqrt(functools.reduce(jnp.add, sq)) / n

        def above(m, floor):
            """Whether any pair of any matrix is above the skip threshold: the next sweep
            would rotate (the rule depends on the pair and its diagonal only, which do not
            change while nothing rotates), so stopping here saves the confirming sweep."""
            mm = dict(zip(keys, m))
            tests = [_rotates(mm[(i, i)], mm[(j, j)], mm[(i, j)], floor, eps) for i, j in keys if i < j < n]
            return jnp.any(functools.reduce(jnp.logical_or, tests))

        def sweep(c):
            st = (c[0], c[1])
            if unroll_sweep if unroll_sweep is not None else npad <= 8:
                for _ in range(per_sweep):
                    st = step(st, c[2][0])
            else:
                st = jax.lax.fori_loop(0, per_sweep, lambda _, x: step(x, c[2][0]), st)
            return (*st, c[2], c[3] + 1, above(st[0], c[2][0]))

        cond = lambda c: (c[3] < _MAX_SWEEPS[dtype]) & c[4]  # noqa: E731
        init = (m0, v0, (floor, unscale, poison), jnp.int32(0), above(m0, floor))
        m_out, v_out, (_, unscale, poison), _, _ = jax.lax.while_loop(cond, sweep, init)
        state = (m_out, v_out)
    m, v = state
    m = dict(zip(keys, m))
    w = [m[(i, i)] * unscale for i in range(npad)]
    cols = [[v[r][c] * poison for r in range(npad)] for c in range(npad)]
    w, cols = _sort_network(w, cols)
    w, cols = w[:n], [col[:n] for col in cols[:n]]  # the padding sorts last
    w = jnp.stack(w, axis=-1)
    vecs = jnp.stack([jnp.stack(col, axis=-1) for col in cols], axis=-1)  # (B, row, col)
    return w.reshape(*batch, n), vecs.reshape(*batch, n, n)


# ---------------------------------------------------------------------------
# Round-robin parallel Jacobi for 5 <= n.


def _round_robin_perm(n: int) -> np.ndarray:
    """``src`` with ``new[i] = old[src[i]]``: one step of the round-robin tournament.

    Positions ``(2k, 2k+1)`` hold pair ``k`` (top[k], bottom[k]). Player top[0] stays;
    the others move one seat around the table, so that after ``n - 1`` steps every
    pair of players has met exactly once.
    """
    m = n // 2
    src = np.empty(n, dtype=np.int32)
    src[0] = 0
    if m > 1:
        src[2] = 1
    for k in range(2, m):
        src[2 * k] = 2 * (k - 1)
    for k in range(m - 1):
        src[2 * k + 1] = 2 * (k + 1) + 1
    src[2 * m - 1] = 2 * (m - 1)
    return src


_MAX_SWEEPS = {np.dtype(np.float32): 12, np.dtype(np.float64): 16}


def _jacobi_tile(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Parallel-order Jacobi on a tile ``a`` of shape ``(n, n, T)`` (n even, scaled).

    Returns the diagonal ``(n, T)`` and the eigenvectors ``(n, n, T)`` (unsorted).
    """
    n, _, tsz = a.shape
    m = n // 2
    dtype = a.dtype
    eps = float(jnp.finfo(dtype).eps)
    src = jnp.asarray(_round_robin_perm(n))
    v = jnp.broadcast_to(jnp.eye(n, dtype=dtype)[:, :, None], (n, n, tsz))
    pp = np.arange(m) * 2
    diag_idx = (pp, pp + 1)

    # Skip threshold of a_pq (as in the native kernel, _small_native.cc):
    # max(eps sqrt|a_pp a_qq|, eps ||A||_F / n). A skipped pair gets the exact identity,
    # so a converged matrix stays as it is while others in the batch still rotate, and a
    # sweep that rotates nothing ends the loop. Rotating every pair until
    # off(A) <= eps ||A||_F churned rounding inside degenerate clusters: residual 56-67
    # eps at n = 16 on a GPU batch of 4096 (BENCHMARKS.md).
    floor = eps * jnp.sqrt(jnp.sum(a * a, axis=(0, 1))) / n  # (T,)

    def one_round(_, carry):
        a, v, rotated = carry
        app = a[diag_idx[0], diag_idx[0]]  # (m, T)
        aqq = a[diag_idx[1], diag_idx[1]]
        apq = a[diag_idx[0], diag_idx[1]]
        rot = _rotates(app, aqq, apq, floor[None, :], eps)
        _, c, s = _rotation(app, aqq, apq)
        c, s = jnp.where(rot, c, jnp.ones_like(c)), jnp.where(rot, s, jnp.zeros_like(s))
        rotated = rotated | jnp.any(rot)
        c3, s3 = c[:, None, :], s[:, None, :]
        # Rows: a[p, :], a[q, :].
        r = a.reshape(m, 2, n, tsz)
        rp, rq = r[:, 0], r[:, 1]
        a = jnp.stack([c3 * rp - s3 * rq, s3 * rp + c3 * rq], axis=1).reshape(n, n, tsz)
        # Columns: a[:, p], a[:, q]; the same for v.
        c4, s4 = c[None, :, :], s[None, :, :]

        def cols(x):
            x = x.reshape(n, m, 2, tsz)
            xp, xq = x[:, :, 0], x[:, :, 1]
            return jnp.stack([c4 * xp - s4 * xq, s4 * xp + c4 * xq], axis=2).reshape(n, n, tsz)

        a, v = cols(a), cols(v)
        # Permute the indices for the next round (rows and columns of a, columns of v).
        a = a[src][:, src]
        v = v[:, src]
        return a, v, rotated

    def cond(state):
        _, _, k, rotated = state
        return (k < _MAX_SWEEPS[np.dtype(dtype)]) & rotated

    def sweep(state):
        a, v, k, _ = state
        a, v, rotated = jax.lax.fori_loop(0, n - 1, one_round, (a, v, jnp.bool_(False)))
        return a, v, k + 1, rotated

    a, v, _, _ = jax.lax.while_loop(cond, sweep, (a, v, jnp.int32(0), jnp.bool_(True)))
    return jnp.diagonal(a, axis1=0, axis2=1).T, v


def _eigh_tiled(a: jax.Array, tile: int = 256) -> tuple[jax.Array, jax.Array]:
    """Round-robin Jacobi for real ``(..., n, n)``; see the module docstring. ``tile = 0``
    processes the whole batch as one tile (the accelerators' form)."""
    *batch, n, _ = a.shape
    dtype = a.dtype
    a = a.reshape(-1, n, n)
    b = a.shape[0]
    amax = jnp.max(jnp.abs(a), axis=(-2, -1))
    finite = jnp.all(jnp.isfinite(a), axis=(-2, -1))
    scale, unscale = _scales(amax, finite)
    a = a * scale[:, None, None]
    # Symmetric from the lower triangle (what the backend solver reads).
    low = jnp.tril(a)
    a = low + jnp.swapaxes(jnp.tril(a, -1), -1, -2)
    npad = n + (n % 2)
    if npad != n:
        # Decoupled extra eigenvalue 4 > ||A||_2 / 2^e, which is at most n.
        big = jnp.asarray(2.0 * n + 4.0, dtype)
        a = jnp.pad(a, ((0, 0), (0, 1), (0, 1)))
        a = a.at[:, n, n].set(big)
    tile = int(min(tile, max(b, 1))) if tile > 0 else max(b, 1)  # 0: the whole batch
    nt = -(-b // tile)
    bp = nt * tile
    if bp != b:
        a = jnp.concatenate([a, jnp.broadcast_to(jnp.eye(npad, dtype=dtype), (bp - b, npad, npad))])
    tiles = a.reshape(nt, tile, npad, npad).transpose(0, 2, 3, 1)  # (nt, n, n, T)
    w, v = jax.lax.map(_jacobi_tile, tiles)
    w = w.transpose(0, 2, 1).reshape(bp, npad)[:b]
    v = v.transpose(0, 3, 1, 2).reshape(bp, npad, npad)[:b]
    order = jnp.argsort(w, axis=-1)
    w = jnp.take_along_axis(w, order, axis=-1)[:, :n]
    v = jnp.take_along_axis(v, order[:, None, :], axis=-1)[:, :n, :n]
    w = w * unscale[:, None]
    v = v * jnp.where(finite, 1, jnp.nan).astype(dtype)[:, None, None]
    return w.reshape(*batch, n), v.reshape(*batch, n, n)


@functools.partial(jax.jit, static_argnames="symmetrize")  # eager calls: one compile per shape/dtype
def eigh_small(a: jax.Array, *, symmetrize: bool = False) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (ascending) and eigenvectors of real symmetric ``(..., n, n)`` input.

    Reads the lower triangle, like ``jax.lax.linalg.eigh(a, lower=True)``, or with
    ``symmetrize`` uses ``(a + a^T) / 2``. Returns ``(w, v)`` in the order of
    ``_eigh_forward``. Real dtypes only.

    Raises:
      TypeError: complex input (use the backend solver for complex Hermitian input).
    """
    if jnp.issubdtype(a.dtype, jnp.complexfloating):
        raise TypeError(
            f"eigjax._small.eigh_small: argument `a` must be real (float32 or float64); got dtype {a.dtype}."
        )
    n = a.shape[-1]
    if n == 1:
        return a[..., 0], jnp.ones_like(a)
    if n <= 4:
        return _eigh_unrolled(a, symmetrize)
    return _eigh_tiled(a / 2 + jnp.swapaxes(a, -1, -2) / 2 if symmetrize else a)  # no overflow near max


@functools.partial(jax.jit, static_argnames=("symmetrize", "method", "unroll_sweep"))
def eigh_small_accel(
    a: jax.Array, *, symmetrize: bool = False, method: str | None = None, unroll_sweep: bool | None = None
) -> tuple[jax.Array, jax.Array]:
    """The small-matrix solver of the accelerators (GPU, TPU), for real ``(..., n, n)``
    input (the lower triangle, or with ``symmetrize`` the symmetric part).

    ``method``: ``"entries"`` (:func:`_eigh_unrolled`, for ``n <= 16``; the default for
    ``n <= 4``) or ``"tiled"`` (:func:`_eigh_tiled` on the whole batch as one tile, the
    default above). Which one a GPU/TPU program uses is :func:`accel_plan`'s table. Pure
    JAX, so it runs (and is tested) on every backend; XLA:GPU fuses the elementwise
    sweeps that XLA:CPU splits into many kernels. ``unroll_sweep``: the entry solver's
    loop form for ``n >= 5`` (:func:`_eigh_unrolled`).

    Example:
        >>> import jax.numpy as jnp
        >>> from eigjax.internal import eigh_small_accel
        >>> a = jnp.broadcast_to(jnp.diag(jnp.arange(6.0)) + 1.0, (3, 6, 6))
        >>> w, v = eigh_small_accel(a, method="entries")
        >>> bool(jnp.allclose(a @ v, v * w[..., None, :], atol=1e-5))
        True
    """
    if jnp.issubdtype(a.dtype, jnp.complexfloating):
        raise TypeError(
            f"eigjax._small.eigh_small_accel: argument `a` must be real (float32 or float64); got dtype {a.dtype}."
        )
    n = a.shape[-1]
    if n == 1:
        return eigh_small(a, symmetrize=symmetrize)
    if (method or ("entries" if n <= 4 else "tiled")) == "tiled":
        return _eigh_tiled(a / 2 + jnp.swapaxes(a, -1, -2) / 2 if symmetrize else a, tile=0)
    return _eigh_unrolled(a, symmetrize, unroll_sweep=unroll_sweep)


def accel_plan(n: int, batch: int) -> dict | None:
    """The options of :func:`eigh_small_accel` that a GPU/TPU program uses for ``batch``
    matrices of size ``n``, or None for the backend's solver (cuSOLVER's batched Jacobi
    on a GPU): ``ENTRIES_PLAN``'s table."""
    min_batch = ENTRIES_PLAN.get(n)
    return None if min_batch is None or batch < min_batch else {"method": "entries"}


# Fewest matrices for which n = 4 uses the pure-JAX solver on an accelerator (measured
# faster at 1e5 and 1e6, slower at 1e4).
ACCEL_MIN_BATCH = 100_000
# Where the entry solver runs on an accelerator: n -> fewest matrices. Measured on an
# H200 against ``vmap(jnp.linalg.eigh)`` (BENCHMARKS.md, "GPU (H200)";
# benchmarks/bench_gpu.py): it wins at n = 2, 3, and at n = 4 in batches of 1e5 and more;
# cuSOLVER wins at n = 4 in batches of 1e4 (launch-bound loops). For 5 <= n <= 16 the
# round-robin entry solver with the skip rule has not been timed on a GPU yet
# (``bench_gpu.py --try-entries`` adds it here for a run), so cuSOLVER stays.
ENTRIES_PLAN: dict[int, int] = {2: 0, 3: 0, 4: ACCEL_MIN_BATCH}


def route_to_entry_solver(n: int, min_batch: int = 0) -> None:
    """From now on, programs lowered for a GPU/TPU solve batches of at least ``min_batch``
    real ``n x n`` matrices (``2 <= n <= 16``) with the pure-JAX entry solver (an entry of
    ``ENTRIES_PLAN``): for experiments such as ``benchmarks/bench_gpu.py --try-entries``.
    Programs already compiled keep their solver."""
    if not 2 <= n <= ACCEL_ENTRIES_MAX_N:
        raise ValueError(f"route_to_entry_solver: n must satisfy 2 <= n <= {ACCEL_ENTRIES_MAX_N}; got {n}.")
    ENTRIES_PLAN[int(n)] = int(min_batch)


ACCEL_MAX_N = 4
# Largest n of the entry solver (``method="entries"``; its program grows as n^3 per sweep).
ACCEL_ENTRIES_MAX_N = 16


# Fewest matrices in one call for which the fast path is chosen. XLA takes seconds to
# compile the unrolled solver (n = 3, 4; once per shape), while LAPACK solves a few
# small matrices in microseconds: the fast path pays off only for batches
# (BENCHMARKS.md, "Batched small matrices"). The count is
# the product of the explicit batch dimensions and, under ``jax.vmap``, the mapped axis
# (the lowering in eigjax/_small_dispatch.py sees the whole batch).
SMALL_MIN_BATCH = 128
