"""Preconditioners of the LOBPCG method and of the derivative's CG: the user's, Jacobi, polynomial.

Each is a pair ``(prm, apply)`` with ``apply(prm, r)`` mapping the rows ``r`` (``(c, n)``) of a
block to rows, an approximation of ``(sign A - sigma B)^{-1} r`` that is Hermitian positive
definite (``sign = -1`` for the largest eigenvalues). ``prm`` carries no derivative (a
preconditioner only accelerates; the results do not depend on it).

* user: ``precond(precond_params, x)`` for one vector ``x`` (``vmap``-ed over rows);
* ``"jacobi"``: ``r -> r / max(|sign a_ii|, 1e-8 max_j |a_jj|)``, the diagonal of a dense or
  BCOO ``A`` (a matrix-free operator has none to read);
* ``"polynomial"``: ``d`` steps of Chebyshev iteration for ``(sign A - sigma) z = r`` from
  ``z = 0`` on the interval ``[h / d^2, h]``, ``sigma`` the smallest and ``sigma + h`` an upper
  bound of the spectrum of ``sign A`` (20 Lanczos steps from 4 vectors; ``theta_max + beta``,
  Zhou & Li 2011; ``B`` is ignored). Its polynomial ``q(t) ~ 1/t`` on the interval is
  positive for every ``t < h (1 + 1/d^2)`` (see
  :func:`eigjax._partial._cg._chebyshev_preconditioner`), so it is positive definite
  whatever the sign of the spectrum: a smoother that damps the upper part of the spectrum by
  up to ``d^2`` relative to the lower part. ``sigma`` is a Ritz value, so it lies at or
  slightly above the smallest eigenvalue: the modes below it get ``q(t) ~ T_d(1 + |t| ...)``,
  large and positive, a shift-invert-like boost of the lowest (wanted) modes. Measured on
  the membrane pencil (bench_partial --pencil, n = 3,481): 14 LOBPCG iterations; with a
  certified lower bound for ``sigma`` (Lanczos on ``-A``) 66. The boost grows with ``d``:
  degree 24 (17 instead of 34 iterations at n = 19,321) made a ``which="largest"`` test
  pencil stall, so the degree stays 12.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._cg import _chebyshev_preconditioner

POLYNOMIAL_DEGREE = 12


def _user_apply(prm, r, *, fn):
    return jax.vmap(fn, in_axes=(None, 0))(prm, r)


def jacobi_apply(prm, r):
    return prm[None, :].astype(r.dtype) * r


def jacobi_params(diag, sign: float):
    d = jnp.abs(sign * jnp.real(diag))
    d = jnp.maximum(d, 1e-8 * jnp.max(d))
    return jax.lax.stop_gradient(1.0 / jnp.where(d > 0, d, 1.0))


def _polynomial_apply(prm, r, *, matmat, sign, degree):
    a_prm, sigma, width = prm
    hi_r = jnp.full((r.shape[0],), width)
    lo_r = hi_r / degree**2
    shifted = lambda x: sign * matmat(a_prm, x) - sigma.astype(x.dtype) * x
    return _chebyshev_preconditioner(shifted, lambda x: x, lo_r, hi_r, degree, False)(r)


def polynomial(matmat, sign: float, degree: int = POLYNOMIAL_DEGREE):
    return functools.partial(_polynomial_apply, matmat=matmat, sign=sign, degree=degree)


def user(fn):
    return functools.partial(_user_apply, fn=fn)
