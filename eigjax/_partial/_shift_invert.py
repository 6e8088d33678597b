"""Forward, ``method="shift_invert"``: block Krylov on a user's solve, then Rayleigh-Ritz with ``A``.

The user's ``precond`` is here an exact inverse ``S = (A - sigma I)^{-1}`` (of ``sigma I - A``
for ``which="largest"``), e.g. a sparse factorisation built outside JAX, with ``sigma``
below the wanted eigenvalues. ``S`` has the eigenvectors of ``A`` and eigenvalues
``theta = 1 / (lambda - sigma)``, so the wanted eigenvalues, nearest ``sigma``, become the
largest ``theta`` and are well separated from the rest: restarted block Krylov
(:mod:`eigjax._partial._krylov`) on ``-S`` finds them in few restarts, as ARPACK's
shift-invert mode does. ``sigma`` itself is never needed: a Rayleigh-Ritz step with ``A`` on
the block gives the eigenvalues and eigenvectors, and their residuals ``||A v - w v||``
decide ``converged`` against ``tol * ||A||`` (``||A||`` from a short Lanczos run), so an
inexact solve shows as ``converged = False``, never as a silently accepted answer.

The derivative is the LOBPCG path's (:mod:`eigjax._partial._rule`, ``_general_rule``), whose
projected CG solve is preconditioned by the same ``S``: for the smallest eigenvalues an
excellent preconditioner of ``A - w_i I`` on the complement of the block.
"""

from __future__ import annotations

import jax.numpy as jnp

from .._linalg import _mm
from ._blocks import _coefficients, _eigh_small, _hermitian_small, _orthonormal_rows, _row_norms
from ._chebyshev import _lanczos_bounds
from ._krylov import _krylov_solve
from ._types import _LANCZOS_STEPS, _Config


def _shift_invert_solve(op_a, solve, x0, cfg: _Config):
    """``(theta, x, ax, bx, res, it, conv)`` as :func:`eigjax._partial._lobpcg._lobpcg_solve`
    returns them (``B = I``): the ``p`` Ritz pairs of ``op_a`` on the block that Krylov on
    ``-solve`` converged to, ascending, vectors as orthonormal rows."""
    _, x, _, _, it, _, _ = _krylov_solve(lambda v: -solve(v), _orthonormal_rows(x0), cfg, unroll=True)
    ax = op_a(x)
    theta, z = _eigh_small(_hermitian_small(_coefficients(ax, x).T))
    zt = z.T.astype(cfg.dtype)
    x, ax = _mm(zt, x), _mm(zt, ax)
    res = _row_norms(ax - theta[:, None].astype(cfg.dtype) * x)
    lo, hi, _ = _lanczos_bounds(op_a, x0[:1], min(_LANCZOS_STEPS, cfg.n))  # one row: the bound only scales tol
    anorm = jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), jnp.max(jnp.abs(theta)))
    conv = jnp.all(res[: cfg.k] <= cfg.tol * anorm)
    return theta, x, ax, x, res, it, conv
