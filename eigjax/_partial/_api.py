"""The public entry point :func:`eigjax.eigh_partial`: argument checks, operator forms, the configuration."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.experimental import sparse as jsparse

from .._checks import as_square_matrix, check_int, check_nonnegative_float
from .._guard import resolve_check
from .._linalg import _hermitian_part
from . import _precond
from ._blocks import _start_block
from ._chebyshev import _lanczos_bounds
from ._operators import (
    _bcoo_matmat,
    _dense_matmat,
    _ell_layout,
    _ell_matmat,
    _operator_matmat,
)
from ._rule import _partial, _partial_general
from ._types import _FN, _LANCZOS_STEPS, _METHODS, PartialEighResult, _Config


def _check_hermitian_probe(prm, matmat, n, dtype, what):
    """Raise if the operator is visibly not Hermitian: two products with random vectors,
    ``|y^H (A x) - conj(x^H (A y))|`` against ``100 sqrt(n) eps (|A x| |y| + |A y| |x|)``
    (rounding of the two products is ``~ sqrt(n) eps`` of that). Skipped when the operator
    holds traced values (under ``jit``/``grad``), where no error can be raised."""
    if any(isinstance(leaf, Tracer) for leaf in jax.tree.leaves(prm)):
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


def _as_operator(a, params, n, dtype, name):
    """``(params, matmat, n, dtype, diag)`` of a dense, BCOO or matrix-free argument; ``diag``
    is a function giving the diagonal (None for a matrix-free operator)."""
    pname = "params" if name == "a" else f"{name}_params"
    if isinstance(a, jsparse.BCOO):
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.n_batch != 0 or a.n_dense != 0:
            raise ValueError(
                f"{_FN}: a BCOO argument `{name}` must be an unbatched square matrix of shape (n, n); "
                f"got shape {tuple(a.shape)} with n_batch={a.n_batch}, n_dense={a.n_dense}."
            )
        n_, dtype_ = a.shape[0], a.dtype
        rows, cols_ = a.indices[:, 0], a.indices[:, 1]
        on_diag = (rows == cols_).astype(a.data.dtype)
        diag = lambda: jnp.zeros((n_,), a.data.dtype).at[rows].add(a.data * on_diag, mode="drop")
        # (named `ell`, not `layout`: reusing the option's name replaced it with these index
        # arrays, and every BCOO input then ran on rows whatever `layout` said)
        ell = None if isinstance(a.indices, Tracer) else _ell_layout(a.indices, n_, a.nse)
        if ell is None:
            prm = (a.data, a.indices)
            matmat = functools.partial(_bcoo_matmat, shape=tuple(a.shape))
        else:
            prm = (a.data, *ell)
            matmat = _ell_matmat
    elif callable(a):
        if n is None:
            raise ValueError(f"{_FN}: with a callable `{name}` (matvec(params, x)) the size `n` is required.")
        n_ = check_int(n, name="n", fn=_FN, minimum=1)
        dtype_ = jnp.dtype(dtype) if dtype is not None else jnp.result_type(float)
        prm = params
        diag = None
        matmat = functools.partial(_operator_matmat, matvec=a)
        out = jax.eval_shape(matmat, prm, jax.ShapeDtypeStruct((1, n_), dtype_))
        if out.shape != (1, n_):
            raise ValueError(
                f"{_FN}: `{name}({pname}, x)` must return shape (n,) = ({n_},) for x of shape (n,); "
                f"got {tuple(out.shape[1:])}."
            )
    else:
        a = as_square_matrix(a, name=name, fn=_FN)
        if a.ndim != 2:
            raise ValueError(
                f"{_FN}: a dense argument `{name}` must have shape (n, n) (use jax.vmap for batches); "
                f"got shape {tuple(a.shape)}."
            )
        n_, dtype_ = a.shape[0], a.dtype
        prm = _hermitian_part(a)
        matmat = _dense_matmat
        diag = lambda: jnp.diagonal(prm)
    if not jnp.issubdtype(dtype_, jnp.inexact):
        dtype_ = jnp.result_type(float)
    return prm, matmat, n_, dtype_, diag


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
    b: Any = None,
    b_params: Any = None,
    precond: Any = None,
    precond_params: Any = None,
) -> PartialEighResult:
    r"""The ``k`` smallest or largest eigenpairs of a Hermitian operator or pencil, differentiable.

    With ``b`` given, solves the generalized problem ``A v = w B v`` (``B`` Hermitian positive
    definite) with ``B``-orthonormal eigenvectors, ``V^H B V = I``, by LOBPCG (or shift-invert
    Lanczos with a solve of ``A - sigma B``), differentiable
    in both operators (the rule of :mod:`eigjax._partial._rule`, ``_general_rule``:
    ``dw_i = v_i^H (dA - w_i dB) v_i``; inside the block ``dV = V C`` as in
    :func:`eigjax.eigh_generalized`; outside it a projected CG solve).

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
        ``width / gap``), ``"lobpcg"`` (blocked LOBPCG, Knyazev 2001, with soft locking
        and SVQB orthonormalisation; with ``"shift_invert"`` the methods for ``b`` and ``precond``),
        ``"shift_invert"`` (thick-restart block Lanczos on a callable ``precond`` that
        applies ``(A - sigma B)^{-1}`` exactly (``B = I`` without ``b``; ``(sigma B - A)^{-1}``
        for ``which="largest"``), e.g. a sparse
        factorisation built outside JAX and called through ``jax.pure_callback``; then
        Rayleigh-Ritz with ``A`` (and ``B``); as ARPACK's shift-invert mode, for gaps too small for products alone; an
        eigenvalue of multiplicity above ``block_size`` (default 2) may be missed, as with
        ARPACK; see :mod:`eigjax._partial._shift_invert`) or ``"auto"`` (``"lobpcg"`` if ``b`` or
        ``precond`` is given, else ``"chebyshev"``).
      tol: relative residual tolerance, ``||A v - w v|| <= tol * ||A||``. Default
        ``10 * eps**0.75`` (``1.8e-11`` in float64, ``6e-5`` in float32).
      block_size: block size ``p >= k``. Default ``k + max(4, k)`` (Chebyshev; the
        convergence rate is set by the gap between ``lambda_k`` and ``lambda_{p+1}``, and
        the extra vectors deflate the derivative's solve), ``k + max(3, k)`` (Krylov).
        Shift-invert: the width ``b`` of its Lanczos block, ``1 <= b <= n``, default 2
        (each step solves ``b`` right-hand sides; eigenvalues of multiplicity up to ``b``
        are found reliably); it keeps ``k + 1`` Ritz pairs.
      krylov_steps: blocks per restart ``m`` (Krylov; default ``max(3, 64 // p)``).
        Shift-invert: the basis holds ``m`` blocks, default ``max(2 k + 12, 20)`` vectors
        (ARPACK's ``ncv`` is ``max(2 k + 1, 20)``), at most ``n - b``; a restart keeps
        about half.
      max_restarts: cap on filter iterations (Chebyshev) or restarts (Krylov);
        ``converged`` in the result tells if it was hit.
      cg_tol, cg_maxiter: relative residual tolerance (default ``tol``) and iteration
        cap (default ``min(10 n, 1000)``; with the Chebyshev method each iteration
        applies the operator up to 64 times; with LOBPCG the CG is preconditioned by
        ``precond`` only, so an ill-conditioned pencil without one may need a larger cap)
        of the derivative's projected solve. A row whose CG residual has not reached
        ``cg_tol`` at the cap gives a NaN eigenvector derivative instead of an inaccurate
        finite one (the eigenvalue derivative never uses the solve; ``cg_tol = 0`` makes
        every eigenvector derivative NaN). Wanted eigenvalues that cannot be told apart
        from the first further Ritz value (a degenerate pair across the block's edge)
        have NaN derivatives, and so do their eigenvectors, where a loss uses them.
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
        Only speed depends on it. Columns made the grid benchmark's forward faster;
        XLA lays out some gather patterns badly on columns (an operator built from
        several degree-bucketed tables and a permutation ran slower there), so time
        both for a new operator. ``benchmarks/results_partial.md`` has the numbers.
      degenerate_check: reverse mode tests the cotangent on each degenerate pair inside
        the block and returns NaN where the cut rule would be wrong (see
        :func:`eigjax.eigh`). ``None`` (default): ``True``; ``False`` trusts the loss;
        ``"debug"`` also prints the first failing pair. A block boundary that splits a
        degenerate group is not detected by it (see above: no derivative, CG stalls).

      b: the ``B`` of ``A v = w B v``, Hermitian positive definite (not checked; LOBPCG
        and shift-invert then fail to converge or return NaN): a dense matrix (its Hermitian part), a BCOO
        matrix or a callable ``matvec(b_params, x)``, of the size and dtype of ``a``;
        derivatives flow to it (or to ``b_params``). ``None``: ``B = I``.
      b_params: the pytree passed to a callable ``b``.
      precond: preconditioner of LOBPCG and of the derivative's CG, an approximate inverse of
        ``A - sigma B`` that is Hermitian positive definite (``sigma`` below the wanted
        eigenvalues; for ``which="largest"``, of ``sigma B - A``). ``"jacobi"`` (the inverse
        of ``|diag A|``; dense or BCOO ``a``), ``"polynomial"`` (a degree-12 Chebyshev
        polynomial in ``A``, no ``B``: see :mod:`eigjax._partial._precond`), a callable
        ``precond(precond_params, x)`` for one vector ``x`` (``vmap``-ed over blocks), or
        ``None``. Only speed depends on it; it carries no derivative. With
        ``method="shift_invert"`` it must be exact (an inexact one leaves ``converged``
        False) and ``sigma`` below every eigenvalue (above, for the largest): a ``sigma``
        inside the spectrum, when detected (see :mod:`eigjax._partial._shift_invert`),
        gives NaN with ``converged`` False.
      precond_params: the pytree passed to a callable ``precond``.

    Returns:
      :class:`PartialEighResult` ``(eigenvalues, eigenvectors, residual_norms,
      iterations, converged)``; eigenvalues ascending in both modes. A NaN in the
      operator, a solve or a preconditioner stops the iteration at once: NaN results,
      ``converged`` False.

    Raises:
      TypeError: ``a`` is not an array, BCOO or callable; ``k`` is not an int; ``precond``
        is not a string, callable or None.
      ValueError: bad shapes, ``k`` outside ``[1, n]``, bad ``which`` or ``method``,
        missing ``n``; a BCOO matrix or operator that a random probe (two products,
        run when its values are concrete, i.e. not under ``jit``/``grad``) shows to be
        non-Hermitian; ``b`` or ``precond`` with ``method`` other than ``"lobpcg"``/``"shift_invert"``/``"auto"``
        (``precond`` also with ``"shift_invert"``, which needs a callable one);
        ``b`` of another size or dtype than ``a``; ``b_params`` without a callable ``b``,
        ``precond_params`` without a callable ``precond``; ``precond="jacobi"`` with a
        matrix-free ``a``; an unknown ``precond`` string.

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
    if precond is None and precond_params is not None:
        raise ValueError(f"{_FN}: option `precond_params` needs a callable `precond`; got precond=None.")
    if b_params is not None and not callable(b):
        raise ValueError(
            f"{_FN}: option `b_params` is for a matrix-free `b` (a callable); got b_params with a matrix `b`."
        )
    if method == "auto":
        method = "lobpcg" if (b is not None or precond is not None) else "chebyshev"
    if method == "shift_invert":
        if not callable(precond) or isinstance(precond, str):
            raise ValueError(
                f"{_FN}: method='shift_invert' needs a callable `precond` that applies (A - sigma I)^-1 "
                f"(or (A - sigma B)^-1) exactly (a factorisation built outside); got precond={precond!r}."
            )
    elif method != "lobpcg" and (b is not None or precond is not None):
        raise ValueError(
            f"{_FN}: options `b` and `precond` need method='lobpcg' or 'shift_invert' (or 'auto'); got method={method!r}."
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{_FN}: argument `k` must be a Python int; got {k!r} of type {type(k).__name__}.")
    k = int(k)
    if params is not None and not callable(a):
        raise ValueError(
            f"{_FN}: option `params` is for the operator form (a callable `a`); a matrix `a` takes none (got params)."
        )
    prm, matmat, n_, dtype_, diag = _as_operator(a, params, n, dtype, "a")
    if not 1 <= k <= n_:
        raise ValueError(f"{_FN}: argument `k` must satisfy 1 <= k <= n = {n_}; got k = {k}.")
    if not jnp.issubdtype(dtype_, jnp.inexact):
        dtype_ = jnp.result_type(float)
    if matmat is not _dense_matmat:  # the dense form is symmetrised instead
        _check_hermitian_probe(
            prm, matmat, n_, dtype_, "a BCOO matrix" if isinstance(a, jsparse.BCOO) else "matvec(params, x)"
        )
    eps = float(jnp.finfo(dtype_).eps)
    tol = check_nonnegative_float(tol, name="tol", fn=_FN)
    tol = float(10 * eps**0.75) if tol is None else tol
    cg_tol = check_nonnegative_float(cg_tol, name="cg_tol", fn=_FN)
    cg_tol = tol if cg_tol is None else cg_tol
    degenerate_tol = check_nonnegative_float(degenerate_tol, name="degenerate_tol", fn=_FN)
    # ints only (a float or a string was coerced by int() before: 4.7 ran as 4)
    block_size = check_int(block_size, name="block_size", fn=_FN, minimum=1, allow_none=True)
    krylov_steps = check_int(krylov_steps, name="krylov_steps", fn=_FN, minimum=2, allow_none=True)
    width = 1
    if method == "shift_invert":
        # The block is the Krylov block's width b (each step costs one solve with b
        # right-hand sides); the Ritz pairs kept are p = k + 1; the basis holds m blocks
        # (default about max(2 k + 12, 20) rows, like ARPACK's ncv; measured on the
        # benchmark's 100,000-node graph, benchmarks/results_partial.md).
        width = 2 if block_size is None else block_size
        if not width <= n_:
            raise ValueError(f"{_FN}: option `block_size` must satisfy 1 <= block_size <= n; got {width}.")
        p = min(n_, k + 1)
        m = -(-max(2 * k + 12, 20) // width) if krylov_steps is None else krylov_steps
    else:
        extra = max(3, k) if method == "krylov" else max(4, k)
        p = min(n_, k + extra) if block_size is None else block_size
        if not k <= p <= n_:
            raise ValueError(f"{_FN}: option `block_size` must satisfy k <= block_size <= n; got {p}.")
        m = max(3, 64 // p) if krylov_steps is None else krylov_steps
    max_restarts = check_int(max_restarts, name="max_restarts", fn=_FN, minimum=0)
    cg_maxiter = check_int(cg_maxiter, name="cg_maxiter", fn=_FN, minimum=1, allow_none=True)
    seed = check_int(seed, name="seed", fn=_FN)
    cfg = _Config(
        n=n_,
        k=k,
        p=p,
        m=m,
        largest=(which == "largest"),
        dtype=jnp.dtype(dtype_),
        tol=float(tol),
        max_restarts=max_restarts,
        cg_tol=float(cg_tol),
        cg_maxiter=int(min(10 * n_, 1000) if cg_maxiter is None else cg_maxiter),
        degenerate_tol=degenerate_tol,
        seed=seed,
        method=method,
        layout=layout,
        degenerate_check=resolve_check(degenerate_check, fn=_FN),
        width=width,
    )
    if method not in ("lobpcg", "shift_invert"):
        return PartialEighResult(*_partial(prm, matmat, cfg)[:5])
    b_prm, b_mm = None, None
    if b is not None:
        b_prm, b_mm, n_b, dtype_b, _ = _as_operator(b, b_params, n_, dtype_, "b")
        if n_b != n_ or jnp.dtype(dtype_b) != jnp.dtype(dtype_):
            raise ValueError(
                f"{_FN}: argument `b` must have the size and dtype of `a`, n = {n_} and {jnp.dtype(dtype_)}; "
                f"got n = {n_b} and {jnp.dtype(dtype_b)}."
            )
        if b_mm is not _dense_matmat:
            _check_hermitian_probe(
                b_prm, b_mm, n_, dtype_, "a BCOO matrix `b`" if isinstance(b, jsparse.BCOO) else "matvec `b`"
            )
    sign = -1.0 if which == "largest" else 1.0
    pc, pc_prm = _preconditioner(precond, precond_params, prm, matmat, diag, n_, dtype_, sign, seed)
    out = _partial_general((prm, b_prm, pc_prm), (matmat, b_mm, pc), cfg)
    return PartialEighResult(*out[:5])


def _preconditioner(precond, precond_params, prm, matmat, diag, n, dtype, sign, seed):
    """``(apply, params)`` of the ``precond`` option (see eigjax._partial._precond)."""
    if precond is None:
        return None, None
    if isinstance(precond, str):
        if precond_params is not None:
            raise ValueError(f"{_FN}: option `precond_params` is for a callable `precond`; got precond={precond!r}.")
        if precond == "jacobi":
            if diag is None:
                raise ValueError(
                    f"{_FN}: precond='jacobi' needs the diagonal of `a`: a dense or BCOO matrix, not a "
                    "matvec (pass a callable precond instead)."
                )
            return _precond.jacobi_apply, _precond.jacobi_params(diag(), sign)
        if precond == "polynomial":
            prm_c = jax.lax.stop_gradient(prm)
            x0 = _start_block((min(4, n), n), dtype, seed + 1)
            steps = min(_LANCZOS_STEPS, n)
            low, _, upper = _lanczos_bounds(lambda x: sign * matmat(prm_c, x), x0, steps)
            low, upper = jax.lax.stop_gradient(low), jax.lax.stop_gradient(upper)
            return _precond.polynomial(matmat, sign), (prm_c, low, upper - low)
        raise ValueError(
            f"{_FN}: option `precond` must be 'jacobi', 'polynomial', a callable or None; got {precond!r}."
        )
    if not callable(precond):
        raise TypeError(
            f"{_FN}: option `precond` must be 'jacobi', 'polynomial', a callable or None; got {type(precond).__name__}."
        )
    out = jax.eval_shape(jax.vmap(precond, in_axes=(None, 0)), precond_params, jax.ShapeDtypeStruct((1, n), dtype))
    if out.shape != (1, n):
        raise ValueError(
            f"{_FN}: `precond(precond_params, x)` must return shape (n,) = ({n},) for x of shape (n,); "
            f"got {tuple(out.shape[1:])}."
        )
    return _precond.user(precond), precond_params
