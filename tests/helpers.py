"""Shared test helpers: matrix families built on purpose, and finite differences.

Every derivative test compares against central finite differences of a *well-defined*
quantity (eigenvalues, projectors, other gauge-invariant functions), never against
numbers produced by the code under test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

COMPLEX = {np.float32: np.complex64, np.float64: np.complex128}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def is_complex(dtype) -> bool:
    return np.issubdtype(np.dtype(dtype), np.complexfloating)


def random_matrix(r: np.random.Generator, shape, dtype=np.float64) -> np.ndarray:
    """Standard normal entries (real and imaginary parts) of the given dtype."""
    x = r.standard_normal(shape)
    if is_complex(dtype):
        x = x + 1j * r.standard_normal(shape)
    return x.astype(dtype)


def hermitian(x: np.ndarray) -> np.ndarray:
    return (x + np.conj(np.swapaxes(x, -1, -2))) / 2


def random_hermitian(r, n, dtype=np.float64, batch=()) -> np.ndarray:
    return hermitian(random_matrix(r, (*batch, n, n), dtype))


def random_unitary(r, n, dtype=np.float64, batch=()) -> np.ndarray:
    """Haar-ish unitary/orthogonal matrix from the QR of a Gaussian matrix."""
    q, rr = np.linalg.qr(random_matrix(r, (*batch, n, n), np.complex128 if is_complex(dtype) else np.float64))
    d = np.diagonal(rr, axis1=-2, axis2=-1)
    q = q * (d / np.abs(d))[..., None, :]
    return q


def with_spectrum(r, w, dtype=np.float64, batch=()) -> np.ndarray:
    """``Q diag(w) Q^H`` with random unitary ``Q``, built in float64 then cast.

    Used to build *exactly* degenerate inputs such as ``w = (1, 1, 2, 3)``.
    """
    w = np.asarray(w, dtype=np.float64)
    q = random_unitary(r, w.shape[-1], dtype, batch)
    a = (q * w) @ np.conj(np.swapaxes(q, -1, -2))
    return hermitian(a).astype(dtype)


def hermitian_direction(r, shape, dtype=np.float64) -> np.ndarray:
    return hermitian(random_matrix(r, shape, dtype))


def central_fd(f, a, da, h=1e-4):
    """Fourth-order central difference of ``f`` at ``a`` along ``da`` (float64)."""
    a = jnp.asarray(a)
    da = jnp.asarray(da)
    fp1, fm1 = f(a + h * da), f(a - h * da)
    fp2, fm2 = f(a + 2 * h * da), f(a - 2 * h * da)
    return jax.tree_util.tree_map(lambda p2, p1, m1, m2: (-p2 + 8 * p1 - 8 * m1 + m2) / (12 * h), fp2, fp1, fm1, fm2)


def jvp(f, a, da):
    return jax.jvp(f, (jnp.asarray(a),), (jnp.asarray(da),))[1]


def rel_err(x, y) -> float:
    """``||x - y|| / max(||y||, tiny)`` in the Frobenius norm over all entries."""
    x = np.asarray(x)
    y = np.asarray(y)
    den = max(np.linalg.norm(y.ravel()), 1e-300)
    return float(np.linalg.norm((x - y).ravel()) / den)


def assert_fd_match(f, a, da, rtol=1e-6, h=1e-4, atol=1e-10):
    """Assert that the JVP of ``f`` at ``a`` along ``da`` matches finite differences.

    Passes when ``||jvp - fd|| <= atol + rtol * ||fd||`` (Frobenius norms over all
    entries); ``atol`` only matters for derivatives that are zero (e.g. n = 1).
    """
    got = np.asarray(jvp(f, a, da))
    want = np.asarray(central_fd(f, a, da, h=h))
    assert np.all(np.isfinite(got)), "JVP is not finite"
    diff = np.linalg.norm((got - want).ravel())
    bound = atol + rtol * np.linalg.norm(want.ravel())
    assert diff <= bound, f"JVP vs finite differences: |diff| {diff:.3e} > {bound:.3e} (rtol {rtol:.1e})"
    return diff
