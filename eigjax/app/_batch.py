"""Batch evaluation of eigendecompositions (and gradients) over many matrices.

``run_batch_eval(cfg, out_dir, resume)`` reads matrices from a ``.npy`` file, a directory
of ``.npy`` shards (sorted by name, read as one array; every shard ``(rows, n, n)`` of one
dtype) or a ``.npz`` member (all memory-mapped, so inputs larger than RAM work, except a
compressed ``.npz`` member, which is read into memory), or a deterministic synthetic generator,
processes fixed-size chunks, shards each chunk over all local devices (a 1-D ``Mesh``
and ``NamedSharding``; the chunk is padded with identity matrices to a multiple of the
device count and the padding dropped), and writes results chunk by chunk (``pwrite``,
then ``fdatasync``) into ``.npy`` files whose blocks are all reserved before any work
(``posix_fallocate``): a full disk is one message at the start, never a SIGBUS in a
sparse memory map halfway through.

Resume. After a chunk's rows are written and flushed, its index is added to
``progress.json`` (:func:`eigjax.app._files.atomic_write_json`: temporary file, fsync,
``os.replace``, fsync of the directory). A resumed run checks every output file's header
(dtype, shape) and size first: a chunk listed as done whose rows are not all on disk (a
file missing, truncated, or of another dtype or shape) is struck from ``progress.json``
and recomputed, so ``complete: true`` means every row is there. It skips the other
finished chunks and recomputes any unfinished chunk completely, so no row is lost or
written twice; a chunk interrupted mid-write is simply redone. The progress file records
a fingerprint of the config and refuses to resume a different one.

The output directory. A run holds ``batch_eval.lock`` (a non-blocking ``flock``, naming
the holder's pid) for its whole life: a second run on the same directory is refused,
not interleaved. No file is written through a symbolic link: a link at any output name
is refused before anything is written. Errors are one line (:class:`BatchConfigError`, the
runner's ``ConfigError`` under its batch name, for the config and input: ``batch_eval config
key `<key>`: expected <what>, got <value>``; :class:`BatchRunError` for the directory and
the machine).

Generators are deterministic per row and counter-based: row ``i``'s normals come from
Threefry-2x32 hashes of the counters ``(i, j)`` under ``PRNGKey(seed)``, one normal per
32-bit word by ``sqrt(2) erfinv`` (:func:`_normals`; ``random_symmetric`` draws only the
upper triangle, :func:`_generate`), drawn inside the program that computes the chunk (no
host copy), so results do not depend on chunking, device count, process count or
interruption. The stream has an id in the config's fingerprint (``threefry-counter-erfinv-2``
since the generator became faster; rows of an older stream are not resumed into). Its
throughput against the computation it feeds: ``benchmarks/bench_batch_generator.py``,
``benchmarks/results_batch.md``.

Multi-process, multi-host (tested with 2 and 3 local CPU processes,
``tests/app/test_distributed.py``): when ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID`` are set, ``jax.distributed.initialize`` is called with them;
process ``k`` of ``P`` takes chunks ``k, k + P, ...``, shards them over its own local
devices, and writes its rows into the shared output files (which process 0 creates
before a barrier), with its own ``progress.<k>.json`` (``progress.json`` for ``k = 0``)
and ``batch_eval.<k>.lock``. Every process reads every progress file before the first
barrier, and a refusal on any process (lock held, config changed, another process
count) stops all of them with exit 2, nothing written. Each process writes its part
``summary.<k>.json``; after a barrier, process 0 merges them into ``summary.json``:
totals, ``per_process`` figures, the sample accuracy checks, and ``complete: true`` only
when the progress files, read again, record every chunk (each by its owner) and every
output file holds all its rows. Run, on each host, e.g.::

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
        eigjax run configs/batch_eval.yaml --out /shared/run      # on host0
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 \\
        eigjax run configs/batch_eval.yaml --out /shared/run      # on host1

with ``--out`` on a shared filesystem. A process that dies leaves its finished chunks
recorded; restart all ``P`` with ``--resume``. Design choice: a resume must use the same
process count (the chunk-to-process assignment is ``c % P`` and each progress file is
written by its owner only); another count is refused with a message naming the count
to use, rather than reassigning chunks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from . import _files
from ._distributed import maybe_initialize
from ._errors import BatchConfigError, short_repr

_TEST_DELAY = float(os.environ.get("EIGJAX_BATCH_TEST_DELAY", "0") or 0)
# Test hook (tests/app/test_distributed.py): "K:N" makes process K SIGKILL itself right after
# its N-th chunk of this run is on disk and recorded, a deterministic "host died mid-run".
_TEST_KILL_AFTER = os.environ.get("EIGJAX_BATCH_TEST_KILL_AFTER", "")


class BatchRunError(RuntimeError):
    """A batch run refused or stopped on its environment (one line, naming the file).

    ``exit_code`` is 2 when nothing was written (lock held, symbolic link, damaged
    ``progress.json``, not enough memory for the input) and 3 when the run stopped after
    it started (disk full, out of memory): finished chunks are kept, and ``--resume``
    continues.
    """

    def __init__(self, message: str, exit_code: int = 3):
        super().__init__(message)
        self.exit_code = exit_code


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
    """``BatchConfigError("batch_eval config key `<key>`: expected <expected>, got <given>")``."""
    got = repr(given) if isinstance(given, str) else short_repr(given)  # paths whole: they name the file
    return BatchConfigError(f"batch_eval config key `{key}`: expected {expected}, got {got}")


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
        path = inp["path"]
        if not isinstance(path, str) or not (path.endswith((".npy", ".npz")) or os.path.isdir(path)):
            raise _err("input.path", "a path to a .npy or .npz file, or a directory of .npy shards", path)
        if not os.path.exists(path):
            raise _err("input.path", "an existing file", path)
        if os.path.isdir(path) and "key" in inp:
            raise _err("input.key", "absent for a directory of .npy shards", inp["key"])
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
        if inp["count"] > 2**32:  # the generator's row counter is 32 bits
            raise _err("input.count", "at most 2**32 for a generator (split the run by seed)", inp["count"])
        if inp["seed"] >= 2**64:
            raise _err("input.seed", "below 2**64", inp["seed"])
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
            self.data = _load_input(inp)
            path = inp["path"]
            if self.data.ndim != 3 or self.data.shape[1] != self.data.shape[2] or 0 in self.data.shape:
                raise _err(
                    "input.path",
                    "an array of shape (count, n, n) with count >= 1 and n >= 1",
                    f"{path}: shape {self.data.shape}",
                )
            if self.data.dtype.name not in ("float32", "float64", "complex64", "complex128"):
                raise _err(
                    "input.path", "float32, float64, complex64 or complex128 data", f"{path}: dtype {self.data.dtype}"
                )
            self.count, self.n = int(self.data.shape[0]), int(self.data.shape[1])
            self.dtype = np.dtype(self.data.dtype)
        else:
            self.data = None
            self.count, self.n = inp["count"], inp["n"]
            self.dtype = np.dtype(inp["dtype"])
            self._gen = jax.jit(
                lambda rows: _generate(inp["generator"], inp["seed"], self.n, self.dtype, rows.astype(jnp.uint32))
            )
        # generated rows are drawn in blocks of at least this many (the caller's chunk), so
        # a short last chunk reuses the compiled generator instead of compiling another
        self.block = 1

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self.data is not None:
            return np.asarray(self.data[start:stop])
        size = max(stop - start, self.block)
        return np.asarray(self._gen(np.arange(start, start + size, dtype=np.uint32)))[: stop - start]

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (sorted indices), in one read or one generator call."""
        if self.data is not None:
            return np.stack([np.asarray(self.data[int(i) : int(i) + 1])[0] for i in idx])
        return np.asarray(self._gen(np.asarray(idx, dtype=np.uint32)))


