"""Issue #19 hardening: numeric defects found by an audit (second divided differences whose
formula choice held vacuously, matrix functions of any elementwise f, PSD clipping,
strict dtype promotion, empty and 1x1 inputs). Each test failed on the code before its fix.

Oracles: float64 central finite differences (of the gradient, for Hessians) along random
symmetric directions, at inputs whose eigenvalues stay away from any kink of ``f``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import central_fd, hermitian_direction, random_hermitian, rel_err, rng, with_spectrum
from scipy.linalg import sqrtm as scipy_sqrtm

import eigjax


def _hvp_and_fd(mf, a, seed):
    """(H[da], finite difference of the gradient along da) for loss <C, mf(A)>."""
    r = rng(seed)
    n = a.shape[-1]
    c = jnp.asarray(random_hermitian(r, n))
    da = jnp.asarray(hermitian_direction(r, (n, n)))
    loss = lambda x: jnp.sum(c * mf(x))  # noqa: E731
    grad = jax.jit(jax.grad(loss))
    hess = jax.jit(jax.hessian(loss))(jnp.asarray(a))
    got = jnp.einsum("ijkl,kl->ij", hess, da)
    want = central_fd(grad, a, da, h=1e-4)
    return got, want


# Second divided differences f[w_i, w_k, w_j] at *distinct* eigenvalues where f'', f''' and
# f'''' vanish at the median: the old switch to a Taylor expansion held vacuously there
# (errors 13 %, 4.6 %, 4.4 % before).
VANISHING = {
    "relu_cubed": (lambda w: jnp.maximum(w, 0) ** 3, (-1.0, -0.5, 2.0, 3.0)),
    "shifted_fifth": (lambda w: (w - 2) ** 5, (1.5, 2.0, 3.0)),
    "fifth_at_zero": (lambda w: w**5, (0.0, 1.0, 2.0)),
}


@pytest.mark.parametrize("name, rotated", [(name, False) for name in sorted(VANISHING)] + [("relu_cubed", True)])
def test_hessian_when_derivatives_vanish_at_middle_eigenvalue(name, rotated):
    f, spectrum = VANISHING[name]
    a = with_spectrum(rng(1), spectrum) if rotated else np.diag(spectrum)
    got, want = _hvp_and_fd(lambda x: eigjax.matrix_function(x, f), jnp.asarray(a), seed=2)
    assert rel_err(got, want) < 1e-6


def test_powm_hessian_at_zero_eigenvalue():
    got, want = _hvp_and_fd(lambda x: eigjax.powm(x, 5), jnp.diag(jnp.array([0.0, 1.0, 2.0])), seed=3)
    assert rel_err(got, want) < 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_hessian_random_spectra(seed):
    """Random spectra, some eigenvalues close (relative 1e-3) and some negative."""
    r = rng(10 + seed)
    w = np.sort(r.uniform(-2, 3, size=4))
    w[1] = w[0] * (1 + 1e-3)
    a = jnp.asarray(with_spectrum(r, w))
    for f in (lambda w: jnp.maximum(w, 0) ** 3, jnp.exp, lambda w: w**5 - w**2):
        got, want = _hvp_and_fd(lambda x: eigjax.matrix_function(x, f), a, seed=seed)
        assert rel_err(got, want) < 1e-6


# ---------------------------------------------------------------------------
# Any elementwise f: traced at one scalar eigenvalue, applied to every shape the rules use.

ELEMENTWISE = {
    "softplus": jax.nn.softplus,
    "relu": jax.nn.relu,
    "clip": lambda w: jnp.clip(w, -0.5, 0.5),
    "sinc": jnp.sinc,
    "where": lambda w: jnp.where(w > 0, w**2, -(w**3)),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_matrix_function_of_common_elementwise_f_grad_jacfwd_hessian(name):
    f = ELEMENTWISE[name]
    r = rng(4)
    a = jnp.asarray(with_spectrum(r, (-1.3, -0.2, 0.3, 1.7)))  # away from every kink
    c = jnp.asarray(random_hermitian(r, 4))
    da = jnp.asarray(hermitian_direction(r, (4, 4)))
    loss = lambda x: jnp.sum(c * eigjax.matrix_function(x, f))  # noqa: E731
    fd = central_fd(loss, a, da)
    assert abs(float(jnp.sum(jax.grad(loss)(a) * da)) - float(fd)) < 1e-8 * max(1.0, abs(float(fd)))
    jf = jax.jacfwd(lambda x: eigjax.matrix_function(x, f))(a)
    want = central_fd(lambda x: eigjax.matrix_function(x, f), a, da)
    assert rel_err(jnp.einsum("ijkl,kl->ij", jf, da), want) < 1e-8
    got, want = _hvp_and_fd(lambda x: eigjax.matrix_function(x, f), a, seed=5)
    assert rel_err(got, want) < 1e-6


def test_first_divided_difference_across_a_kink_is_the_quotient():
    """clip at eigenvalues 0.96 and 1.05 (9 % apart, f' = 1 then 0): the 5-point quadrature
    of f' over the interval is O(1) wrong; the quotient (1 - 0.96) / 0.09 is exact."""
    f = lambda w: jnp.clip(w, -1.0, 1.0)  # noqa: E731
    r = rng(6)
    a = jnp.asarray(with_spectrum(r, (0.3, 0.96, 1.05)))
    da = jnp.asarray(hermitian_direction(r, (3, 3)))
    got = jax.jvp(lambda x: eigjax.matrix_function(x, f), (a,), (da,))[1]
    want = central_fd(lambda x: eigjax.matrix_function(x, f), a, da, h=1e-5)
    assert rel_err(got, want) < 1e-8


# ---------------------------------------------------------------------------
# Strict dtype promotion (JAX's own test setting): the library's deliberate promotions
# (real scale factors and masks into complex arrays) are explicit casts.

ALL_DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_eig_and_eigvals_under_strict_promotion(dtype):
    r = rng(20)
    x = r.standard_normal((4, 4)) + (1j * r.standard_normal((4, 4)) if np.issubdtype(dtype, np.complexfloating) else 0)
    a = jnp.asarray(x.astype(dtype))
    with jax.numpy_dtype_promotion("strict"):
        w, v = eigjax.eig(a)
        w2 = eigjax.eigvals(a, solver="host")
        g = jax.grad(lambda m: jnp.sum(jnp.abs(eigjax.eigvals(m))))(a)
        gv = jax.grad(lambda m: jnp.sum(jnp.abs(eigjax.eig(m).eigenvectors) ** 3))(a)
        chk = eigjax.eig_gauge_check(lambda w, v: jnp.sum(jnp.abs(v) ** 3), a)
    want = np.sort_complex(np.linalg.eigvals(x.astype(np.complex128)))
    tol = 1e-4 if dtype in (np.float32, np.complex64) else 1e-10
    np.testing.assert_allclose(np.asarray(w), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(w2), want, rtol=tol, atol=tol)
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.isfinite(np.asarray(gv))) and bool(chk.ok)
    assert v.dtype == w.dtype


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_matrix_functions_under_strict_promotion(dtype):
    r = rng(21)
    n = 4
    x = r.standard_normal((n, n)) + (1j * r.standard_normal((n, n)) if np.issubdtype(dtype, np.complexfloating) else 0)
    spd = jnp.asarray((x @ np.conj(x.T) + n * np.eye(n)).astype(dtype))
    complex_f = lambda w: jnp.exp(jax.lax.complex(jnp.zeros_like(w), w))  # noqa: E731
    with jax.numpy_dtype_promotion("strict"):
        outs = [eigjax.sqrtm(spd), eigjax.logm(spd), eigjax.powm(spd, 1.5), eigjax.matrix_function(spd, complex_f)]
        g = jax.grad(lambda m: jnp.real(jnp.sum(eigjax.sqrtm(m))))(spd)
        gp = jax.grad(lambda p: jnp.real(jnp.sum(eigjax.powm(spd, p))))(1.5)
        hvp = jax.jvp(jax.grad(lambda m: jnp.real(jnp.sum(eigjax.matrix_function(m, complex_f)))), (spd,), (spd,))[1]
    want = scipy_sqrtm(np.asarray(spd, dtype=np.complex128))
    tol = 1e-4 if dtype in (np.float32, np.complex64) else 1e-10
    np.testing.assert_allclose(np.asarray(outs[0]), want, rtol=tol, atol=tol)
    for x_ in (*outs, g, gp, hvp):
        assert np.all(np.isfinite(np.asarray(x_)))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_eigh_partial_complex_gradient_under_strict_promotion(dtype):
    r = rng(22)
    n = 12
    x = r.standard_normal((n, n)) + 1j * r.standard_normal((n, n))
    a = jnp.asarray(((x + np.conj(x.T)) / 2).astype(dtype))
    loss = lambda m: jnp.sum(eigjax.eigh_partial(m, 2).eigenvalues)  # noqa: E731
    with jax.numpy_dtype_promotion("strict"):
        g = jax.grad(loss)(a)
    want = np.linalg.eigh(np.asarray(a, np.complex128))[1][:, :2]
    tol = 1e-3 if dtype == np.complex64 else 1e-8
    np.testing.assert_allclose(np.asarray(g), np.conj(want @ np.conj(want.T)), atol=tol)


