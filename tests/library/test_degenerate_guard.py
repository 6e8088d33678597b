"""The degenerate guard (eigjax._guard, issue #15): reverse-mode derivatives at degenerate
points are exact or NaN, never a wrong finite number.

* exact where the loss allows it: whole-group sums, ``sum(w**3)``, group projectors,
  ``V diag(g) V^H`` with ``g`` equal on groups (against central finite differences;
  float32 within 1e-3 of float64);
* NaN where it does not: one vector of a group, unequal weights on a group's
  eigenvalues, ``f(A)`` rebuilt from ``(w, V)`` (PSD projection), a subspace that splits a
  group (top-2 of the identity) - and only for the failing matrix of a batch;
* no false alarms: random, exactly degenerate, clustered (gaps 1e-8), badly scaled,
  zero and rank-deficient inputs, float32 to complex128, for the invariant losses;
* the same for eigh_generalized, eigh_partial (a pair inside the block) and eig
  (repeated semisimple eigenvalues, spectral projectors);
* the options: ``degenerate_check=False`` (trust the loss), ``"debug"`` and
  ``EIGJAX_DEBUG_GUARD``; jit, vmap, jacrev, hessian, export.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    central_fd,
    hermitian,
    hermitian_direction,
    is_complex,
    random_matrix,
    random_unitary,
    rng,
    with_spectrum,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import _spectrum

import eigjax

N = 4
POINTS = {  # spectrum, size of the degenerate group at the start
    "pair": ([1.0, 1.0, 2.0, 3.0], 2),
    "identity": ([1.0, 1.0, 1.0, 1.0], 4),
    "triple": ([1.0, 1.0, 1.0, 3.0], 3),
}


def _point(name, dtype, seed=0):
    w, m = POINTS[name]
    if name == "identity":
        return np.eye(N, dtype=dtype), m
    return with_spectrum(rng(seed), w, dtype), m


def _consts(dtype, seed=1):
    """A Hermitian target ``C`` (float64/complex128, cast by the losses)."""
    return hermitian_direction(rng(seed), (N, N), np.complex128 if is_complex(dtype) else np.float64)


def _real(x):
    return jnp.real(x)


# Losses of (w, V) and of the group size m; one eigh call per loss (the guard tests each
# call's cotangent on its own: see docs/derivatives.md).
def _invariant_losses(c, m):
    g = np.where(np.arange(N) < m, 0.5, 2.0)  # equal on the group

    def proj(w, v):
        vg = v[:, :m]
        return _real(jnp.trace(vg @ jnp.conj(vg).T @ c.astype(v.dtype)))

    return {
        "group sum": lambda w, v: jnp.sum(w[:m]),
        "sum w**3": lambda w, v: jnp.sum(w**3),
        "group projector": proj,
        "V diag(g) V^H": lambda w, v: _real(
            jnp.trace((v * g[None, :].astype(v.dtype)) @ jnp.conj(v).T @ c.astype(v.dtype))
        ),
        "sum |V|^2 c_i": lambda w, v: jnp.sum(jnp.abs(v) ** 2 * jnp.arange(1.0, N + 1)[:, None].astype(w.dtype)),
    }


def _failing_losses(c, m):
    def psd(w, v):  # f(A) = V diag(max(w - 1/2, 0)) V^H fitted to c: f' = 1 on the group
        f = jnp.maximum(w - 0.5, 0.0).astype(v.dtype)
        return jnp.sum(jnp.abs((v * f[None, :]) @ jnp.conj(v).T - c.astype(v.dtype)) ** 2)

    return {
        "one vector of the group": lambda w, v: _real(jnp.conj(v[:, 0]) @ c.astype(v.dtype) @ v[:, 0]),
        "unequal weights on the group": lambda w, v: jnp.sum(w * jnp.arange(1.0, N + 1).astype(w.dtype)),
        "f(A) rebuilt (PSD projection)": psd,
        "part of the group": lambda w, v: _real(
            jnp.trace(v[:, m - 1 :] @ jnp.conj(v[:, m - 1 :]).T @ c.astype(v.dtype))
        ),
    }


def _through(decomp, loss):
    def f(a):
        w, v = decomp(a)[:2]
        return loss(w, v)

    return f


def _grad(f, a):
    return np.asarray(jax.jit(jax.grad(f))(jnp.asarray(a)))


def _directional(g, e):
    """``dL[e]`` from JAX's gradient of a real loss: for complex input ``g = conj(dL/dx +
    i dL/dy)``, so ``dL[e] = Re sum(g * e)``."""
    return float(np.real(np.sum(g * e)))


# ------------------------------------------------------------------------------- eigh


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("point", list(POINTS))
def test_eigh_invariant_losses_exact_at_degenerate_points(point, dtype):
    a, m = _point(point, dtype)
    c = _consts(dtype)
    e = hermitian_direction(rng(2), (N, N), dtype)
    for name, loss in _invariant_losses(c, m).items():
        f = _through(eigjax.eigh, loss)
        g = _grad(f, a)
        assert np.all(np.isfinite(g)), (point, name)
        fd = float(central_fd(f, a, e, h=1e-4))
        assert abs(_directional(g, e) - fd) <= 1e-7 * (1 + abs(fd)), (point, name, _directional(g, e), fd)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
@pytest.mark.parametrize("point", list(POINTS))
def test_eigh_invariant_losses_float32_match_float64(point, dtype):
    a64, m = _point(point, np.complex128 if is_complex(dtype) else np.float64)
    a32 = a64.astype(dtype)
    c = _consts(dtype)
    for name, loss in _invariant_losses(c, m).items():
        f = _through(eigjax.eigh, loss)
        g32, g64 = _grad(f, a32), _grad(f, a64)
        assert np.all(np.isfinite(g32)), (point, name)
        err = np.linalg.norm(g32 - g64) / max(np.linalg.norm(g64), 1.0)
        assert err <= 1e-3, (point, name, err)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("point", list(POINTS))
def test_eigh_non_invariant_losses_are_nan_in_reverse_mode(point, dtype):
    a, m = _point(point, dtype)
    c = _consts(dtype)
    for name, loss in _failing_losses(c, m).items():
        f = _through(eigjax.eigh, loss)
        assert np.all(np.isnan(_grad(f, a))), (point, name)
        # today's behaviour on request: the cut rule, finite
        f_trust = _through(lambda x: eigjax.eigh(x, degenerate_check=False), loss)
        assert np.all(np.isfinite(_grad(f_trust, a))), (point, name)
        # forward mode cannot see the loss: it keeps the cut rule
        e = hermitian_direction(rng(3), (N, N), dtype)
        assert np.isfinite(float(jax.jvp(f, (jnp.asarray(a),), (jnp.asarray(e),))[1]))


def test_issue_examples_psd_projection_and_pca_of_the_identity():
    """The two examples of issue #15: both were finite and wrong (74 % off; exactly 0)."""
    c = jnp.asarray(hermitian_direction(rng(4), (3, 3)))

    def psd_fit(a):
        w, v = eigjax.eigh(a)
        return jnp.sum(((v * jnp.maximum(w, 0.0)[None, :]) @ v.T - c) ** 2)

    def pca(a):  # projector onto the top-2 eigenvectors of the identity
        v = eigjax.eigh(a).eigenvectors[:, -2:]
        return jnp.sum(v @ v.T * c)

    for loss in (psd_fit, pca):
        assert np.all(np.isnan(np.asarray(jax.grad(loss)(jnp.eye(3)))))
    # the exact PSD-projection gradient comes from the matrix-function route
    exact = jax.grad(lambda a: jnp.sum((eigjax.matrix_function(a, lambda w: jnp.maximum(w, 0.0)) - c) ** 2))(jnp.eye(3))
    assert np.all(np.isfinite(np.asarray(exact)))


