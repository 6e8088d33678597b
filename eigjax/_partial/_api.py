"""The public entry point :func:`eigjax.eigh_partial`: argument checks, operator forms, the configuration."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from .._checks import as_square_matrix, check_int, check_nonnegative_float
from .._eigh import _hermitian_part
from .._guard import resolve_check
from ._operators import (
    _bcoo_matmat,
    _dense_matmat,
    _ell_layout,
    _ell_matmat,
    _operator_matmat,
)
from ._rule import _partial
from ._types import _FN, _METHODS, PartialEighResult, _Config


def _check_hermitian_probe(prm, matmat, n, dtype, what):
    """Raise if the operator is visibly not Hermitian: two products with random vectors,
    ``|y^H (A x) - conj(x^H (A y))|`` against ``100 sqrt(n) eps (|A x| |y| + |A y| |x|)``
    (rounding of the two products is ``~ sqrt(n) eps`` of that). Skipped when the operator
    holds traced values (under ``jit``/``grad``), where no error can be raised."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(prm)):
        return
    r = np.random.default_rng(12345)
    xy = r.standard_normal((2, n))
    if jnp.issubdtype(dtype, jnp.complexfloating):
        xy = xy + 1j * r.standard_normal((2, n))
    xy = jnp.asarray(xy, dtype)
    axy = np.asarray(jax.jit(matmat)(prm, xy))
    x, y = np.asarray(xy)
    ax, ay = axy
    asym = abs(np.vdot(y, ax) - np.conj(np.vdot(x, ay)))
    scale = np.linalg.norm(ax) * np.linalg.norm(y) + np.linalg.norm(ay) * np.linalg.norm(x)
    eps = float(jnp.finfo(dtype).eps)
    if not asym <= 100 * np.sqrt(n) * eps * scale:  # also catches NaN
        raise ValueError(
            f"{_FN}: argument `a` ({what}) must be Hermitian; a random probe gives "
            f"|y^H A x - conj(x^H A y)| = {asym:.3g} against a rounding level of "
            f"{100 * np.sqrt(n) * eps * scale:.3g}."
        )


