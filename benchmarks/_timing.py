"""Timing helpers shared by the benchmark scripts.

`medians` runs several functions on the same arguments *interleaved* (one call of each per
round), so slow drifts of a shared machine hit every function alike, and returns the median
time of each. Every function is called once first (compile and warm-up), and every result is
`block_until_ready`'d.

Example:
    >>> import jax.numpy as jnp
    >>> t = medians({"sum": jnp.sum, "max": jnp.max}, jnp.ones(8), repeats=3)
    >>> sorted(t)
    ['max', 'sum']
"""

from __future__ import annotations

import statistics
import time

import jax


def medians(fns, *args, repeats):
    """Median wall time (s) of each function in the dict `fns`, called as fn(*args)."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))  # compile + warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def median_time(fn, *args, repeats):
    """Median wall time (s) of fn(*args) over `repeats` calls after a warm-up call."""
    return medians({"fn": fn}, *args, repeats=repeats)["fn"]
