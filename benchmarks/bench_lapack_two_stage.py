"""Is LAPACK's two-stage reduction faster for values only? (issue 20; a measurement, not a feature)

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lapack_two_stage.py

Calls ``dsyevd_2stage(jobz='N')`` from the OpenBLAS that SciPy ships (``scipy.libs``,
symbols prefixed ``scipy_``; not exposed by ``scipy.linalg.cython_lapack`` nor by
jaxlib) through ctypes, and times it against ``syevd(jobz='N')`` (scipy's
``eigh(..., eigvals_only=True, driver='evd')``) and the full ``eigh``: medians of 7
process-CPU times. Prints the relative eigenvalue difference as a check. Result in
BENCHMARKS.md, "Values-only eigvalsh".
"""

from __future__ import annotations

import ctypes
import glob
import os
import time

import numpy as np
import scipy
import scipy.linalg as sl


def two_stage():
    libs = glob.glob(os.path.join(os.path.dirname(scipy.__file__), "..", "scipy.libs", "libscipy_openblas*.so"))
    if not libs:
        raise SystemExit("no libscipy_openblas*.so beside this SciPy")
    return ctypes.CDLL(libs[0]).scipy_dsyevd_2stage_


def syevd_2stage(f, a):
    n = a.shape[0]
    a = np.asfortranarray(a.copy())
    w = np.empty(n)
    jobz, uplo = ctypes.c_char(b"N"), ctypes.c_char(b"L")
    nn, info = ctypes.c_int(n), ctypes.c_int(0)
    work, iwork = np.empty(1), np.empty(1, np.int32)
    lwork, liwork = ctypes.c_int(-1), ctypes.c_int(-1)

    def call():
        f(
            ctypes.byref(jobz),
            ctypes.byref(uplo),
            ctypes.byref(nn),
            a.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(nn),
            w.ctypes.data_as(ctypes.c_void_p),
            work.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(lwork),
            iwork.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(liwork),
            ctypes.byref(info),
            ctypes.c_size_t(1),
            ctypes.c_size_t(1),
        )

    call()  # workspace query
    work, iwork = np.empty(int(work[0])), np.empty(int(iwork[0]), np.int32)
    lwork.value, liwork.value = work.size, iwork.size
    call()
    if info.value != 0:
        raise RuntimeError(f"dsyevd_2stage info = {info.value}")
    return w


def main():
    f = two_stage()
    for n in (256, 1024):
        x = np.random.default_rng(0).standard_normal((n, n))
        a = x + x.T
        ref = np.linalg.eigvalsh(a)
        err = np.max(np.abs(syevd_2stage(f, a) - ref)) / np.max(np.abs(ref))
        print(f"n = {n}: two-stage eigenvalues vs eigvalsh, max relative difference {err:.1e}")
        runs = {
            "dsyevd_2stage('N')": lambda a=a: syevd_2stage(f, a),
            "syevd('N') (scipy evd)": lambda a=a: sl.eigh(a, eigvals_only=True, driver="evd"),
            "eigh with vectors": lambda a=a: np.linalg.eigh(a),
        }
        for name, run in runs.items():
            times = []
            for _ in range(7):
                t = time.process_time()
                run()
                times.append(time.process_time() - t)
            print(f"  {name}: {np.median(times) * 1e3:.1f} ms CPU")


if __name__ == "__main__":
    main()
