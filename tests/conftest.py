"""Test configuration: float64 everywhere, loud failures on silent broadcasting, fast compiles.

The suite compiles hundreds of small XLA programs (one per shape, dtype and transform)
and runs each a few times, so XLA's optimisation passes cost more than they save: they
are turned off (``JAX_DISABLE_MOST_OPTIMIZATIONS``, set in the environment so that the
CLI and batch subprocesses the tests start inherit it). This changes code generation,
not the arithmetic the tests check; ``EIGJAX_TEST_XLA_OPTIMIZE=1`` runs the whole suite
with full optimisation, as users run it.
"""

import os

if os.environ.get("EIGJAX_TEST_XLA_OPTIMIZE", "0") != "1":
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
