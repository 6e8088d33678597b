"""Diagnostics: spectral report, check_grad, gauge-invariance check, `eigjax check`.

Oracles: inputs built with a known spectrum (exact degenerate groups), NumPy/SciPy
eigenvalue condition numbers, and a deliberately broken derivative rule.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import random_matrix, rng, with_spectrum

import eigjax
from eigjax.app._check import run_check


def _vecs(a):
    return eigjax.eigh(a).eigenvectors


# ---------------------------------------------------------------- spectral report


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
@pytest.mark.parametrize("jit", [False, True])
def test_report_finds_exact_groups(dtype, jit):
    a = jnp.asarray(with_spectrum(rng(1), [1, 1, 2, 3, 3, 3], dtype))
    f = jax.jit(eigjax.spectral_report) if jit else eigjax.spectral_report
    r = f(a)
    assert r.group.tolist() == [0, 0, 2, 3, 3, 3]
    # pairs the rule cuts: |w_i - w_j| <= 4 max(n, 8) eps max|w| (recounted here in
    # NumPy). Should a pair of the triple ever be split by more, the report warns.
    w = np.asarray(r.eigenvalues, dtype=np.float64)
    tol = 4 * 8 * np.finfo(np.dtype(dtype)).eps * np.max(np.abs(w))
    close = np.abs(w[:, None] - w[None, :]) <= tol
    assert int(r.num_degenerate_pairs) == (np.sum(close) - 6) // 2 >= 3
    assert bool(r.any_degenerate)
    resolved = np.abs(w[:, None] - w[None, :])[~close]
    assert float(r.min_resolved_gap) == pytest.approx(np.min(resolved), rel=1e-12)
    if np.sum(close) - 6 == 8:  # every pair of both groups cut
        assert float(r.min_resolved_gap) == pytest.approx(1.0, rel=1e-4)
    else:  # the report warns about the split pair inside a group
        assert "inside a group are split" in eigjax.format_spectral_report(r)
    assert float(r.min_gap) < 1e-5
    np.testing.assert_allclose(r.eigenvalues, [1, 1, 2, 3, 3, 3], atol=1e-5)
    assert r.degenerate.shape == (6, 6) and not bool(jnp.any(jnp.diagonal(r.degenerate)))


def test_report_simple_spectrum_and_user_tolerance():
    a = jnp.asarray(with_spectrum(rng(2), [0.0, 1e-9, 1.0, 2.0]))
    r = eigjax.spectral_report(a)  # 1e-9 is far above n eps max|w| = 2e-15
    assert not bool(r.any_degenerate) and r.group.tolist() == [0, 1, 2, 3]
    assert float(r.min_gap) == pytest.approx(1e-9, rel=1e-5)
    assert float(r.min_resolved_gap) == pytest.approx(1e-9, rel=1e-5)
    r = eigjax.spectral_report(a, degenerate_tol=1e-6)
    assert r.group.tolist() == [0, 0, 2, 3] and float(r.min_resolved_gap) == pytest.approx(1.0)


def test_report_batch_and_tiny_sizes():
    b = jnp.stack([jnp.asarray(with_spectrum(rng(3), [1, 1, 2])), jnp.diag(jnp.array([1.0, 2.0, 4.0]))])
    r = jax.jit(eigjax.spectral_report)(b)
    assert r.any_degenerate.tolist() == [True, False]
    assert r.group.tolist() == [[0, 0, 2], [0, 1, 2]]
    np.testing.assert_allclose(r.min_resolved_gap, [1.0, 1.0], rtol=1e-12)
    for n in (0, 1):
        r = eigjax.spectral_report(jnp.ones((n, n)))
        assert np.isinf(float(r.min_gap)) and not bool(r.any_degenerate)
    text = eigjax.format_spectral_report(eigjax.spectral_report(b))
    assert "batch shape (2,)" in text and "with a pair treated as degenerate: 1" in text


def test_report_general_condition_numbers_match_scipy():
    r = rng(4)
    x = random_matrix(r, (5, 5))
    x[0, 4] = 30.0  # make it visibly non-normal
    rep = eigjax.spectral_report(jnp.asarray(x), hermitian=False)
    w, vl, vr = scipy.linalg.eig(x, left=True, right=True)
    s = np.linalg.norm(vl, axis=0) * np.linalg.norm(vr, axis=0) / np.abs(np.sum(np.conj(vl) * vr, axis=0))
    order = np.lexsort((w.imag, w.real))
    np.testing.assert_allclose(rep.eigenvalues, w[order], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rep.condition_numbers, s[order], rtol=1e-8)
    assert float(np.max(rep.condition_numbers)) > 2.0


def test_report_general_repeated_eigenvalue():
    # A = S diag(2, 2, 5) S^{-1}: a semisimple double eigenvalue of a non-normal matrix.
    s = np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 3.0], [1.0, 0.0, 1.0]])
    a = s @ np.diag([2.0, 2.0, 5.0]) @ np.linalg.inv(s)
    rep = eigjax.spectral_report(jnp.asarray(a), hermitian=False)
    assert rep.group.tolist() == [0, 0, 2] and int(rep.num_degenerate_pairs) == 1
    assert "General spectral report" in eigjax.format_spectral_report(rep)


def test_format_report_text():
    text = eigjax.format_spectral_report(eigjax.spectral_report(jnp.asarray(with_spectrum(rng(5), [1, 1, 2, 3]))))
    assert "degenerate groups: [2] (indices 0-1)" in text
    assert "pairs treated as degenerate (F_ij = 0): 1" in text
    text = eigjax.format_spectral_report(eigjax.spectral_report(jnp.diag(jnp.array([1.0, 2.0]))))
    assert "none (every pair resolved)" in text


@pytest.mark.parametrize("jit", [False, True])
def test_bad_input_raises(jit):
    wrap = jax.jit if jit else (lambda f: f)
    with pytest.raises(ValueError, match=r"eigjax.spectral_report: argument `a` must be square"):
        wrap(eigjax.spectral_report)(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="eigjax.check_grad: option `directions`"):
        wrap(lambda a: eigjax.check_grad(eigjax.eigvalsh, a, directions=0))(jnp.eye(2))
    with pytest.raises(ValueError, match="eigjax.check_gauge_invariance: option `trials`"):
        wrap(lambda a: eigjax.check_gauge_invariance(eigjax.eigvalsh, a, trials=0))(jnp.eye(2))
    with pytest.raises(ValueError, match=r"eigjax.check_grad: argument `a` must have shape"):
        wrap(lambda a: eigjax.check_grad(jnp.sum, a))(jnp.ones(3))
    with pytest.raises(TypeError, match="eigjax.spectral_report: argument `a`"):
        eigjax.spectral_report([[1.0, 0.0], [0.0, 1.0]])


# ---------------------------------------------------------------- check_grad


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _eigvalsh_with_rule(a, bug):
    return eigjax.eigvalsh(a)


@_eigvalsh_with_rule.defjvp
def _planted_rule(bug, primals, tangents):
    (a,), (da,) = primals, tangents
    w, v = eigjax.eigh(a)
    da = (da + jnp.conj(da.T)) / 2
    if bug == "offdiag":  # forgets the off-diagonal part of dA
        da = jnp.diag(jnp.diagonal(da))
    elif bug == "scale":  # 1 % too large
        da = 1.01 * da
    return w, jnp.real(jnp.sum(jnp.conj(v) * (da @ v), axis=0))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_check_grad_passes_a_correct_rule(dtype):
    a = jnp.asarray(with_spectrum(rng(6), [0.0, 1.0, 2.5, 4.0], dtype))
    r = eigjax.check_grad(lambda x: _eigvalsh_with_rule(x, None), a)
    assert bool(r.ok), r
    assert r.rel_err.shape == (3,)
    tol = 1e-9 if dtype != np.float32 else 1e-3
    assert float(jnp.max(r.rel_err)) < tol


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bug", ["offdiag", "scale"])
def test_check_grad_catches_a_planted_wrong_rule(bug, dtype):
    a = jnp.asarray(with_spectrum(rng(7), [0.0, 1.0, 2.5, 4.0], dtype))
    r = eigjax.check_grad(lambda x: _eigvalsh_with_rule(x, bug), a)
    assert not bool(r.ok)
    assert float(jnp.min(r.rel_err)) > (5e-3 if bug == "scale" else 1e-2)


def test_check_grad_eigenvectors_general_and_jit():
    r = rng(8)
    a = jnp.asarray(with_spectrum(r, [1.0, 1.0, 2.0, 3.0]))  # projector onto the double group

    def proj(x):
        v = _vecs(x)[:, :2]
        return v @ v.T

    # a step well below the gap 1 keeps the stencil on one side of the group boundary
    res = jax.jit(lambda x: eigjax.check_grad(proj, x, directions=2))(a)
    assert bool(res.ok) and float(jnp.max(res.rel_err)) < 1e-8
    x = jnp.asarray(random_matrix(r, (4, 4), np.complex128))
    res = eigjax.check_grad(lambda m: eigjax.eigvals(m), x, hermitian=False, key=jax.random.key(3))
    assert bool(res.ok) and float(jnp.max(res.rel_err)) < 1e-8


def test_check_grad_pytree_output_and_zero_matrix():
    # a = 0 is fully degenerate: only symmetric functions of the eigenvalues are smooth
    res = eigjax.check_grad(lambda x: {"w": jnp.sum(eigjax.eigvalsh(x) ** 2), "t": jnp.trace(x)}, jnp.zeros((3, 3)))
    assert bool(res.ok) and float(res.step) == pytest.approx(np.finfo(np.float64).eps ** 0.25 / 10)


# ---------------------------------------------------------------- gauge check


def _invariant(loss, a, **kw):
    res = eigjax.check_gauge_invariance(loss, a, **kw)
    assert int(res.calls) >= 1
    return bool(res.invariant), res


DEGENERATE = [1.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_gauge_flags_single_vector_of_degenerate_eigh(dtype):
    a = jnp.asarray(with_spectrum(rng(9), DEGENERATE, dtype))
    ok, res = _invariant(lambda x: jnp.sum(jnp.real(_vecs(x)[:, 0])), a)
    assert not ok and float(res.value_change) > 1e-3
    # |V[:, 0]|^2 entries: phase-free, but still not invariant to the basis of the group
    ok, res = _invariant(lambda x: jnp.abs(_vecs(x)[:, 0]) ** 2, a)
    assert not ok


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
def test_gauge_passes_invariant_eigh_losses(dtype):
    a = jnp.asarray(with_spectrum(rng(10), DEGENERATE, dtype))

    def group_projector(x):
        v = _vecs(x)[:, :2]  # the whole degenerate group
        return v @ jnp.conj(v.T)

    def weighted(x):  # V diag(g) V^H with g equal on the group
        v = _vecs(x)
        g = jnp.array([5.0, 5.0, -1.0, 2.0], dtype=jnp.finfo(v.dtype).dtype)
        c = jnp.arange(16.0, dtype=g.dtype).reshape(4, 4)
        return jnp.sum(jnp.abs(v @ jnp.diag(g).astype(v.dtype) @ jnp.conj(v.T)) ** 2 * c)

    for loss in (
        lambda x: jnp.sum(jnp.abs(_vecs(x)) ** 2),
        group_projector,
        weighted,
        lambda x: eigjax.eigvalsh(x)[0] + eigjax.eigvalsh(x)[1],
    ):
        ok, res = _invariant(loss, a)
        assert ok, res


def test_gauge_flags_well_defined_value_with_gauge_dependent_gradient():
    a = jnp.asarray(with_spectrum(rng(11), DEGENERATE))
    c = jnp.asarray(random_matrix(rng(12), (4, 4)))
    # one eigenvalue of a degenerate pair: value fine, derivative does not exist
    ok, res = _invariant(lambda x: eigjax.eigvalsh(x)[0], a)
    assert not ok and float(res.value_change) <= float(res.value_tol)
    assert float(res.grad_change) > 1e-3

    # f(A) = V diag(w^2) V^H: f' varies, so eigh's degenerate rule is not exact for it
    def f_of_a(x):
        w, v = eigjax.eigh(x)
        return jnp.trace(v @ jnp.diag(w**2) @ v.T @ c)

    ok, res = _invariant(f_of_a, a)
    assert not ok and float(res.value_change) <= float(res.value_tol)


def test_gauge_simple_spectrum_sign_and_phase():
    a = jnp.asarray(with_spectrum(rng(13), [0.0, 1.0, 2.0]))
    assert not _invariant(lambda x: jnp.sum(_vecs(x)[:, 0]), a)[0]  # sign of v_0
    assert _invariant(lambda x: jnp.sum(_vecs(x)[:, 0] ** 2 * jnp.arange(3.0)), a)[0]
    assert not _invariant(lambda x: _vecs(x)[:, 0], a)[0]  # array output, sign-dependent


def test_gauge_eig():
    r = rng(14)
    x = jnp.asarray(random_matrix(r, (4, 4), np.complex128))
    vec = lambda m: eigjax.eig(m).eigenvectors  # noqa: E731
    ok, res = _invariant(lambda m: jnp.sum(jnp.real(vec(m))), x)
    assert not ok and float(res.value_change) > 1e-3
    assert _invariant(lambda m: jnp.sum(jnp.abs(vec(m)) ** 2), x)[0]
    assert _invariant(lambda m: jnp.sum(jnp.abs(vec(m)) ** 2 * jnp.arange(16.0).reshape(4, 4)), x)[0]
    assert _invariant(lambda m: jnp.abs(eigjax.eigvals(m)), x)[0]

    def spectral_projector(m):  # x_0 y_0^H: invariant to the scaling of v_0
        res = eigjax.eig(m, left=True)
        return res.eigenvectors[:, :1] @ jnp.conj(res.left_eigenvectors[:, :1].T)

    assert _invariant(spectral_projector, x)[0]
    # a real matrix with complex eigenvalues: sum(real(V)) depends on the phase too
    xr = jnp.asarray(random_matrix(r, (4, 4)))
    assert not _invariant(lambda m: jnp.sum(jnp.real(vec(m))), xr)[0]


def test_gauge_under_jit_and_batched():
    a = jnp.stack([jnp.asarray(with_spectrum(rng(15 + i), DEGENERATE)) for i in range(2)])
    check = jax.jit(lambda x: eigjax.check_gauge_invariance(lambda y: jnp.sum(_vecs(y)[..., :, 0]), x))
    assert not bool(check(a).invariant)
    check = jax.jit(lambda x: eigjax.check_gauge_invariance(lambda y: jnp.sum(_vecs(y) ** 2), x))
    assert bool(check(a).invariant)


def test_gauge_warns_when_nothing_is_intercepted():
    a = jnp.asarray(with_spectrum(rng(16), DEGENERATE))
    compiled = jax.jit(lambda x: jnp.sum(_vecs(x)[:, 0]))
    compiled(a)
    jax.grad(compiled)(a)  # both traces cached before the check
    with pytest.warns(UserWarning, match="nothing was tested"):
        res = eigjax.check_gauge_invariance(compiled, a)
    assert int(res.calls) == 0


def test_random_gauge_is_a_valid_decomposition_and_restores():
    from eigjax import _hooks  # the forward solvers' hook points are what is intercepted

    a = jnp.asarray(with_spectrum(rng(17), DEGENERATE, np.complex128))
    w0, v0 = eigjax.eigh(a)
    with eigjax.random_gauge(jax.random.key(5)) as calls:
        w, v = eigjax.eigh(a)
        assert _hooks.active()
    assert calls() == 1 and not _hooks.active()
    np.testing.assert_allclose(w, w0)
    np.testing.assert_allclose(a @ v, v * w[None, :].astype(v.dtype), atol=1e-12)
    np.testing.assert_allclose(jnp.conj(v.T) @ v, np.eye(4), atol=1e-12)
    # the gauge really changed: phases of every column, and a rotation inside the group
    assert float(jnp.max(jnp.abs(v - v0))) > 1e-2
    overlap = np.abs(np.asarray(jnp.conj(v0.T) @ v))
    np.testing.assert_allclose(overlap[2:, 2:], np.eye(2), atol=1e-12)  # simple: phase only
    assert overlap[0, 1] > 1e-3  # mixing inside the degenerate group
    np.testing.assert_allclose(overlap[:2, 2:], 0, atol=1e-12)


# ---------------------------------------------------------------- eigjax check


def test_run_check_named_matrix(capsys):
    assert run_check(["rosser"]) == 0
    out = capsys.readouterr().out
    assert "input: rosser, shape (8, 8), float64, Hermitian" in out
    assert "degenerate groups: [2] (indices 3-4)" in out  # the double eigenvalue 1000
    assert "FAILED" not in out and out.count("-> ok") == 2


def test_run_check_npy_general_and_errors(tmp_path, capsys):
    path = tmp_path / "m.npy"
    np.save(path, random_matrix(rng(18), (2, 4, 4)))
    assert run_check([str(path)]) == 0
    out = capsys.readouterr().out
    assert "general" in out and "batch shape (2,)" in out and "condition numbers" in out
    assert run_check(["no_such_matrix"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert run_check(["wilkinson", "-n", "4"]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_check(["second_difference", "-n", "5", "--no-grad"]) == 0
    assert "derivative checks" not in capsys.readouterr().out


def test_check_grad_catches_a_wrong_rule_at_any_input_scale():
    """A JVP rule off by 50 % fails at input scale 1e-6 as at scale 1 (the absolute
    floor was fixed at eps^0.5 1e-3, so tiny losses always passed)."""
    bad = jax.custom_jvp(lambda a: jnp.sum(a**2))
    bad.defjvp(lambda p, t: (jnp.sum(p[0] ** 2), 3 * jnp.sum(p[0] * t[0])))
    good = lambda a: jnp.sum(a**2)  # noqa: E731
    for s in (1.0, 1e-6, 1e6):
        a = s * jnp.array([[2.0, 1.0], [1.0, 3.0]])
        assert not bool(eigjax.check_grad(bad, a).ok), s
        assert bool(eigjax.check_grad(good, a).ok), s


def test_gauge_flags_one_eigenvalue_of_a_group_through_eigh_and_covers_generalized():
    """eigh(a).eigenvalues[0] of a degenerate group has a gauge-dependent gradient (as
    through eigvalsh); it passed when the interception sat on the custom_jvp function
    and the rule kept the solver's gauge. eigh_generalized is intercepted too."""
    a = jnp.asarray(with_spectrum(rng(18), DEGENERATE))
    ok, res = _invariant(lambda x: eigjax.eigh(x).eigenvalues[0], a)
    assert not ok and float(res.grad_change) > 1e-3
    ok, _ = _invariant(lambda x: eigjax.eigh(x).eigenvalues[0] + eigjax.eigh(x).eigenvalues[1], a)
    assert ok
    b = jnp.eye(4)
    ok, _ = _invariant(lambda x: jnp.sum(eigjax.eigh_generalized(x, b).eigenvectors[:, 0]), a)
    assert not ok
    ok, _ = _invariant(lambda x: jnp.sum(eigjax.eigh_generalized(x, b).eigenvectors ** 2), a)
    assert ok


