"""jax.distributed for the application's commands (``eigjax run``: sweeps and batch_eval).

When ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` (> 1) and ``JAX_PROCESS_ID`` are
set, :func:`maybe_initialize` calls ``jax.distributed.initialize`` with them; without them
a command runs as one process. :func:`failed_processes` is the one collective the runner
needs: every process says whether it failed and all learn which did (an allgather, so a
barrier too).
"""

from __future__ import annotations

import os

import jax
import numpy as np

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def maybe_initialize() -> tuple[int, int]:
    """Initialise jax.distributed from the environment (once); return (process index, count).

    It must run before anything starts JAX's backend: ``eigjax run`` calls it before the
    config is resolved (resolving builds the optimiser once, which computes).
    """
    if (
        all(k in os.environ for k in _ENV)
        and int(os.environ["JAX_NUM_PROCESSES"]) > 1
        and not jax.distributed.is_initialized()
    ):
        try:
            jax.distributed.initialize(
                coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                process_id=int(os.environ["JAX_PROCESS_ID"]),
            )
        except RuntimeError as e:  # already initialised
            if "already" not in str(e):
                raise
    return jax.process_index(), jax.process_count()


def failed_processes(nproc: int, failed: bool) -> list[int]:
    """The indices of the processes that report ``failed`` (every process must call this)."""
    if nproc == 1:
        return [0] if failed else []
    from jax.experimental import multihost_utils

    flags = np.asarray(multihost_utils.process_allgather(np.int32(failed))).reshape(-1)
    return [int(k) for k in np.flatnonzero(flags)]
