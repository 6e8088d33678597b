"""Sweeps under jax.distributed (issue 17, item 2): ``eigjax run CONFIG --sweep ...`` with
``JAX_NUM_PROCESSES=2`` splits the sweep's vmapped groups over two local CPU processes
(process k runs groups k, k + 2, ...). The results are those of one process, bit for
bit, and a resume picks up what an interrupted one-process run left.

Each test starts its processes with ``python -m eigjax run`` under a timeout and stops
them all before it returns (as tests/app/test_distributed.py does for batch_eval).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import yaml
from test_cli import run_killed_after_checkpoint
from test_distributed import finish, free_port, process_env  # the same process helpers as the batch evaluator's tests

from eigjax.app import _cli as cli
from eigjax.app._config import apply_smoke, load_yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SWEEP = ["--sweep", "seed=0,1", "--sweep", "optimizer.name=adam,sgd"]  # 2 groups (adam, sgd) of 2 seeds


def config(tmp_path) -> str:
    """The smoke seed_example3 config in float64 (x64 on here and in the subprocesses alike)."""
    cfg = apply_smoke(load_yaml(ROOT / "configs" / "seed_example3.yaml"), smoke=True)
    cfg.update(precision="float64", steps=20, log_every=5, checkpoint_every=5)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def launch(cfg, out, nproc, *extra, sweep=SWEEP):
    port = free_port()
    procs = []
    for k in range(nproc):
        env = process_env(port, nproc, k)
        args = [sys.executable, "-m", "eigjax", "run", cfg, "--out", str(out), "--no-progress", *sweep, *extra]
        procs.append(
            subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return procs


def results(out) -> dict:
    """Every point's parameters and the sweep summary's objectives."""
    params = {}
    for point in sorted(p for p in out.iterdir() if p.name.startswith("point_")):
        with np.load(point / "params.npz") as z:
            params.update({f"{point.name}/{k}": z[k] for k in z.files})
    table = json.loads((out / "sweep_summary.json").read_text())
    return {"params": params, "objectives": [(r["point"], r["objective"], r["best_objective"]) for r in table]}


def assert_same(a, b):
    assert sorted(a["params"]) == sorted(b["params"]) and len(a["params"]) == 4
    for k in a["params"]:
        np.testing.assert_array_equal(a["params"][k], b["params"][k], err_msg=k)
    assert a["objectives"] == b["objectives"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    out = tmp / "out"
    assert cli.main(["run", config(tmp), "--out", str(out), "--no-progress", *SWEEP]) == 0
    return results(out)


def test_two_processes_split_the_groups_and_give_the_results_of_one(tmp_path, reference):
    out = tmp_path / "out"
    res = finish(launch(config(tmp_path), out, 2), timeout=180)
    for k, (rc, _, err) in enumerate(res):
        assert rc == 0, f"process {k}: rc {rc}\n{err[-3000:]}"
    assert_same(results(out), reference)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("group_")) == ["group_000", "group_001"]
    for k, (_, stdout, _) in enumerate(res):  # every process prints every point's line
        assert stdout.count("point_00") == 4, (k, stdout)
    ran_by = {
        p.name: json.loads((p / "summary.json").read_text())["this_process"]["process_index"]
        for p in out.iterdir()
        if p.name.startswith("point_")
    }
    assert ran_by == {
        "point_000_seed=0,optimizer.name=adam": 0,
        "point_001_seed=0,optimizer.name=sgd": 1,
        "point_002_seed=1,optimizer.name=adam": 0,
        "point_003_seed=1,optimizer.name=sgd": 1,
    }


def test_two_processes_resume_an_interrupted_one_process_sweep(tmp_path, reference, monkeypatch):
    """One process stops after group_000's checkpoint at step 10 (group_001 never started);
    two processes resume: process 0 continues group_000 at step 10, process 1 starts
    group_001. The results are the uninterrupted run's."""
    cfg, out = config(tmp_path), tmp_path / "out"
    run_killed_after_checkpoint(monkeypatch, ["run", cfg, "--out", str(out), "--no-progress", *SWEEP])
    assert not (out / "group_001").exists() and not (out / "sweep_summary.json").exists()
    res = finish(launch(cfg, out, 2, "--resume"), timeout=180)
    for k, (rc, _, err) in enumerate(res):
        assert rc == 0, f"process {k}: rc {rc}\n{err[-3000:]}"
    assert "resumed at step 10" in res[0][1] and "no checkpoint in" in res[1][2]
    assert_same(results(out), reference)


def test_a_process_that_stops_stops_the_others_with_one_message_each(tmp_path):
    """sgd with learning rate 1e30 overflows within a few steps (process 1's group); adam
    stays finite (process 0's). Process 1 names the step, process 0 names process 1."""
    out = tmp_path / "out"
    res = finish(
        launch(
            config(tmp_path),
            out,
            2,
            "--set",
            "optimizer.learning_rate=1e30",
            sweep=["--sweep", "optimizer.name=adam,sgd"],
        ),
        timeout=180,
    )
    (rc0, _, err0), (rc1, _, err1) = res
    assert rc1 == 3 and "non-finite objective" in err1 and "point_001" in err1, err1[-3000:]
    assert rc0 == 3 and "process(es) 1 of 2 stopped" in err0 and len(err0.strip().splitlines()) == 1, err0[-3000:]
    assert (out / "point_000_optimizer.name=adam" / "summary.json").exists()
    assert not (out / "sweep_summary.json").exists()
