"""The eigjax CLI end to end: smoke runs, invalid configs, non-finite stop, resume, sweeps."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml

from eigjax.app import _cli as cli
from eigjax.app._config import apply_smoke, load_yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SUMMARY_KEYS = {
    "experiment",
    "objective",
    "best_objective",
    "reference",
    "gap",
    "steps",
    "wall_time_s",
    "steps_per_s",
    "device",
    "result",
}


def eigjax(*args, env=None, **kw):
    """Run ``python -m eigjax ARGS`` from the repo root."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "eigjax", *args], cwd=ROOT, capture_output=True, text=True, env=full_env, **kw
    )


def smoke_config(name: str) -> dict:
    """configs/NAME.yaml with its smoke overlay applied, as `eigjax run NAME --smoke` runs it."""
    return apply_smoke(load_yaml(ROOT / "configs" / f"{name}.yaml"), smoke=True)


def load_npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def run_killed_after_checkpoint(monkeypatch, argv, step=10):
    """``eigjax`` with ``argv`` in this process, stopped by an exception right after the
    checkpoint of ``step`` is written (what a killed run leaves behind); the checkpoint
    writer is restored afterwards."""
    from eigjax.app import _runner

    real_save = _runner._save_checkpoint

    class Killed(Exception):
        pass

    def save_then_die(path, params, opt_state, at, *args):
        real_save(path, params, opt_state, at, *args)
        if at == step:
            raise Killed

    monkeypatch.setattr(_runner, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        cli.main(argv)
    monkeypatch.setattr(_runner, "_save_checkpoint", real_save)


def test_every_config_has_a_smoke_overlay_and_run_headers():
    assert CONFIGS, "no configs ship"
    for path in CONFIGS:
        text, name = path.read_text(), path.stem
        assert f"# Run: eigjax run {name}\n" in text, f"{name}: header must give the exact command"
        assert re.search(rf"^# Smoke( \(.*\))?: eigjax run {name} --smoke$", text, re.M), (
            f"{name}: header must give the smoke command"
        )
        assert yaml.safe_load(text).get("smoke"), f"{name}: no smoke: overlay"
        assert smoke_config(name) != apply_smoke(load_yaml(path), smoke=False)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_smoke_config_end_to_end(config, tmp_path):
    """Each shipped config's smoke overlay, run by the config's name (`eigjax run NAME --smoke`)."""
    out = tmp_path / "out"
    proc = eigjax("run", config.stem, "--smoke", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    if config.stem == "batch_eval":  # the batch evaluator: its own outputs
        summary = json.loads((out / "summary.json").read_text())
        cfg = smoke_config("batch_eval")["batch"]
        w = np.load(out / "eigenvalues.npy")
        assert summary["complete"] and summary["rows"] == cfg["input"]["count"] == w.shape[0]
        assert np.all(np.isfinite(w)) and np.all(np.diff(w, axis=-1) >= 0)
        assert np.load(out / "grad.npy").shape == (w.shape[0], 3, 3)
        assert summary["accuracy"]["max_relative_residual"] < 1e-5
        return
    for name in ["config.yaml", "metrics.jsonl", "summary.json", "params.npz", "objective.png", "checkpoint.npz"]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert summary["experiment"] == cfg["experiment"] and summary["steps"] == cfg["steps"]
    assert np.isfinite(summary["objective"]) and isinstance(summary["result"], dict) and summary["result"]
    if summary["reference"] is not None:
        sign = -1 if summary["maximize"] else 1
        assert summary["gap"] == pytest.approx(sign * (summary["objective"] - summary["reference"]))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and rows[-1]["step"] == cfg["steps"]
    assert rows[-1]["objective"] == pytest.approx(summary["objective"], rel=1e-6)
    best = min(r["objective"] for r in rows) if not summary["maximize"] else max(r["objective"] for r in rows)
    assert (summary["best_objective"] <= best) if not summary["maximize"] else (summary["best_objective"] >= best)
    if "eigenvalues" in rows[0]:
        assert (out / "eigenvalues.png").is_file()
    assert (out / "objective.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seed_example3_does_what_the_issue_says(tmp_path):
    """A0 = [[2,1],[1,2]] float32, Adam lr 0.1, 100 steps: check against a hand-written loop."""
    import jax
    import jax.numpy as jnp
    import optax

    import eigjax as ej

    out = tmp_path / "seed"
    proc = eigjax("run", "configs/seed_example3.yaml", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    loss = lambda a: jnp.sum(ej.eigvalsh(a)) + 0.1 * jnp.sum(a**2) / 2
    a = jnp.array([[2.0, 1.0], [1.0, 2.0]], dtype=jnp.float32)
    opt = optax.adam(0.1)
    standard = lambda: jax.numpy_dtype_promotion("standard")  # noqa: E731 - optax is not strict-clean (as in the runner)
    with standard():
        state = opt.init(a)
    for _ in range(100):
        g = jax.grad(loss)(a)
        with standard():
            upd, state = opt.update(g, state, a)
            a = optax.apply_updates(a, upd)
    np.testing.assert_allclose(summary["result"]["a"], a, rtol=1e-5, atol=1e-5)
    assert summary["steps"] == 100 and summary["reference"] == -10.0


# ----------------------------------------------------------------------------- invalid configs


def write_config(tmp_path, **changes):
    cfg = smoke_config("seed_example3")
    for key, value in changes.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        if value is DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


DELETE = object()

INVALID = [
    ({"stepz": 3}, "stepz: unknown key"),
    ({"steps": "ten"}, "steps: expected an integer, got 'ten'"),
    ({"steps": 0}, "steps: expected an integer >= 1"),
    ({"precision": "float16"}, "precision: expected 'float32' or 'float64', got 'float16'"),
    ({"optimizer.name": "adamm"}, "optimizer.name: expected the name of an optax optimizer"),
    ({"optimizer.learning_rat": 0.1}, "optimizer.learning_rat: unknown keyword for optax.adam"),
    ({"problem.ridge": "big"}, "problem.ridge: expected a number (float), got 'big'"),
    ({"problem.colour": 1}, "problem.colour: unknown key"),
    ({"problem.a0": [[1.0, 2.0]]}, "a0: expected a square matrix"),
    ({"experiment": "experiments.nope"}, "experiment: cannot import module 'experiments.nope'"),
    ({"experiment": DELETE}, "experiment: required key is missing"),
    ({"checkpoint_every": 15}, "checkpoint_every: expected a multiple of log_every"),
]


@pytest.mark.parametrize("changes,message", INVALID, ids=[m.split(":")[0] for _, m in INVALID])
def test_invalid_config_exit_2_clear_message_nothing_written(changes, message, tmp_path, capsys):
    path = write_config(tmp_path, **changes)
    out = tmp_path / "out"
    code = cli.main(["run", str(path), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_invalid_set_and_sweep_values(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--set", "steps=-1"]) == 2
    assert "steps: expected an integer >= 1, got -1" in capsys.readouterr().err
    assert cli.main(["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--set", "nokey"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err
    code = cli.main(
        ["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--sweep", "precision=float32,float8"]
    )
    assert code == 2 and "precision: expected 'float32' or 'float64', got 'float8'" in capsys.readouterr().err
    assert cli.main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "setting, message",
    [
        ("problem.ridge=0", "ridge: expected a number > 0"),  # was a ZeroDivisionError traceback
        ("problem.ridge=-1", "ridge: expected a number > 0"),  # was accepted: unbounded below
        ("optimizer.learning_rate=abc", "optax.adam cannot be built"),  # was a TypeError traceback
        ("optimizer.learning_rate=-0.1", "optimizer.learning_rate: expected a number > 0"),
        ("problem.a0=[[1,2],[3]]", "a0: expected a square matrix"),  # was NumPy's message
    ],
)
def test_bad_values_exit_2_before_anything_is_written(setting, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        cli.main(["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--set", setting, "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_smoke_overlay_is_checked_on_every_run_and_applied_only_with_smoke(tmp_path, capsys):
    """An overlay key must name a key the config states; --smoke needs an overlay; the
    overlay is not part of the resolved config, with or without --smoke."""
    base = load_yaml(ROOT / "configs" / "seed_example3.yaml")
    cases = [
        ({"problem.ridg": 1.0}, [], "smoke.problem.ridg: the config states no problem.ridg"),
        ({"optimizer.learning_rate.x": 1}, ["--smoke"], "smoke.optimizer.learning_rate.x: the config states no"),
        (5, [], "smoke: expected a mapping of dotted keys"),
        (None, ["--smoke"], "--smoke: this config has no smoke: overlay"),
    ]
    for overlay, flags, message in cases:
        cfg = {**base, "smoke": overlay}
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert cli.main(["run", str(path), "--out", str(tmp_path / "o"), "--no-progress", *flags]) == 2, overlay
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
    # without --smoke the full config runs (steps from --set), and config.yaml has no smoke key
    out = tmp_path / "full"
    assert cli.main(["run", "configs/seed_example3.yaml", "--out", str(out), "--no-progress", "--set", "steps=10"]) == 0
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert "smoke" not in written and written["steps"] == 10 and written["checkpoint_every"] == 50
    assert written["experiment"] == "seed_example3"
    # --smoke, then --set on top of the overlay
    out = tmp_path / "smoke"
    assert (
        cli.main(
            [
                "run",
                "configs/seed_example3.yaml",
                "--smoke",
                "--set",
                "checkpoint_every=20",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert "smoke" not in written and written["steps"] == 20 and written["checkpoint_every"] == 20


def test_readme_runs_shipped_configs_by_names_that_exist():
    """The README's commands (its Quick start's main job among them) name shipped configs."""
    names = re.findall(r"eigjax run ([a-z_0-9]+)\b", (ROOT / "README.md").read_text())
    assert "seed_example3" in names
    assert set(names) <= {p.stem for p in CONFIGS}, sorted(set(names) - {p.stem for p in CONFIGS})


def test_a_config_file_resolves_as_loaded_with_its_overlay_dropped():
    """resolve(load_yaml(path)), as benchmarks/bench_runner.py calls it: the smoke: key is
    checked and dropped, not an unknown key."""
    from eigjax.app._config import ConfigError, resolve

    raw = load_yaml(ROOT / "configs" / "seed_example3.yaml")
    cfg, module, _ = resolve(raw)
    assert "smoke" not in cfg and cfg["steps"] == 100 and module.__name__ == "eigjax.experiments.seed_example3"
    with pytest.raises(ConfigError, match="smoke.stepz: the config states no stepz"):
        resolve({**raw, "smoke": {"stepz": 1}})


def test_run_by_name_from_any_directory_and_unknown_names(tmp_path, capsys, monkeypatch):
    """`eigjax run NAME` runs the shipped config NAME when no file of that name exists; the
    default output directory is runs/NAME."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "seed_example3", "--smoke", "--no-progress", "--set", "steps=10"]) == 0
    assert json.loads((tmp_path / "runs" / "seed_example3" / "summary.json").read_text())["steps"] == 10
    capsys.readouterr()
    assert cli.main(["run", "seed_exampel3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no shipped config has that name" in err and "seed_example3" in err
    assert not (tmp_path / "runs" / "seed_exampel3").exists()


def test_batch_config_that_is_not_a_mapping_and_a_sweep_stopped_before_any_checkpoint(tmp_path, capsys):
    assert (
        cli.main(["run", "configs/batch_eval.yaml", "--smoke", "--out", str(tmp_path / "b"), "--set", "batch=5"]) == 2
    )
    assert "batch: expected a mapping" in capsys.readouterr().err  # was an UnboundLocalError traceback
    code = cli.main(
        [
            "run",
            "configs/seed_example3.yaml",
            "--smoke",
            "--out",
            str(tmp_path / "s"),
            "--no-progress",
            "--sweep",
            "optimizer.learning_rate=0.1,1e30",
        ]
    )
    err = capsys.readouterr().err
    assert code == 3 and "no checkpoint had been written yet" in err and "other points" in err


def test_check_refuses_a_negative_tolerance_and_a_lossy_dtype(tmp_path, capsys):
    assert cli.main(["check", "rosser", "--degenerate-tol", "-1"]) == 2
    assert "--degenerate-tol must be a number >= 0" in capsys.readouterr().err
    np.save(tmp_path / "c.npy", np.array([[1.0, 1j], [-1j, 2.0]]))
    assert cli.main(["check", str(tmp_path / "c.npy"), "--dtype", "float64"]) == 2
    assert "would drop its imaginary part" in capsys.readouterr().err


def test_invalid_config_through_the_console_process(tmp_path):
    path = write_config(tmp_path, steps="ten")
    proc = eigjax("run", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "steps: expected an integer, got 'ten'" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_float64_batch_eval_is_computed_in_float64_in_a_fresh_process(tmp_path):
    """The console process starts without x64: float64 batches were computed in float32
    (eigenvalue error 3e-7) while the outputs and summary said float64."""
    out = tmp_path / "b"
    proc = eigjax(
        "run",
        "configs/batch_eval.yaml",
        "--smoke",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "batch.input.count=6",
        "--set",
        "batch.chunk_size=4",
        "--set",
        "batch.input.dtype=float64",
    )
    assert proc.returncode == 0, proc.stderr
    acc = json.loads((out / "summary.json").read_text())["accuracy"]
    assert acc["max_eigenvalue_error_rel"] < 1e-13 and acc["max_relative_residual"] < 1e-13


# ----------------------------------------------------------------------------- non-finite objective

DIVERGING = '''
"""Test experiment: objective log(30 - x) with x rising by 1 per step: -inf at step 30."""
import dataclasses
import jax.numpy as jnp

@dataclasses.dataclass
class Problem:
    pass

def setup(problem, dtype):
    return {}

def init_params(data, key):
    return jnp.zeros(())

def objective(x, data):
    return jnp.log(30.0 - x)

def loss(x, data, step):
    return -x
'''


def test_non_finite_objective_stops_names_step_keeps_checkpoint(tmp_path):
    (tmp_path / "diverging_exp.py").write_text(textwrap.dedent(DIVERGING))
    cfg = {
        "experiment": "diverging_exp",
        "steps": 100,
        "optimizer": {"name": "sgd", "learning_rate": 1.0},
        "log_every": 10,
        "checkpoint_every": 10,
        "precision": "float64",
    }
    path = tmp_path / "div.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    proc = eigjax("run", str(path), "--out", str(out), "--no-progress", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 3, proc.stderr
    assert "non-finite objective" in proc.stderr and "at step 30" in proc.stderr
    assert not (out / "summary.json").exists()
    with np.load(out / "checkpoint.npz") as z:
        assert int(z["step"]) == 20  # the last good checkpoint
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10, 20]


# ----------------------------------------------------------------------------- resume after kill -9


def test_kill_and_resume_gives_identical_results(tmp_path):
    cfg = smoke_config("seed_example3")
    cfg.update(steps=30000, log_every=10, checkpoint_every=500)
    cfg["optimizer"]["learning_rate"] = 0.001
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(cfg))

    ref = tmp_path / "ref"
    assert eigjax("run", str(path), "--out", str(ref), "--no-progress").returncode == 0

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "eigjax", "run", str(path), "--out", str(out), "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = out / "checkpoint.npz"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed: make it longer"
    with np.load(ckpt) as z:
        killed_at = int(z["step"])
    assert 0 < killed_at < 30000

    proc = eigjax("run", str(path), "--out", str(out), "--no-progress", "--resume")
    assert proc.returncode == 0, proc.stderr
    a, b = load_npz(ref / "params.npz"), load_npz(out / "params.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    sa = json.loads((ref / "summary.json").read_text())
    sb = json.loads((out / "summary.json").read_text())
    for key in ["wall_time_s", "compile_time_s", "steps_per_s", "this_process"]:  # this process's share
        sa.pop(key), sb.pop(key)
    assert sa == sb
    assert (ref / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()


# ----------------------------------------------------------------------------- sweeps, list, help


def test_sweep_vmapped_grid_matches_single_runs(tmp_path):
    out = tmp_path / "sweep"
    proc = eigjax(
        "run",
        "configs/seed_example3.yaml",
        "--smoke",
        "--out",
        str(out),
        "--no-progress",
        "--sweep",
        "seed=0,1",
        "--sweep",
        "optimizer.learning_rate=0.1,0.05",
    )
    assert proc.returncode == 0, proc.stderr
    points = sorted(p for p in out.iterdir() if p.name.startswith("point_"))
    assert len(points) == 4
    # one vmapped group: seeds and float hyperparameters share a compiled program
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("group_")) == ["group_000"]
    table = (out / "sweep_summary.md").read_text()
    assert table.count("| point_") == 4
    single = tmp_path / "single"
    proc = eigjax(
        "run",
        "configs/seed_example3.yaml",
        "--smoke",
        "--out",
        str(single),
        "--no-progress",
        "--set",
        "optimizer.learning_rate=0.05",
        "--set",
        "seed=1",
    )
    assert proc.returncode == 0, proc.stderr
    match = [p for p in points if "seed=1" in p.name and "learning_rate=0.05" in p.name]
    assert len(match) == 1
    a, b = load_npz(match[0] / "params.npz"), load_npz(single / "params.npz")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-6)


def test_refused_sweep_resume_runs_and_creates_nothing(tmp_path):
    """A --resume whose second group's checkpoint belongs to another config is refused
    before the first group runs and before any directory is made."""
    out = tmp_path / "sweep"
    base = ("run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--no-progress", "--set", "steps=10")
    proc = eigjax(*base, "--sweep", "optimizer.name=adam,sgd")
    assert proc.returncode == 0, proc.stderr
    before = sorted((p.relative_to(out).as_posix(), p.stat().st_mtime_ns) for p in out.rglob("*"))
    proc = eigjax(*base, "--resume", "--sweep", "optimizer.name=adam,adamw")  # group_000 matches
    assert proc.returncode != 0 and "written for a different config" in proc.stderr
    after = sorted((p.relative_to(out).as_posix(), p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert after == before


def test_list_and_help(capsys):
    proc = eigjax("list")  # the real entry point, once
    assert proc.returncode == 0
    experiments, configs = proc.stdout.split("\nconfigs")
    assert "\n  seed_example3 " in experiments and "\n  batch_eval " in experiments
    for path in CONFIGS:  # every shipped config, with its description
        assert f"\n  {path.stem:<24} {path.read_text().splitlines()[0].lstrip('# ')}" in configs
    from eigjax.app._cli import main

    for args in (["--help"], ["run", "--help"], ["list", "--help"], ["check", "--help"]):
        try:
            code = main(args)  # `check` returns its exit status
        except SystemExit as e:  # argparse exits after printing help
            code = e.code
        assert code == 0 and "example" in capsys.readouterr().out, args


# ----------------------------------------------------------------------------- issue 19: state files, links, messages


def finished_smoke_run(tmp_path, name="out", *extra):
    """The seed config's smoke run (20 steps, a checkpoint every 10), in-process to the end."""
    out = tmp_path / name
    assert cli.main(["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--no-progress", *extra]) == 0
    return out


def test_resume_never_writes_through_a_symlinked_metrics_file(tmp_path, capsys):
    """Item 10: --resume truncated the target of a metrics.jsonl link outside --out."""
    out = finished_smoke_run(tmp_path)
    outside = tmp_path / "precious.txt"
    outside.write_text("not eigjax's\n" * 1000)
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(outside)
    capsys.readouterr()
    code = cli.main(["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--no-progress", "--resume"])
    err = capsys.readouterr().err
    assert outside.read_text() == "not eigjax's\n" * 1000
    assert code == 3 and "metrics.jsonl is a symbolic link" in err and len(err.strip().splitlines()) == 1, err


def test_atomic_write_fsyncs_file_and_directory_and_ignores_planted_temporaries(tmp_path, monkeypatch):
    """Item 10: the runner's checkpoint/summary writes are temp file + fsync + os.replace + directory fsync."""
    from eigjax.app import _runner

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.path.realpath(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    target = tmp_path / "summary.json"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    # the old fixed temporary name, planted as a link: must not be written through
    (tmp_path / f"summary.json.tmp.{os.getpid()}").symlink_to(victim)
    _runner.atomic_write_text(str(target), "new")
    assert target.read_text() == "new" and victim.read_text() == "keep"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600
    assert str(tmp_path) in synced, synced  # the directory (the rename is durable)
    assert len(synced) >= 2  # and the file itself, before the rename
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["summary.json", "victim.txt", f"summary.json.tmp.{os.getpid()}"]
    )


def alias_bomb(depth=9):
    """A billion-laughs YAML document (450 bytes): 9**9 values once its aliases are expanded."""
    names = "abcdefghijk"[:depth]
    parts = ["&a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    parts += [f"&{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip(names, names[1:])]
    return "experiment: seed_example3\noptimizer: {name: adam, learning_rate: 0.1}\nsteps: [" + ", ".join(parts) + "]\n"


def test_yaml_alias_bomb_fails_fast_with_one_message(tmp_path, capsys):
    """Item 12: a 450-byte config ran for minutes and took gigabytes (repr of the expanded value)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 600
    t0 = time.perf_counter()
    code = cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 2.0, (code, elapsed)
    assert "alias" in err and "bomb.yaml" in err and len(err.strip().splitlines()) == 1 and len(err) < 400, err
    assert not (tmp_path / "out").exists()
    # a recursive alias is refused too (it would recurse without end in the checks)
    path.write_text("experiment: seed_example3\noptimizer: {name: adam}\nsteps: &r [1, *r]\n")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "recursive" in capsys.readouterr().err


def test_long_values_are_shortened_in_messages(tmp_path, capsys):
    """Item 12: error messages quoted whole values."""
    path = write_config(tmp_path, steps=list(range(100_000)))
    code = cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "steps: expected an integer, got [0, 1, 2" in err and len(err) < 400, err[:500]


NOT_AN_EXPERIMENT = {
    "wrong_arity_exp": (
        "import dataclasses\n@dataclasses.dataclass\nclass Problem:\n    pass\n"
        "def setup(problem, dtype):\n    return {}\ndef init_params(data, key):\n    return 0.0\n"
        "def objective(params):\n    return params\n",
        "objective must be a function objective(params, data)",
    ),
    "plain_problem_exp": (
        "class Problem:\n    pass\nsetup = init_params = objective = lambda a, b: 0\n",
        "Problem must be a dataclass",
    ),
    "raising_exp": (
        "raise RuntimeError('boom at import')\n",
        "importing module 'raising_exp' raised RuntimeError: boom at import",
    ),
}


@pytest.mark.parametrize("name", sorted(NOT_AN_EXPERIMENT))
def test_experiment_module_is_checked_right_after_import(name, tmp_path, capsys, monkeypatch):
    """Item 13: a module that is not an experiment gave a traceback, after writing files."""
    source, message = NOT_AN_EXPERIMENT[name]
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_config(tmp_path, experiment=name)
    code = cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_empty_experiment_name_is_one_message(tmp_path, capsys):
    """Item 14: `experiment: ''` was a ValueError traceback (importlib: Empty module name)."""
    path = write_config(tmp_path, experiment="")
    code = cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert (
        code == 2
        and "experiment: expected a shipped experiment's name (such as fmmc) or a module import path" in err
        and len(err.strip().splitlines()) == 1
    ), err


@pytest.mark.parametrize("damage", ["corrupt_checkpoint", "missing_metrics", "short_metrics"])
def test_damaged_state_on_resume_is_one_message_naming_the_file(damage, tmp_path, capsys):
    """Item 14: a corrupt checkpoint.npz or a missing metrics.jsonl was a raw traceback on --resume."""
    out = finished_smoke_run(tmp_path)
    if damage == "corrupt_checkpoint":
        (out / "checkpoint.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
        name = "checkpoint.npz"
    elif damage == "missing_metrics":
        (out / "metrics.jsonl").unlink()
        name = "metrics.jsonl"
    else:  # shorter than the checkpoint recorded: truncate() would zero-fill it
        (out / "metrics.jsonl").write_text('{"step": 0}\n')
        name = "metrics.jsonl"
    capsys.readouterr()
    code = cli.main(["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--no-progress", "--resume"])
    err = capsys.readouterr().err
    assert code == 3 and name in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------------- issue 19: what a user sees


def test_output_and_summary_say_the_step_budget_ended_the_run(tmp_path, capsys):
    """Item 16: `reference -10 gap 1.442e+00` read as a failure; the 100 steps end the run by design."""
    out = finished_smoke_run(tmp_path)
    stdout = capsys.readouterr().out
    assert "stopped by the step budget (steps: 20), not by a convergence test" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "max_steps" and "step budget" in summary["note"]
    change = summary["last_interval_change"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert change["steps"] == 10 and change["objective"] == pytest.approx(rows[-1]["objective"] - rows[-2]["objective"])


def test_plots_have_titles_legends_a_log_gap_and_complex_eigenvalues(tmp_path, monkeypatch):
    """Item 17: plots named nothing, the gap was not shown, eig's eigenvalues were real parts only."""
    from eigjax.app import _runner

    figures = {}
    real_save = _runner._save_fig

    def capture(fig, path, *args, **kw):
        figures[os.path.basename(path)] = fig
        return real_save(fig, path, *args, **kw)

    monkeypatch.setattr(_runner, "_save_fig", capture)
    monkeypatch.setattr("matplotlib.pyplot.close", lambda *a: None)  # keep the figures to inspect them
    out = tmp_path / "sa"
    assert cli.main(["run", "configs/spectral_abscissa.yaml", "--smoke", "--out", str(out), "--no-progress"]) == 0
    assert sorted(figures) == ["eigenvalues.png", "objective.png"]
    for name, fig in figures.items():
        title = fig._suptitle.get_text() if fig._suptitle is not None else ""
        assert "spectral_abscissa" in title and "spectral_abscissa.yaml" in title, (name, title)
        for ax in fig.axes:
            if ax.lines:
                assert ax.get_legend() is not None, (name, ax.get_title())
    obj_axes = figures["objective.png"].axes
    assert any(ax.get_yscale() == "log" and "gap" in ax.get_ylabel() for ax in obj_axes)
    assert any(line.get_label().startswith("reference") for ax in obj_axes for line in ax.lines)
    ylabels = [ax.get_ylabel() for ax in figures["eigenvalues.png"].axes]
    assert "Re λ" in ylabels and "Im λ" in ylabels
    im = [ax for ax in figures["eigenvalues.png"].axes if ax.get_ylabel() == "Im λ" and ax.get_xlabel() == "step"][0]
    assert max(abs(y) for line in im.lines for y in line.get_ydata()) > 0.5  # the oscillator starts complex
    assert (out / "objective.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_lines_name_their_sweep_point(tmp_path, capsys):
    """Item 20: a sweep printed the same `experiments.x: objective ...` line for every point."""
    out = tmp_path / "sweep"
    code = cli.main(
        ["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--no-progress", "--sweep", "seed=0,1"]
    )
    stdout = capsys.readouterr().out
    assert code == 0
    lines = [line for line in stdout.splitlines() if "objective" in line and not line.startswith(" ")]
    assert len(lines) == 2 and lines[0].startswith("point_000_seed=0: ") and lines[1].startswith("point_001_seed=1: ")


def test_resume_says_what_it_resumed_and_when_there_is_nothing_to_resume(tmp_path, capsys, monkeypatch):
    """Item 20: throughput after --resume covered only the resumed steps without saying so, and
    --resume without a checkpoint silently started over."""
    out = tmp_path / "out"
    base = ["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--no-progress"]
    assert cli.main([*base, "--resume"]) == 0  # nothing there yet
    assert "--resume: no checkpoint" in capsys.readouterr().err
    run_killed_after_checkpoint(monkeypatch, base)
    capsys.readouterr()
    assert cli.main([*base, "--resume"]) == 0
    stdout = capsys.readouterr().out
    assert "resumed at step 10: this process ran steps 10-20 (10 steps" in stdout and "cover these only" in stdout
    proc = json.loads((out / "summary.json").read_text())["this_process"]
    assert proc["first_step"] == 10 and proc["steps"] == 10 and "resumed at step 10" in proc["note"]
    assert cli.main([*base, "--resume"]) == 0  # finished: nothing left to run
    assert "nothing left to run" in capsys.readouterr().err


def test_config_headers_state_the_steps_they_run():
    """Item 20: the seed smoke config's header said 100 steps while it ran 20. The smoke
    line of a header speaks of the smoke run, the other lines of the full run."""
    for path in CONFIGS:
        lines = [line for line in path.read_text().splitlines() if line.startswith("#")]
        for smoke, cfg in ((False, load_yaml(path)), (True, smoke_config(path.stem))):
            header = " ".join(line for line in lines if line.startswith("# Smoke") == smoke)
            for said in re.findall(r"(\d+) steps", header):
                assert int(said) == cfg.get("steps"), (
                    f"{path.stem}: header says {said} steps, runs {cfg.get('steps')} (smoke: {smoke})"
                )


def test_sweep_point_directory_that_is_a_link_is_refused(tmp_path, capsys):
    """Item 10: a link inside --out (a sweep point's directory) redirected the run's writes."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "point_000_seed=0").symlink_to(outside, target_is_directory=True)
    code = cli.main(
        ["run", "configs/seed_example3.yaml", "--smoke", "--out", str(out), "--no-progress", "--sweep", "seed=0,1"]
    )
    err = capsys.readouterr().err
    assert code == 3 and "point_000_seed=0 is a symbolic link" in err and len(err.strip().splitlines()) == 1, err
    assert list(outside.iterdir()) == []
    # --out itself is the user's: a link they made is fine
    (tmp_path / "link_out").symlink_to(outside, target_is_directory=True)
    assert (
        cli.main(["run", "configs/seed_example3.yaml", "--smoke", "--out", str(tmp_path / "link_out"), "--no-progress"])
        == 0
    )
    assert (outside / "summary.json").is_file()
