"""Eigenvalues of Hermitian matrices without eigenvectors: the forward of ``eigvalsh``.

``jnp.linalg.eigvalsh`` runs the full decomposition and drops the vectors. Values alone
cost less: after the Householder reduction to tridiagonal form (``4/3 n^3`` flops for real
input), LAPACK's ``syevd``/``heevd`` with ``jobz = 'N'`` finishes with the root-free QR
iteration ``sterf`` (``O(n^2)``), where ``jobz = 'V'`` adds divide and conquer on the
vectors and the back-transformation (another ``~2 n^3`` flops, BLAS-3). For large n
that is much less time (BENCHMARKS.md, "eigvalsh without eigenvectors").

This module is only the primal of ``eigjax.eigvalsh``: its custom JVP rule
(:mod:`eigjax._eigh`) still computes the eigenvectors it needs, so nothing changes under
differentiation. When nothing is differentiated, JAX runs the primal alone.

Dispatch. By shape and dtype (static), then per lowering platform through the lowering
rules of one primitive (never from ``jax.default_backend()``), so that a program exported
for several platforms carries each platform's kernel:

=========================  ==========================================================
real batches, n <=          eigjax's eigh forward (the native batched kernel on CPU),
``SMALL_N`` (16) values taken: faster there than LAPACK on each matrix
cpu, n < ``BLOCKED_N``      LAPACK ``?syevd``/``?heevd`` with ``jobz = 'N'`` through
                            jaxlib's FFI targets (``lapack_{s,d}syevd_ffi``,
                            ``lapack_{c,z}heevd_ffi``), which ``jax.export`` guarantees
                            stable
cpu, n >= ``BLOCKED_N``     LAPACK's blocked ``sytrd``/``hetrd`` (jaxlib's stable
                            ``lapack_?sytrd_ffi``/``?hetrd_ffi``), then the same
                            ``syevd('N')`` on the real tridiagonal matrix (see below)
cuda, rocm, tpu             the backend's ``eigh`` (cuSOLVER/hipSOLVER ``syevd``, TPU's
                            own), values taken: on an H200 ``sytrd`` alone took most of
                            cuSOLVER's full ``syevd``, and ``sytrd`` + the pure-JAX
                            bisection of ``jax.scipy.linalg.eigh_tridiagonal`` was
                            slower than it (BENCHMARKS.md, "eigvalsh without
                            eigenvectors"); TPU has no ``sytrd``
=========================  ==========================================================

The NaN contract is eigjax's: a matrix with a NaN or inf entry anywhere (also in the
triangle that is not read) gives all-NaN eigenvalues; so does a LAPACK failure (``info != 0``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import ShapedArray
from jax.custom_batching import custom_vmap
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from . import _small_dispatch
from ._dense_eigh import _eigh_forward, _eigh_forward_sym
from ._linalg import _all_finite, _hermitian_part

# Largest n for which eigjax's small solvers (the native kernel for real batches, values
# only) are kept, per real dtype: they beat syevd('N') up to n = 16 once the kernel
# skipped the eigenvector rotations (BENCHMARKS.md, "eigvalsh without eigenvectors",
# "Batched small matrices, values-only native kernel"). Complex input has no native kernel: heevd('N') always.
SMALL_N = {np.dtype(np.float32): 16, np.dtype(np.float64): 16}


# ---------------------------------------------------------------------------------------
# LAPACK syevd/heevd with jobz = 'N' (CPU only): eigenvalues (ascending) and LAPACK's info
# per matrix. The FFI target also returns the overwritten matrix, which the lowering drops.
#
# jaxlib sizes the workspace of this mode at its minimum (2n + 1), which makes sytrd fall
# back to its unblocked, matrix-vector form: for n >= ``BLOCKED_N`` the Householder
# reduction runs first through LAPACK's blocked ``sytrd``/``hetrd`` (jaxlib's FFI target,
# with the optimal workspace), and syevd then sees a tridiagonal matrix, for which its reduction is
# O(n^2) (every reflector is the identity, tau = 0, and sytd2 skips its updates) before
# ``sterf``.

_syevd_values_p = Primitive("eigjax_syevd_values")
_syevd_values_p.multiple_results = True

_REAL = {
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64),
    np.dtype(np.complex64): np.dtype(np.float32),
    np.dtype(np.complex128): np.dtype(np.float64),
}


def _syevd_abstract_eval(a):
    *batch, n, _ = a.shape
    return (ShapedArray((*batch, n), _REAL[np.dtype(a.dtype)]), ShapedArray(tuple(batch), np.dtype(np.int32)))


def _lapack_lowering(ctx, a, name, out_avals, **attrs):
    """One of jaxlib's LAPACK FFI targets on a row-major matrix; returns its outputs
    after the overwritten matrix (dropped).

    Row-major memory read column-major is ``a^T = conj(a)`` for Hermitian ``a``: the same
    eigenvalues and the same real tridiagonal form, so no transposing copy is needed.
    LAPACK's upper triangle of ``a^T`` is the lower triangle of ``a``, which is what
    eigjax reads (``symmetrize=False``).
    """
    from jaxlib import lapack  # as jax's own eigh lowering: binds jaxlib's kernels to LAPACK

    (a_aval,) = ctx.avals_in
    complex_ = np.issubdtype(a_aval.dtype, np.complexfloating)
    target = lapack.prepare_lapack_call(name[complex_], a_aval.dtype)
    ndim = len(a_aval.shape)
    row_major = tuple(range(ndim - 1, -1, -1))
    rule = jax.ffi.ffi_lowering(
        target,
        operand_layouts=[row_major],
        result_layouts=[row_major] + [None] * len(out_avals),
        operand_output_aliases={0: 0},
        extra_attributes=_batch_attributes(ctx, ndim - 2, [a_aval], [a_aval, *out_avals]),
    )
    return rule(ctx.replace(avals_out=[a_aval, *out_avals]), a, uplo=np.uint8(ord("U")), **attrs)[1:]


def _batch_attributes(ctx, num_batch_dims, avals_in, avals_out):
    """The batch dimensions of the FFI call are independent: the attributes with which
    jax's own linalg lowerings let XLA (and Shardy) partition them instead of gathering
    the batch on every device."""
    attrs = {"mhlo.frontend_attributes": mlir.ir_attribute({"num_batch_dims": str(num_batch_dims)})}
    if getattr(jax.config, "jax_use_shardy_partitioner", True):
        try:  # private helper of jax's linalg lowerings; without it the call is replicated
            from jax._src.lax.linalg import _build_sdy_sharding_rule

            attrs["sdy.sharding_rule"] = _build_sdy_sharding_rule(
                ctx.module_context, num_batch_dims, avals_in, avals_out
            )
        except (ImportError, TypeError):
            pass
    return attrs


def _syevd_lowering(ctx, a):
    return _lapack_lowering(ctx, a, ("syevd_ffi", "heevd_ffi"), ctx.avals_out, mode=np.uint8(ord("N")))


_syevd_values_p.def_abstract_eval(_syevd_abstract_eval)
mlir.register_lowering(_syevd_values_p, _syevd_lowering, platform="cpu")

# LAPACK sytrd/hetrd (blocked Householder tridiagonalisation), CPU only, on the row-major
# matrix (jax.lax.linalg.tridiagonal asks for column-major: one transposing copy more):
# outputs the diagonal d, the off-diagonal e (both real) and info.
_sytrd_p = Primitive("eigjax_sytrd_values")
_sytrd_p.multiple_results = True


def _sytrd_abstract_eval(a):
    *batch, n, _ = a.shape
    real, batch = _REAL[np.dtype(a.dtype)], tuple(batch)
    return (ShapedArray((*batch, n), real), ShapedArray((*batch, n - 1), real), ShapedArray(batch, np.dtype(np.int32)))


def _sytrd_lowering(ctx, a):
    (a_aval,) = ctx.avals_in
    *batch, n, _ = a_aval.shape
    taus = ShapedArray((*batch, n - 1), a_aval.dtype)
    d_aval, e_aval, info_aval = ctx.avals_out
    d, e, _, info = _lapack_lowering(ctx, a, ("sytrd_ffi", "hetrd_ffi"), [d_aval, e_aval, taus, info_aval])
    return [d, e, info]


_sytrd_p.def_abstract_eval(_sytrd_abstract_eval)
mlir.register_lowering(_sytrd_p, _sytrd_lowering, platform="cpu")

# Smallest n at which the blocked reduction first pays (BENCHMARKS.md, "eigvalsh without eigenvectors").
BLOCKED_N = 256


def _syevd_values(a: jax.Array) -> jax.Array:
    w, info = _syevd_values_p.bind(a)
    return jnp.where((info == 0)[..., None], w, jnp.asarray(jnp.nan, w.dtype))


def _cpu_values(a: jax.Array) -> jax.Array:
    n = a.shape[-1]
    if n < BLOCKED_N:
        return _syevd_values(a)
    d, e, info = _sytrd_p.bind(a)  # d, e real also for complex a
    d = jnp.where((info == 0)[..., None], d, jnp.asarray(jnp.nan, d.dtype))
    shape = a.shape
    rows = jax.lax.broadcasted_iota(jnp.int32, shape, len(shape) - 2)
    cols = jax.lax.broadcasted_iota(jnp.int32, shape, len(shape) - 1)
    e_full = jnp.concatenate([e, jnp.zeros_like(e[..., :1])], axis=-1)
    # lower triangle: d on the diagonal, e below it (t[i + 1, i] = e[i])
    t = jnp.where(
        rows == cols,
        jnp.broadcast_to(d[..., None, :], shape),
        jnp.where(rows == cols + 1, jnp.broadcast_to(e_full[..., None, :], shape), 0),
    )
    return _syevd_values(t.astype(d.dtype))


def _backend_values(a: jax.Array) -> jax.Array:
    _, w = jax.lax.linalg.eigh(a, lower=True, symmetrize_input=False)
    return w


# ---------------------------------------------------------------------------------------
# The values-only eigensolver as one primitive with a lowering per platform (above).

_eigvalsh_p = Primitive("eigjax_eigvalsh_values")


def _eigvalsh_abstract_eval(a):
    return ShapedArray(a.shape[:-1], _REAL[np.dtype(a.dtype)])


def _eigvalsh_batch(args, dims):
    (a,), (d,) = args, dims
    return _eigvalsh_p.bind(jnp.moveaxis(a, d, 0)), 0  # the kernels loop over leading axes


_eigvalsh_jit = jax.jit(lambda a: _eigvalsh_p.bind(a))
_eigvalsh_p.def_impl(lambda a: _eigvalsh_jit(a))
_eigvalsh_p.def_abstract_eval(_eigvalsh_abstract_eval)
batching.primitive_batchers[_eigvalsh_p] = _eigvalsh_batch
mlir.register_lowering(_eigvalsh_p, mlir.lower_fun(_cpu_values, multiple_results=False), platform="cpu")
mlir.register_lowering(_eigvalsh_p, mlir.lower_fun(_backend_values, multiple_results=False))


def _use_eigh_forward(a: jax.Array) -> bool:
    """True where eigjax's eigh forward beats the values-only solver (BENCHMARKS.md,
    "eigvalsh without eigenvectors"): real batches of n <= ``SMALL_N`` (the native kernel), and n < 2.
    A single small matrix goes to LAPACK, which has less overhead than the batched kernel."""
    n, batch = a.shape[-1], math.prod(a.shape[:-2])
    return n < 2 or (batch > 1 and n <= SMALL_N.get(np.dtype(a.dtype), 0))


def _values(a: jax.Array, symmetrize: bool) -> jax.Array:
    if _use_eigh_forward(a):
        if _small_dispatch.handles(a.shape[-1], a.dtype):
            # the small solvers, values only (the native kernel skips the eigenvector
            # rotations); all-NaN for a non-finite entry in either triangle already
            return _small_dispatch.small_eigvalsh(a, symmetrize)
        return (_eigh_forward_sym(a) if symmetrize else _eigh_forward(a))[0]
    w = _eigvalsh_p.bind(_hermitian_part(a) if symmetrize else a)
    return jnp.where(_all_finite(a)[..., None], w, jnp.asarray(jnp.nan, w.dtype))


# Under jax.vmap a function is traced one example at a time; the batching rule hands the
# dispatch the whole batch (as eigjax._dense_eigh does through eigjax._small_dispatch), so that it sees its size.
def _batch_aware(symmetrize: bool):
    @custom_vmap
    def values(a: jax.Array) -> jax.Array:
        return _values(a, symmetrize)

    @values.def_vmap
    def values_vmap(axis_size, in_batched, a):
        del axis_size
        (batched,) = in_batched
        return _values(a, symmetrize), batched

    return values


_values_plain, _values_sym = _batch_aware(False), _batch_aware(True)


def eigvalsh_values(a: jax.Array, symmetrize: bool) -> jax.Array:
    """Ascending eigenvalues of the Hermitian ``a`` (``(..., n, n)``) without eigenvectors.

    With ``symmetrize`` the Hermitian part ``a/2 + a^H/2`` is used, else the lower
    triangle is read. All-NaN for a matrix with a non-finite entry (anywhere) or a
    solver failure. Not differentiable by itself: :func:`eigjax.eigvalsh` wraps it in
    its custom JVP, whose rule computes the eigenvectors it needs.
    """
    return (_values_sym if symmetrize else _values_plain)(a)
