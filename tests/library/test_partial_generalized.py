"""Tests for the generalized and preconditioned eigh_partial: ``A v = w B v`` by LOBPCG.

Oracles: SciPy's dense ``eigh(a, b)`` for eigenvalues and the B-orthogonal spectral projector
``V V^T B`` (gauge invariant), eigjax's dense :func:`eigjax.eigh_generalized` for the gradients of
gauge-invariant losses with respect to ``A`` and ``B`` (its rule is the closed form, checked
against finite differences in test_generalized_eigh.py), and central finite differences of a
matrix-free pencil. The test pencil ``A = L C L^T``, ``B = L L^T`` (random well-conditioned
``L``) has eigenvalues exactly those of ``C``, with a degenerate pair inside the block at both
ends (k = 4) and a gap after it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import central_fd, hermitian_direction, rel_err, rng, with_spectrum
from jax.experimental import sparse as jsparse

import eigjax

jit = functools.partial(
    jax.jit, compiler_options={"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
)

N, K = 200, 4
SPEC = np.sort(np.concatenate([[1.0, 1.5, 2.0, 2.0], np.linspace(5.0, 17.0, N - 8), [19.0, 19.0, 19.5, 20.0]]))
WEIGHT = np.sin(np.arange(N * N).reshape(N, N) / 7.0)
WEIGHT = jnp.asarray(WEIGHT + WEIGHT.T)


@functools.cache
def pencil():
    r = rng(10)
    g = r.standard_normal((N, N)) * 0.4
    b = np.eye(N) + g @ g.T / N
    lf = np.linalg.cholesky(b)
    a = lf @ with_spectrum(rng(11), SPEC) @ lf.T
    return (a + a.T) / 2, (b + b.T) / 2


def loss_from(w, v):
    """Gauge-invariant: equal weights on a degenerate group (w**2), and the projector V V^T."""
    return jnp.sum(w**2) + jnp.sum((v @ v.T) * WEIGHT)


def block(which):
    return slice(0, K) if which == "smallest" else slice(N - K, N)


@functools.cache
def dense_reference(which):
    """Loss value and gradients (A, B) from eigjax.eigh_generalized on the whole pencil."""
    a, b = (jnp.asarray(x) for x in pencil())

    def loss(a, b):
        w, v = eigjax.eigh_generalized(a, b)
        return loss_from(w[block(which)], v[:, block(which)])

    value, (ga, gb) = jax.value_and_grad(loss, argnums=(0, 1))(a, b)
    return float(value), np.asarray(ga), np.asarray(gb)


def check_pairs(res, which, tol=1e-9):
    a, b = pencil()
    w_ref, v_ref = scipy.linalg.eigh(a, b)
    np.testing.assert_allclose(res.eigenvalues, w_ref[block(which)], rtol=1e-10)
    assert bool(res.converged)
    v, w = np.asarray(res.eigenvectors), np.asarray(res.eigenvalues)
    np.testing.assert_allclose(v.T @ b @ v, np.eye(K), atol=1e-12)
    r = np.linalg.norm(a @ v - (b @ v) * w[None, :], axis=0)
    np.testing.assert_allclose(res.residual_norms, r, rtol=1e-3, atol=1e-13)
    vr = v_ref[:, block(which)]
    assert rel_err(v @ v.T @ b, vr @ vr.T @ b) < 1e-8  # gauge-invariant: the B-orthogonal projector


def bcoo_of(a):
    idx = np.argwhere(np.ones(a.shape, bool)).astype(np.int32)
    return jsparse.BCOO((jnp.asarray(a[idx[:, 0], idx[:, 1]]), jnp.asarray(idx)), shape=a.shape)


def check_dense_pencil(which, **options):
    """eigh_partial(a, K, b=b, which=which, **options) on the dense test pencil: pairs
    against SciPy, loss value and gradients in both matrices against eigh_generalized."""
    a, b = (jnp.asarray(x) for x in pencil())

    @jit
    def run(a, b):
        def loss(a, b):
            res = eigjax.eigh_partial(a, K, b=b, which=which, **options)
            return loss_from(res.eigenvalues, res.eigenvectors), res

        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(a, b)

    (value, res), (ga, gb) = run(a, b)
    check_pairs(res, which)
    ref_value, ref_ga, ref_gb = dense_reference(which)
    np.testing.assert_allclose(float(value), ref_value, rtol=1e-10)
    assert rel_err(ga, ref_ga) < 1e-8
    assert rel_err(gb, ref_gb) < 1e-8


@pytest.mark.parametrize("which,precond", [("smallest", None), ("largest", "polynomial")])
def test_dense_pencil_matches_eigh_generalized(which, precond):
    check_dense_pencil(which, precond=precond)


def test_bcoo_pencil_matches_eigh_generalized():
    """Both matrices as BCOO (padded-row products); gradients to their data, along symmetric directions."""
    a, b = pencil()
    sa, sb = bcoo_of(a), bcoo_of(b)
    which = "smallest"

    @jit
    def run(da, db):
        def loss(da, db):
            res = eigjax.eigh_partial(
                jsparse.BCOO((da, sa.indices), shape=sa.shape),
                K,
                b=jsparse.BCOO((db, sb.indices), shape=sb.shape),
                precond="jacobi",
            )
            return loss_from(res.eigenvalues, res.eigenvectors), res

        return jax.grad(loss, argnums=(0, 1), has_aux=True)(da, db)

    (g_a, g_b), res = run(sa.data, sb.data)
    check_pairs(res, which)
    _, ref_ga, ref_gb = dense_reference(which)
    idx = np.asarray(sa.indices)
    for g, ref, seed in ((g_a, ref_ga, 1), (g_b, ref_gb, 2)):
        d = hermitian_direction(rng(seed), (N, N))
        lin = float(jnp.sum(g * d[idx[:, 0], idx[:, 1]]))
        want = float(np.sum(ref * d))
        assert abs(lin - want) <= 1e-8 * abs(want)


def test_operator_pencil_forward_mode_matches_eigh_generalized():
    a, b = (jnp.asarray(x) for x in pencil())
    which = "largest"
    matvec = lambda m, x: m @ x
    da, db = (jnp.asarray(hermitian_direction(rng(s), (N, N))) for s in (3, 4))

    def loss(a, b):
        res = eigjax.eigh_partial(matvec, K, params=a, b=matvec, b_params=b, n=N, which=which)
        return loss_from(res.eigenvalues, res.eigenvectors)

    value, got = jit(lambda a, b, da, db: jax.jvp(loss, (a, b), (da, db)))(a, b, da, db)
    ref_value, ref_ga, ref_gb = dense_reference(which)
    np.testing.assert_allclose(float(value), ref_value, rtol=1e-10)
    want = float(np.sum(ref_ga * np.asarray(da)) + np.sum(ref_gb * np.asarray(db)))
    assert abs(float(got) - want) <= 1e-8 * abs(want)


def tridiagonal(params, x):
    d, e = params
    zero = jnp.zeros((1,), x.dtype)
    return d * x + jnp.concatenate([e * x[1:], zero]) + jnp.concatenate([zero, e * x[:-1]])


def test_matrix_free_pencil_grad_matches_fd():
    """A stiffness-like A(p) and a mass-like B(q), both tridiagonal and matrix-free."""
    n, k = 150, 3
    r = rng(12)
    pa = (
        jnp.asarray(2.0 + np.linspace(0, 3, n) + 0.3 * r.standard_normal(n)),
        jnp.asarray(-1.0 + 0.1 * r.standard_normal(n - 1)),
    )
    pb = (jnp.asarray(4.0 + r.uniform(0, 1, n)), jnp.asarray(1.0 + 0.1 * r.standard_normal(n - 1)))
    weight = jnp.asarray(r.standard_normal(n))
    dirs = tuple(jnp.asarray(r.standard_normal(x.shape)) for x in (*pa, *pb))

    def loss(p):
        a_prm, b_prm = p[:2], p[2:]
        w, v = eigjax.eigh_partial(tridiagonal, k, params=a_prm, b=tridiagonal, b_params=b_prm, n=n)[:2]
        return jnp.sum(w**2) + jnp.sum((v**2) @ jnp.ones((k,)) * weight)

    run = jit(jax.value_and_grad(loss))
    p0 = (*pa, *pb)
    _, g = run(p0)
    lin = float(sum(jnp.sum(gi * di) for gi, di in zip(g, dirs)))
    shifted = lambda t: run(tuple(x + t * d for x, d in zip(p0, dirs)))[0]
    fd = float(central_fd(shifted, 0.0, 1.0, h=1e-4))
    assert abs(lin - fd) <= 1e-7 * abs(fd)


def test_preconditioners_agree():
    """No preconditioner, Jacobi, polynomial and a user callable (exact inverse of a shifted
    diagonal part): the same eigenpairs and gradients, standard and generalized."""
    a, b = (jnp.asarray(x) for x in pencil())
    inv_diag = 1.0 / (jnp.diagonal(a) + 1.0)
    user = lambda prm, x: prm * x

    @jit
    def run(a, b):
        outs = []
        for bb in (None, b):
            for pc, pp in ((None, None), ("jacobi", None), ("polynomial", None), (user, inv_diag)):

                def loss(a, bb, pc=pc, pp=pp):
                    res = eigjax.eigh_partial(a, K, b=bb, method="lobpcg", precond=pc, precond_params=pp)
                    return loss_from(res.eigenvalues, res.eigenvectors), res

                (_, res), g = jax.value_and_grad(loss, has_aux=True)(a, bb)
                outs.append((res.eigenvalues, res.eigenvectors @ res.eigenvectors.T, g, res.iterations))
        return outs

    outs = run(a, b)
    w_std = np.linalg.eigvalsh(np.asarray(a))[:K]
    for group, w_ref in ((outs[:4], w_std), (outs[4:], SPEC[:K])):
        w0, p0, g0, _ = group[0]
        np.testing.assert_allclose(w0, w_ref, rtol=1e-10)
        for w, proj, g, _ in group[1:]:
            np.testing.assert_allclose(w, w0, rtol=1e-10)
            assert rel_err(proj, p0) < 1e-8
            assert rel_err(g, g0) < 1e-8
        assert int(group[2][3]) < int(group[0][3])  # the polynomial preconditioner saves iterations


def test_single_vector_of_a_degenerate_pair_is_nan():
    """w = 2 is double inside the block: a loss of one of its vectors has no derivative."""
    a, b = (jnp.asarray(x) for x in pencil())

    def loss(a):
        v = eigjax.eigh_partial(a, K, b=b).eigenvectors
        return jnp.sum(v[:, 2] * (WEIGHT @ v[:, 2]))

    assert np.all(np.isnan(np.asarray(jit(jax.grad(loss))(a))))


def test_bad_generalized_input():
    a, b = pencil()
    with pytest.raises(ValueError, match="method='lobpcg'"):
        eigjax.eigh_partial(a, 2, b=b, method="chebyshev")
    with pytest.raises(ValueError, match="size and dtype"):
        eigjax.eigh_partial(a, 2, b=b[:10, :10])
    with pytest.raises(ValueError, match="jacobi"):
        eigjax.eigh_partial(lambda p, x: x, 2, n=N, precond="jacobi")
    with pytest.raises(ValueError, match="precond_params"):
        eigjax.eigh_partial(a, 2, precond_params=1.0)
    with pytest.raises(ValueError, match="b_params"):
        eigjax.eigh_partial(a, 2, b=b, b_params=1.0)
    with pytest.raises(ValueError, match="option `precond`"):
        eigjax.eigh_partial(a, 2, precond="ilu")
    with pytest.raises(ValueError, match="must be Hermitian"):
        eigjax.eigh_partial(a, 2, b=lambda p, x: jnp.cumsum(x), n=N)


def test_complex_pencil_matches_eigh_generalized():
    n, k = 60, 3
    r = rng(13)
    g = r.standard_normal((n, n)) + 1j * r.standard_normal((n, n))
    h = r.standard_normal((n, n)) + 1j * r.standard_normal((n, n))
    a, b = jnp.asarray((h + h.conj().T) / 2), jnp.asarray(np.eye(n) + g @ g.conj().T / n)
    c = jnp.asarray(np.diag(np.linspace(0.0, 1.0, n))).astype(jnp.complex128)

    def loss(w, v):  # gauge invariant: the B-orthogonal projector's trace against C
        return jnp.sum(w**2) + jnp.real(jnp.trace(v.conj().T @ c @ v))

    def partial(a, b):
        res = eigjax.eigh_partial(a, k, b=b, block_size=6)
        return loss(res.eigenvalues, res.eigenvectors), res

    def dense(a, b):
        w, v = eigjax.eigh_generalized(a, b)
        return loss(w[:k], v[:, :k])

    (_, res), g_part = jit(jax.value_and_grad(partial, argnums=(0, 1), has_aux=True))(a, b)
    g_dense = jax.grad(dense, argnums=(0, 1))(a, b)
    np.testing.assert_allclose(
        res.eigenvalues, scipy.linalg.eigh(np.asarray(a), np.asarray(b), eigvals_only=True)[:k], rtol=1e-10
    )
    for x, y in zip(g_part, g_dense):
        assert rel_err(x, y) < 1e-8


def test_second_derivative_and_vmap():
    """d^2/dt^2 of an eigenvalue sum of (A + t I, B + t D) against central differences of
    the first derivative's closed form; vmap equals a loop."""
    a, b = (jnp.asarray(x) for x in pencil())
    d = jnp.asarray(np.diag(np.linspace(0.5, 1.5, N)))
    eye = jnp.eye(N)
    f = lambda t: jnp.sum(eigjax.eigh_partial(a + t * eye, 1, b=b + t * d).eigenvalues)
    second = float(jit(jax.grad(jax.grad(f)))(0.0))
    df = jit(jax.grad(f))
    fd = float(central_fd(df, 0.0, 1.0, h=1e-3))
    assert abs(second - fd) <= 1e-6 * abs(fd)
    batch = jnp.stack([a, a + 0.5 * eye])
    run = lambda x: eigjax.eigh_partial(x, 2, b=b).eigenvalues
    np.testing.assert_allclose(jit(jax.vmap(run))(batch), np.stack([jit(run)(x) for x in batch]), rtol=1e-12)