def test_only_the_failing_matrix_of_a_batch_is_nan():
    r = rng(5)
    good = with_spectrum(r, [0.5, 1.0, 2.0])
    batch = jnp.asarray(np.stack([good, np.eye(3), good + 0.1, with_spectrum(r, [1.0, 2.0, 2.0])]))
    c = jnp.asarray(hermitian_direction(r, (3, 3)))

    def pca(a):
        v = eigjax.eigh(a).eigenvectors[..., -2:]
        return jnp.sum(v @ jnp.swapaxes(v, -1, -2) * jnp.broadcast_to(c, v.shape[:-2] + c.shape))

    for g in (jax.grad(pca)(batch), jax.vmap(jax.grad(pca))(batch), jax.jit(jax.vmap(jax.grad(pca)))(batch)):
        finite = [bool(np.all(np.isfinite(np.asarray(x)))) for x in g]
        # element 3: the top-2 subspace is its whole double eigenvalue's eigenspace
        assert finite == [True, False, True, True]


def test_jacrev_rows_of_non_invariant_cotangents_are_nan():
    """jacrev pulls back one cotangent per output entry: the components v_j^T r of the
    group's vectors at a degenerate point are not differentiable (NaN rows), those of
    the simple eigenvalue's vector are; so is a single eigenvalue of the group."""
    a = jnp.asarray(with_spectrum(rng(6), [1.0, 1.0, 2.0]))
    r = jnp.asarray(rng(7).standard_normal(3))
    # (raw entries of V can pass: LAPACK may return a basis with V[2, 1] = 0 exactly, in
    # which V[2, 0] is stationary under the rotations of the group - a necessary test)
    jv = np.asarray(jax.jacrev(lambda a: eigjax.eigh(a).eigenvectors.T @ r)(a))
    assert np.all(np.isnan(jv[:2]))  # the group's vectors
    assert np.all(np.isfinite(jv[2]))  # the simple eigenvalue's vector
    jw = np.asarray(jax.jacrev(lambda a: eigjax.eigh(a).eigenvalues)(a))
    assert np.all(np.isnan(jw[:2])) and np.all(np.isfinite(jw[2]))  # one eigenvalue of a group: NaN
    # eigvalsh keeps its never-NaN contract (one-sided derivative of a single eigenvalue)
    assert np.all(np.isfinite(np.asarray(jax.jacrev(eigjax.eigvalsh)(a))))


