"""The experiment runner behind ``eigjax run``.

An experiment is a module implementing :class:`eigjax.app._experiment.Experiment` (its
docstring lists the interface; ``experiments/`` holds examples). The config names it by
import path; ``eigjax.app._config`` imports it and checks it against the interface.

How a run proceeds: the config is validated completely before anything is written, and so
are the experiment's outputs (``objective`` and ``loss`` must return real scalars, checked
with ``jax.eval_shape`` on the initial parameters of every group before the output
directory is made); the optimiser is ``optax.inject_hyperparams(optax.<name>)`` so numeric
hyperparameters live in the optimiser state; steps run in jit-compiled chunks of
``log_every`` steps inside ``lax.scan``. A sweep whose points differ only in ``seed`` or
numeric optimiser hyperparameters runs as one ``vmap``-ped program (a single run is the
one-point case); a sweep that uses ``float64`` anywhere runs all its groups with x64
enabled. Chunk boundaries are multiples of ``log_every`` counted from step 0, so a run
resumed from a checkpoint (taken every ``checkpoint_every`` steps, written atomically)
executes exactly the same compiled chunks on exactly the same state as an uninterrupted
run and ends with bit-identical parameters. A non-finite objective stops the run, names
the step, and keeps the last good checkpoint. Every finished run stops at its step budget
(there is no convergence test); ``summary.json`` says so (``stopped_by``, ``note``,
``last_interval_change``) and records what this process ran (``this_process``: its index, and a
resumed run's times and steps/s cover the resumed steps only).

Several processes (``jax.distributed``, :mod:`eigjax.app._distributed`: set
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` > 1 and ``JAX_PROCESS_ID`` for each, with
``--out`` on a filesystem all of them see): process ``k`` of ``P`` runs a sweep's vmapped
groups ``k, k + P, ...`` (a single run: process 0), each exactly as one process would, so
the results are the same bits. Every process checks every group before anything is
written; when all have finished, each reads the others' summaries and process 0 writes
the sweep summary. When a process stops (a non-finite objective, a damaged file), the
others finish their own groups and stop too, each with one message (exit 3). A group's state lives in its own directory, so
``--resume`` continues with any process count, one included
(``tests/app/test_distributed_sweep.py``).

The steps of a group (:func:`run_group`): :func:`prepare_group` (data, initial parameters
and optimiser state, output checks; writes nothing), :func:`_open_outputs` (directories,
then restore the checkpoint or start fresh), :class:`_Chunks` (compile), :func:`_run_chunks`
(the loop: log, checkpoint), :func:`_finish` (summaries, parameters, plots).

Files, in ``--out`` (a sweep: one directory per point, ``point_<i>_<overrides>``, and
one per vmapped group, ``group_<g>``, holding its checkpoint; ``sweep_summary.md`` and
``.json`` at the top): ``config.yaml`` (the resolved config), ``metrics.jsonl`` (a row
every ``log_every`` steps), ``checkpoint.npz``, ``summary.json``, ``params.npz``,
``objective.png`` and ``eigenvalues.png`` (:mod:`eigjax.app._plots`). Every file is
written whole (:func:`eigjax.app._files.atomic_write_bytes`: a temporary in the same
directory, fsynced, renamed over the target, the directory fsynced), except
``metrics.jsonl``, appended row by row and fsynced before each checkpoint records its
size; it is opened with ``O_NOFOLLOW``, so a symbolic link planted at its path is refused
(:class:`StateError`), never written through. A damaged or missing state file on
``--resume`` is a :class:`StateError` naming the file (:mod:`eigjax.app._checkpoint`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from . import _plots
from ._checkpoint import (
    check_resumable,
    ensure_own_dir,
    fingerprint,
    load_checkpoint,
    open_own_file,
    remove_temporaries,
    truncate_metrics,
)
from ._checkpoint import npz_bytes as _npz_bytes
from ._checkpoint import save_checkpoint as _save_checkpoint
from ._config import resolve, set_dotted
from ._distributed import failed_processes, maybe_initialize
from ._errors import ConfigError, NonFiniteObjective, StateError  # noqa: F401 (re-exported: the CLI, tests)
from ._experiment import check_outputs
from ._files import atomic_write_bytes, atomic_write_text
from ._optim import is_vmappable, make_optimizer, optax_promotion


@dataclasses.dataclass
class Point:
    """One run of a (possibly vmapped) group: its config and output directory."""

    cfg: dict
    out_dir: str
    name: str | None = None  # the sweep point's name (None for a single run)


@dataclasses.dataclass
class Group:
    """Points that share everything but seed / float hyperparameters, ready to run as one
    vmapped program: the problem's data and every point's initial state, stacked."""

    module: types.ModuleType  # implements eigjax.app._experiment.Experiment (checked on import)
    problem: object
    points: list[Point]
    state_dir: str  # where the checkpoint lives (--out, or the sweep's group directory)
    data: object
    opt: object  # point 0's optimiser: the points differ only in injected hyperparameters
    params: object  # initial parameters, stacked over the points
    opt_state: object
    setup_s: float  # seconds prepare_group took (counted in wall_time_s)
    label: str | None = None

    @property
    def cfg(self) -> dict:
        return self.points[0].cfg

    @property
    def maximize(self) -> bool:
        return bool(getattr(self.module, "MAXIMIZE", False))

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.state_dir, "checkpoint.npz")

    @property
    def metrics_paths(self) -> list[str]:
        return [os.path.join(p.out_dir, "metrics.jsonl") for p in self.points]


@dataclasses.dataclass
class _State:
    """Where a group is: the stacked parameters and optimiser state after ``step`` steps,
    each point's best objective so far, and the step a resumed run started from."""

    params: object
    opt_state: object
    step: int
    best: list[float]
    resumed_from: int | None = None