def test_pencil_scaled_by_1e20_keeps_its_pairs_apart():
    """A and B both scaled by 1e20: residuals ||A v - w B v|| grow like sqrt(||B||) while the
    gaps do not, and the raw residual as degeneracy tolerance cut well separated pairs
    (all-NaN gradient of a weighted eigenvalue sum, an eigenvector loss 89% off; found by
    an audit). The tolerance uses ||A v - w B v|| / ||B v||."""
    a, b = (jnp.asarray(x) * 1e20 for x in pencil())
    weights = jnp.asarray([1.0, 2.0, 3.0, 3.0])  # equal on the degenerate pair (2, 2) inside the block

    def losses(w, v):
        return jnp.sum(w * weights) + jnp.sum(v[:, 0] ** 2 * jnp.arange(N, dtype=v.dtype)) / jnp.sum(v[:, 0] ** 2)

    run = jit(jax.grad(lambda a, b: losses(*eigjax.eigh_partial(a, K, b=b)[:2]), argnums=(0, 1)))
    ga, gb = run(a, b)
    dense = lambda a, b: losses(*(lambda r: (r[0][:K], r[1][:, :K]))(eigjax.eigh_generalized(a, b)))
    ref_a, ref_b = jax.grad(dense, argnums=(0, 1))(a, b)
    assert rel_err(ga, ref_a) < 1e-7
    assert rel_err(gb, ref_b) < 1e-7
