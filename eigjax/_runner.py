"""The experiment runner behind ``eigjax run``.

An **experiment** is any importable module with this interface (see ``experiments/`` for
examples; a user's own module works the same way, named by its import path)::

    Problem                       a dataclass: the typed schema of the config's ``problem:``
                                  block (fields with defaults; an optional ``validate()``
                                  raising ValueError for bad values)
    setup(problem, dtype)         -> data: a pytree of constant arrays for the problem
    init_params(data, key)        -> params: the initial parameter pytree
    objective(params, data)       -> scalar: the reported objective
    MAXIMIZE = False              optional: the objective is maximised
    loss(params, data, step)      optional: what the optimiser minimises (default: the
                                  objective, negated if MAXIMIZE); may anneal with step;
                                  may return (loss, objective) to share one eigensolve
    project(params, data)         optional: applied after every update (constraints)
    metrics(params, data)         optional: dict of extra arrays logged every log_every
                                  steps; a vector under "eigenvalues" is plotted
    reference(problem, data)      optional: the known optimum (closed form / published), or None
    result(params, data, problem) optional: a JSON-able dict stored in summary.json

How a run proceeds: the config is validated completely before anything is written; the
optimiser is ``optax.inject_hyperparams(optax.<name>)`` so numeric hyperparameters live in
the optimiser state; steps run in jit-compiled chunks of ``log_every`` steps inside
``lax.scan``. A sweep whose points differ only in ``seed`` or numeric optimiser
hyperparameters runs as one ``vmap``-ped program (a single run is the one-point case).
Chunk boundaries are multiples of ``log_every`` counted from step 0, so a run resumed from
a checkpoint (taken every ``checkpoint_every`` steps, written atomically) executes exactly
the same compiled chunks on exactly the same state as an uninterrupted run and ends with
bit-identical parameters. A non-finite objective stops the run, names the step, and keeps
the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from ._config import ConfigError


class NonFiniteObjective(RuntimeError):
    """The objective became NaN or inf; the message names the step."""


# ----------------------------------------------------------------------------- files


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a torn one.

    Write-to-temporary then ``os.replace``: atomic against the process dying at any
    moment (``kill -9``). No fsync: that would cost milliseconds per checkpoint and only
    protects against the whole machine losing power.
    """
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        arr = np.asarray(x)
        if np.iscomplexobj(arr):
            return {"real": _jsonable(arr.real), "imag": _jsonable(arr.imag)}
        return arr.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


# ----------------------------------------------------------------------------- optimizer

_VMAPPABLE_PREFIX = "optimizer."


def is_vmappable(key: str, value) -> bool:
    """Sweep keys that can share one compiled program: the seed and float hyperparameters."""
    if key == "seed":
        return isinstance(value, int) and not isinstance(value, bool)
    return (
        key.startswith(_VMAPPABLE_PREFIX)
        and key.count(".") == 1
        and isinstance(value, float)
        and key != "optimizer.name"
    )


def make_optimizer(opt_cfg: dict):
    import optax

    name = opt_cfg["name"]
    kwargs = {k: v for k, v in opt_cfg.items() if k not in ("name", "schedule")}
    sched = opt_cfg.get("schedule")
    if sched:
        sargs = {k: v for k, v in sched.items() if k != "name"}
        kwargs["learning_rate"] = getattr(optax.schedules, sched["name"])(**sargs)
    # Floats (given or default) become injected (traced, vmappable) hyperparameters;
    # everything else (ints such as memory sizes, bools, None, objects) is static.
    import inspect

    static = []
    for pname, param in inspect.signature(getattr(optax, name)).parameters.items():
        value = kwargs.get(pname, param.default)
        if not (isinstance(value, float) or callable(value)):
            static.append(pname)
    try:
        return optax.inject_hyperparams(getattr(optax, name), static_args=static)(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"optimizer: optax.{name} rejected its arguments {kwargs}: {exc}") from None


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Point:
    """One run of a (possibly vmapped) group: its config and output directory."""

    cfg: dict
    out_dir: str


def _device_string() -> str:
    devs = jax.devices()
    return f"{devs[0].platform}:{devs[0].device_kind} x{len(devs)}"


