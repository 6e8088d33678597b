"""The accelerators' small-matrix solver, tested on the CPU, and batch sharding (issue 16).

* ``eigh_small_accel`` is what a program lowered for a GPU or TPU runs for real
  ``2 <= n <= 16`` (eigjax/_small_dispatch.py). It is pure JAX, so its accuracy is tested
  here with the native kernel's bounds (tests/library/test_small.py::check_bounds: residual
  <= 50 eps ||A||, orthogonality <= 50 n eps, eigenvalues against LAPACK) on the random,
  exactly degenerate, clustered and 1e+-30 families, float32 and float64, both methods.
* A batch sharded over 4 forced CPU devices runs the native kernel where it lies: the
  compiled program has no all-gather (read from its HLO) and gives the same numbers.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_small import FAMILIES, check_bounds, family

import eigjax
import eigjax.internal
from eigjax import _native

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n, method",
    [
        (2, "entries"),
        (3, "entries"),
        (4, "entries"),
        (5, "entries"),  # round-robin with the skip rule, odd n padded
        (6, "entries"),  # without the skip rule: residual 409 eps on the degenerate family (float64)
        (9, "entries"),  # n > 8: a step per loop body (fori_loop) instead of a whole sweep
        (4, "tiled"),
        (5, "tiled"),
        (8, "tiled"),
        (16, "tiled"),
    ],
)
def test_accel_solver_accuracy(n, method, dtype):
    solve = jax.jit(lambda a, s: eigjax.internal.eigh_small_accel(a, symmetrize=s, method=method), static_argnums=1)
    for name in FAMILIES:
        a = family(name, n, dtype)[:64]
        w, v = solve(jnp.asarray(a), False)
        check_bounds(a, w, v, dtype)
    # symmetrize: the symmetric part of a non-symmetric input
    a = family("random", n, dtype, seed=3)[:32]
    a = a + np.triu(np.ones((n, n), dtype), 1)
    w, v = solve(jnp.asarray(a), True)
    check_bounds((a + np.swapaxes(a, -1, -2)) / 2, w, v, dtype)


@pytest.mark.parametrize("n, method", [(4, "entries"), (4, "tiled"), (5, "entries")])
def test_accel_solver_nan_and_overflow(n, method):
    a = family("random", n, np.float64)[:6].copy()
    a[1, 0, n - 1] = np.nan  # upper triangle only: not read, still all-NaN
    a[2, 2, 1] = np.inf
    a[4] = np.diag(np.arange(n, dtype=np.float64))
    a[4, :2, :2] = [[1, 1e308], [1e308, 1]]  # (a + a^T)/2 would overflow
    for sym in (False, True):
        w, v = (np.asarray(x) for x in eigjax.internal.eigh_small_accel(jnp.asarray(a), symmetrize=sym, method=method))
        assert np.all(np.isnan(w[[1, 2]])) and np.all(np.isnan(v[[1, 2]]))
        assert np.all(np.isfinite(w[[0, 3, 4, 5]]))
        np.testing.assert_allclose(w[4], [-1e308, *range(2, n), 1e308], rtol=1e-12)


def test_hermitian_part_does_not_overflow():
    """Issue 19 item 2: entries above max/2 gave inf in (a + a^H)/2, then V = I and the
    diagonal as eigenvalues (native kernel, LAPACK path, expm)."""
    for dtype, big in ((np.float64, 1e308), (np.float32, 2e38)):
        for n in (2, 3, 20):  # native or one-pass solver, LAPACK
            a = np.eye(n, dtype=dtype)
            a[0, 1] = a[1, 0] = big
            want = np.linalg.eigvalsh(a.astype(np.float64) / big) * big
            for batch in ((), (200,)):
                x = jnp.asarray(np.broadcast_to(a, (*batch, n, n)))
                w = np.asarray(eigjax.eigvalsh(x), np.float64).reshape(-1, n)
                np.testing.assert_allclose(w, np.broadcast_to(want, w.shape), rtol=1e-5)
    e = np.asarray(eigjax.expm(jnp.asarray([[0.0, 1e308], [1e308, 0.0]])))
    assert not np.allclose(e, np.eye(2))  # was exactly the identity


SHARDED = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import eigjax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    assert len(jax.devices()) == 4
    mesh = Mesh(np.array(jax.devices()), ("b",))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 6)); x = x + x.transpose(0, 2, 1)
    xs = jax.device_put(x, NamedSharding(mesh, P("b")))
    out = {}
    for name, f in {
        "eigh": jax.jit(eigjax.eigh),
        "grad": jax.jit(jax.grad(lambda a: jnp.sum(eigjax.eigh(a).eigenvectors ** 4))),
    }.items():
        compiled = f.lower(xs).compile()
        hlo = compiled.as_text()
        got, want = f(xs), f(x)
        leaves = jax.tree_util.tree_leaves(got)
        out[name] = {
            "all_gather": "all-gather" in hlo or "all-to-all" in hlo,
            "kernel": "eigjax_small_eigh_f64" in hlo,
            "same": all(bool(np.allclose(g, w, rtol=0, atol=1e-13)) for g, w in zip(leaves, jax.tree_util.tree_leaves(want))),
            "sharded": [str(l.sharding.spec) for l in leaves],
        }
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not _native.available(), reason=f"native kernel not built: {_native.status()}")
def test_native_kernel_is_partitioned_along_the_batch():
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    p = subprocess.run([sys.executable, "-c", SHARDED], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert r["kernel"], (name, "the native kernel is not in the compiled program")
        assert not r["all_gather"], (name, "the batch was gathered")
        assert r["same"], (name, "sharded and unsharded results differ")
        assert all(s.startswith(("P('b'", "PartitionSpec('b'")) for s in r["sharded"]), (name, r["sharded"])


PALLAS_SHARDED = textwrap.dedent(
    """
    import functools, json, jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from eigjax._small_dispatch import _pallas_solve
    mesh = Mesh(np.array(jax.devices()), ("b",))
    x = np.random.default_rng(0).standard_normal((64, 3, 3)); x = x + x.transpose(0, 2, 1)
    xs = jax.device_put(x, NamedSharding(mesh, P("b")))
    out = {}
    for vectors in (True, False):
        for partition in (True, False):
            f = jax.jit(functools.partial(_pallas_solve, symmetrize=False, vectors=vectors,
                                          options={"block": 8}, partition=partition, interpret=True))
            hlo = f.lower(xs).compile().as_text()
            got, want = f(xs), f(x)
            out[f"{vectors} {partition}"] = {
                "all_gather": "all-gather" in hlo or "all-to-all" in hlo,
                "same": all(bool(np.allclose(g, w, rtol=0, atol=1e-13)) for g, w in zip(got, want)),
                "right": bool(np.allclose(got[0], np.linalg.eigvalsh(x), rtol=0, atol=1e-12)),
                "sharded": [str(l.sharding.spec) for l in got],
            }
    print(json.dumps(out))
    """
)


def test_pallas_kernel_is_partitioned_along_the_batch():
    """The GPU's Pallas path (a Triton call has no sharding rule) is wrapped in
    ``custom_partitioning``: run here with the kernel interpreted on 4 forced CPU
    devices, the partitioned program holds no all-gather, keeps the batch sharded and
    gives the same numbers; the same kernel unwrapped is gathered (the control)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    p = subprocess.run(
        [sys.executable, "-c", PALLAS_SHARDED], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for key, r in out.items():
        assert r["same"] and r["right"], key
        if key.endswith("True"):  # partitioned
            assert not r["all_gather"], (key, "the batch was gathered")
            assert all(s.startswith(("P('b'", "PartitionSpec('b'")) for s in r["sharded"]), (key, r["sharded"])
        else:  # the control: without the wrapper XLA gathers the batch
            assert r["all_gather"], key


def test_the_pallas_path_is_wrapped_only_in_programs_over_several_devices():
    """``custom_partitioning`` asserts on a program lowered with no devices (ahead of time,
    for a platform this machine lacks), so the CUDA lowering wraps the kernel only where
    the program spans several devices that XLA partitions: read from the lowering
    context's axis context as ``custom_partitioning`` reads it."""
    from types import SimpleNamespace as NS

    from eigjax._small_dispatch import _several_devices

    ctx = lambda axis_context: NS(module_context=NS(axis_context=axis_context))
    assert not _several_devices(ctx(NS(device_assignment=None, num_devices=1)))  # AOT, no devices
    assert not _several_devices(ctx(NS(device_assignment=("gpu0",), num_devices=1)))
    assert _several_devices(ctx(NS(device_assignment=("gpu0", "gpu1"), num_devices=2)))
    mesh = NS(axis_names=("b",), size=4)
    assert _several_devices(ctx(NS(mesh=mesh, manual_axes=())))  # partitioned by XLA
    assert not _several_devices(ctx(NS(mesh=mesh, manual_axes=("b",))))  # inside shard_map
