"""Forward accuracy on classic matrices with known spectra (closed forms, or a
50-digit Sturm-sequence bisection for the Wilkinson matrix, which has none)."""

from __future__ import annotations

import decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import central_fd, hermitian_direction, jvp, rng

import eigjax
from eigjax._testmatrices import NAMES, SYMMETRIC, known_eigenvalues, named_matrix

EPS = {np.float32: np.finfo(np.float32).eps, np.float64: np.finfo(np.float64).eps}


def _sturm_eigenvalues(diag, off, digits=50, iters=200):
    """Eigenvalues of a symmetric tridiagonal matrix by bisection on Sturm counts,
    in ``digits``-digit decimal arithmetic (an oracle independent of LAPACK)."""
    ctx = decimal.Context(prec=digits)
    d = [ctx.create_decimal(repr(float(x))) for x in diag]
    e2 = [ctx.create_decimal(repr(float(x))) ** 2 for x in off]
    n = len(d)

    def count_below(x):  # number of eigenvalues < x
        count, q = 0, ctx.subtract(d[0], x)
        for i in range(n):
            if i:
                q = ctx.subtract(ctx.subtract(d[i], x), ctx.divide(e2[i - 1], q))
            if q == 0:
                q = ctx.create_decimal("1e-80")
            if q < 0:
                count += 1
        return count

    radius = float(max(abs(x) for x in d)) + 2 * float(max((abs(x) for x in off), default=0)) + 1
    out = []
    for k in range(n):
        lo, hi = -ctx.create_decimal(radius), ctx.create_decimal(radius)
        for _ in range(iters):
            mid = ctx.divide(lo + hi, 2)
            if count_below(mid) > k:
                hi = mid
            else:
                lo = mid
        out.append(ctx.divide(lo + hi, 2))
    return out


