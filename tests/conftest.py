"""Test configuration: float64 everywhere, loud failures on silent broadcasting and on
implicit dtype promotion, fast compiles.

The suite runs under JAX's strict dtype promotion (``jax_numpy_dtype_promotion="strict"``,
JAX's own test setting): an implicit promotion (float32 with float64, real with complex)
in the library, the experiments or the tests fails loudly. It is set in the environment
too, so the CLI and batch subprocesses the tests start run strict as well. The runner
calls optax (not strict-clean) under standard promotion, see
``eigjax.app._runner.optax_promotion``. ``EIGJAX_TEST_STRICT=0`` runs the suite with JAX's
default (standard) promotion.

The suite compiles hundreds of small XLA programs (one per shape, dtype and transform)
and runs each a few times, so XLA's optimisation passes cost more than they save: they
are turned off (``JAX_DISABLE_MOST_OPTIMIZATIONS`` and XLA:CPU's fusion emitters, set in
the environment so that the CLI and batch subprocesses the tests start inherit them). This changes code generation,
not the arithmetic the tests check; ``EIGJAX_TEST_XLA_OPTIMIZE=1`` runs the whole suite
with full optimisation, as users run it. The session also shares one fresh XLA
compilation cache between the xdist workers and the subprocesses (below).
"""

import os
import tempfile

if os.environ.get("EIGJAX_TEST_XLA_OPTIMIZE", "0") != "1":
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    # XLA:CPU's older loop emitters compile small programs about 1.5x faster (measured on
    # tests/library/test_eigh.py + test_eig.py: 110 s -> 74 s); again code generation only.
    flag = "--xla_cpu_use_fusion_emitters=false"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
if os.environ.get("EIGJAX_TEST_STRICT", "1") != "0":
    os.environ["JAX_NUMPY_DTYPE_PROMOTION"] = "strict"  # the CLI/batch subprocesses too
# One compilation cache for the session, shared by the xdist workers and the CLI/batch
# subprocesses (which compile the same programs again: kill/resume, sweeps, smoke runs).
# Created fresh per session, so nothing carries over between runs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="eigjax-test-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# Strict dtype promotion by default (module docstring); EIGJAX_TEST_STRICT=0 switches it off.
if os.environ.get("EIGJAX_TEST_STRICT", "1") != "0":
    jax.config.update("jax_numpy_dtype_promotion", "strict")
