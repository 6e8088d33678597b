"""Small-matrix fast path (eigjax._small): accuracy on hard families, dispatch, derivatives.

Bounds (issue 6): ||A V - V diag(w)|| / ||A|| <= 50 eps and ||V^T V - I|| <= 50 n eps,
checked in float64 arithmetic on the solver's output, for random, exactly degenerate,
nearly degenerate and badly scaled (1e+-30) inputs, float32 and float64. Eigenvalues are
also compared with NumPy's LAPACK in float64 (independent oracle).
"""

import re

import helpers as h
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eigjax
import eigjax._small as small
import eigjax.internal
from eigjax import _native
from eigjax._small import eigh_small

BATCH = small.SMALL_MIN_BATCH  # the fast path is taken from this batch size on


def family(name, n, dtype, seed=0):
    r = h.rng(seed + 7 * n)
    if name == "random":
        a = h.random_hermitian(r, n, batch=(BATCH,))
    elif name == "degenerate":  # exact: Q diag(1,..,1,2,..,2) Q^T, and the zero/identity matrix
        w = np.where(np.arange(n) < (n + 1) // 2, 1.0, 2.0)
        a = h.with_spectrum(r, w, batch=(BATCH,))
        a[0] = np.eye(n)
        a[1] = 0.0
    elif name == "near":  # clusters split by ~eps(dtype)
        tiny = 4 * float(np.finfo(dtype).eps)
        w = np.where(np.arange(n) < (n + 1) // 2, 1.0, 2.0) + tiny * np.arange(n)
        a = h.with_spectrum(r, w, batch=(BATCH,))
    elif name == "big":
        a = 1e30 * h.random_hermitian(r, n, batch=(BATCH,))
    elif name == "small":
        a = 1e-30 * h.random_hermitian(r, n, batch=(BATCH,))
    else:
        raise AssertionError(name)
    return a.astype(dtype)


FAMILIES = ["random", "degenerate", "near", "big", "small"]


def check_bounds(a, w, v, dtype):
    a, w, v = (np.asarray(x, np.float64) for x in (a, w, v))
    n = a.shape[-1]
    eps = float(np.finfo(dtype).eps)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(v))
    anorm = np.linalg.norm(a, axis=(-2, -1))
    res = np.linalg.norm(a @ v - v * w[..., None, :], axis=(-2, -1))
    res = res / np.where(anorm > 0, anorm, 1.0)
    orth = np.linalg.norm(np.swapaxes(v, -1, -2) @ v - np.eye(n), axis=(-2, -1))
    assert res.max() <= 50 * eps, f"residual {res.max() / eps:.1f} eps"
    assert orth.max() <= 50 * n * eps, f"orthogonality {orth.max() / (n * eps):.1f} n eps"
    assert np.all(np.diff(w, axis=-1) >= 0), "eigenvalues not ascending"
    # Independent oracle: LAPACK in float64 on the same (rounded) input.
    ref = np.linalg.eigvalsh(a)
    scale = np.max(np.abs(ref), axis=-1, keepdims=True)
    assert np.all(np.abs(w - ref) <= 20 * n * eps * np.where(scale > 0, scale, 1.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("fam", FAMILIES)
def test_direct_accuracy(fam, n, dtype):
    a = family(fam, n, dtype)
    w, v = jax.jit(eigh_small)(jnp.asarray(a))
    assert w.dtype == dtype and v.dtype == dtype
    check_bounds(a, w, v, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("fam", FAMILIES)
def test_through_eigh(fam, n, dtype):
    a = family(fam, n, dtype, seed=1)
    w, v = eigjax.eigh(jnp.asarray(a))
    check_bounds(a, w, v, dtype)


def test_reads_lower_triangle_and_batch_shapes():
    r = h.rng(3)
    a = h.random_hermitian(r, 3, batch=(2, 5))
    junk = a + np.triu(r.standard_normal((2, 5, 3, 3)), 1)  # upper triangle garbage
    w, v = eigh_small(jnp.asarray(junk))
    assert w.shape == (2, 5, 3) and v.shape == (2, 5, 3, 3)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(a), atol=1e-12)
    w8, _ = eigh_small(jnp.asarray(np.tril(h.random_hermitian(r, 8, batch=(4,)))))
    assert w8.shape == (4, 8)


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_symmetrize_uses_the_hermitian_part(n):
    """eigh_small(symmetrize=True) and eigjax.eigh on a fast-path batch of non-symmetric
    input both decompose (a + a^T) / 2 (the unrolled solvers form it entry by entry)."""
    r = h.rng(4)
    a = r.standard_normal((BATCH, n, n))
    want = np.linalg.eigvalsh((a + np.swapaxes(a, -1, -2)) / 2)
    w, v = eigh_small(jnp.asarray(a), symmetrize=True)
    np.testing.assert_allclose(w, want, atol=1e-12)
    np.testing.assert_allclose(eigjax.eigvalsh(jnp.asarray(a)), want, atol=1e-12)
    sym = (a + np.swapaxes(a, -1, -2)) / 2
    assert np.max(np.abs(sym @ np.asarray(v) - np.asarray(v) * np.asarray(w)[..., None, :])) < 1e-12


def solver_in(f, shape, platform="cpu", dtype=jnp.float32):
    """The small-matrix solver in the program ``f`` lowered for ``platform``, read from
    the lowered module: the native kernel's custom call, LAPACK's or cuSOLVER's, or
    neither (the pure-JAX solvers)."""
    x = jax.ShapeDtypeStruct(shape, dtype)
    if platform == "cpu":
        text = jax.jit(f).lower(x).as_text()
    elif platform == "cuda-jit":  # lowered for a GPU as jax.jit does, not for export
        text = jax.jit(f).trace(x).lower(lowering_platforms=("cuda",)).as_text()
    else:
        text = jax.export.export(jax.jit(f), platforms=[platform])(x).mlir_module()
    targets = set(re.findall(r"custom_call @([\w$.]+)", text))
    if "__gpu$xla.gpu.triton" in targets:
        assert targets == {"__gpu$xla.gpu.triton"}, targets
        return "pallas"
    if any(t.startswith("eigjax_small_eigh") for t in targets):
        return "native"
    if any("syev" in t or "heev" in t or t == "Eigh" for t in targets):  # LAPACK, cuSOLVER, TPU
        return "lapack" if platform == "cpu" else "backend"
    assert not targets, targets
    return "jax"


def test_dispatch_uses_fast_path_only_where_measured():
    big = small.SMALL_MIN_BATCH
    native = "native" if _native.available() else None
    cpu = eigjax.internal.cpu_solver
    assert cpu(2, big) == "jax" and cpu(2, big - 1) == (native or "lapack")
    assert cpu(3, big) == (native or "jax") and cpu(3, big - 1) == (native or "lapack")
    assert cpu(16, big) == (native or "lapack")
    assert cpu(3, big, for_export=True) == "jax" and cpu(8, big, for_export=True) == "lapack"
    acc, many = eigjax.internal.accel_solver, small.ACCEL_MIN_BATCH
    assert acc(2, 1) == acc(3, 1) == acc(4, many) == "jax"
    assert acc(4, many - 1) == acc(5, many) == acc(8, many - 1) == acc(16, many) == acc(17, 1) == "backend"
    # what the lowered programs contain (the choice is made at lowering, per platform)
    assert solver_in(eigjax.eigh, (big, 2, 2)) == "jax"  # the one-pass unrolled solver
    assert solver_in(eigjax.eigh, (big - 1, 2, 2)) == (native or "lapack")
    assert solver_in(eigjax.eigh, (big, 3, 3)) == (native or "jax")
    assert solver_in(eigjax.eigh, (3, 3)) == (native or "lapack")
    assert solver_in(eigjax.eigh, (big, 16, 16)) == (native or "lapack")
    assert solver_in(eigjax.eigh, (big, 17, 17)) == "lapack"
    # jax.vmap: the batching rule hands the whole mapped axis to the lowering
    assert solver_in(jax.vmap(eigjax.eigh), (big, 2, 2)) == "jax"
    assert solver_in(jax.vmap(jax.grad(lambda a: eigjax.eigh(a)[1][0, 0] ** 2)), (big, 2, 2)) == "jax"
    assert solver_in(jax.vmap(eigjax.eigh), (2, 2, 2)) == (native or "lapack")
    # a GPU or TPU program never holds the CPU kernel (lowered here, on a CPU-only machine)
    for platform in ("cuda", "tpu"):
        for shape in ((3, 3), (big, 3, 3), (many, 4, 4)):
            assert solver_in(eigjax.eigh, shape, platform) == "jax", (platform, shape)
        for shape in ((big, 4, 4), (many, 8, 8), (many, 16, 16), (big, 17, 17)):
            assert solver_in(eigjax.eigh, shape, platform) == "backend", (platform, shape)


def test_gpu_dispatch_uses_the_pallas_kernel_only_where_measured():
    """On CUDA the Pallas kernel solves float32 batches of 1e6 or more at n = 3, 4 (the
    H200 measurement, BENCHMARKS.md); float64, n = 2, smaller batches, TPU/ROCm and
    exported programs (Triton calls have no compatibility guarantee) keep the stable
    solvers. Read from the lowered modules, lowered here on a CPU-only machine."""
    acc, big = eigjax.internal.accel_solver, 10**6
    assert acc(3, big) == acc(4, big) == acc(4, 4 * big) == "pallas"
    assert acc(3, big - 1) == acc(2, big) == acc(3, big, np.float64) == "jax"
    assert acc(3, big, platform="tpu") == acc(3, big, platform="rocm") == acc(3, big, for_export=True) == "jax"
    assert acc(5, big) == acc(8, big) == "backend"
    for n in (3, 4):
        assert solver_in(eigjax.eigh, (big, n, n), "cuda-jit") == "pallas"
        assert solver_in(eigjax.eigvalsh, (big, n, n), "cuda-jit") == "pallas"
        assert solver_in(jax.grad(lambda a: jnp.sum(eigjax.eigh(a)[1] ** 4)), (big, n, n), "cuda-jit") == "pallas"
        assert solver_in(eigjax.eigh, (big, n, n), "cuda") == "jax"  # exported
        assert solver_in(eigjax.eigh, (big, n, n), "cuda-jit", jnp.float64) == "jax"
    assert solver_in(eigjax.eigh, (big - 1, 3, 3), "cuda-jit") == "jax"
    assert solver_in(jax.vmap(eigjax.eigh), (big, 3, 3), "cuda-jit") == "pallas"


def test_entries_plan_routes_a_size_to_the_entry_solver(monkeypatch):
    """``ENTRIES_PLAN`` is the one table of the pure-JAX route on accelerators: an entry
    for n = 6 (what ``bench_gpu.py --try-entries`` adds) makes the CUDA and TPU lowerings
    of ``eigh`` and its gradient pure JAX from that batch size on, and nothing else."""
    assert small.accel_plan(6, 10**6) is None  # not measured on a GPU: cuSOLVER
    monkeypatch.setattr(small, "ENTRIES_PLAN", dict(small.ENTRIES_PLAN))  # restored after the test
    eigjax.internal.route_to_entry_solver(6, 1000)
    assert small.accel_plan(6, 1000) == {"method": "entries"} and small.accel_plan(6, 999) is None
    grad = jax.grad(lambda a: jnp.sum(eigjax.eigh(a)[1] ** 4))
    with pytest.raises(ValueError, match="2 <= n <= 16"):
        eigjax.internal.route_to_entry_solver(17)
    for platform in ("cuda-jit", "tpu"):
        assert solver_in(eigjax.eigh, (1000, 6, 6), platform) == "jax"
        assert solver_in(grad, (1000, 6, 6), platform) == "jax"
        assert solver_in(eigjax.eigh, (999, 6, 6), platform) == "backend"
        assert solver_in(eigjax.eigh, (1000, 7, 7), platform) == "backend"


def test_complex_routed_to_backend_solver():
    r = h.rng(4)
    a = h.random_hermitian(r, 3, np.complex128, batch=(4,))
    w, v = eigjax.eigh(jnp.asarray(a))
    check_bounds_c = np.linalg.norm(a @ np.asarray(v) - np.asarray(v) * np.asarray(w)[..., None, :])
    assert check_bounds_c < 1e-12
    with pytest.raises(TypeError, match="must be real"):
        eigh_small(jnp.asarray(a))


@pytest.mark.parametrize("n", [2, 3, 4, 6])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_matrix_gives_all_nan_and_leaves_the_others(n, bad):
    """A NaN or inf entry (diagonal or not) makes that matrix's eigenvalues and
    eigenvectors all NaN; the other matrices of the batch are untouched."""
    for dtype in (np.float32, np.float64):
        a = family("random", n, dtype, seed=5)
        a[3, 0, 0] = bad
        a[7, n - 1, 0] = a[7, 0, n - 1] = bad
        # the pure-JAX solver, and eigjax.eigh (the native kernel, or the same solver)
        for w, v in (eigh_small(jnp.asarray(a), symmetrize=True), eigjax.eigh(a)):
            w, v = np.asarray(w), np.asarray(v)
            for i in (3, 7):
                assert np.all(np.isnan(w[i])) and np.all(np.isnan(v[i])), (dtype, i)
            ok = np.ones(len(a), bool)
            ok[[3, 7]] = False
            check_bounds(a[ok], w[ok], v[ok], dtype)


def test_subnormal_input_is_scaled_up_without_overflow():
    """max |a_ij| subnormal: the power-of-two scale is clipped to a normal number."""
    for dtype in (np.float32, np.float64):
        tiny = float(np.finfo(dtype).smallest_subnormal) * 64
        a = (tiny * np.sign(family("random", 3, np.float64, seed=6))).astype(dtype)
        for w, v in (eigh_small(jnp.asarray(a)), eigjax.eigh(a)):  # pure JAX; native (if built)
            assert np.all(np.isfinite(np.asarray(w))) and np.all(np.isfinite(np.asarray(v)))
            np.testing.assert_allclose(
                np.asarray(v).swapaxes(-1, -2) @ np.asarray(v), np.broadcast_to(np.eye(3), v.shape), atol=1e-5
            )


@pytest.mark.parametrize("n", [3, 4])
def test_sweep_count_margin(n, monkeypatch):
    """One sweep fewer than the fixed count already meets the bounds: the count has margin."""
    for dtype in (np.float32, np.float64):
        sweeps = small._UNROLLED_SWEEPS[(n, np.dtype(dtype))]
        monkeypatch.setitem(small._UNROLLED_SWEEPS, (n, np.dtype(dtype)), sweeps - 1)
        for fam in ("random", "near"):
            a = family(fam, n, dtype, seed=11)
            w, v = small._eigh_unrolled(jnp.asarray(a))
            check_bounds(a, w, v, dtype)


# --- derivatives: the fast path feeds the same custom JVP as the general path -------


def general_eigh(a):
    """Reference: the backend solver, jnp.linalg.eigh (its own derivative rule)."""
    return jnp.linalg.eigh(a)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_grad_matches_general_path(n):
    r = h.rng(20 + n)
    a = jnp.asarray(h.random_hermitian(r, n, batch=(BATCH,)))
    g = jnp.asarray(r.standard_normal(n))

    def loss(eigh):
        def f(a):
            w, v = eigh(a)
            proj = jnp.einsum("...ik,k,...jk->...ij", v, g, v)  # gauge invariant
            return jnp.sum(w**3) + jnp.sum(proj * a) + jnp.sum(jnp.sin(proj))

        return f

    got = jax.jit(jax.grad(loss(eigjax.eigh)))(a)
    want = jax.jit(jax.grad(loss(general_eigh)))(a)
    want = (want + jnp.swapaxes(want, -1, -2)) / 2
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    # Second order through the fast path: Hessian-vector product vs the general path.
    da = jnp.asarray(h.hermitian_direction(r, (BATCH, n, n)))

    def hvp(eigh):
        return jax.jit(lambda a, da: jax.jvp(jax.grad(loss(eigh)), (a,), (da,))[1])(a, da)

    hv_got, hv_want = hvp(eigjax.eigh), hvp(general_eigh)
    hv_want = (hv_want + jnp.swapaxes(hv_want, -1, -2)) / 2
    np.testing.assert_allclose(hv_got, hv_want, rtol=1e-7, atol=1e-8)


def _fast(f, shape):
    """``f`` mapped over a batch large enough for the fast path (checked in its jaxpr)."""
    fb = lambda a: jnp.sum(jax.vmap(f)(a))  # noqa: E731
    jaxpr = str(jax.make_jaxpr(jax.grad(fb))(jnp.ones((BATCH, *shape))))
    assert jax.default_backend() != "cpu" or not re.search(r"= eigh\[", jaxpr)
    return fb


def test_grad_at_exact_degeneracy_matches_fd():
    """Exactly degenerate 3x3 through the fast path: finite gradient equal to FD."""
    r = h.rng(30)
    a = np.stack([h.with_spectrum(r, [1.0, 1.0, 3.0]) for _ in range(BATCH)])

    def f(a):
        w, v = eigjax.eigh(a)
        return jnp.sum(v**2 * w[None, :]) + jnp.sum(v[:, :2] @ v[:, :2].T * a)  # projector onto the pair

    fb = _fast(f, (3, 3))
    da = h.hermitian_direction(r, (BATCH, 3, 3))
    h.assert_fd_match(jax.jit(fb), a, da, rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(jax.jit(jax.grad(fb))(jnp.asarray(a)))))


def test_eigvalsh_hessian_fast_path():
    r = h.rng(31)
    a = jnp.asarray(h.random_hermitian(r, 3, batch=(BATCH,)))
    da = jnp.asarray(h.hermitian_direction(r, (BATCH, 3, 3)))
    f = _fast(lambda a: jnp.sum(eigjax.eigvalsh(a) ** 3), (3, 3))
    g = lambda a: jnp.sum(jnp.linalg.eigvalsh(a) ** 3)  # noqa: E731
    hf = jax.jit(lambda a, da: jax.jvp(jax.grad(f), (a,), (da,))[1])(a, da)
    hg = jax.jit(lambda a, da: jax.jvp(jax.grad(g), (a,), (da,))[1])(a, da)
    np.testing.assert_allclose(hf, (hg + jnp.swapaxes(hg, -1, -2)) / 2, rtol=1e-8, atol=1e-9)
