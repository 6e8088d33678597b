"""The twin ``custom_jvp`` that every decomposition's derivative rule is built on.

Why two primals. A decomposition's first-order rule cuts the degenerate pairs
(``F_ij = 0`` where ``|w_i - w_j| <= tol``). The cut is exact for first derivatives of
losses invariant to the basis of each degenerate eigenspace, but second derivatives need
the coupling inside the group that the cut removes: ``jax.hessian`` of
``sum(w**2) = tr(A^2)`` at ``A = I`` came out 0 instead of ``2 E``, and even a simple
eigenvector's Hessian was wrong by ~1 % when another group was degenerate. No rule on
individual eigenvalues can restore it (they are not separately twice differentiable
there), so higher derivatives at cut pairs must be NaN, never a wrong finite number.

So each decomposition has two ``jax.custom_jvp`` functions with the same primal values:

* ``outer``, what the public function calls; its JVP is ``rule(..., higher=False)``;
* ``inner``, which the rule calls for its own primal (so that the rule is
  differentiable again: ``jax.hessian``, ``jacfwd(jacrev)``); its JVP,
  ``rule(..., higher=True)``, is reached only when a first-order rule is differentiated,
  and puts NaN on the cut pairs (``eigjax._gaps.nan_on_cut``). With a smooth
  broadening instead of the cut, the rule may ignore ``higher``.

Both JVPs call ``inner`` for the primal, so derivatives of every order go through the
same rule. The functions are written over ``(..., n, n)``: ``vmap`` traces them and
needs no batching rule.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax


def twin_custom_jvp(forward: Callable, rule: Callable, *, nondiff_argnums: tuple[int, ...]):
    """``(outer, inner)``: two ``jax.custom_jvp`` functions computing ``forward``.

    Args:
      forward: the primal, ``forward(*args)``; its signature (defaults included) is the
        signature of both functions.
      rule: the JVP rule, called as ``rule(*nondiff_args, primals, tangents, primal=inner,
        higher=...)`` (the ``defjvp`` convention plus two keywords): it must compute its
        primal output with ``primal(*args)`` and return ``(primal_out, tangent_out)``;
        ``higher`` is False for ``outer`` (first derivatives) and True for ``inner``
        (reached only by second and higher derivatives: NaN on cut pairs).
      nondiff_argnums: as for :class:`jax.custom_jvp` (the static options).

    Returns:
      ``(outer, inner)``; call ``outer``.
    """

    def twin():
        @functools.wraps(forward)
        def primal(*args):
            return forward(*args)

        return jax.custom_jvp(primal, nondiff_argnums=nondiff_argnums)

    outer, inner = twin(), twin()
    outer.defjvp(functools.partial(rule, primal=inner, higher=False))
    inner.defjvp(functools.partial(rule, primal=inner, higher=True))
    return outer, inner
