"""Forward, ``method="shift_invert"``: thick-restart block Lanczos on a user's solve, then Rayleigh-Ritz with ``A``.

The user's ``precond`` is here an exact inverse ``S = (A - sigma I)^{-1}`` (of ``sigma I - A``
for ``which="largest"``), e.g. a sparse factorisation built outside JAX, with ``sigma``
below the wanted eigenvalues. For a pencil ``A v = lambda B v`` it is ``(A - sigma B)^{-1}``
(``(sigma B - A)^{-1}`` for the largest)
and the iteration runs on ``S B``, self-adjoint in the ``B`` inner product ``<x, y>_B = x^H
B y``, with a ``B``-orthonormal basis (ARPACK's generalized shift-invert mode, ``bmat='G'``,
mode 3): everything below holds with that inner product in place of the Euclidean one; the
final Rayleigh-Ritz step is on the small pencil ``(X A X^H, X B X^H)`` and ``converged``
asks for a backward error ``||A x - w B x|| / ((||A|| + |w| ||B||) ||x||) <= tol``. Each
block step then costs a solve and two products with ``B`` (``B W`` for the norms, ``B``
times the new block). ``S`` has the eigenvectors of ``A`` and eigenvalues
``theta = 1 / (lambda - sigma)``, so the wanted eigenvalues, nearest ``sigma``, become the
largest ``theta`` and are well separated from the rest. ``sigma`` itself is never needed: a
Rayleigh-Ritz step with ``A`` on the final block gives the eigenvalues and eigenvectors, and
their residuals ``||A v - w v||`` decide ``converged`` against ``tol * ||A||`` (``||A||``
from a short Lanczos run), so an inexact solve shows as ``converged = False``, never as a
silently accepted answer. A ``sigma`` inside the spectrum (eigenvalues below it) would
give genuine eigenpairs that are not the wanted ones; it shows as a positive Ritz value of
``-S`` (``S`` indefinite) or as a Ritz value of ``A``'s Lanczos run below the block, and the
result is then NaN with ``converged`` False (detected, not guaranteed: an eigenvalue below
``sigma`` that neither Lanczos run sees passes; for a pencil only the first test applies).

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
    _small_pencil,
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


def _b_orthonormal_rows(r, op_b):
    """Rows spanning ``r``, orthonormal in the ``B`` inner product (``r B r^H = I``), and ``B``
    applied to them: SVQB twice (Stathopoulos & Wu 2002) with explicit products with ``B``, for
    the rare repair branch (full-rank ``r``)."""
    br = op_b(r)
    for _ in range(2):
        lam, u = _eigh_small(_hermitian_small(_coefficients(br, r).T))  # G_ij = r_i^H B r_j
        m = (u / jnp.sqrt(jnp.maximum(lam, jnp.finfo(lam.dtype).tiny))[None, :].astype(u.dtype)).T
        r = _mm(m, r)
        br = op_b(r)
    return r, br


def _thick_restart_lanczos(op, accept, cfg: _Config, op_b=None):
    """``(theta, x, bx, it, indefinite)``: the ``p`` smallest Ritz values of ``op`` (ascending),
    their vectors as rows orthonormal in the ``B`` inner product (``B = op_b``, the identity if
    None; ``op`` is then self-adjoint in it) and ``B`` applied to them, the restarts used (see
    the module docstring), and whether a Ritz value of ``op`` is positive (beyond rounding).
    ``op`` receives ``B`` applied to the block (``-S B v = op(B v)``). Restarts stop when
    ``accept(x, bx, theta_1)`` (returning a flag and ``||A|| / ||A - sigma B||``) holds for the
    ``k`` wanted Ritz vectors (rows ``x``), or when their residuals with ``op`` are below
    ``tol / 2`` times that ratio of their Ritz values."""
    b, m_rows, keep = _shape(cfg)
    n, k, dtype = cfg.n, cfg.k, cfg.dtype
    eps = float(jnp.finfo(jnp.finfo(dtype).dtype).eps)
    spare = _start_block((m_rows // b + 1, b, n), dtype, cfg.seed + 2)  # rows for a breakdown

    def project(w, q, bq):
        c = _coefficients(w, bq)  # c[r, i] = q_i^H B w_r
        return w - _mm(c, q), c

    def step(s, carry):
        """Block step at row ``s``: columns ``s:s+b`` of ``T``, the next block at ``s + b``.

        ``W = op(B V_s)`` is projected twice against every row of ``q`` (rows not built yet
        are zero and add nothing): ``W -> W1 -> W2``. A row whose second projection removed
        half of it (``|W2_i| <= |W1_i| / 2``: what the first left was rounding inside the
        span, as in ARPACK's test) or whose QR diagonal is at rounding level (``|R_ii| <=
        100 eps |W|``) is a breakdown: replaced by a fixed pseudo-random row. A QR diagonal
        below ``1e-3 |W2_i|`` (a row nearly in the span of the block's others) leaves the QR
        factor up to ``eps / 1e-3`` out of the orthogonal complement of ``q``: projected once
        more. Both are rare and taken in a ``lax.cond``; what is dropped is at rounding level
        of ``|W|``, and the coupling ``G`` is computed from ``W2`` against the rows kept.
        With ``B``: norms in the ``B`` inner product (``B W`` once, then updated with the
        projections), the QR factor from the Cholesky factor of the block's Gram matrix
        ``W2 B W2^H``, and ``B`` applied to the next block explicitly.
        """
        q, bq, t, _ = carry
        bqs = q if bq is None else bq
        w = op(jax.lax.dynamic_slice_in_dim(bqs, s, b))
        w1, c1 = project(w, q, bqs)
        w2, c2 = project(w1, q, bqs)
        if op_b is None:
            qr_q, qr_r = jnp.linalg.qr(w2.T)
            r_ii, n0, n1, n2 = (jnp.abs(jnp.diagonal(qr_r)), *map(_row_norms, (w, w1, w2)))
            fast = lambda _: (qr_q.T, None)  # noqa: E731
        else:
            bw = op_b(w)
            bw1 = bw - _mm(c1, bqs)
            bw2 = bw1 - _mm(c2, bqs)
            bnorm = lambda x, bx: jnp.sqrt(jnp.abs(jnp.real(jnp.sum(jnp.conj(x) * bx, axis=-1))))  # noqa: E731
            n0, n1, n2 = bnorm(w, bw), bnorm(w1, bw1), bnorm(w2, bw2)
            gram = _hermitian_small(_coefficients(bw2, w2))  # conj(G), G_ir = w2_i^H B w2_r
            # shifted by eps tr(G): a row dependent on the block's others shows as its own
            # small pivot instead of failing the whole factorisation (found by review)
            shift = float(eps) * jnp.real(jnp.trace(gram)) / b
            chol = jnp.linalg.cholesky(gram + shift.astype(gram.dtype) * jnp.eye(b, dtype=gram.dtype))
            # NaN where it still is not positive definite: then a breakdown, unless the
            # block itself is NaN (a NaN solve: left to stop the iteration)
            r_ii = jnp.abs(jnp.diagonal(chol))
            r_ii = jnp.where(jnp.isnan(r_ii) & jnp.all(jnp.isfinite(n2)), 0, r_ii)
            rows = jax.scipy.linalg.solve_triangular(chol, w2, lower=True)  # L^-1 W2: B-orthonormal
            fast = lambda _: (rows, op_b(rows))  # noqa: E731  # pyright: ignore[reportOptionalCall]
        lost = jnp.logical_or(n2 <= n1 / 2, r_ii <= 100 * eps * jnp.max(n0))

        def repair(_):
            r = jnp.where(lost[:, None], spare[s // b], w2)
            for _ in range(2):
                r = project(r, q, bqs)[0]
            if op_b is None:
                r = _orthonormal_rows(r)
                return _orthonormal_rows(project(r, q, bqs)[0]), None
            r = _b_orthonormal_rows(r, op_b)[0]
            return _b_orthonormal_rows(project(r, q, bqs)[0], op_b)

        suspect = jnp.logical_or(jnp.any(lost), jnp.any(r_ii < 1e-3 * n2))
        nxt, bnxt = jax.lax.cond(suspect, repair, fast, None)
        c = c1 + c2
        t = jax.lax.dynamic_update_slice(t, c.T[:m_rows], (0, s))
        q = jax.lax.dynamic_update_slice(q, nxt, (s + b, 0))
        if bq is not None:
            bq = jax.lax.dynamic_update_slice(bq, bnxt, (s + b, 0))
        # the coupling: g[i, r] = nxt_i^H B w2_r
        return q, bq, t, _coefficients(w2, nxt if bnxt is None else bnxt).T

    def fill(q, bq, t, start):
        steps = (m_rows - start) // b
        init = (q, bq, t, jnp.zeros((b, b), dtype))
        return jax.lax.fori_loop(0, steps, lambda i, c: step(start + i * b, c), init)

    def ritz(t):
        upper = jnp.arange(m_rows)[:, None] <= jnp.arange(m_rows)[None, :]
        u = jnp.where(upper, t, 0)
        return _eigh_small(_hermitian_small(u + jnp.conj(jnp.triu(u, 1).T)))

    def vectors(y, q, bq, count):
        yt = y[:, :count].T.astype(dtype)
        return _mm(yt, q[:m_rows]), (None if bq is None else _mm(yt, bq[:m_rows]))

    def done(q, bq, t, g):
        theta, y = ritz(t)
        res = _row_norms(_mm(g, y[m_rows - b :]).T)  # ||G y_i||
        x, bx = vectors(y, q, bq, k)
        ok, ratio = accept(x, x if bx is None else bx, theta[0])
        # ||A x - mu x|| <= ||A - sigma|| ||r|| / |theta|: ratio = ||A|| / ||A - sigma||,
        # kept >= 1e-3 and the threshold >= 10 eps (an inexact solve must still stop)
        small = res[:k] <= jnp.maximum(cfg.tol / 2 * ratio, 10 * eps) * jnp.abs(theta[:k])
        return jnp.logical_or(jnp.all(small) | _poisoned(res), ok)

    def restart(state):
        q, bq, t, g, it, _ = state
        theta, y = ritz(t)
        kept, bkept = vectors(y, q, bq, keep)
        q = jnp.zeros_like(q).at[:keep].set(kept).at[keep : keep + b].set(q[m_rows:])
        if bq is not None:
            bq = jnp.zeros_like(bq).at[:keep].set(bkept).at[keep : keep + b].set(bq[m_rows:])
        t = jnp.zeros_like(t).at[jnp.arange(keep), jnp.arange(keep)].set(theta[:keep].astype(dtype))
        q, bq, t, g = fill(q, bq, t, keep)
        return q, bq, t, g, it + 1, done(q, bq, t, g)

    x0 = _start_block((b, n), dtype, cfg.seed)
    if op_b is None:
        q0, bq = _orthonormal_rows(x0), None
    else:
        q0, bq0 = _b_orthonormal_rows(x0, op_b)
        bq = jnp.zeros((m_rows + b, n), dtype).at[:b].set(bq0)
    q = jnp.zeros((m_rows + b, n), dtype).at[:b].set(q0)
    q, bq, t, g = fill(q, bq, jnp.zeros((m_rows, m_rows), dtype), 0)
    state = (q, bq, t, g, jnp.zeros((), jnp.int32), done(q, bq, t, g))
    cond = lambda s: jnp.logical_and(s[4] < cfg.max_restarts, jnp.logical_not(s[5]))
    q, bq, t, g, it, _ = jax.lax.while_loop(cond, restart, state)
    theta, y = ritz(t)
    # -S B is negative definite (in the B inner product) when sigma is below every
    # eigenvalue: a Ritz value of T above rounding level is an eigenvalue below sigma,
    # which the wanted set would then miss
    indefinite = theta[-1] > 100 * m_rows * eps * jnp.max(jnp.abs(theta))
    x, bx = vectors(y, q, bq, cfg.p)
    return theta[: cfg.p], x, x if bx is None else bx, it, indefinite


def _shift_invert_solve(op_a, op_b, solve, cfg: _Config):
    """``(theta, x, ax, bx, res, it, conv)`` as :func:`eigjax._partial._lobpcg._lobpcg_solve`
    returns them: the ``p`` Ritz pairs of the pencil ``(op_a, op_b)`` (``B = I`` if ``op_b``
    is None) on the block that thick-restart Lanczos on ``-solve B`` converged to, ascending,
    vectors as B-orthonormal rows."""
    x0 = _start_block((1, cfg.n), cfg.dtype, cfg.seed)
    steps = min(_LANCZOS_STEPS, cfg.n)
    lo, hi, _ = _lanczos_bounds(op_a, x0, steps)  # the bounds only scale tol
    anorm = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    bnorm = 1.0 if op_b is None else _lanczos_bounds(op_b, x0, steps)[1]

    def rayleigh_ritz(x, bx):
        ax = op_a(x)
        h = _hermitian_small(_coefficients(ax, x).T)
        if op_b is None:
            theta, z = _eigh_small(h)
        else:
            theta, z = _small_pencil(h, _hermitian_small(_coefficients(bx, x).T))
        zt = z.T.astype(cfg.dtype)
        x, ax = _mm(zt, x), _mm(zt, ax)
        bx = x if op_b is None else _mm(zt, bx)
        return theta, x, ax, bx, _row_norms(ax - theta[:, None].astype(cfg.dtype) * bx)

    def converged(theta, x, res):
        if op_b is None:
            return jnp.all(res[: cfg.k] <= cfg.tol * jnp.maximum(anorm, jnp.max(jnp.abs(theta))))
        # backward error of the pencil's pair: ||r|| / ((||A|| + |theta| ||B||) ||x||)
        scale = (anorm + jnp.abs(theta) * bnorm) * _row_norms(x)
        return jnp.all((res <= cfg.tol * scale)[: cfg.k])

    def accept(x, bx, theta_s):
        """The wanted Ritz vectors' residuals with A (the test that decides `converged`; or a
        NaN there) end the restarts early: k products with A per restart, much cheaper than the solves.
        Also ``||A|| / (||A|| + |sigma| ||B||)`` (at least 1e-3), ``sigma = lambda_1 + 1 / theta_1``
        from the smallest Ritz values of A and of ``-S B = -(A - sigma B)^{-1} B``."""
        theta, x, _, _, res = rayleigh_ritz(x, bx)
        sigma = theta[0] + 1 / jnp.where(theta_s != 0, theta_s, -1)
        ratio = jnp.clip(anorm / (anorm + jnp.abs(sigma) * bnorm), 1e-3, 1.0)
        return converged(theta, x, res) | _poisoned(res), jnp.nan_to_num(ratio, nan=1e-3)  # (a NaN in A: stop)

    _, x, bx, it, indefinite = _thick_restart_lanczos(lambda v: -solve(v), accept, cfg, op_b)
    theta, x, ax, bx, res = rayleigh_ritz(x, bx)
    # An eigenvalue below the block (sigma placed above it: S B is indefinite, or, for a
    # standard problem, the Lanczos run on A found a Ritz value below the block's lowest
    # eigenvalue interval) breaks the contract: converged pairs would be genuine eigenpairs
    # but not the wanted ones, a silently wrong answer, so they become NaN (unconverged ones
    # are reported as they are, with converged False).
    slack = 100 * math.sqrt(_LANCZOS_STEPS) * float(jnp.finfo(jnp.finfo(cfg.dtype).dtype).eps) * anorm
    missed = indefinite if op_b is not None else jnp.logical_or(indefinite, lo < theta[0] - res[0] - slack)
    conv = converged(theta, x, res)
    nan = lambda z: jnp.where(jnp.logical_and(missed, conv), jnp.nan, z)
    theta, x, ax, bx, res = nan(theta), nan(x), nan(ax), nan(bx), nan(res)
    return theta, x, ax, bx, res, it, jnp.logical_and(conv, jnp.logical_not(missed))
