"""Partial Hermitian eigendecomposition: ``k`` extremal eigenpairs of a dense, sparse or matrix-free operator.

Forward: restarted block Krylov (block Lanczos) with full reorthogonalisation and
Rayleigh-Ritz (Golub & Underwood 1977; Saad, "Numerical Methods for Large Eigenvalue
Problems", 2nd ed., ch. 6). Each restart builds the orthonormal block Krylov basis
``Q = [X, A X, ..., A^{m-1} X]`` of a block ``X`` of ``p >= k`` vectors (every new block
orthogonalised twice against all previous ones, then QR), forms ``H = Q^H A Q`` from the
``m`` block products already made, and restarts from the ``p`` extremal Ritz vectors.
Converged when the ``k`` wanted residuals satisfy ``||A x_i - theta_i x_i|| <= tol * ||A||``
(``||A||`` estimated by the largest Ritz value in modulus). The result reports the
residual norms, the number of restarts and a ``converged`` flag; the solver never
raises under ``jit``. A block of ``p > k`` vectors also resolves eigenvalues of
multiplicity up to ``p``. Small problems (basis would exceed ``n``) are solved densely.

Derivative (DESIGN.md section 2). For the computed pairs ``(w_i, v_i)``, ``V = [v_i]``
spanning ``S``, ``Y = dA V`` (``jax.jvp`` of the operator in its parameters) and
``P = V^H Y``:

    dw_i = Re P_ii,
    dV   = V (F o P) + U,

where ``F`` is :func:`eigjax._gaps.inverse_gaps` (zero on degenerate pairs, exactly as
:func:`eigjax.eigh`), and ``U = [u_i]``, the part outside ``S``, solves the projected system

    (I - V V^H)(A - w_i I)(I - V V^H) u_i = -(I - V V^H) Y_i,     u_i in S^perp.

On ``S^perp`` the operator ``A - w_i I`` has eigenvalues ``lambda_j - w_i`` for the
eigenvalues not in the block: all positive for the ``k`` smallest (all negative for the
``k`` largest, where the sign is flipped), so CG applies. The CG solve sits inside
``jax.lax.custom_linear_solve`` with a transpose solve (CG on the transposed operator,
Hermitian positive definite too), so forward and reverse mode both work. The condition
is a gap ``lambda_{k+1} > lambda_k`` (smallest) between the block and the rest; if the
block boundary splits a degenerate eigenspace the derivative does not exist and CG does
not converge (the result is then meaningless; ``cg_maxiter`` bounds the cost).

Memory: ``O(nnz + n p m)`` (the Krylov basis and its image), with ``p m`` about 64.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from ._checks import as_square_matrix, check_nonnegative_float
from ._eigh import _eigh_forward, _h, _hermitian_part, _mm
from ._gaps import inverse_gaps

_FN = "eigjax.eigh_partial"


class PartialEighResult(NamedTuple):
    """Result of :func:`eigh_partial`.

    Attributes:
      eigenvalues: the ``k`` wanted eigenvalues, ascending, shape ``(k,)``.
      eigenvectors: orthonormal eigenvectors as columns, shape ``(n, k)``.
      residual_norms: ``||A v_i - w_i v_i||``, shape ``(k,)`` (no derivative).
      iterations: number of block Krylov restarts used (0 for the dense path).
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


# --- operators: every form becomes (params, matmat(params, X)) with X of shape (n, c) ---


def _dense_matmat(a, x):
    return _mm(a, x)


def _bcoo_matmat(params, x, *, shape):
    data, indices = params
    return jsparse.BCOO((data, indices), shape=shape) @ x


def _operator_matmat(params, x, *, matvec):
    return jax.vmap(matvec, in_axes=(None, 1), out_axes=1)(params, x)


# --- forward solver ---


def _orthonormalise_against(q, w):
    """Orthonormal basis of ``w`` orthogonal to the (orthonormal, zero-padded) columns of ``q``."""
    for _ in range(2):
        w = w - _mm(q, _mm(_h(q), w))
    w, _ = jnp.linalg.qr(w)
    # QR completes a rank-deficient block arbitrarily; project those columns again.
    w = w - _mm(q, _mm(_h(q), w))
    w, _ = jnp.linalg.qr(w)
    return w


