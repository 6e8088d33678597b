"""General (non-Hermitian) eigendecomposition with derivatives that need no opt-in.

Maths (Giles 2008, "An extended collection of matrix derivative results", sec. 3.1;
Magnus 1985; docs/derivatives.md, "General matrices"). For a diagonalisable
``A = V diag(w) V^{-1}`` and a tangent ``dA`` let ``P = V^{-1} dA V``. Then

    dw = diag(P),        dV = V (F o P + diag(c)),

with ``F_ij = 1/(w_j - w_i)`` (zero on the diagonal and on coincident pairs, see
below). ``P`` is one LU solve ``V X = dA V`` (JAX's custom_linear_solve: the LU is
reused by the transposed solve of reverse mode). The rows of ``V^{-1}`` are the left
eigenvectors ``y_i^H`` (``y_i^H x_i = 1``); their norms, the condition numbers below,
are *estimated* from 16 random probes through the same LU (``O(n^2)``). Forming
``V^{-1}`` for them, as an earlier version did, cost one more ``n x n`` product than
JAX's rule (BENCHMARKS.md, "eig vs jnp.linalg.eig").

The eigenvalue equation fixes ``dv_j`` only up to ``c_j v_j``; ``c_j`` is set
by the **normalisation** of the eigenvectors, which is a contract of this module:

* every eigenvector has unit 2-norm, and
* its largest-magnitude component ``k_j = argmax_i |V_ij|`` (the first, on ties) is
  real and positive.

This is LAPACK ``geev``'s rule (unit norm, largest component real) with the sign
also fixed, so ``V`` is a deterministic, locally smooth function of ``A`` wherever
the eigenvalues are simple and the argmax is unique; real eigenvectors of real
matrices stay real. Differentiating the two real constraints ``Re(v^H dv) = 0`` and
``Im(dv_k) = 0`` with ``u = V (F o P)`` gives

    c_j = -Re(v_j^H u_j) - i Im(u_{k_j j}) / V_{k_j j}.

(``jax.lax.linalg.eig(..., enable_eigvec_derivs=True)`` uses the same constraints.)
The gauge is a convention: a loss that depends on it (on the phase of ``v``) is
ill-defined; :func:`eig_gauge_check` measures that dependence.

Eigenvalue-only derivatives ``dw_i = y_i^H dA x_i / (y_i^H x_i)`` use the rows of
``V^{-1}`` as the left eigenvectors: ``dw = diag(V^{-1} (dA V))``, no eigenvector
derivative and no eigengap, so no opt-in flag is needed.

**Coincident eigenvalues.** A computed eigenvalue of a non-normal matrix carries an
error ``~ eps ||A|| s_i`` with ``s_i = ||x_i|| ||y_i|| / |y_i^H x_i|`` its condition
number (Wilkinson). Pairs with ``|w_i - w_j| <= n eps ||A||_F (s_i + s_j)`` (or a
user ``degenerate_tol``) get ``F_ij = 0``: for a repeated *semisimple* eigenvalue
this is the exact derivative of every loss invariant to the basis of its
eigenspace (sums over the group, the group's spectral projector).

**Defective eigenvalues** (a Jordan block) have no derivative. In floating point a
Jordan block of size m is split into eigenvalues ``eps^(1/m)`` apart with
``s_i >~ eps^(-1/2)`` (nearly parallel eigenvectors). An eigenvalue with
``s_i >= 0.05 eps^(-1/2)`` that lies within ``10 n eps ||A||_F s_i`` of another one
is treated as defective: its derivative, and the derivatives of all outputs for the
same matrix (the other matrices of a batch keep theirs), are NaN (multiplicative masks,
so reverse mode gives NaN too). An exactly
singular ``V`` gives inf/NaN by itself. Nothing raises.

**Ordering.** XLA returns eigenvalues unsorted. This module sorts them
lexicographically by (real part, imaginary part), as :func:`numpy.sort_complex`,
so every backend (native or host fallback) returns the same order; conjugate pairs
of a real matrix come as ``(a - ib, a + ib)``. The order is locally constant away
from ties in the real part; the derivative rule is for that fixed order.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._ad import twin_custom_jvp
from ._checks import as_square_matrix, check_bool, check_nonnegative_float, result_dtype
from ._eig_host import NATIVE_PLATFORMS, host_eig
from ._gaps import gap_matrix, nan_on_cut
from ._guard import checked_pairs, guard, resolve_check
from ._hooks import gauge_hook, jit_entry
from ._linalg import _h, _mm, _norm

_SOLVERS = ("auto", "xla", "host")


class EigResult(NamedTuple):
    """Result of :func:`eig`: eigenvalues and unit-norm right eigenvectors (columns)."""

    eigenvalues: jax.Array
    eigenvectors: jax.Array


class EigLeftResult(NamedTuple):
    """Result of ``eig(a, left=True)``; ``left_eigenvectors^H @ eigenvectors = I``."""

    eigenvalues: jax.Array
    eigenvectors: jax.Array
    left_eigenvectors: jax.Array


class EigGaugeCheck(NamedTuple):
    """Result of :func:`eig_gauge_check`.

    ``phase_sensitivity[..., j]`` is ``|dL/dtheta_j| / ||dL/dv_j||`` for the phase
    rotation ``v_j -> exp(i theta_j) v_j``: 0 for a loss that does not depend on the
    phase of eigenvector ``j``, 1 when its gradient w.r.t. ``v_j`` is parallel to
    ``i v_j`` (a pure phase change). By Cauchy-Schwarz it lies in ``[0, 1]``.
    ``ok`` is True when every entry is at most ``rtol``.
    """

    phase_sensitivity: jax.Array
    ok: jax.Array


def _complex_dtype(dtype):
    return result_dtype(dtype, jnp.complex64)


def _xla_eig(a: jax.Array, compute_vectors: bool, left: bool = False) -> tuple[jax.Array, ...]:
    out = jax.lax.linalg.eig(a, compute_left_eigenvectors=left, compute_right_eigenvectors=compute_vectors)
    return (out[0], out[2], out[1]) if left else tuple(out)  # (w, right, left)


def _host_eig(a: jax.Array, compute_vectors: bool, left: bool = False) -> tuple[jax.Array, ...]:
    out = host_eig(a, compute_vectors=compute_vectors)
    if not left:
        return out
    # NumPy's eig has no left vectors: V^{-H} (then biorthonormalised as geev's, below)
    w, v = out
    eye = jnp.broadcast_to(jnp.eye(v.shape[-1], dtype=v.dtype), v.shape)
    return w, v, _h(jnp.linalg.solve(v, eye))


def _solve_eig(a: jax.Array, solver: str, compute_vectors: bool, left: bool = False) -> tuple[jax.Array, ...]:
    """The solver's raw output. ``"auto"`` chooses per *lowering* platform with
    ``jax.lax.platform_dependent`` (never from ``jax.default_backend()`` at trace time): XLA's
    eig where the platform has one (``_eig_host._NATIVE_PLATFORMS``: CPU, CUDA, ROCm), the
    host callback elsewhere. So ``jax.export`` for ``platforms=["cuda"]`` from a CPU-only
    machine lowers XLA's eig, not a callback, and a TPU export gets the callback."""
    host = functools.partial(_host_eig, compute_vectors=compute_vectors, left=left)
    if solver == "host":
        return host(a)
    xla = functools.partial(_xla_eig, compute_vectors=compute_vectors, left=left)
    if solver == "xla":
        return xla(a)
    return jax.lax.platform_dependent(a, **{p: xla for p in NATIVE_PLATFORMS}, default=host)


