"""Cost of the degenerate guard (issue #15): value_and_grad of eigjax.eigh with
``degenerate_check=True`` (the default) against ``False`` (the cut rule alone), same
process, interleaved (``benchmarks/_timing.py``), medians.

  vg_vals    value_and_grad of sum(w**2)                (the guard tests wbar only)
  vg_vecs    value_and_grad of sum(w**2) + sum(|V|**4)  (wbar and V^T Vbar)

on a random symmetric matrix and on a degenerate one (``Q diag(1, 1, 2, ..) Q^T``, where the
guard has cut pairs to test). Prints a Markdown table.

Usage:
  python benchmarks/bench_guard.py [--sizes 256 1024] [--repeats 9] [--dtype float64]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import medians  # noqa: E402

import eigjax  # noqa: E402


def make_fns(check):
    def loss_vals(a):
        return jnp.sum(eigjax.eigh(a, degenerate_check=check)[0] ** 2)

    def loss_vecs(a):
        w, v = eigjax.eigh(a, degenerate_check=check)
        return jnp.sum(w**2) + jnp.sum(jnp.abs(v) ** 4)

    return {"vg_vals": jax.jit(jax.value_and_grad(loss_vals)), "vg_vecs": jax.jit(jax.value_and_grad(loss_vecs))}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--dtype", default="float64")
    args = p.parse_args()
    on, off = make_fns(True), make_fns(False)
    print("| input | n | op | trust the loss (ms) | guarded (ms) | guarded/trust |")
    print("|---|---|---|---|---|---|")
    r = np.random.default_rng(0)
    for n in args.sizes:
        x = r.standard_normal((n, n))
        q, _ = np.linalg.qr(x)
        w = np.arange(n, dtype=np.float64)
        w[1] = w[0]
        inputs = {"random": (x + x.T) / 2, "degenerate": (q * w) @ q.T}
        for kind, a in inputs.items():
            a = jnp.asarray((a + a.T) / 2, args.dtype)
            for op in ("vg_vals", "vg_vecs"):
                t = medians({"off": off[op], "on": on[op]}, a, repeats=args.repeats)
                print(
                    f"| {kind} | {n} | {op} | {1e3 * t['off']:.3f} | {1e3 * t['on']:.3f} | {t['on'] / t['off']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
