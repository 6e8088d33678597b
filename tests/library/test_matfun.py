"""Spectral matrix functions: forward against independent oracles, Daleckii-Krein derivatives
against finite differences (random, exactly degenerate and near-degenerate inputs), hessians."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest
import scipy.linalg
from helpers import (
    assert_fd_match,
    central_fd,
    hermitian_direction,
    random_hermitian,
    random_unitary,
    rel_err,
    rng,
    with_spectrum,
)

import eigjax

X64 = [np.float64, np.complex128]


def _spd(r, n, dtype, batch=()):
    """Well-conditioned Hermitian positive definite matrix, eigenvalues in [0.5, 3]."""
    w = r.uniform(0.5, 3.0, size=(*batch, n))
    q = random_unitary(r, n, dtype, batch)
    a = (q * w[..., None, :]) @ np.conj(np.swapaxes(q, -1, -2))
    return ((a + np.conj(np.swapaxes(a, -1, -2))) / 2).astype(dtype)


# jit-compiled once per shape: finite differences call each function four times.
FUNCS = {
    "sqrtm": jax.jit(eigjax.sqrtm),
    "inv_sqrtm": jax.jit(eigjax.inv_sqrtm),
    "logm": jax.jit(eigjax.logm),
    "expm": jax.jit(eigjax.expm),
    "powm1.7": jax.jit(lambda a: eigjax.powm(a, 1.7)),
    "tanh": jax.jit(lambda a: eigjax.matrix_function(a, jnp.tanh)),
}


# ---------------------------------------------------------------------------
# Forward: identities and independent oracles.


@pytest.mark.parametrize("dtype", X64)
def test_forward_identities(dtype):
    r = rng(0)
    a = _spd(r, 6, dtype)
    s = np.asarray(eigjax.sqrtm(a))
    assert rel_err(s @ s, a) < 1e-13
    isq = np.asarray(eigjax.inv_sqrtm(a))
    assert rel_err(isq @ a @ isq, np.eye(6)) < 1e-13
    assert rel_err(eigjax.logm(a), scipy.linalg.logm(a)) < 1e-12
    assert rel_err(eigjax.powm(a, 1.7), scipy.linalg.fractional_matrix_power(a, 1.7)) < 1e-12
    assert rel_err(eigjax.expm(eigjax.logm(a)), a) < 1e-13


@pytest.mark.parametrize("dtype", X64)
def test_expm_matches_jax_scipy_and_its_derivative(dtype):
    r = rng(1)
    a = random_hermitian(r, 5, dtype)
    da = hermitian_direction(r, (5, 5), dtype)
    assert rel_err(eigjax.expm(a), jsl.expm(a)) < 1e-13
    got = jax.jvp(eigjax.expm, (a,), (da,))[1]
    want = jax.jvp(jsl.expm, (a,), (da,))[1]
    assert rel_err(got, want) < 1e-12
    # Reverse mode too: gradient of a real scalar loss.
    c = random_hermitian(r, 5, dtype)
    loss_ours = lambda x: jnp.real(jnp.sum(jnp.conj(c) * eigjax.expm(x)))
    loss_ref = lambda x: jnp.real(jnp.sum(jnp.conj(c) * jsl.expm((x + jnp.conj(x.T)) / 2)))
    assert rel_err(jax.grad(loss_ours)(a), jax.grad(loss_ref)(a)) < 1e-12


@pytest.mark.parametrize("spectrum", [(50.0, 55.0, 1.0), (100.0, 109.0, 3.0)])
def test_expm_derivative_at_large_close_eigenvalues(spectrum):
    """Pairs 10% apart but |d| >> 1: the divided difference of exp must be the quotient
    (a 5-point quadrature of e^x over a length-5 interval is only good to 1e-6)."""
    r = rng(3)
    a = with_spectrum(r, spectrum)
    da = hermitian_direction(r, (3, 3), np.float64)
    got = jax.jvp(eigjax.expm, (a,), (da,))[1]
    want = jax.jvp(jsl.expm, (a,), (da,))[1]
    assert rel_err(got, want) < 1e-10


def test_complex_valued_f_is_unitary_evolution():
    r = rng(2)
    a = random_hermitian(r, 4, np.float64)
    u = eigjax.matrix_function(a, lambda w: jnp.exp(jax.lax.complex(jnp.zeros_like(w), -0.7 * w)))  # strict-clean
    assert rel_err(u, scipy.linalg.expm(-1j * 0.7 * a)) < 1e-13


# ---------------------------------------------------------------------------
# Derivatives against finite differences.


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize("dtype", X64)
def test_jvp_matches_fd_random(name, dtype):
    r = rng(3)
    a = _spd(r, 5, dtype)
    da = hermitian_direction(r, (5, 5), dtype)
    assert_fd_match(FUNCS[name], a, da, rtol=1e-8, h=1e-3)


@pytest.mark.parametrize("name", ["sqrtm", "logm", "expm", "tanh"])
@pytest.mark.parametrize("spectrum", [(1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 2.0, 3.0), (0.7, 2.0, 2.0, 2.0)])
def test_jvp_matches_fd_degenerate(name, spectrum):
    """Exactly degenerate inputs (identity included): finite and equal to FD."""
    r = rng(4)
    a = np.eye(4) if spectrum == (1.0,) * 4 else with_spectrum(r, spectrum)
    da = hermitian_direction(r, (4, 4))
    assert_fd_match(FUNCS[name], a, da, rtol=1e-8, h=1e-3)


def test_sqrtm_derivative_at_identity_is_half_exactly():
    r = rng(5)
    for dtype in X64:
        e = hermitian_direction(r, (5, 5), dtype)
        got = np.asarray(jax.jvp(eigjax.sqrtm, (jnp.eye(5, dtype=dtype),), (e,))[1])
        np.testing.assert_array_equal(got, e / 2)


@pytest.mark.parametrize("delta", [1e-6, 1e-9, 1e-12])
def test_near_degenerate_divided_difference_is_accurate(delta):
    """Eigenvalues 2 and 2 + delta: G_12 = log1p(delta/2)/delta in closed form (no cancellation)."""
    r = rng(6)
    q = random_unitary(r, 3)
    w = np.array([2.0, 2.0 + delta, 5.0])
    a = (q * w) @ q.T
    e = hermitian_direction(r, (3, 3))
    g = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            d = w[i] - w[j]
            g[i, j] = 1 / w[i] if d == 0 else np.log1p(d / w[j]) / d
    g[0, 1] = g[1, 0] = np.log1p(delta / 2.0) / delta
    # The input a is built in floating point, so its spectrum is w up to ~eps: compare with
    # the closed form at a tolerance far below what a plain quotient would give (~eps/delta).
    want = q @ (g * (q.T @ e @ q)) @ q.T
    got = jax.jvp(eigjax.logm, (jnp.asarray(a),), (jnp.asarray(e),))[1]
    assert rel_err(got, want) < 1e-9


def test_powm_gradient_wrt_exponent():
    r = rng(7)
    a = _spd(r, 4, np.float64)
    c = random_hermitian(r, 4)
    loss = jax.jit(lambda p: jnp.sum(c * eigjax.powm(a, p)))
    g = jax.grad(loss)(1.3)
    fd = central_fd(loss, 1.3, 1.0, h=1e-3)
    assert abs(float(g) - float(fd)) < 1e-8 * max(1.0, abs(float(fd)))


@pytest.mark.parametrize(
    "where",
    [
        "random",
        "identity",
        "degenerate",
    ],
)
def test_hessian_matches_fd_of_gradient(where):
    r = rng(8)
    a = {"random": _spd(r, 4, np.float64), "identity": np.eye(4), "degenerate": with_spectrum(r, (1.0, 1.0, 2.0, 2.5))}[
        where
    ]
    c = random_hermitian(r, 4)
    da = hermitian_direction(r, (4, 4))
    loss = lambda x: jnp.sum(c * eigjax.sqrtm(x))
    grad = jax.jit(jax.grad(loss))
    hvp = jax.jvp(grad, (jnp.asarray(a),), (jnp.asarray(da),))[1]
    fd = central_fd(grad, a, da, h=1e-3)
    assert np.all(np.isfinite(hvp))
    assert rel_err(hvp, fd) < 1e-7
    # The full hessian (jacfwd of jacrev) agrees with the HVP.
    hess = jax.jit(jax.hessian(loss))(jnp.asarray(a))
    assert rel_err(jnp.einsum("ijkl,kl->ij", hess, da), hvp) < 1e-10


# ---------------------------------------------------------------------------
# Second derivatives against closed forms that hold at every point, degenerate or not:
#   d2(A^-1)[H, E] = A^-1 H A^-1 E A^-1 + A^-1 E A^-1 H A^-1,
#   d2(A^3)[H, E]  = sum of the six products of H, E and A.

SECOND_ORDER_POINTS = {
    "random": (0.7, 1.1, 2.0, 2.9),
    "identity": (1.0, 1.0, 1.0, 1.0),
    "pair": (1.0, 1.0, 2.0, 2.5),
    "triple": (0.7, 2.0, 2.0, 2.0),
    "near_triple": (2.0, 2.0 + 1e-9, 2.0 + 2e-9, 3.0),  # Taylor branch of f[x, y, z]
    "close_pair": (2.0, 2.001, 3.0, 4.0),  # quotient branch, near the switch
}


def _inv_second(a, h, e):
    ai = np.linalg.inv(a)
    return ai @ h @ ai @ e @ ai + ai @ e @ ai @ h @ ai


def _cube_second(a, h, e):
    return h @ e @ a + h @ a @ e + e @ h @ a + e @ a @ h + a @ h @ e + a @ e @ h


def _second_jit(f):
    """jit of (a, h, e) -> d/dt d/ds f(a + t h + s e), compiled once per dtype."""
    mf = lambda x: eigjax.matrix_function(x, f)
    return jax.jit(lambda a, h, e: jax.jvp(lambda x: jax.jvp(mf, (x,), (e,))[1], (a,), (h,))[1])


SECOND_ORDER_CASES = {
    "inv": (_second_jit(lambda w: 1.0 / w), _inv_second),
    "cube": (_second_jit(lambda w: w**3), _cube_second),
}


def _point(r, name, dtype=np.float64):
    return np.eye(4, dtype=dtype) if name == "identity" else with_spectrum(r, SECOND_ORDER_POINTS[name], dtype)


@pytest.mark.parametrize("point", sorted(SECOND_ORDER_POINTS))
@pytest.mark.parametrize("dtype", X64)
def test_second_derivative_matches_closed_form(point, dtype):
    """jvp of jvp: exact at degenerate and near-degenerate points too (a quotient of first
    divided differences alone would lose ~eps/1e-9 on the near triple)."""
    r = rng(11)
    a = _point(r, point, dtype)
    h, e = hermitian_direction(r, (4, 4), dtype), hermitian_direction(r, (4, 4), dtype)
    for second, closed_form in SECOND_ORDER_CASES.values():
        assert rel_err(second(a, h, e), closed_form(a, h, e)) < 1e-10


@pytest.mark.parametrize("point", ["identity", "pair", "triple"])
def test_hessian_matches_closed_form(point):
    """jax.hessian (jacfwd of jacrev: the reverse-mode gradient is differentiated again)
    and jacrev of jacrev, at exactly degenerate points; the loss is <C, A^-1>."""
    r = rng(12)
    a = jnp.asarray(_point(r, point))
    c, h = random_hermitian(r, 4), hermitian_direction(r, (4, 4))
    loss = lambda x: jnp.sum(c * eigjax.matrix_function(x, lambda w: 1.0 / w))
    want = _inv_second(np.asarray(a), h, c)  # symmetric, since c, h, a are
    for hess in (jax.jit(jax.hessian(loss)), jax.jit(jax.jacrev(jax.jacrev(loss)))):
        assert rel_err(jnp.einsum("ijkl,kl->ij", hess(a), h), want) < 1e-10


def test_expm_hessian_matches_jax_scipy_at_degenerate_point():
    """An independent implementation: JAX's Pade expm, differentiated twice by JAX."""
    r = rng(13)
    c = random_hermitian(r, 3)
    a = jnp.asarray(with_spectrum(r, (1.0, 1.0, 2.0)))
    got = jax.jit(jax.hessian(lambda x: jnp.sum(c * eigjax.expm(x))))(a)
    want = jax.jit(jax.hessian(lambda x: jnp.sum(c * jsl.expm((x + x.T) / 2))))(a)
    assert rel_err(got, want) < 1e-12