def test_second_derivatives_compose_with_the_guard():
    """hessian = jacfwd(jacrev): exact at distinct eigenvalues (also for a loss that the
    guard would stop at a degenerate point), NaN at a degenerate point; never wrong."""
    r = rng(7)
    c = jnp.asarray(hermitian_direction(r, (3, 3)))
    e = jnp.asarray(hermitian_direction(r, (3, 3)))

    def pca(a):
        v = eigjax.eigh(a).eigenvectors[:, -2:]
        return jnp.sum(v @ v.T * c)

    a = jnp.asarray(with_spectrum(r, [0.5, 1.0, 2.0]))
    for hess in (jax.hessian(pca), jax.jacrev(jax.jacrev(pca))):
        hv = np.einsum("ijkl,kl->ij", np.asarray(hess(a)), np.asarray(e))
        fd = np.asarray(central_fd(jax.grad(pca), a, e, h=1e-4))
        np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-8)
    assert np.all(np.isnan(np.asarray(jax.hessian(pca)(jnp.eye(3)))))
    # an invariant loss at a degenerate point: first order exact, second order NaN
    proj = lambda a: jnp.sum(eigjax.eigh(a).eigenvectors[:, :2] ** 2 @ jnp.ones((2,)))  # noqa: E731
    b = jnp.asarray(with_spectrum(r, [1.0, 1.0, 2.0]))
    assert np.all(np.isfinite(np.asarray(jax.grad(proj)(b))))
    assert np.all(np.isnan(np.asarray(jax.hessian(proj)(b))))


