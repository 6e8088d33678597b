"""NaN on the tangent slots that have no derivative, in both modes, and nowhere else.

Why. Some outputs of a decomposition have no derivative while the others do: the k-th
eigenvalue of :func:`eigjax.eigh_partial` and its eigenvector when a degenerate pair
straddles the block's edge, next to the eigenpairs inside the block. Multiplying the
tangent by NaN is right in forward mode, but the transpose of ``x -> m * x`` is
``ct -> m * ct``: reverse mode then gives ``0 * NaN = NaN`` in the bad slot even when the
loss does not use it, and the linear maps before it spread that NaN over the whole
gradient.

Maths. :func:`nan_slots` is the linear map ``x -> x`` on the good slots and ``x -> NaN``
on the bad ones (slot ``i``: ``x[..., i]``, the last axis; an eigenvector column). Its
transpose keeps the good slots of the cotangent and, in a bad slot, gives NaN where the
cotangent is nonzero and 0 where it is zero: a loss that uses a slot with no derivative
gets NaN, one that does not gets the exact gradient of what it uses. A further derivative
of either map is the map itself (the mask is data).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from eigjax._nan_slots import nan_slots
    >>> bad = jnp.array([True, False])
    >>> f = lambda x: nan_slots(x, bad)
    >>> jax.grad(lambda x: f(x)[1])(jnp.ones(2)).tolist()  # slot 0 not used: exact
    [0.0, 1.0]
    >>> bool(jnp.isnan(jax.grad(lambda x: f(x)[0])(jnp.ones(2))[0]))  # used: NaN
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir


def nan_slots(x: jax.Array, bad: jax.Array) -> jax.Array:
    """``x`` with NaN in the slots ``bad`` (bool, one per entry of ``x``'s last axis, batch
    axes as ``x``'s leading ones); transposes to NaN only where the cotangent uses them."""
    return nan_slots_p.bind(x, jax.lax.stop_gradient(bad))


def _mask(bad, x):
    """``bad`` broadcast against ``x``: ``(..., n)`` for ``x`` of ``(..., n)`` or ``(..., m, n)``."""
    return bad.reshape(bad.shape[:-1] + (1,) * (x.ndim - bad.ndim) + bad.shape[-1:])


def _impl(x, bad):
    return jnp.where(_mask(bad, x), jnp.nan, x).astype(x.dtype)


def _transpose_impl(ct, bad):
    return jnp.where(_mask(bad, ct), jnp.where(ct == 0, 0, jnp.nan), ct).astype(ct.dtype)


nan_slots_p = Primitive("eigjax_nan_slots")
nan_slots_p.def_impl(_impl)
nan_slots_p.def_abstract_eval(lambda x, bad: x)
mlir.register_lowering(nan_slots_p, mlir.lower_fun(_impl, multiple_results=False))

# The transpose is a primitive too, so that derivatives of the backward pass (hessian =
# jacfwd(jacrev)) meet a rule again; transposing it back gives the forward map.
nan_slots_t_p = Primitive("eigjax_nan_slots_transpose")
nan_slots_t_p.def_impl(_transpose_impl)
nan_slots_t_p.def_abstract_eval(lambda ct, bad: ct)
mlir.register_lowering(nan_slots_t_p, mlir.lower_fun(_transpose_impl, multiple_results=False))


def _jvp(p):
    def rule(primals, tangents):
        x, bad = primals
        return p.bind(x, bad), p.bind(ad.instantiate_zeros(tangents[0]), bad)

    return rule


def _transpose(q):
    def rule(ct, x, bad):
        del x  # the linear input
        return [ct if type(ct) is ad.Zero else q.bind(ct, bad), None]

    return rule


def _batch(p):
    def rule(args, dims):
        (x, bad), (dx, dbad) = args, dims
        size = x.shape[dx] if dx is not None else bad.shape[dbad]
        return p.bind(batching.bdim_at_front(x, dx, size), batching.bdim_at_front(bad, dbad, size)), 0

    return rule


for _p, _q in ((nan_slots_p, nan_slots_t_p), (nan_slots_t_p, nan_slots_p)):
    ad.primitive_jvps[_p] = _jvp(_p)
    ad.primitive_transposes[_p] = _transpose(_q)
    batching.primitive_batchers[_p] = _batch(_p)
