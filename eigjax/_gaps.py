"""The eigengap matrix ``F`` shared by every eigenvector derivative rule.

Perturbation theory (Giles 2008, eq. for ``dU``; Kato 1995, ch. II) gives the
eigenvector derivative ``dV = V (F o P)`` with ``P = V^{-1} dA V`` and

    F_ij = 1 / (w_j - w_i)        (i != j),      F_ii = 0.

``F`` is undefined when ``w_i = w_j``. For a pair inside one degenerate eigenspace
the individual eigenvectors are not differentiable, but every loss that is
invariant to the choice of basis inside that eigenspace is, and its derivative is
obtained by setting ``F_ij = 0`` for the pair: the rotation inside the eigenspace
that ``F_ij`` would describe does not change such a loss (docs/derivatives.md).

Two regularisations are offered:

* the **degenerate cut** (default): ``F_ij = 0`` when ``|w_i - w_j| <= tol``;
* **Lorentzian broadening** ``F_ij = d / (d^2 + eps)`` with ``d = w_j - w_i``,
  which is smooth in ``w`` but biased by ``O(eps / d^3)`` for every pair.

The default ``tol`` is ``4 * max(n, 8) * eps(dtype) * max_i |w_i|``: a computed
eigenvalue of a Hermitian matrix carries an error of order ``eps * ||A||_2``
(Wilkinson), so pairs closer than that cannot be told apart from a true multiple
eigenvalue. Measured (tests/library/test_properties.py and a 150-draw study of exactly
degenerate ``Q diag(1,1,2,3,3,3,5,5) Q^H``): LAPACK splits an exact multiple
eigenvalue by up to about ``8 eps max|w|`` already at n = 6..8, so the bare
``n eps max|w|`` was too tight (a split pair then got ``F ~ 1e14`` and a wrong
gradient). The factor 4 is the margin; ``max(n, 8)`` keeps small matrices safe.

All constructions use the "double where" pattern so that no NaN or inf reaches an
unselected branch, in the primal or in any derivative of it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def default_tolerance(w: jax.Array, n: int) -> jax.Array:
    """Default degeneracy tolerance, shape ``w.shape[:-1] + (1, 1)``.

    ``tol = 4 * max(n, 8) * eps * max_i |w_i|`` in the real dtype of ``w``; it carries
    no gradient (it only selects which formula applies).
    """
    w = jax.lax.stop_gradient(w)
    eps = jnp.finfo(w.dtype).eps  # finfo of a complex dtype is its real part's
    scale = jnp.max(jnp.abs(w), axis=-1, keepdims=True, initial=0.0)[..., None]  # n = 0 too
    return (4 * max(n, 8) * eps) * scale


def gap_matrix(w: jax.Array) -> jax.Array:
    """``D_ij = w_j - w_i`` for eigenvalues ``w`` of shape ``(..., n)``."""
    return w[..., None, :] - w[..., :, None]


def inverse_gaps(
    w: jax.Array,
    *,
    degenerate_tol: float | None = None,
    broadening: float | None = None,
) -> jax.Array:
    """The matrix ``F`` of inverse eigengaps, zero on the diagonal.

    Args:
      w: eigenvalues, shape ``(..., n)``, real or complex.
      degenerate_tol: pairs with ``|w_i - w_j| <= degenerate_tol`` get ``F_ij = 0``.
        ``None`` uses :func:`default_tolerance`.
      broadening: if given, use Lorentzian broadening ``d / (|d|^2 + broadening)``
        for every pair instead of the degenerate cut.

    Returns:
      ``F`` with the shape ``(..., n, n)`` and dtype of ``w``.
    """
    n = w.shape[-1]
    d = gap_matrix(w)
    if broadening is not None:
        # conj(d) / (|d|^2 + eps): equals d / (d^2 + eps) for real d, and is the
        # natural complex extension (-> 1/d as eps -> 0). Zero on the diagonal.
        denom = jnp.real(d * jnp.conj(d)) + broadening
        return jnp.conj(d) / denom
    if degenerate_tol is None:
        tol = default_tolerance(w, n)
    else:
        tol = jnp.asarray(degenerate_tol, dtype=jnp.abs(w).dtype)
    # |d| <= tol also covers the diagonal (d = 0) and an all-zero spectrum.
    degenerate = jnp.abs(jax.lax.stop_gradient(d)) <= tol
    safe_d = jnp.where(degenerate, jnp.ones_like(d), d)
    return jnp.where(degenerate, jnp.zeros_like(d), 1.0 / safe_d)


def nan_on_cut(f: jax.Array) -> jax.Array:
    """``F`` with NaN on its cut pairs (off-diagonal zeros of :func:`inverse_gaps`).

    The rule that second and higher derivatives reach (eigjax._eigh._eigh_inner and its
    twins in _eig, _partial): at a cut pair the cut ``F_ij = 0`` is exact for first
    derivatives only, so what differentiates it again gets NaN, not a wrong number.
    """
    n = f.shape[-1]
    return jnp.where((f == 0) & jnp.broadcast_to(~jnp.eye(n, dtype=bool), f.shape), jnp.nan, f)