def _chunk_fn(module, opt, data, length: int):
    """jit(vmap(chunk)): ``length`` optimiser steps in a lax.scan, then objective and metrics."""
    import optax

    maximize = bool(getattr(module, "MAXIMIZE", False))
    objective = module.objective
    user_loss = getattr(module, "loss", None)
    project = getattr(module, "project", None)
    metrics = getattr(module, "metrics", None)

    def loss_and_objective(params, step):
        """(loss, objective); a user loss may return both to share one eigensolve."""
        if user_loss is None:
            value = objective(params, data)
            return (-value if maximize else value), value
        out = user_loss(params, data, step)
        if isinstance(out, tuple):
            return out
        return out, objective(params, data)

    def one_step(carry, _):
        params, opt_state, step = carry
        (value, obj), grads = jax.value_and_grad(loss_and_objective, has_aux=True)(params, step)
        updates, opt_state = opt.update(
            grads, opt_state, params, value=value, grad=grads,
            value_fn=lambda p: loss_and_objective(p, step)[0],
        )
        params = optax.apply_updates(params, updates)
        if project is not None:
            params = project(params, data)
        return (params, opt_state, step + 1), obj

    def chunk(params, opt_state, step):
        (params, opt_state, _), objs = jax.lax.scan(one_step, (params, opt_state, step), None, length=length)
        extra = metrics(params, data) if metrics is not None else {}
        return params, opt_state, objs, objective(params, data), extra

    return jax.jit(jax.vmap(chunk, in_axes=(0, 0, None)))


def _metrics_fn(module, data):
    metrics = getattr(module, "metrics", None)
    if metrics is None:
        return None
    return jax.jit(jax.vmap(lambda p: metrics(p, data)))