def eigh_partial(
    a,
    k: int,
    *,
    which: str = "smallest",
    params: Any = None,
    n: int | None = None,
    dtype: Any = None,
    method: str = "auto",
    tol: float | None = None,
    block_size: int | None = None,
    krylov_steps: int | None = None,
    max_restarts: int = 500,
    cg_tol: float | None = None,
    cg_maxiter: int | None = None,
    degenerate_tol: float | None = None,
    seed: int = 0,
    layout: str = "columns",
    degenerate_check: bool | str | None = None,
) -> PartialEighResult:
    r"""The ``k`` smallest or largest eigenpairs of a Hermitian operator, differentiable.

    ``jax.lax.linalg.eigh(..., subset_by_index=...)`` has no derivative; this computes
    ``k`` extremal eigenpairs by Chebyshev-filtered subspace iteration (or restarted
    block Krylov) and differentiates them with the projected-solve rule of the module
    docstring (``dw_i = v_i^H dA v_i``; the eigenvector part outside the computed subspace
    from deflated, Chebyshev-preconditioned CG inside ``jax.lax.custom_linear_solve``;
    degenerate pairs inside the block as in :func:`eigjax.eigh`). A loss of the
    eigenvalues alone runs no CG iteration in reverse mode. Problems with ``n < 4 p``
    (Chebyshev) or ``n < (m + 1) p`` (Krylov) are solved densely.

    Args:
      a: one of
        * a dense Hermitian matrix, shape ``(n, n)`` (its Hermitian part is used, so
          ``jax.grad`` returns a Hermitian gradient);
        * a ``jax.experimental.sparse.BCOO`` matrix of shape ``(n, n)``, assumed
          Hermitian (not symmetrised); derivatives flow to its ``data``. With concrete
          (untraced) indices it is multiplied in a padded-row layout (gathers only);
        * a callable ``matvec(params, x)`` returning ``A(params) @ x`` for ``x`` of shape
          ``(n,)``, Hermitian for every ``params``; derivatives flow to ``params``
          (pass every differentiable quantity through ``params``, not a closure). It is
          ``vmap``-ed over blocks of ``p`` vectors (as rows or, in the hot loops, as
          columns), so a gather ``x[idx]`` is fast and a scatter ``.at[idx].add`` is slow
          on CPU.
      k: number of eigenpairs, ``1 <= k <= n``.
      which: ``"smallest"`` or ``"largest"`` (algebraic).
      params: the pytree passed to ``matvec`` (operator form only).
      n, dtype: size and dtype of the vectors (operator form; ``n`` required, dtype
        default the default float dtype).
      method: ``"chebyshev"`` (Chebyshev-filtered subspace iteration; cost grows like
        ``sqrt(spectral width / gap)``), ``"krylov"`` (restarted block Krylov; cost like
        ``width / gap``) or ``"auto"`` (= ``"chebyshev"``).
      tol: relative residual tolerance, ``||A v - w v|| <= tol * ||A||``. Default
        ``10 * eps**0.75`` (``1.8e-11`` in float64, ``6e-5`` in float32).
      block_size: block size ``p >= k``. Default ``k + max(4, k)`` (Chebyshev; the
        convergence rate is set by the gap between ``lambda_k`` and ``lambda_{p+1}``, and
        the extra vectors deflate the derivative's solve), ``k + max(3, k)`` (Krylov).
      krylov_steps: blocks per restart ``m`` (Krylov only; default ``max(3, 64 // p)``).
      max_restarts: cap on filter iterations (Chebyshev) or restarts (Krylov);
        ``converged`` in the result tells if it was hit.
      cg_tol, cg_maxiter: relative residual tolerance (default ``tol``) and iteration
        cap (default ``min(10 n, 1000)``; with the Chebyshev method each iteration
        applies the operator up to 64 times) of the derivative's projected solve. A
        derivative reports no convergence: if the cap is hit the eigenvector derivative
        is inaccurate (the eigenvalue derivative never uses the solve).
      degenerate_tol: pairs inside the block closer than this are treated as degenerate
        (see :func:`eigjax.eigh`). Default: ``r_i + r_j + n eps max|w|`` with ``r`` the
        residual norms (a Ritz value is within its residual of an eigenvalue, so closer
        pairs cannot be told apart from a degenerate one).
      seed: seed of the pseudo-random starting block (an integer hash, the same on every
        platform; the Lanczos bound starts from the same block).
      layout: how blocks of vectors are laid out in the two hot loops (the filter and the
        derivative's preconditioner): ``"columns"`` (``(n, p)``; the operator is applied
        to ``p`` columns at once, so a gather ``x[idx]`` reads ``p`` contiguous values and
        the operator's index arrays are read once per block) or ``"rows"`` (``(p, n)``).
        Only speed depends on it. Columns made the grid benchmark's forward 1.9x
        faster; XLA lays out some gather patterns badly on columns (an operator built
        from several degree-bucketed tables and a permutation ran 4x slower there), so
        time both for a new operator. ``benchmarks/results_partial.md`` has the numbers.
      degenerate_check: reverse mode tests the cotangent on each degenerate pair inside
        the block and returns NaN where the cut rule would be wrong (see
        :func:`eigjax.eigh`). ``None`` (default): ``True``; ``False`` trusts the loss;
        ``"debug"`` also prints the first failing pair. A block boundary that splits a
        degenerate group is not detected by it (see above: no derivative, CG stalls).

    Returns:
      :class:`PartialEighResult` ``(eigenvalues, eigenvectors, residual_norms,
      iterations, converged)``; eigenvalues ascending in both modes.

    Raises:
      TypeError: ``a`` is not an array, BCOO or callable; ``k`` is not an int.
      ValueError: bad shapes, ``k`` outside ``[1, n]``, bad ``which`` or ``method``,
        missing ``n``; a BCOO matrix or operator that a random probe (two products,
        run when its values are concrete, i.e. not under ``jit``/``grad``) shows to be
        non-Hermitian.

    Example:
      >>> import jax.numpy as jnp, eigjax
      >>> a = jnp.diag(jnp.arange(1.0, 41.0))
      >>> eigjax.eigh_partial(a, 2).eigenvalues.round(4).tolist()  # float32 or float64
      [1.0, 2.0]
    """
    if which not in ("smallest", "largest"):
        raise ValueError(f"{_FN}: option `which` must be 'smallest' or 'largest'; got {which!r}.")
    if layout not in ("columns", "rows"):
        raise ValueError(f"{_FN}: option `layout` must be 'columns' or 'rows'; got {layout!r}.")
    if method not in _METHODS:
        raise ValueError(f"{_FN}: option `method` must be one of {_METHODS}; got {method!r}.")
    method = "chebyshev" if method == "auto" else method
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{_FN}: argument `k` must be a Python int; got {k!r} of type {type(k).__name__}.")
    k = int(k)
    if params is not None and not callable(a):
        raise ValueError(f"{_FN}: option `params` is for the operator form (a callable `a`); a matrix `a` takes none (got params).")
    if isinstance(a, jsparse.BCOO):
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.n_batch != 0 or a.n_dense != 0:
            raise ValueError(
                f"{_FN}: a BCOO argument `a` must be an unbatched square matrix of shape (n, n); "
                f"got shape {tuple(a.shape)} with n_batch={a.n_batch}, n_dense={a.n_dense}."
            )
        n_, dtype_ = a.shape[0], a.dtype
        # (named `ell`, not `layout`: reusing the option's name replaced it with these index
        # arrays, and every BCOO input then ran on rows whatever `layout` said)
        ell = None if isinstance(a.indices, jax.core.Tracer) else _ell_layout(a.indices, n_, a.nse)
        if ell is None:
            prm = (a.data, a.indices)
            matmat = functools.partial(_bcoo_matmat, shape=tuple(a.shape))
        else:
            prm = (a.data, *ell)
            matmat = _ell_matmat
    elif callable(a):
        if n is None:
            raise ValueError(f"{_FN}: with a callable `a` (matvec(params, x)) the size `n` is required.")
        n_ = check_int(n, name="n", fn=_FN, minimum=1)
        dtype_ = jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)
        prm = params
        matmat = functools.partial(_operator_matmat, matvec=a)
        out = jax.eval_shape(matmat, prm, jax.ShapeDtypeStruct((1, n_), dtype_))
        if out.shape != (1, n_):
            raise ValueError(
                f"{_FN}: `a(params, x)` must return shape (n,) = ({n_},) for x of shape (n,); "
                f"got {tuple(out.shape[1:])}."
            )
    else:
        a = as_square_matrix(a, name="a", fn=_FN)
        if a.ndim != 2:
            raise ValueError(
                f"{_FN}: a dense argument `a` must have shape (n, n) (use jax.vmap for batches); "
                f"got shape {tuple(a.shape)}."
            )
        n_, dtype_ = a.shape[0], a.dtype
        prm = _hermitian_part(a)
        matmat = _dense_matmat
    if not 1 <= k <= n_:
        raise ValueError(f"{_FN}: argument `k` must satisfy 1 <= k <= n = {n_}; got k = {k}.")
    if not jnp.issubdtype(dtype_, jnp.inexact):
        dtype_ = jnp.result_type(float)
    if matmat is not _dense_matmat:  # the dense form is symmetrised instead
        _check_hermitian_probe(prm, matmat, n_, dtype_, "a BCOO matrix" if isinstance(a, jsparse.BCOO) else "matvec(params, x)")
    eps = float(jnp.finfo(dtype_).eps)
    tol = check_nonnegative_float(tol, name="tol", fn=_FN)
    tol = 10 * eps**0.75 if tol is None else tol
    cg_tol = check_nonnegative_float(cg_tol, name="cg_tol", fn=_FN)
    cg_tol = tol if cg_tol is None else cg_tol
    degenerate_tol = check_nonnegative_float(degenerate_tol, name="degenerate_tol", fn=_FN)
    extra = max(4, k) if method == "chebyshev" else max(3, k)
    # ints only (a float or a string was coerced by int() before: 4.7 ran as 4)
    block_size = check_int(block_size, name="block_size", fn=_FN, minimum=1, allow_none=True)
    krylov_steps = check_int(krylov_steps, name="krylov_steps", fn=_FN, minimum=2, allow_none=True)
    p = min(n_, k + extra) if block_size is None else block_size
    if not k <= p <= n_:
        raise ValueError(f"{_FN}: option `block_size` must satisfy k <= block_size <= n; got {p}.")
    m = max(3, 64 // p) if krylov_steps is None else krylov_steps
    max_restarts = check_int(max_restarts, name="max_restarts", fn=_FN, minimum=0)
    cg_maxiter = check_int(cg_maxiter, name="cg_maxiter", fn=_FN, minimum=1, allow_none=True)
    seed = check_int(seed, name="seed", fn=_FN)
    cfg = _Config(
        n=n_, k=k, p=p, m=m, largest=(which == "largest"), dtype=jnp.dtype(dtype_), tol=float(tol),
        max_restarts=max_restarts, cg_tol=float(cg_tol),
        cg_maxiter=int(min(10 * n_, 1000) if cg_maxiter is None else cg_maxiter),
        degenerate_tol=degenerate_tol, seed=seed, method=method, layout=layout,
        degenerate_check=resolve_check(degenerate_check, fn=_FN),
    )
    return PartialEighResult(*_partial(prm, matmat, cfg)[:5])
