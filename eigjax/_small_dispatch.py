"""Small real symmetric eigenproblems: one primitive, a solver chosen per lowering platform.

``small_eigh_p`` stands for "eigenvalues (ascending) and eigenvectors of a batch of real
symmetric ``n x n`` matrices, ``2 <= n <= 16``". Its meaning is the same everywhere; which
solver computes it is decided when the program is *lowered*, for the platform it is
lowered for, from static facts only (platform, ``n``, dtype, batch size, whether the
program is being exported). Deciding from ``jax.default_backend()`` at trace time would
embed the CPU kernel in a program traced on a CPU and lowered for a GPU (``jax.export``,
AOT), so nothing here looks at the default backend.

Solvers (the numbers behind each choice are in BENCHMARKS.md):

* ``cpu``:
  - ``n = 2`` in batches of at least ``SMALL_MIN_BATCH``: the one-pass pure-JAX solver;
  - otherwise the native batched Jacobi kernel (:mod:`eigjax._native`), when it builds
    and the program is not being exported;
  - otherwise the pure-JAX solvers for ``n <= 4`` in batches of ``SMALL_MIN_BATCH`` or
    more, and LAPACK (``syevd``) for the rest.
  Exported programs (``jax.export``) never embed the native kernel: its custom call has no
  compatibility guarantee, so they use the pure-JAX solvers or LAPACK, whose targets JAX
  guarantees, and reload anywhere without eigjax.
* ``cuda``: the Pallas kernel of :mod:`eigjax._small_pallas` (one Triton kernel, a
  matrix per thread) where ``PALLAS_PLAN`` says (float32, ``n = 3, 4``, batches of 1e6
  or more: the only batch size measured), except in exported programs (Triton calls
  have no compatibility guarantee); then as ``rocm`` and ``tpu``.
* ``cuda``, ``rocm``, ``tpu``: the pure-JAX Jacobi solver of :func:`eigh_small_accel`
  where it was measured faster than cuSOLVER on an H200: ``n <= 3``, and ``n = 4`` in
  batches of ``ACCEL_MIN_BATCH`` or more (``eigjax._small.accel_plan``); the backend's
  solver otherwise. ROCm and TPU follow the same table, unmeasured (no such device was
  available).

Sharding: every solver is batch-parallel. The native kernel's custom call carries a
Shardy rule (and XLA's ``num_batch_dims`` attribute) saying that its batch dimensions
may be sharded and its matrix dimensions may not, so a batch sharded over devices is
solved where it lies, with no all-gather; the Pallas kernel's Triton call is wrapped in
``custom_partitioning`` with the same rule (``_pallas_solve``); the other solvers are
ordinary XLA operations that the partitioner handles itself.

Every solver returns all-NaN eigenvalues and eigenvectors for a matrix with a NaN or inf
entry anywhere (also in the triangle not read).

Example:
    >>> import jax.numpy as jnp
    >>> from eigjax._small_dispatch import small_eigh
    >>> w, v = small_eigh(jnp.array([[2.0, 1.0], [1.0, 2.0]]), symmetrize=True)
    >>> w.round(6).tolist()
    [1.0, 3.0]
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import dispatch  # apply_primitive: the standard eager impl of a primitive
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

try:
    from jax.core import ShapedArray
except ImportError:  # pragma: no cover - moved in newer jax
    from jax._src.core import ShapedArray

from . import _native
from ._linalg import _all_finite, _hermitian_part, _nan_unless
from ._small import ACCEL_MAX_N, SMALL_MIN_BATCH, accel_plan, eigh_small, eigh_small_accel

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def handles(n: int, dtype) -> bool:
    """Whether :func:`small_eigh` takes real ``n x n`` input of ``dtype``."""
    return np.dtype(dtype) in _DTYPES and 2 <= n <= max(_native.MAX_N, ACCEL_MAX_N)


def small_eigh(a: jax.Array, symmetrize: bool) -> tuple[jax.Array, jax.Array]:
    """``(w, v)`` of real symmetric ``a`` of shape ``(..., n, n)``; ``symmetrize``: of
    ``(a + a^T) / 2``, else of the lower triangle. See the module docstring."""
    w, v = small_eigh_p.bind(a, symmetrize=bool(symmetrize), vectors=True)
    return w, v


def small_eigvalsh(a: jax.Array, symmetrize: bool) -> jax.Array:
    """The eigenvalues alone (the native kernel then skips the eigenvector rotations; the
    pure-JAX solvers leave them to XLA's dead-code elimination)."""
    (w,) = small_eigh_p.bind(a, symmetrize=bool(symmetrize), vectors=False)
    return w


small_eigh_p = Primitive("eigjax_small_eigh")
small_eigh_p.multiple_results = True
small_eigh_p.def_impl(functools.partial(dispatch.apply_primitive, small_eigh_p))


@small_eigh_p.def_abstract_eval
def _abstract_eval(a, *, symmetrize, vectors):
    del symmetrize
    w = ShapedArray(a.shape[:-1], a.dtype)
    return (w, ShapedArray(a.shape, a.dtype)) if vectors else (w,)


# vmap: the solvers take any leading batch dimensions; moving the mapped one to the front
# lets the lowering see (and choose by) the whole batch.
def _batch_rule(args, dims, *, symmetrize, vectors):
    (a,), (d,) = args, dims
    out = small_eigh_p.bind(jnp.moveaxis(a, d, 0), symmetrize=symmetrize, vectors=vectors)
    return out, (0,) * len(out)


batching.primitive_batchers[small_eigh_p] = _batch_rule


# ---------------------------------------------------------------------------
# The solvers in pure JAX (lowered with mlir.lower_fun).


def _lapack(a: jax.Array, symmetrize: bool) -> tuple[jax.Array, jax.Array]:
    """The backend's solver (LAPACK on the CPU) with the NaN contract."""
    finite = _all_finite(a)
    if symmetrize:
        a = _hermitian_part(a)
    v, w = jax.lax.linalg.eigh(a, lower=True, symmetrize_input=False)
    return _nan_unless(finite, w, v)


def _lower_jax(fn, ctx, a, symmetrize, vectors):
    def solve(x):
        w, v = fn(x, symmetrize)
        return (w, v) if vectors else (w,)

    return mlir.lower_fun(solve, multiple_results=True)(ctx, a)


# ---------------------------------------------------------------------------
# Per-platform choices.


def cpu_solver(n: int, batch: int, *, for_export: bool = False) -> str:
    """``"jax"``, ``"native"`` or ``"lapack"``: the CPU's solver for ``batch`` matrices of
    size ``n`` (builds the native kernel on first use; see the module docstring)."""
    if n == 2 and batch >= SMALL_MIN_BATCH:
        return "jax"
    if not for_export and 2 <= n <= _native.MAX_N and _native.available():
        return "native"
    if n <= 4 and batch >= SMALL_MIN_BATCH:
        return "jax"
    return "lapack"


# Where the Pallas kernel (eigjax/_small_pallas.py, lowered through Triton) solves the
# batch on a CUDA GPU: (n, dtype) -> (fewest matrices, kernel options). Measured on an
# H200 (BENCHMARKS.md, "GPU (H200)") at 1e6 float32 matrices only, against the entry
# solver and cuSOLVER: faster at n = 3 (0.27 ms with block 256 vs 0.56 and 10.5) and
# n = 4 (0.41 ms transposed vs 2.09 and 12.4); slower than the entry solver at n = 2
# (0.23 vs 0.20 ms). float64 and smaller batches were not measured (device time ran
# out), so they keep the choices below. For n >= 5 Triton took 14 s (n = 5) to over
# 100 s (n = 8) to compile the kernel.
PALLAS_PLAN: dict[tuple[int, np.dtype], tuple[int, dict[str, object]]] = {
    (3, np.dtype(np.float32)): (1_000_000, {"block": 256}),
    (4, np.dtype(np.float32)): (1_000_000, {"layout": "transposed"}),
}


def accel_solver(n: int, batch: int, dtype=np.float32, *, platform: str = "cuda", for_export: bool = False) -> str:
    """``"pallas"``, ``"jax"`` or ``"backend"``: the accelerators' solver for ``batch``
    real ``n x n`` matrices of ``dtype`` in a program lowered for ``platform``
    (``"cuda"``, ``"rocm"`` or ``"tpu"``). The Pallas kernel on CUDA where
    ``PALLAS_PLAN`` says, except in exported programs (``jax.export`` guarantees no
    compatibility for Triton calls, so those use stable operations); then the pure-JAX
    entry solver where ``eigjax._small.accel_plan`` says; else the backend's solver."""
    if platform == "cuda" and not for_export and _pallas_options(n, batch, dtype) is not None:
        return "pallas"
    return "backend" if accel_plan(n, batch) is None else "jax"


def _pallas_options(n: int, batch: int, dtype) -> dict[str, object] | None:
    min_batch, options = PALLAS_PLAN.get((n, np.dtype(dtype)), (math.inf, {}))
    return options if batch >= min_batch else None


def _shape(ctx) -> tuple[int, int]:
    shape = ctx.avals_in[0].shape
    return shape[-1], math.prod(shape[:-2])


def _cpu_lowering(ctx, a, *, symmetrize, vectors):
    n, batch = _shape(ctx)
    for_export = getattr(ctx.module_context.lowering_parameters, "for_export", False)
    solver = cpu_solver(n, batch, for_export=for_export)
    if solver == "native":
        return _native_lowering(ctx, a, symmetrize, vectors)
    fn = (lambda x, s: eigh_small(x, symmetrize=s)) if solver == "jax" else _lapack
    return _lower_jax(fn, ctx, a, symmetrize, vectors)


def _accel_lowering(ctx, a, *, symmetrize, vectors, platform):
    n, batch = _shape(ctx)
    for_export = getattr(ctx.module_context.lowering_parameters, "for_export", False)
    solver = accel_solver(n, batch, ctx.avals_in[0].dtype, platform=platform, for_export=for_export)
    if solver == "pallas":
        options = _pallas_options(n, batch, ctx.avals_in[0].dtype) or {}
        solve = functools.partial(
            _pallas_solve, symmetrize=symmetrize, vectors=vectors, options=options, partition=_several_devices(ctx)
        )
        return mlir.lower_fun(solve, multiple_results=True)(ctx, a)
    if solver == "backend":
        return _lower_jax(_lapack, ctx, a, symmetrize, vectors)
    plan = accel_plan(n, batch) or {}
    return _lower_jax(lambda x, s: eigh_small_accel(x, symmetrize=s, **plan), ctx, a, symmetrize, vectors)


def _several_devices(ctx) -> bool:
    """Whether the program being lowered spans several devices that XLA partitions (not
    inside a ``shard_map`` over all of them); as ``custom_partitioning`` decides it."""
    context = ctx.module_context.axis_context
    devices = getattr(context, "device_assignment", None)
    if devices is not None:
        return len(devices) > 1
    mesh = getattr(context, "mesh", None)
    if mesh is None or set(getattr(context, "manual_axes", ())) == set(mesh.axis_names):
        return False
    return mesh.size > 1


def _pallas_solve(
    x, *, symmetrize: bool, vectors: bool, options: dict, partition: bool = True, interpret: bool = False
) -> tuple:
    """The Pallas kernel on ``x`` of shape ``(..., n, n)``, with ``partition`` partitioned
    along the batch dimensions: a batch sharded over devices is solved where it lies
    (each device runs the kernel on its shard), the matrix dimensions are never sharded.
    A Triton call has no sharding rule of its own (XLA would gather the whole batch onto
    every device), so the kernel is wrapped in ``custom_partitioning``; on one device (or
    lowered with no devices, ahead of time) it is called as it is. Returns ``(w, v)`` or
    ``(w,)``."""
    from jax.experimental.custom_partitioning import custom_partitioning
    from jax.sharding import NamedSharding, PartitionSpec

    from ._small_pallas import eigh_small_pallas  # Pallas is imported only when lowered for it

    nbatch = x.ndim - 2

    def kernel(y):
        out = eigh_small_pallas(y, symmetrize=symmetrize, vectors=vectors, interpret=interpret, **options)
        return out if vectors else (out,)

    def shardings(mesh, arg_shapes):
        spec = tuple(getattr(arg_shapes[0].sharding, "spec", ()))
        batch = (spec + (None,) * nbatch)[:nbatch]
        arg = NamedSharding(mesh, PartitionSpec(*batch, None, None))
        outs = (NamedSharding(mesh, PartitionSpec(*batch, None)), arg)
        return arg, outs[: 2 if vectors else 1]

    def per_shard(mesh, arg_shapes, result_shape):
        arg, outs = shardings(mesh, arg_shapes)
        return mesh, kernel, outs, (arg,)

    def infer(mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes)[1]

    if not partition:
        return kernel(x)
    solve = custom_partitioning(kernel)
    solve.def_partition(
        per_shard,
        infer_sharding_from_operands=infer,
        sharding_rule="... i j -> ... k" + (", ... l m" if vectors else ""),
    )
    return solve(x)


def _native_lowering(ctx, a, symmetrize, vectors):
    """The native kernel's custom call, batch-partitionable (see the module docstring)."""
    (aval,) = ctx.avals_in
    nbatch = len(aval.shape) - 2
    attrs = {"mhlo.frontend_attributes": mlir.ir_attribute({"num_batch_dims": str(nbatch)})}
    rule = _sdy_rule(ctx, nbatch, vectors)
    if rule is not None:
        attrs["sdy.sharding_rule"] = rule
    lowering = jax.ffi.ffi_lowering(_native.target(aval.dtype, vectors), extra_attributes=attrs)
    return lowering(ctx, a, symmetrize=np.int64(symmetrize))


def _sdy_rule(ctx, nbatch: int, vectors: bool):
    """Shardy rule ``b... i j -> b... k, b... l m``: batch factors shared, matrix factors
    private to each operand (so never sharded). None where Shardy is off or the helper
    that builds the attribute is missing (then XLA's ``num_batch_dims`` attribute serves
    the older partitioner)."""
    if not jax.config.jax_use_shardy_partitioner:  # pyright: ignore[reportAttributeAccessIssue] (a flag set at runtime)
        return None
    try:  # JAX builds its own linalg custom calls' rules with these (not public API)
        from jax._src.custom_partitioning_sharding_rule import sdy_sharding_rule_to_mlir, str_to_sdy_sharding_rule
    except ImportError:  # pragma: no cover - depends on the jax version
        return None
    batch = " ".join(f"b{k}" for k in range(nbatch))
    rule = str_to_sdy_sharding_rule(f"{batch} i j -> {batch} k" + (f", {batch} l m" if vectors else ""))

    def types(avals):
        try:  # jax >= 0.10 passes the module context
            return [mlir.aval_to_ir_type(ctx.module_context, x) for x in avals]
        except TypeError:  # pragma: no cover - older signature
            return [mlir.aval_to_ir_type(x) for x in avals]  # pyright: ignore[reportCallIssue] (jax < 0.10)

    return sdy_sharding_rule_to_mlir(rule, types(ctx.avals_in), types(ctx.avals_out))


mlir.register_lowering(small_eigh_p, _cpu_lowering, platform="cpu")
for _platform in ("cuda", "rocm", "tpu"):
    mlir.register_lowering(small_eigh_p, functools.partial(_accel_lowering, platform=_platform), platform=_platform)
