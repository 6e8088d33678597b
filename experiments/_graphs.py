"""Graphs for the Markov-chain experiments: named families or an explicit edge list.

``problem.graph`` is a mapping: ``{family: path, n: 8}``, ``{family: cycle, n: 9}``,
``{family: star, n: 6}`` (n vertices: one centre), ``{family: complete, n: 5}``,
``{family: complete_bipartite, m: 3, k: 4}``, ``{family: petersen}``,
``{family: hypercube, d: 3}``, ``{family: gnp, n: 12, p: 0.3, seed: 0}`` (conditioned on
connectivity by redrawing), or ``{n: 4, edges: [[0, 1], [1, 2], [2, 3]]}``.
"""

from __future__ import annotations

import dataclasses
import itertools
import reprlib

import numpy as np

FAMILIES = {
    "path": ("n",),
    "cycle": ("n",),
    "star": ("n",),
    "complete": ("n",),
    "complete_bipartite": ("m", "k"),
    "petersen": (),
    "hypercube": ("d",),
    "gnp": ("n", "p", "seed"),
}
# Families whose automorphism group acts transitively on edges: for these the convex
# problems below have an optimum with equal weights on every edge (average an optimal
# weight vector over the group), which gives their reference values.
EDGE_TRANSITIVE = {"cycle", "star", "complete", "complete_bipartite", "petersen", "hypercube"}


def _int(spec, key, lo):
    v = spec.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"graph.{key}: expected an integer >= {lo}, got {reprlib.repr(v)}")
    return v


def make_graph(spec) -> tuple[int, np.ndarray]:
    """Return ``(n, edges)`` with ``edges`` an ``(m, 2)`` int array, ``i < j``, no repeats."""
    if not isinstance(spec, dict):
        raise ValueError(f"graph: expected a mapping, got {reprlib.repr(spec)}")
    if "edges" in spec:
        extra = sorted(set(spec) - {"n", "edges"})
        if extra:
            raise ValueError(f"graph.{extra[0]}: unknown key for an explicit graph; expected n and edges")
        n = _int(spec, "n", 2)
        edges = spec["edges"]
        if not isinstance(edges, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in e)
            for e in edges
        ):
            raise ValueError(f"graph.edges: expected a list of [i, j] integer pairs, got {reprlib.repr(edges)}")
        for i, j in edges:
            if not (0 <= i < n and 0 <= j < n) or i == j:
                raise ValueError(f"graph.edges: edge [{i}, {j}] is not a pair of distinct vertices in 0..{n - 1}")
        e = sorted({(min(i, j), max(i, j)) for i, j in edges})
    else:
        family = spec.get("family")
        if family not in FAMILIES:
            raise ValueError(
                f"graph.family: expected one of {sorted(FAMILIES)} (or n + edges), got {reprlib.repr(family)}"
            )
        extra = sorted(set(spec) - {"family", *FAMILIES[family]})
        if extra:
            raise ValueError(f"graph.{extra[0]}: unknown key for family {family}; expected {list(FAMILIES[family])}")
        if family == "path":
            n = _int(spec, "n", 2)
            e = [(i, i + 1) for i in range(n - 1)]
        elif family == "cycle":
            n = _int(spec, "n", 3)
            e = sorted({(min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n)})
        elif family == "star":
            n = _int(spec, "n", 2)
            e = [(0, i) for i in range(1, n)]
        elif family == "complete":
            n = _int(spec, "n", 2)
            e = list(itertools.combinations(range(n), 2))
        elif family == "complete_bipartite":
            m, k = _int(spec, "m", 1), _int(spec, "k", 1)
            n = m + k
            e = [(i, m + j) for i in range(m) for j in range(k)]
        elif family == "petersen":
            n = 10
            outer = [(i, (i + 1) % 5) for i in range(5)]
            spokes = [(i, i + 5) for i in range(5)]
            inner = [(5 + i, 5 + (i + 2) % 5) for i in range(5)]
            e = sorted({(min(a, b), max(a, b)) for a, b in outer + spokes + inner})
        elif family == "hypercube":
            d = _int(spec, "d", 1)
            n = 2**d
            e = [(i, i ^ (1 << b)) for i in range(n) for b in range(d) if i < i ^ (1 << b)]
        else:  # gnp
            n = _int(spec, "n", 2)
            p = spec.get("p")
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
                raise ValueError(f"graph.p: expected a probability in (0, 1], got {reprlib.repr(p)}")
            rng = np.random.default_rng(_int(spec, "seed", 0))
            for _ in range(1000):
                e = [(i, j) for i, j in itertools.combinations(range(n), 2) if rng.random() < p]
                if _connected(n, e):
                    break
            else:
                raise ValueError(f"graph: gnp(n={n}, p={p}) gave no connected graph in 1000 draws; raise p")
    edges = np.asarray(e, dtype=np.int64).reshape(-1, 2)
    if not _connected(n, edges.tolist()):
        raise ValueError("graph: the graph must be connected")
    return n, edges


def _connected(n, edges) -> bool:
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in edges:
        parent[find(i)] = find(j)
    return len({find(i) for i in range(n)}) == 1


def incidence(n: int, edges: np.ndarray) -> np.ndarray:
    """Signed incidence matrix ``B`` (n x m): ``L(w) = B diag(w) B^T``."""
    b = np.zeros((n, len(edges)))
    b[edges[:, 0], np.arange(len(edges))] = 1.0
    b[edges[:, 1], np.arange(len(edges))] = -1.0
    return b


def degrees(n: int, edges: np.ndarray) -> np.ndarray:
    return np.bincount(edges.ravel(), minlength=n)


@dataclasses.dataclass
class AnnealedGraphProblem:
    """The ``problem:`` schema shared by the graph experiments: a graph and a smoothing schedule.

    The nonsmooth eigenvalue objective is replaced by a log-sum-exp smoothing whose
    sharpness ``beta`` grows geometrically from ``beta_start`` to ``beta_end`` over
    ``anneal_steps`` steps (see :func:`annealed_beta`).
    """

    graph: dict = dataclasses.field(default_factory=lambda: {"family": "path", "n": 6})
    beta_start: float = 10.0
    beta_end: float = 1e5
    anneal_steps: int = 2000

    def validate(self):
        make_graph(self.graph)
        if not 0 < self.beta_start <= self.beta_end:
            raise ValueError(
                f"beta_start, beta_end: expected 0 < beta_start <= beta_end, got {self.beta_start}, {self.beta_end}"
            )
        if self.anneal_steps < 1:
            raise ValueError(f"anneal_steps: expected an integer >= 1, got {self.anneal_steps}")

    def schedule_data(self, dtype) -> dict:
        import jax.numpy as jnp

        return {
            "beta_start": jnp.asarray(self.beta_start, dtype=dtype),
            "beta_end": jnp.asarray(self.beta_end, dtype=dtype),
            "anneal_steps": jnp.asarray(self.anneal_steps, dtype=dtype),
        }


def annealed_beta(data, step):
    """``beta_start (beta_end / beta_start)^min(step / anneal_steps, 1)``."""
    import jax.numpy as jnp

    frac = jnp.minimum(step / data["anneal_steps"], 1.0)
    return data["beta_start"] * (data["beta_end"] / data["beta_start"]) ** frac