def _raw_eig(a: jax.Array, solver: str, compute_vectors: bool, left: bool = False) -> tuple[jax.Array, ...]:
    """Unsorted LAPACK-convention output of the chosen solver.

    Each matrix is first scaled by an exact power of two to ``max|a_ij|`` in [0.5, 1):
    the geev behind ``jax.lax.linalg.eig`` (and SciPy's) returns wrong eigenvalues
    for ``||A||`` beyond about 1e12 (float32) / 1e138 (float64) and their reciprocals,
    because it does not undo its internal scaling. Eigenvalues are scaled back exactly;
    eigenvectors are unaffected. Zero and non-finite matrices are not scaled; matrices
    with a subnormal ``max|a_ij|`` are scaled up only as far as a normal power of two allows.
    """
    if a.shape[-1] == 0:
        w = jnp.zeros(a.shape[:-1], _complex_dtype(a.dtype))
        return (w, jnp.zeros(a.shape, w.dtype)) if compute_vectors else (w,)
    real = jnp.abs(a).dtype
    fi = jnp.finfo(real)
    amax = jnp.max(jnp.abs(a), axis=(-2, -1), keepdims=True)
    ok = jnp.isfinite(amax) & (amax > 0)
    _, e = jnp.frexp(jnp.where(ok, amax, 1))
    # clip so that 2^e and 2^-e are both normal numbers: the scaling is then two exact
    # multiplications (cheaper than an elementwise ldexp), for all but subnormal ||A||
    lo, hi = max(int(fi.minexp), 1 - int(fi.maxexp)), min(int(fi.maxexp) - 1, -int(fi.minexp))
    e = jnp.clip(jnp.where(ok, e, 0), lo, hi)
    a = a * jnp.ldexp(jnp.ones((), real), -e).astype(a.dtype)  # explicit: strict promotion
    out = _solve_eig(a, solver, compute_vectors, left)
    w = out[0]
    w = w * jnp.ldexp(jnp.ones((), real), e[..., 0]).astype(w.dtype)
    return (w, *tuple(out)[1:])


