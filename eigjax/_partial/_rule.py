"""The differentiable core: the twin custom_jvp of the partial decomposition and its projected-solve rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._ad import twin_custom_jvp
from .._gaps import gap_matrix, inverse_gaps, nan_on_cut
from .._guard import checked_pairs, guard
from .._linalg import _mm, _norm
from .._nan_slots import nan_slots
from ._blocks import _coefficients
from ._cg import _chebyshev_preconditioner, _deflated_cg
from ._operators import _per_vector
from ._solve import _solve, _solve_general
from ._types import _FN, _MAX_PRECOND_STEPS


def _hermitian_solve(op, rhs, solve):
    """``jax.lax.custom_linear_solve`` for a Hermitian ``op``: its transpose is its complex
    conjugate (symmetric when real), so reverse mode reuses ``solve``."""
    if jnp.issubdtype(rhs.dtype, jnp.complexfloating):
        tsolve = lambda _, b: jnp.conj(solve(None, jnp.conj(b)))
        return jax.lax.custom_linear_solve(op, rhs, solve, transpose_solve=tsolve)
    return jax.lax.custom_linear_solve(op, rhs, solve, symmetric=True)


def _guard_block(w_dot, c, f, w, cfg):
    """Reverse mode's test of the cotangent on the cut pairs inside the block (as
    eigjax.eigh, eigjax._guard): ``c`` holds the in-block coefficients (``dV = V c``),
    whose cotangent ``V^H Vbar`` is Hermitian on each group for a loss invariant to its
    basis; ``f`` the inverse gaps (zero on cut pairs)."""
    return guard(
        w_dot,
        c,
        checked_pairs(f),
        w,
        name=_FN,
        mode="hermitian",
        phase=jnp.issubdtype(c.dtype, jnp.complexfloating),
        debug=cfg.degenerate_check == "debug",
    )


def _cut_tol(r_i, r_j, wmax, cfg):
    """Pairs of Ritz values closer than this cannot be told apart from a degenerate pair: a
    Ritz value lies within its residual ``r`` of an eigenvalue (Hermitian Bauer-Fike), plus
    the rounding level ``n eps max|w|``."""
    return r_i + r_j + cfg.n * float(jnp.finfo(wmax.dtype).eps) * wmax


def _edge_slots(w, w_extra, res, cfg):
    """Which wanted eigenvalues cannot be told apart from the first unwanted Ritz value
    (within their residual plus rounding, or ``degenerate_tol``): a degenerate pair across
    the block's edge, where those eigenvalues (the k-th is not differentiable) and their
    eigenvectors have no derivative. The others keep theirs (eigenvalues ``v_i^H dA v_i``;
    eigenvectors through a solve that the pair does not reach). None flagged without
    extra Ritz values (``block_size = k``)."""
    if not w_extra.shape[0]:
        return jnp.zeros(w.shape, bool)
    sign = -1.0 if cfg.largest else 1.0
    ws, we, r = jax.lax.stop_gradient((w, w_extra, res))
    gap = jnp.min(sign * we) - sign * ws
    if cfg.degenerate_tol is None:
        wmax = jnp.maximum(jnp.max(jnp.abs(ws)), jnp.max(jnp.abs(we)))
        tol = _cut_tol(r, r, wmax, cfg)
    else:
        tol = cfg.degenerate_tol
    return gap <= tol


def _tangents(out, w_dot, v_dot):
    """The solve's output tangents: ``w_dot`` and ``v_dot``, then zeros. Residual norms carry
    no derivative, counters and flags are integer (float0), and the extra Ritz pairs only
    accelerate the derivative's solve (its solution does not depend on them)."""
    rest = (
        jnp.zeros_like(x) if jnp.issubdtype(x.dtype, jnp.inexact) else np.zeros(x.shape, dtype=jax.dtypes.float0)
        for x in out[2:]
    )
    return (w_dot, v_dot, *rest)


def _partial_primal(params, matmat, cfg):
    return _solve(params, matmat, cfg)


