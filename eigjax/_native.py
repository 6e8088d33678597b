"""The native CPU kernel for small batched symmetric eigenproblems (``_small_native.cc``).

Built on first use with the system C++ compiler against the XLA FFI headers that jaxlib
ships (``jax.ffi.include_dir()``), cached per source, jaxlib version and CPU, and
registered as an XLA FFI target on the CPU platform. Nothing is built at install time:
where no compiler is found or the build fails, :func:`available` is False, the reason is
in :func:`status`, and eigjax uses its pure-JAX solvers and LAPACK instead (the same
results to rounding). ``EIGJAX_NATIVE=0`` disables the kernel; ``EIGJAX_CACHE_DIR``
moves the cache (default ``~/.cache/eigjax``).

Example:
    >>> from eigjax import _native
    >>> isinstance(_native.available(), bool)
    True
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import stat
import subprocess
import tempfile
import threading

import jax
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name("_small_native.cc")
_TARGETS = {np.dtype(np.float32): "eigjax_small_eigh_f32", np.dtype(np.float64): "eigjax_small_eigh_f64"}
_VALUE_TARGETS = {np.dtype(np.float32): "eigjax_small_eigvalsh_f32", np.dtype(np.float64): "eigjax_small_eigvalsh_f64"}
_SYMBOLS = {
    "eigjax_small_eigh_f32": "EigjaxSmallEighF32",
    "eigjax_small_eigh_f64": "EigjaxSmallEighF64",
    "eigjax_small_eigvalsh_f32": "EigjaxSmallEigvalshF32",  # eigenvalues only
    "eigjax_small_eigvalsh_f64": "EigjaxSmallEigvalshF64",
}
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math"]

_log = logging.getLogger("eigjax")
_lock = threading.Lock()
_state: dict = {}


def _cpu_key() -> str:
    """The CPU's identity for the cache (the build uses -march=native)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor()]
    return "".join(lines) + platform.machine()


def _cache_dir() -> pathlib.Path:
    """The cache directory, created private (0700). A directory that another user owns or
    that others can write to could hold a planted library: it is not used; the kernel
    is then built into a fresh private temporary directory instead (not cached)."""
    cache = pathlib.Path(os.environ.get("EIGJAX_CACHE_DIR") or pathlib.Path.home() / ".cache" / "eigjax")
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = cache.lstat()
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        _log.warning(
            "eigjax: the kernel cache %s is a link, not yours, or writable by others; "
            "building the native kernel in a private temporary directory instead",
            cache,
        )
        return pathlib.Path(tempfile.mkdtemp(prefix="eigjax-native-"))
    return cache


def _digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trusted(target: pathlib.Path) -> bool:
    """Whether ``target`` is a library this process may load: a regular file of ours,
    not writable by others, whose SHA-256 matches the one written beside it at build
    time (a truncated or replaced file fails: it is then rebuilt)."""
    try:
        st = target.lstat()
        digest = target.with_suffix(".sha256").read_text().strip()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return False
    return _digest(target) == digest


