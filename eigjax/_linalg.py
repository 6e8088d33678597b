"""Matrix helpers shared by the decompositions, their derivative rules and diagnostics.

Every matrix argument is ``(..., n, n)``; the helpers act on the last two axes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def _norm(x: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
    """Euclidean (Frobenius for two axes) norm over ``axis``, scaled by the largest entry
    first: ``jnp.linalg.norm`` squares the entries, so a matrix of norm 1e-160 read 0 and
    one of 1e155 read inf (float64; 1e-20 and 1e19 in float32), and the tolerances built
    from it cut every pair or none. Zero where ``x`` is zero; NaN if ``x`` holds inf/NaN."""
    big = jnp.max(jnp.abs(x), axis=axis, keepdims=True, initial=0.0)
    unit = x / jnp.where(big > 0, big, 1.0).astype(x.dtype)
    return jnp.squeeze(big, axis=axis) * jnp.linalg.norm(unit, axis=axis)


def _h(x: jax.Array) -> jax.Array:
    """Conjugate transpose of the last two axes."""
    return jnp.conj(jnp.swapaxes(x, -1, -2))


def _mm(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x @ y`` at ``precision=HIGHEST`` (the derivative rules' products)."""
    return jnp.matmul(x, y, precision=HIGHEST)


def _hermitian_part(a: jax.Array) -> jax.Array:
    """``(a + a^H)/2``, computed as ``a/2 + a^H/2``.

    Not ``(a + a^H)/2``: entries above half the largest float would overflow the sum
    (``eigvalsh([[1, 1e308], [1e308, 1]])`` gave ``[1, 1]``). Halving is exact.
    """
    return a / 2 + _h(a) / 2


def _all_finite(*mats: jax.Array) -> jax.Array:
    """Per matrix of the batch: True when every entry of every ``mats`` is finite."""
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(m), axis=(-2, -1)) for m in mats])


def _nan_unless(finite: jax.Array, w: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """NaN eigenvalues and eigenvectors for the matrices whose input was not finite.

    LAPACK's result for such input is undefined: ``syevd`` returned finite eigenvalues
    for a NaN on the diagonal and identity eigenvectors for an inf. One reduction over
    the input, O(n^2) against the solver's O(n^3).
    """
    nan = jnp.asarray(jnp.nan, w.dtype)
    w = jnp.where(finite[..., None], w, nan)
    v = jnp.where(finite[..., None, None], v, nan.astype(v.dtype))
    return w, v
