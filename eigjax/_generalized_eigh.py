"""Generalized Hermitian-definite eigenproblem ``A v = w B v`` with derivatives in ``A`` and ``B``.

Forward (Golub & Van Loan, "Matrix Computations", 4th ed., sec. 8.7.2). With the
Cholesky factor ``B = L L^H``, the pencil is congruent to the standard problem

    C = L^{-1} A L^{-H},     C U = U diag(w),     V = L^{-H} U,

so ``V^H B V = U^H U = I`` and ``V^H A V = diag(w)``. ``C`` is formed with two
triangular solves (never an explicit inverse) and diagonalised by eigjax's own solver.

Derivative (docs/derivatives.md; Nelson 1976; Giles 2008 style). Differentiate
``A V = B V diag(w)`` and ``V^H B V = I`` with ``P = V^H dA V``, ``Q = V^H dB V`` and
``dV = V C``:

    dw_i = Re(P_ii - w_i Q_ii),
    C_ij = (P_ij - w_j Q_ij) / (w_j - w_i)                      (i != j, w_i != w_j),
    C + C^H = -Q                                                 (from V^H B V = I).

The constraint fixes only the Hermitian part of ``C`` on the diagonal; we take
``C_ii = -Q_ii / 2`` (no phase change, as in :func:`eigjax.eigh`).

Degenerate pairs (``|w_i - w_j| <= tol``, ``i != j``, one eigenspace). Only the
Hermitian part of the within-group block ``C_GG`` is determined (by the normalisation);
its anti-Hermitian part is a rotation of the basis inside the eigenspace, which changes
no loss that is invariant to that basis (eigenvalue sums over the group, the
B-orthogonal projector ``V_G V_G^H``, ``V diag(g(w)) V^H`` with ``g`` constant on the
group). We take ``C_ij = -Q_ij / 2`` there, the unique choice with zero anti-Hermitian
part: it keeps ``d(V^H B V) = C^H + Q + C = 0`` exactly, so ``V^H B V = I`` holds to
first order, and it gives the exact derivative of every such invariant loss. Check: for
a within-group pair ``C_ij + conj(C_ji) = -Q_ij/2 - conj(Q_ji)/2 = -Q_ij`` since ``Q``
is Hermitian; for a non-degenerate pair the quotient gives ``-Q_ij`` as well.

Higher order: the rule calls a custom_jvp function for its primal, so it is itself
differentiable (``jax.hessian``): exactly where the eigenvalues are distinct, NaN at
degenerate pairs (where the cut would give a wrong finite second derivative).

Not positive definite ``B``: the Cholesky factorisation fails and every output is NaN
(never an exception under ``jit``). ``check=True`` raises a ``ValueError`` instead when
``b`` is concrete.

Values only (:func:`eigvalsh_generalized`). A ``custom_jvp`` whose primal, which runs
alone when nothing is differentiated, is the same reduction followed by eigjax's
values-only ``eigvalsh`` forward of ``C`` (:mod:`eigjax._eigvals_only`): no eigenvectors
and no back-substitution ``V = L^{-H} U``. Its rule calls the full decomposition (the
inner twin above, so higher derivatives go through its rule) and returns
``dw_i = Re(P_ii - w_i Q_ii)``, computed as ``Re sum_j conj(V_ji) (dA V - dB V w)_ji``:
two matrix products, no eigengaps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.typing import ArrayLike

from ._ad import twin_custom_jvp
from ._checks import as_square_matrix, check_nonnegative_float, check_same_shape
from ._dense_eigh import _eigh_solve
from ._eigh import EighResult
from ._eigvals_only import eigvalsh_values
from ._gaps import default_tolerance, gap_matrix, inverse_gaps
from ._guard import checked_pairs, guard, resolve_check
from ._hooks import gauge_hook, jit_entry
from ._linalg import _all_finite, _h, _hermitian_part, _mm, _nan_unless

_FN = "eigjax.eigh_generalized"


def _reduce(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cholesky factor ``L`` of ``b`` and the congruent matrix ``C = L^{-1} a L^{-H}``."""
    l = jax.lax.linalg.cholesky(b, symmetrize_input=False)
    x = jax.lax.linalg.triangular_solve(l, a, left_side=True, lower=True)
    c = jax.lax.linalg.triangular_solve(l, x, left_side=False, lower=True, transpose_a=True, conjugate_a=True)
    return l, _hermitian_part(c)


