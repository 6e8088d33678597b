"""Tests for eigjax.eigvalsh_generalized: the values of A v = w B v without eigenvectors.

Oracles: scipy.linalg.eigh(a, b, eigvals_only=True) in float64 and eigjax.eigh_generalized's
eigenvalues, within ``c n eps ||A||_2 ||B^{-1}||_2``; the program's primitives and CPU HLO
(no eigenvector solver when nothing is differentiated); central finite differences of
eigenvalues (simple ones, or the sum of an exactly degenerate group) and of the gradient.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import central_fd, hermitian_direction, random_hermitian, random_matrix, rel_err, rng

import eigjax
from eigjax import _eigvals_only

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
PRIM = "eigjax_eigvalsh_values"


def _real(dtype):
    return np.finfo(np.dtype(dtype)).dtype


def random_pd(r, n, dtype=np.float64, batch=()):
    x = random_hermitian(r, n, dtype, batch)
    return ((x @ np.conj(np.swapaxes(x, -1, -2))) / n + np.eye(n)).astype(dtype)


def _pencil(r, n, dtype, batch=()):
    return random_hermitian(r, n, dtype, batch), random_pd(r, n, dtype, batch)


def _bound(a, b, dtype, c=8.0):
    """``c n eps ||A||_2 ||B^{-1}||_2`` per matrix of the batch, shape ``(..., 1)``."""
    a, b = np.asarray(a, np.complex128), np.asarray(b, np.complex128)
    n = a.shape[-1]
    norm_a = np.max(np.abs(np.linalg.eigvalsh(a)), axis=-1, keepdims=True)
    norm_binv = 1 / np.min(np.linalg.eigvalsh(b), axis=-1, keepdims=True)
    return c * n * np.finfo(_real(dtype)).eps * norm_a * norm_binv


def _scipy_values(a, b):
    a, b = np.asarray(a, np.complex128), np.asarray(b, np.complex128)
    flat_a, flat_b = a.reshape((-1,) + a.shape[-2:]), b.reshape((-1,) + b.shape[-2:])
    w = [scipy.linalg.eigh(x, y, eigvals_only=True) for x, y in zip(flat_a, flat_b, strict=True)]
    return np.asarray(w).reshape(a.shape[:-1])


def _prims(jaxpr):
    """Names of all primitives in a closed jaxpr, sub-jaxprs included."""
    return set(re.findall(r"\b([a-z_][a-z0-9_]*)\[", str(jaxpr))) | set(
        re.findall(r"= ([a-z_][a-z0-9_]*) ", str(jaxpr))
    )


# ---------------------------------------------------------------------------
# Values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 12), (1, 5), (20, 8), (2, 40)])
def test_values_match_scipy_and_eigh_generalized(dtype, shape):
    # (20, 8): real batches of n <= 16 take the native batched kernel, values only
    *batch, n = shape
    a, b = _pencil(rng(n), n, dtype, tuple(batch))
    w = np.asarray(eigjax.eigvalsh_generalized(a, b))
    assert w.shape == a.shape[:-1] and w.dtype == _real(dtype)
    bound = _bound(a, b, dtype)
    assert np.all(np.abs(w - _scipy_values(a, b)) <= bound)
    w_full = np.asarray(eigjax.eigh_generalized(a, b).eigenvalues)
    assert np.all(np.abs(w - w_full) <= 2 * bound)


def test_values_blocked_reduction():
    # n >= BLOCKED_N: LAPACK's blocked sytrd, then syevd('N') of the tridiagonal matrix
    n = _eigvals_only.BLOCKED_N + 3
    a, b = _pencil(rng(11), n, np.float64)
    w = np.asarray(eigjax.eigvalsh_generalized(a, b))
    assert np.all(np.abs(w - _scipy_values(a, b)) <= _bound(a, b, np.float64))


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
def test_identity_b_is_eigvalsh(dtype):
    a = random_hermitian(rng(1), 9, dtype)
    w = eigjax.eigvalsh_generalized(a, np.eye(9, dtype=dtype))
    np.testing.assert_allclose(w, eigjax.eigvalsh(a), rtol=0, atol=float(_bound(a, np.eye(9), dtype)[0]))


def test_hermitian_part_is_used():
    r = rng(2)
    a, b = _pencil(r, 6, np.complex128)
    junk_a = np.triu(random_matrix(r, (6, 6), np.complex128), 1)
    junk_b = 0.1 * np.triu(random_matrix(r, (6, 6), np.complex128), 1)
    # adding x - x^H changes nothing in the Hermitian part
    w = eigjax.eigvalsh_generalized(a + junk_a - np.conj(junk_a.T), b + junk_b - np.conj(junk_b.T))
    np.testing.assert_allclose(w, _scipy_values(a, b), rtol=0, atol=float(_bound(a, b, np.complex128)[0]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_vmap_and_jit_agree_with_batched_call(dtype):
    a, b = _pencil(rng(3), 6, dtype, (4,))
    batched = np.asarray(eigjax.eigvalsh_generalized(a, b))
    bound = _bound(a, b, dtype)
    f = eigjax.eigvalsh_generalized
    for g in (jax.vmap(f), jax.jit(f), jax.jit(jax.vmap(f))):
        assert np.all(np.abs(np.asarray(g(a, b)) - batched) <= bound)
    # vmap over a middle axis, b shared across the batch
    a2 = np.stack([a, 2 * a], axis=1)
    w2 = jax.vmap(jax.vmap(f, in_axes=(0, None)), in_axes=(1, None), out_axes=1)(a2, b[0])
    assert np.all(np.abs(np.asarray(w2[:, 0]) - _scipy_values(a, np.broadcast_to(b[0], a.shape))) <= bound)


# ---------------------------------------------------------------------------
# No eigenvectors when nothing is differentiated


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_primal_computes_no_eigenvectors(dtype):
    a = jnp.zeros((40, 40), dtype)
    b = jnp.eye(40, dtype=dtype)
    prims = _prims(jax.make_jaxpr(eigjax.eigvalsh_generalized)(a, b))
    assert PRIM in prims and "cholesky" in prims
    assert "eigh" not in prims  # no eigenvector solver in the program
    # the full decomposition has it; under differentiation the rule runs it
    assert "eigh" in _prims(jax.make_jaxpr(lambda a, b: eigjax.eigh_generalized(a, b).eigenvalues)(a, b))
    grad_prims = _prims(jax.make_jaxpr(jax.grad(lambda a: jnp.sum(eigjax.eigvalsh_generalized(a, b))))(a))
    assert "eigh" in grad_prims and PRIM not in grad_prims
    if jax.default_backend() == "cpu":
        hlo = jax.jit(eigjax.eigvalsh_generalized).lower(a, b).as_text()
        assert "mode = 78 : ui8" in hlo and "mode = 86" not in hlo  # jobz = 'N', never 'V'
        hlo_full = jax.jit(lambda a, b: eigjax.eigh_generalized(a, b).eigenvalues).lower(a, b).as_text()
        assert "mode = 86" in hlo_full  # the check itself can see eigenvectors
    # batched real small matrices: the native kernel's values-only entry, no eigh
    small = jnp.zeros((50, 8, 8), np.float64)
    eye = jnp.broadcast_to(jnp.eye(8, dtype=np.float64), small.shape)
    prims = _prims(jax.make_jaxpr(eigjax.eigvalsh_generalized)(small, eye))
    assert "eigh" not in prims


# ---------------------------------------------------------------------------
# First derivatives


def _lin(ga, gb, da, db):
    # jax.grad of a real loss of complex input: dL = Re sum(g * dz) (JAX's convention).
    return float(np.real(np.sum(np.asarray(ga) * da) + np.sum(np.asarray(gb) * db)))


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("loss", ["sum_sq", "single"])
def test_grad_matches_fd_and_eigh_generalized(dtype, loss):
    r = rng(4)
    n = 6
    a, b = _pencil(r, n, dtype)
    da = hermitian_direction(r, (n, n), dtype)
    db = 0.3 * hermitian_direction(r, (n, n), dtype)
    pick = {"sum_sq": lambda w: jnp.sum(w**2), "single": lambda w: w[2]}[loss]
    f = lambda a, b: pick(eigjax.eigvalsh_generalized(a, b))  # noqa: E731
    f_full = lambda a, b: pick(eigjax.eigh_generalized(a, b).eigenvalues)  # noqa: E731
    ga, gb = jax.grad(f, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
    ga0, gb0 = jax.grad(f_full, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
    assert rel_err(ga, ga0) < 1e-12 and rel_err(gb, gb0) < 1e-12
    for wrt_a, wrt_b in [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]:
        fd = float(central_fd(lambda t: f(a + t * wrt_a * da, b + t * wrt_b * db), 0.0, 1.0, h=1e-4))
        lin = _lin(ga, gb, wrt_a * da, wrt_b * db)
        assert abs(lin - fd) < 1e-8 * max(1.0, abs(fd)), (wrt_a, wrt_b, lin, fd)
    # forward mode: the same directional derivative
    _, t = jax.jvp(f, (jnp.asarray(a), jnp.asarray(b)), (jnp.asarray(da), jnp.asarray(db)))
    assert abs(float(t) - _lin(ga, gb, da, db)) < 1e-10 * max(1.0, abs(float(t)))


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_grad_float32_matches_eigh_generalized(dtype):
    r = rng(5)
    a, b = _pencil(r, 6, dtype, (3,))
    f = lambda a, b: jnp.sum(eigjax.eigvalsh_generalized(a, b) ** 2)  # noqa: E731
    f_full = lambda a, b: jnp.sum(eigjax.eigh_generalized(a, b).eigenvalues ** 2)  # noqa: E731
    ga, gb = jax.grad(f, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
    ga0, gb0 = jax.grad(f_full, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
    assert ga.dtype == np.dtype(dtype) and gb.dtype == np.dtype(dtype)
    assert rel_err(ga, ga0) < 1e-5 and rel_err(gb, gb0) < 1e-5
    # against the float64 computation
    g64 = jax.grad(f, argnums=(0, 1))(jnp.asarray(a, np.complex128), jnp.asarray(b, np.complex128))
    assert rel_err(ga, g64[0]) < 1e-3 and rel_err(gb, g64[1]) < 1e-3


def test_vmap_of_grad():
    r = rng(6)
    a, b = _pencil(r, 5, np.float64, (3,))
    f = lambda a, b: jnp.sum(eigjax.eigvalsh_generalized(a, b) ** 2)  # noqa: E731
    g = jax.vmap(jax.grad(f, argnums=(0, 1)))(a, b)
    for i in range(3):
        gi = jax.grad(f, argnums=(0, 1))(a[i], b[i])
        np.testing.assert_allclose(g[0][i], gi[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g[1][i], gi[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_degenerate_pencil_group_sum(dtype):
    # A = L diag(1, 1, 2, 3) L^H, B = L L^H: generalized eigenvalues exactly 1, 1, 2, 3.
    r = rng(7)
    n = 4
    l = np.tril(random_matrix(r, (n, n), dtype)) + 3 * np.eye(n)
    b = (l @ np.conj(l.T)).astype(dtype)
    a = ((l * np.array([1.0, 1.0, 2.0, 3.0])) @ np.conj(l.T)).astype(dtype)
    w = np.asarray(eigjax.eigvalsh_generalized(a, b))
    np.testing.assert_allclose(w, [1.0, 1.0, 2.0, 3.0], rtol=0, atol=1e-12)
    pair = lambda a, b: jnp.sum(eigjax.eigvalsh_generalized(a, b)[:2])  # noqa: E731
    ga, gb = jax.grad(pair, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
    assert np.all(np.isfinite(np.asarray(ga))) and np.all(np.isfinite(np.asarray(gb)))
    for _ in range(2):
        da = hermitian_direction(r, (n, n), dtype)
        db = 0.3 * hermitian_direction(r, (n, n), dtype)
        for wrt_a, wrt_b in [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]:
            fd = float(central_fd(lambda t: pair(a + t * wrt_a * da, b + t * wrt_b * db), 0.0, 1.0, h=1e-4))
            lin = _lin(ga, gb, wrt_a * da, wrt_b * db)
            assert abs(lin - fd) < 1e-8 * max(1.0, abs(fd)), (wrt_a, wrt_b, lin, fd)
    # a loss symmetric in the group (sum of squares) too
    sq = lambda a, b: jnp.sum(eigjax.eigvalsh_generalized(a, b) ** 2)  # noqa: E731
    ga, gb = jax.grad(sq, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
    da, db = hermitian_direction(r, (n, n), dtype), 0.3 * hermitian_direction(r, (n, n), dtype)
    fd = float(central_fd(lambda t: sq(a + t * da, b + t * db), 0.0, 1.0, h=1e-4))
    assert abs(_lin(ga, gb, da, db) - fd) < 1e-8 * max(1.0, abs(fd))


def test_single_eigenvalue_of_a_group_depends_on_the_gauge():
    # Documented: one eigenvalue of a degenerate group has no derivative; its returned
    # gradient changes with the basis of the group (eigjax.random_gauge re-gauges the
    # rule's eigenvectors), the group's sum does not.
    r = rng(12)
    l = np.tril(random_matrix(r, (4, 4))) + 3 * np.eye(4)
    b = jnp.asarray(l @ l.T)
    a = jnp.asarray((l * np.array([1.0, 1.0, 2.0, 3.0])) @ l.T)
    single = eigjax.check_gauge_invariance(lambda x: eigjax.eigvalsh_generalized(x, b)[0], a)
    assert not bool(single.invariant) and float(single.grad_change) > 1e-3
    pair = eigjax.check_gauge_invariance(lambda x: jnp.sum(eigjax.eigvalsh_generalized(x, b)[:2]), a)
    assert bool(pair.invariant)


# ---------------------------------------------------------------------------
# Second derivatives


def test_hessian_matches_fd_of_gradient():
    r = rng(8)
    n = 4
    a, b = _pencil(r, n, np.float64)
    loss = lambda a, b: jnp.sum(eigjax.eigvalsh_generalized(a, b) ** 2)  # noqa: E731
    da, db = hermitian_direction(r, (n, n)), 0.3 * hermitian_direction(r, (n, n))
    grad = jax.grad(loss, argnums=(0, 1))
    h = jax.hessian(loss, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(h))
    for wrt_a, wrt_b in [(1.0, 0.0), (0.0, 1.0)]:
        fd = central_fd(lambda t: grad(a + t * wrt_a * da, b + t * wrt_b * db), 0.0, 1.0, h=1e-4)
        for i in range(2):  # rows: d/da, d/db of the gradient
            hv = np.einsum("ijkl,kl->ij", np.asarray(h[i][0]), wrt_a * da) + np.einsum(
                "ijkl,kl->ij", np.asarray(h[i][1]), wrt_b * db
            )
            assert rel_err(hv, fd[i]) < 1e-6, (wrt_a, wrt_b, i, rel_err(hv, fd[i]))
    # the same as eigh_generalized's eigenvalues
    h0 = jax.hessian(lambda a: jnp.sum(eigjax.eigh_generalized(a, b).eigenvalues ** 2))(jnp.asarray(a))
    assert rel_err(h[0][0], h0) < 1e-10


# ---------------------------------------------------------------------------
# B not positive definite, non-finite input, bad arguments


@pytest.mark.parametrize("dtype", [np.float64, np.complex64])
def test_not_positive_definite_b(dtype):
    a = np.diag([1.0, 2.0, 3.0]).astype(dtype)
    b = np.diag([1.0, -1.0, 2.0]).astype(dtype)
    assert np.all(np.isnan(np.asarray(eigjax.eigvalsh_generalized(a, b))))
    g = jax.grad(lambda a: jnp.sum(eigjax.eigvalsh_generalized(a, b)))(jnp.asarray(a))
    assert np.all(np.isnan(np.asarray(g)))
    # batched: only the failing matrix is NaN
    w = np.asarray(eigjax.eigvalsh_generalized(np.stack([a, a]), np.stack([np.eye(3, dtype=dtype), b])))
    np.testing.assert_allclose(w[0], [1.0, 2.0, 3.0], rtol=1e-6)
    assert np.all(np.isnan(w[1]))
    with pytest.raises(ValueError, match=r"eigvalsh_generalized.*`b`.*positive definite"):
        eigjax.eigvalsh_generalized(a, b, check=True)
    with pytest.raises(ValueError, match=r"batch index \(1,\)"):
        eigjax.eigvalsh_generalized(np.stack([a, a]), np.stack([np.eye(3, dtype=dtype), b]), check=True)
    eigjax.eigvalsh_generalized(a, np.eye(3, dtype=dtype), check=True)  # positive definite passes
    # traced input is not checked: NaN, no exception
    assert np.all(np.isnan(np.asarray(jax.jit(lambda a, b: eigjax.eigvalsh_generalized(a, b, check=True))(a, b))))


@pytest.mark.parametrize("fill", [np.inf, np.nan])
@pytest.mark.parametrize("where", ["a", "b"])
def test_non_finite_input_gives_nan(fill, where):
    a, b = _pencil(rng(9), 5, np.float64, (2,))
    if where == "a":
        a[1, 0, 4] = fill
    else:
        b[1] = np.full((5, 5), fill)  # an all-inf b reduces to a finite C (1/inf = 0)
    w = np.asarray(eigjax.eigvalsh_generalized(a, b))
    assert np.all(np.isnan(w[1])) and np.all(np.isfinite(w[0]))
    if where == "b":
        with pytest.raises(ValueError, match=r"eigvalsh_generalized: argument `b` .* non-finite"):
            eigjax.eigvalsh_generalized(a, b, check=True)


def test_bad_input():
    f = eigjax.eigvalsh_generalized
    with pytest.raises(ValueError, match=r"eigvalsh_generalized.*`a` must be square.*\(3, 4\)"):
        f(np.ones((3, 4)), np.eye(3))
    with pytest.raises(ValueError, match=r"`b` must be square"):
        f(np.eye(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"`a` and `b` must have the same shape"):
        jax.jit(f)(np.eye(3), np.eye(4))
    with pytest.raises(TypeError, match=r"`b` must be a JAX or NumPy array"):
        f(np.eye(2), [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"degenerate_tol"):
        f(np.eye(2), np.eye(2), degenerate_tol=-1.0)


def test_integer_input_promotes_like_eigh_generalized():
    a = np.array([[2, 0], [0, 3]])
    b = np.array([[2, 0], [0, 1]])
    w = eigjax.eigvalsh_generalized(a, b)
    assert w.dtype == eigjax.eigh_generalized(a, b).eigenvalues.dtype
    np.testing.assert_allclose(w, [1.0, 3.0], rtol=1e-12)
