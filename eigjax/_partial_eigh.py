"""Partial Hermitian eigendecomposition: ``k`` extremal eigenpairs of a dense, sparse or matrix-free operator.

Forward, ``method="chebyshev"`` (the default): Chebyshev-filtered subspace iteration
(Zhou, Saad, Tiago & Chelikowsky 2006; Zhou & Saad 2007). A block ``X`` of ``p >= k``
vectors is multiplied by ``p_d(A)``, the degree-``d`` Chebyshev polynomial of the affine
map that sends the unwanted interval ``[cut, upper]`` onto ``[-1, 1]`` (``upper`` an upper
bound of the spectrum, ``cut`` the largest Ritz value of the block; scaled three-term
recurrence, so nothing overflows), then orthonormalised (QR) and rotated onto its Ritz
vectors (Rayleigh-Ritz). An eigencomponent at ``lambda < cut`` grows relative to the
damped interval by ``T_d(x) ~ exp(d sqrt(2 (x - 1)))``, ``x - 1 = 2 (cut - lambda) /
(upper - cut)``: the number of products needed goes like ``sqrt(width / gap)`` (the gap
between ``lambda_k`` and ``lambda_{p+1}``), where the restarted block Krylov method needs
about ``width / gap`` restarts of fixed length. ``upper`` is ``theta_max + beta`` of 20
Lanczos steps run from every row of the random start block (largest Ritz value plus the
last residual norm, Zhou & Li 2011; no basis is stored), raised if a Ritz value of the
block ever reaches it. The degree of each filter is what would reach the tolerance if
the current rate held, at least 6, at most 1.5 times the previous one (so the cut is
refined while it is still far from ``lambda_{p+1}``: measured 20% fewer products on a
grid Laplacian) and at most what keeps the amplification spread inside the block below
``eps**-0.5`` (so the QR loses no accuracy). The ``k`` largest are the ``k`` smallest of
``-A``.

Forward, ``method="krylov"``: restarted block Krylov (block Lanczos) with full
reorthogonalisation and Rayleigh-Ritz (Golub & Underwood 1977; Saad, "Numerical Methods
for Large Eigenvalue Problems", 2nd ed., ch. 6). Each restart builds the orthonormal block
Krylov basis ``Q = [X, A X, ..., A^{m-1} X]`` (every new block orthogonalised twice
against all previous ones, then QR), forms ``H = Q^H A Q`` and restarts from the ``p``
extremal Ritz vectors. Kept for comparison: it needs about ``width / gap`` restarts.

Both: converged when the ``k`` wanted residuals satisfy ``||A x_i - theta_i x_i|| <= tol *
||A||`` (``||A||`` estimated by the largest Ritz value in modulus seen: of the Krylov basis,
or of the Lanczos steps and the block). The result reports the residual norms (of the
returned vectors), the number of filter iterations / restarts and a ``converged`` flag;
the solver never raises under ``jit``. A block of ``p > k`` vectors also resolves
eigenvalues of multiplicity up to ``p - k + 1`` at the block edge. Small problems are
solved densely. Blocks are stored as rows, shape ``(p, n)``, except in the two hot loops
(the filter's recurrence and the derivative's polynomial preconditioner), which by default
(``layout="columns"``) run on columns, shape ``(n, p)``: there a matrix-free ``matvec`` is
``vmap``-ed over the trailing axis, so each gather ``x[idx]`` reads ``p`` contiguous
values and the operator's own index and weight arrays are read once per block, not once
per vector (the grid benchmark's forward: 5.9 s on rows, 3.1 s on columns). A BCOO matrix whose indices are concrete (not
traced) is converted once to a padded row (ELL) layout whose product is gathers only
(XLA's scatter-add is several times slower on CPU).

Derivative (docs/derivatives.md). For the computed pairs ``(w_i, v_i)``, ``V = [v_i]``
spanning ``S``, ``Y = dA V`` (``jax.jvp`` of the operator in its parameters) and
``P = V^H Y``:

    dw_i = Re P_ii,
    dV   = V (F o P) + U,

where ``F`` is :func:`eigjax._gaps.inverse_gaps` (zero on degenerate pairs, exactly as
:func:`eigjax.eigh`), and ``U = [u_i]``, the part outside ``S``, solves the projected system

    B_i u_i = -(I - V V^H) Y_i,   B_i = (I - V V^H)(A - w_i I)(I - V V^H),   u_i in S^perp.

On ``S^perp``, ``B_i`` has the eigenvalues ``lambda_j - w_i`` of the eigenvalues not in the
block: all positive for the ``k`` smallest (all negative for the ``k`` largest, where the
sign is flipped), so conjugate gradients apply. The solver is deflated, preconditioned CG
(Saad, Yeung, Erhel & Guyomarc'h 2000):

* deflation: the ``p - k`` further Ritz vectors ``W`` of the forward block (orthogonal to
  ``S``, with ``A W`` kept from the last Rayleigh-Ritz step) form a coarse space solved
  exactly, which removes ``lambda_{k+1} .. lambda_p`` from the condition number;
* preconditioner: ``m`` steps of Chebyshev iteration for ``B_i`` on ``[lo_i, hi_i]``,
  ``lo_i`` from the largest extra Ritz value and ``hi_i`` from the forward's upper bound,
  ``m ~ sqrt(hi / lo) / 2`` (at most 64). Its polynomial is positive on the whole spectrum
  below ``lo + hi``, so it is symmetric positive definite even where ``lo`` is only an
  estimate, and CG is left a condition number of about 5: a few tens of iterations, each
  ``m`` cheap products, instead of hundreds of iterations each paying projections and
  inner products (measured 5x faster on a grid Laplacian with n = 100,000). The Krylov
  method has no spectral bound and runs deflated CG alone.

The solution does not depend on ``W`` or the preconditioner (they only accelerate). The
solve sits inside ``jax.lax.custom_linear_solve`` (transpose solve: the same solver on the
transposed, still definite, operator), so forward and reverse mode both work. A loss of
the eigenvalues alone gives the solve a zero right-hand side in reverse mode, and CG
stops before its first iteration (checked by a test). The condition is a gap
``lambda_{k+1} > lambda_k`` (smallest) between the block and the rest; if the block boundary
splits a degenerate eigenspace the derivative does not exist and CG does not converge
(the result is then meaningless; ``cg_maxiter`` bounds the cost).

Second and higher derivatives: exact where the block's eigenvalues are distinct, NaN
where a pair inside the block is cut (as :func:`eigjax.eigh`: the cut would make them wrong).

Memory: ``O(nnz + n p)`` for the Chebyshev method (a few blocks of ``p`` or ``k`` vectors);
``O(nnz + n p m)`` for the Krylov method.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from ._checks import as_square_matrix, check_int, check_nonnegative_float
from ._eigh import _hermitian_part, _mm
from ._gaps import inverse_gaps, nan_on_cut
from ._guard import checked_pairs, guard, resolve_check

_FN = "eigjax.eigh_partial"
_METHODS = ("auto", "chebyshev", "krylov")
_LANCZOS_STEPS = 20
_MIN_DEGREE = 6
_MAX_DEGREE = 1000
_DEGREE_GROWTH = 1.5  # a filter's degree is at most this times the previous one
_MAX_PRECOND_STEPS = 64


class PartialEighResult(NamedTuple):
    """Result of :func:`eigh_partial`.

    Attributes:
      eigenvalues: the ``k`` wanted eigenvalues, ascending, shape ``(k,)``.
      eigenvectors: orthonormal eigenvectors as columns, shape ``(n, k)``.
      residual_norms: ``||A v_i - w_i v_i||``, shape ``(k,)`` (no derivative).
      iterations: Chebyshev filter iterations or block Krylov restarts used (0 for the
        dense path).
      converged: whether all ``k`` residuals met ``tol * ||A||``.
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array
    residual_norms: jax.Array
    iterations: jax.Array
    converged: jax.Array


