"""Benchmark eigjax.eigh against jnp.linalg.eigh in the same process.

Times (medians of --repeats interleaved runs after a warm-up call, each call jit-compiled
and block_until_ready'd):
  fwd        the decomposition alone,
  vg_vals    value_and_grad of an eigenvalue-only loss  sum(w**2),
  vg_vecs    value_and_grad of a loss using eigenvectors  sum(w**2) + sum(|V|**4),
for n in --sizes and float32/float64. Prints a Markdown table with ratios.

Usage:
  python benchmarks/bench_eigh.py [--sizes 16 64 256 1024] [--repeats 7]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import medians  # noqa: E402

import eigjax  # noqa: E402


def make_fns(eigh):
    fwd = jax.jit(lambda a: eigh(a))

    def loss_vals(a):
        return jnp.sum(eigh(a)[0] ** 2)

    def loss_vecs(a):
        w, v = eigh(a)
        return jnp.sum(w**2) + jnp.sum(jnp.abs(v) ** 4)

    return {
        "fwd": fwd,
        "vg_vals": jax.jit(jax.value_and_grad(loss_vals)),
        "vg_vecs": jax.jit(jax.value_and_grad(loss_vecs)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    args = parser.parse_args()

    libs = {"jax": make_fns(jnp.linalg.eigh), "eigjax": make_fns(eigjax.eigh)}
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}, repeats {args.repeats} (median)")
    print()
    print("| dtype | n | op | jnp.linalg (ms) | eigjax (ms) | eigjax/jax |")
    print("|---|---|---|---|---|---|")
    ratios = {}
    for dtype in args.dtypes:
        for n in args.sizes:
            r = np.random.default_rng(n)
            x = r.standard_normal((n, n))
            a = jnp.asarray((x + x.T) / 2, dtype=dtype)
            t = {}
            for op in ["fwd", "vg_vals", "vg_vecs"]:
                m = medians({lib: fns[op] for lib, fns in libs.items()}, a, repeats=args.repeats)
                for lib in libs:
                    t[lib, op] = m[lib]
                print(
                    f"| {dtype} | {n} | {op} | {1e3 * t['jax', op]:.3f} | {1e3 * t['eigjax', op]:.3f} "
                    f"| {t['eigjax', op] / t['jax', op]:.2f} |",
                    flush=True,
                )
            ratios[dtype, n] = {
                lib: (t[lib, "vg_vals"] / t[lib, "fwd"], t[lib, "vg_vecs"] / t[lib, "fwd"]) for lib in libs
            }
    print()
    print("value-and-grad / forward (same library):")
    print()
    print("| dtype | n | jax vals | eigjax vals | jax vecs | eigjax vecs |")
    print("|---|---|---|---|---|---|")
    for (dtype, n), rr in ratios.items():
        print(
            f"| {dtype} | {n} | {rr['jax'][0]:.2f} | {rr['eigjax'][0]:.2f} | {rr['jax'][1]:.2f} | {rr['eigjax'][1]:.2f} |"
        )


if __name__ == "__main__":
    main()
