"""Tests for ``eigh_partial(..., method="shift_invert", precond=solve)``: thick-restart block
Lanczos on a user's exact solve ``(A - sigma I)^{-1}``, Rayleigh-Ritz with ``A``, the LOBPCG
path's derivative rule.

Oracles: NumPy's dense ``eigh`` for eigenvalues and the spectral projector ``V V^T`` (gauge
invariant); eigjax's dense :func:`eigjax.eigh` for gradients of gauge-invariant losses (its
rule is checked against finite differences in test_eigh.py); central finite differences of
the loss in one direction. The test matrix has a degenerate pair inside the block at both
ends (k = 4) and a gap after it, as in test_partial_generalized.py; further tests build
spectra with an eigenvalue of multiplicity 3 (found by a block of 3, and through the
breakdown of an exhausted Krylov space by the default block of 2).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from helpers import central_fd, hermitian_direction, is_complex, rel_err, rng, with_spectrum
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


def lu_solver(a, which, sigma=None):
    """An exact solve of ``(A - sigma I)`` (``sigma I - A`` for the largest; ``sigma``
    default ``SIGMA[which]``), factorised outside the function being differentiated,
    passed as precond_params."""
    eye = jnp.eye(N)
    sigma = SIGMA[which] if sigma is None else sigma
    shifted = a - sigma * eye if which == "smallest" else sigma * eye - a
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


@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_a_shift_inside_the_spectrum_gives_nan_not_the_wrong_eigenpairs(which):
    """``sigma`` must lie below the wanted eigenvalues (above, for the largest). Placed
    inside the spectrum (1.7: eigenvalues 1 and 1.5 below it; 19.2: 19.5 and 20 above it),
    shift-invert would converge to the eigenvalues nearest ``sigma`` on one side, genuine
    eigenpairs but not the wanted ones: a silently wrong answer. ``S`` is then indefinite,
    which the Lanczos Ritz values show, and the result is NaN with ``converged`` False."""
    a = jnp.asarray(matrix())
    lu, solve = lu_solver(a, which, {"smallest": 1.7, "largest": 19.2}[which])
    res = jax.jit(lambda a: partial(a, which, lu, solve))(a)
    assert not bool(res.converged)
    assert np.all(np.isnan(np.asarray(res.eigenvalues))) and np.all(np.isnan(np.asarray(res.eigenvectors)))


def lu_partial(a, k, sigma, **kw):
    """``eigh_partial`` of the dense ``a`` with an exact LU solve of ``a - sigma I``."""
    lu = jax.scipy.linalg.lu_factor(jnp.asarray(a - sigma * np.eye(len(a), dtype=a.dtype)))
    solve = lambda lu, x: jax.scipy.linalg.lu_solve(lu, x)
    return eigjax.eigh_partial(jnp.asarray(a), k, method="shift_invert", precond=solve, precond_params=lu, **kw)


def assert_same_eigenpairs(res, a, k, atol):
    """Eigenvalues and the spectral projector of the k smallest against NumPy (the block
    boundary at k must not split a degenerate group, so the projector is unique)."""
    w_ref, v_ref = np.linalg.eigh(a)
    v = np.asarray(res.eigenvectors)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, w_ref[:k], rtol=0, atol=atol)
    np.testing.assert_allclose(v @ v.conj().T, v_ref[:, :k] @ v_ref[:, :k].conj().T, rtol=0, atol=10 * atol)
    np.testing.assert_allclose(v.conj().T @ v, np.eye(k), rtol=0, atol=atol)


def test_a_triple_eigenvalue_with_a_block_of_three():
    """A block of b finds an eigenvalue of multiplicity b: here 3 (k = 6: 1, 2, 2, 2, 3, 3.5)."""
    spec = np.sort(np.concatenate([[1.0, 2.0, 2.0, 2.0, 3.0, 3.5], np.linspace(6.0, 30.0, 114)]))
    a = with_spectrum(rng(23), spec)
    a = (a + a.T) / 2
    res = jax.jit(lambda a: lu_partial(a, 6, 0.5, block_size=3))(a)
    assert_same_eigenpairs(res, a, 6, 1e-10)


@pytest.mark.parametrize("block_size", [1, 2])
def test_an_exhausted_krylov_space_continues_from_fresh_rows(block_size):
    """Four distinct eigenvalues (1 three times, 2 twice, 3, 7 for the rest): the Krylov space
    of a block of b has dimension at most 4 b, so the block steps break down (the
    orthogonalised block vanishes) well before the basis is full. The iteration continues
    from pseudo-random rows orthogonalised against the basis, which also finds the copies of
    1 beyond the block's width: all five smallest, exactly."""
    spec = np.sort(np.concatenate([[1.0, 1.0, 1.0, 2.0, 2.0, 3.0], np.full(94, 7.0)]))
    a = with_spectrum(rng(24), spec)
    a = (a + a.T) / 2
    res = jax.jit(lambda a: lu_partial(a, 5, 0.5, block_size=block_size))(a)
    assert np.all(np.isfinite(np.asarray(res.eigenvectors)))
    assert_same_eigenpairs(res, a, 5, 1e-10)


