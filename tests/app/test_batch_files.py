"""Batch evaluation (eigjax.app._batch) against damaged, full, shared or hostile output directories.

Issue #19 items 8 (truncated output then --resume), 9 (disk full), 10 (symlinks in --out),
14 (refusals before anything is written; memory; lock; damaged progress.json) and 20
(resumed throughput, nothing to resume). Each test failed on the code before the fix.
"""

import errno
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from eigjax.app._batch import BatchConfigError, run_batch_eval

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ("eigenvalues", "eigenvectors", "grad")


def cfg_gen(count=40, chunk=8, n=3):  # 5 chunks
    return {
        "op": "eigh",
        "input": {"generator": "random_symmetric", "n": n, "count": count, "seed": 1, "dtype": "float64"},
        "chunk_size": chunk,
        "vectors": True,
        "grad_loss": "sum_squares",
        "sample_checks": 8,
        "progress": False,
    }


def load(out, name):
    return np.load(os.path.join(out, f"{name}.npy"))


def header_len(path):
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def done_chunks(out):
    return json.load(open(os.path.join(out, "progress.json")))["done_chunks"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    run_batch_eval(cfg_gen(), str(out))
    return {k: load(out, k) for k in NAMES}


def batch_run_error():
    from eigjax.app._batch import BatchRunError  # not in the old code: the test fails there

    return BatchRunError


# ------------------------------------------------------------ item 8: damaged outputs


def _truncate(path):  # keep 17 rows and a part of the 18th: chunks 0, 1 intact
    rowbytes = 3 * 3 * 8
    os.truncate(path, header_len(path) + 17 * rowbytes + 5)


def _wrong_dtype(path):
    np.save(path, np.ones((40, 3, 3), np.float32))


@pytest.mark.parametrize("damage, redo", [(_truncate, 3), (_wrong_dtype, 5), (os.unlink, 5)])
def test_resume_recomputes_rows_missing_from_a_damaged_output(tmp_path, reference, capsys, damage, redo):
    """Old code: a truncated file resumed to zero rows and complete: true; a missing one was refused."""
    out = str(tmp_path / "o")
    run_batch_eval(cfg_gen(), out)
    damage(os.path.join(out, "eigenvectors.npy"))
    s = run_batch_eval(cfg_gen(), out, resume=True)
    assert s["complete"] and s["chunks_this_run"] == redo
    for k in NAMES:
        np.testing.assert_array_equal(load(out, k), reference[k])
    assert sorted(done_chunks(out)) == list(range(5))
    err = capsys.readouterr().err
    assert "eigenvectors.npy" in err and "recomput" in err


def test_an_output_longer_than_expected_is_cut_back(tmp_path, reference):
    out = str(tmp_path / "o")
    run_batch_eval(cfg_gen(), out)
    with open(os.path.join(out, "grad.npy"), "ab") as f:
        f.write(b"junk" * 100)
    s = run_batch_eval(cfg_gen(), out, resume=True)
    assert s["complete"] and s["chunks_this_run"] == 0
    np.testing.assert_array_equal(load(out, "grad"), reference["grad"])


# ------------------------------------------------------------------ item 9: disk full


def _no_space(fd, size):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_at_allocation_is_one_message_before_any_work(tmp_path, monkeypatch, reference):
    """Old code: sparse memmaps, so a full disk was a SIGBUS in the middle of the run."""
    import eigjax.app._files

    out = tmp_path / "o"
    calls = []
    real = eigjax.app._files.allocate

    def second_file_does_not_fit(fd, size):  # eigenvalues.npy fits, eigenvectors.npy does not
        calls.append(size)
        (real if len(calls) == 1 else _no_space)(fd, size)

    monkeypatch.setattr(eigjax.app._files, "allocate", second_file_does_not_fit)
    with pytest.raises(
        batch_run_error(), match=r"disk full: cannot reserve 3\d\d\d bytes for .*eigenvectors\.npy"
    ) as e:
        run_batch_eval(cfg_gen(), str(out))
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    assert sorted(os.listdir(out)) == ["batch_eval.lock"]  # nothing half-made is left
    monkeypatch.undo()
    run_batch_eval(cfg_gen(), str(out))  # the same command works once there is space
    np.testing.assert_array_equal(load(out, "grad"), reference["grad"])


def test_disk_full_on_resume_loses_no_finished_row(tmp_path, monkeypatch, reference):
    import eigjax.app._files

    out = str(tmp_path / "o")
    run_batch_eval(cfg_gen(), out)
    _truncate(os.path.join(out, "grad.npy"))
    real = eigjax.app._files.allocate

    def no_space_to_grow(fd, size):  # a full disk: files that need no new block still pass
        (_no_space if os.fstat(fd).st_size < size else real)(fd, size)

    monkeypatch.setattr(eigjax.app._files, "allocate", no_space_to_grow)
    with pytest.raises(batch_run_error(), match=r"disk full.*grad\.npy.*--resume"):
        run_batch_eval(cfg_gen(), out, resume=True)
    assert done_chunks(out) == [0, 1]  # progress no longer claims the lost rows
    for k in ("eigenvalues", "eigenvectors"):
        np.testing.assert_array_equal(load(out, k), reference[k])
    monkeypatch.undo()
    s = run_batch_eval(cfg_gen(), out, resume=True)
    assert s["complete"] and s["chunks_this_run"] == 3
    np.testing.assert_array_equal(load(out, "grad"), reference["grad"])


# ------------------------------------------------------------- item 10: symlinks


@pytest.mark.parametrize(
    "name", ["eigenvalues.npy", "eigenvectors.npy", "grad.npy", "progress.json", "summary.json", "batch_eval.lock"]
)
@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_in_out_is_never_written_through(tmp_path, name, dangling):
    """Old code: a fresh run overwrote (or created) the link's target outside --out."""
    out, outside = tmp_path / "o", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    target = outside / name
    if not dangling:
        target.write_bytes(b"precious")
    os.symlink(target, out / name)
    with pytest.raises(batch_run_error(), match=f"symbolic link .*{name}") as e:
        run_batch_eval(cfg_gen(), str(out))
    assert e.value.exit_code == 2
    assert os.listdir(outside) == ([] if dangling else [name])
    if not dangling:
        assert target.read_bytes() == b"precious"
    assert os.path.islink(out / name)


def test_a_symlink_planted_before_resume_is_refused(tmp_path):
    out, target = tmp_path / "o", tmp_path / "precious.json"
    run_batch_eval(cfg_gen(), str(out))
    target.write_text("precious")
    os.unlink(out / "summary.json")
    os.symlink(target, out / "summary.json")
    with pytest.raises(batch_run_error(), match="symbolic link"):
        run_batch_eval(cfg_gen(), str(out), resume=True)
    assert target.read_text() == "precious" and os.path.islink(out / "summary.json")


# ------------------------------------------------- item 14: one message, nothing written


@pytest.mark.parametrize(
    "shape, dtype, what",
    [((5, 3, 3), np.float16, "float16"), ((5, 0, 0), np.float64, "n >= 1"), ((0, 3, 3), np.float64, "count >= 1")],
)
def test_unusable_input_is_refused_before_anything_is_written(tmp_path, shape, dtype, what):
    """Old code: float16 and n = 0 were refused only after the output files existed."""
    np.save(tmp_path / "a.npy", np.zeros(shape, dtype))
    out = tmp_path / "o"
    cfg = {"op": "eigvalsh", "progress": False, "input": {"path": str(tmp_path / "a.npy")}}
    with pytest.raises(BatchConfigError, match=what) as e:
        run_batch_eval(cfg, str(out))
    assert "a.npy" in str(e.value) and "\n" not in str(e.value)
    assert not out.exists() or os.listdir(out) == []


def test_memory_limit_below_the_input_size_is_one_message(tmp_path, monkeypatch):
    """Old code: a raw MemoryError traceback (compressed .npz members are read into memory)."""
    import eigjax.app._batch

    np.savez_compressed(tmp_path / "a.npz", x=np.zeros((4, 3, 3)))

    def no_memory(*a, **k):
        raise MemoryError("Unable to allocate 153. MiB for an array")

    monkeypatch.setattr(eigjax.app._batch.np, "load", no_memory)
    cfg = {"op": "eigvalsh", "progress": False, "input": {"path": str(tmp_path / "a.npz")}}
    with pytest.raises(batch_run_error(), match=r"not enough memory.*a\.npz.*\.npy") as e:
        run_batch_eval(cfg, str(tmp_path / "o"))
    assert e.value.exit_code == 2 and not (tmp_path / "o").exists()


def test_damaged_progress_json_is_one_message_naming_it(tmp_path):
    out = tmp_path / "o"
    run_batch_eval(cfg_gen(), str(out))
    for bad in ('{"fingerprint": "x", "done', "[1, 2]", '{"done_chunks": 3}'):
        (out / "progress.json").write_text(bad)
        with pytest.raises(batch_run_error(), match=r"progress\.json.*damaged") as e:
            run_batch_eval(cfg_gen(), str(out), resume=True)
        assert e.value.exit_code == 2 and "\n" not in str(e.value)


def _cli(tmp_path, out, *extra):
    import yaml

    from eigjax.app._cli import main

    cfg = tmp_path / "batch.yaml"
    cfg.write_text(yaml.safe_dump({"experiment": "batch_eval", "batch": cfg_gen()}))
    return main(["run", str(cfg), "--out", str(out), "--no-progress", *extra])


def test_cli_prints_one_line_and_exit_code(tmp_path, capsys):
    out = tmp_path / "o"
    assert _cli(tmp_path, out) == 0
    capsys.readouterr()
    (out / "progress.json").write_text("{")
    assert _cli(tmp_path, out, "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "progress.json" in err and "Traceback" not in err


def test_two_runs_on_one_out_do_not_interleave(tmp_path):
    """Old code: a second run (or --resume) on the same --out wrote into the same files."""
    out = tmp_path / "o"
    code = (
        "import json, sys, jax; jax.config.update('jax_enable_x64', True); "
        "from eigjax.app._batch import run_batch_eval; run_batch_eval(json.loads(sys.argv[1]), sys.argv[2])"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "EIGJAX_BATCH_TEST_DELAY": "2"}
    p = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(cfg_gen()), str(out)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while not (out / "progress.json").exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        with pytest.raises(batch_run_error(), match=f"batch_eval.lock.*pid {p.pid}") as e:
            run_batch_eval(cfg_gen(), str(out), resume=True)
        assert e.value.exit_code == 2
    finally:
        p.kill()
        p.wait()
    s = run_batch_eval(cfg_gen(), str(out), resume=True)  # the lock died with its holder
    assert s["complete"]


# --------------------------------------------------------- item 20: what a resume says


def test_resumed_throughput_is_labelled_and_nothing_to_resume_is_said(tmp_path, capsys):
    out = tmp_path / "o"
    assert _cli(tmp_path, out, "--resume") == 0  # nothing there yet
    cap = capsys.readouterr()
    assert "nothing to resume" in cap.err and "resumed from disk" not in cap.out
    prog = json.load(open(out / "progress.json"))
    prog["done_chunks"] = [0, 1]
    (out / "progress.json").write_text(json.dumps(prog))
    assert _cli(tmp_path, out, "--resume") == 0
    line = capsys.readouterr().out
    assert "24 computed by this run" in line and "16 resumed" in line and "over this run's 24" in line
    assert _cli(tmp_path, out, "--resume") == 0
    line = capsys.readouterr().out
    assert "nothing to resume" in line and "matrices/s" not in line


LIMITED = """
import resource, sys, jax
jax.devices()  # the runtime's own address space first
from eigjax.app._cli import main
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (48 << 20), resource.RLIM_INFINITY))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")
def test_a_real_memory_limit_below_the_input_size(tmp_path):
    """Old code: a MemoryError traceback from np.load (exit 1)."""
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "experiment": "batch_eval",
                "batch": {
                    "op": "eigvalsh",
                    "chunk_size": 100,
                    "vectors": False,
                    "input": {"path": str(tmp_path / "big.npz")},
                },
            }
        )
    )
    # 80 MB, compressed (so read whole, not memory-mapped): over the 48 MB headroom
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros((1000, 100, 100)))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    p = subprocess.run(
        [sys.executable, "-c", LIMITED, "run", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.count("\n") == 1 and "not enough memory" in p.stderr and "big.npz" in p.stderr
    assert not (tmp_path / "o").exists()
