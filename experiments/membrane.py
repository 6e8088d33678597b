"""The stiffest vibrating membrane of given mass: maximise the fundamental frequency over the density.

Problem. A square membrane ``[0, 1]^2`` under unit tension, fixed on its boundary, with
mass density ``rho(x) in [rho_min, rho_max]`` and total mass 1 (mean density 1). Its
vibration modes solve ``-Laplace u = lambda rho u``, ``u = 0`` on the boundary; the
fundamental frequency is ``sqrt(lambda_1)``: maximise ``lambda_1`` over ``rho`` (Krein's
problem, maximisation side; the optimum puts the heavy material near the fixed boundary,
where the mode is small, and the light material in the middle). The uniform membrane has
``lambda_1 = 2 pi^2``.

Discretisation. P1 finite elements on the uniform ``m x m`` grid of squares, each cut into
two right triangles (``2 m^2`` elements, ``(m - 1)^2`` interior nodes), density constant on
each element. Stiffness ``K`` (fixed) and consistent mass ``M(rho) = sum_e rho_e M_e``
(``M_e = |e| / 12 [[2, 1, 1], [1, 2, 1], [1, 1, 2]]``) on the interior nodes, both given to
``eigjax.eigh_partial(K, 1, b=M(rho), precond="polynomial")`` as BCOO matrices (``M``'s data
is a linear function of ``rho``, so the gradient reaches ``rho`` through it): the generalized
partial eigensolver (LOBPCG, preconditioned by a Chebyshev polynomial in ``K``), with the
derivative ``d lambda_1 = -lambda_1 u^T dM u`` (``u^T M u = 1``; an eigenvalue-only loss, no
linear solve).

Parametrisation. ``theta = rho`` itself, kept feasible by ``project``: the Euclidean
projection onto ``{rho_min <= rho_e <= rho_max, mean(rho) = 1}`` (``clip(y - mu)``, ``mu`` by
bisection). The start is the uniform membrane plus a seeded perturbation of relative size
``init_scale``, projected. The loss is ``-lambda_1 / lambda_uniform`` times the number of
elements (its gradient is the L2 gradient, O(1) per element on every mesh), for plain
projected gradient steps (``sgd``; Adam's per-coordinate scaling makes every step a
near-uniform shift that the mass projection undoes).

Structure. ``1 / lambda_1 = max_u u^T M(rho) u / u^T K u`` is a maximum of functions linear
in ``rho``, hence convex, and the feasible set is convex: every stationary point is the
global optimum, and the first eigenvalue of a connected membrane is simple, so
``lambda_1`` is smooth. Reference: the optimum of the same discretisation (same ``m``,
bounds, mass), computed once per problem in float64 without eigjax by
:func:`discrete_optimum`: projected gradient descent on the convex ``1 / lambda_1`` with
Armijo backtracking, eigenpairs from SciPy's shift-invert ``eigsh``, until the step changes
``rho`` by less than ``1e-9``. Values (float64): ``m = 60`` (the config; 3,481 unknowns, 7,200
densities) ``lambda_1* = 37.36432`` against ``19.75274`` uniform (ratio 1.8916; 14 reference
iterations); ``m = 12`` (the smoke overlay) ``37.90111`` (ratio 1.8876). Measured: 80 projected
steps at ``m = 60`` reach the reference to 1e-5 relative in 13 s; the config's 200 steps
(``eigjax run membrane``, about 100 s with compilation and the reference) end 1.9e-6 below it
(gap 7.1e-5); the smoke run (40 steps) reaches it to 2e-15.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

import eigjax

MAXIMIZE = True


@dataclasses.dataclass
class Problem:
    m: int = 40
    rho_min: float = 0.5
    rho_max: float = 2.0
    init_scale: float = 0.01

    def validate(self):
        if self.m < 4:
            raise ValueError(f"m: expected an integer >= 4 (cells per side), got {self.m}")
        if not 0 < self.rho_min < 1 < self.rho_max:
            raise ValueError(
                f"rho_min, rho_max: expected 0 < rho_min < 1 < rho_max, got {self.rho_min}, {self.rho_max}"
            )
        if not self.init_scale >= 0:
            raise ValueError(f"init_scale: expected a number >= 0, got {self.init_scale}")


@functools.lru_cache(maxsize=8)
def mesh(m: int):
    """P1 assembly on the interior nodes: ``K`` (scipy CSR), and ``M``'s entries as
    ``(rows, cols, element, local value)`` (duplicates summed by the product)."""
    import scipy.sparse as ssp

    h = 1.0 / m
    node = lambda i, j: (i - 1) * (m - 1) + (j - 1) if (0 < i < m and 0 < j < m) else -1
    tris = []
    for i in range(m):
        for j in range(m):
            tris.append(((i, j), (i + 1, j), (i + 1, j + 1)))
            tris.append(((i, j), (i + 1, j + 1), (i, j + 1)))
    mloc = np.array([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 2.0]]) / 12.0
    k_r, k_c, k_v, m_r, m_c, m_e, m_v = [], [], [], [], [], [], []
    for e, t in enumerate(tris):
        xy = np.array(t, dtype=float) * h
        area = 0.5 * abs((xy[1, 0] - xy[0, 0]) * (xy[2, 1] - xy[0, 1]) - (xy[2, 0] - xy[0, 0]) * (xy[1, 1] - xy[0, 1]))
        grads = np.array(
            [
                [xy[1, 1] - xy[2, 1], xy[2, 0] - xy[1, 0]],
                [xy[2, 1] - xy[0, 1], xy[0, 0] - xy[2, 0]],
                [xy[0, 1] - xy[1, 1], xy[1, 0] - xy[0, 0]],
            ]
        ) / (2 * area)
        kloc = area * grads @ grads.T
        ids = [node(*p) for p in t]
        for a in range(3):
            for b in range(3):
                if ids[a] >= 0 and ids[b] >= 0:
                    k_r.append(ids[a]), k_c.append(ids[b]), k_v.append(kloc[a, b])
                    m_r.append(ids[a]), m_c.append(ids[b]), m_e.append(e), m_v.append(area * mloc[a, b])
    n = (m - 1) ** 2
    k = ssp.coo_matrix((k_v, (k_r, k_c)), shape=(n, n)).tocsr()
    return k, np.array(m_r), np.array(m_c), np.array(m_e), np.array(m_v), len(tris)


def mass_csr(m: int, rho):
    import scipy.sparse as ssp

    _, r, c, e, v, _ = mesh(m)
    n = (m - 1) ** 2
    return ssp.coo_matrix((np.asarray(rho)[e] * v, (r, c)), shape=(n, n)).tocsr()


def uniform_eigenvalue(m: int) -> float:
    """``lambda_1`` of the uniform membrane in this discretisation (SciPy, no eigjax)."""
    from scipy.sparse.linalg import eigsh

    k = mesh(m)[0]
    return float(eigsh(k, k=1, M=mass_csr(m, np.ones(mesh(m)[5])), sigma=0.0, which="LM")[0][0])


def setup(problem: Problem, dtype):
    m = problem.m
    k, _, _, _, v, n_el = mesh(m)
    return {
        "k_data": jnp.asarray(k.tocoo().data, dtype=dtype),
        "lambda_uniform": jnp.asarray(uniform_eigenvalue(m), dtype=dtype),
        "m_value": jnp.asarray(v, dtype=dtype),
        "rho_uniform": jnp.ones((n_el,), dtype=dtype),
        "rho_min": jnp.asarray(problem.rho_min, dtype=dtype),
        "rho_max": jnp.asarray(problem.rho_max, dtype=dtype),
        "init_scale": jnp.asarray(problem.init_scale, dtype=dtype),
    }


def _cells(rho) -> int:
    return round(float(np.sqrt(rho.shape[0] / 2)))


def fundamental(rho, data):
    """``lambda_1`` of ``K u = lambda M(rho) u`` by eigjax.eigh_partial (BCOO pencil, LOBPCG)."""
    m = _cells(rho)
    k, r, c, e, _, _ = mesh(m)
    n = (m - 1) ** 2
    kc = k.tocoo()
    k_bcoo = jsparse.BCOO((data["k_data"], np.stack([kc.row, kc.col], axis=1).astype(np.int32)), shape=(n, n))
    m_bcoo = jsparse.BCOO((rho[e] * data["m_value"], np.stack([r, c], axis=1).astype(np.int32)), shape=(n, n))
    return eigjax.eigh_partial(k_bcoo, 1, b=m_bcoo, precond="polynomial").eigenvalues[0]


def project(rho, data):
    """Euclidean projection onto ``{rho_min <= rho <= rho_max, mean(rho) = 1}``: ``clip(y - mu)``, ``mu`` by bisection."""
    lo_b, hi_b = data["rho_min"], data["rho_max"]
    mean = lambda mu: jnp.mean(jnp.clip(rho - mu, lo_b, hi_b))
    lo, hi = jnp.min(rho) - hi_b, jnp.max(rho) - lo_b  # mean(lo) = rho_max > 1 > rho_min = mean(hi)

    def body(_, b):
        lo, hi = b
        mid = (lo + hi) / 2
        above = mean(mid) > 1.0
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 100, body, (lo, hi))
    return jnp.clip(rho - (lo + hi) / 2, lo_b, hi_b)


def init_params(data, key):
    ones = data["rho_uniform"]
    noise = jax.random.normal(key, ones.shape, dtype=ones.dtype)
    return project(ones + data["init_scale"] * noise, data)


def objective(rho, data):
    return fundamental(rho, data)


def loss(rho, data, step):
    """``-lambda_1 / lambda_uniform`` times the number of elements: its gradient is then the
    L2 gradient (per unit area, each element has area ``1 / n_el``), so a step size means
    the same on every mesh."""
    lam = fundamental(rho, data)
    return -lam / data["lambda_uniform"] * rho.shape[0], lam


def metrics(rho, data):
    lam = fundamental(rho, data)
    return {
        "ratio": lam / data["lambda_uniform"],
        "rho_min": jnp.min(rho),
        "rho_max": jnp.max(rho),
        "mass": jnp.mean(rho),
    }


def reference(problem: Problem, data):
    """The optimal ``lambda_1`` of this discretisation (:func:`discrete_optimum`)."""
    return discrete_optimum(problem.m, problem.rho_min, problem.rho_max)["lambda_1"]


def check_density(m: int, rho) -> dict:
    """Independent float64 evaluation (SciPy shift-invert ``eigsh``, no eigjax): ``lambda_1``,
    ``lambda_2``, the mode ``u`` (``u^T M u = 1``) and ``g_e = d(1/lambda_1)/d rho_e = u^T M_e u / lambda_1``."""
    from scipy.sparse.linalg import eigsh

    k, r, c, e, v, n_el = mesh(m)
    mm = mass_csr(m, rho)
    w, u = eigsh(k, k=2, M=mm, sigma=0.0, which="LM", tol=1e-13)
    order = np.argsort(w)
    w, u = w[order], u[:, order]
    u1 = u[:, 0] / np.sqrt(u[:, 0] @ (mm @ u[:, 0]))
    ume = np.bincount(e, weights=v * u1[r] * u1[c], minlength=n_el)  # u^T M_e u per element
    return {"lambda_1": float(w[0]), "lambda_2": float(w[1]), "mode": u1, "grad_inverse": ume / w[0]}


def _project_np(y, lo_b, hi_b):
    lo, hi = np.min(y) - hi_b, np.max(y) - lo_b
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.mean(np.clip(y - mid, lo_b, hi_b)) > 1.0:
            lo = mid
        else:
            hi = mid
    return np.clip(y - (lo + hi) / 2, lo_b, hi_b)


@functools.lru_cache(maxsize=8)
def discrete_optimum(m: int, rho_min: float, rho_max: float, *, tol: float = 1e-9, max_iter: int = 3000) -> dict:
    """The optimal density of the discrete problem, float64, NumPy/SciPy only (no eigjax).

    Projected gradient descent on the convex ``F(rho) = 1 / lambda_1(rho)`` over the feasible
    set, step ``t`` with Armijo backtracking (halved until ``F`` decreases by ``1e-4`` of the
    predicted amount, then tried at twice the size next time), from the uniform density,
    until the largest change of ``rho`` in a step is below ``tol``.
    """
    n_el = mesh(m)[5]
    rho = np.ones(n_el)
    chk = check_density(m, rho)
    f = 1.0 / chk["lambda_1"]
    t = 1.0 / np.max(np.abs(chk["grad_inverse"]))  # moves rho by O(1) at most
    change = np.inf
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is reported after the loop)
        g = chk["grad_inverse"]
        while True:
            new = _project_np(rho - t * g, rho_min, rho_max)
            chk_new = check_density(m, new)
            f_new = 1.0 / chk_new["lambda_1"]
            if f_new <= f + 1e-4 * g @ (new - rho) or t < 1e-300:
                break
            t /= 2
        change = float(np.max(np.abs(new - rho)))
        rho, chk, f, t = new, chk_new, f_new, 2 * t
        if change <= tol:
            break
    return {
        "lambda_1": chk["lambda_1"],
        "lambda_2": chk["lambda_2"],
        "rho": rho,
        "iterations": it,
        "last_change": change,
    }


def result(rho, data, problem):
    m = problem.m
    rho = np.asarray(rho, dtype=np.float64)
    chk = check_density(m, rho)
    ref = discrete_optimum(m, problem.rho_min, problem.rho_max)
    lam_u = uniform_eigenvalue(m)
    return {
        "lambda_min": chk["lambda_1"],
        "lambda_2": chk["lambda_2"],
        "lambda_uniform": lam_u,
        "ratio": chk["lambda_1"] / lam_u,
        "reference": ref["lambda_1"],
        "reference_ratio": ref["lambda_1"] / lam_u,
        "reference_iterations": ref["iterations"],
        "relative_gap_to_reference": (ref["lambda_1"] - chk["lambda_1"]) / ref["lambda_1"],
        "lambda_continuous_uniform": float(2 * np.pi**2),
        "mass": float(np.mean(rho)),
        "rho_bounds_ok": bool(np.all(rho >= problem.rho_min - 1e-12) and np.all(rho <= problem.rho_max + 1e-12)),
        "density": rho,
    }