@pytest.mark.parametrize("dtype", [np.complex128, np.float32])
def test_complex_hermitian_and_float32(dtype):
    """A complex Hermitian matrix (the Lanczos coefficients complex, T Hermitian) and float32
    (tol 6e-5): eigenpairs against NumPy in float64, a pair of equal eigenvalues inside."""
    spec = np.sort(np.concatenate([[1.0, 1.5, 2.0, 2.0, 4.0], np.linspace(6.0, 30.0, 95)]))
    a = with_spectrum(rng(25), spec, dtype=np.complex128 if is_complex(dtype) else np.float64)
    a = ((a + a.conj().T) / 2).astype(dtype)
    res = jax.jit(lambda a: lu_partial(a, 4, 0.5))(a)
    assert res.eigenvectors.dtype == dtype
    assert_same_eigenpairs(
        res,
        np.asarray(a, np.complex128 if is_complex(dtype) else np.float64),
        4,
        1e-10 if dtype == np.complex128 else 2e-4,
    )


@pytest.mark.parametrize("case", ["scaled identity", "identity plus rank one"])
def test_a_short_krylov_space_of_a_is_not_read_as_a_missed_eigenvalue(case):
    """``A = 3 I`` and ``2 I + u u^T`` exhaust the short Lanczos run on ``A`` (its ``||A||``
    estimate) after one or two steps. That run padded its tridiagonal matrix with zeros, so
    its smallest Ritz value read ``min(0, lambda_min)``, which the check for an eigenvalue
    below the block took for one: a correct answer became NaN (found by review)."""
    n = {"scaled identity": 20, "identity plus rank one": 30}[case]
    a = 3.0 * np.eye(n)
    if case == "identity plus rank one":
        u = rng(26).standard_normal(n)
        a = 2.0 * np.eye(n) + np.outer(u, u) / (u @ u)
    res = jax.jit(lambda a: lu_partial(a, 1, 1.0))(a)
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(a)[:1], rtol=1e-12)


def test_a_shift_far_below_the_spectrum_still_converges():
    """``sigma = -1000`` for ``||A|| = 20``: the residual test with ``S`` must be tightened by
    ``||A|| / ||A - sigma||`` (``||A x - mu x|| <= ||A - sigma|| ||r|| / |theta|``), or the
    restarts end before the residuals with ``A`` pass (found by review)."""
    res = jax.jit(lambda a: lu_partial(a, 2, -1000.0))(matrix())
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, SPEC[:2], rtol=0, atol=1e-9)


def test_argument_errors():
    a = jnp.asarray(matrix())
    with pytest.raises(ValueError, match="shift_invert.*callable `precond`"):
        eigjax.eigh_partial(a, K, method="shift_invert")
    with pytest.raises(ValueError, match="shift_invert.*callable `precond`"):
        eigjax.eigh_partial(a, K, method="shift_invert", precond="jacobi")
    with pytest.raises(ValueError, match="1 <= block_size <= n"):
        eigjax.eigh_partial(a, K, method="shift_invert", precond=lambda _, x: x, block_size=N + 1)


# ---------------------------------------------------------------------------
# Pencils A v = w B v: Lanczos in the B inner product on (A - sigma B)^{-1} B.


def pencil_solver(which, sigma=None):
    from test_partial_generalized import pencil

    a, b = pencil()
    sigma = SIGMA[which] if sigma is None else sigma
    shifted = a - sigma * b if which == "smallest" else sigma * b - a
    return jax.scipy.linalg.lu_factor(jnp.asarray(shifted)), lambda lu, x: jax.scipy.linalg.lu_solve(lu, x)


