"""Degenerate guard: reverse-mode derivatives at degenerate pairs are exact or NaN.

Why. The derivative rules cut every degenerate pair (``F_ij = 0`` for
``|w_i - w_j| <= tol``, :mod:`eigjax._gaps`). The cut is exact for a loss that (a) is
invariant to the basis chosen inside each degenerate eigenspace and (b) weighs the
eigenvalues of a group alike; for any other loss it is a finite, wrong number (a PSD
projection ``V diag(max(w, 0)) V^T`` fitted to a target, a PCA loss on the top-2
eigenvectors of the identity). In reverse mode the cotangent tells which case holds,
so the rules route their tangent through :func:`guard`, an identity whose
**transpose** tests the cotangent and returns NaN for the matrices that fail.

Maths. Each rule forms the eigenvector tangent as ``dV = N(V q)``: ``q`` is the
coefficient matrix (``F o P`` for eigh, ``C`` for eigh_generalized, ``F o P`` before the
normalisation ``N`` for eig; ``N`` is the identity except for eig). JAX's cotangent of
``q`` is ``qbar = V^T Nbar`` (``Nbar`` the cotangent reaching ``V q``), and for a real
loss ``dL = Re sum(wbar * dw) + Re sum(qbar * dq)``. A change of basis inside a group
``G`` is ``V_G -> V_G U``; to first order ``dq = K`` on ``G x G`` and ``dw = 0``, so

* ``"hermitian"`` (eigh, eigh_generalized, eigh_partial: ``U`` unitary, ``K`` any
  anti-Hermitian ``m x m``; for eigh_generalized ``V^H B V = I`` allows exactly the
  same ``U``): ``Re sum(qbar_GG * K) = 0`` for every anti-Hermitian ``K`` iff
  ``qbar_GG`` is Hermitian, ``qbar_ij = conj(qbar_ji)``. For complex input the diagonal
  is checked too (``Im qbar_ii = 0``): the rules' ``F_ii = 0`` drops the eigenvector
  phase, which only a phase-invariant loss may ignore.
* ``"zero"`` (eig: ``U`` any invertible ``m x m``, then the unit-norm / largest-entry
  normalisation; ``N`` maps a diagonal ``K`` to zero, so the off-diagonal entries of ``K``
  are free): ``qbar_ij = 0`` for every cut pair, with ``qbar`` the *total* cotangent of
  ``q``, normalisation path included.

And (b): the rule gives the group's eigenvalues the derivatives ``P_ii``, the diagonal
of the group's ``m x m`` block, whose eigenvalues are what actually moves; only
``sum_G wbar_i P_ii`` with ``wbar`` equal on ``G`` (``= wbar tr P_GG``) is a function of
the block, so the test is ``wbar_i = wbar_j`` on cut pairs.

Both tests are on cut pairs only (the pairs the rule drops), O(n^2) on the cotangents
the transpose already has (the guard sits on ``q``, whose cotangent ``V^T Vbar`` reverse
mode forms anyway: no extra ``n x n`` product), and skipped by a ``lax.cond`` for a
matrix without cut pairs; the phase test is O(n). The primal carries the boolean mask of
cut pairs and ``w``. A failing matrix gets NaN for every cotangent (multiplicative mask: the NaN also
survives a further derivative of the backward pass). Under ``vmap`` and for batched
input only the failing matrix (or the failing cotangent of a ``jacrev``) is NaN.

What it cannot see. The tests are necessary, not sufficient: the cotangents at one
basis do not determine the loss. ``L1 = tr(V diag(f(w)) V^H C)`` (``f(A)`` rebuilt) and
``L2 = (f(w_1) + f(w_2))/2 tr(V_G V_G^H C)`` (exact under the cut) have the same
``(wbar, qbar)`` wherever ``diag(V_G^H C V_G)`` is constant, e.g. at ``A = I`` (where the
solver returns ``V = I``) with a target of constant diagonal: there the guard passes
and ``L1``'s gradient is wrong. For a generic basis this has probability zero;
``eigjax.check_gauge_invariance`` (random gauges) flags ``L1``. ``f(A)`` belongs in
``eigjax.matrix_function``.

Tolerances. Pair ``(i, j)`` passes when its violation is at most
``rel_ij * scale`` with

    rel_ij = sqrt(max(|w_i - w_j| / max_k |w_k|, 4 max(n, 8) eps)),
    scale  = S / max|w| (weights),  S (vectors),
    S      = max(max_k ||qbar[:, k]||_2, max_k |wbar_k| max_k |w_k|),

per matrix: the size of the whole cotangent, in the loss's units (``qbar`` has them,
``wbar`` those of the loss over ``w``), so that a part that cancels to rounding (a
``V diag(g) V^{-1}`` with ``g`` constant) is judged against the rest, not against its
own noise (that false alarm was seen for eig at ``A = c I``). An invariant loss
violates the tests only by rounding (``~ n eps scale``) and, for a pair split by
``d = |w_i - w_j|`` (cut: ``d`` up to the degeneracy tolerance),
by its weights' variation ``~ kappa d / max|w|`` (``kappa`` the loss's relative
curvature, 3 for ``sum(w**3)``). The square root passes every loss with
``kappa <= 1/rel`` (float64, exact group: ``1/rel ~ 1e7``; float32: ``~ 500``) and
flags a violation larger than ``rel`` of the cotangent's size (``8e-8``, ``2e-3`` at
n <= 8; genuine violations are O(1)). ``4 max(n, 8) eps`` is the floor of the default
degeneracy tolerance (:func:`eigjax._gaps.default_tolerance`), which also bounds the
products' rounding.

Options (``degenerate_check`` of the public functions, resolved by
:func:`resolve_check`): ``True`` (default) guards, ``False`` trusts the loss (the cut
rule alone, as before the guard), ``"debug"`` guards and prints (``jax.debug.print``)
for each failing matrix the function, its first failing pair and the violation against
its tolerance; the environment variable ``EIGJAX_DEBUG_GUARD=1`` makes ``"debug"`` the
default.

Forward mode (``jax.jvp``, ``jacfwd``) cannot see the loss: the guard is the identity
there and the cut rule is what it returns.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from ._linalg import _norm

__all__ = ["guard", "checked_pairs", "resolve_check", "trust_loss"]

_local = threading.local()


@contextlib.contextmanager
def trust_loss():
    """Inside this block a decomposition called with the default ``degenerate_check``
    trusts the loss (no guard), as :func:`eigjax.check_gauge_invariance` needs: it
    compares gradients of losses that the guard would turn into NaN."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def resolve_check(option, *, fn: str):
    """The static value of a public ``degenerate_check`` option: ``True``, ``False`` or
    ``"debug"``. ``None`` (the default) is ``True``, ``"debug"`` when the environment
    variable ``EIGJAX_DEBUG_GUARD`` is set (not ``0``), and ``False`` inside
    :func:`trust_loss` (which :func:`eigjax.check_gauge_invariance` enters). Resolved when the
    function is called, so the jit caches of the entry points keep the cases apart."""
    if option is None:
        if getattr(_local, "depth", 0):
            return False
        return "debug" if os.environ.get("EIGJAX_DEBUG_GUARD", "") not in ("", "0") else True
    if option is True or option is False or (isinstance(option, str) and option == "debug"):
        return option
    raise ValueError(
        f"{fn}: option `degenerate_check` must be True, False, 'debug' or None; got {option!r} "
        f"of type {type(option).__name__}."
    )


