"""eigjax.eigvalsh's values-only forward (eigjax._eigvals_only): accuracy against LAPACK's
full decomposition, the NaN contract, dispatch, derivatives unchanged, and jax.export."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import hermitian_direction, is_complex, random_hermitian, random_matrix, rng, with_spectrum
from jax._src.export._export import _CUSTOM_CALL_TARGETS_GUARANTEED_STABLE

import eigjax
from eigjax import _eigh, _eigvals_only

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
PRIM = "eigjax_eigvalsh_values"


def _real(dtype):
    return np.finfo(np.dtype(dtype)).dtype


def _reference(a):
    """LAPACK's full decomposition (jnp.linalg.eigvalsh) of the Hermitian part of a."""
    a = jnp.asarray(a)
    return np.asarray(jnp.linalg.eigvalsh(a / 2 + jnp.conj(jnp.swapaxes(a, -1, -2)) / 2))


def _assert_close(w, ref, a, c=8.0):
    """|w - ref| <= c n eps ||A||_2 for every matrix of the batch."""
    w, ref = np.asarray(w), np.asarray(ref)
    assert w.shape == ref.shape and w.dtype == ref.dtype
    n = w.shape[-1]
    norm = np.max(np.abs(ref), axis=-1, keepdims=True)
    bound = c * n * np.finfo(w.dtype).eps * norm
    err = np.abs(w - ref)
    assert np.all(err <= bound), (
        f"max |w - ref| / (n eps ||A||) = {np.max(err / (n * np.finfo(w.dtype).eps * norm)):.2f}"
    )


def _family(name, r, n, dtype, batch=()):
    if name == "random":
        return random_hermitian(r, n, dtype, batch)
    if name == "clustered":  # eigenvalues 1 + k 1e-7, plus a well separated pair
        w = np.concatenate([1 + 1e-7 * np.arange(n - 2), [-3.0, 5.0]])
        return with_spectrum(r, w, dtype, batch)
    if name == "degenerate":  # exactly repeated: Q diag(1, 1, 1, 2, 2, 3, ...) Q^H
        w = np.minimum(np.arange(n) // 3, 5).astype(np.float64)
        return with_spectrum(r, w, dtype, batch)
    raise ValueError(name)


def _prims(jaxpr):
    """Names of all primitives in a closed jaxpr, sub-jaxprs included."""
    return set(re.findall(r"\b([a-z_][a-z0-9_]*)\[", str(jaxpr))) | set(
        re.findall(r"= ([a-z_][a-z0-9_]*) ", str(jaxpr))
    )


# ---------------------------------------------------------------------------
# Accuracy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", ["random", "clustered", "degenerate"])
@pytest.mark.parametrize("shape", [(40,), (2, 24), (1, 5)])
def test_values_match_full_decomposition(dtype, family, shape):
    *batch, n = shape
    a = jnp.asarray(_family(family, rng(n), n, dtype, tuple(batch)))
    _assert_close(eigjax.eigvalsh(a), _reference(a), a)


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
@pytest.mark.parametrize("family", ["random", "degenerate"])
def test_values_match_full_decomposition_blocked_reduction(dtype, family):
    # n >= BLOCKED_N: jax's blocked sytrd/hetrd, then syevd('N') of the tridiagonal matrix
    n = _eigvals_only.BLOCKED_N + 3
    a = jnp.asarray(_family(family, rng(7), n, dtype, (2,)))
    _assert_close(eigjax.eigvalsh(a), _reference(a), a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_badly_scaled(dtype, scale):
    a = jnp.asarray(random_hermitian(rng(3), 20, dtype) * scale)
    w = eigjax.eigvalsh(a)
    assert np.all(np.isfinite(np.asarray(w)))
    _assert_close(w, _reference(a), a)


@pytest.mark.parametrize("n", [2, 20])
def test_symmetrize_does_not_overflow_near_max(n):
    # entries above max/2: (a + a^T)/2 would overflow, a/2 + a^T/2 does not
    r = rng(4)
    d = np.linspace(-1.5, 1.5, n)
    off = 0.01 * random_hermitian(r, n)
    b = np.diag(d) + off - np.diag(np.diag(off))
    a = jnp.asarray(b * 1e308)
    w = np.asarray(eigjax.eigvalsh(a))
    assert np.all(np.isfinite(w))
    ref = np.linalg.eigvalsh(b) * 1e308
    assert np.max(np.abs(w - ref)) <= 8 * n * np.finfo(np.float64).eps * np.max(np.abs(ref))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [3, 40, _eigvals_only.BLOCKED_N])
def test_symmetrize_false_reads_lower_triangle_only(dtype, n):
    r = rng(5)
    h = random_hermitian(r, n, dtype)
    junk = np.triu(random_matrix(r, (n, n), dtype), 1) * 100
    a = jnp.asarray(np.tril(h) + junk)
    _assert_close(eigjax.eigvalsh(a, symmetrize=False), _reference(jnp.asarray(h)), h)


def test_vmap_and_jit_agree_with_batched_call():
    r = rng(6)
    for dtype, n in [(np.float64, 6), (np.float32, 30), (np.complex128, 6), (np.complex64, 30)]:
        a = jnp.asarray(random_hermitian(r, n, dtype, (3,)))
        batched = eigjax.eigvalsh(a)
        ref = _reference(a)
        for f in (jax.vmap(eigjax.eigvalsh), jax.jit(eigjax.eigvalsh), jax.jit(jax.vmap(eigjax.eigvalsh))):
            _assert_close(f(a), ref, a)
        _assert_close(batched, ref, a)
        # vmap of a vmap, over a middle axis
        a2 = jnp.stack([a, 2 * a], axis=1)
        w2 = jax.vmap(jax.vmap(eigjax.eigvalsh), in_axes=1, out_axes=1)(a2)
        _assert_close(w2, _reference(a2), a2)


def test_empty_and_trivial_shapes():
    assert eigjax.eigvalsh(jnp.zeros((0, 30, 30))).shape == (0, 30)
    assert eigjax.eigvalsh(jnp.zeros((0, 30, 30), jnp.complex64)).shape == (0, 30)
    np.testing.assert_array_equal(eigjax.eigvalsh(jnp.full((2, 1, 1), 3.0 + 0j)), [[3.0], [3.0]])


# ---------------------------------------------------------------------------
# NaN contract


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [4, 40, _eigvals_only.BLOCKED_N])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_entry_gives_all_nan(dtype, n, bad):
    r = rng(8)
    a = random_hermitian(r, n, dtype, (3,))
    a[1, 0, n - 1] = bad  # the upper triangle, which symmetrize=False does not read
    a = jnp.asarray(a)
    for symmetrize in (True, False):
        w = np.asarray(eigjax.eigvalsh(a, symmetrize=symmetrize))
        assert np.all(np.isnan(w[1])), (symmetrize, w[1])
        assert np.all(np.isfinite(w[[0, 2]]))
        _assert_close(w[[0, 2]], _reference(a[jnp.array([0, 2])]), a)


