"""Benchmark eigjax.eig against JAX's own general eigendecomposition (float64, CPU).

Forward: ``eigjax.eig`` vs ``jnp.linalg.eig``.
Value-and-grad of ``sum(|V|^2 * g) + sum(|w|)`` (uses eigenvectors): ``eigjax.eig`` vs
``jax.lax.linalg.eig(..., enable_eigvec_derivs=True)`` (``jnp.linalg.eig`` has no
eigenvector gradient without that flag). Value-and-grad of ``sum(|w|)``:
``eigjax.eigvals`` vs ``jnp.linalg.eigvals``.

Medians of ``--repeats`` timed runs after one warm-up (compile) run, same process,
the two implementations interleaved run by run.

    .venv/bin/python benchmarks/bench_eig.py --sizes 16 64 256 --repeats 7
"""

from __future__ import annotations

import argparse
import platform

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import medians  # noqa: E402

import eigjax  # noqa: E402


def timed_pair(f1, f2, *args, repeats):
    """Medians of interleaved runs of f1 and f2 (interleaving spreads machine noise)."""
    t = medians({1: f1, 2: f2}, *args, repeats=repeats)
    return t[1], t[2]


def cases(n):
    g = jnp.linspace(0.5, 1.5, n)

    def vec_loss(eig_fn):
        def loss(a):
            w, v = eig_fn(a)
            return jnp.sum(jnp.abs(v) ** 2 * g[:, None]) + jnp.sum(jnp.abs(w))

        return loss

    lax_eig = lambda a: tuple(jax.lax.linalg.eig(a, compute_left_eigenvectors=False, enable_eigvec_derivs=True))
    return {
        "forward eig": (lambda a: tuple(eigjax.eig(a)), lambda a: tuple(jnp.linalg.eig(a))),
        "value_and_grad (eigenvectors)": (
            jax.value_and_grad(vec_loss(lambda a: tuple(eigjax.eig(a)))),
            jax.value_and_grad(vec_loss(lax_eig)),
        ),
        "value_and_grad (eigvals)": (
            jax.value_and_grad(lambda a: jnp.sum(jnp.abs(eigjax.eigvals(a)))),
            jax.value_and_grad(lambda a: jnp.sum(jnp.abs(jnp.linalg.eigvals(a)))),
        ),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {platform.processor() or platform.machine()}")
    print("| n | case | eigjax (ms) | jax (ms) | eigjax / jax |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        a = jnp.asarray(np.random.default_rng(n).standard_normal((n, n)))
        for name, (ours, theirs) in cases(n).items():
            t_ours, t_jax = timed_pair(jax.jit(ours), jax.jit(theirs), a, repeats=args.repeats)
            print(f"| {n} | {name} | {1e3 * t_ours:.3f} | {1e3 * t_jax:.3f} | {t_ours / t_jax:.2f} |", flush=True)


if __name__ == "__main__":
    main()
