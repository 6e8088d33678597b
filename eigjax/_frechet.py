"""Frechet derivatives of spectral functions ``f(A) = V diag(f(w)) V^H`` as JAX primitives.

Maths (Daleckii & Krein 1965; Bhatia, "Matrix Analysis", 1997, thm. V.3.3 and sec. V.3;
Higham, "Functions of Matrices", 2008, thm. 3.11). For Hermitian ``A = V diag(w) V^H``,
``P_E = V^H E V`` and a function ``f`` differentiable on the spectrum,

    L_A[E] = d f(A)[E] = V (G o P_E) V^H,   G_ij = f[w_i, w_j] = (f(w_i) - f(w_j)) / (w_i - w_j),

``G_ii = f'(w_i)``, and

    d L_A[E][H] = V S V^H,   S_ij = sum_k f[w_i, w_k, w_j] ((P_H)_ik (P_E)_kj + (P_E)_ik (P_H)_kj),

with the second divided differences ``f[x, y, z] = (f[x, y] - f[y, z]) / (x - z)`` (``f''/2``
when all three are equal). Divided differences are continuous functions of the
eigenvalues, so both formulas are exact at degenerate points (``A = I``): differentiating
``V (G o P_E) V^H`` through eigh's ``F_ij = 0`` rule instead would miss the off-diagonal
part of ``P_H`` inside a degenerate group (O(1) wrong at the identity).

Why primitives. ``jax.hessian`` is ``jacfwd`` of ``jacrev``. When JAX linearises a
custom_jvp function it keeps only its primal, so after transposition the outer derivative
would go through eigh again. Here the first derivatives are primitives that are linear in
their tangent argument and whose transposes are again such primitives, so the outer
derivative always meets one of their JVP rules, which are the formulas above:

* ``eigjax_frechet(a, e, *c)``: ``L_A[E]`` for ``f(.; c)``. Transpose in ``e``:
  ``L_{conj(A)}`` (``A^T = conj(A)`` for Hermitian ``A``: same eigenvalues, conjugate
  eigenvectors; JAX transposes with the bilinear pairing ``sum(x * y)``).
* ``eigjax_param(a, *c, *dc)``: ``V diag(d/dt f(w; c + t dc)) V^H``, the derivative of
  ``f(A; c)`` in the values ``c`` that ``f`` closes over (``powm``'s exponent). Transpose in
  ``dc``: ``eigjax_param_ct``, ``ct -> vjp_dc sum(ct * param(a, c, dc))``, and back.

Terms of a JVP rule other than the linear one are plain JAX evaluated on the
eigendecomposition as data: third and higher derivatives differentiate them through
eigh, so they are exact at inputs with distinct eigenvalues only.

Evaluating ``G``. The quotient loses ``~ eps |f| / |w_i - w_j|`` to cancellation when the
eigenvalues are close. We use ``G_ij = int_0^1 f'(w_j + t (w_i - w_j)) dt`` by 5-point
Gauss-Legendre quadrature when the pair is close: ``|w_i - w_j| <= 0.1 max(|w_i|, |w_j|)``
and ``|w_i - w_j| |f''(w_j)| <= |f'(w_j)| / 2`` (``f'`` varies little between them), or
``|w_i - w_j| <= sqrt(eps) max_k |w_k|``; beyond that last bound the quadrature is kept
only where it agrees with the quotient within 4x the quotient's rounding error (else
``f'`` has a kink between the two, as ``relu`` or ``clip`` may, and the quotient is the
exact value). The nodes lie between the two eigenvalues, so
inside the domain of ``f`` whenever both eigenvalues are (sqrt and log included). For a
pair that close the quadrature's relative error for power-like functions (singular at 0)
and entire functions is below ``1e-14``; the quotient used for the other pairs loses at
most ``~ 10 eps`` relative for power-like functions and ``~ sqrt(eps)`` for ``exp`` on
eigenvalues tiny against ``||A||``. The known weak case: ``sqrtm``/``powm`` with two
eigenvalues both within ``sqrt(eps) ||A||`` of zero, where the quadrature misses the
endpoint singularity of ``f'`` (the derivative is itself ill-conditioned there).

Evaluating ``f[w_i, w_k, w_j]``: the quotient of two first divided differences over the
farthest pair of the three, or the Taylor expansion about the median ``m``,
``f''(m)/2 + f'''(m) s1/6 + f''''(m) h2/24`` (``s1``, ``h2``: the complete symmetric
polynomials of degree 1 and 2 of the offsets from ``m``) where that agrees with the
quotient within 4x the quotient's own rounding error bound (carried from ``G``), or where
the spread is below ``sqrt(eps) max|w|``. The choice is by agreement, not by the size of
``f'''``, ``f''''`` against ``f''``: such a test holds vacuously when those vanish at
the median (``max(w, 0)**3``, ``(w - 2)**5``, ``w**5`` at 0) and gave 0 at any spread. Both
branches then err by at most a few times the quotient's bound, and the Taylor one by
``~ eps^(3/4)`` relative. The ``(n, n, n)`` tensor is built at once for ``n <= 96`` and summed over blocks of
``k`` (memory ``O(n^2)`` per block) above. ``f'``, ``f''``, ... come from nested
``jax.jvp`` of ``f``, so ``f`` must be elementwise. Every branch uses the "double where"
pattern: no NaN or inf leaks from an unselected branch into a derivative.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from ._checks import result_dtype
from ._eigh import _eigh
from ._linalg import _h, _hermitian_part, _mm

# Gauss-Legendre nodes/weights on [0, 1].
_GL_X, _GL_W = np.polynomial.legendre.leggauss(5)
_GL_X = (_GL_X + 1.0) / 2.0
_GL_W = _GL_W / 2.0
_REL_CLOSE = 0.1


def _derivative(f: Callable, x: jax.Array) -> jax.Array:
    """Elementwise ``f'(x)`` for an elementwise ``f``."""
    return jax.jvp(f, (x,), (jnp.ones_like(x),))[1]