# ----------------------------------------------------------------------------- a group


def run_group(
    module,
    problem,
    points: list[Point],
    *,
    state_dir: str,
    resume: bool,
    progress: bool = True,
    label: str | None = None,
) -> list[dict]:
    """Run points that share everything but seed / float hyperparameters, as one vmapped program."""
    group = prepare_group(module, problem, points, state_dir=state_dir, label=label)
    return execute_group(group, resume=resume, progress=progress)


def prepare_group(module, problem, points: list[Point], *, state_dir: str, label: str | None = None) -> Group:
    """Set up the problem's data, every point's initial parameters and optimiser state, and
    check the experiment's outputs on them (:func:`eigjax.app._experiment.check_outputs`).
    Writes nothing; raises ConfigError for outputs the runner cannot optimise."""
    t_start = time.perf_counter()
    cfg0 = points[0].cfg
    if cfg0["precision"] == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if cfg0["precision"] == "float64" else jnp.float32
    data = module.setup(problem, dtype)
    opts = [make_optimizer(p.cfg["optimizer"]) for p in points]
    params_list = [module.init_params(data, jax.random.PRNGKey(p.cfg["seed"])) for p in points]
    check_outputs(module, data, params_list[0])
    with optax_promotion():
        states = [o.init(pp) for o, pp in zip(opts, params_list)]
    stack = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)  # noqa: E731
    return Group(
        module,
        problem,
        points,
        state_dir,
        data,
        opts[0],
        stack(params_list),
        stack(states),
        time.perf_counter() - t_start,
        label,
    )


def execute_group(group: Group, *, resume: bool, progress: bool = True) -> list[dict]:
    """Run a prepared group to its step budget (from its checkpoint with ``resume``) and
    write its summaries, parameters and plots; returns each point's summary."""
    t_start = time.perf_counter() - group.setup_s
    state = _open_outputs(group, resume)
    with _MetricsLog(group) as log:
        if state.step == 0:
            log.initial(state.params)
        t_compile = time.perf_counter()
        chunks = _Chunks(group, state)
        compile_s = time.perf_counter() - t_compile
        steps_run, loop_s = _run_chunks(group, state, chunks, log, progress)
    timing = {"wall": time.perf_counter() - t_start, "compile_s": compile_s, "loop_s": loop_s, "steps_run": steps_run}
    return _finish(group, state, timing)


