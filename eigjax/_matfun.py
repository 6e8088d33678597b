"""Spectral functions of Hermitian matrices, ``f(A) = V diag(f(w)) V^H``, and their derivatives.

Maths (Daleckii & Krein 1965; Bhatia, "Matrix Analysis", 1997, thm. V.3.3; Higham,
"Functions of Matrices", 2008, thm. 3.11; DESIGN.md section 2). For Hermitian
``A = V diag(w) V^H``, ``P = V^H dA V`` and a function ``f`` differentiable on the spectrum,

    d f(A) = V (G o P) V^H,      G_ij = (f(w_i) - f(w_j)) / (w_i - w_j),   G_ii = f'(w_i).

``G`` is the first divided difference of ``f``. It is a continuous function of
``(w_i, w_j)``, so unlike the eigenvector derivative there is no degeneracy problem at
all: at ``A = I`` the derivative of ``sqrtm`` is exactly ``dA / 2``.

Evaluating ``G`` accurately. The quotient loses ``~ eps |f| / |w_i - w_j|`` to
cancellation when the eigenvalues are close. We use the identity

    G_ij = int_0^1 f'(w_j + t (w_i - w_j)) dt

and evaluate it by 5-point Gauss-Legendre quadrature when the pair is close:
``|w_i - w_j| <= 0.1 max(|w_i|, |w_j|)`` and ``|w_i - w_j| |f''(w_j)| <= |f'(w_j)| / 2``
(``f'`` varies little between them), or ``|w_i - w_j| <= sqrt(eps) max_k |w_k|``. The nodes lie between
the two eigenvalues, so inside the domain of ``f`` whenever both eigenvalues are (sqrt
and log included). For a pair that close, the relative error of the quadrature for
power-like functions (singular at 0) and for entire functions is below ``1e-14``, and the
quotient used for the other pairs loses at most ``~ 10 eps`` relative for power-like
functions and ``~ sqrt(eps)`` for ``exp`` on eigenvalues tiny against ``||A||``. The
known weak case: ``sqrtm``/``powm`` with two eigenvalues both within ``sqrt(eps) ||A||``
of zero, where the quadrature misses the endpoint singularity of ``f'`` (the derivative is
itself ill-conditioned there). ``f'`` comes from ``jax.jvp`` of ``f``, so ``f`` must be
elementwise. Every branch is built with the "double where" pattern: no NaN or inf leaks
from an unselected branch into a derivative.

Higher order. The JVP rule is differentiable JAX that calls :func:`eigjax.eigh`'s custom
JVP for the decomposition, so ``jax.hessian`` works and matches finite differences of the
gradient at inputs with distinct eigenvalues. KNOWN LIMITATION: at exactly degenerate
inputs (the identity, repeated eigenvalues) the second derivative is wrong (finite, but
off by O(1) at the identity): eigh's ``F_ij = 0`` rule is exact only for losses that stay
basis-invariant when the degenerate eigenvalues split, and the tangent ``V (G o P) V^H``
depends on that split through ``G``. A correct rule needs the second divided differences
``f[w_i, w_k, w_j]`` (an O(n^3) tensor); not implemented (tests mark it xfail, strict).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._checks import as_square_matrix
from ._eigh import _eigh, _h, _hermitian_part, _mm

# Gauss-Legendre nodes/weights on [0, 1].
_GL_X, _GL_W = np.polynomial.legendre.leggauss(5)
_GL_X = (_GL_X + 1.0) / 2.0
_GL_W = _GL_W / 2.0
_REL_CLOSE = 0.1


def _derivative(f: Callable, x: jax.Array) -> jax.Array:
    """Elementwise ``f'(x)`` for an elementwise ``f``."""
    return jax.jvp(f, (x,), (jnp.ones_like(x),))[1]


