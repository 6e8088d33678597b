"""The experiment interface: :class:`Experiment`, and the checks that a module implements it.

An **experiment** is any importable module that implements :class:`Experiment` (see
``experiments/`` for examples; a user's own module works the same way, named by its import
path in a config's ``experiment:`` key). The runner checks a module twice before it
writes anything:

- right after the import (:func:`interface_problems`, called by
  ``eigjax.app._config.import_experiment``): the members that the Protocol declares, that
  ``Problem`` is a dataclass, that each function accepts the Protocol's arguments, that
  ``MAXIMIZE`` is a bool;
- once the problem's data and initial parameters exist (:func:`check_outputs`, called by
  the runner before it creates the output directory): ``objective`` (and ``loss``) return
  a real scalar, evaluated with ``jax.eval_shape`` (shapes and dtypes only, nothing runs).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import jax
import numpy as np

from ._errors import ConfigError, describe

_F = TypeVar("_F", bound=Callable[..., Any])


def optional(fn: _F) -> _F:
    """Mark a member of :class:`Experiment` as optional (a module may leave it out)."""
    fn.__optional__ = True
    return fn


class Experiment(Protocol):
    """A module the runner can optimise (``eigjax run``).

    Attributes:
      Problem: a dataclass, the typed schema of the config's ``problem:`` block: fields
        with defaults, of the types a config can give (int, float, str, bool, list, dict,
        ``Optional``, ``Literal``, ``Any``); an optional ``validate()`` raising ValueError
        for bad values.
      MAXIMIZE: optional, default False: the objective is maximised.

    Each function's arguments are named below; ``data`` is what ``setup`` returned,
    ``params`` a parameter pytree. The runner stacks the parameters of a sweep's points
    and ``vmap``-s the functions that take them.
    """

    Problem: type
    MAXIMIZE: bool

    def setup(self, problem, dtype) -> Any:
        """The problem's data: a pytree of constant arrays of floating type ``dtype``."""
        ...

    def init_params(self, data, key) -> Any:
        """The initial parameter pytree, drawn with the PRNG key ``key`` (from the config's ``seed``)."""
        ...

    def objective(self, params, data) -> jax.Array:
        """The reported objective: a real scalar."""
        ...

    @optional
    def loss(self, params, data, step) -> Any:
        """What the optimiser minimises (default: the objective, negated if ``MAXIMIZE``); it
        may anneal with ``step``, and may return ``(loss, objective)`` to share one eigensolve."""
        ...

    @optional
    def project(self, params, data) -> Any:
        """Applied to the parameters after every update (constraints)."""
        ...

    @optional
    def metrics(self, params, data) -> dict:
        """Extra arrays logged every ``log_every`` steps; a vector under ``"eigenvalues"`` is
        plotted (a complex one as real parts, imaginary parts and the complex plane)."""
        ...

    @optional
    def reference(self, problem, data) -> float | None:
        """The known optimum (closed form or published), or None."""
        ...

    @optional
    def result(self, params, data, problem) -> dict:
        """A JSON-able dict stored in ``summary.json`` under ``result``."""
        ...


def _functions() -> dict[str, tuple[bool, tuple[str, ...]]]:
    """The Protocol's functions: name -> (required, argument names)."""
    out = {}
    for name, fn in vars(Experiment).items():
        if inspect.isfunction(fn) and not name.startswith("_"):
            args = tuple(inspect.signature(fn).parameters)[1:]  # without self
            out[name] = (not getattr(fn, "__optional__", False), args)
    return out


FUNCTIONS = _functions()
REQUIRED = ("Problem", *(name for name, (required, _) in FUNCTIONS.items() if required))


def interface_problems(module) -> list[str]:
    """What keeps ``module`` from implementing :class:`Experiment` (empty when nothing does)."""
    problems = []
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    problem_cls = getattr(module, "Problem", None)
    if problem_cls is not None and not (isinstance(problem_cls, type) and dataclasses.is_dataclass(problem_cls)):
        problems.append(f"Problem must be a dataclass, got {describe(problem_cls)}")
    for name, (_, args) in FUNCTIONS.items():
        if hasattr(module, name):
            problems.extend(_signature_problems(name, getattr(module, name), args))
    maximize = getattr(module, "MAXIMIZE", False)
    if not isinstance(maximize, (bool, np.bool_)):
        problems.append(f"MAXIMIZE must be True or False, got {describe(maximize)}")
    return problems


def _signature_problems(name: str, fn, args: tuple[str, ...]) -> list[str]:
    want = f"a function {name}({', '.join(args)})"
    if not callable(fn):
        return [f"{name} must be {want}, got {describe(fn)}"]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell
        return []
    try:
        sig.bind(*args)
    except TypeError:
        return [f"{name} must be {want}, got {name}{sig}"]
    return []


def check_outputs(module, data, params) -> None:
    """Raise :class:`ConfigError` unless ``objective`` (and ``loss``) return a real scalar
    for one point's ``params``: shapes and dtypes only (``jax.eval_shape``), nothing runs."""
    name = module.__name__
    out = jax.eval_shape(module.objective, params, data)
    if not _is_real_scalar(out):
        raise ConfigError(f"experiment {name}: objective(params, data): expected a real scalar, got {_shape_text(out)}")
    loss = getattr(module, "loss", None)
    if loss is not None:
        out = jax.eval_shape(loss, params, data, 0)
        parts = out if isinstance(out, tuple) and len(out) == 2 else (out,)
        if not all(_is_real_scalar(p) for p in parts):
            raise ConfigError(
                f"experiment {name}: loss(params, data, step): expected a real scalar or a pair "
                f"(loss, objective) of real scalars, got {_shape_text(out)}"
            )


def _is_real_scalar(x) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct) and x.shape == () and np.issubdtype(x.dtype, np.floating)


def _shape_text(x) -> str:
    """``float32[3]``, ``complex64[]``, or a pytree of them."""
    leaves = jax.tree_util.tree_map(lambda s: f"{s.dtype}{list(s.shape)}", x)
    if isinstance(leaves, str):
        return f"an array {leaves}" if x.shape else f"a {leaves.replace('[]', '')} scalar"
    return f"{type(x).__name__} {leaves}"
