"""The native batched Jacobi kernel (eigjax._native, eigjax/_small_native.cc).

The same bounds as the pure-JAX small solvers (issue 6; tests/library/test_small.py): residual
<= 50 eps ||A||, orthogonality <= 50 n eps, eigenvalues against NumPy's LAPACK, on the
random, degenerate, nearly degenerate and badly scaled (1e+-30) families, float32 and
float64; for the sizes with a compiled-in n and for a runtime n. Derivatives through
eigjax.eigh equal those of the LAPACK path. Build failure and EIGJAX_NATIVE=0 fall back.

Skipped only where the machine has no C++ compiler at all (then eigjax cannot build
the kernel and uses its other solvers; the fallback tests below still run).
"""

import os
import shutil
import subprocess
import sys

import helpers as h
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_small import FAMILIES, check_bounds, family

import eigjax
from eigjax import _native

has_compiler = any(shutil.which(c) for c in ("g++", "c++", "clang++")) or os.environ.get("CXX")
needs_kernel = pytest.mark.skipif(not has_compiler, reason="no C++ compiler on this machine")


@needs_kernel
def test_builds_here():
    assert _native.status() == "ok"


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 16])  # 7: the runtime-n code path
@pytest.mark.parametrize("fam", FAMILIES)
def test_accuracy(fam, n, dtype):
    a = family(fam, n, dtype)
    w, v = jax.jit(lambda a: _native.eigh(a, False))(jnp.asarray(a))
    assert w.dtype == dtype and v.dtype == dtype
    check_bounds(a, w, v, dtype)


@needs_kernel
def test_lower_triangle_symmetrize_batch_shapes_and_vmap():
    r = h.rng(3)
    a = h.random_hermitian(r, 5, batch=(2, 3))
    junk = a + np.triu(r.standard_normal((2, 3, 5, 5)), 1)  # garbage above the diagonal
    w, v = _native.eigh(jnp.asarray(junk), False)
    assert w.shape == (2, 3, 5) and v.shape == (2, 3, 5, 5)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(a), atol=1e-12)
    full = r.standard_normal((4, 5, 5))
    w, _ = _native.eigh(jnp.asarray(full), True)
    np.testing.assert_allclose(w, np.linalg.eigvalsh((full + np.swapaxes(full, -1, -2)) / 2), atol=1e-12)
    wv, vv = jax.vmap(lambda x: _native.eigh(x, True))(jnp.asarray(full))
    np.testing.assert_array_equal(wv, w)


@needs_kernel
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gives_nan_and_leaves_the_others(bad):
    for dtype in (np.float32, np.float64):
        a = family("random", 6, dtype, seed=5)[:40]  # 40: a partial last block of lanes
        a[3, 0, 0] = bad
        a[39, 5, 0] = a[39, 0, 5] = bad
        a[7, 0, 5] = bad  # upper triangle only: not read without symmetrize, still NaN
        w, v = (np.asarray(x) for x in _native.eigh(jnp.asarray(a), True))
        for i in (3, 7, 39):
            assert np.all(np.isnan(w[i])) and np.all(np.isnan(v[i])), (dtype, i)
        ok = np.ones(len(a), bool)
        ok[[3, 7, 39]] = False
        check_bounds(a[ok], w[ok], v[ok], dtype)
        w, v = _native.eigh(jnp.asarray(a), False)  # issue 19 item 3: was finite for matrix 7
        assert np.all(np.isnan(np.asarray(w)[7])) and np.all(np.isnan(np.asarray(v)[7]))


@needs_kernel
def test_extreme_scales():
    """Subnormal, 1e-300 and 1e300 (float64), and the zero matrix: finite, accurate."""
    r = h.rng(8)
    base = h.random_hermitian(r, 4, batch=(20,))
    for dtype, scales in (
        (np.float32, [float(np.finfo(np.float32).smallest_subnormal) * 64, 1e-38, 1e38]),
        (np.float64, [float(np.finfo(np.float64).smallest_subnormal) * 64, 1e-300, 1e300]),
    ):
        for s in scales:
            a = (base / np.max(np.abs(base)) * s).astype(dtype)
            w, v = (np.asarray(x, np.float64) for x in _native.eigh(jnp.asarray(a), False))
            assert np.all(np.isfinite(w)) and np.all(np.isfinite(v)), (dtype, s)
            np.testing.assert_allclose(
                np.swapaxes(v, -1, -2) @ v, np.broadcast_to(np.eye(4), v.shape), atol=50 * 4 * np.finfo(dtype).eps
            )
            if s >= 1e-30:  # normal input: the full bounds, checked on an exactly rescaled copy
                p2 = 2.0 ** np.round(np.log2(s))  # (NumPy's float64 norm overflows at 1e300)
                check_bounds(a.astype(np.float64) / p2, w / p2, v, dtype)
        w, v = _native.eigh(jnp.zeros((3, 4, 4), dtype), False)
        assert np.all(np.asarray(w) == 0) and np.allclose(np.asarray(v), np.eye(4))


