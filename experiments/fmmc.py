"""Fastest mixing Markov chain (Boyd, Diaconis, Xiao 2004): minimise the SLEM of P = I - L(w).

Problem: on a connected graph, choose symmetric transition probabilities ``w_e >= 0`` on
the edges, with ``sum_{e at v} w_e <= 1`` at every vertex (so ``P = I - L(w)`` is
stochastic), to minimise the second largest eigenvalue modulus
``SLEM(w) = max(lambda_2(P), -lambda_n(P)) = || P - 11^T/n ||_2`` (convex in ``w``).

Method. The optimum is nonsmooth (eigenvalues coalesce there), so we minimise the smooth
upper bound ``(1/beta) log sum_i exp(beta |lambda_i|)`` of ``|| P - 11^T/n ||_2`` —
a symmetric function of all eigenvalues, so its gradient via ``eigjax.eigvalsh`` is exact
even where eigenvalues are repeated — with ``beta`` annealed geometrically from
``beta_start`` to ``beta_end`` (bias at most ``log(2n)/beta``). Feasibility by
projection: after every optimiser step the weights are projected (Euclidean projection
onto the feasible polytope, computed by projected dual ascent, then made exactly feasible
by scaling down edges at any vertex still overfull). An earlier version instead
parameterised ``w = |theta| / max(1, deg_i, deg_j)``; that composite map is not convex and
stalled 4e-3 above the SDP optimum on a random graph.

Reference values: the path on n vertices has optimum ``cos(pi/n)`` (all weights 1/2; Boyd,
Diaconis, Parrilo, Xiao, "Fastest mixing Markov chain on paths", 2006); on edge-transitive
graphs (cycle, star, complete, complete bipartite, Petersen, hypercube) an optimum has
equal weights ``p`` (average any optimum over the automorphism group; the problem is
convex), so ``SLEM* = min_{0 <= p <= 1/d_max} max(1 - p mu_2, p mu_n - 1)`` with ``mu`` the
unweighted Laplacian eigenvalues: ``p* = min(2/(mu_2 + mu_n), 1/d_max)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import eigjax

from ._graphs import EDGE_TRANSITIVE, AnnealedGraphProblem, annealed_beta, degrees, incidence, make_graph

Problem = AnnealedGraphProblem


def setup(problem: Problem, dtype):
    n, edges = make_graph(problem.graph)
    return {
        "b": jnp.asarray(incidence(n, edges), dtype=dtype),
        "absb": jnp.asarray(np.abs(incidence(n, edges)), dtype=dtype),
        **problem.schedule_data(dtype),
    }


def weights(theta, data):
    """The feasible weights: ``|theta|`` scaled down on edges touching an overfull vertex."""
    a = jnp.abs(theta)
    deg = data["absb"] @ a  # weighted degree of each vertex
    scale = jnp.maximum(1.0, jnp.max(data["absb"] * deg[:, None], axis=0))
    return a / scale


def euclidean_projection(y, data, iterations: int = 300):
    """Approximate Euclidean projection onto ``{w >= 0, |B| w <= 1}`` by projected dual ascent.

    ``min_w ||w - y||^2/2`` s.t. ``A w <= 1``, ``w >= 0`` has dual
    ``w(mu) = max(0, y - A^T mu)``, ``mu <= max(0, mu + eta (A w(mu) - 1))``, which
    converges for ``eta <= 1/||A||_2^2`` (``||A||_2^2 <= 2 d_max``). A final edgewise
    scaling (``weights``) makes the result exactly feasible whatever the accuracy.
    """
    a = data["absb"]
    eta = 1.0 / (2.0 * jnp.max(jnp.sum(a, axis=1)))

    def body(_, mu):
        w = jnp.maximum(0.0, y - a.T @ mu)
        return jnp.maximum(0.0, mu + eta * (a @ w - 1.0))

    mu = jax.lax.fori_loop(0, iterations, body, jnp.zeros(a.shape[0], dtype=y.dtype))
    return weights(jnp.maximum(0.0, y - a.T @ mu), data)


def transition_matrix(w, data):
    b = data["b"]
    return jnp.eye(b.shape[0], dtype=b.dtype) - (b * w[None, :]) @ b.T


def _centred_eigenvalues(theta, data):
    p = transition_matrix(theta, data)  # theta is kept feasible by `project`
    n = p.shape[0]
    return eigjax.eigvalsh(p - jnp.full((n, n), 1.0 / n, dtype=p.dtype))


def init_params(data, key):
    # Start from the max-degree chain, slightly perturbed (the seed matters for sweeps).
    n, m = data["b"].shape
    dmax = jnp.max(jnp.sum(data["absb"], axis=1))
    noise = 0.05 * jax.random.uniform(key, (m,), dtype=data["b"].dtype)
    return weights((1.0 + noise) / dmax, data)  # feasible from the start


def objective(theta, data):
    return jnp.max(jnp.abs(_centred_eigenvalues(theta, data)))


def loss(theta, data, step):
    beta = annealed_beta(data, step)
    lam = _centred_eigenvalues(theta, data)
    smooth = jax.nn.logsumexp(beta * jnp.concatenate([lam, -lam])) / beta
    return smooth, jnp.max(jnp.abs(lam))  # (loss, objective) from one eigensolve


def project(theta, data):
    return euclidean_projection(theta, data)


def metrics(theta, data):
    return {"eigenvalues": eigjax.eigvalsh(transition_matrix(weights(theta, data), data))}


def slem(p: np.ndarray) -> float:
    n = p.shape[0]
    return float(np.max(np.abs(np.linalg.eigvalsh(p - np.ones((n, n)) / n))))


def heuristics(n: int, edges: np.ndarray) -> dict[str, np.ndarray]:
    deg = degrees(n, edges)
    return {
        "metropolis_hastings": 1.0 / np.maximum(deg[edges[:, 0]], deg[edges[:, 1]]),
        "max_degree": np.full(len(edges), 1.0 / deg.max()),
    }


def chain(n, edges, w) -> np.ndarray:
    b = incidence(n, edges)
    return np.eye(n) - (b * w) @ b.T


def reference(problem: Problem, data):
    n, edges = make_graph(problem.graph)
    family = problem.graph.get("family")
    if family == "path":
        return float(np.cos(np.pi / n))
    if family in EDGE_TRANSITIVE:
        mu = np.linalg.eigvalsh(incidence(n, edges) @ incidence(n, edges).T)
        p = min(2.0 / (mu[1] + mu[-1]), 1.0 / degrees(n, edges).max())
        return float(max(1 - p * mu[1], p * mu[-1] - 1))
    return None


def result(theta, data, problem):
    n, edges = make_graph(problem.graph)
    w = np.asarray(weights(theta, data), dtype=np.float64)
    out = {"slem": slem(chain(n, edges, w)), "weights": w, "edges": edges}
    for name, hw in heuristics(n, edges).items():
        out[f"slem_{name}"] = slem(chain(n, edges, hw))
    return out
