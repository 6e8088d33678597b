"""Deflated, Chebyshev-preconditioned CG for the derivative's projected, definite system (one shift per row)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._linalg import _mm, _norm
from ._blocks import _coefficients, _eigh_small, _hermitian_small, _small_pencil
from ._operators import _per_vector, _to_layout


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


def _deflated_cg(mv, b, wd, awd, w, sign, tol, maxiter, precond=None, bwd=None):
    """Row-wise deflated preconditioned CG for ``B_i = sign P (A - w_i) P`` (positive definite on ``S^perp``).

    ``mv(x)`` applies ``B_i`` to row ``i`` of ``x`` (``(k, n)`` blocks) for ``x`` in ``S^perp``
    (``b`` is in ``S^perp`` and every iterate stays there). ``wd`` (orthonormal rows in
    ``S^perp``) spans the coarse space and ``awd`` holds ``P A`` applied to its rows; the
    coarse matrices ``G_i = W B_i W^H = sign (W A W^H - w_i I)`` are inverted exactly (Saad,
    Yeung, Erhel & Guyomarc'h 2000, deflated PCG). A coarse direction with a non-positive
    pivot (a split degenerate pair) is dropped. ``precond`` (symmetric positive definite on
    ``S^perp``; default the identity) is applied once per iteration. Stops when every row
    has ``||r_i|| <= tol ||b_i||`` or after ``maxiter`` iterations; a row that has not
    converged then is NaN. Rows are solved at unit norm.

    Generalized pencils (``bwd`` given, ``B`` times the rows of ``wd``): ``B_i = sign Pi (A - w_i
    B) Pi^H`` with ``Pi = I - B V V^H``; iterates and search directions lie in the B-orthogonal
    complement of ``V`` (``precond`` maps residuals there), residuals in ``V^perp``; ``wd`` is
    B-orthogonal to ``V``, ``awd`` and ``bwd`` projected by ``Pi``, and the coarse basis is
    rotated onto the eigenvectors of the pencil ``(W A W^H, W B W^H)`` (a Cholesky reduction),
    so that ``G_i`` is again diagonal.
    """
    real = jnp.finfo(b.dtype).dtype
    dot = lambda x, y: jnp.real(jnp.sum(jnp.conj(x) * y, axis=-1))
    # Rows of unit norm (scaled back at the end; a zero row stays zero): the squared norms
    # and d^H B d underflowed or overflowed for |A| ~ 1e-100 or a loss scaled by 1e-200
    # (CG stopped at once or diverged: found by an audit).
    bnorm = _norm(b, axis=-1)
    b = b / jnp.where(bnorm > 0, bnorm, 1.0)[:, None].astype(b.dtype)
    precond = (lambda r: r) if precond is None else precond
    q = wd.shape[0]
    if q:
        h_a = _hermitian_small(_coefficients(awd, wd).T)
        if bwd is None:
            m_val, m_vec = _eigh_small(h_a)
        else:
            m_val, m_vec = _small_pencil(h_a, _hermitian_small(_coefficients(bwd, wd).T))
        g = sign * (m_val[None, :] - w[:, None])
        floor = 1e3 * float(jnp.finfo(real).eps) * jnp.maximum(jnp.max(jnp.abs(m_val)), jnp.max(jnp.abs(w)))
        ok = g > floor
        g_inv = jnp.where(ok, 1.0 / jnp.where(ok, g, 1.0), 0.0).astype(b.dtype)
        # Rotate the coarse basis to the eigenvectors of W A W^H: G_i becomes diagonal.
        wd, awd = _mm(m_vec.T, wd), _mm(m_vec.T, awd)
        bwd = wd if bwd is None else _mm(m_vec.T, bwd)
        both = jnp.concatenate([awd, bwd], axis=0)

        def deflate(z):  # W^H G^{-1} W B z, one pass over z for both coefficient sets
            c = _coefficients(z, both)
            t = sign * (c[:, :q] - w[:, None].astype(z.dtype) * c[:, q:])
            return _mm(t * g_inv, wd)

        c = _coefficients(b, wd) * g_inv
        x = _mm(c, wd)  # W^H G^{-1} W b
        r = b - sign * (_mm(c, awd) - w[:, None].astype(b.dtype) * _mm(c, bwd))  # b - B_i x, no product
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
    x, _, _, _, rs, _ = jax.lax.while_loop(cond, body, s)
    # A row that did not reach the tolerance in maxiter iterations is NaN, not a wrong
    # finite derivative: with a gap of 1e-5 ||A|| at the block's edge CG stalled and
    # diverged, and the derivative came out 500x too large (found by an audit).
    x = jnp.where((rs <= thresh)[:, None] | (bnorm[:, None] == 0), x, jnp.nan)
    return x * bnorm[:, None].astype(x.dtype)
