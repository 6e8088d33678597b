"""Batched small symmetric matrices: eigjax.eigh vs jax.numpy, with a bandwidth floor.

For n in --sizes and batch in --batches (float32, random symmetric input), times in one
process (each function jit-compiled, one warm-up call, then the median of --repeats
calls, each block_until_ready'd):

  eigjax        jax.jit(eigjax.eigh) on the (batch, n, n) array (on CPU: the native
                Jacobi kernel for n <= 16, the one-pass pure-JAX solver for n = 2),
  small         jax.jit(eigjax.internal.eigh_small) always (the pure-JAX solvers, the
                fallback where the native kernel cannot be built; shown for n <= 16),
  vmap          jax.jit(jax.vmap(jnp.linalg.eigh)),
  batched       jax.jit(jnp.linalg.eigh) on the whole batch,

and the memory-bandwidth floor: (bytes in + bytes out) per matrix, n^2 + n + n^2 floats,
divided by a copy bandwidth measured in the same run (2 x bytes of a 256 MiB array copy
over its median time). Prints a Markdown table: matrices/s and ratios vs vmap.

Usage:
  python benchmarks/bench_small.py [--sizes 2 3 4 8 16 32] [--batches 10000 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_time, medians

import eigjax
from eigjax.internal import eigh_small


def copy_bandwidth(repeats):
    x = jnp.ones((64 * 2**20,), jnp.float32)  # 256 MiB
    f = jax.jit(lambda x: x * 1.0001)
    t = median_time(f, x, repeats=repeats)
    return 2 * x.nbytes / t


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 4, 8, 16, 32])
    parser.add_argument("--batches", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small-max-n", type=int, default=16, help="largest n for the forced 'small' column")
    args = parser.parse_args()

    bw = copy_bandwidth(args.repeats)
    print(
        f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}, "
        f"float32, median of {args.repeats}; copy bandwidth {bw / 1e9:.2f} GB/s"
    )
    print()
    print(
        "| n | batch | eigjax (mat/s) | small forced (mat/s) | vmap(jnp eigh) (mat/s) | jnp eigh batched (mat/s) "
        "| eigjax / vmap | small / vmap | bandwidth floor (mat/s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    fns = {
        "eigjax": jax.jit(lambda a: tuple(eigjax.eigh(a))),
        "small": jax.jit(eigh_small),
        "vmap": jax.jit(jax.vmap(jnp.linalg.eigh)),
        "batched": jax.jit(jnp.linalg.eigh),
    }
    for n in args.sizes:
        for b in args.batches:
            r = np.random.default_rng(n)
            x = r.standard_normal((b, n, n)).astype(np.float32)
            a = jnp.asarray((x + np.swapaxes(x, -1, -2)) / 2)
            run = {name: fn for name, fn in fns.items() if name != "small" or n <= args.small_max_n}
            t = medians(run, a, repeats=args.repeats)
            floor = bw / (4 * (2 * n * n + n))
            small = f"{b / t['small']:.3g}" if "small" in t else "-"
            small_ratio = f"{t['vmap'] / t['small']:.2f}" if "small" in t else "-"
            print(
                f"| {n} | {b} | {b / t['eigjax']:.3g} | {small} | {b / t['vmap']:.3g} | {b / t['batched']:.3g} "
                f"| {t['vmap'] / t['eigjax']:.2f} | {small_ratio} | {floor:.3g} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
