"""Tests for eigjax.eig / eigjax.eigvals: forward contract, derivatives, fallback, errors.

Derivatives are checked against (a) fourth-order central finite differences of
well-defined quantities, recomputed with the same normalisation and with the
eigenvalues of the perturbed matrix *matched* to the base ones (so a change of
LAPACK/sort order cannot fake or hide a mismatch), (b) an implicit-differentiation
oracle built in NumPy only, and (c) JAX's own eigenvalue derivative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import central_fd, random_matrix, rel_err, rng
from scipy.optimize import linear_sum_assignment

import eigjax
from eigjax._eig_host import has_native_eig

# --------------------------------------------------------------------------- helpers


def real_spectrum_matrix(r, n):
    """Real ``X diag(w) X^{-1}`` with distinct real eigenvalues (well separated)."""
    x = random_matrix(r, (n, n)) + 2 * np.eye(n)
    w = np.linspace(-1.0, 1.5, n) + 0.1 * r.standard_normal(n) / n
    return x @ np.diag(w) @ np.linalg.inv(x)


def conjugate_pair_matrix(r, n):
    """Real matrix with complex-conjugate pairs (and one real eigenvalue if n is odd)."""
    blocks = np.zeros((n, n))
    for i in range(0, n - 1, 2):
        a, b = 0.4 * i - 1.0, 0.5 + 0.3 * i
        blocks[i : i + 2, i : i + 2] = [[a, b], [-b, a]]
    if n % 2:
        blocks[-1, -1] = 2.0
    x = random_matrix(r, (n, n)) + 2 * np.eye(n)
    return x @ blocks @ np.linalg.inv(x)


def make_matrix(kind, n, seed=0):
    r = rng(seed)
    if kind == "real":
        return real_spectrum_matrix(r, n)
    if kind == "pairs":
        return conjugate_pair_matrix(r, n)
    return random_matrix(r, (n, n), np.complex128)


def make_direction(kind, n, seed=1):
    return random_matrix(rng(seed), (n, n), np.complex128 if kind == "complex" else np.float64)


def match(w_base, w):
    """Permutation ``p`` with ``w[..., p] ~ w_base`` (optimal assignment per matrix)."""
    w_base, w = np.asarray(w_base), np.asarray(w)
    flat_b = w_base.reshape(-1, w_base.shape[-1])
    flat = w.reshape(-1, w.shape[-1])
    perms = [linear_sum_assignment(np.abs(b[:, None] - x[None, :]))[1] for b, x in zip(flat_b, flat)]
    return np.stack(perms).reshape(w.shape)


def quantities(a):
    """Eigenvalues, |V|, spectral projectors x_k y_k^H / (y_k^H x_k), raw V."""
    w, v, y = eigjax.eig(a, left=True)
    yhx = jnp.sum(jnp.conj(y) * v, axis=-2)
    proj = jnp.einsum("...ik,...jk->...kij", v, jnp.conj(y)) / yhx[..., :, None, None]
    return w, jnp.abs(v), proj, v


# One compiled function per shape serves both the JVP and the finite differences.
_jvp_quantities = jax.jit(lambda a, da: jax.jvp(quantities, (a,), (da,)))


def _quantities(a):
    a = jnp.asarray(a)
    return _jvp_quantities(a, jnp.zeros_like(a))[0]


def matched_quantities(w_base):
    """``quantities`` with the eigen-index permuted to follow ``w_base``."""

    def f(a):
        w, absv, proj, v = _quantities(a)
        p = match(w_base, w)
        return (
            np.take_along_axis(np.asarray(w), p, -1),
            np.take_along_axis(np.asarray(absv), p[..., None, :], -1),
            np.take_along_axis(np.asarray(proj), p[..., :, None, None], -3),
            np.take_along_axis(np.asarray(v), p[..., None, :], -1),
        )

    return f


def assert_close(got, want, rtol, name):
    assert np.all(np.isfinite(np.asarray(got))), f"{name}: not finite"
    err = rel_err(got, want)
    assert err <= rtol, f"{name}: relative error {err:.2e} > {rtol:.0e}"


# ------------------------------------------------------------ seed example & JAX


SEED_A = np.array([[1.0, 2.0], [3.0, 4.0]])


def test_seed_example_gradient_matches_fd():
    loss = jax.jit(lambda a: jnp.sum(jnp.abs(eigjax.eig(a).eigenvalues)))
    g = jax.grad(loss)(jnp.asarray(SEED_A))
    fd = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            e = np.zeros((2, 2))
            e[i, j] = 1.0
            fd[i, j] = central_fd(loss, SEED_A, e, h=1e-3)
    np.testing.assert_allclose(g, fd, rtol=0, atol=1e-7)
    # closed form: w = (5 -+ sqrt(33))/2 -> sum|w| = sqrt(33) = sqrt(tr^2 - 4 det)
    closed = jax.grad(lambda a: jnp.sqrt(jnp.trace(a) ** 2 - 4 * jnp.linalg.det(a)))(jnp.asarray(SEED_A))
    np.testing.assert_allclose(g, closed, atol=1e-12)


def test_jax_builtin_still_raises():
    """The failure eigjax replaces. If this starts passing, JAX changed: update the README."""
    loss = lambda a: jnp.sum(jnp.abs(jnp.linalg.eig(a)[0]))
    with pytest.raises(NotImplementedError, match="enable_eigvec_derivs"):
        jax.grad(loss)(jnp.asarray(SEED_A))
    with pytest.raises(NotImplementedError):
        jax.hessian(lambda a: jnp.sum(jnp.abs(jnp.linalg.eigvals(a))))(jnp.asarray(SEED_A))


# ----------------------------------------------------------------------- forward


# (a 1x1 real matrix has no conjugate pair: that combination does not exist)
@pytest.mark.parametrize(
    "kind,n", [(k, n) for k in ["real", "pairs", "complex"] for n in [1, 2, 3, 6, 12] if (k, n) != ("pairs", 1)]
)
def test_forward_contract(kind, n):
    a = make_matrix(kind, n)
    w, v = eigjax.eig(jnp.asarray(a))
    w, v = np.asarray(w), np.asarray(v)
    eps = np.finfo(np.float64).eps
    # residual <= c eps ||A|| cond(V)
    res = np.linalg.norm(a @ v - v * w[None, :])
    assert res <= 10 * n * eps * np.linalg.norm(a) * np.linalg.cond(v)
    # eigenvalues equal NumPy's, in lexicographic (real, imag) order
    np.testing.assert_allclose(w, np.sort_complex(np.linalg.eigvals(a)), atol=1e-10 * np.linalg.cond(v))
    assert np.all(np.diff(w.real) >= -1e-12)
    # normalisation: unit norm, largest component real positive
    np.testing.assert_allclose(np.linalg.norm(v, axis=0), 1.0, atol=1e-14)
    k = np.argmax(np.abs(v), axis=0)
    vk = v[k, np.arange(n)]
    assert np.all(vk.real > 0) and np.all(vk.imag == 0)
    if kind == "real":
        assert np.all(w.imag == 0) and np.all(v.imag == 0)
    if kind == "pairs":
        assert np.sum(np.abs(w.imag) > 0.1) >= 2
        np.testing.assert_allclose(np.sort_complex(w), np.sort_complex(np.conj(w)), atol=1e-12)
    np.testing.assert_allclose(eigjax.eigvals(jnp.asarray(a)), w, atol=1e-12)


def test_left_eigenvectors_and_condition_numbers_vs_scipy():
    import scipy.linalg

    a = make_matrix("pairs", 5, seed=3)
    w, v, y = (np.asarray(t) for t in eigjax.eig(jnp.asarray(a), left=True))
    np.testing.assert_allclose(np.conj(y.T) @ v, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(np.conj(y.T) @ a, w[:, None] * np.conj(y.T), atol=1e-11)
    ws, yl, xr = scipy.linalg.eig(a, left=True, right=True)
    p = match(w, ws)
    xr, yl = xr[:, p], yl[:, p]
    s_scipy = np.linalg.norm(xr, axis=0) * np.linalg.norm(yl, axis=0) / np.abs(np.sum(np.conj(yl) * xr, axis=0))
    np.testing.assert_allclose(eigjax.eig_condition_numbers(jnp.asarray(a)), s_scipy, rtol=1e-9)
    # normal matrix: all condition numbers are 1
    q = np.linalg.qr(random_matrix(rng(4), (4, 4)))[0]
    s = eigjax.eig_condition_numbers(jnp.asarray(q))
    np.testing.assert_allclose(s, 1.0, atol=1e-12)


# ------------------------------------------------------------------- derivatives


@pytest.mark.parametrize("field", ["real", "complex"])
@pytest.mark.parametrize("n", [1, 2, 3, 6, 12])
def test_jvp_matches_finite_differences(field, n):
    """Eigenvalues, |v_ij|, spectral projectors and raw entries under the phase rule.

    Real input is a batch of two: one matrix with real eigenvalues, one with
    complex-conjugate pairs (n > 1); so this is also a batched test.
    """
    if field == "real":
        kinds = ["real"] if n == 1 else ["real", "pairs"]
    else:
        kinds = ["complex", "complex"]
    a = np.stack([make_matrix(k, n, seed=s) for s, k in enumerate(kinds)])
    da = np.stack([make_direction(k, n, seed=10 + s) for s, k in enumerate(kinds)])
    (w0, *_), tangents = _jvp_quantities(jnp.asarray(a), jnp.asarray(da))
    if "pairs" in kinds:
        assert np.sum(np.abs(np.asarray(w0[1]).imag) > 0.1) >= 2
    fd = central_fd(matched_quantities(w0), a, da, h=1e-4)
    for name, got, want in zip(["eigenvalues", "|v|", "projectors", "raw V"], tangents, fd):
        assert_close(got, want, 2e-7, name)


@pytest.mark.parametrize("kind", ["complex"])
def test_jvp_batched_equals_loop_and_vmap(kind):
    r = rng(7)
    n, batch = 3, (2, 3)
    a = np.stack([make_matrix(kind, n, seed=s) for s in range(6)]).reshape(*batch, n, n)
    da = random_matrix(r, (*batch, n, n), np.complex128 if kind == "complex" else np.float64)
    f = lambda x: tuple(eigjax.eig(x))
    f_jvp = jax.jit(lambda x, dx: jax.jvp(f, (x,), (dx,)))
    out, tan = f_jvp(jnp.asarray(a), jnp.asarray(da))
    vout, vtan = jax.jit(jax.vmap(jax.vmap(f_jvp)))(jnp.asarray(a), jnp.asarray(da))
    for i in np.ndindex(*batch):
        o1, t1 = f_jvp(jnp.asarray(a[i]), jnp.asarray(da[i]))
        for x, y in zip(out + tan, o1 + t1):
            np.testing.assert_allclose(x[i], y, atol=1e-12)
    for x, y in zip(out + tan, vout + vtan):
        np.testing.assert_allclose(x, y, atol=1e-12)


def _oracle_normalised_eig(a):
    """NumPy-only eigendecomposition under the documented convention."""
    w, v = np.linalg.eig(a)
    order = np.lexsort((w.imag, w.real))
    w, v = w[order], v[:, order]
    v = v / np.linalg.norm(v, axis=0)
    k = np.argmax(np.abs(v), axis=0)
    vk = v[k, np.arange(len(w))]
    return w, v * (np.conj(vk) / np.abs(vk)), k


def implicit_oracle(a, da):
    """Solve the linearised ``A V - V diag(w) = 0`` plus the normalisation densely.

    Unknowns: real and imaginary parts of ``dw`` (n) and ``dV`` (n x n). Equations:
    ``A dV - dV diag(w) - V diag(dw) = -dA V`` (complex, n^2), ``Re(v_j^H dv_j) = 0``
    and ``Im(dV[k_j, j]) = 0`` (n each). Built column by column; NumPy only.
    """
    n = a.shape[0]
    w, v, k = _oracle_normalised_eig(a)
    m = n + n * n

    def residual(z):  # z complex of length m; returns real vector of equations
        dw, dv = z[:n], z[n:].reshape(n, n)
        e = a @ dv - dv * w[None, :] - v * dw[None, :]
        nrm = np.real(np.sum(np.conj(v) * dv, axis=0))
        ph = np.imag(dv[k, np.arange(n)])
        return np.concatenate([e.real.ravel(), e.imag.ravel(), nrm, ph])

    cols = []
    for part in (1.0, 1j):
        for i in range(m):
            z = np.zeros(m, complex)
            z[i] = part
            cols.append(residual(z))
    mat = np.stack(cols, axis=1)
    rhs_c = -(da @ v)
    rhs = np.concatenate([rhs_c.real.ravel(), rhs_c.imag.ravel(), np.zeros(2 * n)])
    sol = np.linalg.solve(mat, rhs)
    z = sol[:m] + 1j * sol[m:]
    return w, z[:n], z[n:].reshape(n, n)


@pytest.mark.parametrize("kind,n", [("real", 4), ("pairs", 5), ("complex", 3), ("complex", 6)])
def test_jvp_matches_implicit_differentiation_oracle(kind, n):
    a, da = make_matrix(kind, n, seed=11), make_direction(kind, n, seed=12)
    w_or, dw_or, dv_or = implicit_oracle(a, da)
    (w, _), (dw, dv) = jax.jvp(lambda x: tuple(eigjax.eig(x)), (jnp.asarray(a),), (jnp.asarray(da),))
    p = match(w_or, w)
    assert_close(np.asarray(dw)[p], dw_or, 1e-10, "dw")
    assert_close(np.asarray(dv)[:, p], dv_or, 1e-10, "dV")


@pytest.mark.parametrize("kind", ["pairs", "complex"])
def test_derivatives_equal_jax_builtins(kind):
    """Eigenvalue JVP equals jnp.linalg.eigvals'; eigenvector JVP equals JAX's opt-in one
    (which differentiates LAPACK's normalisation: ours differs by a +-1 per column)."""
    a, da = jnp.asarray(make_matrix(kind, 5, seed=5)), jnp.asarray(make_direction(kind, 5, seed=6))
    w, dw = jax.jvp(eigjax.eigvals, (a,), (da,))
    wj, dwj = jax.jvp(jnp.linalg.eigvals, (a,), (da,))
    p = match(w, wj)
    np.testing.assert_allclose(np.asarray(dwj)[p], dw, atol=1e-11)
    lax_eig = lambda x: tuple(jax.lax.linalg.eig(x, compute_left_eigenvectors=False, enable_eigvec_derivs=True))
    (wl, vl), (_, dvl) = jax.jvp(lax_eig, (a,), (da,))
    (w, v), (_, dv) = jax.jvp(lambda x: tuple(eigjax.eig(x)), (a,), (da,))
    p = match(w, wl)
    vl, dvl = np.asarray(vl)[:, p], np.asarray(dvl)[:, p]
    sign = np.sum(np.conj(vl) * np.asarray(v), axis=0)
    np.testing.assert_allclose(np.abs(sign), 1.0, atol=1e-12)
    np.testing.assert_allclose(dvl * sign[None, :], dv, atol=1e-10)


@pytest.mark.parametrize(
    "loss",
    [
        lambda a: jnp.sum(jnp.abs(eigjax.eigvals(a))),
        lambda a: jnp.max(jnp.real(eigjax.eigvals(a))),
    ],
    ids=["sum_abs", "max_real"],
)
def test_hessian_of_eigvals_matches_fd_of_gradient(loss):
    a = jnp.asarray(make_matrix("pairs", 3, seed=2))  # pair 0.-1 +- 0.5i, real 2.0: max simple
    assert np.sum(np.real(np.linalg.eigvals(np.asarray(a))) > 1.5) == 1
    h = jax.jit(jax.hessian(loss))(a)
    grad = jax.jit(jax.grad(loss))
    for seed in (0, 1):
        da = random_matrix(rng(20 + seed), (3, 3))
        fd = central_fd(grad, a, da, h=1e-4)
        assert_close(jnp.einsum("ijkl,kl->ij", h, da), fd, 1e-7, "hessian . da")
    # the gradient itself against FD of the loss, and hessian symmetry
    da = random_matrix(rng(30), (3, 3))
    np.testing.assert_allclose(jnp.sum(grad(a) * da), central_fd(jax.jit(loss), a, da), rtol=1e-8)
    np.testing.assert_allclose(h, jnp.transpose(h, (2, 3, 0, 1)), atol=1e-9)


# -------------------------------------------------------- repeated / defective


def semisimple_matrix(seed=0, dtype=np.float64):
    """``X diag(1, 1, 2, 3) X^{-1}``: a repeated eigenvalue with two independent eigenvectors."""
    r = rng(seed)
    x = random_matrix(r, (4, 4), dtype) + 2 * np.eye(4)
    return x @ np.diag([1.0, 1.0, 2.0, 3.0]) @ np.linalg.inv(x)


def group_quantities(a):
    """Gauge-invariant functions of the repeated group (eigenvalues near 1)."""
    w, v, y = eigjax.eig(a, left=True)
    in_group = jnp.abs(w - 1.0) < 0.5
    g = jnp.where(in_group, 1.0, 0.0)
    proj = jnp.einsum("...ik,...k,...jk->...ij", v, g.astype(v.dtype), jnp.conj(y))
    # V diag(f(w)) V^{-1} with f equal on the group: a smooth matrix function
    fw = jnp.where(in_group, 5.0, w**2)
    mf = jnp.einsum("...ik,...k,...jk->...ij", v, fw, jnp.conj(y))
    return jnp.sum(jnp.where(in_group, w, 0.0)), proj, mf


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_repeated_semisimple_eigenvalue_invariant_losses(dtype):
    a = semisimple_matrix(seed=3, dtype=dtype)
    da = random_matrix(rng(4), (4, 4), dtype)
    w = np.asarray(eigjax.eigvals(jnp.asarray(a)))
    assert np.sum(np.abs(w - 1.0) < 1e-10) == 2  # really repeated at working precision
    got = jax.jvp(group_quantities, (jnp.asarray(a),), (jnp.asarray(da),))[1]
    fd = central_fd(jax.jit(group_quantities), a, da, h=1e-4)
    for name, x, y in zip(["group eigenvalue sum", "group projector", "matrix function"], got, fd):
        assert_close(x, y, 1e-7, name)
    # the whole-group sum also through eigvals, reverse mode
    gsum = lambda x: jnp.sum(jnp.where(jnp.abs(eigjax.eigvals(x) - 1.0) < 0.5, eigjax.eigvals(x), 0.0)).real
    g = jax.grad(gsum)(jnp.asarray(a).real if dtype == np.float64 else jnp.asarray(a))
    assert np.all(np.isfinite(np.asarray(g)))


def jordan_matrices():
    r = rng(9)
    q = np.linalg.qr(random_matrix(r, (4, 4)))[0]
    j2 = np.diag([1.0, 1.0, 2.0, 3.0])
    j2[0, 1] = 1.0  # also used unrotated: exactly triangular, V exactly singular
    j3 = np.diag([2.0, 2.0, 2.0, -1.0])
    j3[0, 1] = j3[1, 2] = 1.0
    return {
        "exact": j2,
        "rotated_2": q @ j2 @ q.T,
        "rotated_3": q @ j3 @ q.T,
    }


@pytest.mark.parametrize("solver", ["xla", "host"])
def test_defective_input_gives_nonfinite_derivatives_not_a_crash(solver):
    a = jnp.asarray(np.stack(list(jordan_matrices().values())))
    da = jnp.asarray(random_matrix(rng(1), a.shape))

    @jax.jit
    def run(x, dx):
        (w, v), (dw, dv) = jax.jvp(lambda y: tuple(eigjax.eig(y, solver=solver)), (x,), (dx,))
        _, dw2 = jax.jvp(lambda y: eigjax.eigvals(y, solver=solver), (x,), (dx,))
        g = jax.grad(lambda y: jnp.sum(jnp.abs(eigjax.eigvals(y, solver=solver))))(x)
        return w, dw, dv, dw2, g

    w, *derivs = (np.asarray(t) for t in run(a, da))
    assert np.all(np.isfinite(w))  # the forward works
    for d in derivs:  # every matrix: non-finite, in forward and reverse mode
        assert not np.any(np.all(np.isfinite(d.reshape(3, -1)), axis=1))


def test_a_jordan_block_makes_every_derivative_of_its_matrix_nan():
    """A Jordan block at 1 next to a simple eigenvalue 2: the simple eigenvector's tangent
    went through the cut pairs (simple, defective) and read exactly 0 where central
    differences give (1, 0, 0) (a silently wrong number in forward mode, found by an
    audit). The documented contract: every derivative output of such a matrix is NaN, in
    forward and reverse mode; a batch's other matrices are unaffected."""
    a = jnp.asarray([[[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], np.diag([1.0, 2.0, 3.0])])
    e = jnp.zeros((2, 3, 3)).at[:, 0, 2].set(1.0)
    dw, dv = jax.jvp(lambda x: tuple(eigjax.eig(x)), (a,), (e,))[1]
    assert np.all(np.isnan(np.asarray(dv[0]))) and np.all(np.isnan(np.asarray(dw[0])))
    assert np.all(np.isfinite(np.asarray(dv[1]))) and np.all(np.isfinite(np.asarray(dw[1])))
    dw2 = jax.jvp(eigjax.eigvals, (a,), (e,))[1]
    assert np.all(np.isnan(np.asarray(dw2[0]))) and np.all(np.isfinite(np.asarray(dw2[1])))
    g = jax.grad(lambda x: jnp.sum(jnp.real(eigjax.eigvals(x)[:, 2])))(a)
    assert np.all(np.isnan(np.asarray(g[0]))) and np.all(np.isfinite(np.asarray(g[1])))


def test_nearly_defective_but_differentiable_stays_finite():
    """A Jordan block split by 2e-3: ill-conditioned (s ~ 5e2) but differentiable."""
    a = np.array([[1.0, 1.0], [1e-6, 1.0]])  # eigenvalues 1 +- 1e-3
    da = random_matrix(rng(2), (2, 2))
    (w0, *_), got = _jvp_quantities(jnp.asarray(a), jnp.asarray(da))
    fd = central_fd(matched_quantities(w0), a, da, h=1e-9)
    assert np.max(np.abs(got[0])) > 10  # large, as it should be
    assert_close(got[0], fd[0], 1e-5, "eigenvalues")
    assert_close(got[2], fd[2], 1e-5, "projectors")


# --------------------------------------------------------------- host fallback


def test_auto_solver_platform_choice():
    assert has_native_eig("cpu") and has_native_eig("cuda")
    assert not has_native_eig("tpu")


def test_host_fallback_equals_native_under_jit_and_vmap():
    a = jnp.asarray(np.stack([make_matrix("pairs", 4, seed=s) for s in range(3)]))
    da = jnp.asarray(np.stack([make_direction("pairs", 4, seed=10 + s) for s in range(3)]))
    ac = jnp.asarray(np.stack([make_matrix("complex", 3, seed=s) for s in range(2)]))

    def run(solver):
        f = lambda x: tuple(eigjax.eig(x, solver=solver))
        vmapped = jax.jit(jax.vmap(lambda x, dx: jax.jvp(f, (x,), (dx,))))(a, da)
        loss = lambda x: jnp.sum(jnp.abs(eigjax.eigvals(x, solver=solver)))
        g = jax.jit(jax.vmap(jax.grad(loss)))(a)
        return jax.tree_util.tree_leaves((vmapped, g, jax.jit(f)(ac)))

    for x, y in zip(run("host"), run("xla")):
        np.testing.assert_allclose(x, y, atol=1e-11)


def test_host_fallback_float32():
    a32 = jnp.asarray(make_matrix("pairs", 3, seed=2), jnp.float32)
    w, v = eigjax.eig(a32, solver="host")
    assert w.dtype == jnp.complex64 and v.dtype == jnp.complex64
    w_x, v_x = eigjax.eig(a32, solver="xla")
    np.testing.assert_allclose(w, w_x, atol=1e-5)
    np.testing.assert_allclose(v, v_x, atol=1e-4)


# ------------------------------------------------------------------- float32


def test_float32_forward_and_gradient():
    a = make_matrix("pairs", 4, seed=8)
    loss = lambda x: jnp.sum(jnp.abs(eigjax.eigvals(x)))
    g32 = jax.grad(loss)(jnp.asarray(a, jnp.float32))
    g64 = jax.grad(loss)(jnp.asarray(a))
    assert g32.dtype == jnp.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4)
    w, v = eigjax.eig(jnp.asarray(a, jnp.complex64))
    assert w.dtype == v.dtype == jnp.complex64


# ----------------------------------------------------------------- gauge check


def test_gauge_check_flags_phase_dependent_losses():
    a = jnp.asarray(make_matrix("complex", 4, seed=4))
    invariant = [
        lambda w, v: jnp.sum(jnp.abs(v) ** 3),
        lambda w, v: jnp.sum(jnp.abs(v) ** 2 * jnp.real(w)[None, :]),
        lambda w, v: jnp.real(jnp.sum(w**2)),
    ]
    for loss in invariant:
        res = eigjax.eig_gauge_check(loss, a)
        assert bool(res.ok), res.phase_sensitivity
    dependent = lambda w, v: jnp.sum(jnp.real(v) ** 2)
    res = jax.jit(lambda x: eigjax.eig_gauge_check(dependent, x))(a)
    assert not bool(res.ok)
    s = np.asarray(res.phase_sensitivity)
    assert np.all(s <= 1 + 1e-12) and np.max(s) > 1e-2
    # closed forms: angle(v_0j) has d/dtheta_j = 1 and gradient norm 1/|v_0j|
    v = np.asarray(eigjax.eig(a).eigenvectors)
    phase_only = lambda w, vv: jnp.sum(jnp.angle(vv[0]))
    s = np.asarray(eigjax.eig_gauge_check(phase_only, a).phase_sensitivity)
    np.testing.assert_allclose(s, np.abs(v[0]), atol=1e-10)
    # Im(u_j^H v_j) with u = v: gradient parallel to i v_j, sensitivity exactly 1
    along_phase = lambda w, vv: jnp.sum(jnp.imag(jnp.conj(jnp.asarray(v)) * vv))
    s = np.asarray(eigjax.eig_gauge_check(along_phase, a).phase_sensitivity)
    np.testing.assert_allclose(s, 1.0, atol=1e-10)


# --------------------------------------------------------------------- bad input


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    "fn", [eigjax.eig, eigjax.eigvals, eigjax.eig_condition_numbers], ids=["eig", "eigvals", "cond"]
)
def test_bad_input_errors(fn, jit):
    call = jax.jit(fn) if jit else fn
    name = {eigjax.eig: "eigjax.eig", eigjax.eigvals: "eigjax.eigvals"}.get(fn, "eigjax.eig_condition_numbers")
    with pytest.raises(ValueError, match=rf"{name}: argument `a` must be square.*\(2, 3\)"):
        call(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=rf"{name}: argument `a` .*at least 2 dimensions"):
        call(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"option `solver` must be one of"):
        fn(jnp.eye(2), solver="gpu")
    if not jit:
        with pytest.raises(TypeError, match=rf"{name}: argument `a` must be a JAX or NumPy array"):
            fn([[1.0, 2.0], [3.0, 4.0]])
        with pytest.raises(TypeError, match=r"numeric dtype"):
            fn(np.array([["a", "b"], ["c", "d"]]))


