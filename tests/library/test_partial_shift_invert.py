"""Tests for ``eigh_partial(..., method="shift_invert", precond=solve)``: block Krylov on a
user's exact solve ``(A - sigma I)^{-1}``, Rayleigh-Ritz with ``A``, the LOBPCG path's
derivative rule.

Oracles: NumPy's dense ``eigh`` for eigenvalues and the spectral projector ``V V^T`` (gauge
invariant); eigjax's dense :func:`eigjax.eigh` for gradients of gauge-invariant losses (its
rule is checked against finite differences in test_eigh.py); central finite differences of
the loss in one direction. The test matrix has a degenerate pair inside the block at both
ends (k = 4) and a gap after it, as in test_partial_generalized.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
from helpers import central_fd, hermitian_direction, rel_err, rng, with_spectrum
from jax.experimental import sparse as jsparse

import eigjax

N, K = 200, 4
SPEC = np.sort(np.concatenate([[1.0, 1.5, 2.0, 2.0], np.linspace(5.0, 17.0, N - 8), [19.0, 19.0, 19.5, 20.0]]))
WEIGHT = np.sin(np.arange(N * N).reshape(N, N) / 7.0)
WEIGHT = jnp.asarray(WEIGHT + WEIGHT.T)
SIGMA = {"smallest": 0.5, "largest": 20.5}  # below / above the wanted eigenvalues


@functools.cache
def matrix():
    a = with_spectrum(rng(21), SPEC)
    return (a + a.T) / 2


def block(which):
    return slice(0, K) if which == "smallest" else slice(N - K, N)


def loss_from(w, v):
    """Gauge-invariant: equal weights on a degenerate group (w**2), and the projector V V^T."""
    return jnp.sum(w**2) + jnp.sum((v @ v.T) * WEIGHT)


def lu_solver(a, which):
    """An exact solve of ``(A - sigma I)`` (``sigma I - A`` for the largest), factorised
    outside the function being differentiated, passed as precond_params."""
    eye = jnp.eye(N)
    shifted = a - SIGMA[which] * eye if which == "smallest" else SIGMA[which] * eye - a
    return jax.scipy.linalg.lu_factor(jnp.asarray(shifted)), lambda lu, x: jax.scipy.linalg.lu_solve(lu, x)


def partial(a, which, lu, solve, **kw):
    return eigjax.eigh_partial(a, K, which=which, method="shift_invert", precond=solve, precond_params=lu, **kw)


@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_eigenpairs_and_gradients_match_the_dense_decomposition(which):
    a = matrix()
    lu, solve = lu_solver(a, which)
    res = jax.jit(lambda a: partial(a, which, lu, solve))(jnp.asarray(a))
    w_ref, v_ref = np.linalg.eigh(a)
    w_ref, v_ref = w_ref[block(which)], v_ref[:, block(which)]
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, w_ref, rtol=0, atol=1e-10)
    v = np.asarray(res.eigenvectors)
    np.testing.assert_allclose(v @ v.T, v_ref @ v_ref.T, rtol=0, atol=1e-9)
    np.testing.assert_allclose(v.T @ v, np.eye(K), rtol=0, atol=1e-12)
    assert float(jnp.max(res.residual_norms)) <= 10 * np.finfo(float).eps ** 0.75 * 20
    # gradients of a gauge-invariant loss (a degenerate pair inside the block) vs dense eigh
    loss = lambda a: loss_from(*partial(a, which, lu, solve)[:2])
    dense = lambda a: loss_from(*(lambda r: (r[0][block(which)], r[1][:, block(which)]))(eigjax.eigh(a)))
    g = jax.jit(jax.grad(loss))(jnp.asarray(a))
    g_ref = jax.grad(dense)(jnp.asarray(a))
    assert rel_err(g, g_ref) < 1e-8
    # and a directional derivative against central differences of the loss
    # (the factorisation must be of the matrix solved: refactorised at each point)
    d = hermitian_direction(rng(22), (N, N))
    at = lambda x: loss_from(*partial(x, which, *lu_solver(x, which))[:2])
    fd = float(central_fd(jax.jit(at), a, d))
    assert abs(float(jnp.sum(g * d)) - fd) <= 1e-6 * max(1.0, abs(fd))


def test_bcoo_with_a_scipy_factorisation_through_pure_callback():
    """The documented use: a BCOO matrix and scipy's sparse LU built outside JAX, applied
    through ``jax.pure_callback``; eigenpairs and the gradient with respect to the BCOO
    data agree with the dense decomposition."""
    a = matrix()
    a_sp = scipy.sparse.csr_matrix(np.where(np.abs(a) > 0, a, 0.0))
    lu = scipy.sparse.linalg.splu(scipy.sparse.csc_matrix(a - SIGMA["smallest"] * np.eye(N)))

    def host(x):
        x = np.asarray(x)
        return lu.solve(np.ascontiguousarray(x.reshape(-1, N).T)).T.reshape(x.shape)

    solve = lambda _, x: jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, x.dtype), x, vmap_method="expand_dims")
    bcoo = jsparse.BCOO.from_scipy_sparse(a_sp)
    run = lambda data: eigjax.eigh_partial(
        jsparse.BCOO((data, bcoo.indices), shape=(N, N)), K, method="shift_invert", precond=solve
    )
    res = jax.jit(run)(bcoo.data)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(a)[:K], rtol=0, atol=1e-10)
    g = jax.jit(jax.grad(lambda d: loss_from(*run(d)[:2])))(bcoo.data)
    # the same loss through the dense matrix built from the same data (its gradient gathered)
    rows, cols = np.asarray(bcoo.indices).T
    dense = lambda d: jnp.zeros((N, N)).at[rows, cols].add(d)
    g_ref = jax.grad(lambda d: loss_from(*(lambda r: (r[0][:K], r[1][:, :K]))(eigjax.eigh(dense(d)))))(bcoo.data)
    # a BCOO operator is not symmetrised, so only the gradient's symmetric part is defined
    # by symmetric perturbations: compare that (the antisymmetric part is a gauge of the input)
    sym = lambda g: (lambda m: (m + m.T) / 2)(dense(g))
    assert rel_err(sym(g), sym(g_ref)) < 1e-8


def test_an_inexact_solve_is_reported_not_accepted():
    """A solve that is not ``(A - sigma I)^{-1}`` (here the inverse of the diagonal) gives a
    block of wrong vectors: their residuals with ``A`` are reported and ``converged`` is
    False, never a silently accepted answer."""
    a = matrix()
    inv_diag = jnp.asarray(1.0 / (np.diag(a) - SIGMA["smallest"]))
    res = eigjax.eigh_partial(
        jnp.asarray(a), K, method="shift_invert", precond=lambda d, x: d * x, precond_params=inv_diag, max_restarts=3
    )
    assert not bool(res.converged)
    assert float(jnp.max(res.residual_norms)) > 1e-6


def test_argument_errors():
    a = jnp.asarray(matrix())
    with pytest.raises(ValueError, match="shift_invert.*callable `precond`"):
        eigjax.eigh_partial(a, K, method="shift_invert")
    with pytest.raises(ValueError, match="shift_invert.*callable `precond`"):
        eigjax.eigh_partial(a, K, method="shift_invert", precond="jacobi")
    with pytest.raises(ValueError, match="takes no `b`"):
        eigjax.eigh_partial(a, K, method="shift_invert", precond=lambda _, x: x, b=jnp.eye(N))