def _write_synced(path: str, data: bytes | None = None) -> None:
    """fsync ``path`` (after writing ``data`` to it, if given)."""
    with open(path, "r+b" if data is None else "wb") as f:
        if data is not None:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _clean_stale(cache: pathlib.Path) -> None:
    """Remove temporary files left by builds whose process is gone (``*.PID.tmp``)."""
    for tmp in cache.glob("*.tmp"):
        try:
            pid = int(tmp.name.split(".")[-3])  # <stem>.<pid>.so.tmp, <stem>.<pid>.sha256.tmp
            os.kill(pid, 0)  # still building
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def _build() -> pathlib.Path:
    import jaxlib.version

    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found (g++, c++ or clang++; or set CXX)")
    include = jax.ffi.include_dir()
    key = hashlib.sha256(
        b"\0".join(
            [
                _SOURCE.read_bytes(),
                jaxlib.version.__version__.encode(),
                " ".join(_FLAGS).encode(),
                _cpu_key().encode(),
                compiler.encode(),
            ]
        )
    ).hexdigest()[:20]
    cache = _cache_dir()
    target = cache / f"small_native_{key}.so"
    if _trusted(target):
        return target
    _clean_stale(cache)
    _log.warning("eigjax: compiling the native small-matrix kernel (once per machine, 5-20 s) into %s", cache)
    # Build into temporary names, fsync, and rename: concurrent processes (pytest -n) and
    # a crash never leave a half-written library or checksum under the final names.
    pid = os.getpid()
    tmp, tmp_sum = cache / f"{target.stem}.{pid}.so.tmp", cache / f"{target.stem}.{pid}.sha256.tmp"
    try:
        cmd = [compiler, *_FLAGS, f"-I{include}", str(_SOURCE), "-o", str(tmp)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"compiling {_SOURCE.name} failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
        os.chmod(tmp, 0o700)
        _write_synced(str(tmp))
        _write_synced(str(tmp_sum), _digest(tmp).encode())
        os.replace(tmp, target)
        os.replace(tmp_sum, target.with_suffix(".sha256"))
        dir_fd = os.open(cache, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        for t in (tmp, tmp_sum):
            t.unlink(missing_ok=True)
    return target


def _load() -> None:
    if os.environ.get("EIGJAX_NATIVE", "1") == "0":
        raise RuntimeError("disabled by EIGJAX_NATIVE=0")
    lib = ctypes.cdll.LoadLibrary(str(_build()))
    for name, symbol in _SYMBOLS.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        # XLA's partitioner then splits the call along its leading (batch) dimensions
        # (the lowering in eigjax/_small_dispatch.py says how many there are).
        jax.ffi.register_ffi_target_as_batch_partitionable(name)
    _state["lib"] = lib  # keep the library loaded


# Sizes for which the kernel beats the CPU backend's solver (LAPACK syevd) clearly
# (BENCHMARKS.md, "Runs E and F: the native kernel"); at n = 32 it barely does, and its
# residual (~1.5 n eps ||A||) also nears the 50 eps bound.
MAX_N = 16


def target(dtype, vectors: bool = True) -> str:
    """The FFI target name of the kernel for ``dtype`` (float32 or float64); with
    ``vectors=False`` the variant that returns the eigenvalues alone (it skips the
    eigenvector rotations)."""
    return (_TARGETS if vectors else _VALUE_TARGETS)[np.dtype(dtype)]


def status() -> str:
    """``"ok"``, or why the native kernel is not used (builds it on the first call)."""
    with _lock:
        if "status" not in _state:
            try:
                _load()
                _state["status"] = "ok"
            except Exception as e:  # noqa: BLE001 - any failure means: use the JAX solvers
                _state["status"] = f"{type(e).__name__}: {e}"
                if os.environ.get("EIGJAX_NATIVE", "1") != "0":  # a user's choice is not news
                    _log.warning(
                        "eigjax: the native small-matrix kernel is not used (%s); small real "
                        "eigenproblems use the pure-JAX and LAPACK solvers (same results, slower)",
                        _state["status"].splitlines()[0][:300],
                    )
        return _state["status"]


def available() -> bool:
    """Whether the native kernel is built and registered (builds it on the first call)."""
    return status() == "ok"


def eigh(a: jax.Array, symmetrize: bool) -> tuple[jax.Array, jax.Array]:
    """Ascending eigenvalues and eigenvectors (columns) of real symmetric ``a`` of shape
    ``(..., n, n)``, float32 or float64, on the CPU (requires :func:`available`). With
    ``symmetrize`` the kernel uses ``(A + A^T) / 2``, otherwise the lower triangle."""
    if not available():
        raise RuntimeError(f"eigjax's native small-matrix kernel is not available: {status()}")
    dtype = np.dtype(a.dtype)
    out = (jax.ShapeDtypeStruct(a.shape[:-1], dtype), jax.ShapeDtypeStruct(a.shape, dtype))
    call = jax.ffi.ffi_call(_TARGETS[dtype], out, vmap_method="broadcast_all")
    w, v = call(a, symmetrize=np.int64(symmetrize))
    return w, v