def test_bad_options():
    with pytest.raises(ValueError, match=r"eigjax.eig: option `degenerate_tol` must be a finite, non-negative"):
        eigjax.eig(jnp.eye(2), degenerate_tol=-1.0)
    with pytest.raises(TypeError, match=r"eigjax.eig_gauge_check: option `rtol`"):
        eigjax.eig_gauge_check(lambda w, v: jnp.sum(jnp.abs(v)), jnp.eye(2), rtol="big")


@pytest.mark.parametrize("solver", ["xla", "host"])
def test_nonfinite_input_gives_nan_not_an_error(solver):
    a = jnp.array([[[jnp.nan, 1.0], [0.0, 1.0]], [[jnp.inf, 1.0], [0.0, 1.0]], [[1.0, 2.0], [3.0, 4.0]]])
    w, v = jax.jit(lambda x: tuple(eigjax.eig(x, solver=solver)))(a)
    assert np.all(np.isnan(np.asarray(w[:2]))) and np.all(np.isnan(np.asarray(v[:2])))
    np.testing.assert_allclose(w[2], np.sort_complex(np.linalg.eigvals(np.asarray(a[2]))), atol=1e-12)
    g = jax.jit(jax.grad(lambda x: jnp.sum(jnp.abs(eigjax.eigvals(x, solver=solver)))))(a)
    assert np.all(np.isnan(np.asarray(g[:2]))) and np.all(np.isfinite(np.asarray(g[2])))