class _Config(NamedTuple):
    n: int
    k: int
    p: int
    m: int
    largest: bool
    dtype: Any
    tol: float
    max_restarts: int
    cg_tol: float
    cg_maxiter: int
    degenerate_tol: float | None
    seed: int
    method: str
    layout: str
    degenerate_check: bool | str = True

    @property
    def cols(self) -> bool:
        """Whether the hot loops run on column blocks ``(n, p)``."""
        return self.layout == "columns"


# --- operators: every form becomes (params, matmat(params, X, cols)). With cols=False the
# --- rows of X (c, n) are the vectors and matmat returns the rows of A X^T; with cols=True
# --- the columns of X (n, c) are, and it returns A X. The two hot loops (the filter and the
# --- derivative's preconditioner) run in cfg.layout: on columns a gather-based product reads
# --- each row's indices and weights once per block and gathers c contiguous values (the
# --- grid benchmark's forward 1.9x faster than on rows, which re-read the index tables
# --- for every vector); some operators compile better on rows (the `layout` option).


def _to_layout(x, cols: bool):
    """Rows ``(c, n)`` to the hot loops' layout and back (the same transpose)."""
    return x.T if cols else x


def _per_vector(v, cols: bool):
    """A per-vector quantity ``(c,)`` broadcast against a block in the hot loops' layout."""
    return v[None, :] if cols else v[:, None]


def _dense_matmat(a, x, cols=False):
    return _mm(a, x) if cols else _mm(x, a.T)  # (A x^T)^T = x A^T


def _bcoo_matmat(params, x, cols=False, *, shape):
    data, indices = params
    a = jsparse.BCOO((data, indices), shape=shape)
    return a @ x if cols else (a @ x.T).T


def _ell_matmat(params, x, cols=False):
    """Padded-row (ELL) product: row ``i`` of ``A`` has entries ``data[ent[i, s]]`` at columns ``col[i, s]``.

    One gather of ``x`` per slot ``s``; unrolled (one fused kernel) up to 16 slots, a loop
    over slots beyond (compile time).
    """
    data, ent, col = params
    vals = jnp.concatenate([data, jnp.zeros((1,), data.dtype)])[ent]  # padding points at the 0
    dt = jnp.result_type(data.dtype, x.dtype)
    if cols:
        term = lambda s: vals[:, s][:, None] * x[col[:, s], :]
    else:
        term = lambda s: vals[:, s][None, :] * x[:, col[:, s]]
    width = col.shape[1]
    if width <= 16:
        y = term(0)
        for s in range(1, width):
            y = y + term(s)
        return y.astype(dt)
    return jax.lax.fori_loop(0, width, lambda s, y: y + term(s), jnp.zeros(x.shape, dt))


def _ell_layout(indices, n: int, nnz: int):
    """ELL index arrays from concrete COO indices, or ``None`` if the padding would be wasteful."""
    idx = np.asarray(indices).astype(np.int64)
    entry = np.arange(nnz)
    inside = np.all((idx >= 0) & (idx < n), axis=1)  # BCOO ignores out-of-range (padding) entries
    rows, cols, entry = idx[inside, 0], idx[inside, 1], entry[inside]
    counts = np.bincount(rows, minlength=n)
    width = int(counts.max()) if counts.size else 0
    if width == 0 or n * width > 3 * nnz + n:
        return None
    order = np.argsort(rows, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(rows)) - start[rows[order]]
    ent = np.full((n, width), nnz, dtype=np.int32)
    col = np.zeros((n, width), dtype=np.int32)
    ent[rows[order], slot] = entry[order]
    col[rows[order], slot] = cols[order]
    return jnp.asarray(ent), jnp.asarray(col)


def _operator_matmat(params, x, cols=False, *, matvec):
    axis = 1 if cols else 0
    return jax.vmap(matvec, in_axes=(None, axis), out_axes=axis)(params, x)


# --- small helpers on row blocks ---


def _hermitian_small(h):
    return (h + jnp.conj(h.T)) / 2


def _eigh_small(h):
    """Ascending eigenvalues and eigenvectors of a small Hermitian matrix (LAPACK; cheap to compile)."""
    v, w = jax.lax.linalg.eigh(h, lower=True, symmetrize_input=False)
    return w, v


def _start_block(shape, dtype, seed: int):
    """Deterministic pseudo-random block, uniform in [-1/2, 1/2) (an integer hash: compiles
    far faster than ``jax.random``, and a start block needs no statistical quality)."""
    size = math.prod(shape)

    def uniform(salt):
        x = jax.lax.iota(jnp.uint32, size) * jnp.uint32(0x9E3779B1) + jnp.uint32((seed * 0x85EBCA6B + salt) % 2**32)
        for mult in (0x7FEB352D, 0x846CA68B):
            x = (x ^ (x >> 16)) * jnp.uint32(mult)
        x = x ^ (x >> 15)
        real = jnp.finfo(dtype).dtype
        return (x.astype(real) / real.type(2.0**32) - 0.5).reshape(shape)

    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jax.lax.complex(uniform(1), uniform(2)).astype(dtype)  # strict promotion
    return uniform(1).astype(dtype)


