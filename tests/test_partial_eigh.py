"""Tests for eigjax.eigh_partial (k extremal eigenpairs of dense / BCOO / matrix-free operators).

Oracles: NumPy's dense eigvalsh; gradients of the full dense eigjax.eigh (itself checked
against finite differences in test_eigh.py) of gauge-invariant losses (eigenvalue sums,
projectors onto the computed subspace); central finite differences for operator params.
The test spectrum has an exactly degenerate pair inside the block at both ends
(k = 4) and a gap after the block, as the derivative requires.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse as jsparse

import eigjax
from helpers import central_fd, hermitian_direction, rel_err, rng, with_spectrum

N = 200
SPEC = np.sort(np.concatenate([[1.0, 1.5, 2.0, 2.0, 3.0], np.linspace(5.0, 17.0, N - 10), [18.0, 19.0, 19.0, 19.5, 20.0]]))
WEIGHT = np.sin(np.arange(N * N).reshape(N, N) / 7.0)


@functools.lru_cache(maxsize=None)
def matrix():
    return with_spectrum(rng(0), SPEC)


def loss_from(w, v):
    """Gauge-invariant: eigenvalue sum plus a weighted sum of the projector V V^T."""
    return jnp.sum(w) + jnp.sum((v @ v.T) * WEIGHT)


def dense_loss(a, k, which):
    w, v = eigjax.eigh(a)
    sl = slice(0, k) if which == "smallest" else slice(N - k, N)
    return loss_from(w[sl], v[:, sl])


def direction():
    return hermitian_direction(rng(1), (N, N))


CASES = [(k, which) for k in (1, 4) for which in ("smallest", "largest")]


@pytest.mark.parametrize("k,which", CASES)
def test_dense_matches_eigh(k, which):
    a = jnp.asarray(matrix())
    res = eigjax.eigh_partial(a, k, which=which)
    want = SPEC[:k] if which == "smallest" else SPEC[N - k :]
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-10)
    assert bool(res.converged) and int(res.iterations) >= 1
    r = np.linalg.norm(np.asarray(a @ res.eigenvectors - res.eigenvectors * res.eigenvalues[None, :]), axis=0)
    np.testing.assert_allclose(res.residual_norms, r, rtol=1e-3, atol=1e-13)
    assert np.all(r <= 1e-9)
    np.testing.assert_allclose(res.eigenvectors.T @ res.eigenvectors, np.eye(k), atol=1e-12)
    g = jax.grad(lambda a: loss_from(*eigjax.eigh_partial(a, k, which=which)[:2]))(a)
    g_ref = jax.grad(dense_loss)(a, k, which)
    assert rel_err(g, g_ref) < 1e-8


@pytest.mark.parametrize("k,which", [(4, "smallest"), (1, "largest")])
def test_bcoo_matches_eigh(k, which):
    a = jnp.asarray(matrix())
    sp = jsparse.BCOO.fromdense(a)
    loss = lambda data: loss_from(*eigjax.eigh_partial(jsparse.BCOO((data, sp.indices), shape=sp.shape), k, which=which)[:2])
    res = eigjax.eigh_partial(sp, k, which=which)
    want = SPEC[:k] if which == "smallest" else SPEC[N - k :]
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-10)
    # Directional derivative along a symmetric perturbation (the BCOO is assumed Hermitian).
    da = direction()
    idx = np.asarray(sp.indices)
    g = jax.grad(loss)(sp.data)
    lin = float(jnp.sum(g * da[idx[:, 0], idx[:, 1]]))
    ref = float(jax.jvp(lambda a: dense_loss(a, k, which), (a,), (jnp.asarray(da),))[1])
    assert abs(lin - ref) <= 1e-8 * abs(ref)


@pytest.mark.parametrize("k,which", [(1, "smallest"), (4, "largest")])
def test_operator_matches_eigh(k, which):
    a = jnp.asarray(matrix())
    matvec = lambda m, x: m @ x
    res = eigjax.eigh_partial(matvec, k, which=which, params=a, n=N)
    want = SPEC[:k] if which == "smallest" else SPEC[N - k :]
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-10)
    da = jnp.asarray(direction())
    got = jax.jvp(lambda m: loss_from(*eigjax.eigh_partial(matvec, k, which=which, params=m, n=N)[:2]), (a,), (da,))[1]
    ref = jax.jvp(lambda a: dense_loss(a, k, which), (a,), (da,))[1]
    assert abs(float(got) - float(ref)) <= 1e-8 * abs(float(ref))


def tridiagonal(params, x):
    """A(params) x with A = diag(d) + offdiag(e) (symmetric), matrix-free."""
    d, e = params
    y = d * x
    y = y.at[:-1].add(e * x[1:])
    return y.at[1:].add(e * x[:-1])


def test_operator_params_grad_matches_fd():
    n, k = 120, 4
    r = rng(2)
    d = jnp.asarray(np.linspace(0.0, 6.0, n) + 0.3 * r.standard_normal(n))
    e = jnp.asarray(0.5 + 0.2 * r.standard_normal(n - 1))
    weight = jnp.asarray(r.standard_normal(n))

    def loss(params):
        w, v = eigjax.eigh_partial(tridiagonal, k, params=params, n=n)[:2]
        return jnp.sum(w**2) + jnp.sum((v**2) @ jnp.ones((k,)) * weight)

    g = jax.grad(loss)((d, e))
    dd, de = r.standard_normal(n), r.standard_normal(n - 1)
    lin = float(jnp.sum(g[0] * dd) + jnp.sum(g[1] * de))
    fd = central_fd(lambda t: loss((d + t * dd, e + t * de)), 0.0, 1.0, h=1e-4)
    assert abs(lin - float(fd)) <= 1e-7 * abs(float(fd))
    fwd = jax.jvp(loss, ((d, e),), ((jnp.asarray(dd), jnp.asarray(de)),))[1]
    assert abs(float(fwd) - float(fd)) <= 1e-7 * abs(float(fd))


def test_small_problem_dense_path_and_complex():
    n = 12
    r = rng(3)
    a = with_spectrum(r, np.arange(1.0, n + 1), np.complex128)
    res = eigjax.eigh_partial(jnp.asarray(a), 3)
    np.testing.assert_allclose(res.eigenvalues, [1.0, 2.0, 3.0], rtol=1e-12)
    assert int(res.iterations) == 0 and bool(res.converged)
    da = hermitian_direction(r, (n, n), np.complex128)
    proj = lambda f: (lambda a: (lambda v: v @ jnp.conj(v.T))(f(a)))
    got = jax.jvp(proj(lambda a: eigjax.eigh_partial(a, 3).eigenvectors), (jnp.asarray(a),), (jnp.asarray(da),))[1]
    fd = central_fd(proj(lambda a: eigjax.eigh(a).eigenvectors[:, :3]), a, da)
    assert rel_err(got, fd) < 1e-8


def test_complex_krylov_path():
    n = 80
    r = rng(4)
    a = jnp.asarray(with_spectrum(r, np.linspace(1.0, 10.0, n), np.complex128))
    res = eigjax.eigh_partial(a, 2, which="largest")
    np.testing.assert_allclose(res.eigenvalues, np.linspace(1.0, 10.0, n)[-2:], rtol=1e-10)
    assert int(res.iterations) >= 1
    da = jnp.asarray(hermitian_direction(r, (n, n), np.complex128))
    f = lambda g: (lambda a: (lambda v: v @ jnp.conj(v.T))(g(a)))
    got = jax.jvp(f(lambda a: eigjax.eigh_partial(a, 2, which="largest").eigenvectors), (a,), (da,))[1]
    ref = jax.jvp(f(lambda a: eigjax.eigh(a).eigenvectors[:, -2:]), (a,), (da,))[1]
    assert rel_err(got, ref) < 1e-8


def test_convergence_report_when_not_converged():
    res = eigjax.eigh_partial(jnp.asarray(matrix()), 2, max_restarts=0)
    assert not bool(res.converged) and int(res.iterations) == 0
    res = jax.jit(lambda a: eigjax.eigh_partial(a, 2, max_restarts=1, tol=1e-15))(jnp.asarray(matrix()))
    assert int(res.iterations) == 1 and not bool(res.converged)


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
    with pytest.raises(ValueError, match=r"must be square"):
        f(jnp.ones((5, 4)), 1)
    with pytest.raises(ValueError, match=r"use jax.vmap"):
        f(jnp.ones((2, 5, 5)), 1)
    with pytest.raises(ValueError, match=r"size `n` is required"):
        f(lambda p, x: x, 1)
    with pytest.raises(ValueError, match=r"must return shape \(n,\) = \(5,\)"):
        f(lambda p, x: x[:3], 1, n=5)
    with pytest.raises(ValueError, match=r"unbatched square"):
        f(jsparse.BCOO.fromdense(jnp.ones((5, 4))), 1)
