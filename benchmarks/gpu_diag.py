"""Diagnose the Pallas kernel (eigjax.internal.eigh_small_pallas) on a GPU: Triton compile
time, accuracy and speed of its loop forms for n >= 5, each case in its own process so
that a crash or a hung compile is a result, not the end of the run.

    PYTHONPATH=. python benchmarks/gpu_diag.py

Four processes share the GPU at once (XLA's preallocation off), so the times are rough;
benchmarks/bench_gpu.py is the measurement. Results: benchmarks/results_gpu_pallas.md.
"""

import concurrent.futures as cf
import os
import subprocess
import sys
import time

os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"

# name -> (n, dtype, batch, options of eigh_small_pallas, or "grad" for eigjax.eigh's value and gradient)
CASES = {
    "n5 f32 fori(7)": "(5, 'float32', 4104, {'loop': True, 'sweeps': 7})",
    "n5 f32 unrolled(7)": "(5, 'float32', 4104, {'loop': False, 'sweeps': 7})",
    "n8 f32 fori(9)": "(8, 'float32', 4104, {'loop': True, 'sweeps': 9})",
    "n8 f64 fori(9)": "(8, 'float64', 4104, {'loop': True, 'sweeps': 9})",
    "n8 f32 unrolled(9)": "(8, 'float32', 4104, {'loop': False, 'sweeps': 9})",
    "n16 f32 fori(12)": "(16, 'float32', 4104, {'loop': True, 'sweeps': 12})",
    "n3 f32 eigh+grad dispatch": "(3, 'float32', 4104, 'grad')",
}

BODY = r"""
import faulthandler, time
faulthandler.enable()
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import eigjax
from eigjax.internal import eigh_small_pallas
n, dt, b, kw = CASE
r = np.random.default_rng(0)
x = r.standard_normal((b, n, n))
a = ((x + x.transpose(0, 2, 1)) / 2).astype(dt)
t = time.perf_counter()
if kw == "grad":
    f = jax.jit(jax.value_and_grad(lambda a: jnp.sum(eigjax.eigh(a)[1] ** 4 * eigjax.eigh(a)[0][..., None, :])))
    val, g = f(jnp.asarray(a))
    print("grad finite", bool(jnp.all(jnp.isfinite(g))), "compile+run", round(time.perf_counter() - t, 1))
    raise SystemExit
f = jax.jit(lambda a: eigh_small_pallas(a, **kw))
w, v = f(jnp.asarray(a))
w.block_until_ready()
tc = time.perf_counter() - t
a64, w64, v64 = (np.asarray(z, np.float64) for z in (a, w, v))
eps = float(np.finfo(dt).eps)
res = np.linalg.norm(a64 @ v64 - v64 * w64[..., None, :], axis=(-2, -1)) / np.linalg.norm(a64, axis=(-2, -1))
orth = np.linalg.norm(np.swapaxes(v64, -1, -2) @ v64 - np.eye(n), axis=(-2, -1))
big = jnp.asarray(np.concatenate([a] * 244))  # ~1e6 matrices
for _ in range(2):
    f(big)[0].block_until_ready()
ts = []
for _ in range(5):
    t = time.perf_counter()
    f(big)[0].block_until_ready()
    ts.append(time.perf_counter() - t)
print(f"compile+run {tc:.1f} s; residual/eps {res.max() / eps:.1f} orth/(n eps) {orth.max() / (n * eps):.2f};"
      f" 1e6 median {sorted(ts)[2] * 1e3:.3f} ms")
"""


def one(item):
    name, case = item
    t = time.perf_counter()
    try:
        cmd = [sys.executable, "-c", BODY.replace("CASE", case, 1)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=100)
        tail = [line for line in (p.stdout + p.stderr).strip().splitlines() if "Extension modules" not in line][-3:]
        rc = p.returncode
    except subprocess.TimeoutExpired:
        rc, tail = "timeout 100 s", []
    return "\n   ".join([f"== {name}: rc {rc} ({time.perf_counter() - t:.0f} s)", *tail])


if __name__ == "__main__":
    with cf.ThreadPoolExecutor(4) as ex:
        for line in ex.map(one, CASES.items()):
            print(line, flush=True)
