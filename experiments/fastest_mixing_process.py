"""Fastest mixing Markov process (Sun, Boyd, Xiao, Diaconis 2006): maximise lambda_2(L(w)), sum(w) = 1.

Problem: on a connected graph choose edge rates ``w_e >= 0`` with ``sum_e w_e = 1`` to
maximise the algebraic connectivity ``lambda_2(L(w))`` (concave in ``w``), the mixing rate
of the continuous-time process ``exp(-t L(w))``.

Method. ``lambda_2`` is nonsmooth where it is repeated (typically at the optimum). We
maximise the smooth lower bound ``-(1/beta) log sum_i exp(-beta mu_i)`` over the
eigenvalues ``mu`` of ``L(w) + s 11^T/n`` with ``s = 4 >= 2 max_v deg_v(w) >= lambda_n`` (which moves the
zero eigenvalue of ``1`` above the rest), a symmetric function of all eigenvalues, so its
gradient through ``eigjax.eigvalsh`` is exact at repeated eigenvalues; ``beta`` is annealed
geometrically. Feasibility by construction: ``w = |theta| / sum |theta|``.

Reference values: the path on n vertices has ``lambda_2* = 12 / (n (n^2 - 1))``, attained
by ``w_i proportional to i (n - i)`` (Sun, Boyd, Xiao, Diaconis 2006, sec. on paths; the
tests check it against an SDP solver); on edge-transitive graphs (cycle, star, complete, complete bipartite,
Petersen, hypercube) equal weights ``1/m`` are optimal (average an optimum over the
automorphism group; the problem is concave), so ``lambda_2* = mu_2(L_unweighted) / m``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import eigjax

from ._graphs import EDGE_TRANSITIVE, AnnealedGraphProblem, annealed_beta, degrees, incidence, make_graph

MAXIMIZE = True


Problem = AnnealedGraphProblem


def setup(problem: Problem, dtype):
    n, edges = make_graph(problem.graph)
    return {
        "b": jnp.asarray(incidence(n, edges), dtype=dtype),
        **problem.schedule_data(dtype),
    }


def weights(theta, data):
    a = jnp.abs(theta)
    return a / jnp.sum(a)


def laplacian(w, data):
    b = data["b"]
    return (b * w[None, :]) @ b.T


def init_params(data, key):
    m = data["b"].shape[1]
    noise = 0.05 * jax.random.uniform(key, (m,), dtype=data["b"].dtype)
    return (1.0 + noise) / m


def objective(theta, data):
    return eigjax.eigvalsh(laplacian(weights(theta, data), data))[1]


def loss(theta, data, step):
    beta = annealed_beta(data, step)
    lap = laplacian(weights(theta, data), data)
    n = lap.shape[0]
    mu = eigjax.eigvalsh(lap + jnp.full((n, n), 4.0 / n, dtype=lap.dtype))
    smooth = jax.nn.logsumexp(-beta * mu) / beta  # = -(smooth min of mu): minimised
    return smooth, mu[0]  # mu[0] = lambda_2(L) while lambda_2 < 4: the objective, same solve


def project(theta, data):
    return weights(theta, data)


def metrics(theta, data):
    return {"eigenvalues": eigjax.eigvalsh(laplacian(weights(theta, data), data))}


def lambda2(n, edges, w) -> float:
    b = incidence(n, edges)
    return float(np.linalg.eigvalsh((b * w) @ b.T)[1])


def reference(problem: Problem, data):
    n, edges = make_graph(problem.graph)
    if problem.graph.get("family") == "path":
        return 12.0 / (n * (n**2 - 1))
    if problem.graph.get("family") in EDGE_TRANSITIVE:
        return lambda2(n, edges, np.full(len(edges), 1.0 / len(edges)))
    return None


def result(theta, data, problem):
    n, edges = make_graph(problem.graph)
    w = np.asarray(weights(theta, data), dtype=np.float64)
    deg = degrees(n, edges)
    mh = 1.0 / np.maximum(deg[edges[:, 0]], deg[edges[:, 1]])
    return {
        "lambda2": lambda2(n, edges, w),
        "weights": w,
        "edges": edges,
        "lambda2_uniform": lambda2(n, edges, np.full(len(edges), 1.0 / len(edges))),
        "lambda2_metropolis_hastings": lambda2(n, edges, mh / mh.sum()),
    }