def run_group(module, problem, points: list[Point], *, state_dir: str, resume: bool, progress: bool = True) -> list[dict]:
    """Run points that share everything but seed / float hyperparameters, as one vmapped program."""
    import optax  # noqa: F401  (imported here so `eigjax --help` stays fast)

    cfg0 = points[0].cfg
    if cfg0["precision"] == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if cfg0["precision"] == "float64" else jnp.float32
    steps, log_every, ckpt_every = cfg0["steps"], cfg0["log_every"], cfg0["checkpoint_every"]
    maximize = bool(getattr(module, "MAXIMIZE", False))

    t_start = time.perf_counter()
    data = module.setup(problem, dtype)
    opts = [make_optimizer(p.cfg["optimizer"]) for p in points]
    opt = opts[0]

    def init_one(key, i):
        params = module.init_params(data, key)
        return params

    params_list = [init_one(jax.random.PRNGKey(p.cfg["seed"]), i) for i, p in enumerate(points)]
    states = [o.init(pp) for o, pp in zip(opts, params_list)]
    stack = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)  # noqa: E731
    params, opt_state = stack(params_list), stack(states)
    step = 0
    best = [np.inf if not maximize else -np.inf for _ in points]
    metrics_path = [os.path.join(p.out_dir, "metrics.jsonl") for p in points]
    ckpt_path = os.path.join(state_dir, "checkpoint.npz")
    fingerprint = _fingerprint(points)

    if resume and os.path.exists(ckpt_path):
        with np.load(ckpt_path, allow_pickle=False) as z:
            _check_fingerprint(z, state_dir, fingerprint)
            leaves, treedef = jax.tree_util.tree_flatten((params, opt_state))
            loaded = [jnp.asarray(z[f"leaf_{i}"], dtype=leaf.dtype) for i, leaf in enumerate(leaves)]
            params, opt_state = jax.tree_util.tree_unflatten(treedef, loaded)
            step = int(z["step"])
            best = [float(b) for b in z["best"]]
            sizes = [int(s) for s in z["metrics_bytes"]]
        for path, size in zip(metrics_path, sizes):
            with open(path, "r+b") as f:
                f.truncate(size)
    else:
        for p, path in zip(points, metrics_path):
            os.makedirs(p.out_dir, exist_ok=True)
            for stale in ("summary.json", "params.npz"):
                if os.path.exists(os.path.join(p.out_dir, stale)):
                    os.remove(os.path.join(p.out_dir, stale))
            atomic_write_text(path, "")
        if os.path.exists(ckpt_path):
            os.remove(ckpt_path)
    for p in points:
        atomic_write_text(os.path.join(p.out_dir, "config.yaml"), yaml.safe_dump(p.cfg, sort_keys=False))

    metrics = _metrics_fn(module, data)
    objective = jax.jit(jax.vmap(lambda p: module.objective(p, data)))

    mfiles = [open(path, "a") for path in metrics_path]  # closed in the finally below

    def log_rows(at_step, objs_end, extra):
        extra = jax.device_get(extra)
        for i, f in enumerate(mfiles):
            row = {"step": at_step, "objective": float(objs_end[i])}
            row.update({k: _jsonable(np.asarray(v)[i]) for k, v in extra.items()})
            f.write(json.dumps(row) + "\n")
            f.flush()  # whole rows reach the file before any checkpoint records its size

    if step == 0:
        obj0 = np.asarray(objective(params))
        try:
            _check_finite(obj0, points, 0, ckpt_path)
        except NonFiniteObjective:
            for f in mfiles:
                f.close()
            raise
        log_rows(0, obj0, metrics(params) if metrics is not None else {})

    compiled = {}  # chunk length -> AOT-compiled executable (at most two lengths)

    def executable(length):
        if length not in compiled:
            compiled[length] = _chunk_fn(module, opt, data, length).lower(params, opt_state, step).compile()
        return compiled[length]

    def dispatch(params, opt_state, at):
        length = min(log_every, steps - at)
        return length, executable(length)(params, opt_state, at)

    t_compile = time.perf_counter()
    if step < steps:
        executable(min(log_every, steps - step))
    compile_s = time.perf_counter() - t_compile

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=step, desc=module.__name__.rsplit(".", 1)[-1], unit="step", dynamic_ncols=True)
    t_loop = time.perf_counter()
    steps_this_process = 0
    pending = dispatch(params, opt_state, step) if step < steps else None
    try:
        while pending is not None:
            length, (new_params, new_state, objs, obj_end, extra) = pending
            # Dispatch the next chunk before reading this one back (JAX dispatch is
            # asynchronous), so the device works while the host logs. If this chunk turns
            # out non-finite, the next one is simply dropped.
            nxt = step + length
            pending = dispatch(new_params, new_state, nxt) if nxt < steps else None
            objs, obj_end = np.asarray(objs), np.asarray(obj_end)
            _check_finite(objs, points, step, ckpt_path)
            _check_finite(obj_end, points, nxt, ckpt_path)
            params, opt_state, step = new_params, new_state, nxt
            steps_this_process += length
            for i in range(len(points)):
                seen = np.concatenate([objs[i], obj_end[i : i + 1]])
                best[i] = float(max(best[i], seen.max()) if maximize else min(best[i], seen.min()))
            log_rows(step, obj_end, extra)
            if bar is not None:
                bar.update(length)
                bar.set_postfix(objective=f"{float(obj_end[0]):.6g}")
            if step % ckpt_every == 0 or step == steps:
                _save_checkpoint(ckpt_path, params, opt_state, step, best, metrics_path, fingerprint)
    finally:
        for f in mfiles:
            f.close()
        if bar is not None:
            bar.close()
    loop_s = time.perf_counter() - t_loop
    wall = time.perf_counter() - t_start

    summaries = []
    final_obj = np.asarray(objective(params))
    reference = getattr(module, "reference", None)
    ref = reference(problem, data) if reference is not None else None
    ref = None if ref is None else float(ref)
    result_fn = getattr(module, "result", None)
    for i, p in enumerate(points):
        p_i = jax.tree_util.tree_map(lambda x: x[i], params)
        obj = float(final_obj[i])
        gap = None if ref is None else (ref - obj if maximize else obj - ref)
        summary = {
            "experiment": p.cfg["experiment"],
            "objective": obj,
            "best_objective": best[i],
            "reference": ref,
            "gap": gap,
            "maximize": maximize,
            "steps": steps,
            "seed": p.cfg["seed"],
            "precision": p.cfg["precision"],
            "wall_time_s": wall,
            "compile_time_s": compile_s,
            "steps_per_s": (steps_this_process / loop_s) if steps_this_process and loop_s > 0 else None,
            "device": _device_string(),
            "result": _jsonable(result_fn(p_i, data, problem)) if result_fn is not None else {},
        }
        leaves = {f"{'/'.join(str(k) for k in path)}": np.asarray(v) for path, v in _flatten_with_names(p_i)}
        atomic_write_bytes(os.path.join(p.out_dir, "params.npz"), _npz_bytes(leaves))
        _plots(p.out_dir, metrics_path[i], ref)
        atomic_write_text(os.path.join(p.out_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
        summaries.append(summary)
    return summaries


def _flatten_with_names(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = []
    for path, leaf in flat:
        name = "".join(
            str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) + "/" for k in path
        ).rstrip("/")
        out.append(((name or "params",), leaf))
    return out


def _check_finite(values, points, step, ckpt_path):
    values = np.asarray(values)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        at = step + (int(np.argwhere(bad[i])[0][0]) if values.ndim > 1 else 0)
        if os.path.exists(ckpt_path):
            kept = "the last good checkpoint is kept: fix the config and rerun, or --resume"
        else:
            kept = "no checkpoint had been written yet: fix the config and rerun"
        others = "; the other points of this vmapped sweep group stopped with it" if len(points) > 1 else ""
        raise NonFiniteObjective(
            f"non-finite objective ({values[i].ravel()[0] if values.ndim == 1 else values[i][bad[i]][0]}) at step {at}"
            f" in {points[i].out_dir}; {kept}{others}"
        )


def _save_checkpoint(path, params, opt_state, step, best, metrics_path, fingerprint):
    leaves = jax.tree_util.tree_leaves((params, opt_state))
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update(
        step=np.asarray(step),
        best=np.asarray(best, dtype=np.float64),
        metrics_bytes=np.asarray([os.path.getsize(p) for p in metrics_path]),
        fingerprint=np.asarray(fingerprint),
    )
    atomic_write_bytes(path, _npz_bytes(arrays))


def _plots(out_dir: str, metrics_path: str, reference) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [r["objective"] for r in rows], label="objective")
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label="reference")
    ax.set_xlabel("step")
    ax.set_ylabel("objective")
    ax.legend()
    fig.tight_layout()
    _save_fig(fig, os.path.join(out_dir, "objective.png"))
    plt.close(fig)
    if "eigenvalues" in rows[0]:
        ev = np.asarray([np.asarray(r["eigenvalues"], dtype=float).ravel() for r in rows])
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, ev, lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("eigenvalues")
        fig.tight_layout()
        _save_fig(fig, os.path.join(out_dir, "eigenvalues.png"))
        plt.close(fig)


