"""GPU benchmark and checks (issue 16): one command, under 8 minutes on one GPU.

    PYTHONPATH=. python benchmarks/bench_gpu.py --out gpu.md [--budget 420] [--variants] [--sizes 2,3,4]
        [--group 8] [--try-entries]

Writes a markdown report (and prints it) with, in this order (a time budget skips the
rest, marked as skipped, so the command always finishes):

1. the HBM bandwidth measured by a copy (read + write bytes / time), the floor's basis;
2. correctness on the GPU: ``eigjax.eigh`` and ``eigjax.eigvalsh`` (whichever solver the
   dispatch picks, named in the table) on random, exactly degenerate, clustered (pairs
   4 eps apart) and 1e+-30 batches of 4,104 matrices (a partial last block),
   residual / orthogonality / eigenvalue error against NumPy float64, and one JVP
   against central differences of the eigenvalues in float64; a violation makes the
   exit status 1 (the benchmarks still run);
3. with ``--variants``: the dispatch's alternatives at 1e6 matrices (n = 2, 3, 4, 8, 16
   or ``--sizes``): the Pallas kernel (``eigjax.internal.eigh_small_pallas``, n <= 4)
   with several block sizes and layouts, the pure-JAX entry solver (its accuracy too)
   and cuSOLVER, with the bandwidth floor and each variant's compile time;
4. small batched eigh, n in {2, 3, 4, 8, 16, 32} (or ``--sizes``) x batch {1e4, 1e6},
   float32/float64, forward and value-and-grad of an eigenvector loss, eigjax against
   ``jax.vmap(jnp.linalg.eigh)`` (cuSOLVER), medians of interleaved repeats, with the
   forward's bandwidth floor (input read once, eigenvalues and eigenvectors written once);
5. eigh n in {1024, 4096} value-and-grad against jnp; eig n = 256 forward against jnp;
6. the batch evaluator on the shipped batch_eval config scaled to 4e6 matrices.

On a CPU (``--smoke``: tiny sizes) it checks the script only; the kernel then runs in
Pallas' interpret mode. Repeats adapt to the cost of a call (at least 3, up to 15 or
~1 s of calls); a call over 2 s is timed once and marked. A repeat issues ``--group``
calls back to back and waits once (device throughput; see ``timed``). ``--try-entries``
routes 5 <= n <= 16 to the entry solver in the dispatch (sections 2 and 4), the
candidate that the dispatch's table would take if it wins
(``eigjax.internal.route_to_entry_solver``).
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import eigjax  # noqa: E402
import eigjax.internal  # noqa: E402

T0 = time.perf_counter()
LINES: list[str] = []
FAILED: list = []


def emit(line: str = "") -> None:
    LINES.append(line)
    print(line, flush=True)


def timed(fns: dict, *args, compile_times: dict | None = None) -> dict:
    """Median seconds per call, interleaved between the functions.

    A call's time is that of ``ARGS.group`` calls issued back to back, then waited for,
    divided by the count: JAX dispatches asynchronously, so the host's launch latency
    (tens of microseconds) overlaps the device's work and the figure is the device's
    throughput, the quantity the bandwidth floor bounds (``--group 1``: one call and a
    wait, as the first two leases measured). The first call compiles (its time goes to
    ``compile_times``); calls over 2 s are timed once."""
    first = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        if compile_times is not None:
            compile_times[name] = time.perf_counter() - t
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        first[name] = time.perf_counter() - t
    slowest = max(first.values())
    group = 1 if slowest > 0.1 else ARGS.group
    # about 1 s of calls per function (a repeat is `group` calls): the budget of a lease
    reps = 1 if slowest > 2.0 else int(min(15, max(3, 1.0 / max(slowest * group, 1e-6))))
    times = {name: [] if reps > 1 else [first[name]] for name in fns}
    for _ in range(reps - 1 if reps > 1 else 0):
        for name, fn in fns.items():
            t = time.perf_counter()
            out = None
            for _ in range(group):
                out = fn(*args)  # the previous output is released when its call is done
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t) / group)
    return {name: statistics.median(ts) for name, ts in times.items()}


def sym_batch(rng, batch, n, dtype, kind="random"):
    x = rng.standard_normal((batch, n, n))
    a = (x + np.swapaxes(x, -1, -2)) / 2
    if kind == "degenerate":
        q, _ = np.linalg.qr(rng.standard_normal((batch, n, n)))
        w = np.where(np.arange(n) < (n + 1) // 2, 1.0, 2.0)
        a = (q * w[None, None, :]) @ np.swapaxes(q, -1, -2)
    elif kind == "near":  # pairs of eigenvalues 4 eps apart
        q, _ = np.linalg.qr(rng.standard_normal((batch, n, n)))
        eps = float(np.finfo(dtype).eps)
        w = 1.0 + np.arange(n) // 2 + (np.arange(n) % 2) * 4 * eps
        a = (q * w[None, None, :]) @ np.swapaxes(q, -1, -2)
    elif kind == "big":
        a = a * 1e30
    elif kind == "small":
        a = a * 1e-30
    return a.astype(dtype)


def loss_eigh(fn):
    def loss(a):
        w, v = fn(a)
        return jnp.sum(w * jnp.sum(v**4, axis=-2))  # eigenvector loss, sign-invariant

    return loss


def check_correctness(rng) -> None:
    emit("## 2. Correctness (eigjax.eigh and eigvalsh; bounds of tests/library/test_small.py)")
    emit("")
    emit(
        "| n | dtype | family | residual / (eps ||A||) | orthogonality / (n eps) | max |w - w_ref| / (n eps max|w|)"
        " | same, eigvalsh | solver | s since start |"
    )
    emit("|---|---|---|---|---|---|---|---|---|")
    bad = []
    for n in ARGS.sizes or ((2, 3, 4, 8, 16) if not ARGS.focus else (4, 8)):
        for dtype in (np.float32, np.float64):
            if time.perf_counter() - T0 > ARGS.budget * 0.3:
                emit(f"| {n} | {np.dtype(dtype).name} | skipped (time budget) | | | |")
                continue
            for kind in ("random", "degenerate", "near", "big", "small")[: 3 if ARGS.sizes else 5]:
                a = sym_batch(rng, 131072 if ARGS.focus else 4096 // SCALE + 8, n, dtype, kind)
                w, v = jax.jit(eigjax.eigh)(jnp.asarray(a))
                a64, w64, v64 = (np.asarray(x, np.float64) for x in (a, w, v))
                eps = float(np.finfo(dtype).eps)
                an = np.linalg.norm(a64, axis=(-2, -1))
                res = np.max(np.linalg.norm(a64 @ v64 - v64 * w64[..., None, :], axis=(-2, -1)) / an) / eps
                orth = np.max(np.linalg.norm(np.swapaxes(v64, -1, -2) @ v64 - np.eye(n), axis=(-2, -1))) / (n * eps)
                ref = np.linalg.eigvalsh(a64)
                werr = np.max(np.abs(w64 - ref) / np.max(np.abs(ref), axis=-1, keepdims=True)) / (n * eps)
                # values only (eigvalsh: the kernel without the rotations' accumulation)
                wo = np.asarray(jax.jit(eigjax.eigvalsh)(jnp.asarray(a)), np.float64)
                werr_o = np.max(np.abs(wo - ref) / np.max(np.abs(ref), axis=-1, keepdims=True)) / (n * eps)
                if PLATFORM == "cpu":
                    solver = eigjax.internal.cpu_solver(n, len(a))
                else:
                    solver = eigjax.internal.accel_solver(n, len(a), dtype, platform=PLATFORM)
                emit(
                    f"| {n} | {np.dtype(dtype).name} | {kind} | {res:.1f} | {orth:.2f} | {werr:.2f} | {werr_o:.2f}"
                    f" | {solver} | {time.perf_counter() - T0:.0f} |"
                )
                if not (res <= 50 and orth <= 50 and max(werr, werr_o) <= 20 and np.all(np.diff(w64, axis=-1) >= 0)):
                    bad.append((n, np.dtype(dtype).name, kind))
    # the NaN contract: a NaN or inf entry anywhere (also in the triangle not read) makes
    # that matrix's outputs all NaN and leaves the others exact
    for n in ARGS.sizes or (2, 3, 4, 8, 16):
        for dtype in (np.float32, np.float64):
            a = sym_batch(rng, 4104, n, dtype)
            a[5, n - 1, 0], a[9, 0, n - 1], a[17, 0, 0] = np.nan, np.inf, -np.inf
            bad_rows = [5, 9, 17]
            w, v = (np.asarray(x) for x in jax.jit(eigjax.eigh)(jnp.asarray(a)))
            wo = np.asarray(jax.jit(eigjax.eigvalsh)(jnp.asarray(a)))
            good = np.setdiff1d(np.arange(len(a)), bad_rows)
            ok = (
                np.all(np.isnan(w[bad_rows]))
                and np.all(np.isnan(v[bad_rows]))
                and np.all(np.isnan(wo[bad_rows]))
                and np.all(np.isfinite(w[good]))
                and np.all(np.isfinite(wo[good]))
            )
            emit(f"NaN contract, n = {n}, {np.dtype(dtype).name}: {'kept' if ok else 'BROKEN'}")
            if not ok:
                bad.append((n, np.dtype(dtype).name, "nan contract"))
    # one directional derivative against central differences (float64, distinct eigenvalues)
    for n in (3, 8):
        a = jnp.asarray(sym_batch(rng, 256, n, np.float64))
        d = jnp.asarray(sym_batch(rng, 256, n, np.float64))
        f = jax.jit(lambda x: jnp.sum(eigjax.eigh(x).eigenvalues ** 3, axis=-1))
        _, jv = jax.jvp(f, (a,), (d,))
        h = 1e-5
        fd = (f(a + h * d) - f(a - h * d)) / (2 * h)
        rel = float(jnp.max(jnp.abs(jv - fd) / (1 + jnp.abs(fd))))
        emit(f"\nJVP of sum(w**3) vs central differences, n = {n}, float64: max rel. error {rel:.1e}")
        if rel > 1e-6:
            bad.append((n, "jvp", rel))
    if bad:
        emit(f"\nFAILED: {bad} (the benchmarks still run; exit status 1 at the end)")
        FAILED.extend(bad)


def bandwidth() -> float:
    x = jnp.ones(((1 << 29) // SCALE,), jnp.float32)  # 2 GiB
    f = jax.jit(lambda x: x * 1.0001)
    t = timed({"copy": f}, x)["copy"]
    bw = 2 * x.nbytes / t
    emit(f"## 1. HBM bandwidth: {bw / 1e12:.2f} TB/s (x * 1.0001 over 2 GiB float32: read + write bytes / median time)")
    emit("")
    return bw


def small_table(rng, bw: float, budget: float) -> None:
    emit("## 4. Small batched eigh: eigjax.eigh vs jax.vmap(jnp.linalg.eigh)")
    emit("")
    emit("Times are medians (ms). floor = (input + eigenvalues + eigenvectors bytes) / bandwidth.")
    emit("")
    emit("| n | batch | dtype | eigjax fwd | jnp fwd | speed-up | eigjax / floor | eigjax v&g | jnp v&g | speed-up |")
    emit("|---|---|---|---|---|---|---|---|---|---|")
    jnp_eigh = jax.vmap(jnp.linalg.eigh)
    # targets first (float32, 1e6), then the rest
    rows = [
        (n, b, d)
        for d in (np.float32, np.float64)
        for b in (10**6 // SCALE, 10**4 // SCALE)
        for n in ARGS.sizes or (2, 3, 4, 8, 16, 32)
    ]
    if ARGS.focus:
        rows = [(n, b, d) for d in (np.float32, np.float64) for b in (10**6, 10**5) for n in (2, 3, 4, 8)]
    for n, batch, dtype in rows:
        name = f"| {n} | {batch:.0e} | {np.dtype(dtype).name} |"
        if time.perf_counter() - T0 > budget:
            emit(f"{name} skipped (time budget) |")
            continue
        a = jnp.asarray(sym_batch(rng, batch, n, dtype))
        t = timed({"e": jax.jit(eigjax.eigh), "j": jax.jit(jnp_eigh)}, a)
        nbytes = a.dtype.itemsize * batch * (2 * n * n + n)
        floor = nbytes / bw
        vg = timed(
            {
                "e": jax.jit(jax.value_and_grad(loss_eigh(eigjax.eigh))),
                "j": jax.jit(jax.value_and_grad(loss_eigh(jnp_eigh))),
            },
            a,
        )
        emit(
            f"{name} {t['e'] * 1e3:.3f} | {t['j'] * 1e3:.3f} | {t['j'] / t['e']:.1f}x | {t['e'] / floor:.1f} |"
            f" {vg['e'] * 1e3:.3f} | {vg['j'] * 1e3:.3f} | {vg['j'] / vg['e']:.1f}x |"
        )
        del a


def accuracy(fn, rng, n, dtype) -> str:
    """Worst residual / (eps ||A||) and orthogonality / (n eps) of ``fn`` on random and
    exactly degenerate batches of 4,104 matrices (the bounds are 50 and 50)."""
    worst_r = worst_o = 0.0
    for kind in ("random", "degenerate"):
        a = sym_batch(rng, 4104 // SCALE + 8, n, dtype, kind)
        w, v = (np.asarray(x, np.float64) for x in fn(jnp.asarray(a)))
        a64, eps = a.astype(np.float64), float(np.finfo(dtype).eps)
        an = np.linalg.norm(a64, axis=(-2, -1))
        worst_r = max(worst_r, np.max(np.linalg.norm(a64 @ v - v * w[..., None, :], axis=(-2, -1)) / an) / eps)
        worst_o = max(
            worst_o, np.max(np.linalg.norm(np.swapaxes(v, -1, -2) @ v - np.eye(n), axis=(-2, -1))) / (n * eps)
        )
    if not (worst_r <= 50 and worst_o <= 50):
        FAILED.append(("variant accuracy", n, np.dtype(dtype).name))
    return f"{worst_r:.1f} / {worst_o:.2f}"


def variants(rng, bw: float, budget: float) -> None:
    """The dispatch's alternatives at 1e6 matrices, forward: the Pallas kernel's block
    sizes and loop forms (n <= 4), the pure-JAX entry solver, cuSOLVER; the fastest is
    marked, and the compile time of each (first call) is listed."""
    emit("")
    emit("## 3. Solver variants (forward, batch 1e6; ms, medians; compile s = first call)")
    emit("")
    emit("pallas bB wW: eigjax.internal.eigh_small_pallas(block=B, num_warps=W) (sweeps unrolled; default warps")
    emit("B / 32); T: transposed layout (n <= 4 only: Triton compiled n = 5 in 14 s, n = 8 not in 100 s);")
    emit("entries: the pure-JAX entry solver (n >= 5: round-robin with the skip rule, a sweep per loop body")
    emit("up to n = 8, s1: a step per body), the accuracy of its default form as")
    emit("residual / (eps ||A||) and orthogonality / (n eps), worst of random and exactly degenerate;")
    emit("jnp: vmap(jnp.linalg.eigh) (cuSOLVER).")
    emit("")
    emit("| n | dtype | variant times | compile s | fastest | jnp / fastest | fastest / floor | entries accuracy |")
    emit("|---|---|---|---|---|---|---|---|")
    pallas = eigjax.internal.eigh_small_pallas
    if PLATFORM == "cpu":  # a check of the script: the interpreter, tiny batches
        pallas = functools.partial(pallas, interpret=True)
    sizes = ARGS.sizes or (2, 3, 4, 8, 16)
    for dtype in (np.float32, np.float64):
        for n in sizes if SCALE == 1 else (2, 3, 5):
            name = f"| {n} | {np.dtype(dtype).name} |"
            if time.perf_counter() - T0 > budget:
                emit(f"{name} skipped (time budget) | | | | | |")
                continue
            a = jnp.asarray(sym_batch(rng, 10**6 // SCALE, n, dtype))
            fns = {"jnp": jax.jit(jax.vmap(jnp.linalg.eigh))}
            if n <= 4:
                # (block, warps): with fewer warps than block / 32 each thread holds several
                # matrices (independent rotation chains in flight: the kernel is latency-bound)
                shapes = (
                    [(128, None), (256, None), (256, 4), (512, 4)] if dtype == np.float32 else [(128, None), (256, 4)]
                )
                for blk, warps in shapes:
                    label = f"pallas b{blk}" + (f" w{warps}" if warps else "")
                    fns[label] = jax.jit(functools.partial(pallas, block=blk, num_warps=warps))
                fns["pallas b128 T"] = jax.jit(functools.partial(pallas, layout="transposed"))
                fns["pallas b256 w4 T"] = jax.jit(
                    functools.partial(pallas, block=256, num_warps=4, layout="transposed")
                )
            entries = jax.jit(lambda x: eigjax.internal.eigh_small_accel(x, method="entries"))
            fns["entries"] = entries
            if 5 <= n <= 8:  # default: a sweep per loop body; s1: a step per body (fast to compile)
                fns["entries s1"] = jax.jit(
                    lambda x: eigjax.internal.eigh_small_accel(x, method="entries", unroll_sweep=False)
                )
            compile_s: dict = {}
            try:
                t = timed(fns, a, compile_times=compile_s)
                acc = accuracy(entries, rng, n, dtype)
            except Exception as e:  # noqa: BLE001 - a compile failure is a result to record
                emit(f"{name} FAILED: {type(e).__name__}: {str(e)[:300]} | | | | | |")
                FAILED.append(("variants", n, np.dtype(dtype).name, type(e).__name__))
                continue
            best = min((k for k in t if k != "jnp"), key=t.get)
            floor = a.dtype.itemsize * a.shape[0] * (2 * n * n + n) / bw
            cells = ", ".join(f"{k} {v * 1e3:.3f}" for k, v in t.items())
            comp = ", ".join(f"{k} {v:.1f}" for k, v in compile_s.items())
            emit(f"{name} {cells} | {comp} | {best} | {t['jnp'] / t[best]:.1f}x | {t[best] / floor:.1f} | {acc} |")
            del a


def large(rng, budget: float) -> None:
    emit("")
    emit("## 5. Large matrices (ms)")
    emit("")
    emit("| problem | eigjax | jnp | eigjax / jnp |")
    emit("|---|---|---|---|")
    for n, dtype in (
        (1024 // SCALE**0.5, np.float32),
        (1024 // SCALE**0.5, np.float64),
        (4096 // SCALE**0.5, np.float32),
    ):
        n = int(n)
        if time.perf_counter() - T0 > budget:
            emit(f"| eigh n = {n} {np.dtype(dtype).name} value-and-grad | skipped (time budget) | | |")
            continue
        a = jnp.asarray(sym_batch(rng, 1, n, dtype)[0])
        t = timed(
            {
                "e": jax.jit(jax.value_and_grad(loss_eigh(eigjax.eigh))),
                "j": jax.jit(jax.value_and_grad(loss_eigh(jnp.linalg.eigh))),
            },
            a,
        )
        emit(
            f"| eigh n = {n} {np.dtype(dtype).name} value-and-grad "
            f"| {t['e'] * 1e3:.1f} | {t['j'] * 1e3:.1f} | {t['e'] / t['j']:.2f} |"
        )
    if time.perf_counter() - T0 > budget:
        emit("| eig n = 256 forward | skipped (time budget) | | |")
        return
    a = jnp.asarray(rng.standard_normal((256, 256)))
    try:
        t = timed({"e": jax.jit(eigjax.eig), "j": jax.jit(jnp.linalg.eig)}, a)
        emit(f"| eig n = 256 float64 forward | {t['e'] * 1e3:.1f} | {t['j'] * 1e3:.1f} | {t['e'] / t['j']:.2f} |")
    except Exception as e:  # noqa: BLE001 - jnp.linalg.eig may not exist on this backend
        t = timed({"e": jax.jit(eigjax.eig)}, a)
        emit(f"| eig n = 256 float64 forward | {t['e'] * 1e3:.1f} | jnp: {type(e).__name__} | - |")


def batch_eval_section(budget: float) -> None:
    """The shipped batch_eval config (eigh + gradient of sum(w**2), random symmetric
    3x3 float32), scaled to 4e6 matrices in chunks of 2**20, written to a temp dir."""
    import tempfile

    import yaml

    from eigjax.app import run_batch_eval

    emit("")
    emit("## 6. Batch evaluator (configs/batch_eval.yaml, count 4e6, chunk_size 2**20)")
    emit("")
    if time.perf_counter() - T0 > budget:
        emit("skipped (time budget)")
        return
    with open("configs/batch_eval.yaml") as f:
        cfg = yaml.safe_load(f)["batch"]
    cfg["input"]["count"] = 4 * 10**6 // SCALE
    cfg["chunk_size"] = 2**20 // SCALE
    cfg["progress"] = False
    for name in ("cold (compiles)", "warm"):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            summary = run_batch_eval(dict(cfg), d)
            dt = time.perf_counter() - t
        emit(
            f"- {name}: {cfg['input']['count'] / dt:.3g} matrices/s ({dt:.2f} s wall, writing .npy outputs); summary keys: "
            f"{sorted(summary)[:12]}"
        )


def finish(code: int = 0) -> None:
    emit("")
    emit(f"Total {time.perf_counter() - T0:.0f} s.")
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            f.write("\n".join(LINES) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="markdown file to write")
    p.add_argument("--budget", type=float, default=420.0, help="seconds after which remaining rows are skipped")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (a check of the script on a CPU)")
    p.add_argument("--focus", action="store_true", help="only the dispatch rows: n 2-8, batch 1e5/1e6, checks at 1.3e5")
    p.add_argument("--variants", action="store_true", help="also section 3: the dispatch's alternatives at 1e6")
    p.add_argument("--sizes", type=lambda x: tuple(int(v) for v in x.split(",")), help="only these n (e.g. 2,3,4)")
    p.add_argument("--group", type=int, default=8, help="calls issued back to back per timing (1: call and wait)")
    p.add_argument(
        "--try-entries",
        action="store_true",
        help="route 5 <= n <= 16 to the pure-JAX entry solver in sections 2 and 4",
    )
    ARGS = p.parse_args()
    if ARGS.try_entries:
        for size in range(5, 17):
            eigjax.internal.route_to_entry_solver(size)
    faulthandler.enable()
    SCALE = 1000 if ARGS.smoke else 1
    dev = jax.devices()[0]
    PLATFORM = "cuda" if dev.platform == "gpu" else dev.platform
    emit(
        f"# eigjax GPU benchmark: {dev.device_kind} ({dev.platform}), jax {jax.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    emit("")
    emit(f"Options: {vars(ARGS)}")
    emit("")
    rng = np.random.default_rng(0)
    bw = bandwidth()
    check_correctness(rng)
    if ARGS.variants:
        variants(rng, bw, ARGS.budget * 0.55)
    small_table(rng, bw, ARGS.budget * (1.0 if ARGS.focus else 0.85))
    if not ARGS.focus:
        large(rng, ARGS.budget * 0.92)
        batch_eval_section(ARGS.budget)
    finish(1 if FAILED else 0)
