"""Tests for eigjax.eigh_partial (k extremal eigenpairs of dense / BCOO / matrix-free operators).

Oracles (independent of eigjax): NumPy's dense eigh of the test matrix, for the
eigenvalues and for the closed-form first-order perturbation gradient of gauge-invariant
losses (eigenvalue sums plus a weighted sum of the projector onto the block, which only
involves pairs across the block boundary); central finite differences for operator params.
The test spectrum has an exactly degenerate pair inside the block at both ends
(k = 4) and a gap after the block, as the derivative requires.

Compile time dominates this file (the solves at n <= 200 take milliseconds), so every
case is one jitted function that returns everything it checks, compiled with XLA's CPU
fusion emitters and backend optimisations off (same results up to rounding; compilation is
about 3x faster).
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import central_fd, hermitian_direction, random_hermitian, rel_err, rng, with_spectrum
from jax.experimental import sparse as jsparse

import eigjax

jit = functools.partial(
    jax.jit, compiler_options={"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
)

N = 200
SPEC = np.sort(
    np.concatenate([[1.0, 1.5, 2.0, 2.0, 3.0], np.linspace(5.0, 17.0, N - 10), [18.0, 19.0, 19.0, 19.5, 20.0]])
)
WEIGHT = np.sin(np.arange(N * N).reshape(N, N) / 7.0)


@functools.cache
def matrix():
    return with_spectrum(rng(0), SPEC)


def block(k, which):
    return slice(0, k) if which == "smallest" else slice(N - k, N)


def loss_from(w, v):
    """Gauge-invariant: eigenvalue sum plus a weighted sum of the projector V V^T."""
    return jnp.sum(w) + jnp.sum((v @ v.T) * WEIGHT)


@functools.cache
def reference_grad(k, which):
    """d loss_from / dA (symmetric) from NumPy's eigh: P_S + sum over i in S, j not in S."""
    w, v = np.linalg.eigh(matrix())
    inside = np.zeros(N, bool)
    inside[block(k, which)] = True
    vs, vr = v[:, inside], v[:, ~inside]
    ws = (WEIGHT + WEIGHT.T) / 2
    m = vr.T @ ws @ vs  # (n - k, k)
    d = 1.0 / (w[inside][None, :] - w[~inside][:, None])
    g = vr @ (2 * m * d) @ vs.T
    return vs @ vs.T + (g + g.T) / 2


def check_result(res, a, k, which, tol=1e-9):
    want = SPEC[block(k, which)]
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-10)
    assert bool(res.converged) and int(res.iterations) >= 1
    v, w = np.asarray(res.eigenvectors), np.asarray(res.eigenvalues)
    r = np.linalg.norm(np.asarray(a) @ v - v * w[None, :], axis=0)
    np.testing.assert_allclose(res.residual_norms, r, rtol=1e-3, atol=1e-13)
    assert np.all(r <= tol * np.max(np.abs(SPEC)))
    np.testing.assert_allclose(v.T @ v, np.eye(k), atol=1e-12)


# Covered across the three forms (each compile costs a second): dense (4, smallest),
# (1, largest) and (1, largest, Krylov); BCOO (4, largest) and (1, smallest); operator (4, largest) in
# forward mode and (4, smallest) against finite differences.
@pytest.mark.parametrize(
    "k,which,method", [(4, "smallest", "chebyshev"), (1, "largest", "chebyshev"), (1, "largest", "krylov")]
)
def test_dense_matches_eigh(k, which, method):
    a = jnp.asarray(matrix())

    @jit
    def run(a):
        def loss(a):
            res = eigjax.eigh_partial(a, k, which=which, method=method)
            return loss_from(res.eigenvalues, res.eigenvectors), res

        # trace(V V^T) = k: its cotangent for V lies in the subspace itself and is all
        # rounding once projected out; the solve must not amplify it.
        trace = lambda a: (lambda res: jnp.sum(res.eigenvalues) + jnp.sum(res.eigenvectors**2))(
            eigjax.eigh_partial(a, k, which=which, method=method)
        )
        return (*jax.grad(loss, has_aux=True)(a), jax.grad(trace)(a))

    g, res, g_trace = run(a)
    check_result(res, a, k, which)
    assert rel_err(g, reference_grad(k, which)) < 1e-8
    assert rel_err(g_trace, reference_projector(k, which)) < 1e-10