def _select(theta, y, cfg):
    """Indices of the ``p`` extremal Ritz values, and of the ``k`` wanted among them."""
    if cfg.largest:
        return theta[-cfg.p :], y[:, -cfg.p :]
    return theta[: cfg.p], y[:, : cfg.p]


def _wanted(x, cfg):
    return x[..., -cfg.k :] if cfg.largest else x[..., : cfg.k]


def _krylov_solve(matmat, params, cfg: _Config):
    n, p, m = cfg.n, cfg.p, cfg.m
    key = jax.random.key(cfg.seed)
    x0 = jax.random.normal(key, (n, p), dtype=cfg.dtype)
    x0, _ = jnp.linalg.qr(x0)
    real = jnp.finfo(cfg.dtype).dtype

    def restart(x):
        q = jnp.zeros((n, (m + 1) * p), cfg.dtype)
        q = jax.lax.dynamic_update_slice(q, x, (0, 0))
        aq = jnp.zeros((n, m * p), cfg.dtype)

        def step(j, carry):
            q, aq = carry
            blk = jax.lax.dynamic_slice(q, (0, j * p), (n, p))
            ablk = matmat(params, blk)
            aq = jax.lax.dynamic_update_slice(aq, ablk, (0, j * p))
            new = _orthonormalise_against(q, ablk)
            q = jax.lax.dynamic_update_slice(q, new, (0, (j + 1) * p))
            return q, aq

        q, aq = jax.lax.fori_loop(0, m, step, (q, aq))
        qm = q[:, : m * p]
        h = _hermitian_part(_mm(_h(qm), aq))
        theta, y = _eigh_forward(h)
        anorm = jnp.max(jnp.abs(theta))
        ts, ys = _select(theta, y, cfg)
        xn = _mm(qm, ys)
        r = _mm(aq, ys) - xn * ts[None, :].astype(cfg.dtype)
        res = jnp.linalg.norm(r, axis=0)
        return xn, ts, res, anorm

    def cond(state):
        _, _, res, anorm, it = state
        done = jnp.all(_wanted(res, cfg) <= cfg.tol * anorm)
        return jnp.logical_and(it < cfg.max_restarts, jnp.logical_not(done))

    def body(state):
        x, _, _, _, it = state
        xn, ts, res, anorm = restart(x)
        return xn, ts, res, anorm, it + 1

    state = (x0, jnp.zeros((p,), real), jnp.full((p,), jnp.inf, real), jnp.zeros((), real), jnp.zeros((), jnp.int32))
    x, ts, res, anorm, it = jax.lax.while_loop(cond, body, state)
    converged = jnp.all(_wanted(res, cfg) <= cfg.tol * anorm)
    return _wanted(ts, cfg), _wanted(x, cfg), _wanted(res, cfg), it, converged


def _dense_solve(matmat, params, cfg: _Config):
    a = _hermitian_part(matmat(params, jnp.eye(cfg.n, dtype=cfg.dtype)))
    w, v = _eigh_forward(a)
    w, v = _wanted(w, cfg), _wanted(v, cfg)
    res = jnp.linalg.norm(matmat(params, v) - v * w[None, :].astype(cfg.dtype), axis=0)
    anorm = jnp.max(jnp.abs(w))
    return w, v, res, jnp.zeros((), jnp.int32), jnp.all(res <= cfg.tol * jnp.maximum(anorm, 1e-300))


# --- CG for the projected, definite system (one shift per column) ---


def _cg(op, b, tol, maxiter):
    """Column-wise conjugate gradients for a Hermitian positive definite ``op`` on ``(n, k)`` blocks."""
    real = jnp.finfo(b.dtype).dtype
    dot = lambda x, y: jnp.real(jnp.sum(jnp.conj(x) * y, axis=0))
    bnorm2 = dot(b, b)
    thresh = (tol**2) * bnorm2

    def cond(s):
        _, _, _, rs, it = s
        return jnp.logical_and(it < maxiter, jnp.any(rs > thresh))

    def body(s):
        x, r, d, rs, it = s
        ad = op(d)
        dad = dot(d, ad)
        active = jnp.logical_and(rs > thresh, dad > 0)
        alpha = jnp.where(active, rs / jnp.where(active, dad, 1.0), 0.0).astype(real)
        x = x + d * alpha[None, :]
        r = r - ad * alpha[None, :]
        rs_new = dot(r, r)
        beta = jnp.where(active, rs_new / jnp.where(active, rs, 1.0), 0.0).astype(real)
        d = jnp.where(active[None, :], r + d * beta[None, :], d)
        rs = jnp.where(active, rs_new, rs)
        return x, r, d, rs, it + 1

    s = (jnp.zeros_like(b), b, b, bnorm2, jnp.zeros((), jnp.int32))
    return jax.lax.while_loop(cond, body, s)[0]