@needs_kernel
@pytest.mark.parametrize("n", [3, 8])
def test_derivatives_through_eigh_match_lapack_path(n):
    """eigjax.eigh uses the kernel here (checked in test_small's dispatch test); its
    gradients and Hessian-vector products equal those computed on the LAPACK path."""
    r = h.rng(9)
    a = jnp.asarray(h.random_hermitian(r, n, batch=(6,)))
    da = jnp.asarray(h.hermitian_direction(r, (6, n, n)))
    g = jnp.asarray(r.standard_normal(n))

    def lapack(a):
        v, w = jax.lax.linalg.eigh(a, lower=True, symmetrize_input=False)
        return w, v

    def loss(solve):
        def f(a):
            w, v = solve(a)
            return jnp.sum(w**2) + jnp.sum(g[None, :] * v[..., 0, :] ** 2)  # sign-invariant

        return f

    ours = loss(lambda a: tuple(eigjax.eigh(a)))
    ref = loss(lapack)
    d1 = lambda f: lambda a: jax.jvp(f, (a,), (da,))[1]  # derivative along the symmetric da
    d2 = lambda f: d1(d1(f))
    assert abs(float(d1(ours)(a) - d1(ref)(a))) <= 1e-10 * abs(float(d1(ref)(a)))
    assert abs(float(d2(ours)(a) - d2(ref)(a))) <= 1e-9 * abs(float(d2(ref)(a)))
    np.testing.assert_allclose(
        jax.grad(ours)(a), jax.grad(loss(lambda a: tuple(jnp.linalg.eigh(a))))(a), rtol=1e-9, atol=1e-10
    )


def _run(code, env):
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


_FALLBACK = """
import jax, numpy as np, eigjax
from eigjax import _native
a = np.random.default_rng(0).standard_normal((200, 3, 3)).astype(np.float32)
w, v = eigjax.eigh(a)
sym = (a + np.swapaxes(a, -1, -2)) / 2
err = float(np.max(np.abs(np.asarray(w) - np.linalg.eigvalsh(sym))))
print(_native.available(), "|", _native.status().splitlines()[0], "|", err)
"""


def test_disabled_by_environment_falls_back():
    avail, status, err = _run(_FALLBACK, {"EIGJAX_NATIVE": "0"}).strip().split(" | ")
    assert avail == "False" and "EIGJAX_NATIVE=0" in status
    assert float(err) < 1e-5


def test_failed_build_falls_back(tmp_path):
    """A compiler that fails (CXX=false) and an empty cache: no kernel, a reason, and
    eigjax.eigh still right (the pure-JAX solver)."""
    avail, status, err = (
        _run(_FALLBACK, {"CXX": shutil.which("false") or "/bin/false", "EIGJAX_CACHE_DIR": str(tmp_path)})
        .strip()
        .split(" | ")
    )
    assert avail == "False" and "failed" in status
    assert float(err) < 1e-5


def _run_full(code, env):
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout, out.stderr


def test_failed_build_says_so_once(tmp_path):
    """Issue 16 item 5: one log line when the kernel falls back (not for EIGJAX_NATIVE=0)."""
    _, err = _run_full(_FALLBACK, {"CXX": shutil.which("false") or "/bin/false", "EIGJAX_CACHE_DIR": str(tmp_path)})
    assert err.count("native small-matrix kernel is not used") == 1, err
    _, err = _run_full(_FALLBACK, {"EIGJAX_NATIVE": "0"})
    assert "not used" not in err


_STATUS = """
import eigjax.internal
print(eigjax.internal.native_status())
"""


@needs_kernel
def test_cache_is_verified_before_loading(tmp_path):
    """Issue 19 item 11 and issue 16 item 5: a fresh cache builds (one line says so) into a
    private directory, with a checksum beside the library; a truncated library, and a
    planted one without a matching checksum, are rebuilt, never loaded; a cache directory
    others can write to is not used; stale temporaries of dead builders are removed."""
    cache = tmp_path / "cache"
    env = {"EIGJAX_CACHE_DIR": str(cache)}
    out, err = _run_full(_STATUS, env)
    assert out.strip() == "ok" and err.count("compiling the native small-matrix kernel") == 1, err
    assert (cache.stat().st_mode & 0o777) == 0o700
    (so,) = cache.glob("small_native_*.so")
    digest = so.with_suffix(".sha256").read_text()
    out, err = _run_full(_STATUS, env)  # cached: no build
    assert out.strip() == "ok" and "compiling" not in err
    # truncated (a crash mid-copy, a full disk): was SIGBUS on every later call
    so.write_bytes(so.read_bytes()[:4096])
    stale = cache / f"{so.stem}.999999999.so.tmp"  # a dead builder's temporary
    stale.write_bytes(b"junk")
    out, err = _run_full(_STATUS, env)
    assert out.strip() == "ok" and "compiling" in err and so.with_suffix(".sha256").read_text() == digest
    assert not stale.exists()
    # a planted library with the predictable name but no checksum of ours: rebuilt
    so.with_suffix(".sha256").unlink()
    so.write_bytes(b"\x7fELF planted")
    out, err = _run_full(_STATUS, env)
    assert out.strip() == "ok" and "compiling" in err
    # a cache directory writable by others: not trusted, built in a private temp dir
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    out, err = _run_full(_STATUS, {"EIGJAX_CACHE_DIR": str(shared)})
    assert out.strip() == "ok" and "writable by others" in err
    assert not list(shared.glob("*.so"))


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [3, 8, 16])
def test_values_only_kernel(n, dtype):
    """Issue 20: eigvalsh of a small real batch lowers to the kernel's values-only variant
    (no eigenvector rotations), whose eigenvalues are bitwise the full kernel's (the
    rotations of A do not depend on V); the NaN contract holds (either triangle)."""
    a = family("random", n, dtype, seed=11)[:40].copy()
    a[5, 0, n - 1] = np.nan  # upper triangle only
    x = jnp.asarray(a)
    f = jax.jit(lambda x: eigjax.eigvalsh(x, symmetrize=False))
    assert f"eigjax_small_eigvalsh_f{np.dtype(dtype).itemsize * 8}" in f.lower(x).as_text()
    w = np.asarray(f(x))
    w_full = np.asarray(jax.jit(lambda x: eigjax.eigh(x, symmetrize=False).eigenvalues)(x))
    np.testing.assert_array_equal(w, w_full)
    assert np.all(np.isnan(w[5])) and np.all(np.isfinite(np.delete(w, 5, axis=0)))