# ---------------------------------------------------------------------------
# Dispatch: no eigenvectors on the values-only path


def _uses_values_only(a):
    return PRIM in _prims(jax.make_jaxpr(eigjax.eigvalsh)(a))


def test_dispatch():
    z = functools.partial(jnp.zeros, dtype=jnp.float64)
    assert _uses_values_only(z((40, 40)))  # larger n
    assert _uses_values_only(z((8, 8)))  # a single small matrix: LAPACK beats the batched kernel
    assert not _uses_values_only(z((100, 8, 8)))  # real small batches: the native kernel
    assert _uses_values_only(jnp.zeros((100, 8, 8), jnp.complex64))  # complex: heevd('N')
    assert not _uses_values_only(z((1, 1)))
    # under vmap the dispatch sees the whole batch (custom_vmap)
    jaxpr = jax.make_jaxpr(jax.vmap(eigjax.eigvalsh))(z((100, 8, 8)))
    assert PRIM not in _prims(jaxpr)
    if jax.default_backend() == "cpu":  # the values-only program has no eigenvector solver in it
        hlo = jax.jit(eigjax.eigvalsh).lower(z((40, 40))).as_text()
        assert "mode = 78 : ui8" in hlo and "mode = 86" not in hlo  # ord('N') = 78, ord('V') = 86


# ---------------------------------------------------------------------------
# Under differentiation nothing changes: the rule, with its own eigenvectors, as before.


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _eigvalsh_before(a, symmetrize):
    # eigjax.eigvalsh as it was before the values-only forward (same rule)
    return (_eigh._eigh_forward_sym(a) if symmetrize else _eigh._eigh_forward(a))[0]


_eigvalsh_before.defjvp(_eigh._eigvalsh_jvp)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
@pytest.mark.parametrize("n", [4, 30])
def test_derivatives_identical_to_before(dtype, n):
    r = rng(9)
    a = jnp.asarray(with_spectrum(r, [1.0, 1.0] + list(range(2, n)), dtype, (2,)))
    da = jnp.asarray(hermitian_direction(r, (2, n, n), dtype))
    for symmetrize in (True, False):
        new = lambda x: eigjax.eigvalsh(x, symmetrize=symmetrize)  # noqa: E731
        # jitted as eigjax's entry point is, so that both compile the same program
        old = jax.jit(lambda x: _eigvalsh_before(x, symmetrize))
        for f in (jax.jit, lambda g: g):
            w1, t1 = f(lambda x, d: jax.jvp(new, (x,), (d,)))(a, da)
            w0, t0 = f(lambda x, d: jax.jvp(old, (x,), (d,)))(a, da)
            np.testing.assert_array_equal(w1, w0)
            np.testing.assert_array_equal(t1, t0)
        loss = lambda g: lambda x: jnp.sum(jnp.arange(n, dtype=_real(dtype))[None, :] * g(x) ** 2)  # noqa: E731
        np.testing.assert_array_equal(jax.grad(loss(new))(a), jax.grad(loss(old))(a))
        np.testing.assert_array_equal(jax.jit(jax.grad(loss(new)))(a), jax.jit(jax.grad(loss(old)))(a))
        # the rule, not the values-only primal, runs under differentiation
        assert PRIM not in _prims(jax.make_jaxpr(jax.grad(loss(new)))(a))
    if n == 4 and not is_complex(dtype):
        h = jax.hessian(lambda x: jnp.sum(eigjax.eigvalsh(x) ** 3))(a[0])
        h0 = jax.hessian(lambda x: jnp.sum(jax.jit(_eigvalsh_before, static_argnums=1)(x, True) ** 3))(a[0])
        np.testing.assert_array_equal(h, h0)