def test_options_and_debug_report(capfd, monkeypatch):
    a = jnp.eye(3)
    loss = lambda check: lambda a: jnp.sum(eigjax.eigh(a, degenerate_check=check).eigenvectors[:, 0])  # noqa: E731
    assert np.all(np.isnan(np.asarray(jax.grad(loss(True))(a + jnp.diag(jnp.array([0.0, 0.0, 1.0]))))))
    assert np.all(np.isfinite(np.asarray(jax.grad(loss(False))(a))))
    g = jax.grad(loss("debug"))(a + jnp.diag(jnp.array([0.0, 0.0, 1.0])))
    jax.effects_barrier()
    out = capfd.readouterr().out
    assert np.all(np.isnan(np.asarray(g)))
    assert "eigjax degenerate guard (eigjax.eigh)" in out and "(0, 1)" in out, out
    monkeypatch.setenv("EIGJAX_DEBUG_GUARD", "1")
    jax.grad(loss(None))(a + jnp.diag(jnp.array([0.0, 0.0, 2.0])))
    jax.effects_barrier()
    assert "eigjax degenerate guard" in capfd.readouterr().out
    for _fn, call in (
        (eigjax.eigh, lambda x, o: eigjax.eigh(x, degenerate_check=o)),
        (eigjax.eig, lambda x, o: eigjax.eig(x, degenerate_check=o)),
        (eigjax.eigh_generalized, lambda x, o: eigjax.eigh_generalized(x, x, degenerate_check=o)),
        (eigjax.eigh_partial, lambda x, o: eigjax.eigh_partial(x, 1, degenerate_check=o)),
    ):
        with pytest.raises(ValueError, match="degenerate_check"):
            call(a, "yes")


def test_gauge_check_still_compares_the_cut_rule():
    """check_gauge_invariance compares gradients of losses the guard stops: it still sees
    the cut rule's (finite) gradients and names the failure as before."""
    a = jnp.asarray(with_spectrum(rng(8), [1.0, 1.0, 2.0, 3.0]))
    c = jnp.asarray(hermitian_direction(rng(9), (4, 4)))

    def f_of_a(a):
        w, v = eigjax.eigh(a)
        return jnp.trace(v @ jnp.diag(w**2) @ v.T @ c)

    res = eigjax.check_gauge_invariance(f_of_a, a)
    assert not bool(res.invariant) and float(res.value_change) <= float(res.value_tol)
    assert np.all(np.isnan(np.asarray(jax.grad(f_of_a)(a))))  # and outside it, the guard holds


def test_export_and_jit():
    from jax import export

    def pca(a):
        v = eigjax.eigh(a).eigenvectors[..., -2:]
        return jnp.sum(v @ jnp.swapaxes(v, -1, -2))

    n = 20  # above the native small-matrix kernel (not exportable)
    x = jnp.asarray(np.stack([np.eye(n), np.diag(np.arange(1.0, n + 1))]))
    exp = export.export(jax.jit(jax.grad(pca)))(jax.ShapeDtypeStruct(x.shape, x.dtype))
    g = np.asarray(exp.call(x))
    assert np.all(np.isnan(g[0])) and np.all(np.isfinite(g[1]))


def test_blind_spot_f_of_a_at_the_identity_with_constant_diagonal_target():
    """Documented limit (eigjax._guard): the cotangent at one basis does not determine the
    loss. At A = I the solver returns V = I; with a target of constant diagonal,
    tr(V diag(w**2) V^T C) has equal wbar and a symmetric V^T Vbar, exactly as the
    invariant (w_1 + w_2 ...) tr(V_G V_G^T C)-type loss, so the guard passes and the
    gradient is the cut rule's (wrong). check_gauge_invariance flags it; matrix_function
    is exact. If this test fails, the guard got stronger: update the docs."""
    c = jnp.ones((3, 3))

    def f_of_a(a):
        w, v = eigjax.eigh(a)
        return jnp.trace(v @ jnp.diag(w**2) @ v.T @ c)

    g = np.asarray(jax.grad(f_of_a)(jnp.eye(3)))
    exact = np.asarray(jax.grad(lambda a: jnp.trace(eigjax.matrix_function(a, lambda w: w**2) @ c))(jnp.eye(3)))
    assert np.all(np.isfinite(g)) and not np.allclose(g, exact)
    assert not bool(eigjax.check_gauge_invariance(f_of_a, jnp.eye(3)).invariant)


# ----------------------------------------------------------------------- property tests