# --- the differentiable core ---


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _partial(params, matmat, cfg):
    if (cfg.m + 1) * cfg.p > cfg.n:
        return _dense_solve(matmat, params, cfg)
    return _krylov_solve(matmat, params, cfg)


@_partial.defjvp
def _partial_jvp(matmat, cfg, primals, tangents):
    (params,), (params_dot,) = primals, tangents
    w, v, res, it, conv = _partial(params, matmat, cfg)
    y = jax.jvp(lambda prm: matmat(prm, v), (params,), (params_dot,))[1]  # dA V
    p = _mm(_h(v), y)
    w_dot = jnp.real(jnp.diagonal(p))
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
    inside = _mm(v, f * p)

    sign = -1.0 if cfg.largest else 1.0
    wc = w[None, :].astype(v.dtype)
    proj = lambda x: x - _mm(v, _mm(_h(v), x))

    def op(x):
        x = proj(x)
        return sign * proj(matmat(params, x) - x * wc)

    solve = lambda mv, b: _cg(mv, b, cfg.cg_tol, cfg.cg_maxiter)
    rhs = -sign * proj(y)
    u = jax.lax.custom_linear_solve(op, rhs, solve, transpose_solve=solve)
    v_dot = inside + proj(u)
    zero_int = np.zeros(it.shape, dtype=jax.dtypes.float0)
    zero_bool = np.zeros(conv.shape, dtype=jax.dtypes.float0)
    return (w, v, res, it, conv), (w_dot, v_dot, jnp.zeros_like(res), zero_int, zero_bool)