def test_clear_errors_for_integer_losses_and_non_elementwise_f():
    with pytest.raises(TypeError, match="must return floating or complex values"):
        eigjax.check_grad(lambda x: jnp.argmax(x), jnp.eye(3))
    with pytest.raises(ValueError, match="`f` must be elementwise"):
        eigjax.matrix_function(jnp.eye(3), jnp.sum)
    text = eigjax.format_spectral_report(
        eigjax.spectral_report(jnp.stack([jnp.eye(2), jnp.diag(jnp.array([1.0, 2.0]))]))
    )
    assert "details of matrix (0,)" in text


def test_gauge_check_intercepts_eigh_partial():
    a = jnp.asarray(with_spectrum(rng(19), np.r_[1.0, 1.0, np.linspace(2.0, 9.0, 18)]))
    part = lambda x: eigjax.eigh_partial(x, 3)  # noqa: E731
    ok, res = _invariant(lambda x: jnp.sum(part(x).eigenvectors[:, 0]), a)
    assert not ok and float(res.value_change) > 1e-3
    ok, res = _invariant(lambda x: part(x).eigenvalues[0], a)  # value fine, gradient not
    assert not ok and float(res.grad_change) > 1e-3
    ok, _ = _invariant(lambda x: jnp.sum(part(x).eigenvectors[:, :2] ** 2 * jnp.arange(20.0)[:, None]), a)
    assert ok