def test_integer_input_promoted():
    w = eigjax.eigvals(jnp.array([[1, 2], [3, 4]]))
    np.testing.assert_allclose(w, np.sort_complex(np.linalg.eigvals(np.array([[1.0, 2], [3, 4]]))), atol=1e-12)


# --------------------------------------------------------------- export, per lowering platform

_EXPORTED = {
    "eig": lambda x: tuple(eigjax.eig(x)),
    "eig_left": lambda x: eigjax.eig(x, left=True).left_eigenvectors,
    "eigvals": eigjax.eigvals,
    "grad_eigvals": jax.grad(lambda x: jnp.sum(jnp.abs(eigjax.eigvals(x)))),
    "grad_eig": jax.grad(lambda x: jnp.sum(jnp.abs(eigjax.eig(x).eigenvectors) ** 3)),
}


def _export(f, a, platforms, allow=()):
    """(Exported, None) or (None, custom-call targets that lack compatibility guarantees)."""
    import re

    from jax import export

    checks = [export.DisabledSafetyCheck.custom_call(t) for t in allow]
    try:
        return export.export(jax.jit(f), platforms=platforms, disabled_checks=checks)(a), None
    except ValueError as err:
        targets = sorted(set(re.findall(r"custom_call @(\w+)\(", str(err))))
        if not targets:
            raise
        return None, targets


