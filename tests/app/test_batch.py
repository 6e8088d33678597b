"""Batch evaluation (eigjax.app._batch): config errors, sharded == unsharded, resume after kill.

Sharded runs use XLA_FLAGS=--xla_force_host_platform_device_count=4 in a subprocess
(the flag must be set before jax is imported). Several processes (jax.distributed):
tests/app/test_distributed.py.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from eigjax.app._batch import BatchConfigError, run_batch_eval, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RUNNER = """
import json, sys, jax
jax.config.update("jax_enable_x64", True)
from eigjax.app._batch import run_batch_eval
cfg, out, resume = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
s = run_batch_eval(cfg, out, resume)
print(json.dumps({"ndev": s["local_device_count"], "chunks_this_run": s["chunks_this_run"]}))
"""


def run_sub(cfg, out, ndev, resume=False, env_extra=None, wait=True):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ndev}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.update(env_extra or {})
    args = [sys.executable, "-c", RUNNER, json.dumps(cfg), str(out), "1" if resume else "0"]
    if not wait:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def load(out, name):
    return np.load(os.path.join(out, f"{name}.npy"))


def cfg_gen(n, count, chunk, **kw):
    base = {
        "op": "eigh",
        "input": {"generator": "random_symmetric", "n": n, "count": count, "seed": 3, "dtype": "float64"},
        "chunk_size": chunk,
        "vectors": True,
        "grad_loss": "sum_squares",
        "sample_checks": 16,
        "progress": False,
    }
    base.update(kw)
    return base


# n = 3 in chunks of 130 >= SMALL_MIN_BATCH takes the fast path; n = 6 in chunks of 10 LAPACK.
# Chunk sizes not divisible by 4 devices, and a final partial chunk (40 and 7 rows).
@pytest.mark.parametrize("n, count, chunk", [(3, 300, 130), (6, 37, 10)])
def test_sharded_equals_unsharded(tmp_path, n, count, chunk):
    cfg = cfg_gen(n, count, chunk)
    info4 = run_sub(cfg, tmp_path / "d4", 4)
    s1 = run_batch_eval(cfg, str(tmp_path / "d1"))  # this process: one CPU device
    assert info4["ndev"] == 4 and s1["local_device_count"] == 1
    for name in ("eigenvalues", "eigenvectors", "grad"):
        x4, x1 = load(tmp_path / "d4", name), load(tmp_path / "d1", name)
        assert x4.shape[0] == count
        np.testing.assert_array_equal(x4, x1)
    # Independent oracle on every row: regenerate nothing, check against LAPACK.
    w = load(tmp_path / "d4", "eigenvalues")
    assert np.all(np.isfinite(w)) and not np.any(np.all(w == 0, axis=-1))
    g = load(tmp_path / "d4", "grad")
    # grad of sum(w^2) is 2A (symmetric A): recovers the inputs; their spectra must match w.
    np.testing.assert_allclose(np.linalg.eigvalsh(g / 2), w, atol=1e-10)
    summ = json.load(open(tmp_path / "d4" / "summary.json"))
    assert summ["local_device_count"] == 4 and summ["complete"]
    assert summ["accuracy"]["max_relative_residual"] < 1e-13
    assert summ["accuracy"]["max_orthogonality_error"] < 1e-13


def test_interrupt_and_resume(tmp_path):
    cfg = cfg_gen(4, 240, 16)  # 15 chunks
    ref = tmp_path / "ref"
    run_batch_eval(cfg, str(ref))  # uninterrupted, unsharded
    out = tmp_path / "run"
    p = run_sub(cfg, out, 2, env_extra={"EIGJAX_BATCH_TEST_DELAY": "0.15"}, wait=False)
    prog = out / "progress.json"
    deadline = time.time() + 200
    done = []
    while time.time() < deadline:
        if prog.exists():
            try:
                done = json.load(open(prog))["done_chunks"]
            except (json.JSONDecodeError, OSError):
                done = []
            if len(done) >= 3:
                break
        time.sleep(0.05)
    p.kill()
    p.wait()
    done = json.load(open(prog))["done_chunks"]
    assert 3 <= len(done) < 15, f"kill did not land mid-run: {len(done)} chunks done"
    # Without resume=True an existing run is not overwritten.
    with pytest.raises(BatchConfigError, match="resume"):
        run_batch_eval(cfg, str(out), resume=False)
    info = run_sub(cfg, out, 2, resume=True)
    assert info["chunks_this_run"] == 15 - len(done)  # finished chunks not recomputed
    assert sorted(json.load(open(prog))["done_chunks"]) == list(range(15))
    for name in ("eigenvalues", "eigenvectors", "grad"):
        np.testing.assert_array_equal(load(out, name), load(ref, name))
    # Resuming with a different config is refused.
    with pytest.raises(BatchConfigError, match="differs"):
        run_batch_eval({**cfg, "grad_loss": "sum_abs"}, str(out), resume=True)


def test_file_inputs_and_ops(tmp_path):
    r = np.random.default_rng(0)
    x = r.standard_normal((13, 4, 4))
    s = (x + np.swapaxes(x, 1, 2)) / 2
    np.save(tmp_path / "s.npy", s)
    np.savez(tmp_path / "g.npz", mats=x)
    base = {"chunk_size": 5, "progress": False, "sample_checks": 13}
    out = run_batch_eval({**base, "op": "eigvalsh", "input": {"path": str(tmp_path / "s.npy")}}, str(tmp_path / "o1"))
    np.testing.assert_allclose(load(tmp_path / "o1", "eigenvalues"), np.linalg.eigvalsh(s), atol=1e-12)
    assert out["accuracy"]["max_eigenvalue_error_rel"] < 1e-13
    assert not os.path.exists(tmp_path / "o1" / "eigenvectors.npy")
    out = run_batch_eval(
        {**base, "op": "eig", "input": {"path": str(tmp_path / "g.npz"), "key": "mats"}}, str(tmp_path / "o2")
    )
    w = load(tmp_path / "o2", "eigenvalues")
    want = np.linalg.eigvals(x)
    for wi, ri in zip(w, want):  # same multiset of eigenvalues
        assert np.abs(wi[:, None] - ri[None, :]).min(axis=1).max() < 1e-10
    assert out["accuracy"]["max_relative_residual"] < 1e-12
    out = run_batch_eval(
        {
            **base,
            "op": "eigvals",
            "grad_loss": "sum_squares",
            "input": {"generator": "planted_degenerate", "n": 3, "count": 7, "dtype": "float64"},
        },
        str(tmp_path / "o3"),
    )
    w = load(tmp_path / "o3", "eigenvalues")
    srt = np.sort(w.real, axis=-1)
    assert np.all(np.abs(srt[:, 1] - srt[:, 0]) < 1e-12)  # the planted double eigenvalue
    assert np.all(np.isfinite(load(tmp_path / "o3", "grad")))


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"op": "svd", "input": {"generator": "random_symmetric", "n": 2, "count": 1}}, "op"),
        ({"chunk_size": 0, "input": {"generator": "random_symmetric", "n": 2, "count": 1}}, "chunk_size"),
        ({"input": {"generator": "nope", "n": 2, "count": 1}}, "input.generator"),
        ({"input": {"generator": "random_symmetric", "n": 0, "count": 1}}, "input.n"),
        ({"input": {"generator": "random_symmetric", "n": 2, "count": 2**32 + 1}}, "input.count"),
        ({"input": {"path": "/nonexistent.npy"}}, "input.path"),
        ({"input": {"generator": "random_symmetric", "n": 2, "count": 1}, "grad_loss": "x"}, "grad_loss"),
        ({"input": {"generator": "random_symmetric", "n": 2, "count": 1}, "chunks": 3}, "chunks"),
        (
            {"op": "eigvalsh", "vectors": True, "input": {"generator": "random_symmetric", "n": 2, "count": 1}},
            "vectors",
        ),
    ],
)
def test_config_errors_name_the_key(cfg, key):
    with pytest.raises(BatchConfigError, match=f"key `{key}`") as e:
        validate_config(cfg)
    assert isinstance(e.value, ValueError) and "got" in str(e.value)


def test_float64_input_is_computed_in_float64_and_nan_rows_are_reported(tmp_path):
    """float64 data was silently computed in float32 (eigenvalue error 3e-7); a NaN row
    made the accuracy check raise after every chunk was done, so no run could finish."""
    r = np.random.default_rng(3)
    x = r.standard_normal((7, 3, 3))
    x = x + np.swapaxes(x, -1, -2)
    x[2, 0, 0] = np.nan
    np.save(tmp_path / "a.npy", x)
    base = {"op": "eigh", "chunk_size": 3, "vectors": True, "grad_loss": None, "progress": False, "sample_checks": 7}
    s = run_batch_eval({**base, "input": {"path": str(tmp_path / "a.npy")}}, str(tmp_path / "o"))
    w = np.load(tmp_path / "o" / "eigenvalues.npy")
    assert w.dtype == np.float64 and np.all(np.isnan(w[2]))
    ok = [0, 1, 3, 4, 5, 6]
    np.testing.assert_allclose(w[ok], np.linalg.eigvalsh(x[ok]), atol=1e-13)
    assert s["accuracy"]["sample_rows_not_finite"] == 1 and s["accuracy"]["max_relative_residual"] < 1e-14
    s = run_batch_eval(
        {**base, "input": {"generator": "random_symmetric", "n": 3, "count": 5, "dtype": "float64"}},
        str(tmp_path / "g"),
    )
    assert s["accuracy"]["max_eigenvalue_error_rel"] < 1e-14


def test_resume_refuses_an_input_file_rewritten_in_place(tmp_path):
    r = np.random.default_rng(4)
    x = r.standard_normal((7, 3, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", x + np.swapaxes(x, -1, -2))
    cfg = {
        "op": "eigvalsh",
        "chunk_size": 3,
        "vectors": False,
        "grad_loss": None,
        "progress": False,
        "input": {"path": str(tmp_path / "a.npy")},
    }
    run_batch_eval(cfg, str(tmp_path / "o"))
    time.sleep(0.01)
    np.save(tmp_path / "a.npy", 10 * (x + np.swapaxes(x, -1, -2)))  # same shape and dtype
    with pytest.raises(BatchConfigError, match="input file"):
        run_batch_eval(cfg, str(tmp_path / "o"), resume=True)
    with pytest.raises(BatchConfigError, match="--resume"):
        run_batch_eval(cfg, str(tmp_path / "o"))


def test_a_directory_of_npy_shards_is_one_input(tmp_path):
    """Shards of 700, 0, 500 and 800 rows (sorted by name), chunks of 300 that straddle
    them: the outputs are those of the same rows in one .npy file."""
    r = np.random.default_rng(7)
    x = r.standard_normal((2000, 3, 3))
    x = x + np.swapaxes(x, 1, 2)
    np.save(tmp_path / "all.npy", x)
    shards = tmp_path / "shards"
    shards.mkdir()
    for name, (lo, hi) in zip(
        ["part-000.npy", "part-001.npy", "part-002.npy", "part-010.npy"],
        [(0, 700), (700, 700), (700, 1200), (1200, 2000)],
    ):
        np.save(shards / name, x[lo:hi])
    (shards / "README.txt").write_text("not a shard")
    base = {
        "op": "eigh",
        "chunk_size": 300,
        "vectors": True,
        "grad_loss": "sum_squares",
        "progress": False,
        "sample_checks": 16,
    }
    s = run_batch_eval({**base, "input": {"path": str(shards)}}, str(tmp_path / "od"))
    run_batch_eval({**base, "input": {"path": str(tmp_path / "all.npy")}}, str(tmp_path / "of"))
    assert s["rows"] == 2000 and s["complete"]
    for name in ("eigenvalues", "eigenvectors", "grad"):
        np.testing.assert_array_equal(load(tmp_path / "od", name), load(tmp_path / "of", name))
    np.testing.assert_allclose(load(tmp_path / "od", "grad"), 2 * x, atol=1e-12)
    from eigjax.app._batch import _Source

    src = _Source({"path": str(shards)})
    assert all(isinstance(p, np.memmap) for p in src.data.parts)  # memory-mapped, not read
    # a shard added after the run: the resume is refused (the input changed)
    np.save(shards / "part-011.npy", x[:5])
    with pytest.raises(BatchConfigError, match="input file"):
        run_batch_eval({**base, "input": {"path": str(shards)}}, str(tmp_path / "od"), resume=True)


@pytest.mark.parametrize(
    "shape, dtype, what",
    [
        ((5, 4, 4), np.float64, r"\(5, 4, 4\) float64"),
        ((5, 3, 3), np.float32, r"\(5, 3, 3\) float32"),
        ((5, 9), np.float64, r"\(5, 9\) float64"),
    ],
)
def test_mismatched_shards_are_one_error_naming_the_shard(tmp_path, shape, dtype, what):
    np.save(tmp_path / "a.npy", np.zeros((4, 3, 3)))
    np.save(tmp_path / "b.npy", np.zeros(shape, dtype))
    cfg = {"op": "eigvalsh", "progress": False, "input": {"path": str(tmp_path)}}
    with pytest.raises(BatchConfigError, match=f"key `input.path`.*a.npy.*b.npy: shape {what}"):
        run_batch_eval(cfg, str(tmp_path / "o"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BatchConfigError, match="at least one .npy shard"):
        run_batch_eval({**cfg, "input": {"path": str(empty)}}, str(tmp_path / "o2"))


def test_npz_members_stored_uncompressed_are_memory_mapped(tmp_path):
    from eigjax.app._batch import _Source

    r = np.random.default_rng(8)
    x = r.standard_normal((50, 3, 3))
    np.savez(tmp_path / "s.npz", first=np.arange(3.0), mats=x)  # ZIP_STORED
    np.savez_compressed(tmp_path / "c.npz", mats=x)
    np.save(tmp_path / "x.npy", x)
    stored = _Source({"path": str(tmp_path / "s.npz"), "key": "mats"}).data
    assert isinstance(stored, np.memmap)
    np.testing.assert_array_equal(stored, x)
    compressed = _Source({"path": str(tmp_path / "c.npz")}).data
    assert not isinstance(compressed, np.memmap)  # read into memory (documented)
    np.testing.assert_array_equal(compressed, x)
    base = {"op": "eig", "chunk_size": 16, "progress": False, "sample_checks": 4}
    for name, inp in [
        ("s", {"path": str(tmp_path / "s.npz"), "key": "mats"}),
        ("c", {"path": str(tmp_path / "c.npz")}),
        ("x", {"path": str(tmp_path / "x.npy")}),
    ]:
        run_batch_eval({**base, "input": inp}, str(tmp_path / name))
    for name in ("s", "c"):
        np.testing.assert_array_equal(load(tmp_path / name, "eigenvalues"), load(tmp_path / "x", "eigenvalues"))


@pytest.mark.parametrize("kind", ["random_symmetric", "random_general", "planted_degenerate"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_generated_rows_do_not_depend_on_chunking(kind, dtype):
    """Counter-based generator: row i is a function of (seed, i) only, whatever the chunk
    (and so the process) it is drawn in, and the compiled block size."""
    from eigjax.app._batch import _Source

    inp = {"generator": kind, "n": 4, "count": 1000, "seed": 11, "dtype": dtype}
    whole = _Source(inp).rows(0, 1000)
    assert whole.shape == (1000, 4, 4) and whole.dtype == np.dtype(dtype)
    for chunk in (1, 7, 300):
        src = _Source(inp)
        src.block = chunk if chunk > 1 else 64  # a short last chunk drawn from a larger block
        starts = range(0, 1000, chunk) if chunk > 1 else range(0, 1000, 97)
        step = chunk if chunk > 1 else 97
        got = np.concatenate([src.rows(s, min(1000, s + step)) for s in starts])
        np.testing.assert_array_equal(got, whole)
    idx = np.array([0, 5, 999])
    np.testing.assert_array_equal(_Source(inp).take(idx), whole[idx])
    other = _Source({**inp, "seed": 12}).rows(0, 1000)
    assert not np.any(np.all(other == whole, axis=(1, 2)))
    if kind != "planted_degenerate":  # the entries are standard normal (halved sums for symmetric)
        z = (
            whole.reshape(-1)
            if kind == "random_general"
            else (2 * whole)[:, np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]].reshape(-1)
        )
        scale = 1.0 if kind == "random_general" else np.sqrt(2)
        assert abs(z.mean()) < 0.05 and abs(z.std() / scale - 1) < 0.05


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_generated_input_is_the_input_the_outputs_were_computed_from(tmp_path, dtype):
    """The rows are drawn inside the program that computes them: the outputs equal those of
    the same rows drawn alone (what the sample checks read) and given as a file."""
    from eigjax.app._batch import _Source

    inp = {"generator": "random_symmetric", "n": 3, "count": 600, "seed": 2, "dtype": dtype}
    np.save(tmp_path / "x.npy", _Source(inp).rows(0, 600))
    base = {"op": "eigh", "chunk_size": 256, "grad_loss": "sum_squares", "progress": False, "sample_checks": 8}
    run_batch_eval({**base, "input": inp}, str(tmp_path / "g"))
    run_batch_eval({**base, "input": {"path": str(tmp_path / "x.npy")}}, str(tmp_path / "f"))
    for name in ("eigenvalues", "eigenvectors", "grad"):
        np.testing.assert_array_equal(load(tmp_path / "g", name), load(tmp_path / "f", name))
