"""What power users and benchmarks need that is not the main API.

Unstable: these names may change between releases without notice. Everything here is a
thin re-export of a private module, so that user code, the docs and ``benchmarks/`` never
import ``eigjax._*``.

* :func:`native_status` / :func:`native_available`: whether the native small-matrix CPU
  kernel is built and used, and if not, why (no compiler, failed build, disabled by
  ``EIGJAX_NATIVE=0``). The first call builds it (once per machine, 5-20 s; one log line
  on the ``eigjax`` logger says so, and another if it falls back).
* :func:`cpu_solver` / :func:`accel_solver`: which small-matrix solver a program lowered
  for the CPU or for a GPU/TPU uses for a given size (and dtype, platform) (the dispatch table is in
  ``eigjax/_small_dispatch.py``).
* :func:`eigh_small` / :func:`eigh_small_accel`: the pure-JAX Jacobi solvers for batches
  of small real symmetric matrices (forward only; ``eigjax.eigh`` adds the derivative
  rules), callable on every backend. :func:`route_to_entry_solver`: make GPU/TPU programs
  use the entry solver for a size the dispatch leaves to the backend (experiments).
* :func:`eigh_small_pallas`: the same Jacobi method as one Pallas kernel (Triton on a
  GPU, ``interpret=True`` anywhere), one matrix per lane; forward only. ``eigjax.eigh``
  uses it on CUDA where it was measured fastest (float32, ``n = 3, 4``, 1e6 matrices
  or more: ``accel_solver`` says ``"pallas"``).

The application's entry points (``run_check``, ``load_config``, ``resolve_config``,
``make_optimizer``) are public in :mod:`eigjax.app`.

Example:
    >>> import eigjax.internal
    >>> isinstance(eigjax.internal.native_available(), bool)
    True
"""

from .._native import available as native_available
from .._native import status as native_status
from .._small import eigh_small as eigh_small
from .._small import eigh_small_accel as eigh_small_accel
from .._small import route_to_entry_solver as route_to_entry_solver
from .._small_dispatch import accel_solver as accel_solver
from .._small_dispatch import cpu_solver as cpu_solver
from .._small_pallas import eigh_small_pallas as eigh_small_pallas

__all__ = [
    "accel_solver",
    "cpu_solver",
    "eigh_small",
    "eigh_small_accel",
    "eigh_small_pallas",
    "native_available",
    "native_status",
    "route_to_entry_solver",
]
