"""Diagnostics: spectral reports, a gradient checker and a gauge-invariance check.

Three questions a user of a differentiable eigendecomposition keeps asking:

1. *Is my matrix near a degenerate point?* :func:`spectral_report` returns the
   smallest eigengap, the degenerate groups under the tolerance the derivative rule
   actually uses, whether any pair was cut (``F_ij = 0``), the smallest gap that was
   *not* cut (``1/gap`` is the largest factor in the eigenvector derivative) and, for
   general matrices, the eigenvalue condition numbers ``s_i``.
2. *Is the derivative of my loss right?* :func:`check_grad` compares ``jax.jvp`` with
   fourth-order central finite differences along random Hermitian (or general)
   directions.
3. *Is my loss well defined at all?* An eigenvector is defined only up to a phase
   (a sign for real matrices), and inside a degenerate eigenspace only up to a
   unitary change of basis (the *gauge*). A loss that depends on that choice has no
   derivative there, and eigh's degenerate rule is exact precisely for the losses that
   do not (README, "When the degenerate rule is exact").
   :func:`check_gauge_invariance` changes the gauge and looks whether the loss value or
   its gradient move.

Design of the gauge check. The user passes ``loss(a)``, a function of the *matrix*
that calls eigjax internally, so the gauge has to be changed inside eigjax. While the
check runs, the forward solvers of the decompositions (``eigjax._eigh._eigh_forward``
and ``_eigh_forward_sym``, ``eigjax._eig._eig_forward``, ``eigjax._generalized_eigh._forward``)
are replaced by wrappers that return ``V U`` instead of ``V``, with ``U`` a random
unitary that is block diagonal on the degenerate groups of the call (the default
tolerance of the derivative rule) and a random phase (a random sign for real
matrices) on simple eigenvalues; ``V U`` stays ``B``-orthonormal in the generalized
problem. ``U`` is the polar factor of a random matrix masked to the groups, so it is
exactly of that structure. It carries no gradient. Every JVP rule computes its
tangents from the eigenvectors that its own primal call returns, so it sees the same
gauge as the loss. Calls are counted: a loss that reaches eigjax only through a
function compiled *before* the check (a cached ``jax.jit``) is not intercepted, and
the check says so (``calls == 0``) rather than passing silently. Public functions
built on other routes (spectral matrix functions are gauge-free by construction)
are not touched; ``eigh_partial``'s solver (``eigjax._partial._rule._solve``) is.

All three return NamedTuples of arrays and work under ``jit``;
:func:`format_spectral_report` turns a report into readable text (outside ``jit``).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import threading
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._checks import as_square_matrix, check_bool, check_nonnegative_float
from ._gaps import default_tolerance, gap_matrix
from ._guard import trust_loss

_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------
# Spectral report
# --------------------------------------------------------------------------------------


class SpectralReport(NamedTuple):
    """Result of :func:`spectral_report` (leading batch dimensions ``...``).

    Attributes:
      eigenvalues: ``(..., n)``; real ascending (Hermitian) or complex sorted by
        (real, imag) (general).
      min_gap: ``(...,)`` smallest ``|w_i - w_j|``, ``i != j`` (``inf`` for n < 2).
      min_resolved_gap: ``(...,)`` smallest gap among pairs *not* treated as
        degenerate (``inf`` if none): ``1/min_resolved_gap`` is the largest entry of
        the inverse-gap matrix ``F`` of the eigenvector derivative.
      tolerance: ``(..., n, n)`` the degeneracy tolerance of each pair: the one the
        derivative rule uses (``4 max(n, 8) eps max|w|`` for Hermitian, ``n eps ||A||_F
        (s_i + s_j)`` for general matrices) or the ``degenerate_tol`` given.
      degenerate: ``(..., n, n)`` bool, pairs ``i != j`` treated as degenerate.
      group: ``(..., n)`` int, index of the first eigenvalue of each eigenvalue's
        degenerate group (its own index when simple; chains are merged).
      num_degenerate_pairs: ``(...,)`` int, number of pairs ``i < j`` treated as
        degenerate.
      any_degenerate: ``(...,)`` bool.
      condition_numbers: ``(..., n)`` eigenvalue condition numbers
        ``s_i = ||x_i|| ||y_i|| / |y_i^H x_i|`` (all 1 for Hermitian input).
    """

    eigenvalues: jax.Array
    min_gap: jax.Array
    min_resolved_gap: jax.Array
    tolerance: jax.Array
    degenerate: jax.Array
    group: jax.Array
    num_degenerate_pairs: jax.Array
    any_degenerate: jax.Array
    condition_numbers: jax.Array


def _closure(mask: jax.Array) -> jax.Array:
    """Transitive closure of a symmetric boolean relation with a true diagonal."""
    n = mask.shape[-1]
    c = mask
    for _ in range(max(1, math.ceil(math.log2(max(n, 2))))):
        cf = c.astype(jnp.float32)
        c = jnp.matmul(cf, cf, precision=_HIGHEST) > 0
    return c


def _groups(degenerate: jax.Array) -> jax.Array:
    """Index of the first member of each eigenvalue's group, shape ``(..., n)``."""
    n = degenerate.shape[-1]
    if n == 0:
        return jnp.zeros(degenerate.shape[:-1], jnp.int32)
    eye = jnp.broadcast_to(jnp.eye(n, dtype=bool), degenerate.shape)
    c = _closure(degenerate | eye)
    return jnp.argmax(c, axis=-1).astype(jnp.int32)