def _sort_order(w: jax.Array) -> jax.Array:
    """Permutation sorting ``w`` by (real, imag), shape ``w.shape``."""
    idx = jnp.broadcast_to(jnp.arange(w.shape[-1]), w.shape)
    *_, perm = jax.lax.sort((jnp.real(w), jnp.imag(w), idx), dimension=w.ndim - 1, num_keys=2)
    return perm


def _abs2(x: jax.Array) -> jax.Array:
    """``|x|^2`` without the square root (and overflow guard) of complex ``abs``, which
    made a quarter of the post-processing of an n = 256 eig: for comparisons of
    entries of unit vectors, where nothing can overflow."""
    return jnp.real(x) ** 2 + jnp.imag(x) ** 2


def _first_argmax(x: jax.Array) -> jax.Array:
    """Index of the first largest entry along the last axis, shape ``(..., 1)``: a plain
    max, then the smallest index attaining it (two vectorised reductions; XLA:CPU's
    variadic argmax reduction is slower: BENCHMARKS.md, "eig vs jnp.linalg.eig"). Clamped, so an all-NaN row
    gives ``n - 1`` instead of an out-of-range index."""
    n = x.shape[-1]
    hit = x == jnp.max(x, axis=-1, keepdims=True)
    k = jnp.min(jnp.where(hit, jnp.arange(n), n), axis=-1, keepdims=True)
    return jnp.minimum(k, n - 1)


def _largest_entry(v: jax.Array) -> jax.Array:
    """Row index ``k_j`` of the largest-magnitude entry of each column (the first, on
    ties), shape ``(..., 1, n)``, for the JVP: the same rule that :func:`_normalise_rows`
    applies to the rows of ``V^T``."""
    return jnp.swapaxes(_first_argmax(_abs2(jnp.swapaxes(v, -1, -2))), -1, -2)


def _take_rows(x: jax.Array, perm: jax.Array) -> jax.Array:
    """``x[..., perm, :]`` with a permutation per batch element: whole rows are copied
    (a gather of contiguous slices; gathering columns costs one index per entry)."""
    take = lambda x, p: x[p]
    for _ in range(perm.ndim - 1):
        take = jax.vmap(take)
    return take(x, perm)


def _normalise_rows(vt: jax.Array) -> jax.Array:
    """Rows of ``vt`` (eigenvectors) scaled to unit 2-norm with their largest-magnitude
    entry real positive.

    One pass of ``|v_ij|^2`` feeds both the norms and the largest entry (whose index
    does not depend on a positive scale), and one multiplication by the per-row factor
    ``conj(v_jk) / (|v_jk| ||v_j||)`` applies both. The vectors come from geev with unit
    norm: ``|v_ij|^2`` cannot overflow.
    """
    a2 = _abs2(vt)
    vk = jnp.take_along_axis(vt, _first_argmax(a2), axis=-1)
    a2k = _abs2(vk)
    ok = a2k > 0  # False only for a zero (or NaN) vector
    scale = jax.lax.rsqrt(jnp.where(ok, a2k, 1)) * jax.lax.rsqrt(jnp.sum(a2, axis=-1, keepdims=True))
    return vt * jnp.where(ok, jnp.conj(vk) * scale.astype(vk.dtype), 1)


def _eig_forward_unhooked(a: jax.Array, solver: str) -> tuple[jax.Array, jax.Array]:
    """Sorted eigenvalues and normalised eigenvectors. The eigenvectors are permuted and
    normalised as the rows of ``V^T``: geev returns ``V`` column-major, so ``V^T`` is
    free, its rows are contiguous, and the permutation copies whole rows (faster than
    permuting and normalising columns: BENCHMARKS.md, "eig vs jnp.linalg.eig")."""
    w, v = _raw_eig(a, solver, True)
    perm = _sort_order(w)
    w = jnp.take_along_axis(w, perm, axis=-1)
    vt = _take_rows(jnp.swapaxes(v, -1, -2), perm)
    return w, jnp.swapaxes(_normalise_rows(vt), -1, -2)


