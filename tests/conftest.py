"""Test configuration: float64 everywhere, loud failures on silent broadcasting, fast compiles.

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
    # tests/test_eigh.py + test_eig.py: 110 s -> 74 s); again code generation only.
    flag = "--xla_cpu_use_fusion_emitters=false"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
# One compilation cache for the session, shared by the xdist workers and the CLI/batch
# subprocesses (which compile the same programs again: kill/resume, sweeps, smoke runs).
# Created fresh per session, so nothing carries over between runs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="eigjax-test-xla-cache-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# Opt-in: EIGJAX_TEST_STRICT=1 runs the suite under strict dtype promotion (JAX's own test
# setting), so an implicit promotion inside the library fails loudly.
if os.environ.get("EIGJAX_TEST_STRICT", "0") == "1":
    jax.config.update("jax_numpy_dtype_promotion", "strict")