def _load_input(inp: dict):
    """The input array: a .npy memory-mapped, a directory of .npy shards memory-mapped and
    read as one array, a .npz member memory-mapped where it is stored uncompressed (read
    into memory where it is compressed: ``np.savez_compressed``)."""
    path = inp["path"]
    try:
        if os.path.isdir(path):
            return _Shards(path)
        if path.endswith(".npz"):
            import zipfile

            with zipfile.ZipFile(path) as zf:
                files = [m[:-4] for m in zf.namelist() if m.endswith(".npy")]
            key = inp.get("key") or (files[0] if len(files) == 1 else None)
            if key not in files:
                raise _err("input.key", f"one of the arrays in the .npz file {files}", inp.get("key"))
            mapped = _npz_memmap(path, key)
            if mapped is not None:
                return mapped
            return np.load(path)[key]  # a compressed member is read into memory whole
        return np.load(path, mmap_mode="r")
    except (MemoryError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOMEM:
            raise
        npz = path.endswith(".npz")
        hint = "; a compressed .npz member is read into memory whole, a .npy file is memory-mapped" if npz else ""
        raise BatchRunError(
            f"not enough memory to read the input {path} ({os.path.getsize(path)} bytes on disk): "
            f"{e}{hint}; raise the memory limit (ulimit -v) or split the input",
            2,
        ) from None


def _npz_memmap(path: str, key: str) -> np.ndarray | None:
    """Member ``key`` of a .npz file as a read-only memory map, or None where it is compressed.

    ``np.load(mmap_mode=...)`` does not map .npz members; a member stored uncompressed
    (``ZIP_STORED``, as ``np.savez`` writes) is a .npy file at an offset inside the zip:
    its local header (30 bytes, the name, the extra field) is skipped and the .npy header read.
    """
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # compressed or encrypted
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if dtype.hasobject or 0 in shape:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


class _Shards:
    """A directory of ``.npy`` files (sorted by name), memory-mapped and read as one array
    along the first axis. Every shard must hold ``(rows, n, n)`` of one dtype and one ``n``."""

    def __init__(self, directory: str):
        names = sorted(f for f in os.listdir(directory) if f.endswith(".npy"))
        if not names:
            raise _err("input.path", "a directory holding at least one .npy shard", directory)
        self.paths = [os.path.join(directory, f) for f in names]
        self.parts = [np.load(p, mmap_mode="r") for p in self.paths]
        first = self.parts[0]
        for p, a in zip(self.paths, self.parts):
            if a.ndim != 3 or a.shape[1:] != first.shape[1:] or a.dtype != first.dtype:
                raise _err(
                    "input.path",
                    f"shards of one shape (rows, n, n) and one dtype, as the first, "
                    f"{names[0]}: (rows, {', '.join(map(str, first.shape[1:]))}) {first.dtype}",
                    f"{p}: shape {a.shape} {a.dtype}",
                )
        self.dtype = first.dtype
        self.starts = np.cumsum([0] + [a.shape[0] for a in self.parts])
        self.shape = (int(self.starts[-1]), *first.shape[1:])
        self.ndim = len(self.shape)

    def __getitem__(self, idx: slice) -> np.ndarray:
        start, stop, _ = idx.indices(self.shape[0])
        pieces = []
        for i, a in enumerate(self.parts):
            lo, hi = max(start, self.starts[i]), min(stop, self.starts[i + 1])
            if lo < hi:
                pieces.append(a[lo - self.starts[i] : hi - self.starts[i]])
        if not pieces:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


# Threefry-2x32 rotation constants (Salmon et al. 2011; Random123 ``threefry.h``, R_32x2)
_THREEFRY_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)