def test_second_derivative_blocked_path(monkeypatch):
    """n > _DIRECT_MAX_N sums f[w_i, w_k, w_j] over blocks of k (the last one padded)."""
    import eigjax._frechet as mf

    monkeypatch.setattr(mf, "_DIRECT_MAX_N", 0)
    monkeypatch.setattr(mf, "_BLOCK_ELEMENTS", 2 * 5 * 5)  # blocks of 2: 3 blocks for n = 5
    r = rng(14)
    a = with_spectrum(r, (1.0, 1.0, 1.0, 2.0, 3.0))
    h, e = hermitian_direction(r, (5, 5)), hermitian_direction(r, (5, 5))
    fn = lambda x: eigjax.matrix_function(x, lambda w: 1.0 / w)
    got = jax.jvp(lambda x: jax.jvp(fn, (x,), (jnp.asarray(e),))[1], (jnp.asarray(a),), (jnp.asarray(h),))[1]
    assert rel_err(got, _inv_second(a, h, e)) < 1e-10


def test_second_derivative_batched_and_vmapped():
    r = rng(15)
    a = np.stack([np.eye(3), with_spectrum(r, (1.0, 1.0, 2.0)), _spd(r, 3, np.float64)])
    c, h = random_hermitian(r, 3, batch=(3,)), hermitian_direction(r, (3, 3, 3))
    loss = lambda x, c: jnp.sum(c * eigjax.sqrtm(x))
    hvp = jax.jit(lambda x, c, h: jax.jvp(jax.grad(lambda y: loss(y, c)), (x,), (h,))[1])
    loop = np.stack([hvp(a[i], c[i], h[i]) for i in range(3)])
    assert rel_err(hvp(jnp.asarray(a), c, h), loop) < 1e-12  # batch dimensions
    assert rel_err(jax.jit(jax.vmap(hvp))(a, c, h), loop) < 1e-12
    hess = jax.jit(jax.vmap(jax.hessian(loss)))(a, c)
    assert rel_err(jnp.einsum("bijkl,bkl->bij", hess, h), loop) < 1e-12