def _partial_rule(matmat, cfg, primals, tangents, *, primal, higher):
    (params,), (params_dot,) = primals, tangents
    # The primal through the inner twin so that the rule is differentiable again.
    out = primal(params, matmat, cfg)
    w, vc, res, _, _, w_extra, v_extra, av_extra, bound = out
    v = vc.T  # rows
    y = jax.jvp(lambda prm: matmat(prm, v), (params,), (params_dot,))[1]  # rows of dA V
    # dw from Y alone (not from P), so an eigenvalue-only loss never touches the rest.
    w_dot = jnp.real(jnp.sum(jnp.conj(v) * y, axis=-1))
    p = _coefficients(y, v).T  # p[i, j] = v_i^H dA v_j
    if cfg.degenerate_tol is None:
        r = jax.lax.stop_gradient(res)
        wmax = jnp.max(jnp.abs(jax.lax.stop_gradient(w)))
        deg_tol = _cut_tol(r[:, None], r[None, :], wmax, cfg)
    else:
        deg_tol = cfg.degenerate_tol
    f = inverse_gaps(w, degenerate_tol=deg_tol).astype(p.dtype)
    if higher:
        f = nan_on_cut(f)
    q = f * p
    if cfg.degenerate_check and not higher:
        w_dot, q = _guard_block(w_dot, q, f, w, cfg)  # inside = V q (as columns)
    inside = _mm(q.T, v)

    sign = -1.0 if cfg.largest else 1.0
    wc = w[:, None].astype(v.dtype)
    proj = lambda x: x - _mm(_coefficients(x, v), v)

    shifted = lambda x: sign * (matmat(params, x) - x * wc)  # B'_i = sign (A - w_i), unprojected
    shifted_l = lambda x: (
        sign * (matmat(params, x, cfg.cols) - x * _per_vector(w, cfg.cols).astype(v.dtype))
    )  # in the hot loops' layout
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
    u = _hermitian_solve(op, rhs, solve)
    v_dot = (inside + proj(u)).T
    # NaN for the eigenpairs degenerate with the first unwanted one, in both modes, only
    # where a loss uses them (eigjax._nan_slots); the others keep their derivatives
    bad = _edge_slots(w, w_extra, res, cfg)
    return out, _tangents(out, nan_slots(w_dot, bad), nan_slots(v_dot, bad))


# The twin custom_jvp (eigjax._ad): first-order rule outside, NaN on cut pairs inside.
_partial, _partial_inner = twin_custom_jvp(_partial_primal, _partial_rule, nondiff_argnums=(1, 2))


# The generalized pencil A v = w B v, V^H B V = I (B = I when ops[1] is None), forward by
# LOBPCG, optionally preconditioned. Differentiating A v_i = w_i B v_i and V^H B V = I
# (Y = dA V, Z = dB V, P = V^H Y, Q = V^H Z, dv_i = V c_i + u_i with V^H B u_i = 0):
#
#   dw_i = Re(P_ii - w_i Q_ii),
#   C_ij = (P_ij - w_j Q_ij) / (w_j - w_i)   (i != j, not degenerate),
#   C_ij = -Q_ij / 2                          (i = j, and degenerate pairs: eigh_generalized),
#   Pi (A - w_i B) Pi^H u_i = -Pi (Y_i - w_i Z_i),   Pi = I - B V V^H,
#
# the last from (A - w_i B) dv_i = -(dA - w_i dB) v_i + dw_i B v_i, projected by Pi (which
# removes B V, hence the dw_i term and (A - w_i B) V c_i = B V (w - w_i) c_i). On the
# B-orthogonal complement of V, u^H (A - w_i B) u >= (lambda_{k+1} - w_i) u^H B u > 0 for the
# k smallest (sign-flipped for the largest): CG applies, with iterates in that complement,
# residuals in V^perp, a preconditioner r -> Pi^H T Pi r (T the forward's, Hermitian positive
# definite, so the pairing (Pi r)^H T (Pi r) is an inner product) and the further Ritz vectors
# of the forward as coarse space (_deflated_cg). The solve's operator Pi K Pi^H is Hermitian
# and its solution map Pi^H (Pi K Pi^H)^+ Pi is too, so custom_linear_solve transposes it.
def _partial_general_primal(params, ops, cfg):
    return _solve_general(params, ops, cfg)


