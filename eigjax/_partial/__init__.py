"""Partial Hermitian eigendecomposition: ``k`` extremal eigenpairs of a dense, sparse or matrix-free operator.

Forward, ``method="chebyshev"`` (the default): Chebyshev-filtered subspace iteration
(Zhou, Saad, Tiago & Chelikowsky 2006; Zhou & Saad 2007). A block ``X`` of ``p >= k``
vectors is multiplied by ``p_d(A)``, the degree-``d`` Chebyshev polynomial of the affine
map that sends the unwanted interval ``[cut, upper]`` onto ``[-1, 1]`` (``upper`` an upper
bound of the spectrum, ``cut`` the largest Ritz value of the block; scaled three-term
recurrence, so nothing overflows), then orthonormalised (QR) and rotated onto its Ritz
vectors (Rayleigh-Ritz). An eigencomponent at ``lambda < cut`` grows relative to the
damped interval by ``T_d(x) ~ exp(d sqrt(2 (x - 1)))``, ``x - 1 = 2 (cut - lambda) /
(upper - cut)``: the number of products needed goes like ``sqrt(width / gap)`` (the gap
between ``lambda_k`` and ``lambda_{p+1}``), where the restarted block Krylov method needs
about ``width / gap`` restarts of fixed length. ``upper`` is ``theta_max + beta`` of 20
Lanczos steps run from every row of the random start block (largest Ritz value plus the
last residual norm, Zhou & Li 2011; no basis is stored), raised if a Ritz value of the
block ever reaches it. The degree of each filter is what would reach the tolerance if
the current rate held, at least 6, at most 1.5 times the previous one (so the cut is
refined while it is still far from ``lambda_{p+1}``: fewer products on a grid Laplacian,
benchmarks/results_partial.md) and at most what keeps the amplification spread inside the block below
``eps**-0.5`` (so the QR loses no accuracy). The ``k`` largest are the ``k`` smallest of
``-A``.

Forward, ``method="krylov"``: restarted block Krylov (block Lanczos) with full
reorthogonalisation and Rayleigh-Ritz (Golub & Underwood 1977; Saad, "Numerical Methods
for Large Eigenvalue Problems", 2nd ed., ch. 6). Each restart builds the orthonormal block
Krylov basis ``Q = [X, A X, ..., A^{m-1} X]`` (every new block orthogonalised twice
against all previous ones, then QR), forms ``H = Q^H A Q`` and restarts from the ``p``
extremal Ritz vectors. Kept for comparison: it needs about ``width / gap`` restarts.

Forward, ``method="lobpcg"`` (the default with ``b`` or ``precond``): blocked LOBPCG for the
pencil ``A x = theta B x`` (Knyazev 2001; basis ``[X, T R, P]`` B-orthonormalised by SVQB,
Stathopoulos & Wu 2002; soft locking of converged rows; see ``_lobpcg``), with a
preconditioner ``T`` (user callable, Jacobi or a Chebyshev polynomial; ``_precond``).
The generalized derivative (``_rule``, ``_general_rule``): with ``Y = dA V``, ``Z = dB V``,
``P = V^H Y``, ``Q = V^H Z`` and ``V^H B V = I``,

    dw_i = Re(P_ii - w_i Q_ii),   dV = V C + U,
    C_ij = (P_ij - w_j Q_ij) / (w_j - w_i)  (i != j),   C_ij = -Q_ij / 2  (i = j or degenerate),

and ``u_i`` in the B-orthogonal complement of ``V`` solves ``Pi (A - w_i B) Pi^H u_i = -Pi
(Y_i - w_i Z_i)``, ``Pi = I - B V V^H``, by the same deflated CG (preconditioned by ``Pi^H T
Pi``). With ``B = I`` it is the rule below.

Forward, ``method="shift_invert"`` (``_shift_invert``): thick-restart block Lanczos
(Krylov-Schur form; Wu & Simon 2000, Stewart 2001) on a user's exact solve ``(A - sigma
B)^{-1}`` (``B = I`` without ``b``; for a pencil in the ``B`` inner product), thin blocks
(default 2 vectors, one solve each), half the basis' Ritz vectors kept at a restart, then
Rayleigh-Ritz with ``A`` and ``B``; derivative as LOBPCG's.

Chebyshev and Krylov: converged when the ``k`` wanted residuals satisfy ``||A x_i - theta_i x_i|| <= tol *
||A||`` (``||A||`` estimated by the largest Ritz value in modulus seen: of the Krylov basis,
or of the Lanczos steps and the block). The result reports the residual norms (of the
returned vectors), the number of filter iterations / restarts and a ``converged`` flag;
the solver never raises under ``jit``. A block of ``p > k`` vectors also resolves
eigenvalues of multiplicity up to ``p - k + 1`` at the block edge. Small problems are
solved densely. Blocks are stored as rows, shape ``(p, n)``, except in the two hot loops
(the filter's recurrence and the derivative's polynomial preconditioner), which by default
(``layout="columns"``) run on columns, shape ``(n, p)``: there a matrix-free ``matvec`` is
``vmap``-ed over the trailing axis, so each gather ``x[idx]`` reads ``p`` contiguous
values and the operator's own index and weight arrays are read once per block, not once
per vector (the grid benchmark's forward: BENCHMARKS.md, "Partial eigh vs scipy eigsh",
and benchmarks/results_partial.md). A BCOO matrix whose indices are concrete (not traced)
is converted once to a padded row (ELL) layout whose product is gathers only (XLA's
scatter-add is slower on CPU: benchmarks/results_partial.md).

Derivative (docs/derivatives.md). For the computed pairs ``(w_i, v_i)``, ``V = [v_i]``
spanning ``S``, ``Y = dA V`` (``jax.jvp`` of the operator in its parameters) and
``P = V^H Y``:

    dw_i = Re P_ii,
    dV   = V (F o P) + U,

where ``F`` is :func:`eigjax._gaps.inverse_gaps` (zero on degenerate pairs, exactly as
:func:`eigjax.eigh`), and ``U = [u_i]``, the part outside ``S``, solves the projected system

    B_i u_i = -(I - V V^H) Y_i,   B_i = (I - V V^H)(A - w_i I)(I - V V^H),   u_i in S^perp.

On ``S^perp``, ``B_i`` has the eigenvalues ``lambda_j - w_i`` of the eigenvalues not in the
block: all positive for the ``k`` smallest (all negative for the ``k`` largest, where the
sign is flipped), so conjugate gradients apply. The solver is deflated, preconditioned CG
(Saad, Yeung, Erhel & Guyomarc'h 2000):

* deflation: the ``p - k`` further Ritz vectors ``W`` of the forward block (orthogonal to
  ``S``, with ``A W`` kept from the last Rayleigh-Ritz step) form a coarse space solved
  exactly, which removes ``lambda_{k+1} .. lambda_p`` from the condition number;
* preconditioner: ``m`` steps of Chebyshev iteration for ``B_i`` on ``[lo_i, hi_i]``,
  ``lo_i`` from the largest extra Ritz value and ``hi_i`` from the forward's upper bound,
  ``m ~ sqrt(hi / lo) / 2`` (at most 64). Its polynomial is positive on the whole spectrum
  below ``lo + hi``, so it is symmetric positive definite even where ``lo`` is only an
  estimate, and CG is left a condition number of about 5: a few tens of iterations, each
  ``m`` cheap products, instead of hundreds of iterations each paying projections and
  inner products (benchmarks/results_partial.md, "What changed"). The Krylov
  method has no spectral bound and runs deflated CG alone.

The solution does not depend on ``W`` or the preconditioner (they only accelerate). The
solve sits inside ``jax.lax.custom_linear_solve`` (transpose solve: the same solver on the
transposed, still definite, operator), so forward and reverse mode both work. A loss of
the eigenvalues alone gives the solve a zero right-hand side in reverse mode, and CG
stops before its first iteration (checked by a test). The condition is a gap
``lambda_{k+1} > lambda_k`` (smallest) between the block and the rest; if the block boundary
splits a degenerate eigenspace the derivative does not exist: the wanted eigenpairs
within residual of the first further Ritz value get NaN derivatives (``eigjax._nan_slots``:
in reverse mode only where the loss uses them), and a CG row that does not converge in
``cg_maxiter`` iterations is NaN.

Second and higher derivatives: exact where the block's eigenvalues are distinct, NaN
where a pair inside the block is cut (as :func:`eigjax.eigh`: the cut would make them wrong).

Memory: ``O(nnz + n p)`` for the Chebyshev method (a few blocks of ``p`` or ``k`` vectors);
``O(nnz + n p m)`` for the Krylov method.
"""

# Layout: _types (result, config), _operators (input forms), _blocks (row-block helpers),
# _chebyshev / _krylov / _lobpcg (forward solvers), _precond (preconditioners), _solve
# (dispatch), _cg (the derivative's solver), _rule (the custom_jvps), _api (eigh_partial).

from ._api import eigh_partial as eigh_partial
from ._types import PartialEighResult as PartialEighResult