def test_powm_second_derivatives_in_the_exponent_at_degenerate_point():
    """Mixed and pure second derivatives in (a, p), and vmap over p (a batched parameter)."""
    r = rng(16)
    a = jnp.asarray(with_spectrum(r, (1.0, 1.0, 2.0, 2.5)))
    c, da = random_hermitian(r, 4), hermitian_direction(r, (4, 4))
    loss = lambda x, p: jnp.sum(c * eigjax.powm(x, p))
    grad_a = jax.jit(jax.grad(loss, argnums=0))
    grad_p = jax.jit(jax.grad(loss, argnums=1))
    (_, h_ap), (h_pa, h_pp) = jax.jit(jax.hessian(loss, argnums=(0, 1)))(a, 1.3)
    assert rel_err(h_ap, central_fd(lambda p: grad_a(a, p), 1.3, 1.0, h=1e-3)) < 1e-8
    assert rel_err(jnp.sum(h_pa * da), central_fd(lambda x: grad_p(x, 1.3), a, da, h=1e-3)) < 1e-8
    assert rel_err(h_pp, central_fd(lambda p: grad_p(a, p), 1.3, 1.0, h=1e-3)) < 1e-8
    ps = jnp.array([0.5, 1.3, 2.0])
    hvp = jax.jit(lambda p: jax.jvp(lambda x: grad_a(x, p), (a,), (jnp.asarray(da),))[1])
    assert rel_err(jax.jit(jax.vmap(hvp))(ps), np.stack([hvp(p) for p in ps])) < 1e-12