@pytest.mark.parametrize("platforms", [("cpu",), ("cuda",), ("cpu", "cuda")])
@pytest.mark.parametrize("fake_default_backend", [None, "tpu"])
def test_export_wherever_jnp_eig_exports(monkeypatch, platforms, fake_default_backend):
    """eig/eigvals (forward, left vectors, gradients of real losses) export for every
    platform list for which jnp.linalg.eig exports (allowing the same custom calls, e.g.
    CUDA's cuhybrid_eig_real, which has no compatibility guarantee), with XLA's eig and no
    host callback, whatever jax.default_backend() says at trace time (the solver used to be
    chosen from it: on a TPU host a CPU/CUDA export got the callback)."""
    if fake_default_backend is not None:
        monkeypatch.setattr(jax, "default_backend", lambda: fake_default_backend)
    jax.clear_caches()  # traces made under the real default backend must not be reused
    a = jnp.asarray(make_matrix("real", 4, seed=40))
    ref, need = _export(lambda x: jnp.linalg.eig(x)[0], a, list(platforms))
    if ref is None:
        ref, _ = _export(lambda x: jnp.linalg.eig(x)[0], a, list(platforms), need)
    assert ref is not None, "jnp.linalg.eig does not export here: nothing to compare"
    for name, f in _EXPORTED.items():
        exp, extra = _export(f, a, list(platforms), need or ())
        assert exp is not None, (name, platforms, "needs custom calls jnp does not", extra)
        text = exp.mlir_module()
        assert "callback" not in text, (name, platforms)
        if "cpu" in platforms and fake_default_backend is None:
            got, want = exp.call(a), f(a)
            for x, y in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=1e-12)