@typing.overload
def _divided_differences(
    f: Callable, w: jax.Array, fw: jax.Array, *, with_error: Literal[False] = False
) -> jax.Array: ...
@typing.overload
def _divided_differences(
    f: Callable, w: jax.Array, fw: jax.Array, *, with_error: Literal[True]
) -> tuple[jax.Array, jax.Array]: ...


def _divided_differences(f: Callable, w: jax.Array, fw: jax.Array, *, with_error: bool = False):
    """``G_ij = (f(w_i) - f(w_j)) / (w_i - w_j)``, ``f'`` on (near-)equal pairs; ``(..., n, n)``.

    With ``with_error``, also a bound on the rounding error of each ``G_ij`` (data only:
    no derivative flows through it), for the choice of formula in :func:`_second_order`.
    """
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
    smooth = jnp.abs(jax.lax.stop_gradient(d)) * jnp.abs(f2[..., None, :]) <= 0.5 * jnp.abs(f1[..., None, :])
    abs_d = jnp.abs(jax.lax.stop_gradient(d))
    tiny = abs_d <= np.sqrt(eps) * scale
    # Quotient on the pairs that are far apart (safe denominator elsewhere).
    safe_d = jnp.where(tiny, jnp.ones_like(d), d)
    quotient = (fw[..., :, None] - fw[..., None, :]) / safe_d.astype(fw.dtype)
    # The quotient's rounding error: eps |f| / |d| from the cancellation, eps |G| from the
    # division.
    fs, qs = jax.lax.stop_gradient((fw, quotient))
    afw = jnp.abs(fs)
    q_err = eps * ((afw[..., :, None] + afw[..., None, :]) / jnp.where(tiny, 1, abs_d) + jnp.abs(qs))
    # Quadrature candidates: pairs close relative to their size, or whose quotient cancels
    # (loses more than 4 bits: exp or a sigmoid at |w| ~ 1e-10, where f(w_i) ~ f(w_j) ~ 1 and
    # the quotient kept only 1e-6 of G; found by an audit), where f' is smooth over the interval.
    cancels = q_err > 16 * eps * jnp.abs(qs)
    candidate = ((abs_d <= _REL_CLOSE * pair_scale) | cancels) & smooth | tiny
    # Quadrature of f' between the two eigenvalues on the candidate pairs; the others
    # evaluate f' at w_j (inside the domain), so nothing unselected is NaN.
    d_close = jnp.where(candidate, d, jnp.zeros_like(d))
    t = jnp.asarray(_GL_X, dtype=w.dtype).reshape((1,) * d.ndim + (-1,))
    gl_w = jnp.asarray(_GL_W, dtype=w.dtype).reshape((1,) * d.ndim + (-1,))
    nodes = wj[..., None] + d_close[..., None] * t
    fd_nodes = _derivative(f, nodes)
    quad = jnp.sum(fd_nodes * gl_w.astype(fd_nodes.dtype), axis=-1)
    # Exactly equal eigenvalues (the diagonal, the identity): f' itself, with no
    # rounding from the quadrature weights, so d sqrtm(I)[E] = E / 2 exactly.
    at_wj = _derivative(f, wj + jnp.zeros_like(d))
    quad = jnp.where(jax.lax.stop_gradient(d) == 0, at_wj, quad)
    quotient = quotient.astype(result_dtype(quotient, quad))
    quad = quad.astype(quotient.dtype)
    # The quadrature is taken only where it agrees with the quotient within 4x the
    # quotient's error bound (it is then at least as accurate), or where the quotient is
    # useless (|d| <= sqrt(eps) max|w|). Where it does not agree, f' is not smooth between
    # the two eigenvalues (a kink: relu, clip, abs, where-based f inside the interval) and
    # the 5-point rule is wrong by O(1); the quotient is the exact value there.
    quads = jax.lax.stop_gradient(quad)
    agrees = jnp.abs(quads - qs) <= 4 * q_err
    close = tiny | (candidate & agrees) | (abs_d == 0)
    g = jnp.where(close, quad, quotient)
    if not with_error:
        return g
    err = jnp.where(close, 8 * eps * jnp.abs(jax.lax.stop_gradient(g)), q_err)
    return g, err