FAMILIES = ("random", "degenerate2", "degenerate3", "clustered", "scaled_up", "scaled_down", "zero", "rank_deficient")
DTYPES = (np.float32, np.float64, np.complex64, np.complex128)


def _single(dtype):
    return np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.complex64))


def _scale(a):
    x = float(np.max(np.abs(np.asarray(a, np.complex128)), initial=0.0))
    return x if x > 0 else 1.0


def _family_input(r, n, dtype, family):
    """(a, group index of each ascending eigenvalue, the spectrum), built in double
    precision and cast."""
    big = 1e15 if _single(dtype) else 1e150
    scale = {"scaled_up": big, "scaled_down": 1 / big}.get(family, 1.0)
    w = _spectrum(r, n, family)  # tests/library/test_properties.py; "zero" is this file's own
    if family == "zero":
        w[:] = 0.0
    w = np.sort(w) * scale
    q = random_unitary(r, n, dtype)
    a = hermitian((q * w) @ np.conj(q.T)).astype(dtype)
    jumps = np.diff(w) > 1e-6 * max(np.max(np.abs(w)), 1e-300)
    return a, np.concatenate([[0], np.cumsum(jumps)]), w


def _property_losses(groups, c, s):
    """Invariant losses of the existing suites: g and weights equal on groups of
    (numerically, 1e-6 relative) equal eigenvalues; ``s`` a constant scale (a scale
    max|w| computed inside the loss is not differentiable at a multiple of the identity,
    and the guard rightly says so)."""
    g = (1.0 + groups / len(groups)).astype(np.float64)

    def vgv(w, v):
        return _real(jnp.trace((v * g[None, :].astype(v.dtype)) @ jnp.conj(v).T @ c.astype(v.dtype)))

    def cubes(w, v):
        return jnp.sum((w / s) ** 3)

    return {
        "V diag(g) V^H C": vgv,
        "projector c_i g_j": lambda w, v: jnp.sum(
            jnp.abs(v) ** 2 * (np.arange(1.0, len(g) + 1)[:, None] * g).astype(w.dtype)
        ),
        "abs2": lambda w, v: jnp.sum(jnp.abs(v) ** 2),
        "sum (w/s)**3": cubes,
    }


_PROPS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@_PROPS
@given(st.sampled_from(FAMILIES), st.sampled_from(DTYPES), st.sampled_from((2, 3, 5, 8)), st.integers(0, 2**31 - 1))
def test_no_false_alarms_eigh(family, dtype, n, seed):
    r = np.random.default_rng(seed)
    a, groups, _ = _family_input(r, n, dtype, family)
    c = hermitian(random_matrix(r, (n, n), np.complex128 if is_complex(dtype) else np.float64))
    for name, loss in _property_losses(groups, c, _scale(a)).items():
        g = _grad(_through(eigjax.eigh, loss), a)
        assert np.all(np.isfinite(g)), (family, dtype, n, name)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FAMILIES), st.sampled_from(DTYPES), st.integers(0, 2**31 - 1))
def test_no_false_alarms_eigh_generalized(family, dtype, seed):
    n = 4
    r = np.random.default_rng(seed)
    a, groups, _ = _family_input(r, n, dtype, family)
    x = random_matrix(r, (n, n), dtype)
    b = (x @ np.conj(x.T) + n * np.eye(n)).astype(dtype)
    # B = I + ...: keep the pencil's degeneracy: A' = L A L^H has spectrum of (A, B) = that of A
    l = np.linalg.cholesky(b.astype(np.complex128 if is_complex(dtype) else np.float64))
    a2 = hermitian(l @ a.astype(l.dtype) @ np.conj(l.T)).astype(dtype)
    c = hermitian(random_matrix(r, (n, n), np.complex128 if is_complex(dtype) else np.float64))
    for name, loss in _property_losses(groups, c, _scale(a)).items():
        if name == "abs2":
            continue  # |V|^2 is not invariant for a non-unitary V (B != I): only V U, U unitary, is
        f = lambda a_: loss(*eigjax.eigh_generalized(a_, jnp.asarray(b)))  # noqa: E731
        g = _grad(f, a2)
        assert np.all(np.isfinite(g)), (family, dtype, name)