def checked_pairs(f: jax.Array) -> jax.Array:
    """The pairs a rule drops: the off-diagonal zeros of the inverse-gap matrix ``f``
    (:func:`eigjax._gaps.inverse_gaps`)."""
    n = f.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(n, dtype=bool), f.shape)
    return (jax.lax.stop_gradient(f) == 0) & ~eye


def guard(w_dot, q, checked, w, *, name: str, mode: str, phase: bool = False, debug: bool = False):
    """Identity on the tangents ``(w_dot, q)``; its transpose tests the cotangents.

    Args:
      w_dot: eigenvalue tangent, ``(..., n)``.
      q: eigenvector coefficient tangent (``dV = N(V q)``), ``(..., n, n)``.
      checked: bool ``(..., n, n)``, the off-diagonal pairs to test (:func:`checked_pairs`).
      w: eigenvalues ``(..., n)`` (primal; for the tolerances).
      name: the public function, for the debug report.
      mode: ``"hermitian"`` (unitary gauge) or ``"zero"`` (invertible gauge, eig).
      phase: also test the diagonal, ``Im qbar_ii = 0`` (complex Hermitian problems, whose
        rules drop the eigenvector phase): O(n), for every eigenvalue.
      debug: print the first failing pair of each failing matrix (``jax.debug.print``).
    """
    if mode not in ("hermitian", "zero"):
        raise ValueError(f"eigjax._guard.guard: mode must be 'hermitian' or 'zero'; got {mode!r}.")
    n = w.shape[-1]
    floor = 4.0 * max(n, 8) * float(jnp.finfo(w.dtype).eps)
    w = jax.lax.stop_gradient(w)
    checked = jax.lax.stop_gradient(checked)
    return guard_p.bind(w_dot, q, checked, w, name=name, mode=mode, floor=floor, phase=bool(phase), debug=bool(debug))