def _general_rule(ops, cfg, primals, tangents, *, primal, higher):
    (params,), (params_dot,) = primals, tangents
    a_prm, b_prm, pc_prm = params
    a_dot, b_dot = params_dot[0], params_dot[1]
    a_mm, b_mm, pc = ops
    out = primal(params, ops, cfg)
    w, vc, res, _, _, w_extra, v_extra, av_extra, bv_extra, bound = out
    v = vc.T  # rows, B-orthonormal
    ya = jax.jvp(lambda prm: a_mm(prm, v), (a_prm,), (a_dot,))[1]  # rows of dA V
    if b_mm is None:
        bv, yb = v, jnp.zeros_like(v)
    else:
        bv, yb = jax.jvp(lambda prm: b_mm(prm, v), (b_prm,), (b_dot,))  # B V, dB V
    wc = w.astype(v.dtype)
    d_ii = lambda y: jnp.real(jnp.sum(jnp.conj(v) * y, axis=-1))
    w_dot = d_ii(ya) - w * d_ii(yb)
    pm = _coefficients(ya, v).T  # pm[i, j] = v_i^H dA v_j
    qm = _coefficients(yb, v).T
    # The eigenvalue error of a pencil's Ritz pair is about ||A v - w B v|| / ||B v||
    # (exact for B = beta I): the raw residual grows like sqrt(||B||) while the gaps do
    # not, and B scaled by 1e20 cut well separated pairs (found by an audit).
    res_w = res / _norm(jax.lax.stop_gradient(bv), axis=-1)
    if cfg.degenerate_tol is None:
        r = jax.lax.stop_gradient(res_w)
        wmax = jnp.max(jnp.abs(jax.lax.stop_gradient(w)))
        deg_tol = _cut_tol(r[:, None], r[None, :], wmax, cfg)
    else:
        deg_tol = cfg.degenerate_tol
    f = inverse_gaps(w, degenerate_tol=deg_tol).astype(pm.dtype)
    degenerate = jnp.abs(jax.lax.stop_gradient(gap_matrix(w))) <= deg_tol
    c = jnp.where(degenerate, -qm / 2, f * (pm - qm * wc[None, :]))
    if higher:
        c = jnp.where(degenerate & ~jnp.eye(cfg.k, dtype=bool), jnp.nan, c)
    elif cfg.degenerate_check:
        w_dot, c = _guard_block(w_dot, c, f, w, cfg)
    inside = _mm(c.T, v)

    sign = -1.0 if cfg.largest else 1.0
    pi = lambda x: x - _mm(_coefficients(x, v), bv)  # Pi x = x - B V V^H x: onto V^perp
    pi_h = lambda x: x - _mm(_coefficients(x, bv), v)  # Pi^H x: onto the B-complement of V
    op_b = (lambda x: x) if b_mm is None else (lambda x: b_mm(b_prm, x))
    shifted = lambda x: sign * (a_mm(a_prm, x) - op_b(x) * wc[:, None])
    inner = lambda x: pi(shifted(x))  # on the B-complement, where the iterates stay
    op = lambda x: inner(pi_h(x))  # Pi K Pi^H on all of C^n, for custom_linear_solve
    if pc is None:
        precond = pi_h
    else:
        pc_prm_c = jax.lax.stop_gradient(pc_prm)
        precond = lambda r: pi_h(pc(pc_prm_c, pi(r)))
    wd = pi_h(v_extra)
    solve = lambda _, b: _deflated_cg(
        inner, pi(b), wd, pi(av_extra), w, sign, cfg.cg_tol, cfg.cg_maxiter, precond, bwd=pi(bv_extra)
    )
    rhs = -sign * pi(ya - yb * wc[:, None])
    u = _hermitian_solve(op, rhs, solve)
    v_dot = (inside + pi_h(u)).T
    # NaN for the eigenpairs degenerate with the first unwanted one, in both modes, only
    # where a loss uses them (eigjax._nan_slots); the others keep their derivatives
    bad = _edge_slots(w, w_extra, res_w, cfg)
    return out, _tangents(out, nan_slots(w_dot, bad), nan_slots(v_dot, bad))


_partial_general, _partial_general_inner = twin_custom_jvp(
    _partial_general_primal, _general_rule, nondiff_argnums=(1, 2)
)
