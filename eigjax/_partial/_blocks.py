"""Small helpers on blocks of vectors stored as rows ``(p, n)``: start block, projections, Rayleigh-Ritz."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._linalg import _mm, _norm


def _hermitian_small(h):
    return (h + jnp.conj(h.T)) / 2


def _eigh_small(h):
    """Ascending eigenvalues and eigenvectors of a small Hermitian matrix (LAPACK; cheap to compile)."""
    v, w = jax.lax.linalg.eigh(h, lower=True, symmetrize_input=False)
    return w, v


def _small_pencil(h, m):
    """Ascending eigenvalues and ``Z`` (``Z^H H Z = diag``, ``Z^H M Z = I``) of a small
    Hermitian pencil ``(H, M)``, ``M`` positive definite: ``M = L L^H``, the eigenvectors
    ``U`` of ``L^-1 H L^-H`` and ``Z = L^-H U`` (Golub & Van Loan 8.7.2)."""
    lf = jax.lax.linalg.cholesky(m, symmetrize_input=False)
    t = jax.lax.linalg.triangular_solve(lf, h, left_side=True, lower=True)
    t = jax.lax.linalg.triangular_solve(lf, t, left_side=False, lower=True, transpose_a=True, conjugate_a=True)
    theta, u = _eigh_small(_hermitian_small(t))
    return theta, jax.lax.linalg.triangular_solve(lf, u, left_side=True, lower=True, transpose_a=True, conjugate_a=True)


def _start_block(shape, dtype, seed: int):
    """Deterministic pseudo-random block, uniform in [-1/2, 1/2) (an integer hash: compiles
    faster than ``jax.random``, and a start block needs no statistical quality)."""
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
    """``c[r, i] = q_i^H x_r``: components of the rows of ``x`` along the orthonormal rows of ``q``.

    For up to 4 rows of ``x``, one matrix-vector product per row, ``conj(q conj(x_r))``: XLA's
    CPU dot contracting the long axis of a thin ``(b, n) x (n, r)`` pair measured 2-25x slower
    (``b = 2``, ``r = 34``, ``n = 1e5``: 23 ms against 1.6 ms), and ``conj(q)`` would copy ``q``.
    """
    if x.shape[0] == 0:  # no rows (no extra Ritz vectors: block_size = k)
        return jnp.zeros((0, q.shape[0]), jnp.result_type(x.dtype, q.dtype))
    if x.shape[0] <= 4:
        return jnp.stack([jnp.conj(_mm(q, jnp.conj(x[r]))) for r in range(x.shape[0])])
    return _mm(x, jnp.conj(q).T)


def _orthonormal_rows(y):
    q, _ = jnp.linalg.qr(y.T)
    return q.T


def _row_norms(x):
    """Euclidean norms of the rows, scaled (:func:`eigjax._linalg._norm`): unscaled, tiny
    rows (``|A| ~ 1e-160`` in float64, ``1e-20`` in float32) read 0 and a wrong pair passed
    as converged."""
    return _norm(x, axis=-1)


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


def _poisoned(res):
    """Whether a NaN has reached the residuals: it never leaves an iteration's state again
    (a NaN in the operator, a solve or the start block), so the loops stop on it at once,
    returning NaN with ``converged = False``, instead of running to ``max_restarts``."""
    return jnp.any(jnp.isnan(res))


def _acosh1p(delta):
    """``acosh(1 + delta)`` for ``delta >= 0``, accurate for small ``delta``."""
    delta = jnp.maximum(delta, 0.0)
    return jnp.log1p(delta + jnp.sqrt(delta * (2.0 + delta)))


def _orthonormalise_against(q, w):
    """Orthonormal rows spanning ``w`` orthogonal to the (orthonormal, zero-padded) rows of ``q``."""
    for _ in range(2):
        w = w - _mm(_coefficients(w, q), q)
    w = _orthonormal_rows(w)
    # QR completes a rank-deficient block arbitrarily; project those rows again.
    w = w - _mm(_coefficients(w, q), q)
    return _orthonormal_rows(w)
