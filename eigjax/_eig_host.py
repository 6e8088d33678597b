"""Host fallback for the general eigendecomposition: ``jax.pure_callback`` into NumPy.

XLA has a nonsymmetric eigensolver on CPU (LAPACK ``geev``) and on CUDA/ROCm, but
none on TPU or other accelerators. There the forward computation is done on the
host by :func:`numpy.linalg.eig` (the same LAPACK ``geev``), through
``jax.pure_callback``; everything else (sorting, normalisation, derivative rules)
is the same JAX code as on the native path, so the two paths agree to rounding.

The callback works under ``jit`` and ``vmap``: ``vmap_method="expand_dims"`` hands
the callback one stacked array, and :func:`numpy.linalg.eig` already loops over
leading dimensions. Matrices that contain NaN or inf, or on which LAPACK fails to
converge, give NaN outputs (NumPy would raise), as the native path does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import result_dtype

# Lowering platforms whose XLA backend implements the nonsymmetric eigensolver
# (jax.lax.linalg.eig lowers to LAPACK geev on CPU, to cuSOLVER/hipSOLVER/MAGMA on GPUs;
# TPU has none). eigjax._eig chooses per lowering platform from this set.
NATIVE_PLATFORMS = ("cpu", "cuda", "rocm")


def has_native_eig(platform: str | None = None) -> bool:
    """Whether XLA on ``platform`` (default: the default backend) has an ``eig``.
    Informational: the solver choice itself is made per lowering platform."""
    platform = jax.default_backend() if platform is None else platform
    return platform in NATIVE_PLATFORMS or platform == "gpu"


def _numpy_eig(a: np.ndarray, compute_vectors: bool, cdtype) -> tuple[np.ndarray, ...]:
    a = np.asarray(a)
    batch, n = a.shape[:-2], a.shape[-1]
    flat = a.reshape((-1, n, n))
    w = np.full((flat.shape[0], n), np.nan + 1j * np.nan, dtype=cdtype)
    v = np.full((flat.shape[0], n, n), np.nan + 1j * np.nan, dtype=cdtype)
    for i, m in enumerate(flat):
        if not np.all(np.isfinite(m)):
            continue  # documented: NaN out, never an exception
        try:
            if compute_vectors:
                wi, vi = np.linalg.eig(m)
                v[i] = vi
            else:
                wi = np.linalg.eigvals(m)
        except np.linalg.LinAlgError:  # geev did not converge
            continue
        w[i] = wi
    w = w.reshape((*batch, n))
    if not compute_vectors:
        return (w,)
    return w, v.reshape((*batch, n, n))


def host_eig(a: jax.Array, *, compute_vectors: bool = True) -> tuple[jax.Array, ...]:
    """Unsorted eigenvalues (and right eigenvectors) of ``a`` computed on the host.

    Same contract as ``jax.lax.linalg.eig(a, compute_left_eigenvectors=False)``:
    complex outputs, LAPACK ordering and normalisation.
    """
    cdtype = result_dtype(a.dtype, jnp.complex64)
    shapes = [jax.ShapeDtypeStruct(a.shape[:-1], cdtype)]
    if compute_vectors:
        shapes.append(jax.ShapeDtypeStruct(a.shape, cdtype))

    def callback(x):
        return _numpy_eig(x, compute_vectors, np.dtype(cdtype))

    return tuple(jax.pure_callback(callback, tuple(shapes), a, vmap_method="expand_dims"))
