"""Gradient check: the JVP of a loss against fourth-order central finite differences.

*Is the derivative of my loss right?* :func:`check_grad` compares ``jax.jvp`` with
fourth-order central finite differences along random Hermitian (or general) directions.
It returns a NamedTuple of arrays and works under ``jit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._checks import as_square_matrix, check_bool, check_nonnegative_float
from .._linalg import _norm


class GradCheck(NamedTuple):
    """Result of :func:`check_grad`; one entry per direction.

    Attributes:
      abs_err: ``||jvp - fd||`` (Euclidean norm over all output entries).
      rel_err: ``abs_err / max(||fd||, ||jvp||)`` (0 when both vanish).
      jvp_norm, fd_norm: the norms of the two directional derivatives.
      step: the finite-difference step ``h`` (the direction has norm ``||a||_F``,
        or 1 for ``a = 0``).
      ok: all ``rel_err <= rtol`` (or ``abs_err`` tiny) and all finite.
    """

    abs_err: jax.Array
    rel_err: jax.Array
    jvp_norm: jax.Array
    fd_norm: jax.Array
    step: jax.Array
    ok: jax.Array


def _flat(tree) -> jax.Array:
    leaves = [jnp.ravel(jnp.asarray(x)) for x in jax.tree_util.tree_leaves(tree)]
    if not leaves:
        return jnp.zeros((0,))
    dtype = jnp.result_type(*leaves)
    return jnp.concatenate([x.astype(dtype) for x in leaves])


def _vnorm(x: jax.Array) -> jax.Array:
    """Euclidean norm of all entries, scaled (no overflow or underflow at 1e+-20 in float32)."""
    return _norm(jnp.ravel(x), axis=0)


def _random_direction(key, a: jax.Array, hermitian: bool) -> jax.Array:
    d = jax.random.normal(key, a.shape, a.dtype)
    if hermitian:
        d = (d + jnp.conj(jnp.swapaxes(d, -1, -2))) / 2
    norm = _vnorm(d) if d.size else jnp.ones((), jnp.finfo(a.dtype).dtype)
    return d / jnp.where(norm > 0, norm, 1.0).astype(d.dtype)  # real norm in d's (maybe complex) dtype


def check_grad(
    loss: Callable[[jax.Array], Any],
    a: ArrayLike,
    *,
    directions: int = 3,
    hermitian: bool = True,
    h: float | None = None,
    rtol: float | None = None,
    key: jax.Array | None = None,
) -> GradCheck:
    r"""Compare the JVP of ``loss`` with central finite differences.

    For each of ``directions`` random directions ``E`` (Hermitian when
    ``hermitian``, of Frobenius norm ``||a||_F``, or 1 if ``a = 0``) this compares
    ``jax.jvp(loss, (a,), (E,))`` with the fourth-order central difference

        ``(-L(a+2hE) + 8 L(a+hE) - 8 L(a-hE) + L(a-2hE)) / (12 h)``.

    The default step ``h = eps^(1/4) / 10`` (``1.2e-5`` in float64, ``1.9e-3`` in
    float32) sits well below the ``eps^(1/5)`` that balances the ``h^4`` truncation
    error with the ``eps/h`` rounding error for a loss varying on the scale of
    ``||a||``: eigenvector functions vary on the scale of the eigengaps, which are
    smaller (``eps^(1/4)`` failed correct rules at n = 16 in float32 5 times in 6). Only compare
    well-defined quantities: at a degenerate point the finite differences of a
    gauge-dependent loss (a single eigenvector) are meaningless, and a perturbation
    ``h ||a||`` larger than an eigengap crosses it (pass a smaller ``h``).

    Args:
      loss: function of one array (the matrix) returning an array or pytree.
      a: the point, ``(..., n, n)``.
      directions: number of random directions.
      hermitian: draw Hermitian directions (the tangent space of Hermitian input);
        False draws general ones (for :func:`eigjax.eig` and friends).
      h: relative step; default ``eps(dtype)^(1/4) / 10``.
      rtol: threshold of ``ok``; default ``eps^(1/3)`` (6e-6 in float64, 5e-3 in
        float32) - errors of a correct rule are far below, a wrong rule far above.
      key: ``jax.random`` key for the directions; default ``jax.random.key(0)``.

    Returns:
      :class:`GradCheck`; works under ``jit`` (``loss`` is traced).

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> a = jnp.array([[2.0, 1.0], [1.0, 3.0]])
      >>> r = eigjax.check_grad(lambda a: eigjax.eigvalsh(a) ** 2, a)
      >>> bool(r.ok)
      True
    """
    fn = "eigjax.check_grad"
    a = as_square_matrix(a, name="a", fn=fn)
    h = check_nonnegative_float(h, name="h", fn=fn)
    rtol = check_nonnegative_float(rtol, name="rtol", fn=fn)
    hermitian = check_bool(hermitian, name="hermitian", fn=fn)
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise ValueError(f"{fn}: option `directions` must be a positive int; got {directions!r}.")
    if h == 0.0:
        raise ValueError(f"{fn}: option `h` must be > 0 (or None); got 0.0.")
    rdtype = jnp.finfo(a.dtype).dtype
    eps = float(jnp.finfo(rdtype).eps)
    h = float(eps**0.25) / 10 if h is None else h
    rtol = float(eps ** (1 / 3)) if rtol is None else rtol
    if key is None:
        key = jax.random.key(0)
    scale = _vnorm(a) if a.size else jnp.zeros((), rdtype)
    scale = jnp.where(scale > 0, scale, 1.0).astype(rdtype)
    out = jax.eval_shape(loss, a)
    if any(not jnp.issubdtype(x.dtype, jnp.inexact) for x in jax.tree_util.tree_leaves(out)):
        raise TypeError(
            f"{fn}: `loss` must return floating or complex values (derivatives of integers are zero); got {out}."
        )
    abs_errs, rel_errs, jnorms, fnorms, floors = [], [], [], [], []
    for k in jax.random.split(key, directions):
        e = _random_direction(k, a, hermitian) * scale.astype(a.dtype)  # real scale, maybe complex a
        _, t = jax.jvp(loss, (a,), (e,))
        t = _flat(t)
        f = [_flat(loss(a + c * h * e)) for c in (2.0, 1.0, -1.0, -2.0)]
        fd = (-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * h)
        err = _vnorm(t - fd.astype(t.dtype))
        jn, fdn = _vnorm(t), _vnorm(fd)
        den = jnp.maximum(jn, fdn)
        abs_errs.append(err)
        # The rounding error of the difference quotient, ~eps |f| / h: below it an
        # absolute error means nothing (both derivatives are zero up to rounding). It
        # scales with the loss values, so tiny inputs are judged like large ones.
        floors.append(10 * eps * jnp.max(jnp.stack([_vnorm(x) for x in f])) / h)
        rel_errs.append(jnp.where(den > 0, err / jnp.where(den > 0, den, 1.0), err))
        jnorms.append(jn)
        fnorms.append(fdn)
    abs_err, rel_err = jnp.stack(abs_errs), jnp.stack(rel_errs)
    jnorm, fnorm = jnp.stack(jnorms), jnp.stack(fnorms)
    finite = jnp.all(jnp.isfinite(abs_err))
    ok = finite & jnp.all((rel_err <= rtol) | (abs_err <= jnp.stack(floors)))
    return GradCheck(abs_err, rel_err, jnorm, fnorm, jnp.asarray(h, rdtype), ok)