def _save_fig(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- sweeps


def _fingerprint(points) -> str:
    """What a checkpoint was written for: the resolved configs of its points."""
    return json.dumps([p.cfg for p in points], sort_keys=True)


def _check_fingerprint(z, state_dir: str, fingerprint: str) -> None:
    """Raise ConfigError if the open checkpoint ``z`` was written for other configs."""
    if str(z["fingerprint"]) != fingerprint:
        raise ConfigError(
            f"--resume: the checkpoint in {state_dir} was written for a different config; "
            "rerun without --resume or use another --out"
        )


def check_resumable(state_dir: str, points) -> None:
    """Raise ConfigError if ``state_dir`` holds a checkpoint written for other configs
    (a sweep checks every group this way before any of them runs)."""
    ckpt_path = os.path.join(state_dir, "checkpoint.npz")
    if not os.path.exists(ckpt_path):
        return
    with np.load(ckpt_path, allow_pickle=False) as z:
        _check_fingerprint(z, state_dir, _fingerprint(points))


def run(cfg: dict, module, problem, out_dir: str, *, resume: bool = False, sweep: list[dict] | None = None,
        progress: bool = True) -> list[dict]:
    """Run one config, or a grid of overrides of it (``sweep``: a list of {dotted key: value})."""
    from ._config import resolve, set_dotted

    if not sweep:
        return run_group(module, problem, [Point(cfg, out_dir)], state_dir=out_dir, resume=resume, progress=progress)
    # Resolve every point first, so a bad value fails before anything is written.
    resolved = []
    for overrides in sweep:
        raw = json.loads(json.dumps(cfg))
        for key, value in overrides.items():
            set_dotted(raw, key, value)
        resolved.append((overrides, *resolve(raw)))
    groups: dict[str, list[int]] = {}
    for i, (overrides, *_rest) in enumerate(resolved):
        static = {k: v for k, v in overrides.items() if not is_vmappable(k, v)}
        groups.setdefault(json.dumps(static, sort_keys=True), []).append(i)
    names = []
    for i, (overrides, *_rest) in enumerate(resolved):
        label = ",".join(f"{k}={v}" for k, v in overrides.items()).replace("/", "_")
        names.append(f"point_{i:03d}_{label}")
    plan = []
    for g, idx in enumerate(groups.values()):
        _, gcfg, gmodule, gproblem = resolved[idx[0]]
        points = [Point(resolved[i][1], os.path.join(out_dir, names[i])) for i in idx]
        plan.append((idx, gmodule, gproblem, points, os.path.join(out_dir, f"group_{g:03d}")))
    if resume:  # refuse before any group runs or any directory is made
        for *_, points, state_dir in plan:
            check_resumable(state_dir, points)
    summaries: list[dict | None] = [None] * len(resolved)
    for idx, gmodule, gproblem, points, state_dir in plan:
        os.makedirs(state_dir, exist_ok=True)
        for i, s in zip(idx, run_group(gmodule, gproblem, points, state_dir=state_dir, resume=resume, progress=progress)):
            summaries[i] = s
    lines = ["| point | " + " | ".join(sweep[0]) + " | objective | best | gap |", "|---" * (len(sweep[0]) + 4) + "|"]
    for name, overrides, s in zip(names, sweep, summaries):
        gap = "" if s["gap"] is None else f"{s['gap']:.3e}"
        lines.append(
            f"| {name} | " + " | ".join(str(v) for v in overrides.values()) + f" | {s['objective']:.8g} | {s['best_objective']:.8g} | {gap} |"
        )
    atomic_write_text(os.path.join(out_dir, "sweep_summary.md"), "\n".join(lines) + "\n")
    atomic_write_text(
        os.path.join(out_dir, "sweep_summary.json"),
        json.dumps([{"point": n, "overrides": o, **s} for n, o, s in zip(names, sweep, summaries)], indent=2) + "\n",
    )
    return summaries  # type: ignore[return-value]