@pytest.mark.parametrize("dtype", X64)
def test_complex_valued_f_second_derivatives_at_degenerate_point(dtype):
    """exp(i t A) (complex output, traced t): jvp of the gradient in (A, t) jointly, and for
    real input jacrev of jacrev (both transposes of the parameter term) against jax.hessian."""
    r = rng(19)
    a = jnp.asarray(with_spectrum(r, (1.0, 1.0, 2.0, 2.5), dtype))
    c, da = jnp.asarray(random_hermitian(r, 4, dtype)), jnp.asarray(hermitian_direction(r, (4, 4), dtype))

    def loss(x, t):
        u = eigjax.matrix_function(x, lambda w: jnp.exp(jax.lax.complex(jnp.zeros_like(w), t * w)))
        cu = c.astype(u.dtype) * u
        return jnp.sum(jnp.abs(cu) ** 2 + jnp.real(cu))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    for k in (0, 1):
        hvp = jax.jvp(lambda x, t: grad(x, t)[k], (a, 0.7), (da, 0.3))[1]
        fd = central_fd(lambda s: grad(a + s * da, 0.7 + 0.3 * s)[k], 0.0, 1.0, h=1e-3)
        assert rel_err(hvp, fd) < 1e-9
    if dtype == np.float64:
        want = jax.jit(jax.hessian(loss, argnums=(0, 1)))(a, 0.7)[1]
        got = jax.jit(jax.jacrev(jax.jacrev(loss, argnums=1), argnums=(0, 1)))(a, 0.7)
        assert rel_err(got[0], want[0]) < 1e-12 and rel_err(got[1], want[1]) < 1e-12


