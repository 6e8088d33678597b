"""The differentiable core: the twin custom_jvp of the partial decomposition and its projected-solve rule."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._eigh import _mm
from .._gaps import inverse_gaps, nan_on_cut
from .._guard import checked_pairs, guard
from ._blocks import _coefficients
from ._cg import _chebyshev_preconditioner, _deflated_cg
from ._operators import _per_vector
from ._solve import _solve
from ._types import _FN, _MAX_PRECOND_STEPS


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _partial(params, matmat, cfg):
    return _solve(params, matmat, cfg)


# The primal inside the rule: the same values; its JVP (reached only by second and
# higher derivatives) is NaN on cut pairs inside the block, where the cut would give a
# wrong finite second derivative (see eigjax._eigh._eigh_inner).
@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _partial_inner(params, matmat, cfg):
    return _solve(params, matmat, cfg)


def _partial_rule(matmat, cfg, primals, tangents, *, higher):
    (params,), (params_dot,) = primals, tangents
    # The primal through _partial_inner so that the rule is differentiable again.
    out = _partial_inner(params, matmat, cfg)
    w, vc, res, it, conv, w_extra, v_extra, av_extra, bound = out
    v = vc.T  # rows
    y = jax.jvp(lambda prm: matmat(prm, v), (params,), (params_dot,))[1]  # rows of dA V
    # dw from Y alone (not from P), so an eigenvalue-only loss never touches the rest.
    w_dot = jnp.real(jnp.sum(jnp.conj(v) * y, axis=-1))
    p = _coefficients(y, v).T  # p[i, j] = v_i^H dA v_j
    if cfg.degenerate_tol is None:
        # A Ritz value is within its residual norm of an eigenvalue (Hermitian
        # Bauer-Fike), so pairs closer than r_i + r_j (plus the rounding level
        # n eps ||A||) cannot be told apart from a degenerate pair.
        r = jax.lax.stop_gradient(res)
        wmax = jnp.max(jnp.abs(jax.lax.stop_gradient(w)))
        deg_tol = r[:, None] + r[None, :] + cfg.n * float(jnp.finfo(w.dtype).eps) * wmax
    else:
        deg_tol = cfg.degenerate_tol
    f = inverse_gaps(w, degenerate_tol=deg_tol).astype(p.dtype)
    if higher:
        f = nan_on_cut(f)
    q = f * p
    if cfg.degenerate_check and not higher:
        # Reverse mode tests the cotangent on the cut pairs inside the block, as
        # eigjax.eigh (eigjax._guard): inside = V q (as columns), so the cotangent of q
        # is V^T Vbar, Hermitian on each group for a loss invariant to its basis.
        phase = jnp.issubdtype(p.dtype, jnp.complexfloating)
        w_dot, q = guard(w_dot, q, checked_pairs(f), w, name=_FN, mode="hermitian", phase=phase,
                         debug=cfg.degenerate_check == "debug")
    inside = _mm(q.T, v)

    sign = -1.0 if cfg.largest else 1.0
    wc = w[:, None].astype(v.dtype)
    proj = lambda x: x - _mm(_coefficients(x, v), v)

    shifted = lambda x: sign * (matmat(params, x) - x * wc)  # B'_i = sign (A - w_i), unprojected
    shifted_l = lambda x: sign * (matmat(params, x, cfg.cols) - x * _per_vector(w, cfg.cols).astype(v.dtype))  # in the hot loops' layout
    inner = lambda x: proj(shifted(x))  # B_i on S^perp, where the iterates of the solve stay
    op = lambda x: inner(proj(x))  # the operator on all of C^n, for custom_linear_solve
    # A W from the forward's last Rayleigh-Ritz step (W is orthogonal to V up to rounding).
    av_extra = proj(av_extra)
    precond = None
    if w_extra.shape[0]:
        # Deflated, the spectrum of B_i lies in about [lo_i, hi_i]: lo_i from the largest
        # extra Ritz value (about lambda_p; the first eigenvalue not deflated is beyond),
        # hi_i from the forward's upper bound of sign * A. Degree ~ sqrt(hi / lo) / 2
        # leaves CG a condition number of about 5 (a few tens of iterations).
        theta = sign * w
        finite = jnp.isfinite(bound)
        hi = jnp.where(finite, bound, 0.0) - theta
        lo = jnp.max(sign * w_extra) - theta
        lo = jnp.maximum(lo, 1e-12 * jnp.abs(hi))
        hi = jnp.maximum(hi, 2 * lo)
        steps = jnp.ceil(0.5 * jnp.sqrt(jnp.max(hi / lo)))
        steps = jnp.where(finite, jnp.clip(jnp.nan_to_num(steps, nan=1.0), 1, _MAX_PRECOND_STEPS), 1).astype(jnp.int32)
        precond = _chebyshev_preconditioner(shifted_l, proj, lo, hi, steps, cfg.cols)
    # The right-hand sides (rhs below, and the cotangents in reverse mode) lie in S^perp up
    # to rounding; projecting them first keeps a rounding-level component along S (which
    # B_i cannot reduce) from stalling CG, e.g. for a loss whose eigenvector cotangent
    # lies in S, as trace(V V^H C) with C = I.
    solve = lambda _, b: _deflated_cg(inner, proj(b), v_extra, av_extra, w, sign, cfg.cg_tol, cfg.cg_maxiter, precond)
    rhs = -sign * proj(y)
    if jnp.issubdtype(v.dtype, jnp.complexfloating):
        # op is Hermitian, so its transpose is its complex conjugate.
        tsolve = lambda _, b: jnp.conj(solve(None, jnp.conj(b)))
        u = jax.lax.custom_linear_solve(op, rhs, solve, transpose_solve=tsolve)
    else:
        u = jax.lax.custom_linear_solve(op, rhs, solve, symmetric=True)
    v_dot = (inside + proj(u)).T
    zero_int = np.zeros(it.shape, dtype=jax.dtypes.float0)
    zero_bool = np.zeros(conv.shape, dtype=jax.dtypes.float0)
    # The extra Ritz pairs only accelerate the solve (its solution does not depend on
    # them), so they carry no derivative.
    tangents_out = (
        w_dot, v_dot, jnp.zeros_like(res), zero_int, zero_bool,
        jnp.zeros_like(w_extra), jnp.zeros_like(v_extra), jnp.zeros_like(av_extra), jnp.zeros_like(bound),
    )
    return out, tangents_out


_partial.defjvp(functools.partial(_partial_rule, higher=False))
_partial_inner.defjvp(functools.partial(_partial_rule, higher=True))
