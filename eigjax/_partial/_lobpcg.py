"""Forward, ``method="lobpcg"``: blocked, preconditioned LOBPCG for ``A x = theta B x`` (``B = I`` if absent).

Knyazev (2001), "Toward the optimal preconditioned eigensolver: locally optimal block
preconditioned conjugate gradient method", with the basis handling of Hetmaniuk & Lehoucq
(2006) and the SVQB orthonormalisation of Stathopoulos & Wu (2002). Per iteration, for the
block ``X`` of ``p`` B-orthonormal Ritz vectors (rows) with Ritz values ``theta``:

* residuals ``R = A X - theta B X``; rows already converged are masked out (soft locking:
  they stay in the basis, their residual directions do not);
* ``W = T R`` (``T`` the preconditioner, an approximate inverse of a positive definite
  ``A - sigma B``), B-orthogonalised twice against ``X``;
* the basis ``S = [X; W; P]`` (``P`` the previous step, B-orthogonal to the previous ``X``)
  is B-orthonormalised by SVQB from its Gram matrix ``S B S^H``: scale to a unit diagonal,
  diagonalise, drop the directions with eigenvalues below ``_DROP`` of the largest (the
  basis lost rank) and scale by ``Lambda^{-1/2}``; twice, the second pass on the Gram matrix
  recomputed from the new vectors. Dropped directions get a Rayleigh quotient above every
  kept one, so the Rayleigh-Ritz step never selects them;
* Rayleigh-Ritz on ``S``: the ``p`` smallest Ritz pairs become the new ``X``; the new
  ``P = X_new - X (X^H B X_new)``.

Only ``W`` is multiplied by ``A`` and ``B`` (``A X``, ``B X``, ``A P``, ``B P`` are updated as
linear combinations); at the end ``A X`` and ``B X`` are recomputed and a last Rayleigh-Ritz
on ``X`` alone restores ``X^H B X = I`` and ``X^H A X = diag(theta)`` to working accuracy.
Converged when the ``k`` wanted residuals satisfy ``||A x_i - theta_i B x_i|| <= tol * s
||B x_i||``, ``s`` the largest Ritz value in modulus seen (an estimate of ``||B^{-1} A||``).
Memory ``O(nnz + n p)``: about twelve blocks of ``p`` vectors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._linalg import _mm
from ._blocks import _coefficients, _eigh_small, _hermitian_small, _poisoned, _row_norms, _small_pencil
from ._types import _Config

_DROP = 1e-12  # relative eigenvalue of the scaled Gram matrix below which a direction is dropped


def _gram(x, bx):
    """``G[i, j] = x_i^H B x_j`` for rows ``x`` and ``bx = B x``."""
    return _hermitian_small(_coefficients(bx, x).T)


def _svqb_transform(g, mask, real):
    """``M`` with ``M S`` B-orthonormal (kept rows) or zero (dropped), from the Gram matrix ``g`` of ``S``."""
    dg = jnp.real(jnp.diagonal(g))
    ok = mask & (dg > jnp.finfo(real).tiny)
    d = jnp.where(ok, 1.0 / jnp.sqrt(jnp.where(ok, dg, 1.0)), 0.0)
    gs = d[:, None].astype(g.dtype) * g * d[None, :].astype(g.dtype)
    lam, u = _eigh_small(gs)
    kept = lam > _DROP * jnp.max(lam)
    scale = jnp.where(kept, 1.0 / jnp.sqrt(jnp.where(kept, lam, 1.0)), 0.0)
    return scale[:, None].astype(g.dtype) * u.T * d[None, :].astype(g.dtype), kept


def _svqb(s, bs, mask):
    """``M`` with the rows of ``M s`` B-orthonormal (SVQB twice), and the kept mask."""
    real = jnp.finfo(s.dtype).dtype
    total, mask = _svqb_transform(_gram(s, bs), mask, real)
    s, bs = _mm(total, s), _mm(total, bs)
    m, mask = _svqb_transform(_gram(s, bs), mask, real)  # the second pass: rounding of the first
    return _mm(m, total), _mm(m, s), _mm(m, bs), mask


def _ritz(y, ay, kept, p):
    """Rayleigh-Ritz on the B-orthonormal rows ``y`` (dropped rows are zero): the ``p`` smallest
    Ritz values, their coefficients ``Z`` (``x = Z y``) and the largest kept Ritz value in modulus."""
    h = _hermitian_small(_coefficients(ay, y).T)
    big = 2.0 * h.shape[0] * jnp.max(jnp.abs(h)) + 1.0  # above every kept Ritz value (n max|h_ij| >= ||h||_2)
    h = h + jnp.diag(jnp.where(kept, 0.0, big)).astype(h.dtype)
    theta_all, z = _eigh_small(h)
    n_kept = jnp.sum(kept)
    theta_max = jnp.max(jnp.where(jnp.arange(theta_all.shape[0]) < n_kept, jnp.abs(theta_all), 0.0))
    return theta_all[:p], z[:, :p].T, theta_max


def _rr(s, as_, bs, mask, p):
    """B-orthonormalise the rows of ``s`` and Rayleigh-Ritz: theta, the coefficients ``T``
    (Ritz vectors ``T s``), the largest kept Ritz value."""
    m, y, _, kept = _svqb(s, bs, mask)
    theta, z, theta_max = _ritz(y, _mm(m, as_), kept, p)
    return theta, _mm(z, m), theta_max


def _inverse_norms(x):
    """``1 / ||x_i||`` as a column (0 for a zero row), in ``x``'s dtype."""
    nrm = _row_norms(x)
    return jnp.where(nrm > 0, 1.0 / jnp.where(nrm > 0, nrm, 1.0), 0.0)[:, None].astype(x.dtype)


