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
                                  steps; a vector under "eigenvalues" is plotted (a complex
                                  one as real parts, imaginary parts and the complex plane)
    reference(problem, data)      optional: the known optimum (closed form / published), or None
    result(params, data, problem) optional: a JSON-able dict stored in summary.json

The module is imported by ``eigjax.app._config.import_experiment`` (importing runs its code: a
config is code) and checked against this interface right after the import (names, that
``Problem`` is a dataclass, that each function takes these arguments), before anything
is written.

How a run proceeds: the config is validated completely before anything is written; the
optimiser is ``optax.inject_hyperparams(optax.<name>)`` so numeric hyperparameters live in
the optimiser state; steps run in jit-compiled chunks of ``log_every`` steps inside
``lax.scan``. A sweep whose points differ only in ``seed`` or numeric optimiser
hyperparameters runs as one ``vmap``-ped program (a single run is the one-point case).
Chunk boundaries are multiples of ``log_every`` counted from step 0, so a run resumed from
a checkpoint (taken every ``checkpoint_every`` steps, written atomically) executes exactly
the same compiled chunks on exactly the same state as an uninterrupted run and ends with
bit-identical parameters. A non-finite objective stops the run, names the step, and keeps
the last good checkpoint. Every finished run stops at its step budget (there is no
convergence test); ``summary.json`` says so (``stopped_by``, ``note``,
``last_interval_change``) and records what this process ran (``this_process``: a resumed
run's times and steps/s cover the resumed steps only).

Files: every file is written whole (a temporary in the same directory, fsynced, renamed
over the target, the directory fsynced), except ``metrics.jsonl``, appended row by row and
fsynced before each checkpoint records its size; it is opened with ``O_NOFOLLOW``, so a
symbolic link planted at its path is refused (:class:`StateError`), never written through.
A damaged or missing state file on ``--resume`` is a :class:`StateError` naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from ._config import ConfigError, short_repr, short_text


class NonFiniteObjective(RuntimeError):
    """The objective became NaN or inf; the message names the step."""


class StateError(RuntimeError):
    """A file in the output directory cannot be used (damaged, missing, or a link eigjax
    did not create): the message names the file. The CLI exits with code 3."""


# ----------------------------------------------------------------------------- files


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a torn one.

    A temporary file in the same directory (created exclusively, so never through a
    planted link), written, flushed and fsynced, then ``os.replace``-d over ``path`` (which
    replaces a link at ``path`` rather than writing through it), then the directory is
    fsynced so the rename itself survives a crash of the machine, not only of the process.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; results are ordinary files (0666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _open_own_file(path: str, mode: str):
    """Open a file eigjax wrote itself for appending (``"a"``) or resizing (``"r+b"``),
    never through a symbolic link (``O_NOFOLLOW``): a link at that path was not made by
    eigjax, and writing through it would change a file outside the output directory."""
    flags = {"a": os.O_WRONLY | os.O_APPEND, "r+b": os.O_RDWR}[mode]
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise StateError(f"{path} is missing; rerun without --resume to start over") from None
    except OSError as exc:
        if os.path.islink(path):
            raise StateError(
                f"{path} is a symbolic link (to {os.readlink(path)}); eigjax writes only files it created "
                "and never through a link: remove the link or use another --out"
            ) from None
        raise StateError(f"{path} cannot be opened for writing: {exc}") from None
    return os.fdopen(fd, "a" if mode == "a" else "r+b")


def _ensure_own_dir(path: str) -> None:
    """Create ``path`` as a directory, refusing a symbolic link in its place (a sweep's
    point and group directories live inside ``--out``; a link would redirect them)."""
    if os.path.islink(path):
        raise StateError(
            f"{path} is a symbolic link (to {os.readlink(path)}); eigjax writes only into directories it "
            "created: remove the link or use another --out"
        )
    os.makedirs(path, exist_ok=True)


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


def optax_promotion():
    """Standard dtype promotion around optax's own code (construction, init, update).

    optax is not clean under ``jax.numpy_dtype_promotion("strict")`` (its schedules
    and updates mix float32 constants with float64 values), while eigjax's library
    functions and its experiments are. The runner is an application: it lets optax
    promote as it was written to, and keeps the user's setting everywhere else.
    """
    return jax.numpy_dtype_promotion("standard")


def make_optimizer(opt_cfg: dict):
    with optax_promotion():
        return _make_optimizer(opt_cfg)


def _make_optimizer(opt_cfg: dict):
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
        raise ConfigError(
            f"optimizer: optax.{name} rejected its arguments {short_repr(kwargs)}: {short_text(exc, 300)}"
        ) from None


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Point:
    """One run of a (possibly vmapped) group: its config and output directory."""

    cfg: dict
    out_dir: str
    name: str | None = None  # the sweep point's name (None for a single run)


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
        with optax_promotion():  # optax's code only; the losses above keep the user's setting
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


def run_group(module, problem, points: list[Point], *, state_dir: str, resume: bool, progress: bool = True,
              label: str | None = None) -> list[dict]:
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
    with optax_promotion():
        states = [o.init(pp) for o, pp in zip(opts, params_list)]
    stack = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)  # noqa: E731
    params, opt_state = stack(params_list), stack(states)
    step = 0
    best = [np.inf if not maximize else -np.inf for _ in points]
    metrics_path = [os.path.join(p.out_dir, "metrics.jsonl") for p in points]
    ckpt_path = os.path.join(state_dir, "checkpoint.npz")
    fingerprint = _fingerprint(points)

    resumed_from = None
    for p in points:
        if p.name:  # a sweep point's directory, inside --out
            _ensure_own_dir(p.out_dir)
        else:  # --out itself: the user's (it may be a link they made)
            os.makedirs(p.out_dir, exist_ok=True)
        _remove_temporaries(p.out_dir)
    _remove_temporaries(state_dir)
    if resume and os.path.lexists(ckpt_path):
        params, opt_state, step, best, sizes = _load_checkpoint(ckpt_path, state_dir, fingerprint, (params, opt_state), len(points))
        for path, size in zip(metrics_path, sizes):
            with _open_own_file(path, "r+b") as f:
                have = os.fstat(f.fileno()).st_size
                if have < size:
                    raise StateError(
                        f"{path} is damaged: {have} bytes, but the checkpoint {ckpt_path} was written when it held "
                        f"{size}; rerun without --resume to start over"
                    )
                f.truncate(size)
        resumed_from = step
    else:
        if resume:
            print(f"eigjax run: --resume: no checkpoint in {state_dir}, nothing to resume; starting at step 0",
                  file=sys.stderr)
        for p, path in zip(points, metrics_path):
            for stale in ("summary.json", "params.npz"):
                if os.path.lexists(os.path.join(p.out_dir, stale)):
                    os.remove(os.path.join(p.out_dir, stale))
            atomic_write_text(path, "")
        if os.path.lexists(ckpt_path):
            os.remove(ckpt_path)
    if resumed_from is not None and resumed_from >= steps:
        print(f"eigjax run: --resume: the checkpoint in {state_dir} is at the last step ({steps}); "
              "nothing left to run, rewriting the summary", file=sys.stderr)
    for p in points:
        atomic_write_text(os.path.join(p.out_dir, "config.yaml"), yaml.safe_dump(p.cfg, sort_keys=False))

    metrics = _metrics_fn(module, data)
    objective = jax.jit(jax.vmap(lambda p: module.objective(p, data)))

    mfiles = [_open_own_file(path, "a") for path in metrics_path]  # closed in the finally below

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

        desc = module.__name__.rsplit(".", 1)[-1]
        if len(points) > 1 or points[0].name:
            desc = f"{os.path.basename(state_dir)} ({len(points)} point{'s' if len(points) > 1 else ''})"
        if resumed_from:  # tqdm's rate and ETA count the steps of this process only
            desc += f", resumed at step {resumed_from}"
        bar = tqdm(total=steps, initial=step, desc=desc, unit="step", dynamic_ncols=True)
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
                for f in mfiles:  # the rows the checkpoint counts are on disk before it is
                    os.fsync(f.fileno())
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
    first_step = resumed_from or 0
    for i, p in enumerate(points):
        p_i = jax.tree_util.tree_map(lambda x: x[i], params)
        obj = float(final_obj[i])
        gap = None if ref is None else (ref - obj if maximize else obj - ref)
        rows = _read_rows(metrics_path[i])
        change = None
        if len(rows) >= 2 and rows[-1]["step"] == steps:
            change = {"steps": rows[-1]["step"] - rows[-2]["step"], "objective": rows[-1]["objective"] - rows[-2]["objective"]}
        summary = {
            "experiment": p.cfg["experiment"],
            **({"point": p.name} if p.name else {}),
            "objective": obj,
            "best_objective": best[i],
            "reference": ref,
            "gap": gap,
            "maximize": maximize,
            "steps": steps,
            # The runner has no convergence test: every finished run stops at its step budget.
            "stopped_by": "max_steps",
            "note": f"the run stopped after its step budget (steps: {steps}), not on a convergence test; "
                    "gap is the distance to the reference at that point",
            "last_interval_change": change,
            "seed": p.cfg["seed"],
            "precision": p.cfg["precision"],
            "wall_time_s": wall,
            "compile_time_s": compile_s,
            "steps_per_s": (steps_this_process / loop_s) if steps_this_process and loop_s > 0 else None,
            "this_process": {
                "first_step": first_step,
                "steps": steps_this_process,
                "note": "wall_time_s, compile_time_s and steps_per_s cover this process only"
                        + (f" (resumed at step {first_step})" if resumed_from is not None else ""),
            },
            "device": _device_string(),
            "result": _jsonable(result_fn(p_i, data, problem)) if result_fn is not None else {},
        }
        leaves = {f"{'/'.join(str(k) for k in path)}": np.asarray(v) for path, v in _flatten_with_names(p_i)}
        atomic_write_bytes(os.path.join(p.out_dir, "params.npz"), _npz_bytes(leaves))
        title = f"experiment {p.cfg['experiment']}" + (f",  config {label}" if label else "") + (f",  {p.name}" if p.name else "")
        _plots(p.out_dir, rows, ref, title=title, maximize=maximize)
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


_OUR_FILES = ("checkpoint.npz", "metrics.jsonl", "summary.json", "params.npz", "config.yaml",
              "objective.png", "eigenvalues.png", "sweep_summary.md", "sweep_summary.json")


def _remove_temporaries(directory: str) -> None:
    """Remove the temporary files of atomic writes that a killed run left behind."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.endswith(".tmp") and any(name.startswith(f".{ours}.") for ours in _OUR_FILES):
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.remove(path)


def _load_checkpoint(path, state_dir, fingerprint, template, npoints):
    """(params, opt_state, step, best, metrics sizes) from ``path``; StateError if damaged,
    ConfigError if it was written for another config."""
    def damaged(why):
        return StateError(f"checkpoint {path} is damaged ({why}); rerun without --resume to start over")

    try:
        with np.load(path, allow_pickle=False) as z:
            _check_fingerprint(z, state_dir, fingerprint)
            leaves, treedef = jax.tree_util.tree_flatten(template)
            loaded = []
            for i, leaf in enumerate(leaves):
                arr = z[f"leaf_{i}"]
                if arr.shape != leaf.shape:
                    raise damaged(f"leaf_{i} has shape {arr.shape}, expected {leaf.shape}")
                loaded.append(jnp.asarray(arr, dtype=leaf.dtype))
            if f"leaf_{len(leaves)}" in z.files:
                raise damaged(f"it holds more than the {len(leaves)} arrays of this config's state")
            step = int(z["step"])
            best = [float(b) for b in z["best"]]
            sizes = [int(s) for s in z["metrics_bytes"]]
    except (StateError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy and KeyError all signal a damaged file
        raise damaged(f"{type(exc).__name__}: {short_text(exc, 200)}") from None
    if len(best) != npoints or len(sizes) != npoints or step < 0:
        raise damaged(f"step {step}, {len(best)} best values and {len(sizes)} metrics sizes for {npoints} points")
    params, opt_state = jax.tree_util.tree_unflatten(treedef, loaded)
    return params, opt_state, step, best, sizes


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


def _read_rows(metrics_path: str) -> list[dict]:
    with open(metrics_path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _eigenvalue_rows(rows: list[dict]) -> np.ndarray:
    """The logged "eigenvalues" as a (rows, k) array, complex when they were logged as
    {"real": ..., "imag": ...} (eig-based experiments)."""
    def one(v):
        if isinstance(v, dict):
            return np.asarray(v["real"], dtype=float).ravel() + 1j * np.asarray(v["imag"], dtype=float).ravel()
        return np.asarray(v, dtype=float).ravel()

    return np.asarray([one(r["eigenvalues"]) for r in rows])


def _plots(out_dir: str, rows: list[dict], reference, *, title: str, maximize: bool = False) -> None:
    """objective.png (objective, reference line, gap on a log axis) and eigenvalues.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    steps = np.asarray([r["step"] for r in rows])
    obj = np.asarray([np.nan if r["objective"] is None else r["objective"] for r in rows], dtype=float)
    fig = _objective_figure(plt, steps, obj, reference, title, maximize)
    _save_fig(fig, os.path.join(out_dir, "objective.png"), title)
    plt.close(fig)
    if "eigenvalues" in rows[0]:
        fig = _eigenvalue_figure(plt, steps, _eigenvalue_rows(rows), title)
        _save_fig(fig, os.path.join(out_dir, "eigenvalues.png"), title)
        plt.close(fig)


def _objective_figure(plt, steps, obj, reference, title, maximize):
    if reference is None:
        fig, ax = plt.subplots(figsize=(7, 4))
        axes = [ax]
    else:
        fig, axes = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    ax = axes[0]
    ax.plot(steps, obj, marker=".", label="objective" + (" (maximised)" if maximize else " (minimised)"))
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"reference {reference:.8g}")
    ax.set_ylabel("objective")
    ax.set_title("objective per logged step")
    ax.legend(loc="best")
    if reference is not None:
        gap = (reference - obj) if maximize else (obj - reference)
        ax = axes[1]
        pos, neg = gap > 0, gap < 0
        if pos.any():
            ax.semilogy(steps[pos], gap[pos], marker=".", label="gap to the reference")
        if neg.any():
            ax.semilogy(steps[neg], -gap[neg], marker="x", ls="none", color="C3",
                        label="beyond the reference (|gap|)")
        if not (pos.any() or neg.any()):  # every logged objective equals the reference
            ax.semilogy(steps, np.ones_like(steps, dtype=float), alpha=0)
            ax.text(0.5, 0.5, "objective equals the reference", transform=ax.transAxes, ha="center")
        ax.set_yscale("log")
        ax.set_ylabel("gap (log scale)")
        ax.set_title("gap = " + ("reference - objective" if maximize else "objective - reference"))
        ax.legend(loc="best")
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _eigenvalue_figure(plt, steps, ev, title):
    k = ev.shape[1]
    labels = [f"λ{i + 1}" for i in range(k)]
    legend = dict(loc="best", fontsize="small", ncol=max(1, (k + 7) // 8)) if k <= 24 else None
    if np.iscomplexobj(ev):  # eig-based experiments: real and imaginary parts, and the complex plane
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for i in range(k):
            axes[0].plot(steps, ev[:, i].real, lw=1, label=labels[i])
            axes[1].plot(steps, ev[:, i].imag, lw=1, label=labels[i])
            line, = axes[2].plot(ev[:, i].real, ev[:, i].imag, lw=1, marker=".", ms=3, label=labels[i])
            axes[2].plot(ev[-1, i].real, ev[-1, i].imag, "o", color=line.get_color(), ms=6)
        axes[0].set(xlabel="step", ylabel="Re λ", title="real parts")
        axes[1].set(xlabel="step", ylabel="Im λ", title="imaginary parts")
        axes[2].set(xlabel="Re λ", ylabel="Im λ", title="complex plane (dot: last step)")
        axes[2].axvline(0, color="k", lw=0.5)
        axes[2].axhline(0, color="k", lw=0.5)
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
        axes = [ax]
        for i in range(k):
            ax.plot(steps, ev[:, i], lw=1, label=labels[i])
        ax.set(xlabel="step", ylabel="eigenvalue", title=f"logged eigenvalues ({k})")
    if legend is not None:
        for ax in axes:
            ax.legend(**legend)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _save_fig(fig, path, title=None):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Title": title} if title else None)
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
    """Raise ConfigError if ``state_dir`` holds a checkpoint written for other configs, or
    StateError if it is damaged (a sweep checks every group this way before any runs)."""
    ckpt_path = os.path.join(state_dir, "checkpoint.npz")
    if not os.path.lexists(ckpt_path):
        return
    try:
        with np.load(ckpt_path, allow_pickle=False) as z:
            _check_fingerprint(z, state_dir, _fingerprint(points))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file
        raise StateError(
            f"checkpoint {ckpt_path} is damaged ({type(exc).__name__}: {short_text(exc, 200)}); "
            "rerun without --resume to start over"
        ) from None


def run(cfg: dict, module, problem, out_dir: str, *, resume: bool = False, sweep: list[dict] | None = None,
        progress: bool = True, label: str | None = None) -> list[dict]:
    """Run one config, or a grid of overrides of it (``sweep``: a list of {dotted key: value}).

    ``label`` (the config file's name, say) goes into the plots' titles."""
    from ._config import resolve, set_dotted

    if not sweep:
        return run_group(module, problem, [Point(cfg, out_dir)], state_dir=out_dir, resume=resume, progress=progress,
                         label=label)
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
        point = ",".join(f"{k}={v}" for k, v in overrides.items()).replace("/", "_")
        names.append(f"point_{i:03d}_{point}")
    plan = []
    for g, idx in enumerate(groups.values()):
        _, gcfg, gmodule, gproblem = resolved[idx[0]]
        points = [Point(resolved[i][1], os.path.join(out_dir, names[i]), names[i]) for i in idx]
        plan.append((idx, gmodule, gproblem, points, os.path.join(out_dir, f"group_{g:03d}")))
    if resume:  # refuse before any group runs or any directory is made
        for *_, points, state_dir in plan:
            check_resumable(state_dir, points)
    summaries: list[dict | None] = [None] * len(resolved)
    os.makedirs(out_dir, exist_ok=True)  # --out itself is the user's (it may be a link they made)
    for idx, gmodule, gproblem, points, state_dir in plan:
        _ensure_own_dir(state_dir)
        group = run_group(gmodule, gproblem, points, state_dir=state_dir, resume=resume, progress=progress, label=label)
        for i, s in zip(idx, group):
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
