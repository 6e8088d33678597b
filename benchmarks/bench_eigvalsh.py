"""eigvalsh without eigenvectors: eigjax.eigvalsh forward vs jnp.linalg.eigvalsh and eigjax.eigh.

All in one process, each function jit-compiled and called once to warm up, then
--repeats rounds in which every function is called once (interleaved, so the drifts of
a shared machine hit all alike); the median wall time of each, and the median process
CPU time (all threads; steadier than wall time when other processes compete for the
cores). Random Hermitian input.

  eigjax.eigvalsh   jax.jit(eigjax.eigvalsh): the values-only forward (eigjax/_eigvals_only.py)
  jnp.eigvalsh      jax.jit(jnp.linalg.eigvalsh): the full decomposition, vectors dropped
  eigjax.eigh       jax.jit(eigjax.eigh)
  tri+bisect        (--variants) jax.lax.linalg.tridiagonal + jax.scipy.linalg.
                    eigh_tridiagonal(eigvals_only=True): the pure-JAX values-only path

Single matrices: --sizes (float64 unless --dtypes); batched small matrices: --small
(n:batch pairs) in float32, float64 and complex64.

The generalized pencil A v = w B v (--generalized sizes, float64, B = X X^T / n + I):

  eigjax.eigvalsh_generalized   values only: Cholesky, triangular solves, values-only eigvalsh
  eigjax.eigh_generalized       jax.jit(eigjax.eigh_generalized(a, b).eigenvalues)
  jnp reduced                   jnp.linalg.cholesky + two solve_triangular +
                                jnp.linalg.eigvalsh of C = L^-1 A L^-H (full decomposition)

Usage:
  python benchmarks/bench_eigvalsh.py [--sizes 256 1024] [--small 8:10000 16:10000]
      [--generalized 256 1024] [--repeats 7] [--variants]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import eigjax

jax.config.update("jax_enable_x64", True)


def timings(fns, a, repeats, *rest):
    """Median wall and process-CPU seconds of each fn(a, *rest), interleaved rounds."""
    for fn in fns.values():
        jax.block_until_ready(fn(a, *rest))
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(a, *rest))
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()}


def hermitian(r, shape, dtype):
    x = r.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * r.standard_normal(shape)
    x = (x + np.conj(np.swapaxes(x, -1, -2))) / 2
    return jnp.asarray(x.astype(dtype))


def functions(variants):
    fns = {
        "eigjax.eigvalsh": jax.jit(eigjax.eigvalsh),
        "jnp.eigvalsh": jax.jit(jnp.linalg.eigvalsh),
        "eigjax.eigh": jax.jit(lambda a: eigjax.eigh(a).eigenvalues),
    }
    if variants:

        def tri_bisect(a):
            _, d, e, _ = jax.lax.linalg.tridiagonal(a, lower=True)
            return jnp.vectorize(
                lambda d, e: jax.scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True), signature="(n),(m)->(n)"
            )(d, e)

        fns["tri+bisect"] = jax.jit(tri_bisect)
    return fns


def jnp_reduced(a, b):
    """The pencil's eigenvalues with jax.numpy alone: the Cholesky reduction, then eigvalsh."""
    l = jnp.linalg.cholesky(b)
    x = jax.scipy.linalg.solve_triangular(l, a, lower=True)  # L^-1 A
    c = jax.scipy.linalg.solve_triangular(l, jnp.conj(jnp.swapaxes(x, -1, -2)), lower=True)  # L^-1 A L^-H
    return jnp.linalg.eigvalsh(c)


def generalized_functions():
    return {
        "eigjax.eigvalsh_generalized": jax.jit(eigjax.eigvalsh_generalized),
        "eigjax.eigh_generalized": jax.jit(lambda a, b: eigjax.eigh_generalized(a, b).eigenvalues),
        "jnp reduced": jax.jit(jnp_reduced),
    }


def fmt(t):
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 1024])
    parser.add_argument("--dtypes", nargs="+", default=["float64"])
    parser.add_argument("--small", nargs="*", default=["8:10000", "16:10000"], help="n:batch pairs")
    parser.add_argument("--small-dtypes", nargs="+", default=["float32", "float64", "complex64"])
    parser.add_argument("--generalized", type=int, nargs="*", default=[256, 1024], help="pencil sizes (float64)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--variants", action="store_true", help="also time the pure-JAX tridiagonal + bisection path")
    args = parser.parse_args()

    dev = jax.devices()[0]
    print(
        f"device: {dev.platform} {dev.device_kind} x{jax.device_count()}, jax {jax.__version__}, "
        f"median of {args.repeats} interleaved rounds (wall; process CPU in brackets)"
    )
    fns = functions(args.variants)
    names = list(fns)
    r = np.random.default_rng(0)
    cases = [(dt, (n, n)) for dt in args.dtypes for n in args.sizes]
    for pair in args.small:
        n, batch = (int(x) for x in pair.split(":"))
        cases += [(dt, (batch, n, n)) for dt in args.small_dtypes]
    if cases:
        head = "| dtype | shape | " + " | ".join(names) + " | jnp.eigvalsh / eigvalsh | eigjax.eigh / eigvalsh |"
        print()
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
    for dtype, shape in cases:
        a = hermitian(r, shape, np.dtype(dtype))
        wall, cpu = timings(fns, a, args.repeats)
        cells = [f"{fmt(wall[k])} [{fmt(cpu[k])}]" for k in names]
        ratio_jnp = f"{wall['jnp.eigvalsh'] / wall['eigjax.eigvalsh']:.2f}x [{cpu['jnp.eigvalsh'] / cpu['eigjax.eigvalsh']:.2f}x]"
        ratio_eigh = (
            f"{wall['eigjax.eigh'] / wall['eigjax.eigvalsh']:.2f}x [{cpu['eigjax.eigh'] / cpu['eigjax.eigvalsh']:.2f}x]"
        )
        print(
            f"| {dtype} | {'x'.join(map(str, shape))} | " + " | ".join(cells) + f" | {ratio_jnp} | {ratio_eigh} |",
            flush=True,
        )

    if args.generalized:
        gfns = generalized_functions()
        gnames = list(gfns)
        head = "| dtype | shape | " + " | ".join(gnames) + " | eigh_generalized / values | jnp reduced / values |"
        print()
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for n in args.generalized:
            a = hermitian(r, (n, n), np.dtype("float64"))
            x = r.standard_normal((n, n))
            b = jnp.asarray(x @ x.T / n + np.eye(n))
            wall, cpu = timings(gfns, a, args.repeats, b)
            cells = [f"{fmt(wall[k])} [{fmt(cpu[k])}]" for k in gnames]
            base = "eigjax.eigvalsh_generalized"
            ratios = [f"{wall[k] / wall[base]:.2f}x [{cpu[k] / cpu[base]:.2f}x]" for k in gnames[1:]]
            print(f"| float64 | {n}x{n} | " + " | ".join(cells + ratios) + " |", flush=True)


if __name__ == "__main__":
    main()
