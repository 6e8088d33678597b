"""Symmetric / Hermitian eigendecomposition with degenerate-safe derivatives.

Maths (Giles 2008, "An extended collection of matrix derivative results", sec. 3.1;
docs/derivatives.md). For Hermitian ``A = V diag(w) V^H`` and a tangent ``dA``, let
``P = V^H dA V``. Then

    dw = Re diag(P),        dV = V (F o P),

with ``F`` the inverse-gap matrix of :mod:`eigjax._gaps` (``F_ij = 1/(w_j - w_i)``,
zero on the diagonal and on degenerate pairs). The zero diagonal fixes the gauge:
``V^H dV`` has zero diagonal, so ``dV`` carries no change of eigenvector phase.
Setting ``F_ij = 0`` for a degenerate pair gives the exact derivative of every loss
that is invariant to the basis chosen inside that eigenspace; for other losses no
derivative exists at that point.

Cost. ``X = dA V``, ``P = V^H X`` and ``V (F o P)``: three ``n x n`` products, the
floor for an eigenvector derivative; the transpose (reverse mode) is three products
too. Eigenvalue-only functions use ``dw_i = Re sum_j conj(V_ji) X_ji``: one product.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from ._ad import twin_custom_jvp
from ._checks import as_square_matrix, check_bool, check_nonnegative_float
from ._dense_eigh import _eigh_forward, _eigh_forward_sym
from ._eigvals_only import eigvalsh_values
from ._gaps import inverse_gaps, nan_on_cut
from ._guard import checked_pairs, guard, resolve_check
from ._hooks import jit_entry
from ._linalg import _h, _hermitian_part, _mm


class EighResult(NamedTuple):
    """Result of :func:`eigh`: ascending real eigenvalues and unitary eigenvectors."""

    eigenvalues: jax.Array
    eigenvectors: jax.Array


def _eigvalsh_tangent(v: jax.Array, a_dot: jax.Array) -> jax.Array:
    """``Re diag(V^H dA V)`` with one matrix product."""
    x = _mm(a_dot, v)
    return jnp.real(jnp.sum(jnp.conj(v) * x, axis=-2))


# The custom_jvp functions below take the options as non-differentiable (static)
# arguments; they are written over (..., n, n) so vmap needs no batching rule.


def _eigh_primal(a, symmetrize, degenerate_tol, broadening, degenerate_check=True):
    return _eigh_forward_sym(a) if symmetrize else _eigh_forward(a)


def _eigh_rule(symmetrize, degenerate_tol, broadening, degenerate_check, primals, tangents, *, primal, higher):
    # The twin custom_jvp (eigjax._ad): `primal` is _eigh_inner, whose own rule (higher=True,
    # reached only by second and higher derivatives) is NaN on cut pairs. With broadening
    # the smooth F is differentiated as it is.
    (a,), (a_dot,) = primals, tangents
    w, v = primal(a, symmetrize, degenerate_tol, broadening, degenerate_check)
    if symmetrize:
        a_dot = _hermitian_part(a_dot)
    x = _mm(a_dot, v)
    # dw from X alone (not from diag(P)), so that an eigenvalue-only loss
    # transposes to one product and never touches the eigenvector branch.
    w_dot = jnp.real(jnp.sum(jnp.conj(v) * x, axis=-2))
    p = _mm(_h(v), x)
    f = inverse_gaps(w, degenerate_tol=degenerate_tol, broadening=broadening)
    if higher and broadening is None:
        f = nan_on_cut(f)
    q = f.astype(p.dtype) * p
    if degenerate_check and not higher and broadening is None:
        # Reverse mode tests the cotangent on the cut pairs: NaN unless the loss is
        # invariant there and weighs each group alike (eigjax._guard, unitary gauge).
        phase = jnp.issubdtype(p.dtype, jnp.complexfloating)
        w_dot, q = guard(
            w_dot,
            q,
            checked_pairs(f),
            w,
            name="eigjax.eigh",
            mode="hermitian",
            phase=phase,
            debug=degenerate_check == "debug",
        )
    v_dot = _mm(v, q)
    return (w, v), (w_dot, v_dot)


_eigh, _eigh_inner = twin_custom_jvp(_eigh_primal, _eigh_rule, nondiff_argnums=(1, 2, 3, 4))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _eigvalsh(a, symmetrize):
    # Runs alone only when nothing is differentiated: no eigenvectors (the rule has its own).
    return eigvalsh_values(a, symmetrize)


@_eigvalsh.defjvp
def _eigvalsh_jvp(symmetrize, primals, tangents):
    (a,), (a_dot,) = primals, tangents
    # Eigenvectors from _eigh_inner so higher derivatives work (NaN at cut pairs).
    w, v = _eigh_inner(a, symmetrize, None, None)
    if symmetrize:
        a_dot = _hermitian_part(a_dot)
    return w, _eigvalsh_tangent(v, a_dot)


# Entry points: one compiled program per shape and options for eager callers, called
# uncompiled while eigjax.random_gauge intercepts (eigjax._hooks.jit_entry).
_eigh_entry = jit_entry(lambda a, s, tol, br, chk: _eigh(a, s, tol, br, chk), static_argnums=(1, 2, 3, 4))
_eigvalsh_entry = jit_entry(lambda a, s: _eigvalsh(a, s), static_argnums=(1,))


def eigh(
    a: ArrayLike,
    *,
    symmetrize: bool = True,
    degenerate_tol: float | None = None,
    broadening: float | None = None,
    degenerate_check: bool | str | None = None,
) -> EighResult:
    r"""Eigendecomposition of Hermitian matrices with derivatives that stay finite.

    Like :func:`jax.numpy.linalg.eigh`, but its derivative is exact at degenerate
    eigenvalues for every loss that is invariant to the basis chosen inside each
    degenerate eigenspace and weighs each group's eigenvalues alike (a sum over a whole
    group of eigenvalues, ``sum(V**2)``, projectors onto a whole eigenspace,
    ``V diag(g) V^H`` with fixed ``g`` equal on each group): ``jnp.linalg.eigh`` returns
    NaN there. For other losses (one vector of a group, ``f(A) = V diag(f(w)) V^H`` with
    ``f' != 0`` on a group: use :func:`eigjax.matrix_function`) reverse mode returns NaN.

    Derivative rule (Giles 2008): with ``P = V^H dA V``, ``dw = Re diag(P)`` and
    ``dV = V (F o P)``, ``F_ij = 1/(w_j - w_i)``; ``F_ij = 0`` on the diagonal and
    for pairs with ``|w_i - w_j| <= degenerate_tol``. ``V^H dV`` has zero diagonal
    (no phase change).

    Args:
      a: array of shape ``(..., n, n)``, float32/float64/complex64/complex128
        (integer and bool input is promoted to the default float dtype, like
        ``jnp.linalg``). Leading dimensions are batch dimensions.
      symmetrize: if True (default), use the Hermitian part ``(a + a^H)/2`` of ``a``
        and of its tangent, so ``jax.grad`` returns a Hermitian gradient. If False,
        ``a`` and its tangents must already be Hermitian; only the lower triangle
        of ``a`` is read.
      degenerate_tol: eigenvalue pairs closer than this are treated as degenerate.
        Default: ``4 * max(n, 8) * eps(dtype) * max|w|``, a small multiple of the eigenvalues' own
        rounding error.
      broadening: if given (a float ``> 0``), use Lorentzian broadening
        ``F_ij = d/(d^2 + broadening)``, ``d = w_j - w_i``, instead of the cut.
      degenerate_check: reverse mode (``grad``, ``vjp``, ``jacrev``) tests the
        cotangent on every cut pair: the loss must be invariant to the basis of the
        group (``V^T Vbar`` Hermitian there; for complex input also real on the
        diagonal, no phase dependence) and weigh its eigenvalues alike (``wbar`` equal).
        A matrix that fails gets NaN derivatives (only that element of a batch) instead
        of the cut's wrong finite value. ``None`` (default): ``True``, or ``"debug"``
        when the environment variable ``EIGJAX_DEBUG_GUARD=1``; ``False`` trusts the
        loss (the cut alone); ``"debug"`` also prints (``jax.debug.print``) the first
        failing pair of each failing matrix. Forward mode cannot see the loss and
        always uses the cut. See docs/derivatives.md ("Exact or NaN").

    Returns:
      ``EighResult(eigenvalues, eigenvectors)``: real eigenvalues in ascending order,
      shape ``(..., n)``, and eigenvectors as columns, shape ``(..., n, n)``.
      A matrix with a NaN or inf entry (anywhere, also in the triangle that is not
      read) gives all-NaN eigenvalues and eigenvectors, never an error. Second and
      higher derivatives are exact at distinct eigenvalues and NaN at a cut pair
      (use :func:`eigjax.matrix_function` for spectral functions there).

    Raises:
      TypeError: ``a`` is not an array, or has a non-numeric dtype.
      ValueError: ``a`` has fewer than 2 dimensions or is not square.

    Example:
      >>> import jax, jax.numpy as jnp, eigjax
      >>> a = jnp.eye(3)                     # triple eigenvalue
      >>> loss = lambda a: jnp.sum(eigjax.eigh(a).eigenvectors ** 2)
      >>> bool(jnp.all(jnp.isfinite(jax.grad(loss)(a))))
      True
    """
    a = as_square_matrix(a, name="a", fn="eigjax.eigh")
    degenerate_tol = check_nonnegative_float(degenerate_tol, name="degenerate_tol", fn="eigjax.eigh")
    broadening = check_nonnegative_float(broadening, name="broadening", fn="eigjax.eigh")
    if broadening == 0.0:
        raise ValueError("eigjax.eigh: option `broadening` must be > 0 (or None); got 0.0.")
    symmetrize = check_bool(symmetrize, name="symmetrize", fn="eigjax.eigh")
    degenerate_check = resolve_check(degenerate_check, fn="eigjax.eigh")
    w, v = _eigh_entry(a, symmetrize, degenerate_tol, broadening, degenerate_check)
    return EighResult(w, v)


def eigvalsh(a: ArrayLike, *, symmetrize: bool = True) -> jax.Array:
    r"""Eigenvalues of Hermitian matrices, ascending, with a cheap, never-NaN derivative.

    The derivative is ``dw = Re diag(V^H dA V)`` (one matrix product): it needs no
    eigengaps, so it is finite at degenerate points. A loss of eigenvalues is
    differentiable there when it is symmetric within each degenerate group (such as
    the sum of the group); for other losses, the value returned is one of the
    one-sided derivatives.

    Args:
      a: array of shape ``(..., n, n)``; see :func:`eigh`.
      symmetrize: see :func:`eigh`.

    Returns:
      Real eigenvalues in ascending order, shape ``(..., n)``.

    Example:
      >>> import jax, jax.numpy as jnp, eigjax
      >>> a = jnp.array([[2., 1.], [1., 2.]])
      >>> g = jax.grad(lambda a: jnp.sum(eigjax.eigvalsh(a)))(a)
      >>> g.round(6).tolist()
      [[1.0, 0.0], [0.0, 1.0]]
    """
    a = as_square_matrix(a, name="a", fn="eigjax.eigvalsh")
    return _eigvalsh_entry(a, check_bool(symmetrize, name="symmetrize", fn="eigjax.eigvalsh"))