def test_eigenvalue_loss_runs_no_cg():
    """An eigenvalue-only loss gives the solve a zero right-hand side: CG stops at once.

    cg_tol = 0 would make any CG iteration run to cg_maxiter (10**9 here: hours). The
    solve is the same for every forward method; the dense path (n < 4 p) compiles fastest.
    """
    n, k = 20, 2
    spec = np.arange(1.0, n + 1)
    a = jnp.asarray(with_spectrum(rng(5), spec))
    loss = lambda a: jnp.sum(eigjax.eigh_partial(a, k, block_size=6, cg_tol=0.0, cg_maxiter=10**9).eigenvalues)
    g = jit(jax.grad(loss))
    g(a).block_until_ready()
    t = time.perf_counter()
    got = g(a)
    assert time.perf_counter() - t < 5.0
    _, v = np.linalg.eigh(np.asarray(a))
    np.testing.assert_allclose(got, v[:, :k] @ v[:, :k].T, atol=1e-10)


@pytest.mark.parametrize("k,which", [(4, "largest"), (1, "smallest")])
def test_bcoo_matches_eigh(k, which):
    """Concrete indices use the padded-row layout (k = 4); traced indices the BCOO product (k = 1)."""
    a = jnp.asarray(matrix())
    sp = bcoo_of(matrix())
    da = direction()

    def loss(data, indices):
        res = eigjax.eigh_partial(jsparse.BCOO((data, indices), shape=sp.shape), k, which=which)
        return loss_from(res.eigenvalues, res.eigenvectors), res

    if k == 4:
        g, res = jit(lambda data: jax.grad(lambda d: loss(d, sp.indices), has_aux=True)(data))(sp.data)
    else:
        g, res = jit(jax.grad(loss, has_aux=True))(sp.data, sp.indices)
    check_result(res, a, k, which)
    # Directional derivative along a symmetric perturbation (the BCOO is assumed Hermitian).
    idx = np.asarray(sp.indices)
    lin = float(jnp.sum(g * da[idx[:, 0], idx[:, 1]]))
    ref = float(np.sum(reference_grad(k, which) * da))
    assert abs(lin - ref) <= 1e-8 * abs(ref)


def direction():
    return hermitian_direction(rng(1), (N, N))


def bcoo_of(a):
    """BCOO with every entry of ``a`` (built in NumPy: BCOO.fromdense compiles for seconds)."""
    idx = np.argwhere(np.ones(a.shape, bool)).astype(np.int32)
    return jsparse.BCOO((jnp.asarray(a[idx[:, 0], idx[:, 1]]), jnp.asarray(idx)), shape=a.shape)


def test_operator_matches_eigh_forward_mode():
    a = jnp.asarray(matrix())
    k, which = 4, "largest"
    matvec = lambda m, x: m @ x
    loss = lambda m: loss_from(*eigjax.eigh_partial(matvec, k, which=which, params=m, n=N)[:2])
    da = direction()
    value, got = jit(lambda a, da: jax.jvp(loss, (a,), (da,)))(a, jnp.asarray(da))
    want = np.sum(SPEC[-k:]) + np.sum(reference_projector(k, which) * WEIGHT)
    np.testing.assert_allclose(float(value), want, rtol=1e-10)
    ref = float(np.sum(reference_grad(k, which) * da))
    assert abs(float(got) - ref) <= 1e-8 * abs(ref)


def reference_projector(k, which):
    _, v = np.linalg.eigh(matrix())
    vs = v[:, block(k, which)]
    return vs @ vs.T


