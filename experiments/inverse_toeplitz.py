"""Inverse Toeplitz eigenvalue problem (Trench 1997): a real symmetric Toeplitz matrix with a given spectrum.

Problem: find the generating vector ``c`` (first column) of a real symmetric Toeplitz
matrix ``T(c)`` whose eigenvalues are the prescribed ``lambda_1 <= ... <= lambda_n``
(Landau 1994 proved that every real spectrum is attained; Trench 1997 gives numerical
methods). Objective: the spectral residual ``||eig(T(c)) - lambda||_2`` (sorted). The loss
is half its square, minimised with an optax optimizer (L-BFGS in the shipped config) from
the symbol fit described in ``init_params``;
derivatives through ``eigjax.eigvalsh``. Reference: 0.

``problem.spectrum`` lists the target eigenvalues, or is null for ``1, 2, ..., n``.
"""

from __future__ import annotations

import dataclasses
import reprlib

import jax
import jax.numpy as jnp
import numpy as np

import eigjax


@dataclasses.dataclass
class Problem:
    n: int = 8
    spectrum: list | None = None
    init_scale: float = 0.01

    def validate(self):
        if self.n < 1:
            raise ValueError(f"n: expected an integer >= 1, got {self.n}")
        if self.spectrum is not None:
            if len(self.spectrum) != self.n or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in self.spectrum
            ):
                raise ValueError(
                    f"spectrum: expected a list of {self.n} numbers (or null), got {reprlib.repr(self.spectrum)}"
                )


def target(problem: Problem) -> np.ndarray:
    if problem.spectrum is None:
        return np.arange(1.0, problem.n + 1)
    return np.sort(np.asarray(problem.spectrum, dtype=float))


def setup(problem: Problem, dtype):
    n = problem.n
    idx = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    return {
        "index": jnp.asarray(idx),
        "target": jnp.asarray(target(problem), dtype=dtype),
        "init_scale": jnp.asarray(problem.init_scale, dtype=dtype),
    }


def toeplitz(c, data):
    return c[data["index"]]


def init_params(data, key):
    # Start from the symbol fit: the eigenvalues of T(c) are close to samples of its symbol
    # f(t) = c_0 + 2 sum_k c_k cos(k t) at t_j = j pi/(n+1) (Grenander-Szego), so solve
    # f(t_j) = lambda_j for c; then perturb by init_scale (relative, seeded).
    lam = data["target"]
    n = lam.shape[0]
    t = jnp.arange(1, n + 1, dtype=lam.dtype) * jnp.pi / (n + 1)
    k = jnp.arange(1, n, dtype=lam.dtype)
    m = jnp.concatenate([jnp.ones((n, 1), lam.dtype), 2 * jnp.cos(t[:, None] * k[None, :])], axis=1)
    c = jnp.linalg.solve(m, lam)
    noise = jax.random.normal(key, (n,), dtype=lam.dtype)
    return c + data["init_scale"] * jnp.std(lam) * noise / jnp.sqrt(n)


def objective(c, data):
    return jnp.linalg.norm(eigjax.eigvalsh(toeplitz(c, data)) - data["target"])


def loss(c, data, step):
    return 0.5 * jnp.sum((eigjax.eigvalsh(toeplitz(c, data)) - data["target"]) ** 2)


def metrics(c, data):
    return {"eigenvalues": eigjax.eigvalsh(toeplitz(c, data))}


def reference(problem: Problem, data):
    return 0.0


def result(c, data, problem):
    c = np.asarray(c, dtype=np.float64)
    t = c[np.asarray(data["index"])]
    w = np.linalg.eigvalsh(t)
    return {
        "generating_vector": c,
        "eigenvalues": w,
        "target": target(problem),
        "spectral_residual": float(np.linalg.norm(w - target(problem))),
    }