# ---------------------------------------------------------------- issue 19: eigjax check


@pytest.mark.parametrize(
    "matrix, reason",
    [
        (np.array([[1.0, 1.0], [0.0, 1.0]]), "numerically defective"),  # a Jordan block
        (np.array([[1.0, np.nan], [np.nan, 2.0]]), "NaN or inf entries"),
        (np.array([[[1.0, 0.0], [0.0, 2.0]], [[np.inf, 0.0], [0.0, 1.0]]]), "1 of 2 matrices have NaN or inf"),
    ],
    ids=["jordan", "nan", "batch_with_inf"],
)
def test_check_skips_with_a_reason_where_no_derivative_exists(matrix, reason, tmp_path, capsys):
    """Item 18: a Jordan block or NaN input printed FAILED and exit 1; the docs say skipped with a reason."""
    path = tmp_path / "m.npy"
    np.save(path, matrix)
    assert run_check([str(path)]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and "derivative checks: skipped" in out and reason in out, out


def test_check_on_a_multi_array_npz_names_the_arrays(tmp_path, capsys):
    """Item 14: a two-array .npz said `got dtype <U1` (the array of its names)."""
    path = tmp_path / "two.npz"
    np.savez(path, first=np.eye(2), second=np.eye(3))
    assert run_check([str(path)]) == 2
    err = capsys.readouterr().err
    assert "two.npz" in err and "2 arrays (first, second)" in err and "<U1" not in err, err
    np.savez(tmp_path / "one.npz", only=np.diag([1.0, 2.0, 4.0]))
    assert run_check([str(tmp_path / "one.npz"), "--no-grad"]) == 0  # one array: used


def test_format_report_of_an_empty_batch_of_empty_matrices():
    """Item 14: shape (2, 0, 0) raised `cannot reshape array of size 0`."""
    text = eigjax.format_spectral_report(eigjax.spectral_report(jnp.zeros((2, 0, 0))))
    assert "n = 0, batch shape (2,)" in text and "matrices: 2" in text


def test_check_piped_into_a_closed_reader_ends_quietly():
    """Item 18: `eigjax check rosser | head -1` printed a BrokenPipeError traceback."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "eigjax", "check", "second_difference", "-n", "4", "--no-grad"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


@pytest.mark.parametrize("dtype,scales", [(np.float32, (1.0, 1e5, 1e20, 1e-20)), (np.float64, (1e13, 1e200, 1e-200))])
def test_gauge_check_is_scale_free(dtype, scales):
    """The tolerances are in the loss's units: an absolute floor in units of ``a`` passed a
    non-invariant eigenvector loss from ||a|| ~ 1e5 (float32) / 1e13 (float64) on, and the
    unscaled norms overflowed at 1e20 (float32; found by an audit)."""
    for s in scales:
        a = jnp.asarray(np.diag([1.0, 1.0, 2.0]) * s, dtype)
        vecs = lambda m: eigjax.eigh(m).eigenvectors  # noqa: E731
        assert not _invariant(lambda m: jnp.sum(vecs(m)[:, 0]), a)[0], s
        assert not _invariant(lambda m: eigjax.eigh(m).eigenvalues[0], a)[0], s
        assert _invariant(lambda m: jnp.sum(eigjax.eigh(m).eigenvalues[:2]), a)[0], s
        weights = jnp.arange(9.0, dtype=dtype).reshape(3, 3)
        assert _invariant(lambda m: jnp.sum(vecs(m)[:, :2] @ vecs(m)[:, :2].T * weights), a)[0], s


def test_grad_check_and_report_at_float32_scale_extremes():
    """Scaled norms (found by an audit): at ||a|| ~ 1e20 (float32) check_grad's errors were
    NaN and spectral_report's general tolerance inf (3 degenerate pairs reported for
    distinct eigenvalues); at 1e-20 the direction did not shrink with ``a`` (rel_err 0.99)
    and the tolerance was 0 (an exact double eigenvalue not reported)."""
    a = jnp.asarray([[2.0, 1.0], [1.0, 3.0]], jnp.float32)
    g = jnp.asarray([[1.0, 2.0, 0.0], [0.5, 3.0, 1.0], [0.0, 1.0, 5.0]], jnp.float32)
    s = np.array([[1.0, 0.3, 0.1], [0.2, 1.0, 0.4], [0.1, 0.2, 1.0]])
    double = jnp.asarray(s @ np.diag([1.0, 1.0, 2.0]) @ np.linalg.inv(s), jnp.float32)
    for scale in (1e20, 1e-20):
        r = eigjax.check_grad(eigjax.eigvalsh, a * scale)
        assert bool(r.ok) and np.all(np.isfinite(np.asarray(r.rel_err))), scale
        assert int(eigjax.spectral_report(g * scale, hermitian=False).num_degenerate_pairs) == 0, scale
        assert int(eigjax.spectral_report(double * scale, hermitian=False).num_degenerate_pairs) == 1, scale


def test_grad_check_default_step_passes_eigenvector_rules_in_float32():
    """The default step resolves eigengaps at n = 16 in float32: eps^(1/4) (0.019 ||a||)
    crossed them and flagged the correct eigenvector rule in 5 of 6 matrices."""
    for seed in range(3):
        x = rng(40 + seed).standard_normal((16, 16))
        a = jnp.asarray((x + x.T) / 2, jnp.float32)
        assert bool(eigjax.check_grad(lambda m: eigjax.eigh(m).eigenvectors ** 2, a).ok), seed