# ------------------------------------------------------------------- eigh_generalized


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("point", ["pair", "triple"])
def test_eigh_generalized_exact_or_nan(point, dtype):
    r = rng(10)
    wv, m = POINTS[point]
    x = random_matrix(r, (N, N), dtype)
    b = x @ np.conj(x.T) + N * np.eye(N)
    l = np.linalg.cholesky(b)
    a = hermitian(l @ with_spectrum(r, wv, dtype) @ np.conj(l.T))  # pencil spectrum wv
    c = _consts(dtype)
    e = hermitian_direction(rng(11), (N, N), dtype)
    bj = jnp.asarray(b)
    for name, loss in _invariant_losses(c, m).items():
        if name == "sum |V|^2 c_i":
            continue  # not invariant when V is only B-orthonormal
        f = lambda a_: loss(*eigjax.eigh_generalized(a_, bj))  # noqa: E731
        g = _grad(f, a)
        fd = float(central_fd(f, a, e, h=1e-4))
        assert abs(_directional(g, e) - fd) <= 1e-7 * (1 + abs(fd)), (point, name)
        gb = np.asarray(jax.grad(lambda b_: loss(*eigjax.eigh_generalized(jnp.asarray(a), b_)))(bj))
        assert np.all(np.isfinite(gb)), (point, name)
    for name, loss in _failing_losses(c, m).items():
        f = lambda a_: loss(*eigjax.eigh_generalized(a_, bj))  # noqa: E731
        assert np.all(np.isnan(_grad(f, a))), (point, name)
        f = lambda a_: loss(*eigjax.eigh_generalized(a_, bj, degenerate_check=False))  # noqa: E731
        assert np.all(np.isfinite(_grad(f, a))), (point, name)


# ----------------------------------------------------------------------- eigh_partial


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_eigh_partial_pair_inside_the_block(dtype):
    n, k = 40, 3
    r = rng(12)
    w0 = np.concatenate([[1.0, 1.0, 2.0], np.linspace(6.0, 20.0, n - 3)])
    a = with_spectrum(r, w0, dtype)
    c = hermitian_direction(r, (n, n), dtype)
    e = hermitian_direction(r, (n, n), dtype)

    def through(loss, check=None):
        def f(a_):
            res = eigjax.eigh_partial(a_, k, degenerate_check=check)
            return loss(res.eigenvalues, res.eigenvectors)

        return f

    def proj(w, v):
        return _real(jnp.trace(v[:, :2] @ jnp.conj(v[:, :2]).T @ jnp.asarray(c)))

    good = {"group sum": lambda w, v: w[0] + w[1], "sum w**3": lambda w, v: jnp.sum(w**3), "group projector": proj}
    for name, loss in good.items():
        f = through(loss)
        g = _grad(f, a)
        fd = float(central_fd(f, a, e, h=1e-4))
        assert abs(_directional(g, e) - fd) <= 1e-6 * (1 + abs(fd)), (name, _directional(g, e), fd)
    bad = {
        "one vector": lambda w, v: _real(jnp.conj(v[:, 0]) @ jnp.asarray(c) @ v[:, 0]),
        "unequal weights": lambda w, v: w[0] + 2 * w[1],
    }
    for name, loss in bad.items():
        assert np.all(np.isnan(_grad(through(loss), a))), name
        assert np.all(np.isfinite(_grad(through(loss, False), a))), name


# -------------------------------------------------------------------------------- eig


def _semisimple(r, w, dtype):
    s = random_matrix(r, (len(w), len(w)), dtype) + 3 * np.eye(len(w))
    return (s * np.asarray(w)) @ np.linalg.inv(s)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("point", ["pair", "triple"])
