"""The result type, the static configuration and the solver constants of :func:`eigjax.eigh_partial`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

_FN = "eigjax.eigh_partial"
_METHODS = ("auto", "chebyshev", "krylov", "lobpcg", "shift_invert")
_LANCZOS_STEPS = 20
_MIN_DEGREE = 6
_MAX_DEGREE = 1000
_DEGREE_GROWTH = 1.5  # a filter's degree is at most this times the previous one
_MAX_PRECOND_STEPS = 64


class PartialEighResult(NamedTuple):
    """Result of :func:`eigh_partial`.

    Attributes:
      eigenvalues: the ``k`` wanted eigenvalues, ascending, shape ``(k,)``.
      eigenvectors: orthonormal eigenvectors as columns, shape ``(n, k)``
        (``B``-orthonormal, ``V^H B V = I``, for a pencil).
      residual_norms: ``||A v_i - w_i v_i||`` (``||A v_i - w_i B v_i||``), shape ``(k,)``
        (no derivative).
      iterations: Chebyshev filter iterations, block Krylov restarts, thick restarts of
        the shift-invert method's Lanczos or LOBPCG iterations used (0 for the dense path).
      converged: whether all ``k`` residuals met ``tol * ||A||`` (LOBPCG: ``tol * s *
        ||B v_i||``, ``s`` the largest Ritz value in modulus seen; shift-invert: ``||A||``
        from a short Lanczos run).
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
    method: str
    layout: str
    degenerate_check: bool | str = True
    width: int = 1  # shift-invert: the Krylov block's width (cfg.p: the Ritz pairs returned)

    @property
    def cols(self) -> bool:
        """Whether the hot loops run on column blocks ``(n, p)``."""
        return self.layout == "columns"