def _reconstruct(v: jax.Array, fw: jax.Array) -> jax.Array:
    dtype = result_dtype(v, fw)
    v = v.astype(dtype)
    return _mm(v * fw.astype(dtype)[..., None, :], _h(v))


def _to_eigenbasis(v: jax.Array, x: jax.Array, dtype) -> jax.Array:
    """``V^H x V`` in ``dtype``."""
    v = v.astype(dtype)
    return _mm(_h(v), _mm(x.astype(dtype), v))


def _from_eigenbasis(v: jax.Array, s: jax.Array) -> jax.Array:
    """``V s V^H``."""
    v = v.astype(result_dtype(v, s))
    return _mm(v, _mm(s, _h(v)))


# ---------------------------------------------------------------------------
# Static wrappers of f (hashable: they are parameters of the primitive and of _matfun).


class _ParamTangent:
    """``w, (c, dc) -> d/dt f(w; c + t dc)``: the derivative of ``f`` along its parameters."""

    def __init__(self, f: Callable, num_consts: int):
        self.f, self.num_consts = f, num_consts

    def __call__(self, w, *cc):
        c, dc = cc[: self.num_consts], cc[self.num_consts :]
        return jax.jvp(lambda *c_: self.f(w, *c_), tuple(c), tuple(dc))[1]

    def __eq__(self, other):
        return type(other) is _ParamTangent and (self.f, self.num_consts) == (other.f, other.num_consts)

    def __hash__(self):
        return hash((_ParamTangent, self.f, self.num_consts))


