"""The batch evaluator's synthetic generator (eigjax.app._batch: _threefry2x32, _normals, _generate).

The hash against published known answers and jax.random's own primitive; rows that depend
on (seed, row) only, whatever the chunking; the distribution of random_symmetric (moments
within a few standard errors and a Kolmogorov-Smirnov test, on 1e5 rows of a fixed seed, so
every run sees the same numbers); planted_degenerate's repeated eigenvalue; the stream id in
the fingerprint.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from eigjax.app._batch import (
    BatchConfigError,
    _generate,
    _normals,
    _Source,
    _threefry2x32,
    run_batch_eval,
)

# Random123's known-answer vectors (tests/kat_vectors, "threefry2x32 20"): counter, key, output
KAT_20 = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("ctr,key,out", KAT_20)
def test_threefry_known_answers(ctr, key, out):
    o0, o1 = _threefry2x32(key[0], key[1], jnp.array([ctr[0]], jnp.uint32), jnp.array([ctr[1]], jnp.uint32))
    assert (int(o0[0]), int(o1[0])) == out


def test_threefry_is_jax_randoms_hash():
    from jax.extend.random import threefry2x32_p

    r = np.random.default_rng(0)
    x0, x1 = (jnp.asarray(r.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)) for _ in range(2))
    for k0, k1 in [(0, 0), (0, 7), (0xDEADBEEF, 0x12345678)]:
        got = _threefry2x32(k0, k1, x0, x1)
        want = threefry2x32_p.bind(jnp.full_like(x0, k0), jnp.full_like(x0, k1), x0, x1)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize("kind", ["random_symmetric", "random_general", "planted_degenerate"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_depend_on_seed_and_row_only(kind, dtype):
    """Any set of rows, in any order, drawn in blocks of any size: the same bits per row."""
    inp = {"generator": kind, "n": 3, "count": 2000, "seed": 5, "dtype": dtype}
    whole = _Source(inp).rows(0, 2000)
    for block, step in [(1, 1999), (64, 50), (333, 333), (4096, 2000)]:
        src = _Source(inp)
        src.block = block
        got = np.concatenate([src.rows(s, min(2000, s + step)) for s in range(0, 2000, step)])
        np.testing.assert_array_equal(got, whole)
    perm = np.random.default_rng(1).permutation(2000)[:300]
    gen = jax.jit(lambda rows: _generate(kind, 5, 3, np.dtype(dtype), rows))
    np.testing.assert_array_equal(np.asarray(gen(jnp.asarray(perm, jnp.uint32))), whole[perm])


def test_generated_runs_do_not_depend_on_the_chunk_size(tmp_path):
    base = {"op": "eigh", "grad_loss": "sum_squares", "progress": False, "sample_checks": 4}
    inp = {"generator": "random_symmetric", "n": 3, "count": 1000, "seed": 9, "dtype": "float32"}
    for chunk in (1000, 77):
        run_batch_eval({**base, "chunk_size": chunk, "input": inp}, str(tmp_path / str(chunk)))
    for name in ("eigenvalues", "eigenvectors", "grad"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "77" / f"{name}.npy"), np.load(tmp_path / "1000" / f"{name}.npy")
        )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_random_symmetric_distribution(dtype):
    """(x + x^T) / 2 for x of independent standard normals: symmetric, entries of the upper
    triangle independent normals, diagonal variance 1, off-diagonal variance 1/2.

    1e5 rows, seed 0 (fixed: the test is deterministic); every moment within 5 standard errors
    of its value (a false alarm has probability below 1e-6 per check for a correct generator),
    and a Kolmogorov-Smirnov test of the standardised entries against N(0, 1) at p > 1e-3."""
    nrows = 100_000
    a = _Source({"generator": "random_symmetric", "n": 3, "count": nrows, "seed": 0, "dtype": dtype}).rows(0, nrows)
    assert a.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a, np.swapaxes(a, 1, 2))
    a = a.astype(np.float64)
    iu = np.triu_indices(3)
    for (i, j), var in [((i, j), 1.0 if i == j else 0.5) for i, j in zip(*iu)]:
        z = a[:, i, j]
        assert abs(z.mean()) < 5 * np.sqrt(var / nrows), (i, j, z.mean())
        # the sample variance of N(0, var): standard error var sqrt(2 / N)
        assert abs(z.var() - var) < 5 * var * np.sqrt(2 / nrows), (i, j, z.var())
        s = z / np.sqrt(var)
        # fourth moment of N(0, 1): 3, standard error sqrt((105 - 9) / N)
        assert abs(np.mean(s**4) - 3) < 5 * np.sqrt(96 / nrows), (i, j, np.mean(s**4))
        assert stats.kstest(s, "norm").pvalue > 1e-3, (i, j)
    # independent entries: every pair of the upper triangle uncorrelated (standard error 1 / sqrt(N))
    flat = np.stack([a[:, i, j] / np.sqrt(1.0 if i == j else 0.5) for i, j in zip(*iu)], axis=1)
    corr = np.corrcoef(flat, rowvar=False)
    assert np.max(np.abs(corr - np.eye(6))) < 5 / np.sqrt(nrows)
    # neighbouring rows uncorrelated too (counters differ in the row only)
    assert abs(np.corrcoef(flat[:-1, 0], flat[1:, 0])[0, 1]) < 5 / np.sqrt(nrows)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normals_uniform_grid_is_symmetric_and_open(dtype):
    """The uniform behind each normal never reaches +-1: no infinite normal, tails at 5.5 (float32) or 8.2 sigma."""
    z = np.asarray(_normals(3, jnp.arange(50_000, dtype=jnp.uint32), 6, np.dtype(dtype)))
    assert z.dtype == np.dtype(dtype) and np.all(np.isfinite(z))
    assert np.abs(z).max() < (5.6 if dtype == "float32" else 8.3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_planted_degenerate_has_its_repeated_eigenvalue(dtype):
    nrows, n = 2000, 4
    a = _Source({"generator": "planted_degenerate", "n": n, "count": nrows, "seed": 1, "dtype": dtype}).rows(0, nrows)
    np.testing.assert_array_equal(a, np.swapaxes(a, 1, 2))
    w = np.linalg.eigvalsh(a.astype(np.float64))
    eps = np.finfo(dtype).eps
    scale = np.abs(w).max(axis=1)
    # the two smallest equal up to the rounding of Q diag(w) Q^T ...
    assert np.all(w[:, 1] - w[:, 0] <= 50 * n * eps * scale)
    # ... and the rest generically apart (normals, sorted)
    assert np.median((w[:, 2] - w[:, 1]) / scale) > 1e3 * n * eps


def test_the_stream_is_in_the_fingerprint_and_named_when_resume_is_refused(tmp_path):
    cfg = {
        "op": "eigvalsh",
        "chunk_size": 50,
        "progress": False,
        "sample_checks": 0,
        "input": {"generator": "random_symmetric", "n": 3, "count": 100, "seed": 0, "dtype": "float32"},
    }
    run_batch_eval(cfg, str(tmp_path / "r"))
    prog = tmp_path / "r" / "progress.json"
    record = json.loads(prog.read_text())
    # a run of an older stream: same config, another fingerprint
    record["fingerprint"] = "0123456789abcdef"
    prog.write_text(json.dumps(record))
    with pytest.raises(BatchConfigError, match="generator's stream"):
        run_batch_eval(cfg, str(tmp_path / "r"), resume=True)