def _eig_left_forward_unhooked(a: jax.Array, solver: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``_eig_forward`` plus left eigenvectors ``Y`` with ``Y^H V = I``, from geev's own
    left eigenvectors ``L`` (computed from the Schur form: residual ``~ eps ||A||`` per unit
    vector, whatever the conditioning of ``V``) as ``Y^H = (L^H V)^{-1} L^H``. ``L^H V`` is
    diagonal up to ``l_i^H v_j ~ eps ||A|| / (w_j - w_i)``, so the mixing adds
    ``(w_j - w_i) l_i^H v_j ~ eps ||A||`` to the residual, and inside a repeated eigenvalue's
    group it biorthonormalises. ``V^{-H}`` itself (the earlier way) has residual
    ``~ eps ||A|| cond(V)``: about 2x LAPACK's on random 50 x 50 matrices (issue #19, item 21)."""
    w, v, l = _raw_eig(a, solver, True, left=True)
    perm = _sort_order(w)
    w = jnp.take_along_axis(w, perm, axis=-1)
    v = jnp.swapaxes(_normalise_rows(_take_rows(jnp.swapaxes(v, -1, -2), perm)), -1, -2)
    lh = jnp.conj(_take_rows(jnp.swapaxes(l, -1, -2), perm))  # rows l_i^H
    yh = jnp.linalg.solve(_mm(lh, v), lh)
    return w, v, _h(yh)


# The forward solvers, hook points of eigjax.random_gauge (eigjax._hooks).
_eig_forward = gauge_hook("eig", _eig_forward_unhooked, kind="eig")
_eig_left_forward = gauge_hook("eig_left", _eig_left_forward_unhooked, kind="eig_left")


def _eigvals_forward(a: jax.Array, solver: str) -> jax.Array:
    (w,) = _raw_eig(a, solver, False)
    return jnp.take_along_axis(w, _sort_order(w), axis=-1)


class _Linearisation(NamedTuple):
    """Primal-only quantities of the JVP rule (computed once per linearisation)."""

    f: jax.Array  # inverse gaps, zero on the diagonal and on coincident pairs
    nan_mask: jax.Array  # (..., n): 1, or NaN for eigenvalues treated as defective


# Random probes of the condition numbers (module docstring): s_i = ||e_i^T V^{-1}|| is
# estimated as the root mean square of (V^{-1} Z)_ik over _PROBES complex Gaussian
# columns z_k (E |(V^{-1} z)_i|^2 = s_i^2). Chi-square with 2 _PROBES = 32 degrees of
# freedom: the estimate is within a factor 2 of s_i with probability 1 - 2e-5, and the
# masks below have a factor 10 of margin. It costs O(n^2 _PROBES) on the LU that the
# derivative's solve needs anyway, instead of the O(n^3) inverse.
_PROBES = 16


def _probes(n: int, dtype) -> np.ndarray:
    r = np.random.default_rng(20261124)
    z = (r.standard_normal((n, _PROBES)) + 1j * r.standard_normal((n, _PROBES))) / np.sqrt(2.0)
    return z.astype(dtype)


def _linearise(a, w, v, degenerate_tol) -> _Linearisation:
    n = w.shape[-1]
    rdtype = jnp.finfo(w.dtype).dtype
    eps = jnp.finfo(w.dtype).eps
    ws, vs = jax.lax.stop_gradient(w), jax.lax.stop_gradient(v)
    # Condition numbers s_i = ||y_i|| (||x_i|| = 1, y_i^H x_i = 1), estimated: masks only.
    z = jnp.broadcast_to(jnp.asarray(_probes(n, v.dtype)), (*v.shape[:-1], _PROBES))
    s = jnp.sqrt(jnp.mean(_abs2(jnp.linalg.solve(vs, z)), axis=-1))
    norm_a = _norm(jax.lax.stop_gradient(a), axis=(-2, -1))[..., None]
    err = (n * eps) * norm_a * s  # first-order error bound of each eigenvalue
    d = gap_matrix(ws)
    absd = jnp.abs(d)
    if degenerate_tol is None:
        tol = err[..., :, None] + err[..., None, :]
    else:
        tol = jnp.full(absd.shape, degenerate_tol, dtype=rdtype)
    coincident = (absd <= tol) | ~jnp.isfinite(tol)
    # 1/(w_j - w_i) with the double-where pattern; differentiable in w.
    dw = gap_matrix(w)
    safe = jnp.where(coincident, jnp.ones_like(dw), dw)
    f = jnp.where(coincident, jnp.zeros_like(dw), 1.0 / safe)
    # Defective: ill-conditioned and within 10x its own first-order error (eps ||A|| s,
    # without the worst-case factor n of `err`: with it, a nearly defective pair that
    # float32 resolves 30x above rounding, n = 12, was declared defective) of another.
    offdiag = jnp.broadcast_to(~jnp.eye(n, dtype=bool), absd.shape)
    near = (absd <= (10.0 / max(n, 1)) * err[..., :, None]) & offdiag
    defective = (s >= 0.05 / jnp.sqrt(eps)) & jnp.any(near, axis=-1)
    defective = defective | ~jnp.isfinite(s)
    # Every output of the matrix, not only the defective slots: the derivatives of the
    # others go through V^{-1} (nearly singular) and through the cut pairs (simple,
    # defective), whose error bounds are huge, so they are not reliable either. A
    # Jordan block at 1 next to a simple eigenvalue 2 gave the simple eigenvector's
    # tangent as exactly 0 against central differences of 1 (found by an audit).
    defective = jnp.broadcast_to(jnp.any(defective, axis=-1, keepdims=True), defective.shape)
    nan_mask = jnp.where(defective, jnp.nan, 1.0).astype(rdtype)
    return _Linearisation(f, nan_mask)


def _eig_primal(a, degenerate_tol, solver, degenerate_check=True):
    return _eig_forward(a, solver)


def _eig_rule(degenerate_tol, solver, degenerate_check, primals, tangents, *, primal, higher):
    # The twin custom_jvp (eigjax._ad): `primal` is _eig_inner, the same values, whose
    # rule (higher=True, reached only by second and higher derivatives) is NaN on
    # coincident pairs, where the F_ij = 0 cut would give a wrong finite second derivative.
    (a,), (a_dot,) = primals, tangents
    w, v = primal(a, degenerate_tol, solver, degenerate_check)
    return (w, v), _eig_tangents(a, a_dot, w, v, degenerate_tol, higher, degenerate_check)


def _eig_tangents(a, a_dot, w, v, degenerate_tol, higher, degenerate_check=False):
    """``(dw, dV)`` of the module docstring at ``A = V diag(w) V^{-1}``."""
    lin = _linearise(a, w, v, degenerate_tol)
    f = nan_on_cut(lin.f) if higher else lin.f
    p = jnp.linalg.solve(v, _mm(a_dot.astype(v.dtype), v))  # P = V^{-1} dA V
    mask = lin.nan_mask.astype(v.dtype)
    w_dot = jnp.diagonal(p, axis1=-2, axis2=-1) * mask
    q = f * p
    if degenerate_check and not higher:
        # Reverse mode tests the cotangent on the coincident pairs (eigjax._guard). The
        # gauge of a repeated semisimple eigenvalue is V_G -> normalise(V_G S), S any
        # invertible m x m: to first order dV = N(V K) for any K on G x G, N the
        # linearised normalisation below (N(V K) = 0 for diagonal K). The cotangent of
        # q (through u and c) is therefore zero on every coincident pair for a loss
        # invariant to that gauge (spectral projectors V_G Y_G^H, group sums); and wbar
        # must be equal on the group (its eigenvalues move by those of P_GG).
        w_dot, q = guard(
            w_dot, q, checked_pairs(f), w, name="eigjax.eig", mode="zero", debug=degenerate_check == "debug"
        )
    u = _mm(v, q)
    k = _largest_entry(jax.lax.stop_gradient(v))
    vk = jnp.real(jnp.take_along_axis(v, k, axis=-2))[..., 0, :]
    uk = jnp.take_along_axis(u, k, axis=-2)[..., 0, :]
    c = jax.lax.complex(-jnp.real(jnp.sum(jnp.conj(v) * u, axis=-2)), -jnp.imag(uk) / vk)
    v_dot = (u + v * c[..., None, :]) * mask[..., None, :]
    return w_dot, v_dot


_eig, _eig_inner = twin_custom_jvp(_eig_primal, _eig_rule, nondiff_argnums=(1, 2, 3))


# With left eigenvectors: Y^H = V^{-1}, so d(Y^H) = -V^{-1} dV V^{-1} = -Y^H dV Y^H, i.e.
# dY = -(Y^H dV Y^H)^H, with (dw, dV) the rule above. The primal Y comes from geev's left
# vectors (_eig_left_forward), which is V^{-H} to rounding but more accurate.
def _eig_left_primal(a, degenerate_tol, solver, degenerate_check=True):
    return _eig_left_forward(a, solver)


def _eig_left_rule(degenerate_tol, solver, degenerate_check, primals, tangents, *, primal, higher):
    (a,), (a_dot,) = primals, tangents
    w, v, y = primal(a, degenerate_tol, solver, degenerate_check)
    # the guard sees Y's cotangent too: dY is a function of dV, hence of q
    w_dot, v_dot = _eig_tangents(a, a_dot, w, v, degenerate_tol, higher, degenerate_check)
    yh = _h(y)
    return (w, v, y), (w_dot, v_dot, -_h(_mm(_mm(yh, v_dot), yh)))


_eig_left, _eig_left_inner = twin_custom_jvp(_eig_left_primal, _eig_left_rule, nondiff_argnums=(1, 2, 3))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _eigvals(a, solver):
    return _eigvals_forward(a, solver)


@_eigvals.defjvp
def _eigvals_jvp(solver, primals, tangents):
    (a,), (a_dot,) = primals, tangents
    w, v = _eig_inner(a, None, solver)
    lin = _linearise(a, w, v, None)
    # dw_i = y_i^H dA x_i = sum_j (V^{-1} dA)_ij V_ji: one solve, no eigengaps used.
    x = jnp.linalg.solve(v, a_dot.astype(v.dtype))
    w_dot = jnp.sum(x * jnp.swapaxes(v, -1, -2), axis=-1) * lin.nan_mask.astype(x.dtype)
    return w, w_dot


def _check_solver(solver, fn):
    if solver not in _SOLVERS:
        raise ValueError(f"{fn}: option `solver` must be one of {_SOLVERS}; got {solver!r}.")
    return solver


# Jitted entry points (eigjax._hooks.jit_entry: eager callers get one program).
_eig_entry = jit_entry(lambda a, tol, solver, chk: _eig(a, tol, solver, chk), static_argnums=(1, 2, 3))
_eig_left_entry = jit_entry(lambda a, tol, solver, chk: _eig_left(a, tol, solver, chk), static_argnums=(1, 2, 3))
_eigvals_entry = jit_entry(lambda a, solver: _eigvals(a, solver), static_argnums=(1,))


@typing.overload
def eig(
    a: ArrayLike,
    *,
    left: Literal[False] = False,
    degenerate_tol: float | None = None,
    solver: str = "auto",
    degenerate_check: bool | str | None = None,
) -> EigResult: ...
@typing.overload
def eig(
    a: ArrayLike,
    *,
    left: Literal[True],
    degenerate_tol: float | None = None,
    solver: str = "auto",
    degenerate_check: bool | str | None = None,
) -> EigLeftResult: ...
@typing.overload
def eig(
    a: ArrayLike,
    *,
    left: bool,
    degenerate_tol: float | None = None,
    solver: str = "auto",
    degenerate_check: bool | str | None = None,
) -> EigResult | EigLeftResult: ...


def eig(
    a: ArrayLike,
    *,
    left: bool = False,
    degenerate_tol: float | None = None,
    solver: str = "auto",
    degenerate_check: bool | str | None = None,
) -> EigResult | EigLeftResult:
    r"""Eigendecomposition of general square matrices, differentiable with no opt-in.

    ``A V = V diag(w)`` with complex ``w`` and ``V``, for real or complex ``A``.
    Unlike :func:`jax.numpy.linalg.eig`, ``jax.grad``/``jax.jvp``/``jax.hessian``
    work for eigenvalues *and* eigenvectors.

    Conventions (see the module docstring for the maths):

    * eigenvalues sorted by (real part, imaginary part);
    * eigenvectors of unit 2-norm whose largest-magnitude component is real and
      positive (LAPACK's rule, sign included). Derivatives of raw eigenvector
      entries are those of this normalisation; gauge-invariant quantities (``|v|``,
      projectors) do not depend on it.

    Derivative rule: ``P = V^{-1} dA V`` (LU solve), ``dw = diag(P)``,
    ``dV = V (F o P + diag(c))``, ``F_ij = 1/(w_j - w_i)``, ``F_ij = 0`` for
    coincident pairs (repeated semisimple eigenvalues: exact for losses invariant
    to the basis of the repeated eigenspace). Defective (Jordan-block) eigenvalues
    have no derivative: every derivative output of that matrix is NaN (the others go
    through the nearly singular ``V``); nothing raises.

    Args:
      a: array of shape ``(..., n, n)``, float32/float64/complex64/complex128 (int and
        bool are promoted to the default float). Leading dimensions are batch
        dimensions.
      left: if True, also return left eigenvectors ``Y`` normalised so that
        ``Y^H V = I`` (``Y^H = V^{-1}``), hence ``y_i^H A = w_i y_i^H`` and the spectral
        projector of ``w_i`` is ``x_i y_i^H``. Computed from geev's own left
        eigenvectors (residual at LAPACK's level, not ``cond(V)`` times it as ``V^{-H}``;
        the host solver, which has none, uses ``V^{-H}``). Differentiable.
      degenerate_tol: eigenvalue pairs with ``|w_i - w_j| <= degenerate_tol`` are
        treated as repeated (``F_ij = 0``). Default: their first-order error bars,
        ``n eps ||A||_F (s_i + s_j)`` with ``s`` the condition numbers (estimated
        by random probes, within a factor 2 with probability 1 - 2e-5; the exact
        ones are :func:`eig_condition_numbers`).
      solver: ``"auto"`` (XLA's eig where the platform has one - CPU, CUDA, ROCm -
        else the host fallback, chosen per lowering platform, so ``jax.export`` for
        ``platforms=["cuda"]`` lowers XLA's eig from any host), ``"xla"`` or ``"host"``
        (``jax.pure_callback`` into :func:`numpy.linalg.eig`; works on every backend,
        under ``jit``/``vmap``).
      degenerate_check: reverse mode tests the cotangent on each coincident pair and
        returns NaN for a matrix whose loss is not invariant to the basis of the
        repeated eigenspace (any invertible change, then the normalisation) or weighs
        its eigenvalues unequally, where the cut rule would be wrong. ``None``
        (default): ``True``; ``False`` trusts the loss; ``"debug"`` also prints the
        first failing pair (see :func:`eigjax.eigh`).

    Returns:
      ``EigResult(eigenvalues, eigenvectors)`` with shapes ``(..., n)`` and
      ``(..., n, n)`` (eigenvectors are columns), complex; or, with ``left=True``,
      ``EigLeftResult(eigenvalues, eigenvectors, left_eigenvectors)``. Input with NaN
      or inf gives NaN outputs.

    Raises:
      TypeError: ``a`` is not an array or has a non-numeric dtype.
      ValueError: ``a`` is not of shape ``(..., n, n)``, or an option is invalid.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np, eigjax
      >>> a = jnp.array([[1., 2.], [3., 4.]])
      >>> loss = lambda a: jnp.sum(jnp.abs(eigjax.eig(a).eigenvalues))
      >>> g = jax.grad(loss)(a)          # jnp.linalg.eig raises NotImplementedError here
      >>> print(np.asarray(g, dtype=np.float64).round(4))
      [[-0.5222  1.0445]
       [ 0.6963  0.5222]]
    """
    fn = "eigjax.eig"
    a = as_square_matrix(a, name="a", fn=fn)
    left = check_bool(left, name="left", fn=fn)
    degenerate_tol = check_nonnegative_float(degenerate_tol, name="degenerate_tol", fn=fn)
    solver = _check_solver(solver, fn)
    if a.shape[-1] == 0:  # nothing to decompose (and nothing to differentiate)
        w = jnp.zeros(a.shape[:-1], _complex_dtype(a.dtype))
        v = jnp.zeros(a.shape, w.dtype)
        return EigResult(w, v) if not left else EigLeftResult(w, v, v)
    degenerate_check = resolve_check(degenerate_check, fn=fn)
    if not left:
        return EigResult(*_eig_entry(a, degenerate_tol, solver, degenerate_check))
    return EigLeftResult(*_eig_left_entry(a, degenerate_tol, solver, degenerate_check))


def eigvals(a: ArrayLike, *, solver: str = "auto") -> jax.Array:
    r"""Eigenvalues of general square matrices, sorted by (real, imag), differentiable.

    The derivative ``dw = diag(V^{-1} dA V)`` needs no eigenvector derivative and no
    eigengap; second and higher derivatives (``jax.hessian``, ``jacfwd(jacrev)``)
    work. A matrix with a defective eigenvalue gets NaN derivatives for all its
    eigenvalues (see :func:`eig`).

    Args:
      a: array of shape ``(..., n, n)``; see :func:`eig`.
      solver: ``"auto"``, ``"xla"`` or ``"host"``; see :func:`eig`.

    Returns:
      Complex eigenvalues, shape ``(..., n)``.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np, eigjax
      >>> a = jnp.array([[0., 1.], [-2., 0.]])   # eigenvalues -i sqrt(2), +i sqrt(2)
      >>> print(np.asarray(eigjax.eigvals(a)).round(4))
      [0.-1.4142j 0.+1.4142j]
    """
    fn = "eigjax.eigvals"
    a = as_square_matrix(a, name="a", fn=fn)
    solver = _check_solver(solver, fn)
    if a.shape[-1] == 0:  # as in eig: empty output, and an empty (zero) gradient
        return jnp.zeros(a.shape[:-1], _complex_dtype(a.dtype))
    return _eigvals_entry(a, solver)


def eig_condition_numbers(a: ArrayLike, *, solver: str = "auto") -> jax.Array:
    r"""Eigenvalue condition numbers ``s_i = ||x_i|| ||y_i|| / |y_i^H x_i|`` (diagnostic).

    ``s_i >= 1``, with equality for normal matrices; a perturbation ``E`` moves
    ``w_i`` by about ``s_i ||E||``. Very large values (``~ eps^(-1/2)``) mean the
    eigenvalue is numerically defective and has no reliable derivative. Ordered as
    :func:`eigvals`. Inf when the computed eigenvectors are linearly dependent.

    Args:
      a: array of shape ``(..., n, n)``; see :func:`eig`.
      solver: see :func:`eig`.

    Returns:
      Real array of shape ``(..., n)``.

    Example:
      >>> import jax.numpy as jnp, numpy as np, eigjax
      >>> print(np.asarray(eigjax.eig_condition_numbers(jnp.array([[1., 10.], [0., 2.]]))).round(3))
      [10.05 10.05]
    """
    fn = "eigjax.eig_condition_numbers"
    a = as_square_matrix(a, name="a", fn=fn)
    res = eig(a, left=True, solver=_check_solver(solver, fn))
    return jnp.linalg.norm(res.left_eigenvectors, axis=-2)


def eig_gauge_check(
    loss: Callable[[jax.Array, jax.Array], jax.Array],
    a: ArrayLike,
    *,
    rtol: float | None = None,
    solver: str = "auto",
) -> EigGaugeCheck:
    r"""Measure how much ``loss(eigenvalues, eigenvectors)`` depends on eigenvector phases.

    An eigenvector is defined only up to a factor ``exp(i theta)``; :func:`eig` fixes
    it by a convention. A loss whose value changes with ``theta`` depends on that
    convention, so its derivative is not meaningful (PyTorch raises in that case;
    here the check is on request). For each eigenvector this returns

        ``|d loss / d theta_j| / ||d loss / d v_j||``   (in [0, 1]),

    the cosine between the loss's gradient w.r.t. ``v_j`` and the phase direction
    ``i v_j`` (``||v_j|| = 1``).
    Sensitivities far above rounding level (default ``rtol = sqrt(eps)``) mean the
    loss is ill-defined.

    Args:
      loss: ``loss(w, v) -> real scalar``, with ``w, v`` as returned by :func:`eig`.
      a: the matrix (or batch) at which to check.
      rtol: threshold for ``ok``; default ``sqrt(eps)`` of ``a``'s dtype.
      solver: see :func:`eig`.

    Returns:
      :class:`EigGaugeCheck` ``(phase_sensitivity, ok)``; works under ``jit``.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> a = jnp.array([[0., 1.], [-2., 0.]])
      >>> eigjax.eig_gauge_check(lambda w, v: jnp.sum(jnp.abs(v) ** 2 * 3), a).ok
      Array(True, dtype=bool)
      >>> eigjax.eig_gauge_check(lambda w, v: jnp.sum(jnp.real(v)), a).ok
      Array(False, dtype=bool)
    """
    fn = "eigjax.eig_gauge_check"
    a = as_square_matrix(a, name="a", fn=fn)
    rtol = check_nonnegative_float(rtol, name="rtol", fn=fn)
    w, v = eig(a, solver=_check_solver(solver, fn))
    w, v = jax.lax.stop_gradient((w, v))
    rdtype = jnp.finfo(v.dtype).dtype
    if rtol is None:
        rtol = float(np.sqrt(np.finfo(rdtype).eps))

    def rotated(theta):
        phase = jnp.exp(jax.lax.complex(jnp.zeros_like(theta), theta)).astype(v.dtype)
        return jnp.real(loss(w, v * phase[..., None, :]))

    dtheta = jax.jacfwd(rotated)(jnp.zeros(w.shape, rdtype))
    gv = jax.grad(lambda vv: jnp.real(loss(w, vv)))(v)
    scale = jnp.linalg.norm(gv, axis=-2)
    ratio = jnp.abs(dtheta) / jnp.where(scale > 0, scale, 1.0)
    return EigGaugeCheck(ratio, jnp.all(ratio <= rtol))
