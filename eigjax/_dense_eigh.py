"""The dense Hermitian eigensolver behind eigh, eigvalsh and eigh_generalized (the forward).

Real float32/float64 input with ``2 <= n <= 16`` goes to :mod:`eigjax._small_dispatch`,
which picks its solver when the program is lowered, for the platform it is lowered for
(the native CPU kernel, the pure-JAX Jacobi solvers, or the backend's solver). Everything
else (larger n, complex Hermitian input) uses the backend's solver (LAPACK
``syevd``/``heevd`` on the CPU, cuSOLVER on the GPU), which reads the lower triangle.

A module of its own so that :mod:`eigjax._eigh` (the derivative rules) and
:mod:`eigjax._eigvals_only` (the values-only forward, which uses this solver for small
batches) both import it without importing each other.
"""

from __future__ import annotations

import jax

from . import _small_dispatch
from ._hooks import gauge_hook
from ._linalg import _all_finite, _hermitian_part, _nan_unless


def _eigh_solve(a: jax.Array, symmetrize: bool = False) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (ascending, real) and eigenvectors of the Hermitian ``a`` (or of the
    Hermitian part of ``a`` with ``symmetrize``), all NaN for a matrix with a NaN or inf
    entry (see the module docstring for the solvers)."""
    if _small_dispatch.handles(a.shape[-1], a.dtype):
        return _small_dispatch.small_eigh(a, symmetrize)
    finite = _all_finite(a)
    if symmetrize:
        a = _hermitian_part(a)
    v, w = jax.lax.linalg.eigh(a, lower=True, symmetrize_input=False)
    return _nan_unless(finite, w, v)


def _forward(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(w, v)`` of the Hermitian ``a`` (lower triangle)."""
    return _eigh_solve(a, False)


def _forward_sym(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(w, v)`` of the Hermitian part of ``a``."""
    return _eigh_solve(a, True)


# The forward solvers of eigh/eigvalsh, hook points of eigjax.random_gauge (eigjax._hooks).
_eigh_forward = gauge_hook("eigh", _forward, kind="hermitian")
_eigh_forward_sym = gauge_hook("eigh_sym", _forward_sym, kind="hermitian")