def test_eig_repeated_semisimple_exact_or_nan(point, dtype):
    r = rng(13)
    wv, m = POINTS[point]
    a = _semisimple(r, wv, dtype)
    c = jnp.asarray(random_matrix(r, (N, N), np.complex128))
    e = random_matrix(rng(14), (N, N), dtype)
    g_eq = jnp.asarray(np.where(np.arange(N) < m, 1.0, 3.0))

    def through(loss, check=None):
        def f(a_):
            w, v, y = eigjax.eig(a_, left=True, degenerate_check=check)
            return loss(w, v, y)

        return f

    good = {
        "group sum": lambda w, v, y: jnp.real(jnp.sum(w[:m])),
        "sum w**3": lambda w, v, y: jnp.real(jnp.sum(w**3)),
        "spectral projector": lambda w, v, y: jnp.real(jnp.trace(v[:, :m] @ jnp.conj(y[:, :m]).T @ c.astype(v.dtype))),
        "V diag(g) V^-1": lambda w, v, y: jnp.real(
            jnp.trace((v * g_eq.astype(v.dtype)[None, :]) @ jnp.conj(y).T @ c.astype(v.dtype))
        ),
    }
    for name, loss in good.items():
        f = through(loss)
        g = _grad(f, a)
        fd = float(central_fd(f, a, e, h=1e-4))
        assert abs(_directional(g, e) - fd) <= 1e-6 * (1 + abs(fd)), (point, name, _directional(g, e), fd)
    bad = {
        "one vector": lambda w, v, y: jnp.real(jnp.sum(v[:, 0] * c[0].astype(v.dtype))),
        "|V|^2 (not invariant to S)": lambda w, v, y: jnp.sum(jnp.abs(v) ** 2 * jnp.abs(c).astype(jnp.abs(v).dtype)),
        "unequal weights": lambda w, v, y: jnp.real(w[0]),
        "f(A) rebuilt": lambda w, v, y: jnp.real(jnp.trace((v * (w**2)[None, :]) @ jnp.conj(y).T @ c.astype(v.dtype))),
        "part of the group": lambda w, v, y: jnp.real(jnp.trace(v[:, :1] @ jnp.conj(y[:, :1]).T @ c.astype(v.dtype))),
    }
    for name, loss in bad.items():
        assert np.all(np.isnan(_grad(through(loss), a))), (point, name)
        assert np.all(np.isfinite(_grad(through(loss, False), a))), (point, name)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(("random", "degenerate2", "degenerate3", "scaled_up", "scaled_down")),
    st.sampled_from(DTYPES),
    st.integers(0, 2**31 - 1),
)
def test_no_false_alarms_eig(family, dtype, seed):
    n = 4
    r = np.random.default_rng(seed)
    _, groups, w = _family_input(r, n, dtype, family)
    a = _semisimple(r, w, np.complex128 if is_complex(dtype) else np.float64).astype(dtype)
    g = jnp.asarray(1.0 + groups / n)
    c = jnp.asarray(random_matrix(r, (n, n), np.complex128))
    s = _scale(a)

    def loss(a_):
        w_, v, y = eigjax.eig(a_, left=True)
        v_g, c_ = v * g.astype(v.dtype)[None, :], c.astype(v.dtype)  # explicit: strict promotion
        return jnp.real(jnp.trace(v_g @ jnp.conj(y).T @ c_)) + jnp.real(jnp.sum((w_ / jnp.asarray(s, w_.dtype)) ** 3))

    assert np.all(np.isfinite(_grad(loss, a))), (family, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_eig_no_false_alarm_when_part_of_the_cotangent_cancels(dtype):
    """At A = c I (one group), V diag(g) V^-1 with g constant is constant: its eigenvector
    cotangent is pure rounding. Judged against its own size it failed (found by a stress
    run); the guard's scale is the whole cotangent (eigjax._guard, 'Tolerances')."""
    r = rng(15)
    a = _semisimple(r, [0.3, 0.3, 0.3], dtype).astype(dtype)
    c = jnp.asarray(random_matrix(r, (3, 3), np.complex128))

    def loss(a_):
        w, v, y = eigjax.eig(a_, left=True)
        return jnp.real(jnp.trace((v * 2.0) @ jnp.conj(y).T @ c.astype(v.dtype))) + jnp.real(jnp.sum(w**3))

    g = _grad(loss, a)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, 3 * 0.09 * np.eye(3), atol=1e-4 if dtype == np.float32 else 1e-10)