def _coefficients(x, q):
    """``c[r, i] = q_i^H x_r``: components of the rows of ``x`` along the orthonormal rows of ``q``."""
    return _mm(x, jnp.conj(q).T)


def _orthonormal_rows(y):
    q, _ = jnp.linalg.qr(y.T)
    return q.T


def _row_norms(x):
    return jnp.linalg.norm(x, axis=-1)


def _rayleigh_ritz(op, q):
    """Ritz values (ascending), Ritz vectors (rows), ``op`` applied to them, and their residual
    norms, for the span of the orthonormal rows of ``q``."""
    aq = op(q)
    h = _hermitian_small(_coefficients(aq, q).T)  # h[i, j] = q_i^H A q_j
    theta, z = _eigh_small(h)
    x = _mm(z.T, q)
    ax = _mm(z.T, aq)
    res = _row_norms(ax - theta[:, None].astype(x.dtype) * x)
    return theta, x, ax, res


def _acosh1p(delta):
    """``acosh(1 + delta)`` for ``delta >= 0``, accurate for small ``delta``."""
    delta = jnp.maximum(delta, 0.0)
    return jnp.log1p(delta + jnp.sqrt(delta * (2.0 + delta)))


# --- forward solvers: smallest eigenpairs of op (= sign * A), rows; all p Ritz pairs ---


def _orthonormalise_against(q, w):
    """Orthonormal rows spanning ``w`` orthogonal to the (orthonormal, zero-padded) rows of ``q``."""
    for _ in range(2):
        w = w - _mm(_coefficients(w, q), q)
    w = _orthonormal_rows(w)
    # QR completes a rank-deficient block arbitrarily; project those rows again.
    w = w - _mm(_coefficients(w, q), q)
    return _orthonormal_rows(w)


def _krylov_solve(op, x0, cfg: _Config):
    n, p, m, k = cfg.n, cfg.p, cfg.m, cfg.k
    real = jnp.finfo(cfg.dtype).dtype

    def restart(x):
        q = jnp.zeros(((m + 1) * p, n), cfg.dtype)
        q = jax.lax.dynamic_update_slice(q, x, (0, 0))
        aq = jnp.zeros((m * p, n), cfg.dtype)

        def step(j, carry):
            q, aq = carry
            blk = jax.lax.dynamic_slice(q, (j * p, 0), (p, n))
            ablk = op(blk)
            aq = jax.lax.dynamic_update_slice(aq, ablk, (j * p, 0))
            new = _orthonormalise_against(q, ablk)
            q = jax.lax.dynamic_update_slice(q, new, ((j + 1) * p, 0))
            return q, aq

        q, aq = jax.lax.fori_loop(0, m, step, (q, aq))
        qm = q[: m * p]
        h = _hermitian_small(_coefficients(aq, qm).T)
        theta, y = _eigh_small(h)
        anorm = jnp.max(jnp.abs(theta))
        ts, ys = theta[:p], y[:, :p]
        xn, axn = _mm(ys.T, qm), _mm(ys.T, aq)
        res = _row_norms(axn - ts[:, None].astype(cfg.dtype) * xn)
        return xn, axn, ts, res, anorm

    def done(res, anorm):
        return jnp.all(res[:k] <= cfg.tol * anorm)

    def cond(state):
        _, _, _, res, anorm, it = state
        return jnp.logical_and(it < cfg.max_restarts, jnp.logical_not(done(res, anorm)))

    def body(state):
        x, _, _, _, _, it = state
        return (*restart(x), it + 1)

    state = (x0, jnp.zeros_like(x0), jnp.zeros((p,), real), jnp.full((p,), jnp.inf, real), jnp.zeros((), real), jnp.zeros((), jnp.int32))
    x, ax, ts, res, anorm, it = jax.lax.while_loop(cond, body, state)
    return ts, x, ax, res, it, done(res, anorm), jnp.asarray(jnp.inf, real)  # no spectral bound


def _lanczos_bounds(op, x0, steps: int):
    """Spectral bounds from ``steps`` Lanczos steps started at each row of ``x0`` (independently).

    Returns the smallest and the largest Ritz value over all rows and the upper bound
    ``max_rows (theta_max + beta)`` (Zhou & Li 2011: the largest Ritz value plus the norm
    of the last Lanczos residual). One row would do; running the whole block costs
    ``steps`` block products (negligible next to the filters), gives the most cautious
    bound, and keeps XLA on its matrix-matrix path (a single-vector dense product compiles
    ten times slower on CPU). No reorthogonalisation: lost orthogonality only repeats
    converged Ritz values. After a breakdown (an invariant subspace reached) the remaining
    steps add zeros to the tridiagonal matrix, which can only lower the smallest / raise
    the largest Ritz value: both stay safe for the filter.
    """
    real = jnp.finfo(x0.dtype).dtype
    tiny = 100 * float(jnp.finfo(real).eps)
    q0 = x0 / _row_norms(x0)[:, None].astype(x0.dtype)

    def step(carry, _):
        q, q_prev, beta_prev = carry
        w = op(q) - beta_prev[:, None].astype(q.dtype) * q_prev
        alpha = jnp.real(jnp.sum(jnp.conj(q) * w, axis=-1))
        w = w - alpha[:, None].astype(q.dtype) * q
        beta = _row_norms(w)
        alive = beta > tiny * (jnp.abs(alpha) + beta_prev)
        beta = jnp.where(alive, beta, 0.0)
        q_next = w / jnp.where(alive, beta, 1.0)[:, None].astype(w.dtype) * alive[:, None].astype(w.dtype)
        return (q_next, q, beta), (alpha, beta)

    init = (q0, jnp.zeros_like(q0), jnp.zeros((x0.shape[0],), real))
    _, (alphas, betas) = jax.lax.scan(step, init, None, length=steps)  # (steps, rows)
    tridiagonal = lambda a, b: jnp.diag(a) + jnp.diag(b[:-1], 1) + jnp.diag(b[:-1], -1)
    theta = _eigh_small(jax.vmap(tridiagonal)(alphas.T, betas.T))[0]  # (rows, steps)
    return jnp.min(theta[:, 0]), jnp.max(theta[:, -1]), jnp.max(theta[:, -1] + betas[-1])


