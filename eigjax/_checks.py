"""Trace-time input validation shared by every public function.

Everything here runs on shapes and dtypes only, so it raises at trace time, under
``jit`` exactly as outside it. Messages name the function, the argument, what was
expected and what arrived.
"""

from __future__ import annotations

import typing
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np


def as_square_matrix(a, *, name: str = "a", fn: str) -> jax.Array:
    """Return ``a`` as an inexact JAX array of shape ``(..., n, n)``.

    Integer and boolean input is promoted to the default float dtype, as
    ``jnp.linalg`` does. Python lists, strings and other non-arrays raise
    ``TypeError`` (wrap them with ``jnp.asarray`` first), matching ``jnp``'s own
    refusal of implicit list conversion.
    """
    if not isinstance(a, (jax.Array, np.ndarray, np.generic)):
        raise TypeError(
            f"{fn}: argument `{name}` must be a JAX or NumPy array of shape (..., n, n); "
            f"got an object of type {type(a).__name__}. Wrap it with jnp.asarray(...) first."
        )
    dtype = np.dtype(a.dtype)
    if dtype in _LOW_PRECISION:
        raise TypeError(
            f"{fn}: argument `{name}` has dtype {dtype}, which has no eigensolver in XLA or "
            f"LAPACK; use float32 or float64 (e.g. {name}.astype(jnp.float32))."
        )
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(
            f"{fn}: argument `{name}` must have a numeric dtype "
            f"(float32, float64, complex64 or complex128); got dtype {dtype}."
        )
    if a.ndim < 2:
        raise ValueError(
            f"{fn}: argument `{name}` must have shape (..., n, n) with at least 2 dimensions; "
            f"got shape {tuple(a.shape)} ({a.ndim} dimension{'s' if a.ndim != 1 else ''})."
        )
    shape: tuple[int, ...] = tuple(a.shape)  # (np.generic: shape () was refused above)
    if shape[-1] != shape[-2]:
        raise ValueError(
            f"{fn}: argument `{name}` must be square in its last two dimensions, shape (..., n, n); "
            f"got shape {tuple(a.shape)}."
        )
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        a = a.astype(jnp.result_type(float))
    return a


def check_same_shape(a: jax.Array, b: jax.Array, *, names: tuple[str, str], fn: str) -> None:
    """Raise ``ValueError`` unless two matrices have identical shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: arguments `{names[0]}` and `{names[1]}` must have the same shape; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}."
        )


def check_nonnegative_float(value, *, name: str, fn: str, allow_none: bool = True):
    """Validate an optional non-negative Python float option (e.g. a tolerance)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(
            f"{fn}: option `{name}` must be a non-negative Python float"
            f"{' or None' if allow_none else ''}; got {value!r} of type {type(value).__name__}."
        )
    value = float(value)
    if not (value >= 0.0 and np.isfinite(value)):
        raise ValueError(f"{fn}: option `{name}` must be a finite, non-negative float; got {value!r}.")
    return value


_LOW_PRECISION = {np.dtype(np.float16), np.dtype(jnp.bfloat16)}


def check_bool(value, *, name: str, fn: str) -> bool:
    """Validate a boolean option: a Python or NumPy bool, not a truthy string or number."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: option `{name}` must be True or False; got {value!r} of type {type(value).__name__}.")
    return bool(value)


@typing.overload
def check_int(value, *, name: str, fn: str, minimum: int | None = None, allow_none: Literal[False] = False) -> int: ...
@typing.overload
def check_int(value, *, name: str, fn: str, minimum: int | None = None, allow_none: bool) -> int | None: ...


def check_int(value, *, name: str, fn: str, minimum: int | None = None, allow_none: bool = False):
    """Validate an integer option (a Python or NumPy int, not a bool or float), at least ``minimum``."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: option `{name}` must be an int; got {value!r} of type {type(value).__name__}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: option `{name}` must be >= {minimum}; got {value}.")
    return value


def result_dtype(*args) -> np.dtype:
    """``jnp.result_type(*args)`` on JAX's standard promotion lattice, whatever the user's
    ``jax_numpy_dtype_promotion`` setting: the library's own promotions (real eigenvalues
    into complex eigenvectors, a real function of complex input) are deliberate, and are
    then applied by explicit ``astype``, so they also run under ``"strict"`` promotion."""
    with jax.numpy_dtype_promotion("standard"):
        return np.dtype(jnp.result_type(*args))
