"""Tests for eigjax.eigh_generalized (A v = w B v, B Hermitian positive definite).

Oracles: scipy.linalg.eigh(a, b) for the forward values; the defining residuals
``A V - B V diag(w)`` and ``V^H B V - I``; central finite differences of well-defined
quantities (eigenvalues, B-orthogonal projectors ``V_S V_S^H``, which are invariant to
the unitary gauge ``V_S -> V_S R`` that preserves ``V^H B V = I``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import central_fd, hermitian_direction, random_hermitian, random_unitary, rel_err, rng

import eigjax

DTYPES = [np.float64, np.complex128]


def random_pd(r, n, dtype=np.float64, batch=()):
    x = random_hermitian(r, n, dtype, batch)
    return (x @ np.conj(np.swapaxes(x, -1, -2))) / n + np.eye(n)


def degenerate_pencil(r, w, dtype=np.float64):
    """A pencil (A, B) with generalized eigenvalues exactly ``w`` (built in float64)."""
    n = len(w)
    b = random_pd(r, n, dtype)
    l = np.linalg.cholesky(b)
    v0 = scipy.linalg.solve_triangular(np.conj(l.T), random_unitary(r, n, dtype), lower=False)
    bv = b @ v0
    a = (bv * np.asarray(w, float)) @ np.conj(bv.T)
    a = (a + np.conj(a.T)) / 2
    return a.astype(dtype), b.astype(dtype)


def projector(idx):
    def f(a, b):
        v = eigjax.eigh_generalized(a, b).eigenvectors[..., idx]
        return v @ jnp.conj(v.T)

    return f


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_scipy_and_residuals(dtype):
    r = rng(0)
    n = 7
    a = random_hermitian(r, n, dtype)
    b = random_pd(r, n, dtype)
    w, v = map(np.asarray, eigjax.eigh_generalized(a, b))
    w_sp = scipy.linalg.eigh(a, b, eigvals_only=True)
    np.testing.assert_allclose(w, w_sp, rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(np.asarray(w)) > 0)
    scale = np.linalg.norm(a) + np.linalg.norm(b)
    assert np.linalg.norm(a @ v - b @ v * w) <= 1e-12 * scale * np.linalg.norm(v) ** 2
    assert np.linalg.norm(np.conj(v.T) @ b @ v - np.eye(n)) <= 1e-12 * n


def test_identity_b_reproduces_eigh():
    r = rng(1)
    for dtype in DTYPES:
        a = random_hermitian(r, 6, dtype)
        w, v = eigjax.eigh_generalized(a, np.eye(6, dtype=dtype))
        w0, v0 = eigjax.eigh(a)
        np.testing.assert_array_equal(w, w0)
        np.testing.assert_array_equal(v, v0)


def test_batched_jit_vmap():
    r = rng(2)
    a = random_hermitian(r, 5, np.float64, batch=(3,))
    b = random_pd(r, 5, np.float64, batch=(3,))
    w = jax.jit(lambda a, b: eigjax.eigh_generalized(a, b).eigenvalues)(a, b)
    wv = jax.vmap(lambda a, b: eigjax.eigh_generalized(a, b).eigenvalues)(a, b)
    for i in range(3):
        np.testing.assert_allclose(w[i], scipy.linalg.eigh(a[i], b[i], eigvals_only=True), rtol=1e-12)
        np.testing.assert_allclose(wv[i], w[i], rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wrt", ["a", "b", "both"])
def test_jvp_matches_fd(dtype, wrt):
    r = rng(3)
    n = 6
    a = random_hermitian(r, n, dtype)
    b = random_pd(r, n, dtype)
    da = hermitian_direction(r, (n, n), dtype) * (wrt != "b")
    db = hermitian_direction(r, (n, n), dtype) * (wrt != "a") * 0.3
    funcs = {
        "eigenvalues": lambda a, b: eigjax.eigh_generalized(a, b).eigenvalues,
        "projector_0": projector(slice(0, 1)),
        "projector_23": projector(slice(2, 4)),
    }
    for name, f in funcs.items():
        got = jax.jvp(f, (jnp.asarray(a), jnp.asarray(b)), (jnp.asarray(da), jnp.asarray(db)))[1]
        want = central_fd(lambda t: f(a + t * da, b + t * db), 0.0, 1.0, h=1e-4)
        assert rel_err(got, want) < 1e-7, (name, rel_err(got, want))


def test_b_orthonormality_preserved_to_first_order():
    # d(V^H B V) = dV^H B V + V^H dB V + V^H B dV must vanish.
    r = rng(4)
    n = 5
    a, b = random_hermitian(r, n, np.complex128), random_pd(r, n, np.complex128)
    da, db = hermitian_direction(r, (n, n), np.complex128), hermitian_direction(r, (n, n), np.complex128)
    (w, v), (_, dv) = jax.jvp(lambda a, b: tuple(eigjax.eigh_generalized(a, b)), (a, b), (da, db))
    v, dv = np.asarray(v), np.asarray(dv)
    d = np.conj(dv.T) @ b @ v + np.conj(v.T) @ db @ v + np.conj(v.T) @ b @ dv
    assert np.linalg.norm(d) < 1e-11


@pytest.mark.parametrize("dtype", DTYPES)
def test_degenerate_pencil_invariant_losses(dtype):
    r = rng(5)
    w_true = [1.0, 1.0, 2.0, 3.5, 5.0]
    a, b = degenerate_pencil(r, w_true, dtype)
    w, v = eigjax.eigh_generalized(a, b)
    np.testing.assert_allclose(w, w_true, rtol=1e-12)
    n = len(w_true)
    da = hermitian_direction(r, (n, n), dtype)
    db = 0.3 * hermitian_direction(r, (n, n), dtype)
    funcs = {
        "group_sum": lambda a, b: jnp.sum(eigjax.eigh_generalized(a, b).eigenvalues[:2]),
        "group_projector": projector(slice(0, 2)),
        "weighted": lambda a, b: (
            lambda w, v: (v * jnp.asarray([[2.0, 2.0, -1.0, 0.5, 3.0]], v.dtype)) @ jnp.conj(v.T)
        )(*eigjax.eigh_generalized(a, b)),
    }
    for name, f in funcs.items():
        got = jax.jvp(f, (jnp.asarray(a), jnp.asarray(b)), (jnp.asarray(da), jnp.asarray(db)))[1]
        want = central_fd(lambda t: f(a + t * da, b + t * db), 0.0, 1.0, h=1e-4)
        assert np.all(np.isfinite(got))
        assert rel_err(got, want) < 1e-7, (name, rel_err(got, want))
    # Reverse mode at the degenerate point: finite and equal to the JVP contraction.
    loss = lambda a, b: jnp.real(
        jnp.sum(jnp.abs(projector(slice(0, 2))(a, b)) ** 2 * jnp.arange(n * n, dtype=float).reshape(n, n))
    )
    ga, gb = jax.grad(loss, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
    fd = central_fd(lambda t: loss(a + t * da, b + t * db), 0.0, 1.0, h=1e-4)
    # jax.grad of a real loss of complex input: dL = Re sum(g * dz) (JAX's convention).
    lin = np.real(np.sum(np.asarray(ga) * da) + np.sum(np.asarray(gb) * db))
    assert abs(lin - fd) < 1e-7 * max(1.0, abs(fd))


def test_hessian_matches_fd_of_gradient():
    r = rng(6)
    n = 4
    a, b = random_hermitian(r, n), random_pd(r, n)
    loss = lambda a: (
        jnp.sum(eigjax.eigh_generalized(a, b).eigenvalues[:2] ** 2) + jnp.sum(projector(slice(0, 1))(a, b) ** 2)
    )
    da = hermitian_direction(r, (n, n))
    grad = jax.jit(jax.grad(loss))
    hvp = jax.jit(lambda a, da: jax.jvp(grad, (a,), (da,))[1])(jnp.asarray(a), jnp.asarray(da))
    fd = central_fd(grad, a, da, h=1e-4)
    assert rel_err(hvp, fd) < 1e-6
    h = jax.jit(jax.hessian(loss))(jnp.asarray(a))
    assert np.all(np.isfinite(h))


def test_not_positive_definite_b():
    a = np.diag([1.0, 2.0, 3.0])
    b = np.diag([1.0, -1.0, 2.0])
    w, v = eigjax.eigh_generalized(a, b)
    assert np.all(np.isnan(w)) and np.all(np.isnan(v))
    with pytest.raises(ValueError, match=r"eigh_generalized.*`b`.*positive definite"):
        eigjax.eigh_generalized(a, b, check=True)
    with pytest.raises(ValueError, match=r"batch index \(1,\)"):
        eigjax.eigh_generalized(np.stack([a, a]), np.stack([np.eye(3), b]), check=True)
    # A positive definite b passes the check.
    eigjax.eigh_generalized(a, np.eye(3), check=True)


def test_bad_input():
    f = eigjax.eigh_generalized
    with pytest.raises(ValueError, match=r"`a` must be square.*\(3, 4\)"):
        f(np.ones((3, 4)), np.eye(3))
    with pytest.raises(ValueError, match=r"`b` must be square"):
        f(np.eye(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"`a` and `b` must have the same shape.*\(3, 3\).*\(4, 4\)"):
        jax.jit(f)(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match=r"`a` and `b` must have the same shape"):
        jax.jit(f)(np.eye(3), np.stack([np.eye(3)] * 2))
    with pytest.raises(TypeError, match=r"`b` must be a JAX or NumPy array"):
        f(np.eye(2), [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"degenerate_tol"):
        f(np.eye(2), np.eye(2), degenerate_tol=-1.0)
    # mixed dtypes: refused under strict promotion (as jnp.linalg), naming both arguments
    with jax.numpy_dtype_promotion("strict"):
        for g in (f, eigjax.eigvalsh_generalized):
            with pytest.raises(TypeError, match=r"`a` and `b` must have the same dtype.*float32.*complex64"):
                g(jnp.eye(2, dtype=jnp.float32), jnp.eye(2, dtype=jnp.complex64))
    with jax.numpy_dtype_promotion("standard"):
        assert f(jnp.eye(2, dtype=jnp.float32), jnp.eye(2, dtype=jnp.complex64)).eigenvectors.dtype == jnp.complex64


@pytest.mark.parametrize("fill", [np.inf, -np.inf, np.nan])
def test_check_with_non_finite_b_is_a_clear_error(fill):
    """check=True with an all-inf (or NaN) b: one ValueError naming function, argument and
    what is wrong (np.linalg.eigvalsh used to raise LinAlgError from inside the check)."""
    a = np.eye(3)
    b = np.full((3, 3), fill)
    with pytest.raises(
        ValueError,
        match=r"eigjax.eigh_generalized: argument `b` must be Hermitian positive definite with finite entries; .* 9 non-finite",
    ):
        eigjax.eigh_generalized(a, b, check=True)
    with pytest.raises(ValueError, match=r"batch index \(1,\)"):
        eigjax.eigh_generalized(np.stack([a, a]), np.stack([np.eye(3), b]), check=True)
    # without the check: NaN outputs, no exception (documented)
    w, v = eigjax.eigh_generalized(a, b)
    assert np.all(np.isnan(np.asarray(w)))
