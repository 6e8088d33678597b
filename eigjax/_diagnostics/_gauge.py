"""Gauge check: does a loss depend on the eigenvector gauge (phase, degenerate basis)?

*Is my loss well defined at all?* An eigenvector is defined only up to a phase (a sign
for real matrices), and inside a degenerate eigenspace only up to a unitary change of
basis (the *gauge*). A loss that depends on that choice has no derivative there, and
eigh's degenerate rule is exact precisely for the losses that do not (README, "When the
degenerate rule is exact"). :func:`check_gauge_invariance` changes the gauge and looks
whether the loss value or its gradient move.

Design. The user passes ``loss(a)``, a function of the *matrix* that calls eigjax
internally, so the gauge has to be changed inside eigjax. Each decomposition declares its
forward solver a hook point of a kind (:mod:`eigjax._hooks`: ``eigh``'s, ``eig``'s with
and without left vectors, ``eigh_generalized``'s, ``eigh_partial``'s solve);
:func:`random_gauge` activates the hooks with one transform per kind, which returns
``V U`` instead of ``V``, with ``U`` a random unitary that is block diagonal on the
degenerate groups of the call (the default tolerance of the derivative rule) and a random
phase (a random sign for real matrices) on simple eigenvalues; ``V U`` stays
``B``-orthonormal in the generalized problem. ``U`` is the polar factor of a random matrix
masked to the groups, so it is exactly of that structure. It carries no gradient. Every
JVP rule computes its tangents from the eigenvectors that its own primal call returns, so
it sees the same gauge as the loss. While a gauge is active the decompositions' jitted
entry points are called uncompiled (:func:`eigjax._hooks.jit_entry`). Calls are counted:
a loss that reaches eigjax only through a function compiled *before* the check (a cached
``jax.jit``) is not intercepted, and the check says so (``calls == 0``) rather than
passing silently. Public functions built on other routes (spectral matrix functions are
gauge-free by construction) are not touched.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._checks import as_square_matrix, check_nonnegative_float
from .._gaps import default_tolerance, gap_matrix
from .._guard import trust_loss
from .._hooks import KINDS, intercepting
from .._linalg import HIGHEST as _HIGHEST
from .._linalg import _norm
from ._grad import _flat
from ._grad import _vnorm as norm  # scaled: no overflow at ||a|| ~ 1e20 in float32
from ._report import _closure, _general_tolerance


class GaugeCheck(NamedTuple):
    """Result of :func:`check_gauge_invariance` (largest over the trials).

    Attributes:
      value_change: ``||L(gauge) - L||`` over all output entries.
      grad_change: ``||grad(gauge) - grad||`` (gradient of a fixed random
        combination of the outputs; of the loss itself when it is a scalar).
      value_tol, grad_tol: the thresholds used, ``sqrt(eps)`` times the scale of the
        value (``|L| + ||grad|| ||a||_F``) and of the gradient.
      calls: number of eigjax decompositions intercepted while evaluating the loss
        and its gradient under one gauge; 0 means nothing was tested (see the
        module docstring).
      invariant: ``value_change <= value_tol`` and ``grad_change <= grad_tol``.
    """

    value_change: jax.Array
    grad_change: jax.Array
    value_tol: jax.Array
    grad_tol: jax.Array
    calls: jax.Array
    invariant: jax.Array


def _polar_unitary(key, mask: jax.Array, dtype) -> jax.Array:
    """Random unitary with the sparsity of ``mask`` (a block-diagonal pattern)."""
    r = jax.random.normal(key, mask.shape, dtype)
    x = jnp.where(mask, r, jnp.zeros_like(r))
    u, _, vh = jnp.linalg.svd(x, full_matrices=False)
    return jnp.matmul(u, vh, precision=_HIGHEST)


def _gauge(key, v: jax.Array, degenerate: jax.Array) -> jax.Array:
    n = v.shape[-1]
    if n == 0:
        return v
    mask = _closure(degenerate | jnp.broadcast_to(jnp.eye(n, dtype=bool), degenerate.shape))
    u = _polar_unitary(key, mask, v.dtype)
    return jnp.matmul(v, jax.lax.stop_gradient(u), precision=_HIGHEST)


# Transforms of the forward solvers' outputs, ``transform(key, args, out)``. A forward
# solver knows no tolerance, so the decomposition's default one decides the groups.
def _eigh_transform(key, args, out):
    # _eigh_forward(a), _eigh_forward_sym(a), _generalized_eigh._forward(a, b) -> (w, v)
    w, v = out
    ws = jax.lax.stop_gradient(w)
    return w, _gauge(key, v, jnp.abs(gap_matrix(ws)) <= default_tolerance(ws, w.shape[-1]))


def _eig_gauge(key, args, w, v, y=None):
    """``V U`` with unit-norm columns (and ``Y U`` rescaled to keep ``Y^H V = I``)."""
    n = w.shape[-1]
    ws, vs = jax.lax.stop_gradient((w, v))
    eye = jnp.broadcast_to(jnp.eye(n, dtype=vs.dtype), vs.shape)
    s = _norm(jnp.linalg.solve(vs, eye), axis=-1)
    tol = _general_tolerance(jax.lax.stop_gradient(args[0]), s)
    mask = _closure((jnp.abs(gap_matrix(ws)) <= tol) | jnp.broadcast_to(jnp.eye(n, dtype=bool), ws.shape[:-1] + (n, n)))
    u = jax.lax.stop_gradient(_polar_unitary(key, mask, v.dtype))
    v2 = jnp.matmul(v, u, precision=_HIGHEST)
    norms = jnp.expand_dims(_norm(jax.lax.stop_gradient(v2), axis=-2), -2)
    norms = norms.astype(v2.dtype)  # real norms in v2's complex dtype
    if y is None:
        return v2 / norms
    # (Y U)^H (V U) = U^H U = I; scaling column i of V by 1/c_i scales that of Y by c_i
    return v2 / norms, jnp.matmul(y, u, precision=_HIGHEST) * norms


def _eig_transform(key, args, out):
    # _eig_forward(a, solver) -> (w, v), unit-norm columns.
    w, v = out
    return w, _eig_gauge(key, args, w, v)


def _eig_left_transform(key, args, out):
    # _eig_left_forward(a, solver) -> (w, v, y), unit-norm columns of v, Y^H V = I.
    w, v, y = out
    return (w, *_eig_gauge(key, args, w, v, y))


def _partial_transform(key, args, out):
    # _partial._solve._solve(params, matmat, cfg) -> (w, V as columns (n, k), residuals, ...)
    w, v = out[0], out[1]
    ws = jax.lax.stop_gradient(w)
    mask = jnp.abs(gap_matrix(ws)) <= default_tolerance(ws, args[2].n)
    return (w, _gauge(key, v, mask), *out[2:])


# The transform of each kind of hook point (eigjax._hooks), ``transform(key, args, out)``.
# The hook points are the forward solvers, not the custom_jvp functions: every JVP rule
# computes its tangents from the eigenvectors its own primal call returns, so the rule
# then sees the same gauge as the loss (intercepting the custom_jvp function left eigh's
# eigenvalue tangents in the solver's gauge: a single eigenvalue of a degenerate group passed).
_TRANSFORMS = {
    "hermitian": _eigh_transform,
    "eig": _eig_transform,
    "eig_left": _eig_left_transform,
    "partial": _partial_transform,
}
assert set(_TRANSFORMS) == set(KINDS)


@contextlib.contextmanager
def random_gauge(key: jax.Array):
    """Context manager: inside it, eigjax's decompositions return a random gauge.

    Every call of :func:`eigjax.eigh` / :func:`eigjax.eig` / :func:`eigjax.eigh_generalized`
    / :func:`eigjax.eigh_partial` traced inside the block returns ``V U`` with ``U`` a random
    unitary, block diagonal on degenerate groups (default tolerance) and a random phase
    (sign) on simple eigenvalues - an equally valid
    eigendecomposition. Results of a gauge-invariant computation do not change.
    Yields a function returning the number of decompositions intercepted so far.
    Not thread-safe across concurrent traces; used by :func:`check_gauge_invariance`.

    Example:
      >>> import jax, jax.numpy as jnp, eigjax
      >>> a = jnp.diag(jnp.array([1.0, 2.0]))
      >>> with eigjax.random_gauge(jax.random.key(1)) as calls:
      ...     v = eigjax.eigh(a).eigenvectors
      >>> calls(), jnp.abs(v).tolist()
      (1, [[1.0, 0.0], [0.0, 1.0]])
    """
    box = {"calls": 0}

    def handler(kind, args, out):
        box["calls"] += 1
        # One key for every call: the same input gets the same gauge however often
        # the loss decomposes it (a loss may call eigh(a) several times).
        return _TRANSFORMS[kind](key, args, out)

    with intercepting(handler):
        yield lambda: box["calls"]


def check_gauge_invariance(
    loss: Callable[[jax.Array], Any],
    a: ArrayLike,
    *,
    trials: int = 2,
    rtol: float | None = None,
    key: jax.Array | None = None,
) -> GaugeCheck:
    r"""Does ``loss(a)`` depend on the eigenvector gauge (phase, degenerate basis)?

    Evaluates ``loss`` and its gradient normally and under ``trials`` random gauges
    (:func:`random_gauge`): eigenvectors multiplied by random phases (signs for real
    matrices) and, inside each degenerate group of the decomposition's own
    tolerance, by a random unitary. A loss is *gauge invariant* when neither its
    value nor its gradient moves beyond rounding (``rtol``, default ``sqrt(eps)``,
    times the scale of the loss). Only then is the loss well defined at ``a``
    *and* eigh's degenerate derivative rule exact for it: a changing value means the
    loss depends on an arbitrary convention (``V[:, 0]`` of a degenerate group, raw
    entries of complex eigenvectors); a changing gradient with a constant value
    means the loss is well defined but its derivative is not given by the
    degenerate rule (a single eigenvalue of a degenerate group, or
    ``V diag(f(w)) V^H`` with a varying ``f'``, which needs a spectral matrix
    function).

    ``loss`` is a function of the matrix that calls eigjax's decompositions
    (directly, not only through a ``jax.jit``-compiled function traced earlier).

    The tolerances are relative to the loss's own size (its values, its gradient, and
    that times ``||a||``), so the check reads the same at any scale of ``a`` or of the
    loss. A loss that is a constant written as a cancelling difference
    (``trace(V_G V_G^H) - 2``) is all rounding, its own size included, and may be
    reported as not invariant: a false alarm, never a false pass.

    Args:
      loss: ``loss(a)`` returning an array or pytree (real or complex).
      a: the matrix (or batch) at which to check.
      trials: number of random gauges.
      rtol: relative threshold; default ``sqrt(eps)`` of ``a``'s dtype.
      key: ``jax.random`` key; default ``jax.random.key(0)``.

    Returns:
      :class:`GaugeCheck`; works under ``jit``.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> a = jnp.eye(3)                                      # triple eigenvalue
      >>> ok = lambda f: bool(eigjax.check_gauge_invariance(f, a).invariant)
      >>> ok(lambda a: jnp.sum(eigjax.eigh(a).eigenvectors ** 2))
      True
      >>> ok(lambda a: jnp.sum(eigjax.eigh(a).eigenvectors[:, 0]))
      False
    """
    fn = "eigjax.check_gauge_invariance"
    a = as_square_matrix(a, name="a", fn=fn)
    rtol = check_nonnegative_float(rtol, name="rtol", fn=fn)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"{fn}: option `trials` must be a positive int; got {trials!r}.")
    rdtype = jnp.finfo(a.dtype).dtype
    eps = float(jnp.finfo(rdtype).eps)
    rtol = float(eps**0.5) if rtol is None else rtol
    if key is None:
        key = jax.random.key(0)
    calls = [0]

    # Run eagerly (or inside the caller's jit): eager primitives are compiled once per
    # shape and reused by every later check, which measured faster than one jit per
    # call. The reference evaluation comes first: a jitted function inside `loss` traced
    # there is then reused from its cache under the gauge (not intercepted, so `calls`
    # stays 0 and the check warns) instead of leaking a gauge into the reference.
    def run(a, key):
        wkey, *gkeys = jax.random.split(key, trials + 1)
        out0 = _flat(loss(a))
        weights = jax.random.normal(wkey, out0.shape, rdtype) if out0.size > 1 else jnp.ones(out0.shape, rdtype)

        def scalar(x):
            return jnp.sum(jnp.real(_flat(loss(x))) * weights)

        g0 = jax.grad(scalar)(a)
        vchange, gchange, vscale, gscale = [], [], [], []
        for k in gkeys:
            with random_gauge(k) as ncalls:
                out1 = _flat(loss(a))
                g1 = jax.grad(scalar)(a)
                calls[0] = max(calls[0], ncalls())
            vchange.append(norm(out1 - out0))
            gchange.append(norm(g1 - g0))
            vscale.append(jnp.maximum(norm(out0), norm(out1)))
            gscale.append(jnp.maximum(norm(g0), norm(g1)))
        anorm = norm(a)
        gs = jnp.max(jnp.stack(gscale))
        # In the loss's own units: its values and its gradient times ||a|| for the value;
        # for the gradient, its size and the loss's over ||a|| (rounding of a gradient that
        # cancels to ~0, sum(V**2)). An absolute floor in units of `a` (100 eps (1 + ||a||),
        # before) let a non-invariant eigenvector loss pass at ||a|| ~ 1e5 in float32 (1e13
        # in float64).
        vs = jnp.max(jnp.stack(vscale))
        per_a = jnp.where(anorm > 0, vs / jnp.where(anorm > 0, anorm, 1), 0)
        value_tol = (rtol + 100 * eps) * (vs + gs * anorm)
        grad_tol = rtol * gs + 100 * eps * (gs + per_a)
        vc, gc = jnp.max(jnp.stack(vchange)), jnp.max(jnp.stack(gchange))
        return vc, gc, value_tol.astype(rdtype), grad_tol.astype(rdtype)

    # The cut rule's own gradients are compared across gauges: the reverse-mode guard
    # (eigjax._guard) would turn the non-invariant ones into NaN, so it is off here.
    with trust_loss():
        vc, gc, value_tol, grad_tol = run(a, key)
    if calls[0] == 0:
        warnings.warn(
            f"{fn}: `loss` called no eigjax decomposition that could be intercepted "
            "(a jax.jit-compiled function traced before the check is reused from its cache, "
            "or the loss uses only gauge-free routes such as spectral matrix functions); "
            "nothing was tested.",
            stacklevel=2,
        )
    invariant = (vc <= value_tol) & (gc <= grad_tol)
    return GaugeCheck(vc, gc, value_tol, grad_tol, jnp.asarray(calls[0], jnp.int32), invariant)