def _chebyshev_filter(op_l, x, pairs, cut, upper, scale_at, cols):
    """Rows of ``p(A) x``, ``p`` of degree ``2 pairs`` damping ``[cut, upper]``, ``p(scale_at) = 1``.

    ``x`` holds the vectors as rows; the recurrence runs on columns if ``cols`` (``op_l``
    applies the operator in that layout).

    Scaled three-term recurrence (Zhou & Saad 2007, Algorithm 3.2), two steps per loop
    iteration so that the loop carry is never swapped (a swap costs XLA two block copies
    per step, measured 40% of the step); the first step is a loop step with its own
    coefficients, so the operator appears twice in the program, not three times.
    """
    e = (upper - cut) / 2
    c = (upper + cut) / 2
    sigma1 = e / (scale_at - c)
    dt = x.dtype

    def step(x, y, sigma, first):  # T_{j+1} from T_{j-1} = x and T_j = y
        sigma_new = jnp.where(first, sigma1, 1.0 / (2.0 / sigma1 - sigma))
        scale = jnp.where(first, sigma1 / e, 2.0 * sigma_new / e)
        y_new = (op_l(y) - c.astype(dt) * y) * scale.astype(dt) - jnp.where(first, 0.0, sigma * sigma_new).astype(dt) * x
        return y_new, sigma_new

    def body(i, carry):
        x, y, sigma = carry
        x, sigma = step(x, y, sigma, i == 0)
        y, sigma = step(y, x, sigma, False)
        return x, y, sigma

    xl = _to_layout(x, cols)
    return _to_layout(jax.lax.fori_loop(0, pairs, body, (jnp.zeros_like(xl), xl, sigma1))[1], cols)


def _chebyshev_solve(op, op_l, x0, cfg: _Config):
    n, p, k = cfg.n, cfg.p, cfg.k
    real = jnp.finfo(cfg.dtype).dtype
    eps = float(jnp.finfo(real).eps)
    if cfg.max_restarts == 0:  # nothing to iterate: report the Ritz pairs of the start block
        theta, x, ax, res = _rayleigh_ritz(op, _orthonormal_rows(x0))
        conv = jnp.all(res[:k] <= cfg.tol * jnp.max(jnp.abs(theta)))
        return theta, x, ax, res, jnp.zeros((), jnp.int32), conv, jnp.asarray(jnp.inf, real)
    lo, hi, upper0 = _lanczos_bounds(op, x0, min(_LANCZOS_STEPS, n))
    # The first filter damps the upper half of the Lanczos interval (a Ritz value of the
    # random block would be about the mean eigenvalue); no residual is known yet.
    theta = jnp.full((p,), lo, real).at[p - 1].set((lo + hi) / 2)
    res = jnp.full((p,), jnp.inf, real)
    spread_cap = math.log(2.0 / math.sqrt(eps))  # log of the largest amplification spread allowed

    def anorm_of(theta):
        return jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), jnp.max(jnp.abs(theta)))

    def done(theta, res):
        return jnp.all(res[:k] <= cfg.tol * anorm_of(theta))

    def cond(state):
        _, _, theta, res, _, it, _ = state
        return jnp.logical_and(it < cfg.max_restarts, jnp.logical_not(done(theta, res)))

    def body(state):
        x, _, theta, res, upper, it, d_prev = state  # d_prev: the previous filter's degree
        cut = theta[p - 1]
        scale_at = jnp.minimum(theta[0], lo)
        width = jnp.maximum(upper - scale_at, jnp.finfo(real).tiny)
        # Safeguard: a Ritz value at the upper bound means the bound was too low.
        upper = jnp.where(cut >= upper - 1e-3 * width, cut + 0.5 * width, upper)
        half = (upper - cut) / 2
        rate_k = _acosh1p((cut - theta[k - 1]) / half)
        rate_1 = _acosh1p((cut - scale_at) / half)
        need = jnp.max(res[:k]) / (cfg.tol * anorm_of(theta))
        d_need = jnp.log(2.0 * jnp.maximum(need, 2.0)) / jnp.maximum(rate_k, 1e-300)
        d_cap = spread_cap / jnp.maximum(rate_1, 1e-300)
        d = jnp.minimum(jnp.minimum(d_need, d_cap), jnp.minimum(_DEGREE_GROWTH * d_prev, _MAX_DEGREE))
        d = jnp.maximum(jnp.nan_to_num(d, nan=_MIN_DEGREE), _MIN_DEGREE)
        pairs = jnp.ceil(d / 2).astype(jnp.int32)  # degree 2 pairs
        y = _chebyshev_filter(op_l, x, pairs, cut, upper, scale_at, cfg.cols)
        theta, x, ax, res = _rayleigh_ritz(op, _orthonormal_rows(y))
        return x, ax, theta, res, upper, it + 1, (2 * pairs).astype(real)

    state = (x0, jnp.zeros_like(x0), theta, res, upper0, jnp.zeros((), jnp.int32), jnp.asarray(_MIN_DEGREE, real))
    x, ax, theta, res, upper, it, _ = jax.lax.while_loop(cond, body, state)
    return theta, x, ax, res, it, done(theta, res), upper


def _dense_solve(op, cfg: _Config):
    a = _hermitian_small(op(jnp.eye(cfg.n, dtype=cfg.dtype)).T)
    theta_all, z = _eigh_small(a)
    theta, x = theta_all[: cfg.p], z[:, : cfg.p].T
    ax = op(x)
    res = _row_norms(ax - theta[:, None].astype(cfg.dtype) * x)
    anorm = jnp.maximum(jnp.max(jnp.abs(theta)), 1e-300)
    conv = jnp.all(res[: cfg.k] <= cfg.tol * anorm)
    return theta, x, ax, res, jnp.zeros((), jnp.int32), conv, theta_all[-1]


def _use_dense(cfg: _Config) -> bool:
    if cfg.method == "krylov":
        return (cfg.m + 1) * cfg.p > cfg.n
    return 4 * cfg.p > cfg.n


