"""Batch evaluator: the synthetic generator against the computation it feeds (issue 17 item 4).

Two parts, in one run:

1. In-process, steady state (one chunk of --chunk rows after compilation; medians of
   --repeats interleaved repeats, benchmarks/_timing.py):
     generator      the evaluator's generator alone (random_symmetric 3x3 float32, the
                    jitted ``generate_matrices`` of ``batch_input``), rows -> matrices on the device;
     generator-v1   the previous stream's generator (Threefry primitive, n^2 normals by
                    Box-Muller, (x + x^T) / 2), kept here for the comparison only;
     compute        the evaluator's jitted chunk function on matrices already on the
                    device (eigh + vectors + gradient of sum(w**2));
     fused          generator and computation in one program, as the evaluator runs
                    generated input.
   Target: generator rows/s >= compute rows/s. Also the compile time of each (the first
   chunk of a whole run pays it).
2. Whole runs, interleaved: ``python -m eigjax run batch_eval --set batch.input.count=N``
   from the generator and from a memory-mapped .npy file of the same N matrices
   (--runs each); matrices/s and the split from each run's summary.json, and the wall time
   of the command (interpreter start and compilation included).

Usage:
  python benchmarks/bench_batch_generator.py [--chunk 65536] [--repeats 9] [--count 4000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import medians  # noqa: E402

from eigjax.app import batch_function, batch_input, generate_matrices  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = {"op": "eigh", "vectors": True, "grad_loss": "sum_squares"}


def generate_v1(seed, n, rows):
    """The stream "threefry-counter-box-muller-1" (float32, random_symmetric), for comparison."""
    from jax.extend.random import threefry2x32_p

    m = n * n
    pairs = -(-m // 2)
    x0 = jnp.broadcast_to(rows[:, None], (rows.shape[0], pairs))
    x1 = jnp.broadcast_to(jnp.arange(pairs, dtype=jnp.uint32)[None, :], x0.shape)
    k1, k2 = np.uint32(seed >> 32), np.uint32(seed & 0xFFFFFFFF)
    o0, o1 = threefry2x32_p.bind(jnp.broadcast_to(k1, x0.shape), jnp.broadcast_to(k2, x0.shape), x0, x1)

    def unit(b):
        return jax.lax.bitcast_convert_type((b >> jnp.uint32(9)) | jnp.uint32(0x3F800000), jnp.float32) - 1.0

    radius = jnp.sqrt(np.float32(-2.0) * jnp.log(1.0 - unit(o0)))
    theta = np.float32(2 * np.pi) * unit(o1)
    z = jnp.concatenate([radius * jnp.cos(theta), radius * jnp.sin(theta)], axis=1)[:, :m]
    x = z.reshape(-1, n, n)
    return (x + jnp.swapaxes(x, -1, -2)) / 2


def in_process(chunk, repeats):
    inp = {"generator": "random_symmetric", "n": 3, "count": chunk, "seed": 0, "dtype": "float32"}
    src = batch_input(inp)
    devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    compute = batch_function(CFG)
    chunk_fn = jax.jit(compute, in_shardings=sharding, out_shardings=sharding)  # as _compute builds it
    fused = jax.jit(
        lambda r: compute(generate_matrices("random_symmetric", 0, 3, np.dtype("float32"), r)),
        in_shardings=sharding,
        out_shardings=sharding,
    )
    v1 = jax.jit(lambda r: generate_v1(0, 3, r))
    rows = jax.device_put(np.arange(chunk, dtype=np.uint32), sharding)
    compile_s = {}  # before any call: nothing compiled yet
    shape = jax.ShapeDtypeStruct((chunk, 3, 3), np.float32, sharding=sharding)
    for k, f in [("generator", src._gen), ("generator-v1", v1), ("compute", chunk_fn), ("fused", fused)]:
        t0 = time.perf_counter()
        f.lower(shape if k == "compute" else rows).compile()
        compile_s[k] = time.perf_counter() - t0
    mats = jax.device_put(np.asarray(src._gen(rows)), sharding)
    fns = {
        "generator": src._gen,
        "generator-v1": v1,
        "compute": lambda r: chunk_fn(mats),
        "fused": fused,
    }
    t = medians(fns, rows, repeats=repeats)
    return {k: chunk / v for k, v in t.items()}, compile_s


def whole_runs(count, runs, workdir):
    path = os.path.join(workdir, "in.npy")
    rows = batch_input({"generator": "random_symmetric", "n": 3, "count": count, "seed": 0, "dtype": "float32"})
    np.save(path, rows.rows(0, count))
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    base = [sys.executable, "-m", "eigjax", "run", "batch_eval", "--no-progress"]
    kinds = {
        "generator": ["--set", f"batch.input.count={count}"],
        "file": ["--set", f"batch.input={{path: {path}}}"],
    }
    res = {k: [] for k in kinds}
    for r in range(runs):
        for kind, extra in kinds.items():
            out = os.path.join(workdir, f"{kind}{r}")
            t0 = time.perf_counter()
            subprocess.run([*base, *extra, "--out", out], env=env, check=True, capture_output=True, cwd=ROOT)
            wall = time.perf_counter() - t0
            s = json.load(open(os.path.join(out, "summary.json")))
            assert s["complete"] and s["rows"] == count
            res[kind].append(
                {
                    "matrices_per_second": s["matrices_per_second"],
                    "seconds_input": s["seconds_input"],
                    "seconds_compute": s["seconds_compute"],
                    "seconds_write": s["seconds_write"],
                    "seconds_this_run": s["seconds_this_run"],
                    "wall": wall,
                }
            )
            for f in os.listdir(out):  # keep the scratch space small
                os.unlink(os.path.join(out, f))
    return {k: {f: statistics.median(x[f] for x in v) for f in v[0]} | {"all": v} for k, v in res.items()}


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser(
        description="Batch evaluator: the synthetic generator against the computation it feeds."
    )
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--count", type=int, default=4_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", help="write the results here too")
    a = ap.parse_args()
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "jax": jax.__version__,
        "machine": f"{cpu_name()}, {os.cpu_count()} cpus, jax platform {jax.devices()[0].platform}",
        "load_before": os.getloadavg(),
    }
    print(json.dumps(info))
    rates, compile_s = in_process(a.chunk, a.repeats)
    print(f"\nin-process, chunks of {a.chunk}, medians of {a.repeats} interleaved repeats (rows/s; compile s):")
    for k, v in rates.items():
        print(f"  {k:13s} {v:.3g}   {compile_s[k]:.2f}")
    print(
        f"  generator / compute = {rates['generator'] / rates['compute']:.2f}; "
        f"generator / generator-v1 = {rates['generator'] / rates['generator-v1']:.2f}; "
        f"fused / compute = {rates['fused'] / rates['compute']:.2f}"
    )
    whole = {}
    if a.runs:
        with tempfile.TemporaryDirectory() as d:
            whole = whole_runs(a.count, a.runs, d)
        print(f"\nwhole runs of {a.count} matrices, medians of {a.runs} interleaved runs:")
        print("  input      matrices/s  input s  compute s  write s  run s  command wall s")
        for k, v in whole.items():
            print(
                f"  {k:9s}  {v['matrices_per_second']:.3g}     {v['seconds_input']:.2f}     {v['seconds_compute']:.2f}"
                f"       {v['seconds_write']:.2f}     {v['seconds_this_run']:.2f}   {v['wall']:.1f}"
            )
    info["load_after"] = os.getloadavg()
    print(json.dumps({"load_after": info["load_after"]}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "in_process": rates, "compile_s": compile_s, "whole_runs": whole}, f, indent=1)


if __name__ == "__main__":
    main()