def _threefry2x32(k0: int, k1: int, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds of the counters ``(x0, x1)`` (uint32) under the key ``(k0, k1)``.

    The hash of Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3"
    (SC'11), with the default 20 rounds (Crush-resistant from 13; the rest is their safety
    margin): bit-identical to ``jax.extend.random.threefry2x32_p``, the hash of ``jax.random``
    (tested, with Random123's known-answer vectors). Written in ``jax.numpy`` because that
    primitive lowers on XLA:CPU to a scalar kernel (about 1e7 rows/s of 5 hashes, the old
    bound); the rounds run in a ``fori_loop`` of 8 rounds a step, which keeps XLA:CPU from
    fusing all 20 with the normal map into one loop body that LLVM no longer vectorizes
    (measured: 4-6x slower fused).
    """
    u = jnp.uint32
    ks = (u(k0), u(k1), u(k0 ^ k1 ^ 0x1BD11BDA))

    def rounds(x0, x1, rots):
        for r in rots:
            x0 = x0 + x1
            x1 = (x1 << u(r)) | (x1 >> u(32 - r))
            x1 = x1 ^ x0
        return x0, x1

    def inject(x0, x1, i):  # the key schedule after every 4 rounds; i is traced in the loop
        ks_i = jnp.stack(ks)
        return x0 + ks_i[i % 3], x1 + ks_i[(i + 1) % 3] + i.astype(u)

    def eight(step, x):  # rounds 8 step .. 8 step + 7 and two injections
        x0, x1 = rounds(x[0], x[1], _THREEFRY_ROTATIONS[:4])
        x0, x1 = inject(x0, x1, 2 * step + 1)
        x0, x1 = rounds(x0, x1, _THREEFRY_ROTATIONS[4:])
        return inject(x0, x1, 2 * step + 2)

    x = jax.lax.fori_loop(0, 2, eight, (x0 + ks[0], x1 + ks[1]))
    x0, x1 = rounds(x[0], x[1], _THREEFRY_ROTATIONS[:4])  # rounds 16 .. 19
    return x0 + ks[5 % 3], x1 + ks[6 % 3] + u(5)


def _normals(seed: int, rows, m: int, dtype, var: float | np.ndarray = 1.0) -> jax.Array:
    """``(len(rows), m)`` normals of variance ``var`` (a number, or one per column); entry ``(i, j)``
    depends on ``(seed, rows[i], j)`` only.

    Counter-based: the Threefry-2x32 hash (:func:`_threefry2x32`, the generator of
    ``jax.random``, keyed as ``PRNGKey(seed)``) of the counter ``(row, h)`` gives 64 bits: two
    float32 normals (entries ``h`` and ``h + ceil(m / 2)``), or one float64. Each word becomes
    a uniform ``u`` on the symmetric open grid ``(2k + 1) 2^-p - 1`` in ``(-1, 1)`` (``p`` = 23
    or 52 mantissa bits, ``2^p`` points: mean exactly 0, never +-1) and then ``sqrt(2) erfinv(u)``,
    the map of ``jax.random.normal``: one normal per word, elementwise (on XLA:CPU about 2x
    faster than Box-Muller's log, sqrt, cos and sin per pair once the hash is cheap). The
    tails end at 5.5 sigma (float32). The scale ``sqrt(2 var)`` is one constant per column:
    one rounding, which XLA cannot reassociate with another constant differently for another
    chunk shape (two multiplications did: 1-ulp differences in a chunk of one row).
    Elementwise over the whole chunk in one program: no
    per-row key derivation, nothing that depends on the chunk or the process a row falls in.
    """
    dtype = np.dtype(dtype)
    k0, k1 = (seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF
    half = -(-m // 2)
    nh = half if dtype == np.float32 else m  # hashes per row
    x0 = jnp.broadcast_to(rows.astype(jnp.uint32)[:, None], (rows.shape[0], nh))
    x1 = jnp.broadcast_to(jnp.arange(nh, dtype=jnp.uint32)[None, :], (rows.shape[0], nh))
    o0, o1 = _threefry2x32(k0, k1, x0, x1)
    if dtype == np.float32:
        bits, uint, nbits = jnp.concatenate([o0, o1], axis=1)[:, :m], jnp.uint32, 32
    else:
        bits = (o0.astype(jnp.uint64) << jnp.uint64(32)) | o1.astype(jnp.uint64)
        uint, nbits = jnp.uint64, 64
    nmant = np.finfo(dtype).nmant
    sint = jnp.int32 if nbits == 32 else jnp.int64
    # the top p + 1 bits, made odd, less 2^p: the odd integers of (-2^p, 2^p), exact in integers
    # and in the float (|t| < 2^p), then an exact power-of-two scale: no rounding anywhere
    t = ((bits >> uint(nbits - nmant - 1)) | uint(1)).astype(sint) - sint(2**nmant)
    u = t.astype(dtype) * np.array(2.0**-nmant, dtype)
    scale = np.broadcast_to(np.sqrt(2.0 * np.asarray(var, np.float64)), (m,)).astype(dtype)
    return jax.scipy.special.erfinv(u) * scale[None, :]


def _generate(kind, seed, n, dtype, rows):
    """Row ``rows[i]`` of generator ``kind``: a function of ``(seed, rows[i])`` only.

    ``random_symmetric`` draws only the upper triangle, ``n (n + 1) / 2`` normals, row by row:
    the diagonal ``N(0, 1)`` and the off-diagonal ``N(0, 1/2)`` (``erfinv(u)`` itself),
    mirrored: the distribution of ``(x + x^T) / 2`` for ``x`` of independent standard normals
    (the Gaussian orthogonal ensemble up to scale), which the first stream drew from ``n^2``
    normals. ``random_general``: ``n^2`` standard normals. ``planted_degenerate``: ``Q diag(w) Q^T``
    with ``Q`` from the QR of ``n^2`` normals and ``w`` sorted normals, the two smallest equal.
    """
    if kind == "random_symmetric":
        iu, ju = np.triu_indices(n)
        z = _normals(seed, rows, len(iu), dtype, var=np.where(iu == ju, 1.0, 0.5))
        pos = np.zeros((n, n), int)
        pos[iu, ju] = pos[ju, iu] = np.arange(len(iu))
        if n > 8:  # a gather: one op, whatever n (n^2 slices compile for minutes at n = 64)
            return jnp.take(z, pos.reshape(-1), axis=1).reshape(-1, n, n)
        # n^2 static slices fuse into one elementwise loop: 3x faster than the gather on XLA:CPU at n = 3
        return jnp.stack([z[:, pos[i, j]] for i in range(n) for j in range(n)], axis=1).reshape(-1, n, n)
    m = n * n + (n if kind == "planted_degenerate" else 0)
    z = _normals(seed, rows, m, dtype)
    x = z[:, : n * n].reshape(-1, n, n)
    if kind == "random_general":
        return x
    q, r = jnp.linalg.qr(x)
    q = q * jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(dtype)[:, None, :]
    w = jnp.sort(z[:, n * n :], axis=-1)
    w = w.at[:, 1].set(w[:, 0])  # an exactly repeated eigenvalue (up to rounding of Q)
    a = (q * w[:, None, :]) @ jnp.swapaxes(q, -1, -2)
    return (a + jnp.swapaxes(a, -1, -2)) / 2


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
    specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {"eigenvalues": ((n,), wdtype)}
    if cfg["vectors"]:
        specs["eigenvectors"] = ((n, n), dtype if cfg["op"] == "eigh" else cdtype)
    if cfg["grad_loss"] is not None:
        specs["grad"] = ((n, n), dtype)
    return specs


def _fingerprint(cfg, count, n, dtype):
    inp = cfg["input"]
    stamp = None
    if "path" in inp:  # a file rewritten in place (same shape) must not be resumed into
        paths = [inp["path"]]
        if os.path.isdir(inp["path"]):  # a shard added, removed or rewritten
            paths = sorted(f for f in os.listdir(inp["path"]) if f.endswith(".npy"))
            paths = [os.path.join(inp["path"], f) for f in paths]
        stamps = [[os.path.basename(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths]
        stamp = [stamps[0][1], stamps[0][2]] if not os.path.isdir(inp["path"]) else stamps
    # the generator's stream (counter-based since issue 17): rows of an older stream are not resumed into
    # ("-2": Threefry-2x32-20, one normal per 32-bit word by erfinv, random_symmetric from its upper triangle)
    stream = "threefry-counter-erfinv-2" if "generator" in inp else None
    blob = json.dumps(
        {
            "cfg": {k: v for k, v in cfg.items() if k != "progress"},
            "count": count,
            "n": n,
            "dtype": str(dtype),
            "file": stamp,
            **({"stream": stream} if stream else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _accuracy(cfg, src, outs, sample):
    """Residual / orthogonality / eigenvalue error on the sampled rows (float64 NumPy)."""
    if len(sample) == 0:
        return {}
    a = src.take(sample).astype(np.complex128)
    finite = np.all(np.isfinite(a), axis=(-2, -1))
    acc: dict[str, int | float] = {"sample_rows": int(len(sample)), "sample_rows_not_finite": int((~finite).sum())}
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
        acc["max_relative_asymmetry"] = float(
            (np.linalg.norm(a - np.conj(np.swapaxes(a, -1, -2)), axis=(-2, -1)) / anorm).max()
        )
        ref = np.linalg.eigvalsh(a)
        acc["max_eigenvalue_error_rel"] = float((np.abs(w.real - ref).max(axis=-1) / anorm).max())
    else:
        ref = np.linalg.eigvals(a)
        # match each computed eigenvalue to its nearest reference eigenvalue
        d = np.abs(w[:, :, None] - ref[:, None, :]).min(axis=-1).max(axis=-1)
        acc["max_eigenvalue_error_rel"] = float((d / anorm).max())
    return acc


# --------------------------------------------------------------------- output files

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class _Output:
    """One output ``.npy`` file of shape ``(count, ...)``, written by rows with ``pwrite``.

    No memory map: a failed write is an ``OSError`` (a full disk under a sparse memory map
    is a SIGBUS that kills the process with no message), and the file is allocated up
    front (:func:`eigjax.app._files.allocate`), so a full disk is found before any work.
    """

    def __init__(self, path: str, shape: tuple, dtype):
        self.path, self.shape, self.dtype = path, tuple(int(s) for s in shape), np.dtype(dtype)
        self.rowbytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        )
        self.header = buf.getvalue()  # the bytes np.lib.format.open_memmap writes
        self.size = len(self.header) + self.shape[0] * self.rowbytes
        self.fd: int | None = None

    @property
    def open_fd(self) -> int:
        """The open descriptor: every read, write and allocation comes after :meth:`open`."""
        assert self.fd is not None, f"{self.path} is not open"
        return self.fd

    def inspect(self) -> tuple[int, str | None, bool]:
        """``(rows, problem, header_ok)``: the leading rows intact on disk, what is wrong (None: nothing)."""
        try:
            fd = _files.open_nofollow(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return 0, "is missing", False
        with os.fdopen(fd, "rb") as f:
            head = f.read(len(self.header))
            size = os.fstat(fd).st_size
        if head != self.header:
            return 0, f"does not hold {self.dtype} {self.shape} ({self._describe(head)})", False
        rows = max(0, min(self.shape[0], (size - len(self.header)) // self.rowbytes))
        if size < self.size:
            return rows, f"is truncated ({rows} of {self.shape[0]} rows on disk)", True
        if size > self.size:
            return rows, f"is longer than {self.size} bytes ({size}): cut back", True
        return rows, None, True

    @staticmethod
    def _describe(head: bytes) -> str:
        try:
            f = io.BytesIO(head)
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            return f"found {dtype} {shape}{' Fortran order' if fortran else ''}"
        except Exception:  # noqa: BLE001  any damage: say so
            return "not a readable .npy header"

    def open(self, create: bool) -> None:
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        self.fd = _files.open_nofollow(self.path, flags)
        if create:
            _pwrite_all(self.fd, self.header, 0)

    def allocate(self) -> None:
        """Reserve every block (existing rows are kept); cut back a file that is too long."""
        _files.allocate(self.open_fd, self.size)
        if os.fstat(self.open_fd).st_size > self.size:
            os.ftruncate(self.open_fd, self.size)

    def write(self, start: int, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.dtype).tobytes()
        _pwrite_all(self.open_fd, data, len(self.header) + start * self.rowbytes)

    def __getitem__(self, idx) -> np.ndarray:
        """Rows ``idx`` (an index array), read back from the file."""
        out = [
            np.frombuffer(os.pread(self.open_fd, self.rowbytes, len(self.header) + int(i) * self.rowbytes), self.dtype)
            for i in np.asarray(idx).reshape(-1)
        ]
        return np.stack(out).reshape(-1, *self.shape[1:]) if out else np.zeros((0, *self.shape[1:]), self.dtype)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        k = os.pwrite(fd, view, offset)
        view, offset = view[k:], offset + k


def _ranges(chunks) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2, 5'``."""
    out, chunks = [], sorted(chunks)
    i = 0
    while i < len(chunks):
        j = i
        while j + 1 < len(chunks) and chunks[j + 1] == chunks[j] + 1:
            j += 1
        out.append(str(chunks[i]) if i == j else f"{chunks[i]}-{chunks[j]}")
        i = j + 1
    return ", ".join(out)


def _barrier(nproc: int, name: str) -> None:
    """Wait for every process; a process that died makes this one line (exit 3), not a traceback."""
    if nproc > 1:
        from jax.experimental import multihost_utils

        try:
            multihost_utils.sync_global_devices(name)
        except (ValueError, RuntimeError, jax.errors.JaxRuntimeError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise BatchRunError(
                f"process {jax.process_index()} of {nproc} lost contact with the others at {name} ({why}): "
                "another process has probably died; the chunks recorded in the progress files are kept: "
                "restart all processes with --resume",
                3,
            ) from None


def _agree(nproc: int, failure: Exception | None) -> None:
    """Raise on every process when any process failed to start.

    A process that refuses (lock held, config changed, another process count) must not
    leave the others waiting at a barrier: each says whether it failed, all of them learn it.
    """
    if nproc > 1:
        from jax.experimental import multihost_utils

        failed = np.asarray(multihost_utils.process_allgather(np.int32(failure is not None))).reshape(-1)
        if failure is None and failed.any():
            bad = ", ".join(str(k) for k in np.flatnonzero(failed))
            raise BatchRunError(
                f"process(es) {bad} of {nproc} refused to start (see their message); nothing was written", 2
            )
    if failure is not None:
        raise failure


_PROGRESS_NAME = re.compile(r"progress(?:\.(\d+))?\.json")


def _progress_name(pid: int) -> str:
    return "progress.json" if pid == 0 else f"progress.{pid}.json"


class _Progress:
    """``progress.json`` (``progress.<k>.json`` for process ``k > 0``): the config's
    fingerprint, the process count, and the chunks of this process whose rows are on disk."""

    def __init__(self, out_dir: str, fingerprint: str, nchunks: int, pid: int = 0, nproc: int = 1):
        self.dir, self.fp, self.nchunks, self.pid, self.nproc = out_dir, fingerprint, nchunks, pid, nproc
        self.path = os.path.join(out_dir, _progress_name(pid))

    def records(self) -> dict[int, str]:
        """Every process's progress file in the directory, by process index."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            m = _PROGRESS_NAME.fullmatch(name)
            if m and m.group(1) != "0":
                found[int(m.group(1) or 0)] = os.path.join(self.dir, name)
        return found

    def parse(self, path: str) -> tuple[set[int], int]:
        """``(done_chunks, process_count)`` of one progress file; a damaged one is a BatchRunError."""
        fd = _files.open_nofollow(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        try:
            prog = json.loads(raw)
            done, fp = prog["done_chunks"], prog["fingerprint"]
            nproc = prog.get("process_count", 1)  # files written before multi-process runs: one process
            ok = (
                isinstance(fp, str)
                and isinstance(done, list)
                and all(isinstance(c, int) and not isinstance(c, bool) for c in done)
                and (isinstance(nproc, int) and not isinstance(nproc, bool) and nproc >= 1)
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            ok = False
        if not ok:
            raise BatchRunError(
                f"{path} is damaged: expected the JSON record {{fingerprint, done_chunks, num_chunks}} of a "
                f"batch run, found {raw[:60]!r}; restore it, or delete it to recompute every chunk",
                2,
            )
        if fp != self.fp:
            raise BatchConfigError(
                f"batch_eval: cannot resume: the config, the input file (its size or modification "
                f"time) or the generator's stream (rows drawn by another eigjax version) differs from the run in {path}"
            )
        if not all(0 <= c < self.nchunks for c in done):
            raise BatchRunError(
                f"{path} is damaged: done_chunks must lie in 0..{self.nchunks - 1}; "
                f"found {sorted(done)[:3]}...{sorted(done)[-3:]}",
                2,
            )
        return set(done), nproc

    def read(self, resume: bool, note) -> set[int] | None:
        """This process's finished chunks; None when the directory holds no run (a fresh run).

        Every process reads every progress file, so all of them take the same decision:
        refuse (no ``--resume``, another config, another process count) or go on.
        """
        records = self.records()
        if not records:
            if resume:
                note(f"nothing to resume in {self.dir} (no progress.json): starting a fresh run")
            return None
        if not resume:
            first = records[min(records)]
            raise BatchConfigError(
                f"batch_eval: {first} exists; pass --resume (resume=True) to continue that run, "
                "or use a new output directory (--out)"
            )
        mine: set[int] = set()
        for k, path in sorted(records.items()):
            done, was = self.parse(path)
            if was != self.nproc or k >= self.nproc:
                raise BatchConfigError(
                    f"batch_eval: cannot resume: the run in {self.dir} was made by {was} process(es) "
                    f"({os.path.basename(path)}), this one has {self.nproc} (JAX_NUM_PROCESSES); resume it with "
                    f"JAX_NUM_PROCESSES={was}, or use a new output directory (--out)"
                )
            if k == self.pid:
                mine = done
        return {c for c in mine if c % self.nproc == self.pid}

    def write(self, done: set[int]) -> None:
        try:
            _files.atomic_write_json(
                self.path,
                {
                    "fingerprint": self.fp,
                    "done_chunks": sorted(done),
                    "num_chunks": self.nchunks,
                    "process_count": self.nproc,
                    "process_index": self.pid,
                },
            )
        except OSError as e:
            if e.errno not in _DISK_FULL:
                raise
            raise BatchRunError(
                f"disk full writing {self.path} ({e.strerror}); the {len(done)} chunks recorded before are "
                "kept: free space and run again with --resume",
                3,
            ) from None


def _prepare_outputs(
    outs: dict, done: set, fresh: bool, chunk: int, progress: _Progress, note, pid: int, nproc: int
) -> set:
    """Open the output files (created on a fresh run, checked and repaired on a resumed one).

    Returns the finished chunks whose rows are all on disk. A chunk listed in ``progress``
    whose rows are not (a file missing, truncated, or holding another dtype or shape) is
    struck from ``progress`` *before* any file is touched, and recomputed.
    """
    count = next(iter(outs.values())).shape[0]
    state = {k: (0, None, False) if fresh else o.inspect() for k, o in outs.items()}
    if not fresh:
        for k, (_, problem, _) in state.items():
            if problem:
                note(f"{outs[k].path} {problem}")
        intact = min(rows for rows, _, _ in state.values())
        lost = {c for c in done if min(count, (c + 1) * chunk) > intact}
        if lost:
            done = done - lost
            note(f"recomputing chunks {_ranges(lost)}: their rows are not all on disk")
            progress.write(done)  # progress never claims rows the files do not hold
    _barrier(nproc, "eigjax_batch_outputs_checked")
    if pid == 0:
        created = []
        try:
            for k, o in outs.items():
                create = not state[k][2]
                o.open(create)
                if create:
                    created.append(o)
                o.allocate()
        except OSError as e:
            if e.errno not in _DISK_FULL:
                raise
            failed = o
            for f in outs.values():
                f.close()
            if fresh:  # nothing in them: give the space back
                for f in created:
                    os.unlink(f.path)
            total = sum(f.size for f in outs.values())
            then = (
                "the finished rows are kept: free space and run again with --resume"
                if not fresh
                else "free space and run again"
            )
            raise BatchRunError(
                f"disk full: cannot reserve {failed.size} bytes for {failed.path} ({e.strerror}); "
                f"the outputs need {total} bytes in all; nothing was computed; {then}",
                3,
            ) from None
    _barrier(nproc, "eigjax_batch_outputs_created")
    if pid != 0:
        for o in outs.values():
            o.open(create=False)
    return done


# --------------------------------------------------------------------------- the run


def _compute(cfg, src, outs, todo, done, progress, bar) -> tuple[int, float, dict[str, float]]:
    """Evaluate the chunks ``todo``; each chunk's rows are on disk before it joins ``done``.
    Returns (rows computed, seconds, seconds by part: ``input``, ``compute``, ``write``)."""
    count, n, dtype, chunk = src.count, src.n, src.dtype, cfg["chunk_size"]
    devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    padded = -(-min(chunk, count) // len(devices)) * len(devices)  # every chunk padded to this: one compilation
    src.block = padded
    fn = jax.jit(_make_fn(cfg), in_shardings=sharding, out_shardings=sharding)
    if src.data is None:  # generated input: drawn inside the same program, on the devices (no host copy)
        inp, compute = src.inp, _make_fn(cfg)
        fn = jax.jit(
            lambda rows: compute(_generate(inp["generator"], inp["seed"], n, dtype, rows)),
            in_shardings=sharding,
            out_shardings=sharding,
        )
    eye = np.eye(n, dtype=dtype)
    t0, rows_done = time.perf_counter(), 0
    split = {"input": 0.0, "compute": 0.0, "write": 0.0}  # where this run's time went
    for i, c in enumerate(todo, 1):
        start, stop = c * chunk, min(count, (c + 1) * chunk)
        try:
            t = time.perf_counter()
            if src.data is None:  # the row indices (past the last row: real rows, dropped like padding)
                x = np.arange(start, start + padded, dtype=np.uint32)
            else:
                x = src.rows(start, stop)
                if x.shape[0] < padded:
                    x = np.concatenate([x, np.broadcast_to(eye, (padded - x.shape[0], n, n))])
            split["input"] += time.perf_counter() - t
            t = time.perf_counter()
            res = fn(jax.device_put(x, sharding))
            host = {k: np.asarray(res[k])[: stop - start] for k in outs}
            split["compute"] += time.perf_counter() - t
        except (MemoryError, jax.errors.JaxRuntimeError) as e:
            if isinstance(e, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" not in str(e):
                raise
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise BatchRunError(
                f"out of memory computing chunk {c} ({stop - start} matrices {n}x{n} {dtype}; {why}): lower "
                f"chunk_size (now {chunk}) or raise the memory limit; the {len(done)} finished chunks are kept: "
                "run again with --resume",
                3,
            ) from None
        t = time.perf_counter()
        try:
            for k, o in outs.items():
                o.write(start, host[k])
            for o in outs.values():
                os.fdatasync(o.open_fd)
        except OSError as e:
            if e.errno not in _DISK_FULL:
                raise
            raise BatchRunError(
                f"disk full writing chunk {c} into {os.path.dirname(progress.path)} ({e.strerror}); the "
                f"{len(done)} finished chunks are kept: free space and run again with --resume",
                3,
            ) from None
        done.add(c)
        progress.write(done)
        split["write"] += time.perf_counter() - t
        rows_done += stop - start
        if _TEST_DELAY:  # test hook (tests/app/test_batch.py): widen the window for a kill
            time.sleep(_TEST_DELAY)
        if _TEST_KILL_AFTER and _TEST_KILL_AFTER == f"{progress.pid}:{i}":
            os.kill(os.getpid(), signal.SIGKILL)
        if bar is not None:
            bar.update(stop - start)
    return rows_done, time.perf_counter() - t0, split


def _reason(e: OSError) -> str:
    """The message a refusal (:class:`~eigjax.app._files.SymlinkRefused`, ``LockHeld``) was
    raised with: they always set ``strerror``."""
    return e.strerror if e.strerror is not None else str(e)


def _refuse_links(paths) -> None:
    for path in paths:
        try:
            _files.check_not_symlink(path)
        except _files.SymlinkRefused as e:
            raise BatchRunError(_reason(e), 2) from None


def _lock(path: str):
    try:
        return _files.DirLock(path)
    except (_files.LockHeld, _files.SymlinkRefused) as e:
        raise BatchRunError(_reason(e), 2) from None


def run_batch_eval(cfg: dict, out_dir: str, resume: bool = False) -> dict:
    """Evaluate ``cfg['op']`` on every input matrix, chunk by chunk; return the summary.

    Args:
      cfg: see :func:`validate_config` and the module docstring; keys ``op``, ``input``
        (``{path, key?}`` or ``{generator, n, count, seed?, dtype?}``), ``chunk_size``,
        ``vectors``, ``grad_loss``, ``sample_checks``, ``progress``.
      out_dir: directory for ``eigenvalues.npy`` (and ``eigenvectors.npy``,
        ``grad.npy``), ``progress.json``, ``summary.json`` and ``batch_eval.lock``.
      resume: continue a run in ``out_dir``, skipping finished chunks whose rows are on
        disk (the output files' headers and sizes are checked; missing rows are
        recomputed). Without it an existing ``progress.json`` is an error (no silent
        overwrite).

    Returns:
      The summary dict (also written to ``summary.json``); :func:`summary_line` says it
      in one line.

    Raises:
      BatchConfigError: invalid config or input, or resuming with a different config.
      BatchRunError: refused or stopped by the output directory or the machine (another
        run holds the lock, a symbolic link, a damaged ``progress.json``, disk full, out
        of memory); ``exit_code`` 2 when nothing was written, 3 when finished work is kept.
    """
    cfg = validate_config(cfg)
    maybe_initialize()
    pid, nproc = jax.process_index(), jax.process_count()
    src = _Source(cfg["input"])  # raises on a bad file before anything is written
    if src.dtype in (np.float64, np.complex128):
        # float64 data must be computed in float64: JAX would truncate it to float32.
        # (Before any tracing: the generator and the kernels are traced lazily.)
        jax.config.update("jax_enable_x64", True)
    count, chunk = src.count, cfg["chunk_size"]
    nchunks = -(-count // chunk)
    fp = _fingerprint(cfg, count, src.n, src.dtype)
    progress = _Progress(out_dir, fp, nchunks, pid, nproc)
    # one process: summary.json; several: each writes its part summary.<k>.json, and
    # process 0 merges them into summary.json once every process is done
    summary_path = os.path.join(out_dir, "summary.json" if nproc == 1 else f"summary.{pid}.json")
    lock_path = os.path.join(out_dir, "batch_eval.lock" if pid == 0 else f"batch_eval.{pid}.lock")
    outs = {
        k: _Output(os.path.join(out_dir, f"{k}.npy"), (count, *shp), dt)
        for k, (shp, dt) in _output_specs(cfg, src.n, src.dtype).items()
    }
    notes: list[str] = []

    def note(msg):
        notes.append(msg)
        print(f"batch_eval: {msg}", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        failure, done = None, None
        try:  # every refusal comes before the first barrier, and every process learns of it
            _refuse_links(
                [
                    *(o.path for o in outs.values()),
                    progress.path,
                    summary_path,
                    lock_path,
                    os.path.join(out_dir, "summary.json"),
                ]
            )
            try:
                os.makedirs(out_dir, exist_ok=True)
            except OSError as e:
                raise BatchRunError(f"cannot create the output directory {out_dir}: {e.strerror}", 2) from None
            stack.enter_context(_lock(lock_path))
            for path in (progress.path, summary_path):  # a killed run's temporaries (we hold the lock)
                _files.remove_temps(path)
            done = progress.read(resume, note)
        except (BatchConfigError, BatchRunError) as e:
            failure = e
        except _files.SymlinkRefused as e:
            failure = BatchRunError(_reason(e), 2)
        _agree(nproc, failure)
        try:
            fresh = done is None
            done = _prepare_outputs(outs, set() if fresh else done, fresh, chunk, progress, note, pid, nproc)
            progress.write(done)
            return _finish(cfg, src, outs, done, progress, summary_path, notes, note, resume and not fresh, pid, nproc)
        except _files.SymlinkRefused as e:  # a link planted after the check above
            raise BatchRunError(_reason(e), 2) from None
        finally:
            for o in outs.values():
                o.close()


def _finish(cfg, src, outs, done, progress, summary_path, notes, note, resumed, pid, nproc) -> dict:
    """Compute the chunks not done, then check a sample and write ``summary.json``."""
    count, chunk, nchunks = src.count, cfg["chunk_size"], progress.nchunks
    ours = [c for c in range(nchunks) if c % nproc == pid]
    mine = [c for c in ours if c not in done]
    if resumed and not mine:
        note(f"nothing to resume: all {len(ours)} chunks are done; summary.json is rewritten")
    bar = None
    if cfg["progress"] and mine:
        from tqdm.auto import tqdm

        bar = tqdm(total=_rows_of(mine, chunk, count), unit="mat", unit_scale=True, desc=f"batch_eval {cfg['op']}")
    rows_done, seconds, split = _compute(cfg, src, outs, mine, done, progress, bar)
    if bar is not None:
        bar.close()
    devices = jax.local_devices()
    summary = {
        "op": cfg["op"],
        "rows": count,
        "n": src.n,
        "dtype": str(src.dtype),
        "chunks": nchunks,
        "resumed": resumed,
        "chunks_this_run": len(mine),
        "rows_this_run": rows_done,
        "rows_resumed": _rows_of((c for c in ours if c not in mine), chunk, count),  # on disk before this run
        "seconds_this_run": seconds,
        "matrices_per_second": rows_done / seconds if rows_done and seconds > 0 else None,  # this run's rows
        # this run's time: reading or generating the input, computing (the first chunk's
        # compilation included), writing and flushing the outputs and progress
        "seconds_input": split["input"],
        "seconds_compute": split["compute"],
        "seconds_write": split["write"],
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "local_device_count": len(devices),
        "process_index": pid,
        "process_count": nproc,
        "complete": len(done) == nchunks if nproc == 1 else None,  # a part: process 0 says, for all of them
        "accuracy": {},
        "outputs": {k: os.path.basename(o.path) for k, o in outs.items()},
        "notes": notes,
    }
    if nproc == 1:
        summary["accuracy"] = _accuracy(cfg, src, outs, _sample(cfg, count) if summary["complete"] else [])
    _write_summary(summary_path, summary)
    if nproc == 1:
        return summary
    _barrier(nproc, "eigjax_batch_parts_written")  # every process's chunks are on disk (or it died)
    if pid != 0:
        return summary
    summary = _merge_parts(cfg, src, outs, progress)
    _write_summary(os.path.join(progress.dir, "summary.json"), summary)
    return summary


def _rows_of(chunks, chunk: int, count: int) -> int:
    return sum(min(chunk, count - c * chunk) for c in chunks)


def _sample(cfg, count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(count, size=min(cfg["sample_checks"], count), replace=False))


def _write_summary(path: str, summary: dict) -> None:
    try:
        _files.atomic_write_json(path, summary)
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        raise BatchRunError(
            f"disk full writing {path} ({e.strerror}); every chunk is done and kept: "
            "free space and run again with --resume to write the summary",
            3,
        ) from None


def _merge_parts(cfg, src, outs, progress: _Progress) -> dict:
    """Process 0, after every process wrote its part: the global ``summary.json``.

    ``complete`` is checked, not trusted: every process's progress file is read again and
    the union of their finished chunks must be every chunk, each recorded by its owner
    (chunk ``c`` by process ``c % P``), and every output file must hold all its rows.
    """
    nproc, nchunks, out_dir = progress.nproc, progress.nchunks, progress.dir
    parts, problems = [], []
    for k in range(nproc):
        path = os.path.join(out_dir, f"summary.{k}.json")
        try:
            with open(path) as f:
                parts.append(json.load(f))
        except (OSError, ValueError) as e:
            problems.append(f"{os.path.basename(path)} unreadable ({e})")
    recorded: set[int] = set()
    for k, path in sorted(progress.records().items()):
        done, _ = progress.parse(path)
        if any(c % nproc != k for c in done):
            problems.append(f"{os.path.basename(path)} lists chunks of another process")
        recorded |= {c for c in done if c % nproc == k}
    missing = set(range(nchunks)) - recorded
    if missing:
        problems.append(f"chunks {_ranges(missing)} not recorded as done")
    for o in outs.values():  # reopened: rows other hosts wrote are read through a fresh descriptor (NFS)
        o.close()
        _, problem, _ = o.inspect()
        if problem:
            problems.append(f"{os.path.basename(o.path)} {problem}")
        o.open(create=False)
    complete = not problems
    seconds = max((p["seconds_this_run"] for p in parts), default=0.0)
    rows_this_run = sum(p["rows_this_run"] for p in parts)
    first = parts[0] if parts else {}
    keys = (
        "process_index",
        "chunks_this_run",
        "rows_this_run",
        "rows_resumed",
        "seconds_this_run",
        "matrices_per_second",
        "seconds_input",
        "seconds_compute",
        "seconds_write",
        "local_device_count",
        "device_kind",
        "resumed",
    )
    return {
        **{k: first.get(k) for k in ("op", "rows", "n", "dtype", "chunks", "device_kind", "platform")},
        "resumed": any(p["resumed"] for p in parts),
        "chunks_this_run": sum(p["chunks_this_run"] for p in parts),
        "rows_this_run": rows_this_run,
        "rows_resumed": sum(p["rows_resumed"] for p in parts),
        "seconds_this_run": seconds,  # the slowest process's
        "matrices_per_second": rows_this_run / seconds if rows_this_run and seconds > 0 else None,
        "local_device_count": first.get("local_device_count"),
        "device_count": sum(p["local_device_count"] for p in parts),
        "process_count": nproc,
        "per_process": [{k: p.get(k) for k in keys} for p in parts],
        "complete": complete,
        "accuracy": _accuracy(cfg, src, outs, _sample(cfg, src.count) if complete else []),
        "outputs": {k: os.path.basename(o.path) for k, o in outs.items()},
        "notes": [f"process {p['process_index']}: {m}" for p in parts for m in p["notes"]] + problems,
    }


def summary_line(summary: dict, out_dir: str) -> str:
    """One line for the CLI: rows, this run's throughput (labelled when resumed), where."""
    rows, this, before = summary["rows"], summary["rows_this_run"], summary["rows_resumed"]
    if summary["resumed"] and this == 0:
        return (
            f"batch_eval: {rows} matrices, nothing to resume (all {summary['chunks']} chunks were done), "
            f"outputs in {out_dir}"
        )
    rate = summary["matrices_per_second"]
    rate = "-" if rate is None else f"{rate:.3g}"
    if before:
        return (
            f"batch_eval: {rows} matrices ({this} computed by this run, {before} resumed from disk), "
            f"{rate} matrices/s over this run's {this}, outputs in {out_dir}"
        )
    return f"batch_eval: {rows} matrices, {rate} matrices/s, outputs in {out_dir}"
