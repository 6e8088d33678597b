"""Spectral report: eigengaps, degenerate groups and conditioning of a matrix or batch.

*Is my matrix near a degenerate point?* :func:`spectral_report` returns the smallest
eigengap, the degenerate groups under the tolerance the derivative rule actually uses,
whether any pair was cut (``F_ij = 0``), the smallest gap that was *not* cut (``1/gap`` is
the largest factor in the eigenvector derivative) and, for general matrices, the eigenvalue
condition numbers ``s_i``. It returns a NamedTuple of arrays and works under ``jit``;
:func:`format_spectral_report` turns a report into readable text (outside ``jit``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._checks import as_square_matrix, check_bool, check_nonnegative_float
from .._eig import eig_condition_numbers, eigvals
from .._eigh import eigvalsh
from .._gaps import default_tolerance, gap_matrix
from .._linalg import HIGHEST as _HIGHEST
from .._linalg import _norm


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
    err = (n * eps) * _norm(a, axis=(-2, -1))[..., None] * s  # scaled: no overflow at 1e20 (float32)
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
    lines = [
        f"{'Hermitian' if hermitian else 'General'} spectral report, n = {n}"
        + (f", batch shape {batch}" if batch else "")
    ]
    if batch:
        count = math.prod(batch)  # not -1: a reshape cannot infer it when n == 0
        flat = jax.tree_util.tree_map(lambda x: x.reshape((count,) + x.shape[len(batch) :]), r)
        ndeg = int(np.sum(flat.any_degenerate))
        lines.append(f"matrices: {count}; with a pair treated as degenerate: {ndeg}")
        lines.append(f"smallest eigengap over the batch: {np.min(flat.min_gap, initial=np.inf):.3e}")
        if count == 0:
            return "\n".join(lines)
        k = int(np.argmin(flat.min_gap)) if n >= 2 else 0
        lines.append(f"details of matrix {tuple(int(i) for i in np.unravel_index(k, batch))} (smallest gap):")
        one = jax.tree_util.tree_map(lambda x: x[k], flat)
        lines.extend(
            "  " + line for line in format_spectral_report(one, max_eigenvalues=max_eigenvalues).splitlines()[1:]
        )
        return "\n".join(lines)
    shown = ", ".join(_fmt(x) for x in w[:max_eigenvalues]) + (" ..." if n > max_eigenvalues else "")
    lines.append(f"eigenvalues: [{shown}]")
    lines.append(f"smallest eigengap: {float(r.min_gap):.3e}")
    if n:
        lines.append(
            f"degeneracy tolerance: {float(np.max(r.tolerance)):.3e}"
            + (" (largest pair value)" if not hermitian else "")
        )
    groups = [np.flatnonzero(r.group == g) for g in np.unique(r.group)]
    multi = [g for g in groups if g.size > 1]
    if multi:
        sizes = [int(g.size) for g in multi]
        where = ", ".join(f"{g[0]}-{g[-1]}" if np.all(np.diff(g) == 1) else str(g.tolist()) for g in multi)
        lines.append(f"degenerate groups: {sizes} (indices {where})")
        lines.append(
            f"pairs treated as degenerate (F_ij = 0): {int(r.num_degenerate_pairs)}"
            " - derivatives are exact only for gauge-invariant losses"
        )
        split = (r.group[:, None] == r.group[None, :]) & ~r.degenerate & ~np.eye(n, dtype=bool)
        if np.any(split):
            gmin = float(np.min(np.abs(w[:, None] - w[None, :])[split]))
            lines.append(
                f"warning: {int(np.sum(split)) // 2} pair(s) inside a group are split by more than the"
                f" tolerance (closest {gmin:.2e}): they get F_ij = 1/gap, so even gauge-invariant"
                " eigenvector derivatives lose accuracy; pass a larger degenerate_tol"
            )
    else:
        lines.append("degenerate groups: none (every pair resolved)")
    if np.isfinite(r.min_resolved_gap):
        lines.append(
            f"smallest resolved gap: {float(r.min_resolved_gap):.3e}"
            f" (eigenvector derivatives scale up to {1 / float(r.min_resolved_gap):.3e})"
        )
    if not hermitian and n:
        s = r.condition_numbers
        lines.append(f"eigenvalue condition numbers: max {np.max(s):.3e}, min {np.min(s):.3e}")
        eps = np.finfo(s.dtype).eps
        if np.any(s >= 0.05 / np.sqrt(eps)):
            lines.append("warning: condition numbers ~ eps^(-1/2): numerically defective, no derivative")
    return "\n".join(lines)