def _solve(params, matmat, cfg: _Config):
    """All ``p`` Ritz pairs of the block: the ``k`` wanted (ascending) and the rest, with ``A`` applied to the rest."""
    sign = -1.0 if cfg.largest else 1.0
    op = lambda x: sign * matmat(params, x)
    op_l = lambda x: sign * matmat(params, x, cfg.cols)  # in the hot loops' layout
    if _use_dense(cfg):
        theta, x, ax, res, it, conv, bound = _dense_solve(op, cfg)
    else:
        x0 = _start_block((cfg.p, cfg.n), cfg.dtype, cfg.seed)
        if cfg.method == "krylov":
            theta, x, ax, res, it, conv, bound = _krylov_solve(op, _orthonormal_rows(x0), cfg)
        else:
            theta, x, ax, res, it, conv, bound = _chebyshev_solve(op, op_l, x0, cfg)
    k = cfg.k
    w, v, r = sign * theta[:k], x[:k], res[:k]
    if cfg.largest:
        w, v, r = w[::-1], v[::-1], r[::-1]
    # The rest: the other Ritz pairs, A times their vectors, an upper bound of sign * A.
    return w, v.T, r, it, conv, sign * theta[k:], x[k:], sign * ax[k:], bound


# --- deflated CG for the projected, definite system (one shift per row) ---


def _chebyshev_preconditioner(shifted_l, proj, lo, hi, steps, cols):
    """``r -> P p(B') r``: ``steps`` Chebyshev-iteration steps for ``B' z = r`` from ``z = 0`` (Saad,
    "Iterative Methods for Sparse Linear Systems", Algorithm 12.1), row ``i`` on ``[lo_i, hi_i]``.

    ``shifted_l`` applies the unprojected ``B'_i = sign (A - w_i)`` to vector ``i`` of a
    block in the hot loops' layout (columns if ``cols``; ``r`` and the result are rows). The polynomial
    ``p(t) = (1 - T_m((theta - t) / delta) / T_m(theta / delta)) / t`` is positive for every
    ``t < lo + hi`` (also below ``lo`` and below 0), so ``P p(B') P`` is symmetric positive
    definite on ``S^perp`` whenever ``hi`` bounds the spectrum: a valid preconditioner even
    where ``lo`` is only an estimate. With ``steps = 1`` it is a multiple of the identity.
    """
    theta = _per_vector((hi + lo) / 2, cols)
    delta = _per_vector((hi - lo) / 2, cols)
    sigma = theta / delta

    def apply(r):
        dt = r.dtype
        r = _to_layout(r, cols)

        def body(_, carry):
            z, res, d, rho = carry
            z = z + d
            res = res - shifted_l(d)
            rho_new = 1.0 / (2.0 * sigma - rho)
            d = (rho_new * rho).astype(dt) * d + (2.0 * rho_new / delta).astype(dt) * res
            return z, res, d, rho_new

        init = (jnp.zeros_like(r), r, r / theta.astype(dt), 1.0 / sigma)
        z, _, d, _ = jax.lax.fori_loop(0, steps - 1, body, init)
        return proj(_to_layout(z + d, cols))

    return apply