@pytest.mark.parametrize("which,block_size", [("smallest", None), ("largest", None), ("smallest", 1)])
def test_pencil_matches_eigh_generalized(which, block_size):
    """The generalized test pencil of test_partial_generalized.py (a degenerate pair inside the
    block at both ends): eigenpairs against SciPy's dense eigh(a, b), B-orthonormal vectors,
    true residuals reported, and gradients in both matrices against eigjax.eigh_generalized."""
    from test_partial_generalized import check_dense_pencil

    lu, solve = pencil_solver(which)
    check_dense_pencil(which, method="shift_invert", precond=solve, precond_params=lu, block_size=block_size)


def test_pencil_shift_inside_the_spectrum_gives_nan():
    """sigma = 1.75 between the pencil's eigenvalues 1.5 and 2: (A - sigma B)^{-1} B is
    indefinite, so converged pairs would not be the k smallest: NaN, converged False."""
    from test_partial_generalized import pencil

    a, b = (jnp.asarray(x) for x in pencil())
    lu, solve = pencil_solver("smallest", sigma=1.75)
    res = eigjax.eigh_partial(a, 2, b=b, method="shift_invert", precond=solve, precond_params=lu)
    assert not bool(res.converged)
    assert np.all(np.isnan(res.eigenvalues))


def test_pencil_bcoo_with_a_scipy_factorisation():
    """Sparse pencil (a 1-D stiffness-like A and mass-like B), both as BCOO, SciPy's splu of
    A - sigma B through jax.pure_callback: the smallest eigenvalues against SciPy's dense
    generalized eigh, and converged reported."""
    n = 300
    main = 3.0 + 0.5 * np.sin(np.arange(n))
    a = scipy.sparse.diags([-np.ones(n - 1), main, -np.ones(n - 1)], [-1, 0, 1], format="csc")
    bd = 1.0 + 0.3 * np.cos(np.arange(n) / 3.0)
    b = scipy.sparse.diags([0.1 * np.ones(n - 1), bd, 0.1 * np.ones(n - 1)], [-1, 0, 1], format="csc")
    # sigma = 0.6 below every eigenvalue (0.63826656, 0.6382715, ...: a tight cluster, 5e-6
    # apart; sigma = 0 separates them too little for 500 restarts)
    lu = scipy.sparse.linalg.splu((a - 0.6 * b).tocsc())

    def host(x):
        x = np.asarray(x)
        return lu.solve(np.ascontiguousarray(x.reshape(-1, n).T)).T.reshape(x.shape)

    solve = lambda _, x: jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, x.dtype), x, vmap_method="expand_dims")

    res = eigjax.eigh_partial(
        jsparse.BCOO.from_scipy_sparse(a), 3, b=jsparse.BCOO.from_scipy_sparse(b), method="shift_invert", precond=solve
    )
    want = scipy.linalg.eigh(a.toarray(), b.toarray(), eigvals_only=True)[:3]
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-10)
    v = np.asarray(res.eigenvectors)
    np.testing.assert_allclose(v.T @ (b @ v), np.eye(3), atol=1e-10)


def test_pencil_complex_hermitian():
    """A complex Hermitian pencil (the B inner product's conjugations): eigenvalues against
    SciPy's eigh(a, b), B-orthonormal eigenvectors, residuals as reported."""
    n, k = 120, 3
    r = rng(33)
    a = with_spectrum(r, np.linspace(1.0, 12.0, n), dtype=np.complex128)
    g = (r.standard_normal((n, n)) + 1j * r.standard_normal((n, n))) * 0.3
    b = np.eye(n) + g @ g.conj().T / n
    b = (b + b.conj().T) / 2
    lu = jax.scipy.linalg.lu_factor(jnp.asarray(a - 0.2 * b))
    res = eigjax.eigh_partial(
        jnp.asarray(a),
        k,
        b=jnp.asarray(b),
        method="shift_invert",
        precond=lambda f, x: jax.scipy.linalg.lu_solve(f, x),
        precond_params=lu,
    )
    assert bool(res.converged)
    np.testing.assert_allclose(res.eigenvalues, scipy.linalg.eigh(a, b, eigvals_only=True)[:k], rtol=1e-10)
    v = np.asarray(res.eigenvectors)
    np.testing.assert_allclose(v.conj().T @ b @ v, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(
        res.residual_norms, np.linalg.norm(a @ v - (b @ v) * np.asarray(res.eigenvalues), axis=0), rtol=1e-3, atol=1e-12
    )