def eigh_partial(
    a,
    k: int,
    *,
    which: str = "smallest",
    params: Any = None,
    n: int | None = None,
    dtype: Any = None,
    tol: float | None = None,
    block_size: int | None = None,
    krylov_steps: int | None = None,
    max_restarts: int = 500,
    cg_tol: float | None = None,
    cg_maxiter: int | None = None,
    degenerate_tol: float | None = None,
    seed: int = 0,
) -> PartialEighResult:
    r"""The ``k`` smallest or largest eigenpairs of a Hermitian operator, differentiable.

    ``jax.lax.linalg.eigh(..., subset_by_index=...)`` has no derivative; this computes
    ``k`` extremal eigenpairs by restarted block Krylov iteration and differentiates them
    with the projected-solve rule of the module docstring (``dw_i = v_i^H dA v_i``; the
    eigenvector part outside the computed subspace from CG inside
    ``jax.lax.custom_linear_solve``; degenerate pairs inside the block as in
    :func:`eigjax.eigh`).

    Args:
      a: one of
        * a dense Hermitian matrix, shape ``(n, n)`` (its Hermitian part is used, so
          ``jax.grad`` returns a Hermitian gradient);
        * a ``jax.experimental.sparse.BCOO`` matrix of shape ``(n, n)``, assumed
          Hermitian (not symmetrised); derivatives flow to its ``data``;
        * a callable ``matvec(params, x)`` returning ``A(params) @ x`` for ``x`` of shape
          ``(n,)``, Hermitian for every ``params``; derivatives flow to ``params``
          (pass every differentiable quantity through ``params``, not a closure).
      k: number of eigenpairs, ``1 <= k <= n``.
      which: ``"smallest"`` or ``"largest"`` (algebraic).
      params: the pytree passed to ``matvec`` (operator form only).
      n, dtype: size and dtype of the vectors (operator form; ``n`` required, dtype
        default the default float dtype).
      tol: relative residual tolerance, ``||A v - w v|| <= tol * ||A||``. Default
        ``10 * eps**0.75`` (``1.8e-11`` in float64, ``6e-5`` in float32).
      block_size: Krylov block size ``p >= k`` (default ``k + max(3, k)``).
      krylov_steps: blocks per restart ``m`` (default ``max(3, 64 // p)``).
      max_restarts: cap on restarts; ``converged`` in the result tells if it was hit.
      cg_tol, cg_maxiter: CG relative tolerance (default ``tol``) and iteration cap
        (default ``10 n``) for the derivative's projected solve.
      degenerate_tol: pairs inside the block closer than this are treated as degenerate
        (see :func:`eigjax.eigh`). Default: ``r_i + r_j + n eps max|w|`` with ``r`` the
        residual norms (a Ritz value is within its residual of an eigenvalue, so closer
        pairs cannot be told apart from a degenerate one).
      seed: seed of the random starting block.

    Returns:
      :class:`PartialEighResult` ``(eigenvalues, eigenvectors, residual_norms,
      iterations, converged)``; eigenvalues ascending in both modes.

    Raises:
      TypeError: ``a`` is not an array, BCOO or callable; ``k`` is not an int.
      ValueError: bad shapes, ``k`` outside ``[1, n]``, bad ``which``, missing ``n``.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> a = jnp.diag(jnp.arange(1.0, 41.0))
      >>> eigjax.eigh_partial(a, 2).eigenvalues.round(8).tolist()
      [1.0, 2.0]
    """
    if which not in ("smallest", "largest"):
        raise ValueError(f"{_FN}: option `which` must be 'smallest' or 'largest'; got {which!r}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{_FN}: argument `k` must be a Python int; got {k!r} of type {type(k).__name__}.")
    k = int(k)
    if isinstance(a, jsparse.BCOO):
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.n_batch != 0 or a.n_dense != 0:
            raise ValueError(
                f"{_FN}: a BCOO argument `a` must be an unbatched square matrix of shape (n, n); "
                f"got shape {tuple(a.shape)} with n_batch={a.n_batch}, n_dense={a.n_dense}."
            )
        n_, dtype_ = a.shape[0], a.dtype
        prm = (a.data, a.indices)
        matmat = functools.partial(_bcoo_matmat, shape=tuple(a.shape))
    elif callable(a):
        if n is None:
            raise ValueError(f"{_FN}: with a callable `a` (matvec(params, x)) the size `n` is required.")
        n_ = int(n)
        dtype_ = jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)
        prm = params
        matmat = functools.partial(_operator_matmat, matvec=a)
        out = jax.eval_shape(matmat, prm, jax.ShapeDtypeStruct((n_, 1), dtype_))
        if out.shape != (n_, 1):
            raise ValueError(
                f"{_FN}: `a(params, x)` must return shape (n,) = ({n_},) for x of shape (n,); "
                f"got {tuple(out.shape[:-1])}."
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
    eps = float(jnp.finfo(dtype_).eps)
    tol = check_nonnegative_float(tol, name="tol", fn=_FN)
    tol = 10 * eps**0.75 if tol is None else tol
    cg_tol = check_nonnegative_float(cg_tol, name="cg_tol", fn=_FN)
    cg_tol = tol if cg_tol is None else cg_tol
    degenerate_tol = check_nonnegative_float(degenerate_tol, name="degenerate_tol", fn=_FN)
    p = min(n_, k + max(3, k)) if block_size is None else int(block_size)
    if not k <= p <= n_:
        raise ValueError(f"{_FN}: option `block_size` must satisfy k <= block_size <= n; got {p}.")
    m = max(3, 64 // p) if krylov_steps is None else int(krylov_steps)
    if m < 2:
        raise ValueError(f"{_FN}: option `krylov_steps` must be >= 2; got {m}.")
    cfg = _Config(
        n=n_, k=k, p=p, m=m, largest=(which == "largest"), dtype=jnp.dtype(dtype_), tol=float(tol),
        max_restarts=int(max_restarts), cg_tol=float(cg_tol),
        cg_maxiter=int(10 * n_ if cg_maxiter is None else cg_maxiter),
        degenerate_tol=degenerate_tol, seed=int(seed),
    )
    return PartialEighResult(*_partial(prm, matmat, cfg))