def _tol(a, dtype, c=8.0):
    return c * a.shape[-1] * EPS[dtype] * np.linalg.norm(a, 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rosser(dtype):
    a = named_matrix("rosser")
    want = known_eigenvalues("rosser")
    w = np.asarray(eigjax.eigvalsh(jnp.asarray(a, dtype)), np.float64)
    np.testing.assert_allclose(w, want, rtol=0, atol=_tol(a, dtype))
    ev = np.asarray(eigjax.eigh(jnp.asarray(a, dtype)).eigenvalues, np.float64)
    np.testing.assert_allclose(ev, want, rtol=0, atol=_tol(a, dtype))
    if dtype == np.float64:
        # the double eigenvalue 1000 is one group; the three near 1020 are resolved
        r = eigjax.spectral_report(jnp.asarray(a))
        assert r.group.tolist() == [0, 1, 2, 3, 3, 5, 6, 7]


def test_rosser_double_eigenvalue_derivative():
    """d(w_3 + w_4) = trace(P dA), P the projector onto the eigenspace of 1000.

    P comes from the closed form of the double eigenvalue's eigenspace: the null space
    of (A - 1000 I), found by an SVD in NumPy."""
    a = named_matrix("rosser")
    _, s, vt = np.linalg.svd(a - 1000 * np.eye(8))
    assert s[-2] < 1e-10 * s[0] and s[-3] > 1.0  # exactly a two-dimensional null space
    q = vt[-2:].T
    p = q @ q.T
    da = hermitian_direction(rng(0), (8, 8))
    got = jvp(lambda x: jnp.sum(eigjax.eigvalsh(x)[3:5]), a, da)
    np.testing.assert_allclose(got, np.trace(p @ da), rtol=1e-10)
    got = jvp(lambda x: eigjax.eigh(x).eigenvectors[:, 3:5] @ eigjax.eigh(x).eigenvectors[:, 3:5].T, a, da)
    # the group is 0.098 and 19.9 away from its neighbours: FD with a small step is reliable
    want = central_fd(
        lambda x: eigjax.eigh(x).eigenvectors[:, 3:5] @ eigjax.eigh(x).eigenvectors[:, 3:5].T, a, da, h=1e-5
    )
    np.testing.assert_allclose(got, want, atol=1e-7)


@pytest.mark.parametrize("n", [3, 21])
def test_wilkinson_against_high_precision_bisection(n):
    a = named_matrix("wilkinson", n)
    oracle = _sturm_eigenvalues(np.diag(a), np.diag(a, 1))
    want = np.array([float(x) for x in oracle])
    w = np.asarray(eigjax.eigvalsh(jnp.asarray(a)))
    np.testing.assert_allclose(w, want, rtol=0, atol=_tol(a, np.float64, c=2.0))
    np.testing.assert_allclose(w, np.linalg.eigvalsh(a), rtol=0, atol=_tol(a, np.float64, c=2.0))
    if n == 21:
        gap = float(oracle[-1] - oracle[-2])
        # the famous nearly-degenerate top pair: 10.746194182903..., about 7.1e-14 apart
        assert abs(float(oracle[-1]) - 10.746194182903393) < 1e-14
        assert 6e-14 < gap < 8e-14
        # float64 resolves it only to within its own rounding error
        assert abs((w[-1] - w[-2]) - gap) < _tol(a, np.float64, c=2.0)
        # and the spectral report says how far apart the pair is and what it implies
        r = eigjax.spectral_report(jnp.asarray(a))
        assert float(r.min_gap) < 1e-12


@pytest.mark.parametrize("n", [1, 2, 5, 8])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_clement(n, dtype):
    want = known_eigenvalues("clement", n)
    a = named_matrix("clement", n)
    w = np.asarray(eigjax.eigvals(jnp.asarray(a, dtype)))
    # nonsymmetric: eigenvalue errors scale with the condition numbers (modest here)
    np.testing.assert_allclose(np.sort(w.real), want, rtol=0, atol=1e-10 * max(n, 1))
    np.testing.assert_allclose(w.imag, 0, atol=1e-10 * max(n, 1))
    s = named_matrix("clement_sym", n)
    np.testing.assert_allclose(s, s.T)
    ws = np.asarray(eigjax.eigvalsh(jnp.asarray(s, dtype)))
    np.testing.assert_allclose(ws, want, rtol=0, atol=_tol(s, np.float64))


@pytest.mark.parametrize("n", [1, 4, 9])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_second_difference(n, dtype):
    a = named_matrix("second_difference", n)
    want = known_eigenvalues("second_difference", n)
    w, v = eigjax.eigh(jnp.asarray(a, dtype))
    np.testing.assert_allclose(np.asarray(w, np.float64), want, rtol=0, atol=_tol(a, dtype))
    # eigenvectors: sin(j k pi / (n + 1)), up to sign
    j = np.arange(1, n + 1)
    s = np.sin(np.outer(j, j) * np.pi / (n + 1))
    s /= np.linalg.norm(s, axis=0)
    overlap = np.abs(np.sum(s * np.asarray(v, np.float64), axis=0))
    np.testing.assert_allclose(overlap, 1, atol=100 * EPS[dtype] * n)


def test_named_matrix_contract():
    for name in NAMES:
        a = named_matrix(name)
        assert a.dtype == np.float64 and a.shape[0] == a.shape[1]
        assert np.array_equal(a, a.T) == SYMMETRIC[name]
    assert named_matrix("second_difference", 0).shape == (0, 0)
    assert eigjax.named_matrix("wilkinson").shape == (21, 21)
    with pytest.raises(ValueError, match="unknown matrix name 'hilbert'"):
        named_matrix("hilbert")
    with pytest.raises(ValueError, match="odd n"):
        named_matrix("wilkinson", 4)
    with pytest.raises(ValueError, match="8 x 8"):
        named_matrix("rosser", 6)
    with pytest.raises(ValueError, match="non-negative int"):
        named_matrix("clement", -1)


def test_batched_named_matrices_under_jit():
    a = jnp.stack([jnp.asarray(named_matrix("clement_sym", 6)), jnp.asarray(named_matrix("second_difference", 6))])
    w = jax.jit(eigjax.eigvalsh)(a)
    np.testing.assert_allclose(w[0], known_eigenvalues("clement_sym", 6), atol=1e-12)
    np.testing.assert_allclose(w[1], known_eigenvalues("second_difference", 6), atol=1e-12)
