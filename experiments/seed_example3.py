"""Seed example 3: minimise sum(eigvalsh(A)) + 0.1*||A||^2/2 from A0 = [[2,1],[1,2]] with Adam."""

from __future__ import annotations

import dataclasses
import reprlib

import jax.numpy as jnp
import numpy as np

import eigjax


@dataclasses.dataclass
class Problem:
    a0: list = dataclasses.field(default_factory=lambda: [[2.0, 1.0], [1.0, 2.0]])
    ridge: float = 0.1

    def validate(self):
        try:
            a = np.asarray(self.a0, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(
                f"a0: expected a square matrix (a list of equally long lists of numbers), got {reprlib.repr(self.a0)}"
            ) from None
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
            raise ValueError(f"a0: expected a square matrix (a non-empty list of lists), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"a0: expected finite numbers, got {reprlib.repr(self.a0)}")
        # The objective is bounded below (its minimiser A* = -I/ridge exists) only for ridge > 0.
        if not (np.isfinite(self.ridge) and self.ridge > 0):
            raise ValueError(
                f"ridge: expected a number > 0 (the problem is unbounded below otherwise), got {self.ridge}"
            )


def setup(problem: Problem, dtype):
    return {"a0": jnp.asarray(problem.a0, dtype=dtype), "ridge": jnp.asarray(problem.ridge, dtype=dtype)}


def init_params(data, key):
    return data["a0"]


def objective(a, data):
    return jnp.sum(eigjax.eigvalsh(a)) + data["ridge"] * jnp.sum(a**2) / 2


def metrics(a, data):
    return {"eigenvalues": eigjax.eigvalsh(a)}


def reference(problem: Problem, data):
    # Closed form: the gradient is I + ridge*A (symmetric A), zero at A* = -I/ridge,
    # where the objective is -n/ridge + n/(2 ridge) = -n/(2 ridge).
    n = len(problem.a0)
    return -n / (2 * problem.ridge)


def result(a, data, problem):
    return {"a": np.asarray(a), "eigenvalues": np.asarray(eigjax.eigvalsh(a))}