# ---------------------------------------------------------------------------
# jax.export


@pytest.mark.parametrize("platforms", [("cpu",), ("cuda",), ("rocm",), ("tpu",), ("cpu", "cuda", "tpu")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_exports(platforms, dtype):
    shape = jax.ShapeDtypeStruct((2, 40, 40), dtype)
    exp = jax.export.export(jax.jit(eigjax.eigvalsh), platforms=platforms)(shape)
    assert exp.mlir_module_serialized
    targets = set(re.findall(r"custom_call @(\w+)", exp.mlir_module()))
    assert targets <= _CUSTOM_CALL_TARGETS_GUARANTEED_STABLE, targets
    if "cpu" in platforms:
        prefix = "he" if is_complex(dtype) else "sy"
        assert any(t.startswith("lapack_") and t.endswith(f"{prefix}evd_ffi") for t in targets), targets
    if platforms == (jax.default_backend(),):
        a = random_hermitian(rng(10), 40, dtype, (2,))
        _assert_close(exp.call(jnp.asarray(a)), _reference(a), a)


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
def test_exports_blocked_reduction(dtype):
    shape = jax.ShapeDtypeStruct((_eigvals_only.BLOCKED_N, _eigvals_only.BLOCKED_N), dtype)
    exp = jax.export.export(jax.jit(eigjax.eigvalsh), platforms=("cpu", "cuda", "tpu"))(shape)
    targets = set(re.findall(r"custom_call @(\w+)", exp.mlir_module()))
    assert targets <= _CUSTOM_CALL_TARGETS_GUARANTEED_STABLE, targets
    assert any(t.endswith(("sytrd_ffi", "hetrd_ffi")) for t in targets), targets


@pytest.mark.parametrize("platforms", [("cpu",), ("cuda",), ("tpu",), ("cpu", "cuda", "tpu")])
def test_exports_small_real_batches(platforms):
    # real batches of n <= 16 keep eigjax's eigh forward (its solver is chosen per
    # lowering platform; exports never embed the native CPU kernel)
    shape = jax.ShapeDtypeStruct((100, 8, 8), np.float32)
    exp = jax.export.export(jax.jit(eigjax.eigvalsh), platforms=platforms)(shape)
    assert "custom_call @eigjax_" not in exp.mlir_module()


# ---------------------------------------------------------------------------
# Sharding: the batch of the LAPACK calls is partitioned, not gathered.

_SHARDED = """
import faulthandler
faulthandler.dump_traceback_later(90, exit=True)  # a hang prints every thread's stack and exits
import jax, jax.numpy as jnp, numpy as np, eigjax
mesh = jax.sharding.Mesh(np.array(jax.devices()), ("b",))
s = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("b"))
x = np.random.default_rng(0).standard_normal((4, {n}, {n})).astype(np.float32)
f = jax.jit(eigjax.eigvalsh, in_shardings=s, out_shardings=s)
a = jax.device_put(jnp.asarray(x), s)
assert "all-gather" not in f.lower(a).compile().as_text()
print("compiled", flush=True)
err = np.abs(np.asarray(f(a)) - np.linalg.eigvalsh((x + np.swapaxes(x, -1, -2)) / 2)).max()
assert err < 1e-3, err
print("ok")
"""


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="host-platform device count")
def test_batch_sharded_without_gather():
    import os
    import subprocess
    import sys
    import warnings

    # Known, not diagnosed: in two fresh-clone CI runs out of about ten (the other xdist
    # worker busy) this subprocess hung past 300 s; alone it takes 2 s, and a hundred
    # runs here, loaded or not, never hung. The subprocess now runs with one BLAS thread,
    # without the session's shared compilation cache and optimisation settings (only what
    # the test needs), and dumps every thread's stack if it hangs for 90 s. A hang is
    # retried once in a fresh process and reported as a warning with that stack; a second
    # hang, a gathered batch or a wrong number fails.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1")
    code = _SHARDED.format(n=_eigvals_only.BLOCKED_N + 4)
    run = lambda: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    out = run()
    if out.returncode != 0 and "Timeout" in out.stderr and "ok" not in out.stdout:
        warnings.warn(f"sharded eigvalsh hung once (retried); stacks:\n{out.stderr[-6000:]}", stacklevel=1)
        first = out.stderr[-3000:]
        out = run()
        assert out.returncode == 0 and "ok" in out.stdout, f"hung twice; first:\n{first}\nsecond:\n{out.stderr[-3000:]}"
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
