"""Forward, ``method="krylov"``: restarted block Krylov (block Lanczos) with full reorthogonalisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._linalg import _mm
from ._blocks import (
    _coefficients,
    _eigh_small,
    _hermitian_small,
    _orthonormalise_against,
    _poisoned,
    _row_norms,
)
from ._types import _Config


def _krylov_solve(op, x0, cfg: _Config):
    n, p, m, k = cfg.n, cfg.p, cfg.m, cfg.k
    real = jnp.finfo(cfg.dtype).dtype

    def blocks_looped(x):
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
        return q[: m * p], aq

    def restart(x):
        qm, aq = blocks_looped(x)
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
        return jnp.logical_and(it < cfg.max_restarts, jnp.logical_not(done(res, anorm) | _poisoned(res)))

    def body(state):
        x, _, _, _, _, it = state
        return (*restart(x), it + 1)

    state = (
        x0,
        jnp.zeros_like(x0),
        jnp.zeros((p,), real),
        jnp.full((p,), jnp.inf, real),
        jnp.zeros((), real),
        jnp.zeros((), jnp.int32),
    )
    x, ax, ts, res, anorm, it = jax.lax.while_loop(cond, body, state)
    return ts, x, ax, res, it, done(res, anorm), jnp.asarray(jnp.inf, real)  # no spectral bound