def _divided_differences(f: Callable, w: jax.Array, fw: jax.Array) -> jax.Array:
    """``G_ij = (f(w_i) - f(w_j)) / (w_i - w_j)``, ``f'`` on (near-)equal pairs; ``(..., n, n)``."""
    wi, wj = w[..., :, None], w[..., None, :]
    d = wi - wj
    ws = jax.lax.stop_gradient(w)
    eps = jnp.finfo(w.dtype).eps
    scale = jnp.max(jnp.abs(ws), axis=-1, keepdims=True)[..., None]
    pair_scale = jnp.maximum(jnp.abs(ws)[..., :, None], jnp.abs(ws)[..., None, :])
    # Quadrature also needs f' to vary little over the interval: |d f''| <= |f'| / 2 at
    # w_j (automatic for powers and log at 10% relative distance; for exp it means
    # |d| <= 1/2, where the quotient of exp at (50, 55) would otherwise be replaced by a
    # quadrature over e^x on an interval of length 5, accurate only to 1e-6).
    f1, f2 = jax.jvp(lambda x: _derivative(f, x), (ws,), (jnp.ones_like(ws),))
    smooth = jnp.abs(jax.lax.stop_gradient(d) * f2[..., None, :]) <= 0.5 * jnp.abs(f1[..., None, :])
    abs_d = jnp.abs(jax.lax.stop_gradient(d))
    close = (abs_d <= _REL_CLOSE * pair_scale) & smooth | (abs_d <= np.sqrt(eps) * scale)
    # Quotient on the pairs that are far apart (safe denominator elsewhere).
    safe_d = jnp.where(close, jnp.ones_like(d), d)
    quotient = (fw[..., :, None] - fw[..., None, :]) / safe_d
    # Quadrature of f' between the two eigenvalues on the close pairs; far pairs
    # evaluate f' at w_j (inside the domain), so nothing unselected is NaN.
    d_close = jnp.where(close, d, jnp.zeros_like(d))
    t = jnp.asarray(_GL_X, dtype=w.dtype).reshape((1,) * d.ndim + (-1,))
    gl_w = jnp.asarray(_GL_W, dtype=w.dtype).reshape((1,) * d.ndim + (-1,))
    nodes = wj[..., None] + d_close[..., None] * t
    quad = jnp.sum(_derivative(f, nodes) * gl_w, axis=-1)
    # Exactly equal eigenvalues (the diagonal, the identity): f' itself, with no
    # rounding from the quadrature weights, so d sqrtm(I)[E] = E / 2 exactly.
    at_wj = _derivative(f, wj + jnp.zeros_like(d))
    quad = jnp.where(jax.lax.stop_gradient(d) == 0, at_wj, quad)
    quotient = quotient.astype(jnp.result_type(quotient, quad))
    return jnp.where(close, quad.astype(quotient.dtype), quotient)


def _reconstruct(v: jax.Array, fw: jax.Array) -> jax.Array:
    dtype = jnp.result_type(v, fw)
    v = v.astype(dtype)
    return _mm(v * fw.astype(dtype)[..., None, :], _h(v))


# f is static (a hashable, closure-converted function); the values it closed over are
# passed in ``consts`` so that they are differentiable and may be traced.
@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _matfun(f, a, consts):
    w, v = _eigh(a, True, None, None)
    return _reconstruct(v, f(w, *consts))


@_matfun.defjvp
def _matfun_jvp(f, primals, tangents):
    a, consts = primals
    a_dot, consts_dot = tangents
    w, v = _eigh(a, True, None, None)  # differentiable decomposition: hessians work
    fw = f(w, *consts)
    out = _reconstruct(v, fw)
    p = _mm(_h(v), _mm(_hermitian_part(a_dot), v))
    g = _divided_differences(lambda x: f(x, *consts), w, fw)
    inner = g.astype(jnp.result_type(g, p)) * p
    if consts:
        # f(w; c) also moves with its own parameters c: add diag(df/dc . dc).
        _, fw_dot = jax.jvp(lambda *c: f(w, *c), tuple(consts), tuple(consts_dot))
        idx = jnp.arange(w.shape[-1])
        inner = inner.astype(jnp.result_type(inner, fw_dot))
        inner = inner.at[..., idx, idx].add(fw_dot.astype(inner.dtype))
    vv = v.astype(jnp.result_type(v, inner))
    out_dot = _mm(vv, _mm(inner, _h(vv)))
    return out, out_dot.astype(out.dtype)