def _open_outputs(group: Group, resume: bool) -> _State:
    """Make the output directories, remove temporaries a killed run left, then restore the
    checkpoint (``resume``) or start fresh; write each point's ``config.yaml``."""
    if group.points[0].name:  # a sweep's group directory, inside --out
        ensure_own_dir(group.state_dir)
    for p in group.points:
        if p.name:  # a sweep point's directory, inside --out
            ensure_own_dir(p.out_dir)
        else:  # --out itself: the user's (it may be a link they made)
            os.makedirs(p.out_dir, exist_ok=True)
        remove_temporaries(p.out_dir)
    remove_temporaries(group.state_dir)
    if resume and os.path.lexists(group.ckpt_path):
        state = _restore(group)
    else:
        state = _start_fresh(group, resume)
    steps = group.cfg["steps"]
    if state.resumed_from is not None and state.resumed_from >= steps:
        print(
            f"eigjax run: --resume: the checkpoint in {group.state_dir} is at the last step ({steps}); "
            "nothing left to run, rewriting the summary",
            file=sys.stderr,
        )
    for p in group.points:
        atomic_write_text(os.path.join(p.out_dir, "config.yaml"), yaml.safe_dump(p.cfg, sort_keys=False))
    return state


def _restore(group: Group) -> _State:
    """The state in the group's checkpoint; each ``metrics.jsonl`` cut back to its rows."""
    params, opt_state, step, best, sizes = load_checkpoint(
        group.ckpt_path, group.state_dir, fingerprint(group.points), (group.params, group.opt_state), len(group.points)
    )
    truncate_metrics(group.metrics_paths, sizes, group.ckpt_path)
    return _State(params, opt_state, step, best, resumed_from=step)


def _start_fresh(group: Group, resume: bool) -> _State:
    """Step 0: empty ``metrics.jsonl`` files; a previous run's summary, parameters and
    checkpoint removed (they describe another run)."""
    if resume:
        print(
            f"eigjax run: --resume: no checkpoint in {group.state_dir}, nothing to resume; starting at step 0",
            file=sys.stderr,
        )
    for p, path in zip(group.points, group.metrics_paths):
        for stale in ("summary.json", "params.npz"):
            if os.path.lexists(os.path.join(p.out_dir, stale)):
                os.remove(os.path.join(p.out_dir, stale))
        atomic_write_text(path, "")
    if os.path.lexists(group.ckpt_path):
        os.remove(group.ckpt_path)
    worst = -np.inf if group.maximize else np.inf
    return _State(group.params, group.opt_state, 0, [worst for _ in group.points])