def _general_tolerance(a: jax.Array, s: jax.Array) -> jax.Array:
    """``n eps ||A||_F (s_i + s_j)``: the default of :func:`eigjax.eig`'s rule."""
    n = a.shape[-1]
    eps = jnp.finfo(a.dtype).eps
    err = (n * eps) * jnp.linalg.norm(a, axis=(-2, -1))[..., None] * s
    return err[..., :, None] + err[..., None, :]


def spectral_report(
    a: ArrayLike,
    *,
    hermitian: bool = True,
    degenerate_tol: float | None = None,
    symmetrize: bool = True,
) -> SpectralReport:
    r"""Eigengaps, degenerate groups and conditioning of a matrix or batch of matrices.

    Tells whether the derivative rules of :func:`eigjax.eigh` / :func:`eigjax.eig`
    treat any eigenvalue pair of ``a`` as degenerate (and so give derivatives only
    for gauge-invariant losses, see :func:`check_gauge_invariance`), and how large
    the eigenvector derivatives can get (``1 / min_resolved_gap``).

    Args:
      a: ``(..., n, n)`` matrix or batch.
      hermitian: if True (default) treat ``a`` as Hermitian (its Hermitian part
        when ``symmetrize``) and use :func:`eigjax.eigvalsh`; if False use
        :func:`eigjax.eigvals` and report condition numbers.
      degenerate_tol: the tolerance passed to the decomposition, if any (``None``:
        the decomposition's own default).
      symmetrize: as in :func:`eigjax.eigh` (Hermitian case only).

    Returns:
      :class:`SpectralReport` of arrays; works under ``jit`` and ``vmap``.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> r = eigjax.spectral_report(jnp.diag(jnp.array([1.0, 1.0, 2.0])))
      >>> r.group.tolist(), bool(r.any_degenerate), float(r.min_resolved_gap)
      ([0, 0, 2], True, 1.0)
    """
    fn = "eigjax.spectral_report"
    a = as_square_matrix(a, name="a", fn=fn)
    hermitian = check_bool(hermitian, name="hermitian", fn=fn)
    degenerate_tol = check_nonnegative_float(degenerate_tol, name="degenerate_tol", fn=fn)
    n = a.shape[-1]
    if hermitian:
        from ._eigh import eigvalsh

        w = eigvalsh(a, symmetrize=symmetrize)
        s = jnp.ones(w.shape, w.dtype)
        if n == 0:  # default_tolerance reduces over an empty axis
            tol = jnp.zeros(w.shape[:-1] + (1, 1), w.dtype)
        elif degenerate_tol is None:
            tol = default_tolerance(w, n)
        else:
            tol = jnp.asarray(degenerate_tol, w.dtype)
        tol = jnp.broadcast_to(tol, w.shape[:-1] + (n, n))
    else:
        from ._eig import eig_condition_numbers, eigvals

        w = eigvals(a)
        s = eig_condition_numbers(a)
        rdtype = s.dtype
        if degenerate_tol is None:
            tol = _general_tolerance(a, s).astype(rdtype)
        else:
            tol = jnp.full(w.shape[:-1] + (n, n), degenerate_tol, rdtype)
    w, s, tol = jax.lax.stop_gradient((w, s, tol))
    absd = jnp.abs(gap_matrix(w))
    offdiag = jnp.broadcast_to(~jnp.eye(n, dtype=bool), absd.shape)
    degenerate = (absd <= tol) & offdiag
    inf = jnp.asarray(jnp.inf, absd.dtype)
    min_gap = jnp.min(jnp.where(offdiag, absd, inf), axis=(-2, -1), initial=jnp.inf)
    min_resolved = jnp.min(jnp.where(offdiag & ~degenerate, absd, inf), axis=(-2, -1), initial=jnp.inf)
    npairs = (jnp.sum(degenerate, axis=(-2, -1)) // 2).astype(jnp.int32)
    return SpectralReport(
        eigenvalues=w,
        min_gap=min_gap,
        min_resolved_gap=min_resolved,
        tolerance=tol,
        degenerate=degenerate,
        group=_groups(degenerate),
        num_degenerate_pairs=npairs,
        any_degenerate=npairs > 0,
        condition_numbers=s,
    )


def _fmt(x) -> str:
    x = complex(x)
    if x.imag == 0:
        return f"{x.real:.12g}"
    return f"{x.real:.10g}{x.imag:+.10g}j"


def format_spectral_report(report: SpectralReport, *, max_eigenvalues: int = 16) -> str:
    """Readable text for a :class:`SpectralReport` (concrete arrays, not under ``jit``).

    For a batch, prints a summary and the details of the matrix with the smallest
    eigengap.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> r = eigjax.spectral_report(jnp.diag(jnp.array([1.0, 1.0, 2.0])))
      >>> print(eigjax.format_spectral_report(r))  # doctest: +ELLIPSIS
      Hermitian spectral report, n = 3
      ...
      degenerate groups: [2] (indices 0-1)
      ...
    """
    r = jax.tree_util.tree_map(np.asarray, report)
    w = r.eigenvalues
    hermitian = not np.iscomplexobj(w)
    n = w.shape[-1]
    batch = w.shape[:-1]
    lines = [f"{'Hermitian' if hermitian else 'General'} spectral report, n = {n}"
             + (f", batch shape {batch}" if batch else "")]
    if batch:
        count = math.prod(batch)  # not -1: a reshape cannot infer it when n == 0
        flat = jax.tree_util.tree_map(lambda x: x.reshape((count,) + x.shape[len(batch):]), r)
        ndeg = int(np.sum(flat.any_degenerate))
        lines.append(f"matrices: {count}; with a pair treated as degenerate: {ndeg}")
        lines.append(f"smallest eigengap over the batch: {np.min(flat.min_gap, initial=np.inf):.3e}")
        if count == 0:
            return "\n".join(lines)
        k = int(np.argmin(flat.min_gap)) if n >= 2 else 0
        lines.append(f"details of matrix {tuple(int(i) for i in np.unravel_index(k, batch))} (smallest gap):")
        one = jax.tree_util.tree_map(lambda x: x[k], flat)
        lines.extend("  " + line for line in format_spectral_report(one, max_eigenvalues=max_eigenvalues).splitlines()[1:])
        return "\n".join(lines)
    shown = ", ".join(_fmt(x) for x in w[:max_eigenvalues]) + (" ..." if n > max_eigenvalues else "")
    lines.append(f"eigenvalues: [{shown}]")
    lines.append(f"smallest eigengap: {float(r.min_gap):.3e}")
    if n:
        lines.append(f"degeneracy tolerance: {float(np.max(r.tolerance)):.3e}"
                     + (" (largest pair value)" if not hermitian else ""))
    groups = [np.flatnonzero(r.group == g) for g in np.unique(r.group)]
    multi = [g for g in groups if g.size > 1]
    if multi:
        sizes = [int(g.size) for g in multi]
        where = ", ".join(f"{g[0]}-{g[-1]}" if np.all(np.diff(g) == 1) else str(g.tolist()) for g in multi)
        lines.append(f"degenerate groups: {sizes} (indices {where})")
        lines.append(f"pairs treated as degenerate (F_ij = 0): {int(r.num_degenerate_pairs)}"
                     " - derivatives are exact only for gauge-invariant losses")
        split = (r.group[:, None] == r.group[None, :]) & ~r.degenerate & ~np.eye(n, dtype=bool)
        if np.any(split):
            gmin = float(np.min(np.abs(w[:, None] - w[None, :])[split]))
            lines.append(f"warning: {int(np.sum(split)) // 2} pair(s) inside a group are split by more than the"
                         f" tolerance (closest {gmin:.2e}): they get F_ij = 1/gap, so even gauge-invariant"
                         " eigenvector derivatives lose accuracy; pass a larger degenerate_tol")
    else:
        lines.append("degenerate groups: none (every pair resolved)")
    if np.isfinite(r.min_resolved_gap):
        lines.append(f"smallest resolved gap: {float(r.min_resolved_gap):.3e}"
                     f" (eigenvector derivatives scale up to {1 / float(r.min_resolved_gap):.3e})")
    if not hermitian and n:
        s = r.condition_numbers
        lines.append(f"eigenvalue condition numbers: max {np.max(s):.3e}, min {np.min(s):.3e}")
        eps = np.finfo(s.dtype).eps
        if np.any(s >= 0.05 / np.sqrt(eps)):
            lines.append("warning: condition numbers ~ eps^(-1/2): numerically defective, no derivative")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Gradient check
# --------------------------------------------------------------------------------------


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


def _random_direction(key, a: jax.Array, hermitian: bool) -> jax.Array:
    d = jax.random.normal(key, a.shape, a.dtype)
    if hermitian:
        d = (d + jnp.conj(jnp.swapaxes(d, -1, -2))) / 2
    norm = jnp.linalg.norm(d.reshape(-1)) if d.size else jnp.ones((), jnp.finfo(a.dtype).dtype)
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

    The default step ``h = eps^(1/4)`` (``1.2e-4`` in float64, ``0.019`` in float32)
    sits a little below the ``eps^(1/5)`` that balances the ``h^4`` truncation error
    with the ``eps/h`` rounding error for a loss varying on the scale of ``||a||``:
    eigenvector functions vary on the scale of the eigengaps, which are smaller. Only compare
    well-defined quantities: at a degenerate point the finite differences of a
    gauge-dependent loss (a single eigenvector) are meaningless, and a perturbation
    ``h ||a||`` larger than an eigengap crosses it (pass a smaller ``h``).

    Args:
      loss: function of one array (the matrix) returning an array or pytree.
      a: the point, ``(..., n, n)``.
      directions: number of random directions.
      hermitian: draw Hermitian directions (the tangent space of Hermitian input);
        False draws general ones (for :func:`eigjax.eig` and friends).
      h: relative step; default ``eps(dtype)^(1/4)``.
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
    h = eps ** 0.25 if h is None else h
    rtol = eps ** (1 / 3) if rtol is None else rtol
    if key is None:
        key = jax.random.key(0)
    scale = jnp.linalg.norm(a.reshape(-1)) if a.size else jnp.zeros((), rdtype)
    scale = jnp.where(scale > 0, scale, 1.0).astype(rdtype)
    out = jax.eval_shape(loss, a)
    if any(not jnp.issubdtype(x.dtype, jnp.inexact) for x in jax.tree_util.tree_leaves(out)):
        raise TypeError(f"{fn}: `loss` must return floating or complex values (derivatives of integers are zero); got {out}.")
    abs_errs, rel_errs, jnorms, fnorms, floors = [], [], [], [], []
    for k in jax.random.split(key, directions):
        e = _random_direction(k, a, hermitian) * scale.astype(a.dtype)  # real scale, maybe complex a
        _, t = jax.jvp(loss, (a,), (e,))
        t = _flat(t)
        f = [_flat(loss(a + c * h * e)) for c in (2.0, 1.0, -1.0, -2.0)]
        fd = (-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * h)
        err = jnp.linalg.norm(t - fd.astype(t.dtype))
        jn, fdn = jnp.linalg.norm(t), jnp.linalg.norm(fd)
        den = jnp.maximum(jn, fdn)
        abs_errs.append(err)
        # The rounding error of the difference quotient, ~eps |f| / h: below it an
        # absolute error means nothing (both derivatives are zero up to rounding). It
        # scales with the loss values, so tiny inputs are judged like large ones.
        floors.append(10 * eps * jnp.max(jnp.stack([jnp.linalg.norm(x) for x in f])) / h)
        rel_errs.append(jnp.where(den > 0, err / jnp.where(den > 0, den, 1.0), err))
        jnorms.append(jn)
        fnorms.append(fdn)
    abs_err, rel_err = jnp.stack(abs_errs), jnp.stack(rel_errs)
    jnorm, fnorm = jnp.stack(jnorms), jnp.stack(fnorms)
    finite = jnp.all(jnp.isfinite(abs_err))
    ok = finite & jnp.all((rel_err <= rtol) | (abs_err <= jnp.stack(floors)))
    return GradCheck(abs_err, rel_err, jnorm, fnorm, jnp.asarray(h, rdtype), ok)


# --------------------------------------------------------------------------------------
# Gauge-invariance check
# --------------------------------------------------------------------------------------


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


_state = threading.local()


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
    s = jnp.linalg.norm(jnp.linalg.solve(vs, eye), axis=-1)
    tol = _general_tolerance(jax.lax.stop_gradient(args[0]), s)
    mask = _closure((jnp.abs(gap_matrix(ws)) <= tol) | jnp.broadcast_to(jnp.eye(n, dtype=bool), ws.shape[:-1] + (n, n)))
    u = jax.lax.stop_gradient(_polar_unitary(key, mask, v.dtype))
    v2 = jnp.matmul(v, u, precision=_HIGHEST)
    norms = jnp.linalg.norm(jax.lax.stop_gradient(v2), axis=-2, keepdims=True)
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


# (module, attribute, transform): the forward solvers whose gauge is changed. The
# forward solvers, not the custom_jvp functions: every JVP rule computes its tangents
# from the eigenvectors its own primal call returns, so the rule then sees the same
# gauge as the loss (intercepting the custom_jvp function left eigh's eigenvalue
# tangents in the solver's gauge: a single eigenvalue of a degenerate group passed).
_TARGETS = (
    ("eigjax._eigh", "_eigh_forward", _eigh_transform),
    ("eigjax._eigh", "_eigh_forward_sym", _eigh_transform),
    ("eigjax._eig", "_eig_forward", _eig_transform),
    ("eigjax._eig", "_eig_left_forward", _eig_left_transform),
    ("eigjax._generalized_eigh", "_forward", _eigh_transform),
    ("eigjax._partial._rule", "_solve", _partial_transform),
)


# (module, jitted entry point, function it calls): swapped for an uncompiled call while a
# gauge is active, so that a trace cached before the block cannot bypass the interception.
_ENTRIES = (
    ("eigjax._eigh", "_eigh_entry", "_eigh"),
    ("eigjax._eigh", "_eigvalsh_entry", "_eigvalsh"),
    ("eigjax._eig", "_eig_entry", "_eig"),
    ("eigjax._eig", "_eig_left_entry", "_eig_left"),
    ("eigjax._eig", "_eigvals_entry", "_eigvals"),
    ("eigjax._generalized_eigh", "_eigh_gen_entry", "_eigh_gen"),
)


def _wrap(orig, transform):
    def wrapper(*args):
        if getattr(_state, "depth", 0):
            return orig(*args)
        _state.depth = 1
        try:
            out = orig(*args)
        finally:
            _state.depth = 0
        box = _state.box
        box["calls"] += 1
        # One key for every call: the same input gets the same gauge however often
        # the loss decomposes it (a loss may call eigh(a) several times).
        return transform(box["key"], args, out)

    return wrapper


@contextlib.contextmanager
def random_gauge(key: jax.Array):
    """Context manager: inside it, eigjax's decompositions return a random gauge.

    Every call of :func:`eigjax.eigh` / :func:`eigjax.eig` / :func:`eigjax.eigh_generalized`
    traced inside the block returns ``V U`` with ``U`` a random unitary, block diagonal
    on degenerate groups (default tolerance) and a random phase (sign) on simple
    eigenvalues - an equally valid
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
    saved = []
    prev = (getattr(_state, "box", None), getattr(_state, "depth", 0))
    box = {"key": key, "calls": 0}
    _state.box, _state.depth = box, 0
    try:
        for mod_name, attr, transform in _TARGETS:
            try:
                mod = importlib.import_module(mod_name)
            except ImportError:  # pragma: no cover - module not present in this build
                continue
            orig = getattr(mod, attr, None)
            if orig is None:  # pragma: no cover
                continue
            saved.append((mod, attr, orig))
            setattr(mod, attr, _wrap(orig, transform))
        for mod_name, entry, target in _ENTRIES:
            mod = importlib.import_module(mod_name)
            saved.append((mod, entry, getattr(mod, entry)))
            setattr(mod, entry, lambda *args, _m=mod, _t=target: getattr(_m, _t)(*args))
        yield lambda: box["calls"]
    finally:
        for mod, attr, orig in saved:
            setattr(mod, attr, orig)
        _state.box, _state.depth = prev


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
    rtol = eps ** 0.5 if rtol is None else rtol
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
            vchange.append(jnp.linalg.norm(out1 - out0))
            gchange.append(jnp.linalg.norm((g1 - g0).reshape(-1)))
            vscale.append(jnp.maximum(jnp.linalg.norm(out0), jnp.linalg.norm(out1)))
            gscale.append(jnp.maximum(jnp.linalg.norm(g0.reshape(-1)), jnp.linalg.norm(g1.reshape(-1))))
        anorm = jnp.linalg.norm(a.reshape(-1)) if a.size else jnp.zeros((), rdtype)
        gs = jnp.max(jnp.stack(gscale))
        floor = 100 * eps * (1 + anorm)
        value_tol = rtol * (jnp.max(jnp.stack(vscale)) + gs * anorm) + floor
        grad_tol = rtol * gs + floor
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


# --------------------------------------------------------------------------------------
# `eigjax check` command
# --------------------------------------------------------------------------------------


def _check_parser():
    import argparse

    from ._testmatrices import NAMES

    p = argparse.ArgumentParser(
        prog="eigjax check",
        description="Spectral report and derivative checks for one matrix (or a batch in a .npy file).",
        epilog="examples:\n  eigjax check rosser\n  eigjax check wilkinson -n 21\n  eigjax check mats.npy --general --no-grad\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("matrix", help=f"a .npy file holding an (..., n, n) array, or a named test matrix: {', '.join(NAMES)}")
    p.add_argument("-n", "--size", type=int, default=None, help="size of a named test matrix")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--hermitian", dest="kind", action="store_const", const="hermitian",
                      help="treat the input as Hermitian (eigh); default: detected")
    kind.add_argument("--general", dest="kind", action="store_const", const="general",
                      help="treat the input as a general matrix (eig)")
    p.add_argument("--degenerate-tol", type=float, default=None, help="degeneracy tolerance (default: eigjax's)")
    p.add_argument("--dtype", choices=("float32", "float64", "complex64", "complex128"), default=None,
                   help="cast the input to this dtype (default: the file's; float64 for named matrices)")
    p.add_argument("--directions", type=int, default=3, help="random directions for the gradient checks")
    p.add_argument("--no-grad", action="store_true", help="only print the spectral report")
    return p


def _load_matrix(args) -> np.ndarray:
    import os

    from ._testmatrices import NAMES, named_matrix

    if args.matrix in NAMES:
        return named_matrix(args.matrix, args.size)
    if not os.path.exists(args.matrix):
        raise ValueError(f"no such file and no test matrix named {args.matrix!r}")
    if args.size is not None:
        raise ValueError("-n/--size only applies to a named test matrix")
    try:
        loaded = np.load(args.matrix, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{args.matrix}: not a readable .npy/.npz array file ({exc})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if len(names) != 1:
                listed = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
                raise ValueError(
                    f"{args.matrix}: expected an .npz file holding one array, got {len(names)} arrays"
                    + (f" ({listed})" if names else "") + "; save the matrix to check on its own (np.save)"
                )
            return np.asarray(loaded[names[0]])
    return np.asarray(loaded)


def _no_derivative_reason(a, report: SpectralReport, hermitian: bool) -> str | None:
    """Why no derivative check applies to ``a`` (None when they do): NaN/inf input, or a
    numerically defective general matrix (condition numbers ~ eps^(-1/2)): the derivatives
    are NaN there by contract, so comparing them with finite differences tests nothing."""
    xn = np.asarray(a)
    bad = ~np.isfinite(xn).all(axis=(-2, -1))
    if np.any(bad):
        count = f"{int(np.sum(bad))} of {bad.size} matrices have" if bad.ndim else "the input has"
        return (f"{count} NaN or inf entries: eigenvalues and derivatives are NaN by contract "
                "(nothing to compare with finite differences)")
    if not hermitian:
        s = np.asarray(report.condition_numbers)
        eps = np.finfo(s.dtype).eps
        worst = np.max(s, axis=-1, initial=0.0)
        defective = ~(worst < 0.05 / np.sqrt(eps))
        if np.any(defective):
            count = f"{int(np.sum(defective))} of {defective.size} matrices are" if defective.ndim else "the matrix is"
            return (f"{count} numerically defective (eigenvalue condition number {float(np.max(worst)):.1e}): "
                    "at a defective matrix (a Jordan block) the eigenvalues have no derivative, and eig's "
                    "derivatives are NaN there by contract")
    return None


def run_check(argv: list[str] | None = None) -> int:
    """Entry point of ``eigjax check``: prints a report, returns the exit status.

    0: every derivative check that applies passed (checks that do not apply, at NaN or
    inf input or a defective matrix where no derivative exists, are skipped with the
    reason); 1: a check failed or a derivative is not finite; 2: bad arguments or input
    (message on stderr).

    Example:
      >>> from eigjax._diagnostics import run_check
      >>> run_check(["second_difference", "-n", "4"])  # doctest: +ELLIPSIS
      input: second_difference, shape (4, 4), float64, Hermitian
      ...
      0
    """
    import sys

    parser = _check_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    jax.config.update("jax_enable_x64", True)
    try:
        x = _load_matrix(args)
        if args.dtype is not None:
            if np.iscomplexobj(x) and not np.issubdtype(np.dtype(args.dtype), np.complexfloating):
                raise ValueError(f"--dtype {args.dtype}: the matrix is complex ({x.dtype}); casting would drop its imaginary part")
            x = x.astype(args.dtype)
        a = as_square_matrix(x, name="matrix", fn="eigjax check")
    except (ValueError, TypeError, OSError) as exc:
        print(f"eigjax check: error: {exc}", file=sys.stderr)
        return 2
    if args.directions < 1:
        print("eigjax check: error: --directions must be >= 1", file=sys.stderr)
        return 2
    if args.degenerate_tol is not None and not args.degenerate_tol >= 0:
        print(f"eigjax check: error: --degenerate-tol must be a number >= 0; got {args.degenerate_tol}", file=sys.stderr)
        return 2
    n = a.shape[-1]
    if args.kind is None:
        xn = np.asarray(a)
        with np.errstate(invalid="ignore"):  # inf - inf: such input is reported, not checked
            herm_err = np.max(np.abs(xn - np.conj(np.swapaxes(xn, -1, -2))), initial=0.0)
        scale = np.max(np.abs(xn), initial=0.0)
        hermitian = bool(herm_err <= 10 * max(n, 1) * np.finfo(xn.dtype).eps * scale)
    else:
        hermitian = args.kind == "hermitian"
    print(f"input: {args.matrix}, shape {tuple(a.shape)}, {a.dtype}, {'Hermitian' if hermitian else 'general'}")
    report = spectral_report(a, hermitian=hermitian, degenerate_tol=args.degenerate_tol)
    print(format_spectral_report(report))
    if args.no_grad or n == 0:
        return 0
    skip = _no_derivative_reason(a, report, hermitian)
    if skip:
        print(f"derivative checks: skipped - {skip}")
        return 0

    # Derivative checks of gauge-invariant quantities, well defined even at degenerate
    # points: power sums of the eigenvalues (order-free), and the spectral projectors
    # of the degenerate groups weighted by distinct numbers (needs a stable order of
    # the groups over the finite-difference stencil).
    group = np.asarray(report.group)
    rdtype = jnp.finfo(a.dtype).dtype
    weights = jnp.asarray(1.0 + group.astype(np.float64) / max(n, 1), dtype=rdtype)
    xn = np.asarray(a)
    anorm = float(np.linalg.norm(xn.reshape(-1)))
    eps = float(jnp.finfo(rdtype).eps)
    w = np.asarray(report.eigenvalues)
    # The smallest distance the stencil must not cross: resolved gaps, and for general
    # matrices also real-part separations between groups (the sort key), over the
    # eigenvalue condition numbers (an eigenvalue moves by s_i ||E||).
    sep = np.abs(w[..., :, None] - w[..., None, :])
    if not hermitian:
        if np.iscomplexobj(xn):  # real input: conjugate pairs keep their order
            sep = np.minimum(sep, np.abs(w.real[..., :, None] - w.real[..., None, :]))
        sep = sep / np.max(np.asarray(report.condition_numbers), axis=-1)[..., None, None]
    other_group = group[..., :, None] != group[..., None, :]
    gap = float(np.min(np.where(other_group, sep, np.inf), initial=np.inf))
    h = eps ** 0.25
    h_fd = 0.05 * gap / anorm if anorm > 0 else h
    skip_vectors = h_fd < eps ** 0.5
    h = min(h, h_fd) if not skip_vectors else h

    def power_sums(eigenvalues):
        def f(m):
            lam = eigenvalues(m)
            return jnp.stack([jnp.sum(lam ** k, axis=-1) for k in (1, 2, 3)], axis=-1)

        return f

    if hermitian:
        from ._eigh import eigh, eigvalsh

        def projectors(m):
            v = eigh(m, degenerate_tol=args.degenerate_tol).eigenvectors
            return jnp.matmul(v * weights[..., None, :].astype(v.dtype), jnp.conj(jnp.swapaxes(v, -1, -2)))

        checks = [("power sums of the eigenvalues (k = 1, 2, 3)", power_sums(eigvalsh), False),
                  ("weighted spectral projectors of the degenerate groups", projectors, True)]
    else:
        from ._eig import eig, eigvals

        def projectors(m):
            r = eig(m, left=True, degenerate_tol=args.degenerate_tol)
            v, y = r.eigenvectors, r.left_eigenvectors
            return jnp.matmul(v * weights[..., None, :].astype(v.dtype), jnp.conj(jnp.swapaxes(y, -1, -2)))

        checks = [("power sums of the eigenvalues (k = 1, 2, 3)", power_sums(eigvals), False),
                  ("weighted spectral projectors x_i y_i^H of the groups", projectors, True)]

    print(f"derivative checks: JVP vs 4th-order central differences, {args.directions} random "
          f"{'Hermitian' if hermitian else 'general'} directions, step {eps ** 0.25:.1e} * ||A||_F"
          + (f" ({h:.1e} for eigenvectors)" if h < eps ** 0.25 and not skip_vectors else ""))
    status = 0
    for title, f, needs_gap in checks:
        if needs_gap and skip_vectors:
            print(f"  {title}: skipped - the closest eigenvalues of different groups ({gap:.1e} apart,"
                  f" ||A||_F = {anorm:.1e}) are too close for finite differences to resolve")
            continue
        r = check_grad(f, a, directions=args.directions, hermitian=hermitian, h=h if needs_gap else None)
        ok = bool(r.ok)
        status |= 0 if ok else 1
        print(f"  {title}: max relative error {float(np.max(np.asarray(r.rel_err))):.2e} -> {'ok' if ok else 'FAILED'}")
    return status