# ---------------------------------------------------------------------------
# Empty (0 x 0) and 1 x 1 matrices under every transformation.

SMALL_LOSSES = {
    "eigvals": lambda x: jnp.sum(jnp.abs(eigjax.eigvals(x))),
    "eigvals_host": lambda x: jnp.sum(jnp.abs(eigjax.eigvals(x, solver="host"))),
    "eig": lambda x: jnp.sum(jnp.abs(eigjax.eig(x).eigenvectors) ** 2 * jnp.real(eigjax.eig(x).eigenvalues)[None, :]),
    "eig_left": lambda x: jnp.sum(jnp.abs(eigjax.eig(x, left=True).left_eigenvectors)),
    "eigh": lambda x: jnp.sum(eigjax.eigh(x).eigenvalues) + jnp.sum(eigjax.eigh(x).eigenvectors ** 2),
    "eigvalsh": lambda x: jnp.sum(eigjax.eigvalsh(x)),
    "sqrtm": lambda x: jnp.sum(eigjax.sqrtm(x)),
    "powm": lambda x: jnp.sum(eigjax.powm(x, 1.5)),
    "expm": lambda x: jnp.sum(eigjax.expm(x)),
}


@pytest.mark.parametrize("n", [0, 1])
@pytest.mark.parametrize("name", sorted(SMALL_LOSSES))
def test_empty_and_one_by_one_under_grad_and_hessian(name, n):
    loss = SMALL_LOSSES[name]
    a = 2.0 * jnp.eye(n)
    value = loss(a)
    g, gj, h = jax.grad(loss)(a), jax.jit(jax.grad(loss))(a), jax.hessian(loss)(a)
    assert g.shape == gj.shape == (n, n) and h.shape == (n, n, n, n)
    for x in (value, g, gj, h):
        assert np.all(np.isfinite(np.asarray(x)))
    if n == 1:  # d/da of the scalar function: 1 for eigenvalues, f'(2) for f(A)
        fd = (loss(a + 1e-6) - loss(a - 1e-6)) / 2e-6
        np.testing.assert_allclose(float(g[0, 0]), float(fd), rtol=1e-6, atol=1e-9)


