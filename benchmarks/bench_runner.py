"""Runner overhead: steps/s of `eigjax run` vs hand-written jit loops on the same loss.

For each config, three ways of taking the same optimisation steps (same optax optimizer,
same loss, same projection):
  runner      `eigjax run` (chunks of log_every steps in lax.scan, metrics + checkpoints)
              -- steps/s from its summary.json (compile time excluded);
  jit-step    a Python loop over a jit-compiled single step (typical hand-written code);
  jit-scan    all steps in one jit-compiled lax.scan (the floor: no host round trips).
Medians over --repeats runs. Target: runner >= 0.9x jit-step.

Usage:
  python benchmarks/bench_runner.py [--repeats 5] [--configs configs/seed_example3.yaml configs/fmmc.yaml]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

from eigjax.app import load_config, make_optimizer, resolve_config


def hand_written(cfg, module, problem, mode):
    if cfg["precision"] == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if cfg["precision"] == "float64" else jnp.float32
    data = module.setup(problem, dtype)
    opt = make_optimizer(cfg["optimizer"])
    params = module.init_params(data, jax.random.PRNGKey(cfg["seed"]))
    state = opt.init(params)
    user_loss = getattr(module, "loss", None)
    project = getattr(module, "project", lambda p, d: p)

    def loss(p, s):
        if user_loss is None:
            return module.objective(p, data)
        out = user_loss(p, data, s)
        return out[0] if isinstance(out, tuple) else out

    def step(carry, _):
        p, st, s = carry
        v, g = jax.value_and_grad(loss)(p, s)
        u, st = opt.update(g, st, p, value=v, grad=g, value_fn=lambda q: loss(q, s))
        return (project(optax.apply_updates(p, u), data), st, s + 1), v

    steps = cfg["steps"]
    if mode == "jit-step":
        f = jax.jit(lambda c: step(c, None)[0])
        c = jax.block_until_ready(f((params, state, 0)))  # compile
        c = (params, state, 0)
        t0 = time.perf_counter()
        for _ in range(steps):
            c = f(c)
        jax.block_until_ready(c)
    else:
        f = jax.jit(lambda c: jax.lax.scan(step, c, None, length=steps))
        jax.block_until_ready(f((params, state, 0)))
        t0 = time.perf_counter()
        jax.block_until_ready(f((params, state, 0)))
    return steps / (time.perf_counter() - t0)


def runner(config):
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [sys.executable, "-m", "eigjax", "run", config, "--out", out, "--no-progress"],
            check=True,
            capture_output=True,
        )
        with open(f"{out}/summary.json") as f:
            return json.load(f)["steps_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["configs/seed_example3.yaml", "configs/fmmc.yaml"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print("| config | runner steps/s | jit-step steps/s | jit-scan steps/s | runner / jit-step | runner / jit-scan |")
    print("|---|---|---|---|---|---|")
    for config in args.configs:
        cfg, module, problem = resolve_config(load_config(config))
        r = statistics.median(runner(config) for _ in range(args.repeats))
        s = statistics.median(hand_written(cfg, module, problem, "jit-step") for _ in range(args.repeats))
        c = statistics.median(hand_written(cfg, module, problem, "jit-scan") for _ in range(args.repeats))
        print(f"| {config} | {r:.0f} | {s:.0f} | {c:.0f} | {r / s:.2f} | {r / c:.2f} |", flush=True)


if __name__ == "__main__":
    main()
