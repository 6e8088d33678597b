"""Spectral functions of Hermitian matrices, ``f(A) = V diag(f(w)) V^H``, and their derivatives.

Maths (Daleckii & Krein 1965; Bhatia, "Matrix Analysis", 1997, thm. V.3.3; Higham,
"Functions of Matrices", 2008, thm. 3.11; docs/derivatives.md). For Hermitian
``A = V diag(w) V^H``, ``P = V^H dA V`` and a function ``f`` differentiable on the spectrum,

    d f(A) = V (G o P) V^H,      G_ij = (f(w_i) - f(w_j)) / (w_i - w_j),   G_ii = f'(w_i).

``G`` is the first divided difference of ``f``. It is a continuous function of
``(w_i, w_j)``, so unlike the eigenvector derivative there is no degeneracy problem at
all: at ``A = I`` the derivative of ``sqrtm`` is exactly ``dA / 2``.

Second derivatives use the second divided differences ``f[w_i, w_k, w_j]`` (Bhatia,
sec. V.3): exact at degenerate points too, for ``jax.hessian`` and any other composition of
``jvp``/``vjp`` up to second order, in ``a`` and in the values ``f`` closes over. Third and
higher derivatives are exact at inputs with distinct eigenvalues only.

How ``G`` and the second divided differences are evaluated accurately (quadrature and
Taylor expansions for close eigenvalues), and why the derivatives are JAX primitives so that
``jax.hessian`` is exact at degenerate points too: see ``eigjax/_frechet.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._checks import as_square_matrix, check_bool, result_dtype
from ._eigh import _eigh
from ._frechet import _reconstruct, frechet, param_term
from ._linalg import _hermitian_part, _norm


# f is static (a hashable, closure-converted function); the values it closed over are
# passed in ``consts`` so that they are differentiable and may be traced.
@functools.partial(jax.jit, static_argnums=0)
def _matfun_forward(f, a, consts):
    w, v = _eigh(a, True, None, None)
    return _reconstruct(v, f(w, *consts))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _matfun(f, a, consts):
    return _matfun_forward(f, a, consts)


@_matfun.defjvp
def _matfun_jvp(f, primals, tangents):
    a, consts = primals
    a_dot, consts_dot = tangents
    # The primal through _matfun itself, so that a derivative of this rule uses it again.
    out = _matfun(f, a, consts)
    out_dot = frechet(f, a, _hermitian_part(a_dot).astype(out.dtype), consts)
    if consts:
        # f(w; c) also moves with its own parameters c: add V diag(df/dc . dc) V^H.
        out_dot = out_dot + param_term(f, a, consts, consts_dot, out.dtype)
    return out, out_dot


def matrix_function(
    a: ArrayLike, f: Callable[[jax.Array], jax.Array], *, fn: str = "eigjax.matrix_function"
) -> jax.Array:
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
        A new ``lambda`` on every eager call is fine: functions that compute the same
        thing (same operations, same constants) share one compiled program.
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
    out = jax.eval_shape(f, w_example)
    if not hasattr(out, "shape") or out.shape != w_example.shape:
        raise ValueError(
            f"{fn}: `f` must be elementwise, mapping the eigenvalues of shape {w_example.shape} to the "
            f"same shape; got {getattr(out, 'shape', type(out).__name__)}."
        )
    if a.shape[-1] == 0:  # nothing to apply f to; the (empty) derivatives are zero
        return jnp.zeros(a.shape, result_dtype(a.dtype, out.dtype))
    # f is traced at one scalar eigenvalue and applied elementwise (vmap over the flattened
    # elements): the rules apply it to eigenvalues of shape (..., n), to pairs (..., n, n)
    # and to quadrature nodes (..., n, n, 5), and a function traced at shape (..., n)
    # (relu, softplus, clip, sinc, where: their jaxprs broadcast constants to that shape)
    # fails at the others.
    # A function that does not map a scalar to a scalar (one closing over an array of
    # per-eigenvalue weights, say) keeps the shape it was checked at.
    w_scalar = jnp.zeros((), dtype=w_example.dtype)
    try:
        scalar_ok = getattr(jax.eval_shape(f, w_scalar), "shape", None) == ()
    except Exception:  # noqa: BLE001 - any failure at a scalar: not scalar-elementwise
        scalar_ok = False
    w_trace = w_scalar if scalar_ok else w_example
    f_conv, consts = jax.closure_convert(f, w_trace)
    key = _computation_key(f, w_trace) if not consts else None
    f_static = f_conv if key is None else _SameComputation(f_conv, key)
    if scalar_ok:
        f_static = _Elementwise(f_static)
    return _matfun(f_static, a, tuple(consts))


class _Elementwise:
    """``f(w, *c)`` for ``f`` traced at a scalar ``w``: applied to every element of ``w``
    (any shape) by ``vmap`` over the flattened elements; ``c`` are not mapped."""

    __slots__ = ("fn", "__weakref__")

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, w, *consts):
        out = jax.vmap(self.fn, in_axes=(0,) + (None,) * len(consts))(jnp.reshape(w, (-1,)), *consts)
        return jnp.reshape(out, jnp.shape(w))

    def __hash__(self):
        return hash((_Elementwise, self.fn))

    def __eq__(self, other):
        return isinstance(other, _Elementwise) and self.fn == other.fn


class _SameComputation:
    """A closure-converted ``f`` that compares equal to another when both compute the
    same thing: the same jaxpr with the same embedded constants.

    ``f`` is a static argument of jitted code (and a parameter of the Frechet
    primitives), cached by hash and equality. A fresh ``lambda`` in an eager loop is a
    new object each call, so without this every call recompiled instead of reusing the
    cached program.
    """

    __slots__ = ("fn", "key", "__weakref__")

    def __init__(self, fn, key):
        self.fn, self.key = fn, key

    def __call__(self, *args):
        return self.fn(*args)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _SameComputation) and self.key == other.key


def _computation_key(f, w_example):
    """``(jaxpr text, embedded constants)`` of ``f`` at ``w_example``, or None when
    ``f`` closes over a traced value or a large array (then ``f`` keeps its identity).

    The text holds every literal (a closed-over Python number included), and the
    constants are compared by value, so equal keys mean equal functions: a changed
    global or closed-over value gives a new key, never a stale program.
    """
    closed = jax.make_jaxpr(f)(w_example)
    consts = []
    for c in closed.consts:
        try:
            c = np.asarray(c)
        except Exception:  # a tracer: its value is not known here
            return None
        if c.size > _MAX_KEY_CONST_SIZE or c.dtype == object:
            return None
        consts.append((c.shape, c.dtype.str, c.tobytes()))
    return str(closed.jaxpr), tuple(consts)


_MAX_KEY_CONST_SIZE = 1 << 16


# ---------------------------------------------------------------------------
# Named functions, with the ``psd`` option.

_PSD_C = 10.0


def _psd_clip(w: jax.Array, tol: jax.Array) -> jax.Array:
    """``w`` with ``|w| <= tol`` replaced by exactly 0 (``tol`` a scalar)."""
    return jnp.where(jnp.abs(w) <= tol, jnp.zeros_like(w), w)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _psd_apply(f: Callable, fn: str, a: jax.Array, *params) -> jax.Array:
    """``f`` of ``a`` with rounding-level eigenvalues clipped to 0 (``sqrtm``'s ``psd``); ``f(w,
    *params)`` elementwise. Jitted so that ``psd_tol`` (a traced scalar per matrix) is a
    value ``f`` closes over, not a constant baked into a new program per call."""
    n = a.shape[-1]
    eps = float(jnp.finfo(a.dtype).eps)

    def one(m):
        tol = jax.lax.stop_gradient(_PSD_C * n * eps * _norm(m, axis=(-2, -1)))
        return matrix_function(m, lambda w: f(_psd_clip(w, tol.astype(w.dtype)), *params), fn=fn)

    batch = a.shape[:-2]
    if not batch:
        return one(a)
    out = jax.vmap(one)(a.reshape((-1, n, n)))
    return out.reshape((*batch, *out.shape[-2:]))


def _named(a, f: Callable, fn: str, psd, *params) -> jax.Array:
    psd = check_bool(psd, name="psd", fn=fn)
    a = as_square_matrix(a, name="a", fn=fn)
    if not psd:
        return matrix_function(a, (lambda w: f(w, *params)) if params else f, fn=fn)
    return _psd_apply(f, fn, a, *params)


def sqrtm(a: ArrayLike, *, psd: bool = False) -> jax.Array:
    r"""Principal square root of Hermitian positive semi-definite matrices.

    Negative eigenvalues give NaN, and by default so do the rounding-level negative
    eigenvalues of a singular input (a rank-deficient covariance): pass ``psd=True``.
    The derivative is infinite at a singular ``a`` and ill-conditioned near one.

    Args:
      a: Hermitian matrices ``(..., n, n)``; the Hermitian part is used.
      psd: take ``a`` as positive semi-definite up to rounding: every eigenvalue with
        ``|w| <= psd_tol = 10 n eps ||A||_F`` (per matrix; ``eps`` of the dtype;
        ``||A||_F >= max|w|``, and eigh's eigenvalue error is ``~ eps ||A||_2``) is
        replaced by exactly 0 before the function is applied. Eigenvalues below
        ``-psd_tol`` are kept, so they still give NaN. Derivatives are those of
        ``A -> V f(clip(w)) V^H``, which is locally constant in a clipped eigenvalue: its
        derivative there is ``f'(0) * 0``, zero where ``f'(0)`` is finite (``powm`` with
        ``p >= 1``) and NaN where it is infinite (``sqrt``, ``log``, ``rsqrt``, ``powm``
        with ``p < 1``: the function has no derivative at a singular input). Which
        eigenvalues are clipped is decided on values; no derivative flows through
        ``psd_tol``.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.sqrtm(jnp.array([[4., 0.], [0., 9.]])).tolist()
      [[2.0, 0.0], [0.0, 3.0]]
      >>> x = jnp.array([[1., 2.], [1., 2.], [1., 2.]])   # rank-1 covariance x^T x
      >>> bool(jnp.isfinite(eigjax.sqrtm(x.T @ x, psd=True)).all())
      True
    """
    return _named(a, jnp.sqrt, "eigjax.sqrtm", psd)


def inv_sqrtm(a: ArrayLike, *, psd: bool = False) -> jax.Array:
    r"""``A^{-1/2}`` of Hermitian positive definite matrices (whitening); NaN/inf otherwise.

    With ``psd=True`` rounding-level eigenvalues become exactly 0 and give ``inf`` (not NaN
    for tiny negative ones): the matrix is singular.

    Args:
      a: Hermitian matrices ``(..., n, n)``; the Hermitian part is used.
      psd: clip rounding-level eigenvalues to exactly 0 first; see :func:`sqrtm`.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.inv_sqrtm(jnp.array([[4., 0.], [0., 16.]])).tolist()
      [[0.5, 0.0], [0.0, 0.25]]
    """
    return _named(a, jax.lax.rsqrt, "eigjax.inv_sqrtm", psd)


def logm(a: ArrayLike, *, psd: bool = False) -> jax.Array:
    r"""Principal logarithm of Hermitian positive definite matrices; NaN/-inf otherwise.

    With ``psd=True`` rounding-level eigenvalues become exactly 0 and give ``-inf``.

    Args:
      a: Hermitian matrices ``(..., n, n)``; the Hermitian part is used.
      psd: clip rounding-level eigenvalues to exactly 0 first; see :func:`sqrtm`.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.logm(jnp.eye(2)).tolist()
      [[0.0, 0.0], [0.0, 0.0]]
    """
    return _named(a, jnp.log, "eigjax.logm", psd)


def expm(a: ArrayLike) -> jax.Array:
    r"""Matrix exponential of Hermitian matrices (via the eigendecomposition).

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.expm(jnp.zeros((2, 2))).tolist()
      [[1.0, 0.0], [0.0, 1.0]]
    """
    return matrix_function(a, jnp.exp, fn="eigjax.expm")


def powm(a: ArrayLike, p: ArrayLike, *, psd: bool = False) -> jax.Array:
    r"""Matrix power ``A^p`` of Hermitian matrices; ``p`` may be traced and is differentiable.

    For non-integer ``p`` the eigenvalues must be ``>= 0`` (``> 0`` for ``p < 1`` if a
    derivative is wanted); negative eigenvalues then give NaN, like ``jnp.power``.

    Args:
      a: Hermitian matrices ``(..., n, n)``; the Hermitian part is used.
      psd: clip rounding-level eigenvalues to exactly 0 first; see :func:`sqrtm`.

    Raises:
      TypeError: ``p`` is not a real number or array (a string, say).
      ValueError: ``p`` is not a scalar.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> eigjax.powm(jnp.array([[4., 0.], [0., 9.]]), 1.5).tolist()
      [[8.0, 0.0], [0.0, 27.0]]
    """
    fn = "eigjax.powm"
    a = as_square_matrix(a, name="a", fn=fn)
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.number, np.ndarray, jax.Array)):
        raise TypeError(
            f"{fn}: argument `p` must be a real scalar (a Python int or float, or a 0-d array); "
            f"got {p!r} of type {type(p).__name__}."
        )
    p = jnp.asarray(p)
    if p.ndim != 0:
        raise ValueError(f"{fn}: argument `p` must be a scalar; got shape {tuple(p.shape)}.")
    if not (jnp.issubdtype(p.dtype, jnp.floating) or jnp.issubdtype(p.dtype, jnp.integer)):
        raise TypeError(f"{fn}: argument `p` must be a real scalar; got dtype {p.dtype}.")
    p = p.astype(jnp.finfo(a.dtype).dtype)
    return _named(a, jnp.power, fn, psd, p)