guard_p = Primitive("eigjax_degenerate_guard")
guard_p.multiple_results = True


def _impl(w_dot, q, checked, w, **_):
    return [w_dot, q]


guard_p.def_impl(_impl)
guard_p.def_abstract_eval(lambda w_dot, q, checked, w, **_: [w_dot, q])
mlir.register_lowering(guard_p, mlir.lower_fun(_impl, multiple_results=True))


def _jvp(primals, tangents, **params):
    # Linear in (w_dot, q) and constant in (checked, w): the tangent map is the guard itself.
    out = guard_p.bind(*primals, **params)
    tw, tq = (ad.instantiate_zeros(t) for t in tangents[:2])
    return out, guard_p.bind(tw, tq, primals[2], primals[3], **params)


ad.primitive_jvps[guard_p] = _jvp


def _batch(args, dims, **params):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    args = [batching.bdim_at_front(a, d, size) for a, d in zip(args, dims)]
    return guard_p.bind(*args, **params), [0, 0]


batching.primitive_batchers[guard_p] = _batch


def _rel(w, floor):
    """``rel_ij = sqrt(max(|w_i - w_j| / max|w|, floor))`` (module docstring)."""
    scale = jnp.max(jnp.abs(w), axis=-1, keepdims=True, initial=0.0)[..., None]
    rdt = scale.dtype
    scale = jnp.where(scale > 0, scale, jnp.finfo(rdt).tiny)
    gap = jnp.abs(w[..., None, :] - w[..., :, None]) / scale
    return jnp.sqrt(jnp.maximum(gap, jnp.asarray(floor, rdt)))


def _scales(wbar, qbar, w):
    """``(S, S / max|w|, max|w|)``, each ``(..., 1, 1)``: one scale for the whole cotangent.

    ``qbar`` has the units of the loss (``dV = V dq``, ``dq`` dimensionless) and ``wbar``
    those of the loss over ``w``, so ``S = max(max_k ||qbar[:, k]||, max|wbar| max|w|)``;
    the weights' scale is ``S / max|w|`` (``max|wbar|`` when ``w = 0``). A part of the
    cotangent that cancels to rounding (``V diag(g) V^{-1}`` with ``g`` constant) is then
    judged against the rest, not against its own rounding noise."""
    rdt = jnp.abs(w).dtype
    wmax = jnp.max(jnp.abs(w), axis=-1, initial=0.0)[..., None, None]
    sw = jnp.zeros_like(wmax) if wbar is None else jnp.max(jnp.abs(wbar), axis=-1, initial=0.0)[..., None, None]
    sq = jnp.zeros_like(wmax) if qbar is None else jnp.max(_norm(qbar, axis=-2), axis=-1, initial=0.0)[..., None, None]
    sq, sw = sq.astype(rdt), sw.astype(rdt)
    scale_q = jnp.maximum(sq, sw * wmax)
    scale_w = jnp.maximum(sw, jnp.where(wmax > 0, sq / jnp.where(wmax > 0, wmax, 1), 0))
    return scale_q, scale_w