def tridiagonal(params, x):
    """A(params) x with A = diag(d) + offdiag(e) (symmetric), matrix-free (no scatter)."""
    d, e = params
    zero = jnp.zeros((1,), x.dtype)
    return d * x + jnp.concatenate([e * x[1:], zero]) + jnp.concatenate([zero, e * x[:-1]])


def test_operator_params_grad_matches_fd():
    n, k = 120, 4
    r = rng(2)
    d = jnp.asarray(np.linspace(0.0, 6.0, n) + 0.3 * r.standard_normal(n))
    e = jnp.asarray(0.5 + 0.2 * r.standard_normal(n - 1))
    weight = jnp.asarray(r.standard_normal(n))
    dd, de = jnp.asarray(r.standard_normal(n)), jnp.asarray(r.standard_normal(n - 1))

    def loss(params):
        w, v = eigjax.eigh_partial(tridiagonal, k, params=params, n=n)[:2]
        return jnp.sum(w**2) + jnp.sum((v**2) @ jnp.ones((k,)) * weight)

    run = jit(jax.value_and_grad(loss))  # forward mode is checked in the tests below
    _, g = run((d, e))
    lin = float(jnp.sum(g[0] * dd) + jnp.sum(g[1] * de))
    fd = central_fd(lambda t: run((d + t * dd, e + t * de))[0], 0.0, 1.0, h=1e-4)
    assert abs(lin - float(fd)) <= 1e-7 * abs(float(fd))


