"""The forward solve: all ``p`` Ritz pairs of the block, by the dense, Krylov or Chebyshev path."""

from __future__ import annotations

import jax.numpy as jnp

from .._hooks import gauge_hook
from ._blocks import (
    _eigh_small,
    _hermitian_small,
    _orthonormal_rows,
    _row_norms,
    _start_block,
)
from ._chebyshev import _chebyshev_solve
from ._krylov import _krylov_solve
from ._lobpcg import _dense_generalized_solve, _lobpcg_solve
from ._shift_invert import _shift_invert_solve, _too_small
from ._types import _Config


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


def _solve_unhooked(params, matmat, cfg: _Config):
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


def _solve_general_unhooked(params, ops, cfg: _Config):
    """All ``p`` Ritz pairs of the pencil ``(A, B)`` (``B = I`` when ``ops[1]`` is None) by LOBPCG
    (or, ``method="shift_invert"``, by thick-restart Lanczos on the preconditioner as an exact inverse).

    Returns the ``k`` wanted pairs (ascending, eigenvectors as B-orthonormal columns), their
    residual norms ``||A v - w B v||``, the iteration count and flag, then the other Ritz
    values, their vectors (rows), ``A`` and ``B`` applied to them, and no spectral bound.
    """
    a_prm, b_prm, pc_prm = params
    a_mm, b_mm, pc = ops
    sign = -1.0 if cfg.largest else 1.0
    op_a = lambda x: sign * a_mm(a_prm, x)
    op_b = (lambda x: x) if b_mm is None else (lambda x: b_mm(b_prm, x))
    precond = (lambda r: r) if pc is None else (lambda r: pc(pc_prm, r))
    if _too_small(cfg) if cfg.method == "shift_invert" else 4 * cfg.p > cfg.n:
        theta, x, ax, bx, res, it, conv = _dense_generalized_solve(op_a, op_b, cfg)
    elif cfg.method == "shift_invert":
        theta, x, ax, bx, res, it, conv = _shift_invert_solve(op_a, None if b_mm is None else op_b, precond, cfg)
    else:
        x0 = _start_block((cfg.p, cfg.n), cfg.dtype, cfg.seed)
        theta, x, ax, bx, res, it, conv = _lobpcg_solve(op_a, op_b, precond, x0, cfg)
    k = cfg.k
    w, v, r = sign * theta[:k], x[:k], res[:k]
    if cfg.largest:
        w, v, r = w[::-1], v[::-1], r[::-1]
    real = jnp.finfo(cfg.dtype).dtype
    return w, v.T, r, it, conv, sign * theta[k:], x[k:], sign * ax[k:], bx[k:], jnp.asarray(jnp.inf, real)


# The forward solves, hook points of eigjax.random_gauge (eigjax._hooks): the wanted pairs
# come first, (w, V as columns, ...), in both.
_solve = gauge_hook("eigh_partial", _solve_unhooked, kind="partial")
_solve_general = gauge_hook("eigh_partial_generalized", _solve_general_unhooked, kind="partial")
