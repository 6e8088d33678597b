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
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading

import jax
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name("_small_native.cc")
_TARGETS = {np.dtype(np.float32): "eigjax_small_eigh_f32", np.dtype(np.float64): "eigjax_small_eigh_f64"}
_SYMBOLS = {"eigjax_small_eigh_f32": "EigjaxSmallEighF32", "eigjax_small_eigh_f64": "EigjaxSmallEighF64"}
_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math"]

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


def _build() -> pathlib.Path:
    import jaxlib

    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found (g++, c++ or clang++; or set CXX)")
    include = jax.ffi.include_dir()
    key = hashlib.sha256(
        b"\0".join([_SOURCE.read_bytes(), jaxlib.__version__.encode(), " ".join(_FLAGS).encode(), _cpu_key().encode(), compiler.encode()])
    ).hexdigest()[:20]
    cache = pathlib.Path(os.environ.get("EIGJAX_CACHE_DIR") or pathlib.Path.home() / ".cache" / "eigjax")
    target = cache / f"small_native_{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # Build into a temporary name and rename: concurrent processes (pytest -n) never see a
    # half-written library.
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=cache)
    os.close(fd)
    try:
        cmd = [compiler, *_FLAGS, f"-I{include}", str(_SOURCE), "-o", tmp]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"compiling {_SOURCE.name} failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load() -> None:
    if os.environ.get("EIGJAX_NATIVE", "1") == "0":
        raise RuntimeError("disabled by EIGJAX_NATIVE=0")
    lib = ctypes.cdll.LoadLibrary(str(_build()))
    for name, symbol in _SYMBOLS.items():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    _state["lib"] = lib  # keep the library loaded


# Sizes for which the kernel beats the CPU backend's solver (LAPACK syevd), measured at
# batch 1e5 in float32 (BENCHMARKS.md): 13x at n = 4, 7x at n = 8, 2.6x at n = 16, but
# only 1.1x at n = 32, where its residual (~1.5 n eps ||A||) also nears the 50 eps bound.
MAX_N = 16


def use_native(n: int, dtype, backend: str) -> bool:
    """Whether ``eigjax.eigh`` should use the kernel for real ``n x n`` input (if it builds)."""
    return backend == "cpu" and np.dtype(dtype) in _TARGETS and 2 <= n <= MAX_N


def status() -> str:
    """``"ok"``, or why the native kernel is not used (builds it on the first call)."""
    with _lock:
        if "status" not in _state:
            try:
                _load()
                _state["status"] = "ok"
            except Exception as e:  # noqa: BLE001 - any failure means: use the JAX solvers
                _state["status"] = f"{type(e).__name__}: {e}"
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
    return call(a, symmetrize=np.int64(symmetrize))