def _deflated_cg(mv, b, wd, awd, w, sign, tol, maxiter, precond=None):
    """Row-wise deflated preconditioned CG for ``B_i = sign P (A - w_i) P`` (positive definite on ``S^perp``).

    ``mv(x)`` applies ``B_i`` to row ``i`` of ``x`` (``(k, n)`` blocks) for ``x`` in ``S^perp``
    (``b`` is in ``S^perp`` and every iterate stays there). ``wd`` (orthonormal rows in
    ``S^perp``) spans the coarse space and ``awd`` holds ``P A`` applied to its rows; the
    coarse matrices ``G_i = W B_i W^H = sign (W A W^H - w_i I)`` are inverted exactly (Saad,
    Yeung, Erhel & Guyomarc'h 2000, deflated PCG). A coarse direction with a non-positive
    pivot (a split degenerate pair) is dropped. ``precond`` (symmetric positive definite on
    ``S^perp``; default the identity) is applied once per iteration. Stops when every row
    has ``||r_i|| <= tol ||b_i||`` or after ``maxiter`` iterations.
    """
    real = jnp.finfo(b.dtype).dtype
    dot = lambda x, y: jnp.real(jnp.sum(jnp.conj(x) * y, axis=-1))
    precond = (lambda r: r) if precond is None else precond
    q = wd.shape[0]
    if q:
        m_val, m_vec = _eigh_small(_hermitian_small(_coefficients(awd, wd).T))
        g = sign * (m_val[None, :] - w[:, None])
        floor = 1e3 * float(jnp.finfo(real).eps) * jnp.maximum(jnp.max(jnp.abs(m_val)), jnp.max(jnp.abs(w)))
        ok = g > floor
        g_inv = jnp.where(ok, 1.0 / jnp.where(ok, g, 1.0), 0.0).astype(b.dtype)
        # Rotate the coarse basis to the eigenvectors of W A W^H: G_i becomes diagonal.
        wd, awd = _mm(m_vec.T, wd), _mm(m_vec.T, awd)
        both = jnp.concatenate([awd, wd], axis=0)

        def deflate(z):  # W^H G^{-1} W B z, one pass over z for both coefficient sets
            c = _coefficients(z, both)
            t = sign * (c[:, :q] - w[:, None].astype(z.dtype) * c[:, q:])
            return _mm(t * g_inv, wd)

        c = _coefficients(b, wd) * g_inv
        x = _mm(c, wd)  # W^H G^{-1} W b
        r = b - sign * (_mm(c, awd) - w[:, None].astype(b.dtype) * x)  # b - B x, no product
    else:
        deflate = lambda z: jnp.zeros_like(z)
        x, r = jnp.zeros_like(b), b
    thresh = (tol**2) * dot(b, b)

    def cond(s):
        *_, rs, it = s
        return jnp.logical_and(it < maxiter, jnp.any(rs > thresh))

    def body(s):
        x, r, d, rz_prev, rs, it = s
        z = precond(r)
        rz = dot(r, z)
        beta = jnp.where(it > 0, rz / jnp.where(rz_prev != 0, rz_prev, 1.0), 0.0).astype(b.dtype)
        d = z + d * beta[:, None] - deflate(z)
        ad = mv(d)
        dad = dot(d, ad)
        # A converged row keeps x and r (alpha = 0); its d is refreshed harmlessly.
        active = jnp.logical_and(rs > thresh, dad > 0)
        alpha = jnp.where(active, rz / jnp.where(active, dad, 1.0), 0.0).astype(b.dtype)
        x = x + d * alpha[:, None]
        r = r - ad * alpha[:, None]
        return x, r, d, rz, jnp.where(active, dot(r, r), rs), it + 1

    zeros = jnp.zeros(b.shape[:1], real)
    s = (x, r, jnp.zeros_like(b), zeros, dot(r, r), jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(cond, body, s)[0]


def _check_hermitian_probe(prm, matmat, n, dtype, what):
    """Raise if the operator is visibly not Hermitian: two products with random vectors,
    ``|y^H (A x) - conj(x^H (A y))|`` against ``100 sqrt(n) eps (|A x| |y| + |A y| |x|)``
    (rounding of the two products is ``~ sqrt(n) eps`` of that). Skipped when the operator
    holds traced values (under ``jit``/``grad``), where no error can be raised."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(prm)):
        return
    r = np.random.default_rng(12345)
    xy = r.standard_normal((2, n))
    if jnp.issubdtype(dtype, jnp.complexfloating):
        xy = xy + 1j * r.standard_normal((2, n))
    xy = jnp.asarray(xy, dtype)
    axy = np.asarray(jax.jit(matmat)(prm, xy))
    x, y = np.asarray(xy)
    ax, ay = axy
    asym = abs(np.vdot(y, ax) - np.conj(np.vdot(x, ay)))
    scale = np.linalg.norm(ax) * np.linalg.norm(y) + np.linalg.norm(ay) * np.linalg.norm(x)
    eps = float(jnp.finfo(dtype).eps)
    if not asym <= 100 * np.sqrt(n) * eps * scale:  # also catches NaN
        raise ValueError(
            f"{_FN}: argument `a` ({what}) must be Hermitian; a random probe gives "
            f"|y^H A x - conj(x^H A y)| = {asym:.3g} against a rounding level of "
            f"{100 * np.sqrt(n) * eps * scale:.3g}."
        )


# --- the differentiable core ---


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _partial(params, matmat, cfg):
    return _solve(params, matmat, cfg)


# The primal inside the rule: the same values; its JVP (reached only by second and
# higher derivatives) is NaN on cut pairs inside the block, where the cut would give a
# wrong finite second derivative (see eigjax._eigh._eigh_inner).
@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _partial_inner(params, matmat, cfg):
    return _solve(params, matmat, cfg)


def _partial_rule(matmat, cfg, primals, tangents, *, higher):
    (params,), (params_dot,) = primals, tangents
    # The primal through _partial_inner so that the rule is differentiable again.
    out = _partial_inner(params, matmat, cfg)
    w, vc, res, it, conv, w_extra, v_extra, av_extra, bound = out
    v = vc.T  # rows
    y = jax.jvp(lambda prm: matmat(prm, v), (params,), (params_dot,))[1]  # rows of dA V
    # dw from Y alone (not from P), so an eigenvalue-only loss never touches the rest.
    w_dot = jnp.real(jnp.sum(jnp.conj(v) * y, axis=-1))
    p = _coefficients(y, v).T  # p[i, j] = v_i^H dA v_j
    if cfg.degenerate_tol is None:
        # A Ritz value is within its residual norm of an eigenvalue (Hermitian
        # Bauer-Fike), so pairs closer than r_i + r_j (plus the rounding level
        # n eps ||A||) cannot be told apart from a degenerate pair.
        r = jax.lax.stop_gradient(res)
        wmax = jnp.max(jnp.abs(jax.lax.stop_gradient(w)))
        deg_tol = r[:, None] + r[None, :] + cfg.n * float(jnp.finfo(w.dtype).eps) * wmax
    else:
        deg_tol = cfg.degenerate_tol
    f = inverse_gaps(w, degenerate_tol=deg_tol).astype(p.dtype)
    if higher:
        f = nan_on_cut(f)
    q = f * p
    if cfg.degenerate_check and not higher:
        # Reverse mode tests the cotangent on the cut pairs inside the block, as
        # eigjax.eigh (eigjax._guard): inside = V q (as columns), so the cotangent of q
        # is V^T Vbar, Hermitian on each group for a loss invariant to its basis.
        phase = jnp.issubdtype(p.dtype, jnp.complexfloating)
        w_dot, q = guard(w_dot, q, checked_pairs(f), w, name=_FN, mode="hermitian", phase=phase,
                         debug=cfg.degenerate_check == "debug")
    inside = _mm(q.T, v)

    sign = -1.0 if cfg.largest else 1.0
    wc = w[:, None].astype(v.dtype)
    proj = lambda x: x - _mm(_coefficients(x, v), v)

    shifted = lambda x: sign * (matmat(params, x) - x * wc)  # B'_i = sign (A - w_i), unprojected
    shifted_l = lambda x: sign * (matmat(params, x, cfg.cols) - x * _per_vector(w, cfg.cols).astype(v.dtype))  # in the hot loops' layout
    inner = lambda x: proj(shifted(x))  # B_i on S^perp, where the iterates of the solve stay
    op = lambda x: inner(proj(x))  # the operator on all of C^n, for custom_linear_solve
    # A W from the forward's last Rayleigh-Ritz step (W is orthogonal to V up to rounding).
    av_extra = proj(av_extra)
    precond = None
    if w_extra.shape[0]:
        # Deflated, the spectrum of B_i lies in about [lo_i, hi_i]: lo_i from the largest
        # extra Ritz value (about lambda_p; the first eigenvalue not deflated is beyond),
        # hi_i from the forward's upper bound of sign * A. Degree ~ sqrt(hi / lo) / 2
        # leaves CG a condition number of about 5 (a few tens of iterations).
        theta = sign * w
        finite = jnp.isfinite(bound)
        hi = jnp.where(finite, bound, 0.0) - theta
        lo = jnp.max(sign * w_extra) - theta
        lo = jnp.maximum(lo, 1e-12 * jnp.abs(hi))
        hi = jnp.maximum(hi, 2 * lo)
        steps = jnp.ceil(0.5 * jnp.sqrt(jnp.max(hi / lo)))
        steps = jnp.where(finite, jnp.clip(jnp.nan_to_num(steps, nan=1.0), 1, _MAX_PRECOND_STEPS), 1).astype(jnp.int32)
        precond = _chebyshev_preconditioner(shifted_l, proj, lo, hi, steps, cfg.cols)
    # The right-hand sides (rhs below, and the cotangents in reverse mode) lie in S^perp up
    # to rounding; projecting them first keeps a rounding-level component along S (which
    # B_i cannot reduce) from stalling CG, e.g. for a loss whose eigenvector cotangent
    # lies in S, as trace(V V^H C) with C = I.
    solve = lambda _, b: _deflated_cg(inner, proj(b), v_extra, av_extra, w, sign, cfg.cg_tol, cfg.cg_maxiter, precond)
    rhs = -sign * proj(y)
    if jnp.issubdtype(v.dtype, jnp.complexfloating):
        # op is Hermitian, so its transpose is its complex conjugate.
        tsolve = lambda _, b: jnp.conj(solve(None, jnp.conj(b)))
        u = jax.lax.custom_linear_solve(op, rhs, solve, transpose_solve=tsolve)
    else:
        u = jax.lax.custom_linear_solve(op, rhs, solve, symmetric=True)
    v_dot = (inside + proj(u)).T
    zero_int = np.zeros(it.shape, dtype=jax.dtypes.float0)
    zero_bool = np.zeros(conv.shape, dtype=jax.dtypes.float0)
    # The extra Ritz pairs only accelerate the solve (its solution does not depend on
    # them), so they carry no derivative.
    tangents_out = (
        w_dot, v_dot, jnp.zeros_like(res), zero_int, zero_bool,
        jnp.zeros_like(w_extra), jnp.zeros_like(v_extra), jnp.zeros_like(av_extra), jnp.zeros_like(bound),
    )
    return out, tangents_out


_partial.defjvp(functools.partial(_partial_rule, higher=False))
_partial_inner.defjvp(functools.partial(_partial_rule, higher=True))


def eigh_partial(
    a,
    k: int,
    *,
    which: str = "smallest",
    params: Any = None,
    n: int | None = None,
    dtype: Any = None,
    method: str = "auto",
    tol: float | None = None,
    block_size: int | None = None,
    krylov_steps: int | None = None,
    max_restarts: int = 500,
    cg_tol: float | None = None,
    cg_maxiter: int | None = None,
    degenerate_tol: float | None = None,
    seed: int = 0,
    layout: str = "columns",
    degenerate_check: bool | str | None = None,
) -> PartialEighResult:
    r"""The ``k`` smallest or largest eigenpairs of a Hermitian operator, differentiable.

    ``jax.lax.linalg.eigh(..., subset_by_index=...)`` has no derivative; this computes
    ``k`` extremal eigenpairs by Chebyshev-filtered subspace iteration (or restarted
    block Krylov) and differentiates them with the projected-solve rule of the module
    docstring (``dw_i = v_i^H dA v_i``; the eigenvector part outside the computed subspace
    from deflated, Chebyshev-preconditioned CG inside ``jax.lax.custom_linear_solve``;
    degenerate pairs inside the block as in :func:`eigjax.eigh`). A loss of the
    eigenvalues alone runs no CG iteration in reverse mode. Problems with ``n < 4 p``
    (Chebyshev) or ``n < (m + 1) p`` (Krylov) are solved densely.

    Args:
      a: one of
        * a dense Hermitian matrix, shape ``(n, n)`` (its Hermitian part is used, so
          ``jax.grad`` returns a Hermitian gradient);
        * a ``jax.experimental.sparse.BCOO`` matrix of shape ``(n, n)``, assumed
          Hermitian (not symmetrised); derivatives flow to its ``data``. With concrete
          (untraced) indices it is multiplied in a padded-row layout (gathers only);
        * a callable ``matvec(params, x)`` returning ``A(params) @ x`` for ``x`` of shape
          ``(n,)``, Hermitian for every ``params``; derivatives flow to ``params``
          (pass every differentiable quantity through ``params``, not a closure). It is
          ``vmap``-ed over blocks of ``p`` vectors (as rows or, in the hot loops, as
          columns), so a gather ``x[idx]`` is fast and a scatter ``.at[idx].add`` is slow
          on CPU.
      k: number of eigenpairs, ``1 <= k <= n``.
      which: ``"smallest"`` or ``"largest"`` (algebraic).
      params: the pytree passed to ``matvec`` (operator form only).
      n, dtype: size and dtype of the vectors (operator form; ``n`` required, dtype
        default the default float dtype).
      method: ``"chebyshev"`` (Chebyshev-filtered subspace iteration; cost grows like
        ``sqrt(spectral width / gap)``), ``"krylov"`` (restarted block Krylov; cost like
        ``width / gap``) or ``"auto"`` (= ``"chebyshev"``).
      tol: relative residual tolerance, ``||A v - w v|| <= tol * ||A||``. Default
        ``10 * eps**0.75`` (``1.8e-11`` in float64, ``6e-5`` in float32).
      block_size: block size ``p >= k``. Default ``k + max(4, k)`` (Chebyshev; the
        convergence rate is set by the gap between ``lambda_k`` and ``lambda_{p+1}``, and
        the extra vectors deflate the derivative's solve), ``k + max(3, k)`` (Krylov).
      krylov_steps: blocks per restart ``m`` (Krylov only; default ``max(3, 64 // p)``).
      max_restarts: cap on filter iterations (Chebyshev) or restarts (Krylov);
        ``converged`` in the result tells if it was hit.
      cg_tol, cg_maxiter: relative residual tolerance (default ``tol``) and iteration
        cap (default ``min(10 n, 1000)``; with the Chebyshev method each iteration
        applies the operator up to 64 times) of the derivative's projected solve. A
        derivative reports no convergence: if the cap is hit the eigenvector derivative
        is inaccurate (the eigenvalue derivative never uses the solve).
      degenerate_tol: pairs inside the block closer than this are treated as degenerate
        (see :func:`eigjax.eigh`). Default: ``r_i + r_j + n eps max|w|`` with ``r`` the
        residual norms (a Ritz value is within its residual of an eigenvalue, so closer
        pairs cannot be told apart from a degenerate one).
      seed: seed of the pseudo-random starting block (an integer hash, the same on every
        platform; the Lanczos bound starts from the same block).
      layout: how blocks of vectors are laid out in the two hot loops (the filter and the
        derivative's preconditioner): ``"columns"`` (``(n, p)``; the operator is applied
        to ``p`` columns at once, so a gather ``x[idx]`` reads ``p`` contiguous values and
        the operator's index arrays are read once per block) or ``"rows"`` (``(p, n)``).
        Only speed depends on it. Columns made the grid benchmark's forward 1.9x
        faster; XLA lays out some gather patterns badly on columns (an operator built
        from several degree-bucketed tables and a permutation ran 4x slower there), so
        time both for a new operator. ``benchmarks/results_partial.md`` has the numbers.
      degenerate_check: reverse mode tests the cotangent on each degenerate pair inside
        the block and returns NaN where the cut rule would be wrong (see
        :func:`eigjax.eigh`). ``None`` (default): ``True``; ``False`` trusts the loss;
        ``"debug"`` also prints the first failing pair. A block boundary that splits a
        degenerate group is not detected by it (see above: no derivative, CG stalls).

    Returns:
      :class:`PartialEighResult` ``(eigenvalues, eigenvectors, residual_norms,
      iterations, converged)``; eigenvalues ascending in both modes.

    Raises:
      TypeError: ``a`` is not an array, BCOO or callable; ``k`` is not an int.
      ValueError: bad shapes, ``k`` outside ``[1, n]``, bad ``which`` or ``method``,
        missing ``n``; a BCOO matrix or operator that a random probe (two products,
        run when its values are concrete, i.e. not under ``jit``/``grad``) shows to be
        non-Hermitian.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> a = jnp.diag(jnp.arange(1.0, 41.0))
      >>> eigjax.eigh_partial(a, 2).eigenvalues.round(4).tolist()  # float32 or float64
      [1.0, 2.0]
    """
    if which not in ("smallest", "largest"):
        raise ValueError(f"{_FN}: option `which` must be 'smallest' or 'largest'; got {which!r}.")
    if layout not in ("columns", "rows"):
        raise ValueError(f"{_FN}: option `layout` must be 'columns' or 'rows'; got {layout!r}.")
    if method not in _METHODS:
        raise ValueError(f"{_FN}: option `method` must be one of {_METHODS}; got {method!r}.")
    method = "chebyshev" if method == "auto" else method
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{_FN}: argument `k` must be a Python int; got {k!r} of type {type(k).__name__}.")
    k = int(k)
    if params is not None and not callable(a):
        raise ValueError(f"{_FN}: option `params` is for the operator form (a callable `a`); a matrix `a` takes none (got params).")
    if isinstance(a, jsparse.BCOO):
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.n_batch != 0 or a.n_dense != 0:
            raise ValueError(
                f"{_FN}: a BCOO argument `a` must be an unbatched square matrix of shape (n, n); "
                f"got shape {tuple(a.shape)} with n_batch={a.n_batch}, n_dense={a.n_dense}."
            )
        n_, dtype_ = a.shape[0], a.dtype
        # (named `ell`, not `layout`: reusing the option's name replaced it with these index
        # arrays, and every BCOO input then ran on rows whatever `layout` said)
        ell = None if isinstance(a.indices, jax.core.Tracer) else _ell_layout(a.indices, n_, a.nse)
        if ell is None:
            prm = (a.data, a.indices)
            matmat = functools.partial(_bcoo_matmat, shape=tuple(a.shape))
        else:
            prm = (a.data, *ell)
            matmat = _ell_matmat
    elif callable(a):
        if n is None:
            raise ValueError(f"{_FN}: with a callable `a` (matvec(params, x)) the size `n` is required.")
        n_ = check_int(n, name="n", fn=_FN, minimum=1)
        dtype_ = jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)
        prm = params
        matmat = functools.partial(_operator_matmat, matvec=a)
        out = jax.eval_shape(matmat, prm, jax.ShapeDtypeStruct((1, n_), dtype_))
        if out.shape != (1, n_):
            raise ValueError(
                f"{_FN}: `a(params, x)` must return shape (n,) = ({n_},) for x of shape (n,); "
                f"got {tuple(out.shape[1:])}."
            )
    else:
        a = as_square_matrix(a, name="a", fn=_FN)
        if a.ndim != 2:
            raise ValueError(
                f"{_FN}: a dense argument `a` must have shape (n, n) (use jax.vmap for batches); "
                f"got shape {tuple(a.shape)}."
            )
        n_, dtype_ = a.shape[0], a.dtype
        prm = _hermitian_part(a)
        matmat = _dense_matmat
    if not 1 <= k <= n_:
        raise ValueError(f"{_FN}: argument `k` must satisfy 1 <= k <= n = {n_}; got k = {k}.")
    if not jnp.issubdtype(dtype_, jnp.inexact):
        dtype_ = jnp.result_type(float)
    if matmat is not _dense_matmat:  # the dense form is symmetrised instead
        _check_hermitian_probe(prm, matmat, n_, dtype_, "a BCOO matrix" if isinstance(a, jsparse.BCOO) else "matvec(params, x)")
    eps = float(jnp.finfo(dtype_).eps)
    tol = check_nonnegative_float(tol, name="tol", fn=_FN)
    tol = 10 * eps**0.75 if tol is None else tol
    cg_tol = check_nonnegative_float(cg_tol, name="cg_tol", fn=_FN)
    cg_tol = tol if cg_tol is None else cg_tol
    degenerate_tol = check_nonnegative_float(degenerate_tol, name="degenerate_tol", fn=_FN)
    extra = max(4, k) if method == "chebyshev" else max(3, k)
    # ints only (a float or a string was coerced by int() before: 4.7 ran as 4)
    block_size = check_int(block_size, name="block_size", fn=_FN, minimum=1, allow_none=True)
    krylov_steps = check_int(krylov_steps, name="krylov_steps", fn=_FN, minimum=2, allow_none=True)
    p = min(n_, k + extra) if block_size is None else block_size
    if not k <= p <= n_:
        raise ValueError(f"{_FN}: option `block_size` must satisfy k <= block_size <= n; got {p}.")
    m = max(3, 64 // p) if krylov_steps is None else krylov_steps
    max_restarts = check_int(max_restarts, name="max_restarts", fn=_FN, minimum=0)
    cg_maxiter = check_int(cg_maxiter, name="cg_maxiter", fn=_FN, minimum=1, allow_none=True)
    seed = check_int(seed, name="seed", fn=_FN)
    cfg = _Config(
        n=n_, k=k, p=p, m=m, largest=(which == "largest"), dtype=jnp.dtype(dtype_), tol=float(tol),
        max_restarts=max_restarts, cg_tol=float(cg_tol),
        cg_maxiter=int(min(10 * n_, 1000) if cg_maxiter is None else cg_maxiter),
        degenerate_tol=degenerate_tol, seed=seed, method=method, layout=layout,
        degenerate_check=resolve_check(degenerate_check, fn=_FN),
    )
    return PartialEighResult(*_partial(prm, matmat, cfg)[:5])