class _MetricsLog:
    """The group's ``metrics.jsonl`` files, open for appending (never through a link):
    one row per point every ``log_every`` steps, flushed whole."""

    def __init__(self, group: Group):
        self.group = group
        self.files = []
        try:
            for path in group.metrics_paths:
                self.files.append(open_own_file(path, "a"))
        except BaseException:
            self.close()
            raise
        metrics = getattr(group.module, "metrics", None)
        data = group.data
        self.metrics = None if metrics is None else jax.jit(jax.vmap(lambda p: metrics(p, data)))
        self.objective = jax.jit(jax.vmap(lambda p: group.module.objective(p, data)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for f in self.files:
            f.close()

    def initial(self, params) -> None:
        """Row 0: the objective (checked finite) and metrics of the initial parameters."""
        obj0 = np.asarray(self.objective(params))
        _check_finite(obj0, self.group.points, 0, self.group.ckpt_path)
        self.write(0, obj0, self.metrics(params) if self.metrics is not None else {})

    def write(self, at_step: int, objs_end, extra) -> None:
        extra = jax.device_get(extra)
        for i, f in enumerate(self.files):
            row = {"step": at_step, "objective": float(objs_end[i])}
            row.update({k: _jsonable(np.asarray(v)[i]) for k, v in extra.items()})
            f.write(json.dumps(row) + "\n")
            f.flush()  # whole rows reach the file before any checkpoint records its size

    def sync(self) -> None:
        """fsync every file: the rows a checkpoint counts are on disk before it is."""
        for f in self.files:
            os.fsync(f.fileno())


class _Chunks:
    """The group's chunk programs, compiled ahead of time, by length (at most two: ``log_every``
    and a shorter last chunk). Building it compiles the first chunk the run needs."""

    def __init__(self, group: Group, state: _State):
        self.group, self.compiled = group, {}
        self.args = (state.params, state.opt_state, state.step)  # shapes and types to compile for
        if state.step < group.cfg["steps"]:
            self.executable(self.length(state.step))

    def length(self, at: int) -> int:
        return min(self.group.cfg["log_every"], self.group.cfg["steps"] - at)

    def executable(self, length: int):
        if length not in self.compiled:
            g = self.group
            self.compiled[length] = _chunk_fn(g.module, g.opt, g.data, length).lower(*self.args).compile()
        return self.compiled[length]

    def dispatch(self, params, opt_state, at: int):
        """Start the chunk at step ``at`` (asynchronously); returns (length, its outputs)."""
        length = self.length(at)
        return length, self.executable(length)(params, opt_state, at)


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
                grads,
                opt_state,
                params,
                value=value,
                grad=grads,
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


def _run_chunks(group: Group, state: _State, chunks: _Chunks, log: _MetricsLog, progress: bool) -> tuple[int, float]:
    """Run chunks from ``state.step`` to the step budget, updating ``state``: check each
    chunk's objectives, log a row, checkpoint every ``checkpoint_every`` steps and at the
    end. Returns (steps run by this process, seconds)."""
    steps, ckpt_every = group.cfg["steps"], group.cfg["checkpoint_every"]
    fp = fingerprint(group.points)
    bar = _progress_bar(group, state) if progress else None
    t_loop = time.perf_counter()
    steps_run = 0
    pending = chunks.dispatch(state.params, state.opt_state, state.step) if state.step < steps else None
    try:
        while pending is not None:
            length, (new_params, new_state, objs, obj_end, extra) = pending
            # Dispatch the next chunk before reading this one back (JAX dispatch is
            # asynchronous), so the device works while the host logs. If this chunk turns
            # out non-finite, the next one is simply dropped.
            nxt = state.step + length
            pending = chunks.dispatch(new_params, new_state, nxt) if nxt < steps else None
            objs, obj_end = np.asarray(objs), np.asarray(obj_end)
            _check_finite(objs, group.points, state.step, group.ckpt_path)
            _check_finite(obj_end, group.points, nxt, group.ckpt_path)
            state.params, state.opt_state, state.step = new_params, new_state, nxt
            steps_run += length
            _update_best(state.best, objs, obj_end, group.maximize)
            log.write(state.step, obj_end, extra)
            if bar is not None:
                bar.update(length)
                bar.set_postfix(objective=f"{float(obj_end[0]):.6g}")
            if state.step % ckpt_every == 0 or state.step == steps:
                log.sync()
                _save_checkpoint(
                    group.ckpt_path, state.params, state.opt_state, state.step, state.best, group.metrics_paths, fp
                )
    finally:
        if bar is not None:
            bar.close()
    return steps_run, time.perf_counter() - t_loop


def _progress_bar(group: Group, state: _State):
    from tqdm.auto import tqdm

    desc = group.module.__name__.rsplit(".", 1)[-1]
    n = len(group.points)
    if n > 1 or group.points[0].name:
        desc = f"{os.path.basename(group.state_dir)} ({n} point{'s' if n > 1 else ''})"
    if state.resumed_from:  # tqdm's rate and ETA count the steps of this process only
        desc += f", resumed at step {state.resumed_from}"
    return tqdm(total=group.cfg["steps"], initial=state.step, desc=desc, unit="step", dynamic_ncols=True)


def _update_best(best: list[float], objs, obj_end, maximize: bool) -> None:
    for i in range(len(best)):
        seen = np.concatenate([objs[i], obj_end[i : i + 1]])
        best[i] = float(max(best[i], seen.max()) if maximize else min(best[i], seen.min()))


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


def _finish(group: Group, state: _State, timing: dict) -> list[dict]:
    """Each point's ``summary.json``, ``params.npz`` and plots; returns the summaries."""
    module, problem, data = group.module, group.problem, group.data
    final_obj = np.asarray(jax.jit(jax.vmap(lambda p: module.objective(p, data)))(state.params))
    reference = getattr(module, "reference", None)
    ref = reference(problem, data) if reference is not None else None
    ref = None if ref is None else float(ref)
    result_fn = getattr(module, "result", None)
    summaries = []
    for i, p in enumerate(group.points):
        p_i = jax.tree_util.tree_map(lambda x, i=i: x[i], state.params)
        rows = _read_rows(group.metrics_paths[i])
        summary = _summary(group, state, timing, i, float(final_obj[i]), ref, rows)
        summary["result"] = _jsonable(result_fn(p_i, data, problem)) if result_fn is not None else {}
        leaves = {f"{'/'.join(str(k) for k in path)}": np.asarray(v) for path, v in _flatten_with_names(p_i)}
        atomic_write_bytes(os.path.join(p.out_dir, "params.npz"), _npz_bytes(leaves))
        _write_plots(group, p, rows, ref)
        atomic_write_text(os.path.join(p.out_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
        summaries.append(summary)
    return summaries


def _summary(group: Group, state: _State, timing: dict, i: int, obj: float, ref, rows: list[dict]) -> dict:
    """Point ``i``'s summary.json (without ``result``): the objective and the gap to the
    reference, why the run stopped, and what this process ran."""
    p, steps, maximize = group.points[i], group.cfg["steps"], group.maximize
    gap = None if ref is None else (ref - obj if maximize else obj - ref)
    change = None
    if len(rows) >= 2 and rows[-1]["step"] == steps:
        change = {
            "steps": rows[-1]["step"] - rows[-2]["step"],
            "objective": rows[-1]["objective"] - rows[-2]["objective"],
        }
    first_step, ran, loop_s = state.resumed_from or 0, timing["steps_run"], timing["loop_s"]
    return {
        "experiment": p.cfg["experiment"],
        **({"point": p.name} if p.name else {}),
        "objective": obj,
        "best_objective": state.best[i],
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
        "wall_time_s": timing["wall"],
        "compile_time_s": timing["compile_s"],
        "steps_per_s": (ran / loop_s) if ran and loop_s > 0 else None,
        "this_process": {
            "process_index": jax.process_index(),  # under jax.distributed: which process ran this group
            "first_step": first_step,
            "steps": ran,
            "note": "wall_time_s, compile_time_s and steps_per_s cover this process only"
            + (f" (resumed at step {first_step})" if state.resumed_from is not None else ""),
        },
        "device": _device_string(),
    }


def _write_plots(group: Group, p: Point, rows: list[dict], ref) -> None:
    """objective.png and eigenvalues.png of point ``p`` (:mod:`eigjax.app._plots`)."""
    title = (
        f"experiment {p.cfg['experiment']}"
        + (f",  config {group.label}" if group.label else "")
        + (f",  {p.name}" if p.name else "")
    )
    for name, fig in _plots.figures(rows, ref, title=title, maximize=group.maximize):
        _save_fig(fig, os.path.join(p.out_dir, name), title)
        _plots.pyplot().close(fig)


def _save_fig(fig, path, title=None):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Title": title} if title else None)
    atomic_write_bytes(path, buf.getvalue())


def _device_string() -> str:
    devs = jax.devices()
    return f"{devs[0].platform}:{devs[0].device_kind} x{len(devs)}"


def _read_rows(metrics_path: str) -> list[dict]:
    with open(metrics_path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        arr = np.asarray(x)
        if np.iscomplexobj(arr):
            return {"real": _jsonable(np.real(arr)), "imag": _jsonable(np.imag(arr))}
        return arr.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _flatten_with_names(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = []
    for path, leaf in flat:
        name = "".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) + "/" for k in path).rstrip("/")
        out.append(((name or "params",), leaf))
    return out


# ----------------------------------------------------------------------------- runs and sweeps


def run(
    cfg: dict,
    module,
    problem,
    out_dir: str,
    *,
    resume: bool = False,
    sweep: list[dict] | None = None,
    progress: bool = True,
    label: str | None = None,
) -> list[dict]:
    """Run one config, or a grid of overrides of it (``sweep``: a list of {dotted key: value}).

    Every group is prepared and checked before anything is written. Under jax.distributed
    (:mod:`eigjax.app._distributed`), process ``k`` of ``P`` runs the vmapped groups ``k,
    k + P, ...`` and reads the others' summaries back once all have finished; process 0
    writes the sweep summary. ``label`` (the config file's name, say) goes into the plots'
    titles. Returns each point's summary."""
    pid, nproc = maybe_initialize()
    if not sweep:
        group = prepare_group(module, problem, [Point(cfg, out_dir)], state_dir=out_dir, label=label)
        return _execute([([0], group)], 1, resume=resume, progress=progress, pid=pid, nproc=nproc)
    resolved = _resolve_points(cfg, sweep)
    names = _point_names(sweep)
    plan = _plan_groups(resolved, names, out_dir)
    if resume:  # refuse before any group runs or any directory is made
        for _, _, _, points, state_dir in plan:
            check_resumable(state_dir, points)
    if any(r[1]["precision"] == "float64" for r in resolved):
        jax.config.update("jax_enable_x64", True)  # for every group alike, whatever their order
    groups = [(idx, prepare_group(m, pr, points, state_dir=d, label=label)) for idx, m, pr, points, d in plan]
    os.makedirs(out_dir, exist_ok=True)  # --out itself is the user's (it may be a link they made)
    summaries = _execute(groups, len(resolved), resume=resume, progress=progress, pid=pid, nproc=nproc)
    if pid == 0:
        _write_sweep_summary(out_dir, names, sweep, summaries)
    return summaries


def _execute(
    groups: list[tuple[list[int], Group]], npoints: int, *, resume: bool, progress: bool, pid: int, nproc: int
) -> list[dict]:
    """Run this process's groups (every ``nproc``-th from ``pid``); under jax.distributed,
    wait for the others (a process that failed stops all of them, each with one message)
    and read their points' ``summary.json`` back. Returns every point's summary."""
    summaries: list[dict | None] = [None] * npoints
    failure = None
    try:
        for n, (idx, group) in enumerate(groups):
            if n % nproc == pid:
                for i, s in zip(idx, execute_group(group, resume=resume, progress=progress)):
                    summaries[i] = s
    except Exception as exc:  # reported to the other processes, then raised
        if nproc == 1:
            raise
        failure = exc
    if nproc > 1:
        failed = failed_processes(nproc, failure is not None)
        if failure is not None:
            raise failure
        if failed:
            raise StateError(
                f"process(es) {', '.join(map(str, failed))} of {nproc} stopped (see their message); this process's "
                "groups finished and are kept: fix the cause and rerun every process with --resume"
            )
        for n, (idx, group) in enumerate(groups):
            if n % nproc != pid:
                for i, p in zip(idx, group.points):
                    with open(os.path.join(p.out_dir, "summary.json")) as f:
                        summaries[i] = json.load(f)
    return summaries  # type: ignore[return-value]


def _resolve_points(cfg: dict, sweep: list[dict]) -> list[tuple]:
    """(overrides, resolved config, module, problem) of every sweep point, all validated
    before anything is written."""
    resolved = []
    for overrides in sweep:
        raw = json.loads(json.dumps(cfg))
        for key, value in overrides.items():
            set_dotted(raw, key, value)
        resolved.append((overrides, *resolve(raw)))
    return resolved


def _point_names(sweep: list[dict]) -> list[str]:
    names = []
    for i, overrides in enumerate(sweep):
        point = ",".join(f"{k}={v}" for k, v in overrides.items()).replace("/", "_")
        names.append(f"point_{i:03d}_{point}")
    return names


def _plan_groups(resolved: list[tuple], names: list[str], out_dir: str) -> list[tuple]:
    """Split the points into vmapped groups: points whose overrides differ only in
    vmappable keys (:func:`eigjax.app._optim.is_vmappable`) share one. Returns
    ``(point indices, module, problem, points, group directory)`` per group."""
    groups: dict[str, list[int]] = {}
    for i, (overrides, *_rest) in enumerate(resolved):
        static = {k: v for k, v in overrides.items() if not is_vmappable(k, v)}
        groups.setdefault(json.dumps(static, sort_keys=True), []).append(i)
    plan = []
    for g, idx in enumerate(groups.values()):
        _, _, gmodule, gproblem = resolved[idx[0]]
        points = [Point(resolved[i][1], os.path.join(out_dir, names[i]), names[i]) for i in idx]
        plan.append((idx, gmodule, gproblem, points, os.path.join(out_dir, f"group_{g:03d}")))
    return plan


def _write_sweep_summary(out_dir: str, names: list[str], sweep: list[dict], summaries: list[dict]) -> None:
    """sweep_summary.md (a table: point, overrides, objective, best, gap) and sweep_summary.json."""
    lines = ["| point | " + " | ".join(sweep[0]) + " | objective | best | gap |", "|---" * (len(sweep[0]) + 4) + "|"]
    for name, overrides, s in zip(names, sweep, summaries):
        gap = "" if s["gap"] is None else f"{s['gap']:.3e}"
        lines.append(
            f"| {name} | "
            + " | ".join(str(v) for v in overrides.values())
            + f" | {s['objective']:.8g} | {s['best_objective']:.8g} | {gap} |"
        )
    atomic_write_text(os.path.join(out_dir, "sweep_summary.md"), "\n".join(lines) + "\n")
    atomic_write_text(
        os.path.join(out_dir, "sweep_summary.json"),
        json.dumps([{"point": n, "overrides": o, **s} for n, o, s in zip(names, sweep, summaries)], indent=2) + "\n",
    )