def test_powm_exponent_gradient_of_empty_matrix_is_zero():
    assert float(jax.grad(lambda p: jnp.sum(eigjax.powm(jnp.zeros((0, 0)), p)))(1.5)) == 0.0


# ---------------------------------------------------------------------------
# psd=True: rounding-level eigenvalues of a singular PSD input clipped to exactly 0.


def _rank2_covariance(seed=31, n=5):
    x = rng(seed).standard_normal((2, n))
    return jnp.asarray(x.T @ x)  # eigenvalues ~1e-16 (some negative), then two O(1)


def test_sqrtm_psd_of_rank_deficient_covariance():
    cov = _rank2_covariance()
    assert np.isnan(np.asarray(eigjax.sqrtm(cov))).any()  # documented default: NaN
    for s in (eigjax.sqrtm(cov, psd=True), jax.jit(lambda c: eigjax.sqrtm(c, psd=True))(cov)):
        assert np.all(np.isfinite(np.asarray(s)))
        assert rel_err(s @ s, cov) < 1e-14
        assert np.linalg.eigvalsh(np.asarray(s)).min() > -1e-7  # PSD: sqrt of rounding-level ~1e-8
    batch = jnp.stack([cov, 3.0 * cov, jnp.eye(5)])
    sb = eigjax.sqrtm(batch, psd=True)
    for k in range(3):
        assert rel_err(sb[k], eigjax.sqrtm(batch[k], psd=True)) < 1e-13
    # negative beyond rounding stays NaN
    assert np.isnan(np.asarray(eigjax.sqrtm(jnp.diag(jnp.array([1.0, -1e-6])), psd=True))).any()
    # powm p > 0 and the other functions accept it; inv_sqrtm / logm give inf / -inf, not NaN
    p = eigjax.powm(cov, 0.5, psd=True)
    assert rel_err(p, eigjax.sqrtm(cov, psd=True)) < 1e-12
    assert np.isinf(np.asarray(eigjax.logm(jnp.diag(jnp.array([-1e-17, 1.0])), psd=True))).any()
    assert np.isinf(np.asarray(eigjax.inv_sqrtm(jnp.diag(jnp.array([-1e-17, 1.0])), psd=True))).any()