class _BatchedF:
    """``f`` under ``vmap``: the eigenvalues carry a new leading batch axis, and so do the
    parameters flagged in ``batched``."""

    def __init__(self, f: Callable, batched: tuple[bool, ...]):
        self.f, self.batched = f, batched

    def __call__(self, w, *c):
        return jax.vmap(self.f, in_axes=(0, *(0 if b else None for b in self.batched)))(w, *c)

    def __eq__(self, other):
        return type(other) is _BatchedF and (self.f, self.batched) == (other.f, other.batched)

    def __hash__(self):
        return hash((_BatchedF, self.f, self.batched))


# ---------------------------------------------------------------------------
# Second divided differences and the second-order term.

_DIRECT_MAX_N = 96  # up to this n the (n, n, n) tensor f[w_i, w_k, w_j] is built at once
_BLOCK_ELEMENTS = 2**20  # else: elements of one (n, block, n) slab of it


@functools.partial(jax.jit, static_argnums=0)
def _second_order(f: Callable, consts, w: jax.Array, v: jax.Array, h: jax.Array, e: jax.Array) -> jax.Array:
    """``d L_A[E][H] = V S V^H`` (module docstring) for ``A = V diag(w) V^H`` given as data;
    ``S`` is summed over blocks of ``k``."""
    fc = lambda x: f(x, *consts)  # noqa: E731
    fw = fc(w)
    g, g_err = _divided_differences(fc, w, fw, with_error=True)
    dtype = result_dtype(g, e)
    x = _to_eigenbasis(v, _hermitian_part(h), dtype)
    y = _to_eigenbasis(v, e, dtype)
    n = w.shape[-1]
    ws = jax.lax.stop_gradient(w)
    eps = float(jnp.finfo(w.dtype).eps)
    scale = jnp.max(jnp.abs(ws), axis=-1)[..., None, None, None]
    d1 = lambda t: _derivative(fc, t)  # noqa: E731
    d2 = lambda t: _derivative(d1, t)  # noqa: E731
    d3 = lambda t: _derivative(d2, t)  # noqa: E731
    f2, f3, f4 = d2(w), d3(w), _derivative(d3, w)

    def slab(kk, valid):
        """``sum_{k in kk} T_ikj (X_ik Y_kj + Y_ik X_kj)``, ``T_ikj = f[w_i, w_k, w_j]``."""
        i = jnp.arange(n)[:, None, None]
        k = kk[None, :, None]
        j = jnp.arange(n)[None, None, :]
        lo = jnp.minimum(jnp.minimum(i, k), j)
        hi = jnp.maximum(jnp.maximum(i, k), j)
        med = i + k + j - lo - hi  # w is ascending: the median value sits at the median index
        take = lambda arr, idx: jnp.take(arr, idx, axis=-1)  # noqa: E731
        wi, wk, wj = w[..., :, None, None], take(w, kk)[..., None, :, None], w[..., None, None, :]
        g_ik = take(g, kk)[..., :, :, None]
        g_kj = jnp.take(g, kk, axis=-2)[..., None, :, :]
        g_ij = g[..., :, None, :]
        e_ik = take(g_err, kk)[..., :, :, None]
        e_kj = jnp.take(g_err, kk, axis=-2)[..., None, :, :]
        e_ij = g_err[..., :, None, :]
        # Quotient over the farthest pair (the two that are not the median).
        lead = (1,) * (w.ndim - 1)  # index arrays get the batch axes of w
        mid_k = (med == k).reshape(lead + med.shape)
        mid_j = ((med == j) & (med != k)).reshape(lead + med.shape)
        num = jnp.where(mid_k, g_ik - g_kj, jnp.where(mid_j, g_ij - g_kj, g_ik - g_ij))
        den = jnp.where(mid_k, wi - wj, jnp.where(mid_j, wi - wk, wk - wj))
        num_err = jnp.where(mid_k, e_ik + e_kj, jnp.where(mid_j, e_ij + e_kj, e_ik + e_ij))
        spread = jax.lax.stop_gradient(take(w, hi) - take(w, lo))
        # Taylor about the median (used when the three are close, below).
        m = take(w, med)
        yi, yk, yj = wi - m, wk - m, wj - m
        s1 = yi + yk + yj
        h2 = (yi * yi + yk * yk + yj * yj + s1 * s1) / 2
        f2m, f3m, f4m = take(f2, med), take(f3, med), take(f4, med)
        # Which formula: the quotient is exact up to its rounding error ``num_err / spread``
        # (plus eps of itself); the Taylor polynomial is taken where it agrees with the
        # quotient within 4x that bound (it is then at least as accurate: three close
        # eigenvalues, where the quotient cancels), or where the quotient is useless
        # (spread <= sqrt(eps) max|w|, three equal eigenvalues). The agreement test, not
        # the size of f''' and f'''' against f'', decides: when f'', f''' and f'''' vanish
        # at the median (max(w, 0)**3 at w < 0, (w - 2)**5 at 2, w**5 at 0), a test on the
        # derivatives holds vacuously at any spread and gave 0 for f[w_i, w_k, w_j].
        tiny = spread <= float(np.sqrt(eps)) * scale
        safe_den = jnp.where(tiny, jnp.ones_like(den), den)
        quotient = num / safe_den.astype(num.dtype)
        s1, h2 = s1.astype(f3m.dtype), h2.astype(f4m.dtype)  # real offsets, maybe complex f
        taylor = (f2m / 2 + f3m * s1 / 6 + f4m * h2 / 24).astype(quotient.dtype)
        qs, ts = jax.lax.stop_gradient((quotient, taylor))
        q_err = num_err / jnp.where(tiny, 1, spread) + eps * jnp.abs(qs)
        taylor_ok = tiny | (jnp.abs(ts - qs) <= 4 * q_err)
        t = jnp.where(taylor_ok, taylor, quotient)
        t = t.astype(dtype) * valid.reshape(lead + (1, -1, 1)).astype(dtype)
        x_ik, y_ik = take(x, kk)[..., :, :, None], take(y, kk)[..., :, :, None]
        x_kj, y_kj = jnp.take(x, kk, axis=-2)[..., None, :, :], jnp.take(y, kk, axis=-2)[..., None, :, :]
        return jnp.sum(t * (x_ik * y_kj + y_ik * x_kj), axis=-2)

    block = n if n <= _DIRECT_MAX_N else max(1, _BLOCK_ELEMENTS // (n * n))
    nblocks = -(-n // block)
    kk = jnp.arange(nblocks * block)
    valid = kk < n
    kk = jnp.where(valid, kk, 0).reshape(nblocks, block)
    valid = valid.reshape(nblocks, block)
    if nblocks == 1:
        s = slab(kk[0], valid[0])
    else:
        init = jnp.zeros(jnp.broadcast_shapes(x.shape, y.shape), dtype)
        s, _ = jax.lax.scan(lambda acc, kv: (acc + slab(*kv), None), init, (kk, valid))
    return _from_eigenbasis(v, s)


@jax.jit
def _eigh_data(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _eigh(a, True, None, None)


@functools.partial(jax.jit, static_argnums=0)
def _frechet_formula(f: Callable, consts, w: jax.Array, v: jax.Array, e: jax.Array) -> jax.Array:
    """``V (G o V^H e V) V^H`` for ``f(.; consts)`` and ``A = V diag(w) V^H`` given as data."""
    fc = lambda x: f(x, *consts)  # noqa: E731
    g = _divided_differences(fc, w, fc(w))
    dtype = result_dtype(g, e)
    return _from_eigenbasis(v, g.astype(dtype) * _to_eigenbasis(v, e, dtype))


def _zeros_like_tangent(t, primal):
    return jnp.zeros_like(primal) if type(t) is ad.Zero else t


def _nonzero(ts) -> bool:
    return any(type(t) is not ad.Zero for t in ts)


def _eigh_terms(a, a_dot, consts, consts_dot, a_term, c_term) -> list:
    """The JVP-rule terms that need ``A = V diag(w) V^H`` (decomposed once, and only if
    needed): ``a_term(w, v)`` if ``a_dot`` is nonzero, ``c_term(w, v, consts_dot)`` (zeros
    instantiated) if any of ``consts_dot`` is."""
    with_a, with_c = type(a_dot) is not ad.Zero, _nonzero(consts_dot)
    if not (with_a or with_c):
        return []
    w, v = _eigh_data(a)
    terms = [a_term(w, v)] if with_a else []
    if with_c:
        terms.append(c_term(w, v, [_zeros_like_tangent(t, c) for t, c in zip(consts_dot, consts)]))
    return terms


def _param_vjp(fn, consts, cotangent_of) -> list:
    """Transpose of the linear map ``dc -> fn(*dc)`` applied to ``cotangent_of(fn(0))``, in
    the dtypes of ``consts``."""
    zeros = [jnp.zeros_like(jnp.asarray(c)) for c in consts]
    out, vjp = jax.vjp(fn, *zeros)
    return [x.astype(result_dtype(c)) for x, c in zip(vjp(cotangent_of(out)), consts)]


def _require_linear_only(name: str, nonlinear, what: str) -> None:
    if any(ad.is_undefined_primal(x) for x in nonlinear):
        raise NotImplementedError(f"{name} is linear in {what} only")


def _sum_terms(terms, like):
    out = functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(like)
    return out.astype(like.dtype)


def _front(x, d, size):
    """Batch axis ``d`` (None: unbatched, broadcast) moved to the front, of length ``size``."""
    return jnp.broadcast_to(x, (size, *jnp.shape(x))) if d is None else jnp.moveaxis(x, d, 0)


def _batch_size(args, dims) -> int:
    return next(x.shape[d] for x, d in zip(args, dims) if d is not None)


def _define(name: str, impl: Callable, abstract_eval: Callable, *, multiple_results=False) -> Primitive:
    p = Primitive(name)
    p.multiple_results = multiple_results
    static = [q.name for q in inspect.signature(impl).parameters.values() if q.kind is q.KEYWORD_ONLY]
    jitted = jax.jit(impl, static_argnames=static)
    p.def_impl(lambda *args, **params: jitted(*args, **params))
    p.def_abstract_eval(abstract_eval)
    mlir.register_lowering(p, mlir.lower_fun(impl, multiple_results=multiple_results))
    return p


# ---------------------------------------------------------------------------
# eigjax_frechet(a, e, *c; f) = L_A[e] for f(.; c): linear in e.


def _frechet_impl(a, e, *consts, f):
    w, v = _eigh_data(a)
    return _frechet_formula(f, consts, w, v, e).astype(e.dtype)


_frechet_p = _define("eigjax_frechet", _frechet_impl, lambda a, e, *consts, f: e.update(weak_type=False))


def frechet(f: Callable, a: jax.Array, e: jax.Array, consts=()) -> jax.Array:
    """``L_A[E] = V (G o V^H E V) V^H`` for ``f(.; *consts)``; ``e`` already in the output dtype."""
    return _frechet_p.bind(a, e, *consts, f=f)


def _frechet_jvp(primals, tangents, *, f):
    a, e, *consts = primals
    a_dot, e_dot, *consts_dot = tangents
    out = frechet(f, a, e, consts)
    terms = [frechet(f, a, e_dot, consts)] if type(e_dot) is not ad.Zero else []
    terms += _eigh_terms(
        a,
        a_dot,
        consts,
        consts_dot,
        lambda w, v: _second_order(f, consts, w, v, a_dot, e),
        lambda w, v, c_dot: _frechet_formula(_ParamTangent(f, len(consts)), (*consts, *c_dot), w, v, e),
    )
    return out, _sum_terms(terms, out)


def _frechet_transpose(ct, a, e, *consts, f):
    _require_linear_only("eigjax_frechet", (a, *consts), "its second argument")
    none = [None] * len(consts)
    if type(ct) is ad.Zero:
        return [None, ad.Zero(e.aval), *none]
    # sum(L_A[E] * C) = sum(E * L_{conj(A)}[C])
    return [None, frechet(f, jnp.conj(a), ct, consts).astype(e.aval.dtype), *none]


def _frechet_batch(args, dims, *, f):
    a, e, *consts = args
    da, de, *dc = dims
    size = _batch_size(args, dims)
    consts = [c if d is None else jnp.moveaxis(c, d, 0) for c, d in zip(consts, dc)]
    batched = tuple(d is not None for d in dc)
    fb = _BatchedF(f, batched) if any(batched) else f  # unbatched parameters broadcast
    return frechet(fb, _front(a, da, size), _front(e, de, size), consts), 0


ad.primitive_jvps[_frechet_p] = _frechet_jvp
ad.primitive_transposes[_frechet_p] = _frechet_transpose
batching.primitive_batchers[_frechet_p] = _frechet_batch


# ---------------------------------------------------------------------------
# eigjax_param(a, *c, *dc; f, m, dtype) = V diag(psi) V^H, psi = d/dt f(w; c + t dc):
# linear in dc.  eigjax_param_ct(a, *c, ct; f, m, dc_avals) = its transpose in dc.


def _param_impl(a, *cc, f, m, dtype):
    w, v = _eigh_data(a)
    return _reconstruct(v, _ParamTangent(f, m)(w, *cc)).astype(dtype)


_param_p = _define(
    "eigjax_param", _param_impl, lambda a, *cc, f, m, dtype: a.update(dtype=jnp.dtype(dtype), weak_type=False)
)


def param_term(f: Callable, a: jax.Array, consts, consts_dot, dtype) -> jax.Array:
    """``V diag(d/dt f(w; c + t dc)) V^H`` in ``dtype``: the part of ``d f(A; c)`` due to ``dc``."""
    return _param_p.bind(a, *consts, *consts_dot, f=f, m=len(consts), dtype=jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=0)
def _param_ct_formula(f, consts, w, v, ct):
    """``vjp_dc sum(ct * V diag(psi(dc)) V^H)`` with ``A = V diag(w) V^H`` as data."""
    vt = v.astype(result_dtype(v, ct))
    d = jnp.sum(vt * _mm(ct, jnp.conj(vt)), axis=-2)  # diag(V^T ct conj(V)): sum(ct * V D V^H) = sum(d * D)
    psi = lambda *dc: _ParamTangent(f, len(consts))(w, *consts, *dc)  # noqa: E731
    return _param_vjp(psi, consts, lambda out: (d if jnp.iscomplexobj(out) else jnp.real(d)).astype(out.dtype))


def _param_ct_impl(a, *rest, f, m, dc_avals):
    consts, ct = rest[:m], rest[m]
    w, v = _eigh_data(a)
    return _param_ct_formula(f, consts, w, v, ct)


_param_ct_p = _define(
    "eigjax_param_ct",
    _param_ct_impl,
    lambda a, *rest, f, m, dc_avals: [ShapedArray(s, d) for s, d in dc_avals],
    multiple_results=True,
)


def _param_ct(f, a, consts, ct):
    avals = tuple((tuple(jnp.shape(c)), jnp.dtype(result_dtype(c))) for c in consts)
    return _param_ct_p.bind(a, *consts, ct, f=f, m=len(consts), dc_avals=avals)


def _param_jvp(primals, tangents, *, f, m, dtype):
    a, consts, dc = primals[0], primals[1 : m + 1], primals[m + 1 :]
    a_dot, consts_dot, dc_dot = tangents[0], tangents[1 : m + 1], tangents[m + 1 :]
    out = param_term(f, a, consts, dc, dtype)
    terms = []
    if _nonzero(dc_dot):
        terms.append(param_term(f, a, consts, [_zeros_like_tangent(t, c) for t, c in zip(dc_dot, dc)], dtype))
    psi = _ParamTangent(f, m)

    def c_term(w, v, c_dot):  # V diag(d2f/dc2 [dc, c_dot]) V^H
        return _reconstruct(v, _ParamTangent(psi, 2 * m)(w, *consts, *dc, *c_dot, *[jnp.zeros_like(x) for x in dc]))

    terms += _eigh_terms(
        a,
        a_dot,
        consts,
        consts_dot,
        lambda w, v: _frechet_formula(psi, (*consts, *dc), w, v, _hermitian_part(a_dot)),
        c_term,
    )
    return out, _sum_terms(terms, out)


def _param_transpose(ct, a, *cc, f, m, dtype):
    consts, dc = cc[:m], cc[m:]
    _require_linear_only("eigjax_param", (a, *consts), "its parameter tangents")
    if type(ct) is ad.Zero:
        return [None] * (1 + m) + [ad.Zero(x.aval) for x in dc]
    return [None] * (1 + m) + list(_param_ct(f, a, consts, ct))


def _param_batch(args, dims, *, f, m, dtype):
    size = _batch_size(args, dims)
    args = [_front(x, d, size) for x, d in zip(args, dims)]  # parameters too: simplest, and small
    fb = _BatchedF(f, (True,) * m)
    return param_term(fb, args[0], args[1 : m + 1], args[m + 1 :], dtype), 0


ad.primitive_jvps[_param_p] = _param_jvp
ad.primitive_transposes[_param_p] = _param_transpose
batching.primitive_batchers[_param_p] = _param_batch


def _param_ct_jvp(primals, tangents, *, f, m, dc_avals):
    a, consts, ct = primals[0], primals[1 : m + 1], primals[m + 1]
    a_dot, consts_dot, ct_dot = tangents[0], tangents[1 : m + 1], tangents[m + 1]
    out = _param_ct(f, a, consts, ct)
    terms = [_param_ct(f, a, consts, ct_dot)] if type(ct_dot) is not ad.Zero else []

    def a_term(w, v):
        # d/dA sum(ct * psi_dc(A)) [a_dot] = sum(ct * L^{psi_dc}_A[herm(a_dot)]): linear in dc.
        h = _hermitian_part(a_dot)
        pairing = lambda *dc: jnp.sum(ct * _frechet_formula(_ParamTangent(f, m), (*consts, *dc), w, v, h))  # noqa: E731
        return _param_vjp(pairing, consts, jnp.ones_like)

    terms += _eigh_terms(
        a,
        a_dot,
        consts,
        consts_dot,
        a_term,
        lambda w, v, c_dot: jax.jvp(lambda *c: _param_ct_formula(f, c, w, v, ct), tuple(consts), tuple(c_dot))[1],
    )
    tangent = [_sum_terms([t[q] for t in terms], out[q]) for q in range(m)]
    return out, tangent


def _param_ct_transpose(cts, a, *rest, f, m, dc_avals):
    consts, ct = rest[:m], rest[m]
    _require_linear_only("eigjax_param_ct", (a, *consts), "its last argument")
    cts = [jnp.zeros(s, d) if type(x) is ad.Zero else x for x, (s, d) in zip(cts, dc_avals)]
    return [None] * (1 + m) + [param_term(f, a, consts, cts, ct.aval.dtype)]


def _param_ct_batch(args, dims, *, f, m, dc_avals):
    size = _batch_size(args, dims)
    args = [_front(x, d, size) for x, d in zip(args, dims)]
    fb = _BatchedF(f, (True,) * m)
    return _param_ct(fb, args[0], args[1 : m + 1], args[m + 1]), [0] * m


ad.primitive_jvps[_param_ct_p] = _param_ct_jvp
ad.primitive_transposes[_param_ct_p] = _param_ct_transpose
batching.primitive_batchers[_param_ct_p] = _param_ct_batch