def test_second_derivative_float32_at_degenerate_point():
    r = rng(17)
    a = with_spectrum(r, (1.0, 1.0, 2.0, 2.5))
    c, h = random_hermitian(r, 4), hermitian_direction(r, (4, 4))
    hvp = jax.jit(
        lambda x: jax.jvp(jax.grad(lambda y: jnp.sum(c.astype(y.dtype) * eigjax.logm(y))), (x,), (h.astype(x.dtype),))[
            1
        ]
    )
    got32, got64 = hvp(jnp.asarray(a, jnp.float32)), hvp(jnp.asarray(a))
    assert np.all(np.isfinite(got32))
    assert rel_err(got32, got64) < 1e-3


def test_third_derivative_at_distinct_eigenvalues():
    """Documented scope: third order goes through eigh, exact at distinct eigenvalues.
    d3(A^-1)[H, H, H] = -6 A^-1 H A^-1 H A^-1 H A^-1."""
    r = rng(18)
    a = with_spectrum(r, (0.7, 1.1, 2.0, 2.9))
    h = hermitian_direction(r, (4, 4))
    fn = lambda x: eigjax.matrix_function(x, lambda w: 1.0 / w)
    d1 = lambda x: jax.jvp(fn, (x,), (jnp.asarray(h),))[1]
    d2 = lambda x: jax.jvp(d1, (x,), (jnp.asarray(h),))[1]
    d3 = jax.jit(lambda x: jax.jvp(d2, (x,), (jnp.asarray(h),))[1])(jnp.asarray(a))
    ai = np.linalg.inv(a)
    assert rel_err(d3, -6 * ai @ h @ ai @ h @ ai @ h @ ai) < 1e-9


# ---------------------------------------------------------------------------
# Transformations, batching, bad input.


