"""Operators: every input form (dense, BCOO, matrix-free) becomes ``(params, matmat(params, X, cols))``.

With ``cols=False`` the rows of ``X`` (c, n) are the vectors and ``matmat`` returns the rows of
``A X^T``; with ``cols=True`` the columns of ``X`` (n, c) are, and it returns ``A X``. The two hot
loops (the filter and the derivative's preconditioner) run in ``cfg.layout``: on columns a
gather-based product reads each row's indices and weights once per block and gathers ``c``
contiguous values; some operators compile better on rows (the ``layout`` option; numbers in
BENCHMARKS.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from .._linalg import _mm


def _to_layout(x, cols: bool):
    """Rows ``(c, n)`` to the hot loops' layout and back (the same transpose)."""
    return x.T if cols else x


def _per_vector(v, cols: bool):
    """A per-vector quantity ``(c,)`` broadcast against a block in the hot loops' layout."""
    return v[None, :] if cols else v[:, None]


def _dense_matmat(a, x, cols=False):
    return _mm(a, x) if cols else _mm(x, a.T)  # (A x^T)^T = x A^T


def _bcoo_matmat(params, x, cols=False, *, shape):
    data, indices = params
    a = jsparse.BCOO((data, indices), shape=shape)
    return a @ x if cols else (a @ x.T).T


def _ell_matmat(params, x, cols=False):
    """Padded-row (ELL) product: row ``i`` of ``A`` has entries ``data[ent[i, s]]`` at columns ``col[i, s]``.

    One gather of ``x`` per slot ``s``; unrolled (one fused kernel) up to 16 slots, a loop
    over slots beyond (compile time).
    """
    data, ent, col = params
    vals = jnp.concatenate([data, jnp.zeros((1,), data.dtype)])[ent]  # padding points at the 0
    dt = jnp.result_type(data.dtype, x.dtype)
    if cols:
        term = lambda s: vals[:, s][:, None] * x[col[:, s], :]
    else:
        term = lambda s: vals[:, s][None, :] * x[:, col[:, s]]
    width = col.shape[1]
    if width <= 16:
        y = term(0)
        for s in range(1, width):
            y = y + term(s)
        return y.astype(dt)
    return jax.lax.fori_loop(0, width, lambda s, y: y + term(s), jnp.zeros(x.shape, dt))


def _ell_layout(indices, n: int, nnz: int):
    """ELL index arrays from concrete COO indices, or ``None`` if the padding would be wasteful."""
    idx = np.asarray(indices).astype(np.int64)
    entry = np.arange(nnz)
    inside = np.all((idx >= 0) & (idx < n), axis=1)  # BCOO ignores out-of-range (padding) entries
    rows, cols, entry = idx[inside, 0], idx[inside, 1], entry[inside]
    counts = np.bincount(rows, minlength=n)
    width = int(counts.max()) if counts.size else 0
    if width == 0 or n * width > 3 * nnz + n:
        return None
    order = np.argsort(rows, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(rows)) - start[rows[order]]
    ent = np.full((n, width), nnz, dtype=np.int32)
    col = np.zeros((n, width), dtype=np.int32)
    ent[rows[order], slot] = entry[order]
    col[rows[order], slot] = cols[order]
    return jnp.asarray(ent), jnp.asarray(col)


def _operator_matmat(params, x, cols=False, *, matvec):
    axis = 1 if cols else 0
    return jax.vmap(matvec, in_axes=(None, axis), out_axes=axis)(params, x)