@pytest.mark.parametrize("form", ["operator", "ell", "dense_complex"])
def test_layouts_agree(form):
    """``layout="rows"`` and ``"columns"`` (the hot loops' block layout) give the same
    eigenpairs and the same gradient of an eigenvector loss (whose solve runs the
    polynomial preconditioner), for a matvec, the padded-row BCOO product and complex."""
    n, k = 120, 3
    r = rng(7)
    if form == "operator":
        x0 = (
            jnp.asarray(np.linspace(0.0, 6.0, n) + 0.3 * r.standard_normal(n)),
            jnp.asarray(0.5 + 0.2 * r.standard_normal(n - 1)),
        )
        solve = lambda prm, layout: eigjax.eigh_partial(tridiagonal, k, params=prm, n=n, layout=layout)
    else:
        dt = np.complex128 if form == "dense_complex" else np.float64
        a = with_spectrum(r, np.linspace(0.0, 6.0, n), dt)
        if form == "ell":
            a = np.where(np.abs(a) > 0.05, a, 0.0)  # sparse-ish, still symmetric
            idx = np.argwhere(a != 0).astype(np.int32)
            x0 = jnp.asarray(a[idx[:, 0], idx[:, 1]])
            solve = lambda data, layout: eigjax.eigh_partial(
                jsparse.BCOO((data, jnp.asarray(idx)), shape=a.shape), k, layout=layout
            )
        else:
            x0 = jnp.asarray(a)
            solve = lambda m, layout: eigjax.eigh_partial(m, k, which="largest", layout=layout)
    weight = jnp.asarray(r.standard_normal(n))

    def loss(prm, layout):
        w, v = solve(prm, layout)[:2]
        return jnp.sum(w**2) + jnp.sum((jnp.abs(v) ** 2) @ jnp.ones((k,)) * weight)

    outs = {}
    for layout in ("rows", "columns"):
        res = jit(lambda prm: solve(prm, layout))(x0)
        assert bool(res.converged)
        outs[layout] = (res.eigenvalues, jit(jax.value_and_grad(lambda prm: loss(prm, layout)))(x0))
    (w_r, (l_r, g_r)), (w_c, (l_c, g_c)) = outs["rows"], outs["columns"]
    np.testing.assert_allclose(w_c, w_r, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(l_c, l_r, rtol=1e-10)
    for gc, gr in zip(jax.tree.leaves(g_c), jax.tree.leaves(g_r)):
        np.testing.assert_allclose(gc, gr, rtol=0, atol=1e-8 * float(jnp.max(jnp.abs(gr))))


def test_small_problem_dense_path_and_complex():
    n = 12
    r = rng(3)
    a = with_spectrum(r, np.arange(1.0, n + 1), np.complex128)
    da = hermitian_direction(r, (n, n), np.complex128)
    proj = lambda v: v @ jnp.conj(v.T)

    @jit
    def run(a, da):
        res = eigjax.eigh_partial(a, 3)
        return res, jax.jvp(lambda a: proj(eigjax.eigh_partial(a, 3).eigenvectors), (a,), (da,))[1]

    res, got = run(jnp.asarray(a), jnp.asarray(da))
    np.testing.assert_allclose(res.eigenvalues, [1.0, 2.0, 3.0], rtol=1e-12)
    assert int(res.iterations) == 0 and bool(res.converged)
    _, v = np.linalg.eigh(a)
    fd = central_fd(lambda a: proj(jnp.asarray(np.linalg.eigh(np.asarray(a))[1][:, :3])), a, da)
    assert rel_err(got, fd) < 1e-8


@pytest.mark.parametrize("method", ["chebyshev"])
def test_complex_iterative_path(method):
    n = 80
    r = rng(4)
    spec = np.linspace(1.0, 10.0, n)
    a = jnp.asarray(with_spectrum(r, spec, np.complex128))
    da = jnp.asarray(hermitian_direction(r, (n, n), np.complex128))
    proj = lambda v: v @ jnp.conj(v.T)

    @jit
    def run(a, da):
        # One forward: linearize gives forward mode, its transpose reverse mode.
        f = lambda a: (lambda res: (proj(res.eigenvectors), res))(
            eigjax.eigh_partial(a, 2, which="largest", method=method)
        )
        (_, res), f_jvp = jax.linearize(f, a)
        dp = f_jvp(da)[0]
        (g,) = jax.linear_transpose(lambda t: f_jvp(t)[0], a)(jnp.conj(da))
        return res, dp, g

    res, got, g = run(a, da)
    np.testing.assert_allclose(res.eigenvalues, spec[-2:], rtol=1e-10)
    assert int(res.iterations) >= 1 and bool(res.converged)
    w, v = np.linalg.eigh(np.asarray(a))
    vs, vr = v[:, -2:], v[:, :-2]
    c = (vr.conj().T @ np.asarray(da) @ vs) / (w[-2:][None, :] - w[:-2][:, None])
    ref = vr @ c @ vs.conj().T
    ref = ref + ref.conj().T  # d(V V^H) from the pairs across the block boundary
    assert rel_err(got, ref) < 1e-8
    # Reverse mode (the transpose solve): <transpose(ct), dA> = <ct, dP> without conjugation.
    lin = complex(jnp.sum(g * da))
    want = complex(np.sum(np.conj(np.asarray(da)) * ref))
    assert abs(lin - want) <= 1e-8 * abs(want)


def test_convergence_report_when_not_converged():
    @jit
    def run(a):
        return eigjax.eigh_partial(a, 2, max_restarts=0), eigjax.eigh_partial(a, 2, max_restarts=1, tol=1e-15)

    zero, one = run(jnp.asarray(matrix()))
    assert not bool(zero.converged) and int(zero.iterations) == 0
    assert int(one.iterations) == 1 and not bool(one.converged)
    for res in (zero, one):  # honest residuals of orthonormal Ritz vectors
        v = np.asarray(res.eigenvectors)
        r = np.linalg.norm(matrix() @ v - v * np.asarray(res.eigenvalues)[None, :], axis=0)
        np.testing.assert_allclose(res.residual_norms, r, rtol=1e-6)
        np.testing.assert_allclose(v.T @ v, np.eye(2), atol=1e-12)


@pytest.mark.parametrize("method", ["chebyshev", "krylov", "lobpcg", "shift_invert"])
def test_a_nan_stops_the_iteration_and_is_reported(method):
    """A NaN in the matrix (or in a shift-invert solve) never leaves an iteration's state:
    every method stops at once with NaN eigenvalues and ``converged = False``, instead of
    running to ``max_restarts`` (500) as before."""
    a = matrix().copy()
    a[3, 7] = a[7, 3] = np.nan
    inv = jnp.asarray(1.0 / (SPEC - 0.5))  # any solve: the NaN comes from A (or, below, from it)
    kw = {"precond": lambda d, x: d * x, "precond_params": inv} if method == "shift_invert" else {}
    res = jit(lambda a: eigjax.eigh_partial(a, 4, method=method, **kw))(jnp.asarray(a))
    assert np.all(np.isnan(np.asarray(res.eigenvalues))) and not bool(res.converged)
    assert int(res.iterations) <= 1
    if method == "shift_invert":  # a NaN from the solve, the matrix finite
        bad = jnp.full((N,), jnp.nan)
        res = jit(lambda a: eigjax.eigh_partial(a, 4, method=method, precond=lambda d, x: d * x, precond_params=bad))(
            jnp.asarray(matrix())
        )
        assert np.all(np.isnan(np.asarray(res.eigenvalues))) and not bool(res.converged)
        assert int(res.iterations) == 0


@pytest.mark.parametrize("method", ["chebyshev", "krylov", "lobpcg", "shift_invert"])
@pytest.mark.parametrize(("dtype", "scale"), [(np.float64, 1e-150), (np.float32, 1e-17), (np.float64, 1e150)])
def test_tiny_and_huge_matrices_report_honest_residuals(method, dtype, scale):
    """Residual norms are computed with each row scaled by its largest entry: squared
    entries of a 1e-150 (float64) or 1e-17 (float32) matrix's residuals underflowed, a
    residual read 0 and an unconverged pair was reported converged (found by review, in
    LOBPCG since it was written). Converged now means the residual test holds."""
    a = (matrix() * scale).astype(dtype)
    kw = {}
    if method == "shift_invert":
        lu = jax.scipy.linalg.lu_factor(jnp.asarray(a - dtype(0.5 * scale) * np.eye(N, dtype=dtype)))
        kw = {"precond": lambda lu, x: jax.scipy.linalg.lu_solve(lu, x), "precond_params": lu}
    res = jit(lambda a: eigjax.eigh_partial(a, 4, method=method, **kw))(jnp.asarray(a))
    v = np.asarray(res.eigenvectors, np.float64)
    w = np.asarray(res.eigenvalues, np.float64) / scale
    true_res = np.linalg.norm(matrix() @ v - v * w[None, :], axis=0)  # at scale 1
    tol = 10 * float(np.finfo(dtype).eps) ** 0.75
    np.testing.assert_allclose(np.asarray(res.residual_norms, np.float64) / scale, true_res, rtol=0.05, atol=tol)
    assert bool(res.converged)
    assert true_res.max() <= 2 * tol * 20
    np.testing.assert_allclose(w, SPEC[:4], rtol=0, atol=50 * tol * 20)


def test_bad_input():
    a = jnp.eye(5)
    f = eigjax.eigh_partial
    with pytest.raises(ValueError, match=r"`k` must satisfy 1 <= k <= n = 5; got k = 6"):
        f(a, 6)
    with pytest.raises(ValueError, match=r"`k` must satisfy 1 <= k <= n = 5; got k = 0"):
        jax.jit(lambda a: f(a, 0))(a)
    with pytest.raises(TypeError, match=r"`k` must be a Python int"):
        f(a, 2.0)
    with pytest.raises(ValueError, match=r"`which` must be 'smallest' or 'largest'"):
        f(a, 1, which="biggest")
    with pytest.raises(ValueError, match=r"`method` must be one of"):
        f(a, 1, method="lanczos")
    with pytest.raises(ValueError, match=r"`layout` must be 'columns' or 'rows'; got 'cols'"):
        f(a, 1, layout="cols")
    with pytest.raises(ValueError, match=r"must be square"):
        f(jnp.ones((5, 4)), 1)
    with pytest.raises(ValueError, match=r"use jax.vmap"):
        f(jnp.ones((2, 5, 5)), 1)
    with pytest.raises(ValueError, match=r"size `n` is required"):
        f(lambda p, x: x, 1)
    with pytest.raises(ValueError, match=r"must return shape \(n,\) = \(5,\)"):
        f(lambda p, x: x[:3], 1, n=5)
    with pytest.raises(ValueError, match=r"unbatched square"):
        f(bcoo_of(np.ones((5, 4))), 1)


def test_non_hermitian_operator_is_detected_where_cheap():
    """BCOO and operator forms with concrete values are probed (two products); traced
    values skip the probe; Hermitian ones (real and complex) pass it."""
    r = np.random.default_rng(3)
    n = 40
    nonsym = np.diag(np.arange(1.0, n + 1)) + np.triu(r.standard_normal((n, n)), 1) * 0.1
    f = eigjax.eigh_partial
    with pytest.raises(ValueError, match=r"argument `a` \(a BCOO matrix\) must be Hermitian"):
        f(bcoo_of(nonsym), 2)
    matvec = lambda m, x: m @ x
    with pytest.raises(ValueError, match=r"argument `a` \(matvec\(params, x\)\) must be Hermitian"):
        f(matvec, 2, params=jnp.asarray(nonsym), n=n)
    herm = random_hermitian(r, n, np.complex128)
    assert f(matvec, 2, params=jnp.asarray(herm), n=n, dtype=np.complex128).eigenvalues.shape == (2,)
    assert f(bcoo_of(nonsym + nonsym.T), 2).eigenvalues.shape == (2,)
    # traced: no probe, no error (documented)
    jax.jit(lambda m: f(matvec, 2, params=m, n=n).eigenvalues)(jnp.asarray(nonsym))


def test_vmap_equals_loop():
    """jax.vmap over a batch of dense matrices (the iterative path: 4 p <= n) gives the
    loop's eigenvalues and gradients."""
    r = np.random.default_rng(5)
    n = 60
    a = np.stack([np.diag(np.arange(1.0, n + 1) * (i + 1)) + 0.01 * random_hermitian(r, n) for i in range(3)])
    f = lambda m: eigjax.eigh_partial(m, 2).eigenvalues
    g = jax.grad(lambda m: jnp.sum(f(m)))
    batched = jax.jit(jax.vmap(lambda m: (f(m), g(m))))(jnp.asarray(a))
    loop = [jax.jit(lambda m: (f(m), g(m)))(jnp.asarray(x)) for x in a]
    np.testing.assert_allclose(batched[0], np.stack([w for w, _ in loop]), rtol=0, atol=1e-13)
    np.testing.assert_allclose(batched[1], np.stack([d for _, d in loop]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(batched[0], np.linalg.eigvalsh(a)[:, :2], rtol=0, atol=1e-10)


def test_second_derivatives_exact_at_distinct_nan_at_a_pair_inside_the_block():
    """The same second-order guard as eigh: a Hessian-vector product through
    eigh_partial matches finite differences of the gradient at distinct eigenvalues and
    is NaN (not a wrong finite number) with a degenerate pair inside the block."""
    r = np.random.default_rng(41)
    n = 30
    q, _ = np.linalg.qr(r.standard_normal((n, n)))
    e = r.standard_normal((n, n))
    e = jnp.asarray((e + e.T) / 2)
    loss = lambda a: jnp.sum(eigjax.eigh_partial(a, 3, method="chebyshev").eigenvalues ** 2)  # noqa: E731
    for head, finite in (([1.0, 1.5, 2.0], True), ([1.0, 1.0, 2.0], False)):
        a = jnp.asarray((q * np.r_[head, np.linspace(3.0, 10.0, n - 3)]) @ q.T)
        hv = jax.jvp(jax.grad(loss), (a,), (e,))[1]
        if finite:
            fd = (jax.grad(loss)(a + 1e-5 * e) - jax.grad(loss)(a - 1e-5 * e)) / 2e-5
            np.testing.assert_allclose(hv, fd, atol=1e-7)
        else:
            assert np.all(np.isnan(np.asarray(hv)))
            assert np.all(np.isfinite(np.asarray(jax.grad(loss)(a))))  # first order still exact


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_bcoo_runs_in_the_requested_layout(monkeypatch, layout):
    """The BCOO (padded-row) product is called with cols == (layout == "columns"): a local
    variable once replaced the option with the ELL index arrays, so BCOO always ran on rows."""
    import eigjax._partial._api as pe

    seen = []
    real = pe._ell_matmat

    def spy(params, x, cols=False):
        seen.append(bool(cols))
        return real(params, x, cols)

    monkeypatch.setattr(pe, "_ell_matmat", spy)
    n = 40
    a = np.diag(np.linspace(1.0, 5.0, n)) + np.diag(np.full(n - 1, 0.3), 1) + np.diag(np.full(n - 1, 0.3), -1)
    res = eigjax.eigh_partial(jsparse.BCOO.fromdense(jnp.asarray(a)), 2, layout=layout)
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(a)[:2], rtol=1e-8)
    assert seen, "the ELL product was not used"
    # the hot loops run on column blocks only when asked (other steps may use rows)
    assert (True in seen) == (layout == "columns"), (layout, seen[:8])


@pytest.mark.parametrize(
    "option, value, error",
    [
        ("block_size", 4.7, TypeError),
        ("block_size", "8", TypeError),
        ("block_size", 8.0, TypeError),
        ("block_size", True, TypeError),
        ("krylov_steps", "x", TypeError),
        ("krylov_steps", 3.5, TypeError),
        ("krylov_steps", 1, ValueError),
        ("block_size", 0, ValueError),
    ],
)
def test_integer_options_are_checked_not_coerced(option, value, error):
    a = jnp.diag(jnp.arange(1.0, 21.0))
    kw = {option: value, "method": "krylov"} if option == "krylov_steps" else {option: value}
    with pytest.raises(error, match=rf"eigjax.eigh_partial: option `{option}` must be"):
        eigjax.eigh_partial(a, 2, **kw)
    with pytest.raises(error, match=rf"option `{option}`"):
        jax.jit(lambda m: eigjax.eigh_partial(m, 2, **kw).eigenvalues)(a)


# ---------------------------------------------------------------- derivative audit (tenth session)


def _audit_problem(spec, n=100, k=3, seed=0):
    r = np.random.default_rng(seed)
    q, _ = np.linalg.qr(r.standard_normal((n, n)))
    c = r.standard_normal((n, n))
    da = r.standard_normal((n, n))
    return jnp.asarray((q * spec) @ q.T), jnp.asarray(c + c.T), jnp.asarray(da + da.T)


def _projector_loss(c, k, which="smallest"):
    part = lambda a, **kw: jnp.sum(c * (lambda v: v @ v.T)(eigjax.eigh_partial(a, k, which=which, **kw).eigenvectors))
    block = slice(0, k) if which == "smallest" else slice(-k, None)
    dense = lambda a: jnp.sum(c * (lambda v: v @ v.T)(eigjax.eigh(a).eigenvectors[:, block]))
    return part, dense


@pytest.mark.parametrize(
    "method,scale", [("lobpcg", 1e-100), ("lobpcg", 1e150), ("chebyshev", 1e200), ("krylov", 1e-150)]
)
def test_derivative_solve_is_scale_free(method, scale):
    """The derivative's CG formed squared norms and d^H B d of unscaled rows: with A and dA
    scaled by 1e-100 the JVP read +1.9e16 instead of -33.5, at 1e150-1e200 21.0 or 7.9
    (found by an audit). Rows are now solved at unit norm."""
    a, c, da = _audit_problem(np.linspace(1.0, 10.0, 100))
    part, dense = _projector_loss(c, 3)
    got = jax.jvp(lambda x: part(x, method=method), (a * scale,), (da * scale,))[1]
    want = jax.jvp(dense, (a,), (da,))[1]
    np.testing.assert_allclose(float(got), float(want), rtol=1e-8)
    # a loss scaled by 1e-200: the CG threshold underflowed and CG returned its start
    g = jax.grad(lambda x: 1e-200 * part(x, method=method))(a) / 1e-200
    assert rel_err(g, jax.grad(dense)(a)) < 1e-8


def test_a_degenerate_pair_across_the_block_edge_gives_nan():
    """lambda_k = lambda_{k+1}: the k-th eigenvalue and its eigenvector have no derivative;
    grad(sum(w)) was finite and the projector's JVP 3.9e17 (found by an audit). They are NaN
    in both modes where a loss uses them; the eigenpairs inside the block keep their exact
    derivatives (a first version made every tangent NaN: found by review, cycle graphs
    have such pairs everywhere)."""
    spec = np.linspace(1.0, 10.0, 100)
    spec[3] = spec[2]
    a, c, da = _audit_problem(spec)
    part, _ = _projector_loss(c, 3)
    inner = lambda v: jnp.sum(c * (v[:, :2] @ v[:, :2].T))  # noqa: E731
    for method in ("chebyshev", "lobpcg"):
        run = lambda x: eigjax.eigh_partial(x, 3, method=method)  # noqa: E731
        g = jax.grad(lambda x: jnp.sum(run(x).eigenvalues))(a)
        assert np.all(np.isnan(np.asarray(g))), method
        assert np.isnan(float(jax.jvp(lambda x: part(x, method=method), (a,), (da,))[1])), method
        g = jax.grad(lambda x: jnp.sum(run(x).eigenvalues[:2]) + inner(run(x).eigenvectors))(a)
        want = jax.grad(lambda x: jnp.sum(eigjax.eigh(x).eigenvalues[:2]) + inner(eigjax.eigh(x).eigenvectors))(a)
        assert rel_err(g, want) < 1e-8, method
        jv = jax.jvp(lambda x: inner(run(x).eigenvectors), (a,), (da,))[1]
        jv_want = jax.jvp(lambda x: inner(eigjax.eigh(x).eigenvectors), (a,), (da,))[1]
        np.testing.assert_allclose(float(jv), float(jv_want), rtol=1e-8)


@pytest.mark.parametrize("gap", [1e-5, 1e-9])
def test_a_tiny_gap_at_the_block_edge_gives_the_derivative_or_nan(gap):
    """A gap of 1e-5 (1e-9) between the last wanted and the first unwanted eigenvalue: the
    derivative's CG stalled and diverged and the JVP was 500x (40-500x) too large with
    converged True (found by an audit). Now right or NaN, never a wrong finite number."""
    spec = np.linspace(1.0, 10.0, 100)
    spec[96] = spec[97] - gap
    a, c, da = _audit_problem(spec)
    part, dense = _projector_loss(c, 3, "largest")
    want = float(jax.jvp(dense, (a,), (da,))[1])
    for method in ("chebyshev", "krylov", "lobpcg"):
        got = float(jax.jvp(lambda x: part(x, method=method), (a,), (da,))[1])
        assert np.isnan(got) or abs(got - want) <= 1e-6 * abs(want), (method, got, want)


@pytest.mark.parametrize("k,block_size", [(5, None), (3, 3)])
def test_derivative_without_extra_ritz_vectors(k, block_size):
    """k = n, or block_size = k: no extra Ritz vectors; the derivative crashed ("need at
    least one array to stack"; found by an audit)."""
    n = 5 if k == 5 else 60
    a = jnp.asarray(random_hermitian(rng(50), n))
    loss = lambda x: jnp.sum(eigjax.eigh_partial(x, k, block_size=block_size).eigenvalues)
    want = jax.grad(lambda x: jnp.sum(eigjax.eigh(x).eigenvalues[:k]))(a)
    assert rel_err(jax.grad(loss)(a), want) < 1e-8