def test_batched_jit_vmap():
    r = rng(9)
    a = _spd(r, 3, np.float64, batch=(2, 3))
    got = jax.jit(eigjax.sqrtm)(a)
    want = np.stack([[scipy.linalg.sqrtm(a[i, j]) for j in range(3)] for i in range(2)])
    assert rel_err(got, want) < 1e-12
    assert rel_err(jax.vmap(eigjax.sqrtm)(a), want) < 1e-12
    da = hermitian_direction(r, (2, 3, 3, 3))
    assert_fd_match(jax.jit(eigjax.logm), a, da, rtol=1e-8, h=1e-3)


def test_traced_closure_under_jit_and_grad():
    r = rng(10)
    a = _spd(r, 4, np.float64)
    loss = lambda s: jnp.trace(eigjax.matrix_function(a, lambda w: jnp.exp(s * w)))
    g = jax.jit(jax.grad(loss))(0.3)
    want = np.sum(np.linalg.eigvalsh(a) * np.exp(0.3 * np.linalg.eigvalsh(a)))
    assert abs(float(g) - want) < 1e-10 * abs(want)


def test_bad_input():
    with pytest.raises(ValueError, match=r"eigjax.sqrtm: argument `a` must be square"):
        eigjax.sqrtm(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"eigjax.sqrtm: argument `a` must be square"):
        jax.jit(eigjax.sqrtm)(jnp.ones((3, 4)))
    with pytest.raises(TypeError, match=r"argument `f` must be a callable"):
        eigjax.matrix_function(jnp.eye(2), 3.0)
    with pytest.raises(ValueError, match=r"eigjax.powm: argument `p` must be a scalar"):
        eigjax.powm(jnp.eye(2), jnp.ones(2))
    with pytest.raises(ValueError, match=r"at least 2 dimensions"):
        eigjax.expm(jnp.ones(3))


_GLOBAL = {"scale": 2.0}


def test_fresh_lambdas_share_one_compiled_program_and_never_go_stale():
    """Eager calls with a new lambda each time reuse the compiled program when the
    lambda computes the same thing (same jaxpr, same constants), and get a new one when
    a closed-over value, a closed-over array or a global it reads has changed."""
    from eigjax._matfun import _matfun_forward

    a = jnp.asarray(random_hermitian(rng(3), 4))
    w, v = np.linalg.eigh(np.asarray(a))
    closed_form = lambda g: (v * g(w)) @ v.T  # noqa: E731
    before = _matfun_forward._cache_size()
    for _ in range(3):
        out = eigjax.matrix_function(a, lambda x: x**2 + 1.0)
        np.testing.assert_allclose(out, closed_form(lambda x: x**2 + 1.0), rtol=1e-12, atol=1e-12)
    assert _matfun_forward._cache_size() == before + 1
    for p in (2.0, 3.0):  # closed-over Python number: a literal in the jaxpr
        out = eigjax.matrix_function(a, lambda x: x**p)
        np.testing.assert_allclose(out, closed_form(lambda x: x**p), rtol=1e-12, atol=1e-12)
    for c in (jnp.arange(4.0), jnp.arange(4.0) + 1):  # closed-over concrete array: compared by value
        out = eigjax.matrix_function(a, lambda x: x * c)
        np.testing.assert_allclose(out, closed_form(lambda x: x * np.asarray(c)), rtol=1e-12, atol=1e-12)
    for s in (2.0, 5.0):  # a global read at trace time
        _GLOBAL["scale"] = s
        out = eigjax.matrix_function(a, lambda x: x * _GLOBAL["scale"])
        np.testing.assert_allclose(out, closed_form(lambda x: x * s), rtol=1e-12, atol=1e-12)
    # gradients through fresh lambdas: the Frechet primitives take the same keyed f
    for p in (2.0, 3.0):
        g = jax.grad(lambda b: jnp.trace(eigjax.matrix_function(b, lambda x: x**p)))(a)
        np.testing.assert_allclose(g, closed_form(lambda x: p * x ** (p - 1)), rtol=1e-10, atol=1e-10)