def _forward_unhooked(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    l, c = _reduce(a, b)
    w, u = _eigh_solve(c, False)
    v = jax.lax.linalg.triangular_solve(l, u, left_side=True, lower=True, transpose_a=True, conjugate_a=True)
    # An inf in b can reduce to a finite c (1/inf = 0): poison explicitly.
    return _nan_unless(_all_finite(a, b), w, v)


# The forward solver, a hook point of eigjax.random_gauge (eigjax._hooks): V U with U
# unitary on the groups stays B-orthonormal.
_forward = gauge_hook("eigh_generalized", _forward_unhooked, kind="hermitian")


def _eigh_gen_primal(a, b, degenerate_tol, degenerate_check=True):
    return _forward(_hermitian_part(a), _hermitian_part(b))


def _eigh_gen_rule(degenerate_tol, degenerate_check, primals, tangents, *, primal, higher):
    # The twin custom_jvp (eigjax._ad): `primal` is _eigh_gen_inner, whose rule
    # (higher=True, reached only by second and higher derivatives) is NaN on degenerate
    # off-diagonal pairs, where the cut would give a wrong finite second derivative.
    (a, b), (a_dot, b_dot) = primals, tangents
    w, v = primal(a, b, degenerate_tol, degenerate_check)  # differentiable primal: hessian works
    a_dot = _hermitian_part(a_dot)
    b_dot = _hermitian_part(b_dot)
    vh = _h(v)
    p = _mm(vh, _mm(a_dot, v))
    q = _mm(vh, _mm(b_dot, v))
    wc = w.astype(p.dtype)
    w_dot = jnp.real(jnp.diagonal(p, axis1=-2, axis2=-1) - wc * jnp.diagonal(q, axis1=-2, axis2=-1))
    n = w.shape[-1]
    tol = default_tolerance(w, n) if degenerate_tol is None else jnp.asarray(degenerate_tol, w.dtype)
    # Degenerate pairs and the diagonal: C = -Q/2 (keeps V^H B V = I, no rotation).
    degenerate = jnp.abs(jax.lax.stop_gradient(gap_matrix(w))) <= tol
    f = inverse_gaps(w, degenerate_tol=degenerate_tol).astype(p.dtype)  # zero where degenerate
    c_gap = f * (p - q * wc[..., None, :])
    c = jnp.where(degenerate, -q / 2, c_gap)
    if higher:
        cut = degenerate & jnp.broadcast_to(~jnp.eye(n, dtype=bool), degenerate.shape)
        c = jnp.where(cut, jnp.nan, c)
    elif degenerate_check:
        # Reverse mode tests the cotangent on the degenerate pairs (eigjax._guard). The
        # gauge keeping V^H B V = I is V_G -> V_G U with U unitary, as for eigh: dV = V K,
        # K anti-Hermitian on G, and the cotangent of C is V^T Vbar, so the test is the
        # same: V^T Vbar Hermitian on each group (its diagonal real for complex input,
        # the phase that C_ii = -Q_ii/2 leaves out) and wbar equal on it (the group's
        # eigenvalues move by the eigenvalues of its block (P - w Q)_GG; the rule uses
        # the diagonal, exact only under equal weights).
        phase = jnp.issubdtype(c.dtype, jnp.complexfloating)
        w_dot, c = guard(
            w_dot, c, checked_pairs(f), w, name=_FN, mode="hermitian", phase=phase, debug=degenerate_check == "debug"
        )
    v_dot = _mm(v, c)
    return (w, v), (w_dot, v_dot)


_eigh_gen, _eigh_gen_inner = twin_custom_jvp(_eigh_gen_primal, _eigh_gen_rule, nondiff_argnums=(2, 3))


def _check_positive_definite(b: jax.Array, fn: str = _FN) -> None:
    """Raise ``ValueError`` if a concrete ``b`` is not Hermitian positive definite."""
    if isinstance(b, Tracer):
        return  # values unknown at trace time: documented, outputs are NaN instead
    bh = np.asarray(_hermitian_part(b))
    l = np.asarray(jax.lax.linalg.cholesky(jnp.asarray(bh), symmetrize_input=False))
    bad = ~np.all(np.isfinite(l), axis=(-2, -1))
    if np.any(bad):
        first = int(np.argmax(bad.ravel()))
        where = "" if bh.ndim == 2 else f" (batch index {tuple(int(i) for i in np.unravel_index(first, bad.shape))})"
        m = bh.reshape((-1,) + bh.shape[-2:])[first]
        if not np.all(np.isfinite(m)):  # eigvalsh would raise LinAlgError on inf/NaN
            raise ValueError(
                f"{fn}: argument `b` must be Hermitian positive definite with finite entries; "
                f"its Hermitian part{where} has {int(np.sum(~np.isfinite(m)))} non-finite (inf or NaN) entries."
            )
        wmin = float(np.min(np.linalg.eigvalsh(m)))
        raise ValueError(
            f"{fn}: argument `b` must be Hermitian positive definite; its Hermitian part{where} "
            f"has smallest eigenvalue {wmin:.3e} and the Cholesky factorisation failed."
        )


# Jitted entry point (eigjax._hooks.jit_entry: eager callers get one program).
_eigh_gen_entry = jit_entry(lambda a, b, tol, chk: _eigh_gen(a, b, tol, chk), static_argnums=(2, 3))


def _check_pencil(a, b, degenerate_tol, check: bool, *, fn: str):
    """The arguments of a generalized decomposition, checked (square, same shape, a
    non-negative tolerance; with ``check``, ``b`` positive definite) and cast to one dtype."""
    a = as_square_matrix(a, name="a", fn=fn)
    b = as_square_matrix(b, name="b", fn=fn)
    check_same_shape(a, b, names=("a", "b"), fn=fn)
    degenerate_tol = check_nonnegative_float(degenerate_tol, name="degenerate_tol", fn=fn)
    try:
        dtype = jnp.result_type(a.dtype, b.dtype)
    except jax.dtypes.TypePromotionError as e:  # strict promotion, as jnp.linalg refuses too
        raise TypeError(
            f"{fn}: arguments `a` and `b` must have the same dtype under strict dtype promotion; "
            f"got a {a.dtype} and b {b.dtype} (cast one of them explicitly)."
        ) from e
    a, b = a.astype(dtype), b.astype(dtype)
    if check:
        _check_positive_definite(b, fn=fn)
    return a, b, degenerate_tol


def eigh_generalized(
    a: ArrayLike,
    b: ArrayLike,
    *,
    degenerate_tol: float | None = None,
    check: bool = False,
    degenerate_check: bool | str | None = None,
) -> EighResult:
    r"""Generalized Hermitian-definite eigenproblem ``A v = w B v``, differentiable in ``A`` and ``B``.

    ``jax.scipy.linalg.eigh(a, b)`` is not implemented in JAX; this solves it by the
    Cholesky reduction ``C = L^{-1} A L^{-H}`` (``B = L L^H``) and :func:`eigjax.eigh`'s
    solver, with a custom JVP with respect to both matrices.

    Derivative: with ``P = V^H dA V`` and ``Q = V^H dB V``, ``dw_i = Re(P_ii - w_i Q_ii)``
    and ``dV = V C``, ``C_ij = (P_ij - w_j Q_ij)/(w_j - w_i)`` for ``i != j``,
    ``C_ii = -Q_ii/2``. For a degenerate pair (``|w_i - w_j| <= degenerate_tol``)
    ``C_ij = -Q_ij/2``: exact for every loss invariant to the basis inside each
    degenerate eigenspace, and it keeps ``V^H B V = I`` to first order.

    Args:
      a: Hermitian matrices, shape ``(..., n, n)`` (the Hermitian part is used, and
        the tangent is projected on Hermitian matrices, like :func:`eigjax.eigh`).
      b: Hermitian positive definite matrices, the same shape as ``a``.
      degenerate_tol: eigenvalue pairs closer than this are treated as degenerate.
        Default ``4 * max(n, 8) * eps * max|w|``, as in :func:`eigjax.eigh`.
      check: if True and ``b`` is concrete (not traced under ``jit``/``grad``), raise
        ``ValueError`` when ``b`` is not positive definite. Traced input is not checked.
      degenerate_check: reverse mode tests the cotangent on each degenerate group
        (``V^T Vbar`` Hermitian there, equal eigenvalue cotangents) and returns NaN for a
        matrix whose loss fails, where the cut rule would be wrong (see
        :func:`eigjax.eigh`). ``None`` (default): ``True``; ``False`` trusts the loss;
        ``"debug"`` also prints the first failing pair.

    Returns:
      ``EighResult(eigenvalues, eigenvectors)``: ascending real eigenvalues, shape
      ``(..., n)``, and eigenvectors as columns normalised so that ``V^H B V = I``.
      A ``b`` that is not positive definite gives NaN outputs (and NaN derivatives).

    Raises:
      TypeError: ``a`` or ``b`` is not a numeric array.
      ValueError: ``a`` or ``b`` is not square, their shapes differ, or (with
        ``check=True``) ``b`` is not positive definite.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> a = jnp.array([[2., 0.], [0., 3.]]); b = jnp.array([[2., 0.], [0., 1.]])
      >>> eigjax.eigh_generalized(a, b).eigenvalues.round(6).tolist()
      [1.0, 3.0]
    """
    a, b, degenerate_tol = _check_pencil(a, b, degenerate_tol, check, fn=_FN)
    degenerate_check = resolve_check(degenerate_check, fn=_FN)
    w, v = _eigh_gen_entry(a, b, degenerate_tol, degenerate_check)
    return EighResult(w, v)


# ---------------------------------------------------------------------------------------
# Values only: no eigenvectors when nothing is differentiated.

_FN_VALUES = "eigjax.eigvalsh_generalized"


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _eigvalsh_gen(a, b, degenerate_tol):
    # Runs alone only when nothing is differentiated: Cholesky, two triangular solves and
    # the values-only eigvalsh of C. A b that is not positive definite gives a NaN
    # factor, hence a NaN C and all-NaN values; an inf in b can reduce to a finite C.
    a, b = _hermitian_part(a), _hermitian_part(b)
    _, c = _reduce(a, b)
    w = eigvalsh_values(c, False)  # c is Hermitian already (_reduce)
    return jnp.where(_all_finite(a, b)[..., None], w, jnp.asarray(jnp.nan, w.dtype))


@_eigvalsh_gen.defjvp
def _eigvalsh_gen_jvp(degenerate_tol, primals, tangents):
    (a, b), (a_dot, b_dot) = primals, tangents
    # The full decomposition through the inner twin, whose own rule differentiates this
    # rule again (jax.hessian): exact at distinct eigenvalues, NaN on degenerate pairs.
    w, v = _eigh_gen_inner(a, b, degenerate_tol, True)
    a_dot = _hermitian_part(a_dot)
    b_dot = _hermitian_part(b_dot)
    # dw_i = Re(P_ii - w_i Q_ii) = Re sum_j conj(V_ji) (dA V - dB V diag(w))_ji
    x = _mm(a_dot, v) - _mm(b_dot, v) * w.astype(v.dtype)[..., None, :]
    return w, jnp.real(jnp.sum(jnp.conj(v) * x, axis=-2))


_eigvalsh_gen_entry = jit_entry(lambda a, b, tol: _eigvalsh_gen(a, b, tol), static_argnums=(2,))


def eigvalsh_generalized(
    a: ArrayLike,
    b: ArrayLike,
    *,
    degenerate_tol: float | None = None,
    check: bool = False,
) -> jax.Array:
    r"""Eigenvalues of the Hermitian-definite pencil ``A v = w B v``, without eigenvectors.

    The values of :func:`eigjax.eigh_generalized`, differentiable in ``A`` and ``B``.
    When nothing is differentiated no eigenvectors are computed: the Cholesky reduction
    ``C = L^{-1} A L^{-H}`` (``B = L L^H``) is followed by the values-only solver of
    :func:`eigjax.eigvalsh` (LAPACK ``syevd``/``heevd`` with ``jobz='N'`` on the CPU).
    Under differentiation the rule runs the full decomposition for ``V`` (``V^H B V = I``).

    Derivative: with ``P = V^H dA V`` and ``Q = V^H dB V``, ``dw_i = Re(P_ii - w_i Q_ii)``
    (two matrix products, no eigengaps, so never NaN from degeneracy). At a degenerate
    eigenvalue it is exact for every loss symmetric in each degenerate group's eigenvalues
    (e.g. the sum of the group, ``sum(w**2)``); a single eigenvalue of a degenerate group
    is not differentiable there, and what is returned for it is the diagonal entry of
    ``(P - w Q)`` in the computed (arbitrary) basis of the group, as for
    :func:`eigjax.eigvalsh`. Second derivatives (``jax.hessian``) go through
    :func:`eigjax.eigh_generalized`'s rule: exact at distinct eigenvalues, NaN at
    degenerate pairs.

    Args:
      a: Hermitian matrices, shape ``(..., n, n)`` (the Hermitian part is used, and the
        tangent is projected on Hermitian matrices).
      b: Hermitian positive definite matrices, the same shape as ``a``.
      degenerate_tol: used only by second and higher derivatives (eigenvalue pairs
        closer than this are degenerate there, and get NaN); see
        :func:`eigjax.eigh_generalized`. First derivatives do not depend on it.
      check: if True and ``b`` is concrete (not traced under ``jit``/``grad``), raise
        ``ValueError`` when ``b`` is not positive definite. Traced input is not checked.

    Returns:
      Ascending real eigenvalues, shape ``(..., n)``. A ``b`` that is not positive
      definite, or a non-finite entry in ``a`` or ``b``, gives all-NaN values (and NaN
      derivatives) for that matrix of the batch.

    Raises:
      TypeError: ``a`` or ``b`` is not a numeric array.
      ValueError: ``a`` or ``b`` is not square, their shapes differ, or (with
        ``check=True``) ``b`` is not positive definite.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> a = jnp.array([[2., 0.], [0., 3.]]); b = jnp.array([[2., 0.], [0., 1.]])
      >>> eigjax.eigvalsh_generalized(a, b).round(6).tolist()
      [1.0, 3.0]
    """
    a, b, degenerate_tol = _check_pencil(a, b, degenerate_tol, check, fn=_FN_VALUES)
    return _eigvalsh_gen_entry(a, b, degenerate_tol)
