"""Batch evaluation under jax.distributed: several local CPU processes (issue 17).

Each test starts its own processes (``python -m eigjax run``, one per process, with
``JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), every one under a timeout, and stops them all before it returns.
The reference is the same config evaluated by one process (this one).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from eigjax.app._batch import BatchConfigError, run_batch_eval

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ("eigenvalues", "eigenvectors", "grad")
TIMEOUT = 90


def cfg_gen(count=2000, chunk=250, **kw):
    base = {
        "op": "eigh",
        "input": {"generator": "random_symmetric", "n": 3, "count": count, "seed": 5, "dtype": "float64"},
        "chunk_size": chunk,
        "vectors": True,
        "grad_loss": "sum_squares",
        "sample_checks": 32,
        "progress": False,
    }
    base.update(kw)
    return base


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path, cfg):
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump({"experiment": "batch_eval", "batch": cfg}, f)
    return str(path)


def process_env(port, nproc, k):
    """The environment of process ``k`` of ``nproc`` in one jax.distributed run on CPU."""
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES=str(nproc),
        JAX_PROCESS_ID=str(k),
        PYTHONPATH=ROOT,
    )


def launch(config, out, nproc, resume=False, env_extra=None, stderr=None):
    """Start ``nproc`` processes of one jax.distributed run; return their Popen objects.

    ``stderr``: a directory to write ``err<k>`` files to, readable while the processes run.
    """
    port = free_port()
    procs = []
    for k in range(nproc):
        env = process_env(port, nproc, k)
        env.update(env_extra or {})
        args = [sys.executable, "-m", "eigjax", "run", config, "--out", str(out), "--no-progress"]
        if resume:
            args.append("--resume")
        err = subprocess.PIPE if stderr is None else open(os.path.join(stderr, f"err{k}"), "w")  # noqa: SIM115
        procs.append(subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True))
    return procs


def finish(procs, timeout=TIMEOUT):
    """Wait for every process (killing all of them on timeout); return [(rc, stdout, stderr)]."""
    deadline = time.time() + timeout
    out = []
    try:
        for p in procs:
            so, se = p.communicate(timeout=max(1.0, deadline - time.time()))
            out.append((p.returncode, so, se))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def run_all(config, out, nproc, **kw):
    res = finish(launch(config, out, nproc, **kw))
    for k, (rc, _, se) in enumerate(res):
        assert rc == 0, f"process {k}: rc {rc}\n{se[-3000:]}"
    return res


def read_json(path):
    with open(path) as f:
        return json.load(f)


def load(out, name):
    return np.load(os.path.join(out, f"{name}.npy"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    s = run_batch_eval(cfg_gen(), str(out))
    assert s["complete"]
    return {k: load(out, k) for k in NAMES}


@pytest.mark.parametrize("nproc", [2, 3])
def test_processes_give_the_outputs_of_one(tmp_path, reference, nproc):
    cfg = cfg_gen()  # 8 chunks: with 3 processes, 3 + 3 + 2
    out = tmp_path / "o"
    res = run_all(write_config(tmp_path / "c.yaml", cfg), out, nproc)
    for name in NAMES:
        np.testing.assert_array_equal(load(out, name), reference[name])
    s = read_json(out / "summary.json")
    assert s["complete"] is True and s["process_count"] == nproc and s["rows"] == 2000
    assert s["rows_this_run"] == 2000 and s["chunks_this_run"] == 8 and s["rows_resumed"] == 0
    assert [p["process_index"] for p in s["per_process"]] == list(range(nproc))
    assert [p["chunks_this_run"] for p in s["per_process"]] == [len(range(k, 8, nproc)) for k in range(nproc)]
    assert s["matrices_per_second"] > 0 and s["device_count"] == nproc
    assert s["accuracy"]["sample_rows"] == 32 and s["accuracy"]["max_relative_residual"] < 1e-13
    assert s["accuracy"]["max_orthogonality_error"] < 1e-13
    for k in range(nproc):  # each process's part, and its progress file, by name
        part = read_json(out / f"summary.{k}.json")
        assert part["process_index"] == k and part["complete"] is None
        prog = read_json(out / ("progress.json" if k == 0 else f"progress.{k}.json"))
        assert prog["done_chunks"] == list(range(k, 8, nproc)) and prog["process_count"] == nproc
    assert "2000 matrices" in res[0][1]


def test_a_killed_process_then_resume_loses_and_repeats_no_row(tmp_path, reference):
    cfg = cfg_gen(chunk=200)  # 10 chunks: process 0 takes 0, 2, .., 8; process 1 takes 1, 3, .., 9
    config = write_config(tmp_path / "c.yaml", cfg)
    out = tmp_path / "o"
    # process 1 SIGKILLs itself right after its first chunk is on disk (a host dying)
    procs = launch(config, out, 2, env_extra={"EIGJAX_BATCH_TEST_KILL_AFTER": "1:1"}, stderr=str(tmp_path))
    try:
        procs[1].wait(timeout=TIMEOUT)
        # the survivor finishes its chunks, then says in one line that it lost the other
        # (it would then wait for jax.distributed's shutdown timeout before exiting)
        deadline = time.time() + TIMEOUT
        while "lost contact" not in (tmp_path / "err0").read_text() and time.time() < deadline:
            time.sleep(0.2)
        err0 = (tmp_path / "err0").read_text()
        assert "process 0 of 2 lost contact with the others" in err0 and "--resume" in err0, err0[-2000:]
        assert "Traceback" not in err0
    finally:
        for p in procs:  # the survivor would wait for it at the final barrier: stop it too
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
    assert procs[1].returncode == -signal.SIGKILL
    assert read_json(out / "progress.1.json")["done_chunks"] == [1]
    before = read_json(out / "progress.json")["done_chunks"]
    assert before == [0, 2, 4, 6, 8]  # the survivor finished its own chunks
    assert not (out / "summary.json").exists()  # no global summary for an unfinished run

    # another process count is refused, on every process, before anything is written
    res = finish(launch(config, out, 3, resume=True))
    assert [rc for rc, _, _ in res] == [2, 2, 2]
    assert all("2 process(es)" in se and "JAX_NUM_PROCESSES=2" in se for _, _, se in res), res[0][2]
    with pytest.raises(BatchConfigError, match="made by 2 process"):
        run_batch_eval(cfg, str(out), resume=True)
    # another config is refused
    res = finish(launch(write_config(tmp_path / "d.yaml", {**cfg, "grad_loss": "sum_abs"}), out, 2, resume=True))
    assert [rc for rc, _, _ in res] == [2, 2] and "differs" in res[0][2]
    # without --resume: refused
    res = finish(launch(config, out, 2))
    assert [rc for rc, _, _ in res] == [2, 2] and "--resume" in res[0][2]

    run_all(config, out, 2, resume=True)
    for name in NAMES:
        np.testing.assert_array_equal(load(out, name), reference[name])
    s = read_json(out / "summary.json")
    assert s["complete"] is True and s["resumed"] is True
    # every chunk computed once: by the first run or by the resumed one, never both
    assert s["chunks_this_run"] == 10 - len(before) - 1
    assert s["rows_this_run"] + s["rows_resumed"] == 2000
    assert [p["rows_resumed"] for p in s["per_process"]] == [200 * len(before), 200]
    assert read_json(out / "progress.json")["done_chunks"] == [0, 2, 4, 6, 8]
    assert read_json(out / "progress.1.json")["done_chunks"] == [1, 3, 5, 7, 9]


def test_complete_is_checked_against_the_progress_files(tmp_path):
    """A part that claims its chunks is not trusted: a chunk missing from the progress
    files makes summary.json say complete: false, and names it."""
    cfg = cfg_gen(count=400, chunk=100)
    config = write_config(tmp_path / "c.yaml", cfg)
    out = tmp_path / "o"
    run_all(config, out, 2)
    prog = read_json(out / "progress.1.json")
    prog["done_chunks"] = [3]  # chunk 1 "lost"
    (out / "progress.1.json").write_text(json.dumps(prog))
    (out / "summary.1.json").unlink()
    # resume recomputes chunk 1 only, and the merged summary is complete again
    run_all(config, out, 2, resume=True)
    s = read_json(out / "summary.json")
    assert s["complete"] is True and s["chunks_this_run"] == 1
    from eigjax.app._batch import (
        _fingerprint,
        _merge_parts,
        _Output,
        _output_specs,
        _Progress,
        _Source,
        validate_config,
    )

    v = validate_config(cfg)
    src = _Source(v["input"])
    prog["done_chunks"] = [3]
    (out / "progress.1.json").write_text(json.dumps(prog))
    outs = {
        k: _Output(str(out / f"{k}.npy"), (src.count, *shp), dt)
        for k, (shp, dt) in _output_specs(v, src.n, src.dtype).items()
    }
    for o in outs.values():
        o.open(create=False)
    try:
        merged = _merge_parts(v, src, outs, _Progress(str(out), _fingerprint(v, src.count, src.n, src.dtype), 4, 0, 2))
    finally:
        for o in outs.values():
            o.close()
    assert merged["complete"] is False and any("chunks 1 not recorded" in m for m in merged["notes"])
    assert merged["accuracy"] == {}


def test_a_refusal_on_one_process_stops_every_process(tmp_path):
    """Process 1's lock is held by another run: process 1 refuses, and process 0 does not
    wait for it at a barrier: both exit 2, nothing written."""
    from eigjax.app._files import DirLock

    out = tmp_path / "o"
    out.mkdir()
    config = write_config(tmp_path / "c.yaml", cfg_gen(count=400, chunk=100))
    with DirLock(str(out / "batch_eval.1.lock")):
        res = finish(launch(config, out, 2))
    assert [rc for rc, _, _ in res] == [2, 2]
    assert "batch_eval.1.lock is locked by another run" in res[1][2]
    assert "process(es) 1 of 2 refused to start" in res[0][2]
    assert sorted(os.listdir(out)) == ["batch_eval.1.lock", "batch_eval.lock"]