def test_auto_solver_is_chosen_per_lowering_platform():
    """One trace holds both kernels behind jax.lax.platform_dependent (XLA's eig, the host
    callback); a CPU lowering keeps XLA's eig only. The choice is not made from
    jax.default_backend() at trace time."""
    a = jnp.asarray(make_matrix("real", 3, seed=41))
    jaxpr = str(jax.make_jaxpr(eigjax.eigvals)(a))
    assert "platform_index" in jaxpr and "pure_callback" in jaxpr and " eig[" in jaxpr
    cpu = jax.jit(eigjax.eigvals).trace(a).lower(lowering_platforms=("cpu",)).as_text()
    assert "callback" not in cpu


# --------------------------------------------------------------- left eigenvector accuracy


def _left_residual(a, w, y):
    """max_i ||y_i^H A - w_i y_i^H|| / (||A||_2 ||y_i||), in units of eps (JAX's testEig51 check
    after unit scaling), in float64 arithmetic."""
    a, w, y = (np.asarray(x).astype(np.complex128) for x in (a, w, y))
    y = y / np.linalg.norm(y, axis=0)
    r = np.conj(y.T) @ a - w[:, None] * np.conj(y.T)
    return np.max(np.linalg.norm(r, axis=1)) / np.linalg.norm(a, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_left_eigenvectors_as_accurate_as_lapack(dtype):
    """Y from geev's left vectors, biorthonormalised (Y^H V = I), has LAPACK's residual:
    Y = V^{-H} had ~2x it (mean ratio 1.9-2.2 on these matrices; now ~1.15)."""
    import scipy.linalg

    eps = np.finfo(np.float32 if dtype == np.float32 else np.float64).eps
    ratios = []
    for seed in range(6):
        r = rng(50 + seed)
        x = r.standard_normal((50, 50)) + (1j * r.standard_normal((50, 50)) if dtype == np.complex128 else 0)
        a = x.astype(dtype)
        w, v, y = eigjax.eig(jnp.asarray(a), left=True)
        wl, yl, _ = scipy.linalg.eig(a, left=True, right=True)
        ours, lapack = _left_residual(a, w, y) / eps, _left_residual(a, wl, yl) / eps
        assert ours < 50, ours  # JAX's testEig51 limit is 100
        ratios.append(ours / lapack)
        eye = np.eye(50)
        assert np.abs(np.conj(np.asarray(y, np.complex128).T) @ np.asarray(v, np.complex128) - eye).max() < 1e3 * eps
    assert np.mean(ratios) < 1.4, ratios


def test_left_eigenvectors_derivative_and_repeated_eigenvalue():
    """dY = -(Y^H dV Y^H)^H against finite differences of the spectral projectors x_i y_i^H,
    and Y^H V = I inside a repeated (semisimple) eigenvalue's group."""
    r = rng(60)
    n = 5
    a = r.standard_normal((n, n))
    da = r.standard_normal((n, n))
    proj = lambda m: (lambda res: res.eigenvectors[:, :, None] * jnp.conj(res.left_eigenvectors)[:, None, :])(  # noqa: E731
        eigjax.eig(m, left=True)
    )
    h = 1e-6
    fd = (proj(jnp.asarray(a + h * da)) - proj(jnp.asarray(a - h * da))) / (2 * h)
    jac = jax.jacfwd(lambda t: proj(jnp.asarray(a) + t * jnp.asarray(da)))(0.0)  # the n projectors x_j y_j^H
    np.testing.assert_allclose(np.asarray(jac), np.asarray(fd), atol=1e-6)
    q = r.standard_normal((4, 4))
    b = q @ np.diag([1.0, 1.0, 2.0, 3.0]) @ np.linalg.inv(q)
    w, v, y = eigjax.eig(jnp.asarray(b), left=True)
    assert np.abs(np.conj(np.asarray(y).T) @ np.asarray(v) - np.eye(4)).max() < 1e-10
    for solver in ("host", "xla"):
        _, v2, y2 = eigjax.eig(jnp.asarray(b), left=True, solver=solver)
        assert np.abs(np.conj(np.asarray(y2).T) @ np.asarray(v2) - np.eye(4)).max() < 1e-10
