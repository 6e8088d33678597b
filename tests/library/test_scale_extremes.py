"""Matrices of tiny or huge norm: the scaling laws hold, or the result is NaN, never a wrong number.

Found by an audit (ninth session): norms computed as square roots of sums of squares
overflowed (``||A|| ~ 1e155`` in float64, ``1e19`` in float32) or underflowed, and the
tolerances built from them cut every pair or none; the divided differences of ``expm`` took
the cancelling quotient at small norms. Oracles: the exact scaling of each quantity
(eigenvectors and gauge-invariant eigenvector losses do not change with ``s``, ``sqrtm``
scales by ``sqrt(s)``), computed from the unscaled problem, and the series
``d exp(sA)[E] = E + s (A E + E A) / 2 + O(s^2)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rng

import eigjax

Q = np.linalg.qr(rng(30).standard_normal((3, 3)))[0]


@pytest.mark.parametrize(("dtype", "scale"), [(np.float64, 1e154), (np.float64, 1e-200), (np.float32, 1e19)])
def test_eig_eigenvector_gradient_is_scale_invariant(dtype, scale):
    """``|v_0[0]|^2`` (gauge invariant) does not change when ``A`` is scaled, so its gradient
    scales by ``1 / s``. The Frobenius norm in the degenerate tolerance overflowed and every
    pair was cut: the gradient was exactly 0."""
    a = jnp.asarray([[1.0, 2.0], [3.0, 4.0]], dtype)
    loss = lambda a: jnp.abs(eigjax.eig(a).eigenvectors[0, 0]) ** 2
    g1 = np.asarray(jax.grad(loss)(a), np.float64)
    gs = np.asarray(jax.grad(loss)(a * dtype(scale)), np.float64) * scale
    np.testing.assert_allclose(gs, g1, rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize(("dtype", "scale"), [(np.float64, 1e-200), (np.float32, 1e-25)])
def test_eig_degenerate_projector_gradient_at_tiny_norm(dtype, scale):
    """``tr(P C)``, ``P`` the spectral projector of a double (semisimple) eigenvalue, against
    its closed form ``-(P C S + S C P)^T`` (``S`` the reduced resolvent of the other
    eigenvalue). With ``||A||^2`` underflowing, the degenerate tolerance was 0, the pair
    split by rounding was not cut and the gradient was off by 9-36 %."""
    x = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 3.0]])
    y = np.linalg.inv(x).T
    c = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0], [3.0, 0.0, 1.0]])
    p, r = x[:, :2] @ y[:, :2].T, np.outer(x[:, 2], y[:, 2])  # eigenvalues 1, 1 and 2
    g_ref = -((p @ c @ r).T + (r @ c @ p).T)

    def loss(a):
        res = eigjax.eig(a, left=True)
        proj = res.eigenvectors[:, :2] @ jnp.conj(res.left_eigenvectors[:, :2]).T
        return jnp.real(jnp.trace(proj @ jnp.asarray(c, proj.dtype)))

    a = jnp.asarray((x @ np.diag([1.0, 1.0, 2.0]) @ np.linalg.inv(x) * scale).astype(dtype))
    g = np.asarray(jax.grad(loss)(a), np.float64) * scale
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=(1e-5 if dtype == np.float32 else 1e-12) * np.abs(g_ref).max())


@pytest.mark.parametrize("s", [1e-10, 1e-100])
def test_expm_derivative_at_small_norm(s):
    """``d exp(sA)[E] = E + s (A E + E A) / 2 + O(s^2)``: the quotient ``(e^wi - e^wj) / (wi -
    wj)`` cancels at ``|w| ~ s`` and kept only ~1e-6 of the first-order term at s = 1e-10
    (and nothing at 1e-100); the quadrature of ``f'`` is taken there now."""
    a = Q @ np.diag([-1.0, 0.5, 2.0]) @ Q.T
    e = np.eye(3)[::-1]
    d = np.asarray(jax.jvp(eigjax.expm, (jnp.asarray(s * a),), (jnp.asarray(e),))[1])
    series = e + s * (a @ e + e @ a) / 2
    np.testing.assert_allclose(d, series, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("dtype", "scale"), [(np.float64, 1e300), (np.float32, 1e20)])
def test_psd_sqrtm_of_a_huge_matrix(dtype, scale):
    """``psd=True`` clips eigenvalues below ``10 n eps ||A||``; the unscaled norm overflowed,
    every eigenvalue was clipped and the result was 0."""
    a = jnp.diag(jnp.asarray([4.0, 9.0], dtype) * dtype(scale))
    out = np.asarray(eigjax.sqrtm(a, psd=True), np.float64)
    np.testing.assert_allclose(np.diag(out), np.sqrt(scale) * np.array([2.0, 3.0]), rtol=1e-5)
    assert out[0, 1] == 0 and out[1, 0] == 0


def test_degenerate_guard_at_extreme_loss_scales():
    """The guard compares the cotangent on a degenerate pair with the cotangent's scale,
    ``max ||qbar[:, k]||``: overflowed at a loss scaled by 1e160 (a non-invariant loss got
    a finite, wrong gradient) and underflowed at 1e-170 (an invariant one became NaN)."""
    b = jnp.asarray(Q @ np.diag([1.0, 1.0, 2.0]) @ Q.T)
    for k in (1.0, 1e160):  # one vector of the degenerate pair: no derivative
        g = jax.grad(lambda a, k=k: k * eigjax.eigh(a).eigenvectors[0, 0] ** 2)(b)
        assert np.all(np.isnan(np.asarray(g)))
    c = rng(31).standard_normal((3, 3))
    c = jnp.asarray(c + c.T)
    pair = lambda a: eigjax.eigh(a).eigenvectors[:, :2]
    g1 = jax.grad(lambda a: jnp.trace(pair(a).T @ c @ pair(a)))(b)  # the pair's projector: invariant
    gk = jax.grad(lambda a: 1e-170 * jnp.trace(pair(a).T @ c @ pair(a)))(b)
    assert np.all(np.isfinite(np.asarray(g1)))
    np.testing.assert_allclose(np.asarray(gk) / 1e-170, np.asarray(g1), rtol=1e-10)