def _violations(wbar, qbar, checked, w, mode, floor):
    """Per pair: [(weight violation, its tolerance)], [(vector violation, its tolerance)]."""
    rel = _rel(w, floor)
    scale_q, scale_w = _scales(wbar, qbar, w)
    out = []
    if wbar is not None:
        d = jnp.abs(wbar[..., :, None] - wbar[..., None, :])
        out.append((jnp.where(checked, d, 0), rel * scale_w))
    if qbar is not None:
        r = qbar - jnp.conj(jnp.swapaxes(qbar, -1, -2)) if mode == "hermitian" else qbar
        out.append((jnp.where(checked, jnp.abs(r), 0), rel * scale_q))
    return out


def _transpose(cts, w_dot, q, checked, w, *, name, mode, floor, phase, debug):
    del w_dot, q  # linear inputs (undefined primals)
    wbar, qbar = (None if type(ct) is ad.Zero else ct for ct in cts)
    if wbar is None and qbar is None:
        return [cts[0], cts[1], None, None]
    batch = w.shape[:-1]

    def pair_fails():
        tests = _violations(wbar, qbar, checked, w, mode, floor)
        if debug:
            _report(name, tests, wbar is not None, qbar is not None)
        # ~(d <= tol): a NaN violation fails too
        fails = functools.reduce(operator.or_, [~(d <= tol) for d, tol in tests])
        return jnp.any(fails, axis=(-2, -1))

    if debug:
        bad = pair_fails()
    else:
        # Most matrices have no cut pair: skip the O(n^2) passes (a real branch, also under
        # jacrev, whose vmap does not batch the primal mask; a select under vmap(grad)).
        bad = jax.lax.cond(jnp.any(checked), pair_fails, lambda: jnp.zeros(batch, bool))
    if phase and qbar is not None:
        # the phase: Im qbar_ii = 0, tolerance sqrt(floor) S (a gap of 0), O(n) beyond S
        scale_q, _ = _scales(wbar, qbar, w)
        im = jnp.abs(jnp.imag(jnp.diagonal(qbar, axis1=-2, axis2=-1)))
        bad = bad | jnp.any(~(im <= float(np.sqrt(floor)) * scale_q[..., 0]), axis=-1)
    mask = jax.lax.stop_gradient(jnp.where(bad, jnp.nan, 1.0)).astype(jnp.abs(w).dtype)
    outs = []
    for ct in cts:
        if type(ct) is ad.Zero:
            outs.append(ct)
        else:
            outs.append(ct * mask.reshape(mask.shape + (1,) * (ct.ndim - mask.ndim)).astype(ct.dtype))
    return [*outs, None, None]


def _report(name, tests, has_w, has_q):
    """``jax.debug.print`` the first failing pair of each failing matrix."""
    kinds = (["weights (wbar_i != wbar_j)"] if has_w else []) + (
        ["eigenvector rotation (cotangent not invariant)"] if has_q else []
    )
    for kind, (d, tol) in zip(kinds, tests):
        excess = jnp.where(d <= tol, -jnp.inf, d / jnp.where(tol > 0, tol, 1))
        n = d.shape[-1]
        flat = jnp.argmax(excess.reshape(excess.shape[:-2] + (n * n,)), axis=-1)
        i, j = flat // n, flat % n
        dij = jnp.take_along_axis(d.reshape(d.shape[:-2] + (n * n,)), flat[..., None], axis=-1)[..., 0]
        tij = jnp.take_along_axis(tol.reshape(tol.shape[:-2] + (n * n,)), flat[..., None], axis=-1)[..., 0]
        failing = jnp.any(~(d <= tol), axis=(-2, -1))
        jax.debug.print(
            f"eigjax degenerate guard ({name}): {kind} fails={{failing}}; first failing pair (i, j) = "
            "({i}, {j}), violation {dij} > tolerance {tij}. The gradient of the failing matrices is NaN "
            "(pass degenerate_check=False to trust the loss).",
            failing=failing,
            i=i,
            j=j,
            dij=dij,
            tij=tij,
        )


ad.primitive_transposes[guard_p] = _transpose
