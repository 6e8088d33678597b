"""Forward, ``method="chebyshev"``: Chebyshev-filtered subspace iteration with a Lanczos upper bound."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._blocks import (
    _acosh1p,
    _eigh_small,
    _orthonormal_rows,
    _poisoned,
    _rayleigh_ritz,
    _row_norms,
)
from ._operators import _to_layout
from ._types import _DEGREE_GROWTH, _LANCZOS_STEPS, _MAX_DEGREE, _MIN_DEGREE, _Config


def _lanczos_bounds(op, x0, steps: int):
    """Spectral bounds from ``steps`` Lanczos steps started at each row of ``x0`` (independently).

    Returns the smallest and the largest Ritz value over all rows and the upper bound
    ``max_rows (theta_max + beta)`` (Zhou & Li 2011: the largest Ritz value plus the norm
    of the last Lanczos residual). One row would do; running the whole block costs
    ``steps`` block products (negligible next to the filters), gives the most cautious
    bound, and keeps XLA on its matrix-matrix path (a single-vector dense product compiles
    much more slowly on CPU). No reorthogonalisation: lost orthogonality only repeats
    converged Ritz values. After a breakdown (an invariant subspace reached) the remaining
    steps repeat the first step's Rayleigh quotient on the diagonal, decoupled (a value
    inside the spectrum's range, so neither bound moves; zeros there made the smallest
    Ritz value ``min(0, lambda_min)``, which shift-invert's check of a missed eigenvalue
    below the block read as one).
    """
    real = jnp.finfo(x0.dtype).dtype
    tiny = 100 * float(jnp.finfo(real).eps)
    q0 = x0 / _row_norms(x0)[:, None].astype(x0.dtype)

    def step(carry, _):
        q, q_prev, beta_prev, live = carry
        w = op(q) - beta_prev[:, None].astype(q.dtype) * q_prev
        alpha = jnp.real(jnp.sum(jnp.conj(q) * w, axis=-1))
        w = w - alpha[:, None].astype(q.dtype) * q
        beta = _row_norms(w)
        alive = beta > tiny * (jnp.abs(alpha) + beta_prev)
        beta = jnp.where(alive, beta, 0.0)
        q_next = w / jnp.where(alive, beta, 1.0)[:, None].astype(w.dtype) * alive[:, None].astype(w.dtype)
        return (q_next, q, beta, jnp.logical_and(live, alive)), (alpha, beta, live)

    init = (q0, jnp.zeros_like(q0), jnp.zeros((x0.shape[0],), real), jnp.ones((x0.shape[0],), bool))
    _, (alphas, betas, live) = jax.lax.scan(step, init, None, length=steps)  # (steps, rows)
    alphas = jnp.where(live, alphas, alphas[0])  # steps after a breakdown: q = 0
    tridiagonal = lambda a, b: jnp.diag(a) + jnp.diag(b[:-1], 1) + jnp.diag(b[:-1], -1)
    theta = _eigh_small(jax.vmap(tridiagonal)(alphas.T, betas.T))[0]  # (rows, steps)
    return jnp.min(theta[:, 0]), jnp.max(theta[:, -1]), jnp.max(theta[:, -1] + betas[-1])


def _chebyshev_filter(op_l, x, pairs, cut, upper, scale_at, cols):
    """Rows of ``p(A) x``, ``p`` of degree ``2 pairs`` damping ``[cut, upper]``, ``p(scale_at) = 1``.

    ``x`` holds the vectors as rows; the recurrence runs on columns if ``cols`` (``op_l``
    applies the operator in that layout).

    Scaled three-term recurrence (Zhou & Saad 2007, Algorithm 3.2), two steps per loop
    iteration so that the loop carry is never swapped (a swap costs XLA two block copies
    per step: benchmarks/results_partial.md); the first step is a loop step with its own
    coefficients, so the operator appears twice in the program, not three times.
    """
    e = (upper - cut) / 2
    c = (upper + cut) / 2
    sigma1 = e / (scale_at - c)
    dt = x.dtype

    def step(x, y, sigma, first):  # T_{j+1} from T_{j-1} = x and T_j = y
        sigma_new = jnp.where(first, sigma1, 1.0 / (2.0 / sigma1 - sigma))
        scale = jnp.where(first, sigma1 / e, 2.0 * sigma_new / e)
        y_new = (op_l(y) - c.astype(dt) * y) * scale.astype(dt) - jnp.where(first, 0.0, sigma * sigma_new).astype(
            dt
        ) * x
        return y_new, sigma_new

    def body(i, carry):
        x, y, sigma = carry
        x, sigma = step(x, y, sigma, i == 0)
        y, sigma = step(y, x, sigma, False)
        return x, y, sigma

    xl = _to_layout(x, cols)
    return _to_layout(jax.lax.fori_loop(0, pairs, body, (jnp.zeros_like(xl), xl, sigma1))[1], cols)


def _chebyshev_solve(op, op_l, x0, cfg: _Config):
    n, p, k = cfg.n, cfg.p, cfg.k
    real = jnp.finfo(cfg.dtype).dtype
    eps = float(jnp.finfo(real).eps)
    if cfg.max_restarts == 0:  # nothing to iterate: report the Ritz pairs of the start block
        theta, x, ax, res = _rayleigh_ritz(op, _orthonormal_rows(x0))
        conv = jnp.all(res[:k] <= cfg.tol * jnp.max(jnp.abs(theta)))
        return theta, x, ax, res, jnp.zeros((), jnp.int32), conv, jnp.asarray(jnp.inf, real)
    lo, hi, upper0 = _lanczos_bounds(op, x0, min(_LANCZOS_STEPS, n))
    # The first filter damps the upper half of the Lanczos interval (a Ritz value of the
    # random block would be about the mean eigenvalue); no residual is known yet.
    theta = jnp.full((p,), lo, real).at[p - 1].set((lo + hi) / 2)
    res = jnp.full((p,), jnp.inf, real)
    spread_cap = math.log(2.0 / math.sqrt(eps))  # log of the largest amplification spread allowed

    def anorm_of(theta):
        return jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), jnp.max(jnp.abs(theta)))

    def done(theta, res):
        return jnp.all(res[:k] <= cfg.tol * anorm_of(theta))

    def cond(state):
        _, _, theta, res, _, it, _ = state
        return jnp.logical_and(it < cfg.max_restarts, jnp.logical_not(done(theta, res) | _poisoned(res)))

    def body(state):
        x, _, theta, res, upper, it, d_prev = state  # d_prev: the previous filter's degree
        cut = theta[p - 1]
        scale_at = jnp.minimum(theta[0], lo)
        width = jnp.maximum(upper - scale_at, jnp.finfo(real).tiny)
        # Safeguard: a Ritz value at the upper bound means the bound was too low.
        upper = jnp.where(cut >= upper - 1e-3 * width, cut + 0.5 * width, upper)
        half = (upper - cut) / 2
        rate_k = _acosh1p((cut - theta[k - 1]) / half)
        rate_1 = _acosh1p((cut - scale_at) / half)
        need = jnp.max(res[:k]) / (cfg.tol * anorm_of(theta))
        d_need = jnp.log(2.0 * jnp.maximum(need, 2.0)) / jnp.maximum(rate_k, 1e-300)
        d_cap = spread_cap / jnp.maximum(rate_1, 1e-300)
        d = jnp.minimum(jnp.minimum(d_need, d_cap), jnp.minimum(_DEGREE_GROWTH * d_prev, _MAX_DEGREE))
        d = jnp.maximum(jnp.nan_to_num(d, nan=_MIN_DEGREE), _MIN_DEGREE)
        pairs = jnp.ceil(d / 2).astype(jnp.int32)  # degree 2 pairs
        y = _chebyshev_filter(op_l, x, pairs, cut, upper, scale_at, cfg.cols)
        theta, x, ax, res = _rayleigh_ritz(op, _orthonormal_rows(y))
        return x, ax, theta, res, upper, it + 1, (2 * pairs).astype(real)

    state = (x0, jnp.zeros_like(x0), theta, res, upper0, jnp.zeros((), jnp.int32), jnp.asarray(_MIN_DEGREE, real))
    x, ax, theta, res, upper, it, _ = jax.lax.while_loop(cond, body, state)
    return theta, x, ax, res, it, done(theta, res), upper
