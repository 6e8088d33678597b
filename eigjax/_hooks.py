"""Hook points of the forward solvers: where :func:`eigjax.random_gauge` changes the gauge.

Each decomposition declares, where it defines its forward solver, that the solver's output
may be re-gauged and of which *kind* it is::

    _eigh_forward = gauge_hook("eigh", _eigh_forward, kind="hermitian")

and wraps its jitted entry point with :func:`jit_entry`. Outside a gauge block a hooked
solver is the solver itself (one attribute read more at trace time, nothing at run time).
Inside :func:`intercepting` (entered by :func:`eigjax.random_gauge`, which owns the
transforms, one per kind) the hooked solver passes its output to the active handler,
``handler(kind, args, out) -> out``, and the entry points call their function uncompiled,
so that a trace cached before the block cannot bypass the interception.

Why the forward solvers and not the custom_jvp functions: every JVP rule computes its
tangents from the eigenvectors that its own primal call returns, so the rule then sees the
same gauge as the loss.

Kinds (the contract of the handler; ``out`` as the solver returns it):

* ``"hermitian"``: ``(w, V)`` with ``V`` unitary (``B``-orthonormal for the generalized
  problem); any unitary change inside a degenerate group is an equally valid output.
* ``"eig"``: ``(w, V)``, unit-norm columns of a general matrix's eigenvectors;
  ``args[0]`` is the matrix.
* ``"eig_left"``: ``(w, V, Y)`` as ``"eig"`` plus left eigenvectors, ``Y^H V = I``.
* ``"partial"``: ``(w, V as columns (n, k), ...)`` of ``eigh_partial``'s solve;
  ``args[2].n`` is the matrix size.

The state is thread-local; a solver called by another hooked solver (nested) is left alone,
so one decomposition is re-gauged once.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax

KINDS = ("hermitian", "eig", "eig_left", "partial")

# name -> kind of every declared hook point (for introspection and tests)
HOOK_POINTS: dict[str, str] = {}

_state = threading.local()


def gauge_hook(name: str, forward: Callable, *, kind: str) -> Callable:
    """Declare ``forward`` a hook point named ``name`` of ``kind`` (see the module docstring).

    Returns the function to use in its place: ``forward`` itself while no handler is
    active, else ``forward`` followed by the handler.
    """
    if kind not in KINDS:
        raise ValueError(f"eigjax._hooks.gauge_hook: `kind` must be one of {KINDS}; got {kind!r}.")
    if name in HOOK_POINTS and HOOK_POINTS[name] != kind:
        raise ValueError(f"eigjax._hooks.gauge_hook: hook point {name!r} declared twice with different kinds.")
    HOOK_POINTS[name] = kind

    @functools.wraps(forward)
    def hooked(*args):
        handler = getattr(_state, "handler", None)
        if handler is None or getattr(_state, "depth", 0):
            return forward(*args)
        _state.depth = 1
        try:
            out = forward(*args)
        finally:
            _state.depth = 0
        return handler(kind, args, out)

    setattr(hooked, "gauge_hook", (name, kind))  # noqa: B010 (a function attribute pyright cannot declare)
    return hooked


def active() -> bool:
    """Whether a handler is active in this thread."""
    return getattr(_state, "handler", None) is not None


@contextlib.contextmanager
def intercepting(handler: Callable[[str, tuple, Any], Any]):
    """Inside the block, every hooked solver passes its output through ``handler``.

    Blocks nest: the innermost handler is used and the outer one is restored on exit.
    """
    prev = (getattr(_state, "handler", None), getattr(_state, "depth", 0))
    _state.handler, _state.depth = handler, 0
    try:
        yield
    finally:
        _state.handler, _state.depth = prev


def jit_entry(fun: Callable, static_argnums: tuple[int, ...]) -> Callable:
    """``jax.jit(fun, static_argnums=...)``, called uncompiled while a handler is active.

    Eager callers (``jax.grad`` outside ``jit``) would otherwise dispatch each primitive
    of the rules on its own, compiling many tiny XLA programs; the jitted entry makes it
    one program per shape and options (under an outer ``jit`` it is inlined). While a
    gauge is active the jit cache is bypassed: a trace cached before the block would
    skip the hooks.
    """
    jitted = jax.jit(fun, static_argnums=static_argnums)

    @functools.wraps(fun)
    def entry(*args):
        return fun(*args) if active() else jitted(*args)

    return entry
