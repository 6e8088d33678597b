"""Spectral abscissa minimisation: make max Re(lambda) of a non-symmetric matrix as negative as possible.

Systems (``problem.system``):

* ``oscillator``: the damped oscillator ``M(t) = [[0, 1], [-1, -t]]`` with damping ``t``.
  Its eigenvalues are ``(-t +- sqrt(t^2 - 4))/2``: the abscissa is ``-t/2`` for ``t <= 2``
  and ``(-t + sqrt(t^2 - 4))/2`` for ``t >= 2``, so the optimum is ``-1`` at ``t = 2``,
  where ``M`` is a Jordan block (defective): the derivative jumps from ``-1/2`` to
  ``+inf``. This tests behaviour where the derivative blows up: the iterates approach
  ``t = 2`` from both sides, the gradient is large but finite off the defective point,
  and at the point itself ``eigjax.eig``'s derivative is NaN by contract (the runner
  would then stop with a message naming the step).
* ``feedback``: static output feedback ``M(K) = A + B K C`` with random ``A`` (n x n,
  shifted to be unstable), ``B`` (n x p), ``C`` (q x n) from ``problem.seed``; the
  parameters are ``K`` (p x q). No closed-form optimum (reference null).

Objective: ``max_i Re lambda_i(M)`` through ``eigjax.eigvals``; reference ``-1`` for the
oscillator.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp
import numpy as np

import eigjax


@dataclasses.dataclass
class Problem:
    system: Literal["oscillator", "feedback"] = "oscillator"
    t0: float = 0.5
    n: int = 4
    p: int = 2
    q: int = 2
    seed: int = 0

    def validate(self):
        for key in ("n", "p", "q"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected an integer >= 1, got {getattr(self, key)}")


def setup(problem: Problem, dtype):
    if problem.system == "oscillator":
        return {"t0": jnp.asarray(problem.t0, dtype=dtype)}
    rng = np.random.default_rng(problem.seed)
    a = rng.standard_normal((problem.n, problem.n))
    a = a - (np.max(np.linalg.eigvals(a).real) - 0.5) * np.eye(problem.n)  # abscissa 0.5: unstable
    return {
        "a": jnp.asarray(a, dtype=dtype),
        "b": jnp.asarray(rng.standard_normal((problem.n, problem.p)), dtype=dtype),
        "c": jnp.asarray(rng.standard_normal((problem.q, problem.n)), dtype=dtype),
    }


def matrix(params, data):
    if "t0" in data:
        t = params
        one, zero = jnp.ones_like(t), jnp.zeros_like(t)
        return jnp.stack([jnp.stack([zero, one]), jnp.stack([-one, -t])])
    return data["a"] + data["b"] @ params @ data["c"]


def init_params(data, key):
    if "t0" in data:
        return data["t0"]
    return jnp.zeros((data["b"].shape[1], data["c"].shape[0]), dtype=data["a"].dtype)


def objective(params, data):
    return jnp.max(jnp.real(eigjax.eigvals(matrix(params, data))))


def metrics(params, data):
    # complex: the runner plots real and imaginary parts (and the complex plane)
    return {"eigenvalues": eigjax.eigvals(matrix(params, data))}


def reference(problem: Problem, data):
    return -1.0 if problem.system == "oscillator" else None


def result(params, data, problem):
    m = np.asarray(matrix(params, data), dtype=np.float64)
    w = np.linalg.eigvals(m)
    return {
        "params": np.asarray(params),
        "eigenvalues": w,
        "spectral_abscissa": float(np.max(w.real)),
    }