def matrix_function(a: ArrayLike, f: Callable[[jax.Array], jax.Array], *, fn: str = "eigjax.matrix_function") -> jax.Array:
    r"""Spectral function ``f(A) = V diag(f(w)) V^H`` of Hermitian matrices, differentiable.

    The derivative is the Daleckii-Krein formula ``d f(A) = V (G o P) V^H``, ``P = V^H dA V``,
    with ``G`` the divided differences of ``f`` on the eigenvalues and ``f'`` on (near-)equal
    ones: exact and finite at degenerate points such as the identity. Second derivatives work.

    Args:
      a: Hermitian matrices, shape ``(..., n, n)``, real or complex. The Hermitian part
        ``(a + a^H)/2`` is used (and the gradient is Hermitian), as in :func:`eigjax.eigh`.
      f: an **elementwise** JAX function of the real eigenvalues (e.g. ``jnp.exp``,
        ``lambda w: jnp.tanh(3 * w)``). It may close over traced values (they are
        differentiated too). Its output may be complex (``lambda w: jnp.exp(1j * t * w)``).
        Eigenvalues outside the domain of ``f`` give NaN, as ``f`` itself does.
      fn: name used in error messages.

    Returns:
      ``f(A)``, shape ``(..., n, n)``, dtype the result type of ``a`` and ``f(w)``.

    Raises:
      TypeError, ValueError: ``a`` is not a square (batched) matrix.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> a = jnp.array([[2., 1.], [1., 2.]])
      >>> eigjax.matrix_function(a, lambda w: w ** 2).round(6).tolist()
      [[5.0, 4.0], [4.0, 5.0]]
    """
    a = as_square_matrix(a, name="a", fn=fn)
    if not callable(f):
        raise TypeError(f"{fn}: argument `f` must be a callable elementwise function; got {type(f).__name__}.")
    w_example = jnp.zeros(a.shape[:-1], dtype=jnp.finfo(a.dtype).dtype)
    f_conv, consts = jax.closure_convert(f, w_example)
    return _matfun(f_conv, a, tuple(consts))


def sqrtm(a: ArrayLike) -> jax.Array:
    r"""Principal square root of Hermitian positive semi-definite matrices.

    Negative eigenvalues (also rounding-level ones of a singular input) give NaN. The
    derivative is infinite at a singular ``a`` and ill-conditioned near one.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.sqrtm(jnp.array([[4., 0.], [0., 9.]])).tolist()
      [[2.0, 0.0], [0.0, 3.0]]
    """
    return matrix_function(a, jnp.sqrt, fn="eigjax.sqrtm")


def inv_sqrtm(a: ArrayLike) -> jax.Array:
    r"""``A^{-1/2}`` of Hermitian positive definite matrices (whitening); NaN/inf otherwise.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.inv_sqrtm(jnp.array([[4., 0.], [0., 16.]])).tolist()
      [[0.5, 0.0], [0.0, 0.25]]
    """
    return matrix_function(a, jax.lax.rsqrt, fn="eigjax.inv_sqrtm")


def logm(a: ArrayLike) -> jax.Array:
    r"""Principal logarithm of Hermitian positive definite matrices; NaN/-inf otherwise.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.logm(jnp.eye(2)).tolist()
      [[0.0, 0.0], [0.0, 0.0]]
    """
    return matrix_function(a, jnp.log, fn="eigjax.logm")


def expm(a: ArrayLike) -> jax.Array:
    r"""Matrix exponential of Hermitian matrices (via the eigendecomposition).

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.expm(jnp.zeros((2, 2))).tolist()
      [[1.0, 0.0], [0.0, 1.0]]
    """
    return matrix_function(a, jnp.exp, fn="eigjax.expm")


def powm(a: ArrayLike, p: ArrayLike) -> jax.Array:
    r"""Matrix power ``A^p`` of Hermitian matrices; ``p`` may be traced and is differentiable.

    For non-integer ``p`` the eigenvalues must be ``>= 0`` (``> 0`` for ``p < 1`` if a
    derivative is wanted); negative eigenvalues then give NaN, like ``jnp.power``.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.powm(jnp.array([[4., 0.], [0., 9.]]), 1.5).tolist()
      [[8.0, 0.0], [0.0, 27.0]]
    """
    a = as_square_matrix(a, name="a", fn="eigjax.powm")
    p = jnp.asarray(p)
    if p.ndim != 0:
        raise ValueError(f"eigjax.powm: argument `p` must be a scalar; got shape {tuple(p.shape)}.")
    p = p.astype(jnp.finfo(a.dtype).dtype) if jnp.issubdtype(p.dtype, jnp.floating) or jnp.issubdtype(p.dtype, jnp.integer) else p
    return matrix_function(a, lambda w: jnp.power(w, p), fn="eigjax.powm")
