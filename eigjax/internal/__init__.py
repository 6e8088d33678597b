"""What power users and benchmarks need that is not the main API.

Unstable: these names may change between releases without notice. Everything here is a
thin re-export of a private module, so that user code, the docs and ``benchmarks/`` never
import ``eigjax._*``.

* :func:`native_status` / :func:`native_available`: whether the native small-matrix CPU
  kernel is built and used, and if not, why (no compiler, failed build, disabled by
  ``EIGJAX_NATIVE=0``). The first call builds it (once per machine, 5-20 s; one log line
  on the ``eigjax`` logger says so, and another if it falls back).
* :func:`cpu_solver` / :func:`accel_solver`: which small-matrix solver a program lowered
  for the CPU or for a GPU/TPU uses for a given size (the dispatch table is in
  ``eigjax/_small_dispatch.py``).
* :func:`eigh_small` / :func:`eigh_small_accel`: the pure-JAX Jacobi solvers for batches
  of small real symmetric matrices (forward only; ``eigjax.eigh`` adds the derivative
  rules), callable on every backend.
* :func:`run_check`: the entry point of ``eigjax check`` (``run_check(argv) -> exit
  status``), without the command line.
* ``load_config``, ``resolve_config``, ``make_optimizer``: the application's YAML loader,
  config resolution (``resolve_config(load_config(path)) -> (cfg, module, problem)``) and
  optax optimizer construction, as ``eigjax run`` uses them (``benchmarks/bench_runner.py``
  rebuilds its loop with them). They live in :mod:`eigjax.app` and need the ``app`` extra;
  they are imported on first access, so ``import eigjax.internal`` stays jax-only.

Example:
    >>> import eigjax.internal
    >>> isinstance(eigjax.internal.native_available(), bool)
    True
    >>> eigjax.internal.run_check(["second_difference", "-n", "3"])  # doctest: +ELLIPSIS
    input: second_difference, shape (3, 3), float64, Hermitian
    ...
    0
"""

from importlib import import_module as _import_module

from .._diagnostics import run_check as run_check
from .._native import available as native_available
from .._native import status as native_status
from .._small import eigh_small as eigh_small
from .._small import eigh_small_accel as eigh_small_accel
from .._small_dispatch import accel_solver as accel_solver
from .._small_dispatch import cpu_solver as cpu_solver

# The application's pieces, imported on first access (they need the ``app`` extra).
_APP = {
    "load_config": ("eigjax.app._config", "load_yaml"),
    "resolve_config": ("eigjax.app._config", "resolve"),
    "make_optimizer": ("eigjax.app._runner", "make_optimizer"),
}


def __getattr__(name: str):
    if name in _APP:
        module, attr = _APP[name]
        return getattr(_import_module(module), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_APP])


__all__ = [
    "accel_solver",
    "cpu_solver",
    "eigh_small",
    "eigh_small_accel",
    "native_available",
    "native_status",
    "run_check",
]
