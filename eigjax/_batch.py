"""Batch evaluation of eigendecompositions (and gradients) over many matrices.

``run_batch_eval(cfg, out_dir, resume)`` reads matrices from a ``.npy``/``.npz`` file
(memory-mapped, so inputs larger than RAM work) or a deterministic synthetic generator,
processes fixed-size chunks, shards each chunk over all local devices (a 1-D ``Mesh``
and ``NamedSharding``; the chunk is padded with identity matrices to a multiple of the
device count and the padding dropped), and writes results chunk by chunk into ``.npy``
files preallocated with ``np.lib.format.open_memmap``.

Resume. After a chunk's rows are written and flushed, its index is added to
``progress.json`` (written to a temporary file, fsync'd, then ``os.replace``d: atomic
on POSIX). A resumed run skips the chunks listed there and recomputes any other chunk
completely, so no row is lost or written twice; a chunk interrupted mid-write is simply
redone. The progress file records a fingerprint of the config and refuses to resume a
different one.

Generators are deterministic per row: row ``i`` is drawn from
``jax.random.fold_in(PRNGKey(seed), i)``, so results do not depend on chunking, device
count or interruption.

Multi-host (not testable on this machine): when ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` are set, ``jax.distributed.initialize``
is called with them; process ``k`` of ``P`` takes chunks ``k, k + P, ...``, shards them
over its own local devices, and writes its rows into the shared output files (which
process 0 creates before a barrier), with its own ``progress.<k>.json``. Run, on each
host, e.g.::

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
        eigjax run configs/batch_eval.yaml      # on host0
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 \\
        eigjax run configs/batch_eval.yaml      # on host1

with ``out_dir`` on a shared filesystem. ``summary.json`` is then per process
(``summary.<k>.json`` for ``k > 0``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


_TEST_DELAY = float(os.environ.get("EIGJAX_BATCH_TEST_DELAY", "0") or 0)


class BatchConfigError(ValueError):
    """Invalid batch-evaluation config: names the key, what was expected, what was given."""


OPS = ("eigh", "eigvalsh", "eig", "eigvals")
GENERATORS = ("random_symmetric", "random_general", "planted_degenerate")
LOSSES = ("sum_squares", "sum_abs", "max_real")
DTYPES = ("float32", "float64")

_DEFAULTS = {
    "op": "eigh",
    "chunk_size": 4096,
    "vectors": True,
    "grad_loss": None,
    "sample_checks": 256,
    "progress": True,
}


def _err(key, expected, given):
    return BatchConfigError(f"batch_eval config: key `{key}` must be {expected}; got {given!r}.")


def validate_config(cfg: dict) -> dict:
    """Return a normalised copy of ``cfg`` with defaults filled in; raise BatchConfigError."""
    if not isinstance(cfg, dict):
        raise _err("<root>", "a mapping", cfg)
    known = set(_DEFAULTS) | {"input"}
    for key in cfg:
        if key not in known:
            raise _err(key, f"one of {sorted(known)} (unknown key)", cfg[key])
    out = {**_DEFAULTS, **cfg}
    if out["op"] not in OPS:
        raise _err("op", f"one of {OPS}", out["op"])
    cs = out["chunk_size"]
    if isinstance(cs, bool) or not isinstance(cs, int) or cs < 1:
        raise _err("chunk_size", "a positive integer", cs)
    for key in ("vectors", "progress"):
        if not isinstance(out[key], bool):
            raise _err(key, "true or false", out[key])
    if out["op"] in ("eigvalsh", "eigvals") and out["vectors"] and "vectors" in cfg:
        raise _err("vectors", f"false for op {out['op']!r} (it computes no eigenvectors)", True)
    if out["op"] in ("eigvalsh", "eigvals"):
        out["vectors"] = False
    if out["grad_loss"] is not None and out["grad_loss"] not in LOSSES:
        raise _err("grad_loss", f"null or one of {LOSSES}", out["grad_loss"])
    sc = out["sample_checks"]
    if isinstance(sc, bool) or not isinstance(sc, int) or sc < 0:
        raise _err("sample_checks", "a non-negative integer", sc)
    inp = out.get("input")
    if not isinstance(inp, dict):
        raise _err("input", "a mapping with `path` or `generator`", inp)
    if ("path" in inp) == ("generator" in inp):
        raise _err("input", "a mapping with exactly one of `path` and `generator`", inp)
    inp = dict(inp)
    if "path" in inp:
        for key in inp:
            if key not in ("path", "key"):
                raise _err(f"input.{key}", "absent (file input takes `path` and optional `key`)", inp[key])
        if not isinstance(inp["path"], str) or not inp["path"].endswith((".npy", ".npz")):
            raise _err("input.path", "a path to a .npy or .npz file", inp["path"])
        if not os.path.exists(inp["path"]):
            raise _err("input.path", "an existing file", inp["path"])
    else:
        inp.setdefault("seed", 0)
        inp.setdefault("dtype", "float32")
        for key in inp:
            if key not in ("generator", "n", "count", "seed", "dtype"):
                raise _err(f"input.{key}", "absent (generator input takes generator, n, count, seed, dtype)", inp[key])
        if inp["generator"] not in GENERATORS:
            raise _err("input.generator", f"one of {GENERATORS}", inp["generator"])
        for key, lo in (("n", 1), ("count", 1), ("seed", 0)):
            v = inp.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise _err(f"input.{key}", f"an integer >= {lo}", v)
        if inp["generator"] == "planted_degenerate" and inp["n"] < 2:
            raise _err("input.n", "an integer >= 2 for planted_degenerate", inp["n"])
        if inp["dtype"] not in DTYPES:
            raise _err("input.dtype", f"one of {DTYPES}", inp["dtype"])
    out["input"] = inp
    return out


# ---------------------------------------------------------------------------- input


class _Source:
    """Rows of input matrices, by index range, from a file or a generator."""

    def __init__(self, inp: dict):
        self.inp = inp
        if "path" in inp:
            if inp["path"].endswith(".npz"):
                z = np.load(inp["path"], mmap_mode="r")
                key = inp.get("key") or (z.files[0] if len(z.files) == 1 else None)
                if key not in z.files:
                    raise _err("input.key", f"one of the arrays in the .npz file {z.files}", inp.get("key"))
                self.data = z[key]  # .npz members are read into memory (np.load limitation)
            else:
                self.data = np.load(inp["path"], mmap_mode="r")
            if self.data.ndim != 3 or self.data.shape[1] != self.data.shape[2]:
                raise _err("input.path", "an array of shape (count, n, n)", f"shape {self.data.shape}")
            if not (np.issubdtype(self.data.dtype, np.floating) or np.issubdtype(self.data.dtype, np.complexfloating)):
                raise _err("input.path", "a float or complex array", f"dtype {self.data.dtype}")
            self.count, self.n = int(self.data.shape[0]), int(self.data.shape[1])
            self.dtype = np.dtype(self.data.dtype)
        else:
            self.data = None
            self.count, self.n = inp["count"], inp["n"]
            self.dtype = np.dtype(inp["dtype"])
            self._gen = jax.jit(lambda rows: _generate(inp["generator"], inp["seed"], self.n, self.dtype, rows))

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self.data is not None:
            return np.asarray(self.data[start:stop])
        return np.asarray(self._gen(jnp.arange(start, stop, dtype=jnp.int32)))


def _generate(kind, seed, n, dtype, rows):
    base = jax.random.PRNGKey(seed)

    def one(i):
        k1, k2 = jax.random.split(jax.random.fold_in(base, i))
        x = jax.random.normal(k1, (n, n), dtype)
        if kind == "random_general":
            return x
        if kind == "random_symmetric":
            return (x + x.T) / 2
        q, r = jnp.linalg.qr(x)
        q = q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)[None, :]
        w = jnp.sort(jax.random.normal(k2, (n,), dtype))
        w = w.at[1].set(w[0])  # an exactly repeated eigenvalue (up to rounding of Q)
        a = (q * w[None, :]) @ q.T
        return (a + a.T) / 2

    return jax.vmap(one)(rows)


# ---------------------------------------------------------------------- computation


def _loss(name, w):
    if name == "sum_squares":
        return jnp.sum(jnp.abs(w) ** 2)
    if name == "sum_abs":
        return jnp.sum(jnp.abs(w))
    return jnp.max(jnp.real(w))


def _make_fn(cfg):
    import eigjax  # local: eigjax imports this module

    op, vectors, loss = cfg["op"], cfg["vectors"], cfg["grad_loss"]

    def one(a):
        out = {}
        if op in ("eigh", "eig"):
            res = eigjax.eigh(a) if op == "eigh" else eigjax.eig(a)
            out["eigenvalues"] = res.eigenvalues
            if vectors:
                out["eigenvectors"] = res.eigenvectors
        else:
            out["eigenvalues"] = eigjax.eigvalsh(a) if op == "eigvalsh" else eigjax.eigvals(a)
        if loss is not None:
            values = eigjax.eigvalsh if op in ("eigh", "eigvalsh") else eigjax.eigvals
            out["grad"] = jax.grad(lambda a: _loss(loss, values(a)))(a)
        return out

    return jax.vmap(one)


def _output_specs(cfg, n, dtype):
    cdtype = np.result_type(dtype, np.complex64)
    wdtype = np.dtype(np.finfo(dtype).dtype) if cfg["op"] in ("eigh", "eigvalsh") else cdtype
    specs = {"eigenvalues": ((n,), wdtype)}
    if cfg["vectors"]:
        specs["eigenvectors"] = ((n, n), dtype if cfg["op"] == "eigh" else cdtype)
    if cfg["grad_loss"] is not None:
        specs["grad"] = ((n, n), dtype)
    return specs


def _fingerprint(cfg, count, n, dtype):
    inp = cfg["input"]
    stamp = None
    if "path" in inp:  # a file rewritten in place (same shape) must not be resumed into
        st = os.stat(inp["path"])
        stamp = [st.st_size, st.st_mtime_ns]
    blob = json.dumps({"cfg": {k: v for k, v in cfg.items() if k != "progress"}, "count": count, "n": n,
                       "dtype": str(dtype), "file": stamp}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _atomic_write_json(path, obj):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _maybe_init_distributed():
    env = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    if all(k in os.environ for k in env) and int(os.environ["JAX_NUM_PROCESSES"]) > 1:
        try:
            jax.distributed.initialize(
                coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                process_id=int(os.environ["JAX_PROCESS_ID"]),
            )
        except RuntimeError as e:  # already initialised
            if "already" not in str(e):
                raise


def _accuracy(cfg, src, outs, sample):
    """Residual / orthogonality / eigenvalue error on the sampled rows (float64 NumPy)."""
    if len(sample) == 0:
        return {}
    a = np.stack([src.rows(int(i), int(i) + 1)[0] for i in sample]).astype(np.complex128)
    finite = np.all(np.isfinite(a), axis=(-2, -1))
    acc = {"sample_rows": int(len(sample)), "sample_rows_not_finite": int((~finite).sum())}
    # a matrix with NaN or inf entries has all-NaN outputs (documented); the checks
    # below are over the finite ones
    sample, a = sample[finite], a[finite]
    if len(sample) == 0:
        return acc
    w = np.asarray(outs["eigenvalues"][sample]).astype(np.complex128)
    anorm = np.maximum(np.linalg.norm(a, axis=(-2, -1)), np.finfo(np.float64).tiny)
    if "eigenvectors" in outs:
        v = np.asarray(outs["eigenvectors"][sample]).astype(np.complex128)
        res = np.linalg.norm(a @ v - v * w[:, None, :], axis=(-2, -1)) / anorm
        acc["max_relative_residual"] = float(res.max())
        if cfg["op"] == "eigh":
            orth = np.linalg.norm(np.conj(np.swapaxes(v, -1, -2)) @ v - np.eye(a.shape[-1]), axis=(-2, -1))
            acc["max_orthogonality_error"] = float(orth.max())
    if cfg["op"] in ("eigh", "eigvalsh"):
        # eigh reads the Hermitian part: a non-Hermitian input shows up here, not as an error
        acc["max_relative_asymmetry"] = float((np.linalg.norm(a - np.conj(np.swapaxes(a, -1, -2)), axis=(-2, -1)) / anorm).max())
        ref = np.linalg.eigvalsh(a)
        acc["max_eigenvalue_error_rel"] = float((np.abs(w.real - ref).max(axis=-1) / anorm).max())
    else:
        ref = np.linalg.eigvals(a)
        # match each computed eigenvalue to its nearest reference eigenvalue
        d = np.abs(w[:, :, None] - ref[:, None, :]).min(axis=-1).max(axis=-1)
        acc["max_eigenvalue_error_rel"] = float((d / anorm).max())
    return acc


def run_batch_eval(cfg: dict, out_dir: str, resume: bool = False) -> dict:
    """Evaluate ``cfg['op']`` on every input matrix, chunk by chunk; return the summary.

    Args:
      cfg: see :func:`validate_config` and the module docstring; keys ``op``, ``input``
        (``{path, key?}`` or ``{generator, n, count, seed?, dtype?}``), ``chunk_size``,
        ``vectors``, ``grad_loss``, ``sample_checks``, ``progress``.
      out_dir: directory for ``eigenvalues.npy`` (and ``eigenvectors.npy``,
        ``grad.npy``), ``progress.json`` and ``summary.json``.
      resume: continue a run in ``out_dir``, skipping finished chunks. Without it an
        existing ``progress.json`` is an error (no silent overwrite).

    Returns:
      The summary dict (also written to ``summary.json``).

    Raises:
      BatchConfigError: invalid config, or resuming with a different config.
    """
    cfg = validate_config(cfg)
    _maybe_init_distributed()
    pid, nproc = jax.process_index(), jax.process_count()
    src = _Source(cfg["input"])  # raises on a bad file before anything is written
    if src.dtype in (np.float64, np.complex128):
        # float64 data must be computed in float64: JAX would truncate it to float32.
        # (Before any tracing: the generator and the kernels are traced lazily.)
        jax.config.update("jax_enable_x64", True)
    os.makedirs(out_dir, exist_ok=True)
    count, n, dtype = src.count, src.n, src.dtype
    chunk = cfg["chunk_size"]
    nchunks = -(-count // chunk)
    fp = _fingerprint(cfg, count, n, dtype)
    prog_path = os.path.join(out_dir, "progress.json" if pid == 0 else f"progress.{pid}.json")
    specs = _output_specs(cfg, n, dtype)
    paths = {k: os.path.join(out_dir, f"{k}.npy") for k in specs}

    done: set[int] = set()
    if os.path.exists(prog_path):
        if not resume:
            raise BatchConfigError(
                f"batch_eval: {prog_path} exists; pass --resume (resume=True) to continue that run, "
                "or use a new output directory (--out)."
            )
        prog = json.load(open(prog_path))
        if prog.get("fingerprint") != fp:
            raise BatchConfigError(
                f"batch_eval: cannot resume: the config or the input file (its size or modification "
                f"time) differs from the run in {prog_path}."
            )
        done = set(prog["done_chunks"])
    have_files = all(os.path.exists(p) for p in paths.values())
    if done and not have_files:
        raise BatchConfigError(f"batch_eval: cannot resume: output files missing in {out_dir}.")
    if pid == 0 and not done:
        outs = {k: np.lib.format.open_memmap(paths[k], mode="w+", dtype=dt, shape=(count, *shp))
                for k, (shp, dt) in specs.items()}
        for m in outs.values():
            m.flush()
    if nproc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("eigjax_batch_outputs_created")
    outs = {k: np.lib.format.open_memmap(paths[k], mode="r+") for k in specs}
    _atomic_write_json(prog_path, {"fingerprint": fp, "done_chunks": sorted(done), "num_chunks": nchunks})

    devices = jax.local_devices()
    ndev = len(devices)
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    padded = -(-min(chunk, count) // ndev) * ndev  # every chunk padded to this: one compilation
    fn = jax.jit(_make_fn(cfg), in_shardings=sharding, out_shardings=sharding)
    eye = np.eye(n, dtype=dtype)

    mine = [c for c in range(nchunks) if c % nproc == pid and c not in done]
    bar = None
    if cfg["progress"]:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(min(chunk, count - c * chunk) for c in mine), unit="mat", unit_scale=True,
                   desc=f"batch_eval {cfg['op']}")
    t0 = time.perf_counter()
    rows_done = 0
    for c in mine:
        start, stop = c * chunk, min(count, (c + 1) * chunk)
        x = src.rows(start, stop)
        if x.shape[0] < padded:
            x = np.concatenate([x, np.broadcast_to(eye, (padded - x.shape[0], n, n))])
        res = fn(jax.device_put(x, sharding))
        for k, m in outs.items():
            m[start:stop] = np.asarray(res[k])[: stop - start]
            m.flush()
        done.add(c)
        _atomic_write_json(prog_path, {"fingerprint": fp, "done_chunks": sorted(done), "num_chunks": nchunks})
        rows_done += stop - start
        if _TEST_DELAY:  # test hook (tests/test_batch.py): widen the window for a kill
            time.sleep(_TEST_DELAY)
        if bar is not None:
            bar.update(stop - start)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    rng = np.random.default_rng(0)
    k = min(cfg["sample_checks"], count)
    sample = np.sort(rng.choice(count, size=k, replace=False)) if all(
        ch in done for ch in range(nchunks) if ch % nproc == pid) and nproc == 1 else np.array([], int)
    summary = {
        "op": cfg["op"],
        "rows": count,
        "n": n,
        "dtype": str(dtype),
        "chunks": nchunks,
        "chunks_this_run": len(mine),
        "rows_this_run": rows_done,
        "seconds_this_run": seconds,
        "matrices_per_second": rows_done / seconds if seconds > 0 else None,
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "local_device_count": ndev,
        "process_index": pid,
        "process_count": nproc,
        "complete": len(done) == nchunks if nproc == 1 else None,
        "accuracy": _accuracy(cfg, src, outs, sample),
        "outputs": {k: os.path.basename(p) for k, p in paths.items()},
    }
    _atomic_write_json(os.path.join(out_dir, "summary.json" if pid == 0 else f"summary.{pid}.json"), summary)
    return summary
