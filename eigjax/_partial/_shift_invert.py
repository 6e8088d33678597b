"""Forward, ``method="shift_invert"``: thick-restart block Lanczos on a user's solve, then Rayleigh-Ritz with ``A``.

The user's ``precond`` is here an exact inverse ``S = (A - sigma I)^{-1}`` (of ``sigma I - A``
for ``which="largest"``), e.g. a sparse factorisation built outside JAX, with ``sigma``
below the wanted eigenvalues. ``S`` has the eigenvectors of ``A`` and eigenvalues
``theta = 1 / (lambda - sigma)``, so the wanted eigenvalues, nearest ``sigma``, become the
largest ``theta`` and are well separated from the rest. ``sigma`` itself is never needed: a
Rayleigh-Ritz step with ``A`` on the final block gives the eigenvalues and eigenvectors, and
their residuals ``||A v - w v||`` decide ``converged`` against ``tol * ||A||`` (``||A||``
from a short Lanczos run), so an inexact solve shows as ``converged = False``, never as a
silently accepted answer. A ``sigma`` inside the spectrum (eigenvalues below it) would
give genuine eigenpairs that are not the wanted ones; it shows as a positive Ritz value of
``-S`` (``S`` indefinite) or as a Ritz value of ``A``'s Lanczos run below the block, and the
result is then NaN with ``converged`` False (detected, not guaranteed: an eigenvalue below
``sigma`` that neither Lanczos run sees passes).

The iteration is the Krylov-Schur form of thick-restart Lanczos (Wu & Simon 2000; Stewart
2001), on ``-S`` (so the wanted are the smallest), with a block of ``b`` vectors (the
``block_size`` option, default 2). With ``M`` orthonormal basis rows ``V`` and the next
block ``V+``,

    -S V = V T + V+ G,    T = V^H (-S) V Hermitian,    G nonzero in its last b columns

after ``M / b`` block steps, each ``W = -S V_j`` orthogonalised twice against every row so
far (classical Gram-Schmidt twice; the coefficients are the column of ``T``). The Ritz pairs
``T y = theta y`` have residuals ``||-S (V y) - theta V y|| = ||G y||``. A restart keeps the
``L`` smallest: ``V <- Y_L^T V``, ``T <- diag(theta_L)``, the old ``V+`` becomes the next
block, and the block steps refill the basis to ``M``; the coupling of ``V+`` with the kept
rows reappears as the first new step's coefficients. Restarts stop when the ``k`` wanted
Ritz vectors pass the final test with ``A`` (``k`` products with ``A`` per restart, cheap
next to the solves), or when their residuals with ``S`` are below ``tol / 2 * |theta_i|``
times ``||A|| / ||A - sigma||`` (which ends the iteration for an inexact solve too, whose
``A`` residuals never get there; for an exact one, ``S x = theta x + r`` gives
``||A x - (sigma + 1 / theta) x|| <= ||A - sigma|| ||r|| / |theta|``; ``sigma`` is estimated
as ``lambda_1 + 1 / theta_1`` from the Ritz values, the ratio kept above 1e-3).

Why thick restart with a thin block: every block step costs a solve, and ARPACK needs ~35
single-vector solves on the benchmark's 100,000-node graph where the previous block Krylov
(blocks of k + 1, nothing kept at a restart) needed 18 solves of 10 vectors and ~1 s of
orthogonalisation per restart; this needs 30 solves of 2 vectors and ~0.1 s per restart
(benchmarks/results_partial.md). A block of ``b`` finds an
eigenvalue of multiplicity up to ``b`` reliably (its start block has a component in every
such eigenspace); a higher multiplicity can be missed, as with ARPACK, unless ``block_size``
is raised. On an exact invariant subspace (a breakdown: the orthogonalised block vanishes)
the step continues from fixed pseudo-random rows orthogonalised against the basis.

The derivative is the LOBPCG path's (:mod:`eigjax._partial._rule`, ``_general_rule``), whose
projected CG solve is preconditioned by the same ``S``: for the smallest eigenvalues an
excellent preconditioner of ``A - w_i I`` on the complement of the block.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .._linalg import _mm
from ._blocks import (
    _coefficients,
    _eigh_small,
    _hermitian_small,
    _orthonormal_rows,
    _poisoned,
    _row_norms,
    _start_block,
)
from ._chebyshev import _lanczos_bounds
from ._types import _LANCZOS_STEPS, _Config


def _round_up(x: int, b: int) -> int:
    return -(-x // b) * b


def _shape(cfg: _Config) -> tuple[int, int, int]:
    """``(b, M, L)``: block width, basis rows and rows kept at a restart (multiples of ``b``,
    ``p <= L <= M - b``, ``M + b <= n``); ``cfg.m`` is the basis size in blocks."""
    b = cfg.width
    cap = (cfg.n - b) // b * b
    m_rows = max(min(cfg.m * b, cap), _round_up(cfg.p, b) + b)
    keep = min(max(_round_up(cfg.p, b), _round_up(m_rows // 2 + 1, b)), m_rows - b)
    return b, m_rows, keep


def _too_small(cfg: _Config) -> bool:
    """Problems too small for the iteration (``4 p > n`` or no room for ``L + b`` basis rows
    and the next block) are solved densely."""
    return 4 * cfg.p > cfg.n or _round_up(cfg.p, cfg.width) + 2 * cfg.width > cfg.n


def _thick_restart_lanczos(op, accept, cfg: _Config):
    """``(theta, x, it, indefinite)``: the ``p`` smallest Ritz values of the Hermitian ``op``
    (ascending), their vectors as orthonormal rows, the restarts used (see the module
    docstring), and whether a Ritz value of ``op`` is positive (beyond rounding).
    Restarts stop when ``accept(x, theta_1)`` (returning a flag and ``||A|| / ||A - sigma||``)
    holds for the ``k`` wanted Ritz vectors (rows ``x``), or when their residuals with ``op``
    are below ``tol / 2`` times that ratio of their Ritz values."""
    b, m_rows, keep = _shape(cfg)
    n, k, dtype = cfg.n, cfg.k, cfg.dtype
    eps = float(jnp.finfo(jnp.finfo(dtype).dtype).eps)
    spare = _start_block((m_rows // b + 1, b, n), dtype, cfg.seed + 2)  # rows for a breakdown

    def project(w, q):
        c = _coefficients(w, q)
        return w - _mm(c, q), c

    def step(s, carry):
        """Block step at row ``s``: columns ``s:s+b`` of ``T``, the next block at ``s + b``.

        ``W = op(V_s)`` is projected twice against every row of ``q`` (rows not built yet
        are zero and add nothing): ``W -> W1 -> W2``. A row whose second projection removed
        half of it (``|W2_i| <= |W1_i| / 2``: what the first left was rounding inside the
        span, as in ARPACK's test) or whose QR diagonal is at rounding level (``|R_ii| <=
        100 eps |W|``) is a breakdown: replaced by a fixed pseudo-random row. A QR diagonal
        below ``1e-3 |W2_i|`` (a row nearly in the span of the block's others) leaves the QR
        factor up to ``eps / 1e-3`` out of the orthogonal complement of ``q``: projected once
        more. Both are rare and taken in a ``lax.cond``; what is dropped is at rounding level
        of ``|W|``, and the coupling ``G`` is computed from ``W2`` against the rows kept.
        """
        q, t, _ = carry
        w = op(jax.lax.dynamic_slice_in_dim(q, s, b))
        w1, c1 = project(w, q)
        w2, c2 = project(w1, q)
        qr_q, qr_r = jnp.linalg.qr(w2.T)
        r_ii, n1, n2 = jnp.abs(jnp.diagonal(qr_r)), _row_norms(w1), _row_norms(w2)
        lost = jnp.logical_or(n2 <= n1 / 2, r_ii <= 100 * eps * jnp.max(_row_norms(w)))

        def repair(_):
            r = jnp.where(lost[:, None], spare[s // b], w2)
            for _ in range(2):
                r = project(r, q)[0]
            r = _orthonormal_rows(r)
            return _orthonormal_rows(project(r, q)[0])

        suspect = jnp.logical_or(jnp.any(lost), jnp.any(r_ii < 1e-3 * n2))
        nxt = jax.lax.cond(suspect, repair, lambda _: qr_q.T, None)
        c = c1 + c2
        t = jax.lax.dynamic_update_slice(t, c.T[:m_rows], (0, s))
        q = jax.lax.dynamic_update_slice(q, nxt, (s + b, 0))
        return q, t, _coefficients(w2, nxt).T  # the coupling: g[i, r] = nxt_i^H w2_r

    def fill(q, t, start):
        steps = (m_rows - start) // b
        return jax.lax.fori_loop(0, steps, lambda i, c: step(start + i * b, c), (q, t, jnp.zeros((b, b), dtype)))

    def ritz(t):
        upper = jnp.arange(m_rows)[:, None] <= jnp.arange(m_rows)[None, :]
        u = jnp.where(upper, t, 0)
        return _eigh_small(_hermitian_small(u + jnp.conj(jnp.triu(u, 1).T)))

    def done(q, t, g):
        theta, y = ritz(t)
        res = _row_norms(_mm(g, y[m_rows - b :]).T)  # ||G y_i||
        ok, ratio = accept(_mm(y[:, :k].T.astype(dtype), q[:m_rows]), theta[0])
        # ||A x - mu x|| <= ||A - sigma|| ||r|| / |theta|: ratio = ||A|| / ||A - sigma||,
        # kept >= 1e-3 and the threshold >= 10 eps (an inexact solve must still stop)
        small = res[:k] <= jnp.maximum(cfg.tol / 2 * ratio, 10 * eps) * jnp.abs(theta[:k])
        return jnp.logical_or(jnp.all(small) | _poisoned(res), ok)

    def restart(state):
        q, t, g, it, _ = state
        theta, y = ritz(t)
        kept = _mm(y[:, :keep].T.astype(dtype), q[:m_rows])
        q = jnp.zeros_like(q).at[:keep].set(kept).at[keep : keep + b].set(q[m_rows:])
        t = jnp.zeros_like(t).at[jnp.arange(keep), jnp.arange(keep)].set(theta[:keep].astype(dtype))
        q, t, g = fill(q, t, keep)
        return q, t, g, it + 1, done(q, t, g)

    q = jnp.zeros((m_rows + b, n), dtype).at[:b].set(_orthonormal_rows(_start_block((b, n), dtype, cfg.seed)))
    q, t, g = fill(q, jnp.zeros((m_rows, m_rows), dtype), 0)
    state = (q, t, g, jnp.zeros((), jnp.int32), done(q, t, g))
    cond = lambda s: jnp.logical_and(s[3] < cfg.max_restarts, jnp.logical_not(s[4]))
    q, t, g, it, _ = jax.lax.while_loop(cond, restart, state)
    theta, y = ritz(t)
    # -S is negative definite when sigma is below every eigenvalue: a Ritz value of T above
    # rounding level is an eigenvalue below sigma, which the wanted set would then miss
    indefinite = theta[-1] > 100 * m_rows * eps * jnp.max(jnp.abs(theta))
    return theta[: cfg.p], _mm(y[:, : cfg.p].T.astype(dtype), q[:m_rows]), it, indefinite


def _shift_invert_solve(op_a, solve, cfg: _Config):
    """``(theta, x, ax, bx, res, it, conv)`` as :func:`eigjax._partial._lobpcg._lobpcg_solve`
    returns them (``B = I``): the ``p`` Ritz pairs of ``op_a`` on the block that thick-restart
    Lanczos on ``-solve`` converged to, ascending, vectors as orthonormal rows."""
    x0 = _start_block((1, cfg.n), cfg.dtype, cfg.seed)
    lo, hi, _ = _lanczos_bounds(op_a, x0, min(_LANCZOS_STEPS, cfg.n))  # the bound only scales tol
    anorm = jnp.maximum(jnp.abs(lo), jnp.abs(hi))

    def rayleigh_ritz(x):
        ax = op_a(x)
        theta, z = _eigh_small(_hermitian_small(_coefficients(ax, x).T))
        zt = z.T.astype(cfg.dtype)
        x, ax = _mm(zt, x), _mm(zt, ax)
        return theta, x, ax, _row_norms(ax - theta[:, None].astype(cfg.dtype) * x)

    def converged(theta, res):
        return jnp.all(res[: cfg.k] <= cfg.tol * jnp.maximum(anorm, jnp.max(jnp.abs(theta))))

    def accept(x, theta_s):
        """The wanted Ritz vectors' residuals with A (the test that decides `converged`; or a
        NaN there) end the restarts early: k products with A per restart, much cheaper than the solves.
        Also ``||A|| / (||A|| + |sigma|)`` (at least 1e-3), ``sigma = lambda_1 + 1 / theta_1``
        from the smallest Ritz values of A and of ``-S = -(A - sigma I)^{-1}``."""
        theta, _, _, res = rayleigh_ritz(x)
        sigma = theta[0] + 1 / jnp.where(theta_s != 0, theta_s, -1)
        ratio = jnp.clip(anorm / (anorm + jnp.abs(sigma)), 1e-3, 1.0)
        return converged(theta, res) | _poisoned(res), jnp.nan_to_num(ratio, nan=1e-3)  # (a NaN in A: stop)

    _, x, it, indefinite = _thick_restart_lanczos(lambda v: -solve(v), accept, cfg)
    theta, x, ax, res = rayleigh_ritz(x)
    # An eigenvalue of A below the block (sigma placed above it: S is indefinite, or the
    # Lanczos run on A found a Ritz value below the block's lowest eigenvalue interval)
    # breaks the contract: converged pairs would be genuine eigenpairs but not the wanted
    # ones, a silently wrong answer, so they become NaN (unconverged ones are reported as
    # they are, with converged False).
    slack = 100 * math.sqrt(_LANCZOS_STEPS) * float(jnp.finfo(jnp.finfo(cfg.dtype).dtype).eps) * anorm
    missed = jnp.logical_or(indefinite, lo < theta[0] - res[0] - slack)
    conv = converged(theta, res)
    nan = lambda z: jnp.where(jnp.logical_and(missed, conv), jnp.nan, z)
    theta, x, ax, res = nan(theta), nan(x), nan(ax), nan(res)
    return theta, x, ax, x, res, it, jnp.logical_and(conv, jnp.logical_not(missed))