def test_psd_derivatives():
    """powm(., 2, psd) at a singular PSD input: f'(0) = 0 finite, derivative exact (A^2);
    sqrtm at a singular input has none: NaN; at a definite input psd changes nothing."""
    cov = _rank2_covariance()
    c = jnp.asarray(random_hermitian(rng(32), 5))
    g = jax.grad(lambda a: jnp.sum(c * eigjax.powm(a, 2.0, psd=True)))(cov)
    want = jax.grad(lambda a: jnp.sum(c * (((a + a.T) / 2) @ ((a + a.T) / 2))))(cov)
    assert rel_err(g, want) < 1e-12
    gs = jax.grad(lambda a: jnp.sum(c * eigjax.sqrtm(a, psd=True)))(cov)
    assert np.isnan(np.asarray(gs)).all()
    spd = cov + jnp.eye(5)
    for name in ("sqrtm", "inv_sqrtm", "logm"):
        f = getattr(eigjax, name)
        g1 = jax.grad(lambda a: jnp.sum(c * f(a, psd=True)))(spd)
        g0 = jax.grad(lambda a: jnp.sum(c * f(a)))(spd)
        assert rel_err(g1, g0) < 1e-13


def test_psd_option_is_checked():
    with pytest.raises(TypeError, match=r"eigjax.sqrtm: option `psd` must be True or False; got 'yes'"):
        eigjax.sqrtm(jnp.eye(2), psd="yes")


# ---------------------------------------------------------------------------
# Clear errors instead of tracebacks or silent coercion (#19 item 14).


@pytest.mark.parametrize("p", ["2", None, [2.0], True, 1 + 2j])
def test_powm_bad_exponent_is_a_clear_type_error(p):
    with pytest.raises(TypeError, match=r"eigjax.powm: argument `p` must be a real scalar"):
        eigjax.powm(jnp.eye(2), p)
    with pytest.raises(TypeError, match=r"eigjax.powm: argument `p`"):
        jax.jit(lambda a: eigjax.powm(a, p))(jnp.eye(2))