def _unit_rows(x):
    return x * _inverse_norms(x)


def _lobpcg_solve(op_a, op_b, precond, x0, cfg: _Config):
    """All ``p`` Ritz pairs: ``(theta, x, ax, bx, res, iterations, converged)``; rows B-orthonormal."""
    p, k = cfg.p, cfg.k
    ones = jnp.ones((p,), bool)

    def residuals(theta, ax, bx):
        return _row_norms(ax - theta[:, None].astype(ax.dtype) * bx), _row_norms(bx)

    def ok(res, bnorm, scale):
        return res <= cfg.tol * scale * bnorm

    def start(x):  # Rayleigh-Ritz on the span of the rows of x, explicit products
        ax, bx = op_a(x), op_b(x)
        theta, t, scale = _rr(x, ax, bx, ones, p)
        return theta, _mm(t, x), _mm(t, ax), _mm(t, bx), scale

    theta, x, ax, bx, scale = start(x0)
    res, bnorm = residuals(theta, ax, bx)

    def cond(state):
        *_, res, bnorm, scale, it = state
        stop = jnp.all(ok(res, bnorm, scale)[:k]) | _poisoned(res)
        return jnp.logical_and(it < cfg.max_restarts, jnp.logical_not(stop))

    def body(state):
        x, ax, bx, pv, apv, bpv, theta, res, bnorm, scale, it = state
        active = jnp.logical_not(ok(res, bnorm, scale))
        r = (ax - theta[:, None].astype(ax.dtype) * bx) * active[:, None].astype(ax.dtype)
        w = precond(r)
        for _ in range(2):
            w = w - _mm(_coefficients(w, bx), x)
        w = _unit_rows(w)  # SVQB's Gram matrix squares them: a 1e-160 row would underflow and be dropped
        aw, bw = op_a(w), op_b(w)
        s, as_, bs = (jnp.concatenate(t) for t in ((x, w, pv), (ax, aw, apv), (bx, bw, bpv)))
        mask = jnp.concatenate([ones, active, active & (it > 0)])
        theta_new, t, s_new = _rr(s, as_, bs, mask, p)
        # The new P: the W and P parts of the new Ritz vectors (Hetmaniuk & Lehoucq 2006).
        tp = t[:, p:]
        pv, apv, bpv = _mm(tp, s[p:]), _mm(tp, as_[p:]), _mm(tp, bs[p:])
        inv = _inverse_norms(pv)
        pv, apv, bpv = pv * inv, apv * inv, bpv * inv
        x, ax, bx = _mm(t, s), _mm(t, as_), _mm(t, bs)
        res, bnorm = residuals(theta_new, ax, bx)
        return x, ax, bx, pv, apv, bpv, theta_new, res, bnorm, jnp.maximum(scale, s_new), it + 1

    zeros = jnp.zeros_like(x)
    state = (x, ax, bx, zeros, zeros, zeros, theta, res, bnorm, scale, jnp.zeros((), jnp.int32))
    x, _, _, _, _, _, _, _, _, scale, it = jax.lax.while_loop(cond, body, state)
    # Explicit products and a last Rayleigh-Ritz on X: no drift of the implicit updates.
    theta, x, ax, bx, _ = start(x)
    res, bnorm = residuals(theta, ax, bx)
    return theta, x, ax, bx, res, it, jnp.all(ok(res, bnorm, scale)[:k])


def _dense_generalized_solve(op_a, op_b, cfg: _Config):
    """Small problems: form both matrices, Cholesky-reduce, diagonalise (Golub & Van Loan 8.7.2)."""
    eye = jnp.eye(cfg.n, dtype=cfg.dtype)
    theta_all, v = _small_pencil(_hermitian_small(op_a(eye).T), _hermitian_small(op_b(eye).T))
    theta, x = theta_all[: cfg.p], v[:, : cfg.p].T
    ax, bx = op_a(x), op_b(x)
    res = _row_norms(ax - theta[:, None].astype(cfg.dtype) * bx)
    scale = jnp.maximum(jnp.max(jnp.abs(theta_all)), jnp.finfo(theta.dtype).tiny)
    conv = jnp.all((res <= cfg.tol * scale * _row_norms(bx))[: cfg.k])
    return theta, x, ax, bx, res, jnp.zeros((), jnp.int32), conv
