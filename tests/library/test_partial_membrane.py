"""The membrane experiment (experiments/membrane.py), through its module functions, at the smoke size.

Oracles: SciPy's shift-invert ``eigsh`` of the same pencil (``check_density``: eigenvalue and
``d lambda_1 / d rho_e = -lambda_1 u^T M_e u``), central finite differences, and the
discrete optimum computed by SciPy alone (``discrete_optimum``, projected gradient descent on
the convex ``1 / lambda_1``).
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from helpers import central_fd, rng

from experiments import membrane

M = 12  # the smoke overlay's mesh


@pytest.fixture(scope="module")
def problem_data():
    problem = membrane.Problem(m=M)
    problem.validate()
    return problem, membrane.setup(problem, jnp.float64)


def test_fundamental_and_gradient_match_scipy_and_fd(problem_data):
    _, data = problem_data
    rho = membrane.project(jnp.asarray(1.0 + 0.3 * rng(20).standard_normal(2 * M * M)), data)
    lam, g = jax.jit(jax.value_and_grad(membrane.fundamental))(rho, data)
    chk = membrane.check_density(M, np.asarray(rho))
    np.testing.assert_allclose(float(lam), chk["lambda_1"], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(g), -(chk["lambda_1"] ** 2) * chk["grad_inverse"], rtol=1e-7, atol=1e-12)
    d = jnp.asarray(rng(21).standard_normal(rho.shape))
    fd = central_fd(lambda t: membrane.fundamental(rho + t * d, data), 0.0, 1.0, h=1e-4)
    assert abs(float(jnp.sum(g * d)) - float(fd)) <= 1e-7 * abs(float(fd))


def test_projection_is_feasible_and_idempotent(problem_data):
    problem, data = problem_data
    y = jnp.asarray(1.0 + 2.0 * rng(22).standard_normal(2 * M * M))
    rho = membrane.project(y, data)
    assert abs(float(jnp.mean(rho)) - 1.0) < 1e-12
    assert float(jnp.min(rho)) >= problem.rho_min and float(jnp.max(rho)) <= problem.rho_max
    np.testing.assert_allclose(membrane.project(rho, data), rho, atol=1e-12)


def test_smoke_run_reaches_the_discrete_optimum(problem_data):
    """The config's smoke overlay (m = 12, 40 steps, sgd 0.5) with the module's loss and projection."""
    problem, data = problem_data
    with open(pathlib.Path(__file__).parents[2] / "configs" / "membrane.yaml") as f:
        cfg = yaml.safe_load(f)
    assert cfg["experiment"] == "membrane" and cfg["smoke"]["problem.m"] == M
    opt = optax.sgd(cfg["optimizer"]["learning_rate"])
    rho = membrane.init_params(data, jax.random.PRNGKey(cfg["seed"]))
    state = opt.init(rho)

    @jax.jit
    def step(rho, state):
        (_, lam), g = jax.value_and_grad(lambda r: membrane.loss(r, data, 0), has_aux=True)(rho)
        upd, state = opt.update(g, state, rho)
        return membrane.project(optax.apply_updates(rho, upd), data), state, lam

    for _ in range(cfg["smoke"]["steps"]):
        rho, state, _ = step(rho, state)
    res = membrane.result(np.asarray(rho), data, problem)
    assert res["reference_iterations"] < 3000  # the reference converged
    assert res["relative_gap_to_reference"] < 1e-6
    assert res["rho_bounds_ok"] and abs(res["mass"] - 1.0) < 1e-12
    assert res["reference_ratio"] > 1.5  # the optimum beats the uniform membrane by far
