"""eigjax.eigh / eigvalsh: forward accuracy, derivatives against independent oracles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_fd_match,
    central_fd,
    hermitian_direction,
    jvp,
    random_hermitian,
    rel_err,
    rng,
    with_spectrum,
)

import eigjax

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
X64 = [np.float64, np.complex128]


def _h(x):
    return jnp.conj(jnp.swapaxes(x, -1, -2))


def _eps(dtype):
    return np.finfo(dtype).eps


# ---------------------------------------------------------------------------
# Gauge-invariant functions of the decomposition used as test quantities.


def eigenvalues(a):
    return eigjax.eigh(a).eigenvalues


def projector(i):
    def f(a):
        v = eigjax.eigh(a).eigenvectors[..., :, i : i + 1]
        return v @ _h(v)

    return f


def weighted(g):
    """``V diag(g) V^H`` for fixed weights ``g``."""

    def f(a):
        v = eigjax.eigh(a).eigenvectors
        return (v * jnp.asarray(g, v.dtype)[None, :]) @ _h(v)  # real weights in v's dtype

    return f


def abs_squared(a):
    return jnp.abs(eigjax.eigh(a).eigenvectors) ** 2


# ---------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_forward_residual_and_orthogonality(dtype, n):
    a = random_hermitian(rng(n), n, dtype, batch=(3,))
    w, v = eigjax.eigh(a)
    assert w.dtype == np.finfo(dtype).dtype and v.dtype == dtype
    assert w.shape == (3, n) and v.shape == (3, n, n)
    eps = _eps(dtype)
    norm_a = np.linalg.norm(a.astype(np.complex128), ord=2, axis=(-2, -1))
    resid = np.linalg.norm(np.asarray(a @ v - v * w[..., None, :].astype(v.dtype)), ord=2, axis=(-2, -1))
    orth = np.linalg.norm(np.asarray(_h(v) @ v) - np.eye(n), ord=2, axis=(-2, -1))
    assert np.all(resid <= 10 * n * eps * norm_a), resid / norm_a
    assert np.all(orth <= 10 * n * eps), orth
    np.testing.assert_array_equal(np.asarray(w), np.sort(np.asarray(w), axis=-1))
    want = np.linalg.eigvalsh(a.astype(np.complex128))
    np.testing.assert_allclose(np.asarray(w), want, atol=20 * n * eps * norm_a.max())


def test_eigvalsh_equals_eigh_eigenvalues():
    # eigvalsh's forward computes no eigenvectors (another LAPACK path): equal to rounding
    a = random_hermitian(rng(1), 6, np.complex128, batch=(2,))
    w = eigjax.eigh(a).eigenvalues
    np.testing.assert_allclose(eigjax.eigvalsh(a), w, rtol=0, atol=4 * 6 * _eps(np.float64) * float(np.max(np.abs(w))))


def test_symmetrize_uses_hermitian_part():
    r = rng(2)
    a = r.standard_normal((5, 5))
    np.testing.assert_allclose(eigjax.eigh(a).eigenvalues, np.linalg.eigvalsh((a + a.T) / 2), rtol=1e-12, atol=1e-12)
    # symmetrize=False reads the lower triangle only, like LAPACK.
    low = np.tril(a) + np.tril(a, -1).T
    np.testing.assert_allclose(
        eigjax.eigh(a, symmetrize=False).eigenvalues, np.linalg.eigvalsh(low), rtol=1e-12, atol=1e-12
    )


# ---------------------------------------------------------------------------
# First derivatives against finite differences (non-degenerate inputs)


@pytest.mark.parametrize("dtype", X64)
@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_jvp_matches_finite_differences(dtype, n):
    r = rng(10 + n)
    a = random_hermitian(r, n, dtype)
    da = hermitian_direction(r, (n, n), dtype)
    g = r.standard_normal(n)
    assert_fd_match(eigenvalues, a, da)
    assert_fd_match(projector(n // 2), a, da)
    assert_fd_match(weighted(g), a, da)
    assert_fd_match(abs_squared, a, da)
    assert_fd_match(eigjax.eigvalsh, a, da)


@pytest.mark.parametrize("dtype", X64)
def test_jvp_matches_finite_differences_batched(dtype):
    r = rng(3)
    a = random_hermitian(r, 5, dtype, batch=(2, 3))
    da = hermitian_direction(r, (2, 3, 5, 5), dtype)
    assert_fd_match(eigenvalues, a, da)
    assert_fd_match(projector(1), a, da)
    assert_fd_match(abs_squared, a, da)


def test_grad_is_hermitian_and_matches_fd():
    r = rng(4)
    a = random_hermitian(r, 5, np.float64)
    c = r.standard_normal((5, 5))
    loss = lambda a: jnp.sum(c * projector(2)(a)) + jnp.sum(eigenvalues(a) ** 3)
    g = np.asarray(jax.grad(loss)(a))
    np.testing.assert_allclose(g, g.T, atol=1e-14)
    da = hermitian_direction(r, (5, 5))
    np.testing.assert_allclose(np.sum(g * da), central_fd(loss, a, da), rtol=1e-8)


def test_complex_grad_is_hermitian():
    r = rng(5)
    a = random_hermitian(r, 4, np.complex128)
    loss = lambda a: jnp.sum(eigenvalues(a) ** 2) + jnp.real(projector(0)(a)[0, 1])
    g = np.asarray(jax.grad(loss)(a))
    np.testing.assert_allclose(g, g.conj().T, atol=1e-14)


# ---------------------------------------------------------------------------
# Independent oracle: implicit differentiation of A V - V diag(w) = 0, V^H V = I.


def implicit_oracle(a, da):
    """Solve the linearised eigen-equations densely for (dw, dV).

    Unknowns: dV (n x n) and real dw (n). Equations (real-ified):
      A dV - dV diag(w) - V diag(dw) = -dA V            (eigen-equation)
      V^H dV + dV^H V = 0                                (orthonormality)
      Im diag(V^H dV) = 0                                (phase gauge, complex only)
    Solved by least squares; the system has full column rank for a simple spectrum.
    """
    a = np.asarray(a, np.complex128)
    da = np.asarray(da, np.complex128)
    n = a.shape[-1]
    w, v = np.linalg.eigh(a)
    cplx = np.iscomplexobj(a) and np.any(np.imag(a) != 0)
    nv = n * n
    # Parameterise dV = X (+ i Y); unknown vector = [X.ravel(), (Y.ravel()), dw].
    n_unk = (2 * nv if cplx else nv) + n
    cols = []
    for k in range(n_unk):
        e = np.zeros(n_unk)
        e[k] = 1.0
        x = e[:nv].reshape(n, n)
        y = e[nv : 2 * nv].reshape(n, n) if cplx else 0.0
        dw = e[-n:]
        dv = x + 1j * y
        eq1 = a @ dv - dv * w - v * dw
        m = v.conj().T @ dv
        eq2 = m + m.conj().T
        parts = [eq1.real.ravel(), eq1.imag.ravel(), eq2.real.ravel(), eq2.imag.ravel()]
        if cplx:
            parts.append(np.diag(m).imag)
        cols.append(np.concatenate(parts))
    mat = np.stack(cols, axis=1)
    rhs1 = -(da @ v)
    zeros = np.zeros(nv)
    parts = [rhs1.real.ravel(), rhs1.imag.ravel(), zeros, zeros]
    if cplx:
        parts.append(np.zeros(n))
    sol, *_ = np.linalg.lstsq(mat, np.concatenate(parts), rcond=None)
    dv = sol[:nv].reshape(n, n) + (1j * sol[nv : 2 * nv].reshape(n, n) if cplx else 0)
    return sol[-n:], dv, v


@pytest.mark.parametrize("dtype", X64)
@pytest.mark.parametrize("n", [2, 4, 7])
def test_jvp_matches_implicit_differentiation(dtype, n):
    r = rng(20 + n)
    a = random_hermitian(r, n, dtype)
    da = hermitian_direction(r, (n, n), dtype)
    dw_o, dv_o, v_o = implicit_oracle(a, da)
    (w, v), (dw, dv) = jax.jvp(eigjax.eigh, (jnp.asarray(a),), (jnp.asarray(da),))
    np.testing.assert_allclose(dw, dw_o, rtol=1e-9, atol=1e-10)
    # Both are in the same gauge (zero diagonal of V^H dV); align eigenvector phases.
    phase = np.sum(np.conj(v_o) * np.asarray(v), axis=0)
    phase = phase / np.abs(phase)
    np.testing.assert_allclose(np.asarray(dv), dv_o * phase, rtol=1e-8, atol=1e-9)


# ---------------------------------------------------------------------------
# Exactly degenerate inputs


def degenerate_cases():
    r = rng(7)
    return {
        "1123": (with_spectrum(r, [1.0, 1.0, 2.0, 3.0]), [0, 1]),
        "identity": (np.eye(4), [0, 1, 2, 3]),
        "triple": (with_spectrum(r, [1.0, 2.0, 2.0, 2.0, 3.0]), [1, 2, 3]),
    }


def invariant_losses(group, c, spectrum):
    """Losses invariant to the basis inside every degenerate eigenspace."""
    group = np.asarray(group)

    def group_sum(a):
        return jnp.sum(eigjax.eigh(a).eigenvalues[..., group])

    def sum_v_squared(a):
        return jnp.sum(eigjax.eigh(a).eigenvectors ** 2)

    def projector_trace(a):
        v = eigjax.eigh(a).eigenvectors[..., :, group]
        return jnp.trace((v @ _h(v)) @ jnp.asarray(c, v.dtype))  # float64 c in v's dtype

    def weights_and_symmetric_function(a):
        # trace(C V diag(g) V^H) with fixed weights g equal on each degenerate group,
        # plus a symmetric function of all eigenvalues.
        # (Not covered by the rule: V diag(f(w)) V^H = f(A) with f' varying, whose
        # derivative needs the divided differences of eigjax.matrix_function.)
        w, v = eigjax.eigh(a)
        g = jnp.asarray(np.asarray(spectrum) ** 2, v.dtype)[None, :]  # float64 data in v's dtype
        return jnp.real(jnp.trace(jnp.asarray(c, v.dtype) @ ((v * g) @ _h(v)))) + jnp.sum(jnp.sin(w))

    return {
        "group_sum": group_sum,
        "sum_v_squared": sum_v_squared,
        "projector_trace": projector_trace,
        "weights_and_symmetric_function": weights_and_symmetric_function,
    }


@pytest.mark.parametrize("case", ["1123", "identity", "triple"])
def test_degenerate_gradients_finite_and_match_fd(case):
    a, group = degenerate_cases()[case]
    n = a.shape[-1]
    r = rng(8)
    c = r.standard_normal((n, n))
    c = c + c.T
    spectrum = np.round(np.linalg.eigvalsh(a), 6)
    for name, loss in invariant_losses(group, c, spectrum).items():
        g64 = np.asarray(jax.grad(loss)(a))
        assert np.all(np.isfinite(g64)), name
        for k in range(3):
            da = hermitian_direction(rng(100 + k), (n, n))
            fd = float(central_fd(loss, a, da, h=1e-3))
            got = float(np.sum(g64 * da))
            assert abs(got - fd) <= 1e-7 * max(1.0, abs(fd)), (name, got, fd)
        # float32: finite, and the float64 gradient to 1e-3 relative.
        g32 = np.asarray(jax.grad(loss)(jnp.asarray(a, jnp.float32)))
        assert g32.dtype == np.float32
        assert np.all(np.isfinite(g32)), name
        scale = max(np.linalg.norm(g64), 1.0)
        assert np.linalg.norm(g32 - g64) <= 1e-3 * scale, (name, np.linalg.norm(g32 - g64))


@pytest.mark.parametrize("case", ["1123", "identity", "triple"])
def test_jnp_linalg_eigh_is_nan_on_degenerate_inputs(case):
    """Reference behaviour of the built-in: if JAX fixes this, we want to know."""
    a, group = degenerate_cases()[case]
    n = a.shape[-1]
    c = rng(8).standard_normal((n, n))
    c = c + c.T

    def projector_trace(eigh):
        def loss(a):
            v = eigh(a).eigenvectors[:, np.asarray(group)]
            return jnp.trace(v @ v.T @ c)

        return loss

    ours = np.asarray(jax.grad(projector_trace(eigjax.eigh))(jnp.asarray(a)))
    theirs = np.asarray(jax.grad(projector_trace(jnp.linalg.eigh))(jnp.asarray(a)))
    assert np.all(np.isfinite(ours))
    # NaN where the computed eigenvalues are exactly equal (the identity), and
    # otherwise a wrong finite number from 1/(rounding error): not the gradient
    # (ours is, see test_degenerate_gradients_finite_and_match_fd).
    bad = not np.all(np.isfinite(theirs)) or np.linalg.norm(theirs - ours) > 1e-3 * max(1, np.linalg.norm(ours))
    assert bad, "jnp.linalg.eigh now differentiates this degenerate input correctly"


def test_degenerate_projector_matches_resolvent_formula():
    """Peer formula (Kato): dP_S = -(P_S dA R + R dA P_S), R = sum_{j not in S} v_j v_j^H/(w_j - l)."""
    a, group = degenerate_cases()["1123"]
    da = hermitian_direction(rng(9), (4, 4))
    w, v = np.linalg.eigh(a)
    ps = v[:, group] @ v[:, group].T
    rest = [j for j in range(4) if j not in group]
    res = sum(np.outer(v[:, j], v[:, j]) / (w[j] - 1.0) for j in rest)
    want = -(ps @ da @ res + res @ da @ ps)
    f = lambda a: (lambda v: v @ v.T)(eigjax.eigh(a).eigenvectors[:, group])
    np.testing.assert_allclose(jvp(f, a, da), want, atol=1e-12)


def test_explicit_tolerance_and_broadening():
    r = rng(11)
    # A close but well-separated pair (gap 1e-3): the default tolerance must not cut it.
    a = with_spectrum(r, [0.0, 1.0, 1.001, 2.0])
    da = hermitian_direction(r, (4, 4))
    assert_fd_match(projector(1), a, da, rtol=1e-6, h=1e-6)
    # An explicit tolerance larger than the gap treats the pair as degenerate:
    # the rotation inside the pair disappears from dV, the group projector stays exact.
    f = lambda a: eigjax.eigh(a, degenerate_tol=1e-2)
    (w, v), (dw, dv) = jax.jvp(f, (jnp.asarray(a),), (jnp.asarray(da),))
    m = np.asarray(v.T @ dv)
    assert abs(m[1, 2]) < 1e-14 and abs(m[2, 1]) < 1e-14 and abs(m[0, 1]) > 1e-3
    group_proj = lambda a: (lambda v: v @ v.T)(eigjax.eigh(a, degenerate_tol=1e-2).eigenvectors[:, 1:3])
    assert_fd_match(group_proj, a, da, rtol=1e-6, h=1e-6)
    # Lorentzian broadening: F_ij = d / (d^2 + eps), checked entry by entry.
    eps = 1e-4
    (w, v), (dw, dv) = jax.jvp(lambda a: eigjax.eigh(a, broadening=eps), (jnp.asarray(a),), (jnp.asarray(da),))
    w, v = np.asarray(w), np.asarray(v)
    d = w[None, :] - w[:, None]
    p = v.T @ da @ v
    np.testing.assert_allclose(np.asarray(dv), v @ (d / (d**2 + eps) * p), atol=1e-10)
    # ... finite on an exactly degenerate input, and -> the exact rule as eps -> 0.
    a0, _ = degenerate_cases()["1123"]
    assert np.all(np.isfinite(jax.jacfwd(lambda a: eigjax.eigh(a, broadening=eps).eigenvectors)(a0)))
    exact = jvp(projector(3), a, da)
    near = jvp(lambda a: (lambda v: v @ v.T)(eigjax.eigh(a, broadening=1e-14).eigenvectors[:, 3:]), a, da)
    assert rel_err(near, exact) < 1e-6


# ---------------------------------------------------------------------------
# Agreement with jnp.linalg.eigh where it is defined


@pytest.mark.parametrize("dtype", X64)
def test_jvp_equals_jnp_linalg_eigh_on_nondegenerate(dtype):
    r = rng(12)
    a = random_hermitian(r, 6, dtype, batch=(2,))
    da = hermitian_direction(r, (2, 6, 6), dtype)
    (w0, v0), (dw0, dv0) = jax.jvp(jnp.linalg.eigh, (jnp.asarray(a),), (jnp.asarray(da),))
    (w1, v1), (dw1, dv1) = jax.jvp(eigjax.eigh, (jnp.asarray(a),), (jnp.asarray(da),))
    np.testing.assert_allclose(w1, w0, atol=1e-12)
    # Eigenvectors are defined up to sign, and eigjax's solver for small real matrices
    # (the native Jacobi kernel) picks other signs than LAPACK: align the columns (a
    # flipped eigenvector has the flipped derivative).
    if not np.iscomplexobj(a):
        s = np.sign(np.sum(np.asarray(v0) * np.asarray(v1), axis=-2, keepdims=True))
        v1, dv1 = v1 * s, dv1 * s
    np.testing.assert_allclose(v1, v0, atol=1e-12)
    np.testing.assert_allclose(dw1, dw0, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dv1, dv0, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# Second derivatives


def _hessian_check(loss, a, r, rtol=1e-6):
    n = a.shape[-1]
    h = jax.hessian(loss)(jnp.asarray(a))
    assert np.all(np.isfinite(np.asarray(h)))
    grad = jax.grad(loss)
    for _ in range(2):
        da = hermitian_direction(r, (n, n))
        hd = np.tensordot(np.asarray(h), da, axes=2)
        fd = np.asarray(central_fd(grad, a, da, h=1e-4))
        assert rel_err(hd, fd) <= rtol, rel_err(hd, fd)
    # jacfwd(jacrev) agrees with hessian (forward-over-reverse vs the default).
    h2 = jax.jacfwd(jax.jacrev(loss))(jnp.asarray(a))
    np.testing.assert_allclose(h2, h, rtol=1e-9, atol=1e-10)


def test_hessian_of_eigenvalue_functions():
    r = rng(13)
    a = random_hermitian(r, 5)
    _hessian_check(lambda a: eigjax.eigh(a).eigenvalues[-1], a, r)
    _hessian_check(lambda a: jnp.sum(jnp.sin(eigjax.eigvalsh(a))), a, r)


def test_hessian_of_invariant_eigenvector_functions():
    r = rng(14)
    a = random_hermitian(r, 5)
    c = r.standard_normal((5, 5))
    _hessian_check(lambda a: jnp.sum(c * projector(2)(a)), a, r)
    _hessian_check(lambda a: jnp.sum(abs_squared(a) * c), a, r)


# ---------------------------------------------------------------------------
# Transformations and batching


def test_vmap_jit_batch_equal_python_loop():
    r = rng(15)
    a = random_hermitian(r, 4, np.float64, batch=(3,))
    c = r.standard_normal((4, 4))
    loss = lambda a: jnp.sum(c * projector(1)(a)) + jnp.sum(eigvalsh_cubed(a))
    loop_w = np.stack([np.asarray(eigjax.eigh(x).eigenvalues) for x in a])
    loop_g = np.stack([np.asarray(jax.grad(loss)(x)) for x in a])
    np.testing.assert_allclose(eigjax.eigh(a).eigenvalues, loop_w, atol=1e-13)
    np.testing.assert_allclose(jax.vmap(eigjax.eigvalsh)(a), loop_w, atol=1e-13)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(loss)))(a), loop_g, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(jax.grad(loss))(a), loop_g, atol=1e-12)
    # Batch dimensions without vmap: grad of a sum over the batch.
    g_batch = jax.grad(lambda a: jnp.sum(jax.vmap(loss)(a)))(a)
    np.testing.assert_allclose(g_batch, loop_g, atol=1e-12)
    # jvp, jacfwd and jacrev agree with each other.
    da = hermitian_direction(r, (4, 4))
    jf = jax.jacfwd(loss)(a[0])
    jr = jax.jacrev(loss)(a[0])
    np.testing.assert_allclose(jf, jr, atol=1e-12)
    np.testing.assert_allclose(np.sum(jf * da), jvp(loss, a[0], da), atol=1e-12)


def eigvalsh_cubed(a):
    return eigjax.eigvalsh(a) ** 3


# ---------------------------------------------------------------------------
# Seed examples (README)


def test_seed_example_1_grad_of_sum_of_eigenvalues_is_identity():
    a = jnp.array([[2.0, 1.0], [1.0, 2.0]])
    g = jax.grad(lambda a: jnp.sum(eigjax.eigh(a).eigenvalues))(a)
    np.testing.assert_allclose(g, np.eye(2), atol=1e-14)
    g32 = jax.grad(lambda a: jnp.sum(eigjax.eigh(a).eigenvalues))(a.astype(jnp.float32))
    np.testing.assert_allclose(g32, np.eye(2), atol=1e-6)


def test_seed_example_2_eigvalsh_plus_ridge():
    a = jnp.array([[2.0, 1.0], [1.0, 2.0]])
    loss = lambda a: jnp.sum(eigjax.eigvalsh(a)) + 0.1 * jnp.sum(a**2) / 2
    # d/dA [trace(A) + 0.05 ||A||_F^2] = I + 0.1 A.
    np.testing.assert_allclose(jax.grad(loss)(a), np.eye(2) + 0.1 * np.asarray(a), atol=1e-14)


# ---------------------------------------------------------------------------
# Bad input


BAD_SHAPES = [
    (np.ones(3), "at least 2 dimensions"),
    (np.ones((2, 3)), "square"),
    (np.ones((4, 2, 3)), "square"),
]


@pytest.mark.parametrize("fn", [eigjax.eigh, eigjax.eigvalsh])
@pytest.mark.parametrize("bad,msg", BAD_SHAPES)
def test_bad_shapes_raise_at_trace_time(fn, bad, msg):
    with pytest.raises(ValueError, match=msg) as info:
        fn(bad)
    assert "`a`" in str(info.value) and str(tuple(bad.shape)) in str(info.value)
    with pytest.raises(ValueError, match=msg):
        jax.jit(fn)(bad)


@pytest.mark.parametrize("fn", [eigjax.eigh, eigjax.eigvalsh])
def test_non_arrays_and_bad_dtypes_raise(fn):
    with pytest.raises(TypeError, match="must be a JAX or NumPy array"):
        fn([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(TypeError, match="must be a JAX or NumPy array"):
        fn("abc")
    with pytest.raises(TypeError, match="numeric dtype"):
        fn(np.array([["a", "b"], ["c", "d"]]))


def test_integer_and_bool_input_is_promoted():
    w = eigjax.eigh(np.array([[2, 1], [1, 2]])).eigenvalues
    assert jnp.issubdtype(w.dtype, jnp.floating)
    np.testing.assert_allclose(w, [1.0, 3.0])
    assert jnp.issubdtype(eigjax.eigvalsh(np.eye(3, dtype=bool)).dtype, jnp.floating)


def test_bad_options_raise():
    a = np.eye(2)
    with pytest.raises(ValueError, match="degenerate_tol"):
        eigjax.eigh(a, degenerate_tol=-1.0)
    with pytest.raises(TypeError, match="broadening"):
        eigjax.eigh(a, broadening="big")
    with pytest.raises(ValueError, match="broadening"):
        eigjax.eigh(a, broadening=0.0)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_input_gives_nan_not_finite_garbage(bad_value):
    """Every output of a matrix with a NaN or inf entry is NaN (LAPACK's own output for
    such input is undefined: finite eigenvalues for a NaN on the diagonal, identity
    eigenvectors for an inf), on the diagonal or off it, under jit, in gradients."""
    for where in [(0, 0), (1, 2), (3, 3)]:
        a = random_hermitian(rng(16), 4)
        a[where] = a[where[::-1]] = bad_value
        w, v = jax.jit(eigjax.eigh)(a)
        assert np.all(np.isnan(np.asarray(w))) and np.all(np.isnan(np.asarray(v))), where
        assert np.all(np.isnan(np.asarray(eigjax.eigvalsh(a)))), where
        g = jax.grad(lambda a: jnp.sum(eigjax.eigvalsh(a) ** 2))(a)
        assert np.all(np.isnan(np.asarray(g))), where
    # the generalized problem: an inf in b reduces to a finite congruent matrix (1/inf = 0)
    b = np.array([[np.inf, 1.0], [1.0, 2.0]])
    w, v = eigjax.eigh_generalized(np.eye(2), b)
    assert np.all(np.isnan(np.asarray(w))) and np.all(np.isnan(np.asarray(v)))


def test_empty_and_zero_matrices():
    w, v = eigjax.eigh(np.zeros((0, 0)))
    assert w.shape == (0,) and v.shape == (0, 0)
    z = np.zeros((3, 3))
    g = jax.grad(lambda a: jnp.sum(eigjax.eigh(a).eigenvectors ** 2) + jnp.sum(eigjax.eigvalsh(a)))(z)
    np.testing.assert_allclose(g, np.eye(3), atol=1e-15)


def test_second_derivatives_at_repeated_eigenvalues_are_nan_not_wrong():
    """At a cut (repeated) pair the rule's second derivative would be a wrong finite
    number (the in-group coupling is gone: hessian of sum(w**2) = tr(A^2) at I came out
    0 instead of 2 E); it is NaN. First derivatives there stay exact, distinct
    eigenvalues keep exact second derivatives, and the spectral-function route
    (matrix_function) gives the exact second derivative at the same point."""
    r = rng(31)
    e = jnp.asarray(hermitian_direction(r, (4, 4)))
    c = jnp.asarray(hermitian_direction(r, (4, 4)))
    points = {"identity": np.eye(4), "pair": with_spectrum(r, [1.0, 1.0, 2.0, 3.0])}

    def group_projector(a):  # one call of eigh: the guard tests each call's cotangent alone
        v = eigjax.eigh(a).eigenvectors[:, :2]
        return jnp.trace(v @ v.T @ c)

    losses = {"sum w^2": lambda a: jnp.sum(eigjax.eigvalsh(a) ** 2), "group projector": group_projector}
    # at the identity the first two eigenvectors split the 4-fold group: no derivative,
    # NaN in reverse mode (it was a finite, wrong number before the degenerate guard)
    assert np.all(np.isnan(np.asarray(jax.grad(group_projector)(jnp.eye(4)))))
    for pname, a in points.items():
        a = jnp.asarray(a)
        for lname, loss in losses.items():
            if (pname, lname) == ("identity", "group projector"):
                continue
            g = jax.grad(loss)(a)
            assert np.all(np.isfinite(np.asarray(g))), (pname, lname)  # first order: exact
            hv = jax.jvp(jax.grad(loss), (a,), (e,))[1]
            assert np.all(np.isnan(np.asarray(hv))), (pname, lname)
    # the exact value, through the spectral function: d^2 tr(A^2)[E, .] = 2 E
    a = jnp.eye(4)
    hv = jax.jvp(jax.grad(lambda a: jnp.trace(eigjax.matrix_function(a, lambda w: w**2))), (a,), (e,))[1]
    np.testing.assert_allclose(hv, 2 * e, atol=1e-12)
    # distinct eigenvalues: finite and equal to finite differences of the gradient
    a = jnp.asarray(with_spectrum(r, [1.0, 1.5, 2.0, 3.0]))
    loss = losses["sum w^2"]
    hv = jax.jvp(jax.grad(loss), (a,), (e,))[1]
    fd = (jax.grad(loss)(a + 1e-5 * e) - jax.grad(loss)(a - 1e-5 * e)) / 2e-5
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-8)
    # broadening makes F smooth: its second derivatives are those of the smooth rule
    hv = jax.jvp(
        jax.grad(lambda a: jnp.sum(eigjax.eigh(a, broadening=1e-3).eigenvectors[:, 0] ** 2 @ c)), (jnp.eye(4),), (e,)
    )[1]
    assert np.all(np.isfinite(np.asarray(hv)))


def test_second_derivatives_of_eig_and_generalized_at_repeated_eigenvalues_are_nan():
    """The same guard in eigjax.eig/eigvals (coincident pairs) and eigh_generalized:
    hessian of sum(w**2) = tr(A^2) at A = I was 0 / wrong, now NaN; first order exact."""
    r = rng(32)
    e = jnp.asarray(hermitian_direction(r, (3, 3)))
    a = jnp.eye(3)
    for loss in (
        lambda a: jnp.sum(jnp.real(eigjax.eigvals(a)) ** 2),
        lambda a: jnp.sum(jnp.real(eigjax.eig(a).eigenvalues) ** 2),
        lambda a: jnp.sum(eigjax.eigh_generalized(a, jnp.eye(3)).eigenvalues ** 2),
    ):
        np.testing.assert_allclose(jax.grad(loss)(a), 2 * np.eye(3), atol=1e-12)
        hv = jax.jvp(jax.grad(loss), (a,), (e,))[1]
        assert np.all(np.isnan(np.asarray(hv)))
    # distinct eigenvalues: exact
    a = jnp.asarray(with_spectrum(r, [1.0, 2.0, 3.5]))
    b = jnp.asarray(with_spectrum(r, [1.0, 1.5, 2.0]))
    for loss in (
        lambda a: jnp.sum(jnp.real(eigjax.eigvals(a)) ** 2),
        lambda a: jnp.sum(eigjax.eigh_generalized(a, b).eigenvalues ** 2),
    ):
        hv = jax.jvp(jax.grad(loss), (a,), (e,))[1]
        fd = (jax.grad(loss)(a + 1e-5 * e) - jax.grad(loss)(a - 1e-5 * e)) / 2e-5
        np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-7)


def test_options_are_checked_not_coerced():
    """Truthy strings were taken as True, float16 reached a raw XLA error, and
    eigh_partial accepted negative counts, float seeds and ignored params."""
    a = jnp.eye(3)
    d = jnp.diag(jnp.arange(1.0, 9.0))
    for call in (
        lambda: eigjax.eigh(a, symmetrize="no"),
        lambda: eigjax.eigvalsh(a, symmetrize=1),
        lambda: eigjax.eig(a, left="yes"),
        lambda: eigjax.spectral_report(a, hermitian="x"),
        lambda: eigjax.check_grad(jnp.sum, a, hermitian="x"),
        lambda: eigjax.eigh_partial(d, 2, seed=1.5),
        lambda: eigjax.eigh_partial(lambda p, x: x, 2, n=3.7),
    ):
        with pytest.raises(TypeError, match="option `"):
            call()
    for call in (
        lambda: eigjax.eigh_partial(d, 2, max_restarts=-1),
        lambda: eigjax.eigh_partial(d, 2, cg_maxiter=-5),
        lambda: eigjax.eigh_partial(d, 2, params=1.0),
    ):
        with pytest.raises(ValueError, match="option `"):
            call()
    for fn in (eigjax.eigh, eigjax.eigvalsh, eigjax.eig, eigjax.eigvals, eigjax.sqrtm):
        with pytest.raises(TypeError, match="argument `a` has dtype float16"):
            fn(a.astype(jnp.float16))
    assert bool(eigjax.eigh(a, symmetrize=np.bool_(False)).eigenvalues[0] == 1.0)  # NumPy bools are fine
