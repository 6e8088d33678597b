"""The application's structure (#14): an acyclic import graph, one config-error class and
message style, one atomic-write helper, the experiment interface as a Protocol checked
before anything is written."""

from __future__ import annotations

import ast
import inspect
import pathlib
import textwrap

import pytest
import yaml

from eigjax.app import _cli as cli

APP = pathlib.Path(__file__).resolve().parents[2] / "eigjax" / "app"


def _app_imports(path: pathlib.Path) -> set[str]:
    """The eigjax.app modules ``path`` imports, anywhere in it (function-local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from . import x / from ._x import y
                found.update([node.module] if node.module else [a.name for a in node.names])
            elif node.module and node.module.startswith("eigjax.app"):
                rest = node.module[len("eigjax.app") :].lstrip(".")
                found.update([rest] if rest else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name[len("eigjax.app.") :] for a in node.names if a.name.startswith("eigjax.app."))
    return {m.split(".")[0] for m in found}


def test_the_app_import_graph_has_no_cycle():
    graph = {p.stem: _app_imports(p) for p in APP.glob("*.py") if p.stem != "__init__"}
    assert "_runner" not in graph["_config"] and "_config" in graph["_runner"]
    state: dict[str, int] = {}

    def visit(mod, trail):
        if state.get(mod) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*trail, mod]))
        if state.get(mod) == 2:
            return
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            visit(dep, [*trail, mod])
        state[mod] = 2

    for mod in sorted(graph):
        visit(mod, [])


def test_one_config_error_class_and_message_style():
    from eigjax.app import BatchConfigError
    from eigjax.app._batch import validate_config
    from eigjax.app._config import ConfigError, resolve
    from eigjax.app._errors import ConfigError as Base

    assert BatchConfigError is ConfigError is Base and issubclass(Base, ValueError)
    with pytest.raises(ConfigError) as batch:
        validate_config({"op": "svd", "input": {"generator": "random_symmetric", "n": 2, "count": 1}})
    with pytest.raises(ConfigError) as runner:
        resolve({"experiment": "experiments.seed_example3", "optimizer": {"name": "adam"}, "steps": -1})
    assert str(batch.value) == (
        "batch_eval config key `op`: expected one of ('eigh', 'eigvalsh', 'eig', 'eigvals'), got 'svd'"
    )
    assert str(runner.value) == "steps: expected an integer >= 1, got -1 (int)"


def test_one_atomic_write_implementation():
    from eigjax.app import _batch, _checkpoint, _files, _runner

    assert _runner.atomic_write_bytes is _files.atomic_write_bytes
    assert _runner.atomic_write_text is _files.atomic_write_text
    for mod in (_runner, _checkpoint, _batch):
        source = inspect.getsource(mod)
        assert "os.replace(" not in source and "mkstemp(" not in source and "def atomic_write" not in source, mod
    assert "fsync" not in inspect.signature(_files.atomic_write_bytes).parameters  # always fsyncs


def test_the_interface_check_reads_the_protocol():
    from eigjax.app._experiment import (
        FUNCTIONS,
        REQUIRED,
        Experiment,
        interface_problems,
    )

    assert REQUIRED == ("Problem", "setup", "init_params", "objective")
    for name, (_, args) in FUNCTIONS.items():
        assert tuple(inspect.signature(getattr(Experiment, name)).parameters)[1:] == args
    assert set(FUNCTIONS) == {"setup", "init_params", "objective", "loss", "project", "metrics", "reference", "result"}
    import experiments.seed_example3 as good

    assert interface_problems(good) == []


# ----------------------------------------------------------------- refused before anything is written

VECTOR_EXP = """
import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass
class Problem:
    d: int = 1  # the objective has d dimensions: d = 1 returns a vector


def setup(problem, dtype):
    return {"m": jnp.ones((2,) * problem.d, dtype=dtype)}


def init_params(data, key):
    return jnp.ones(2, dtype=data["m"].dtype)


def objective(params, data):
    return jnp.sum(params**2) * data["m"]
"""

FIELD_EXP = """
import dataclasses

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class Problem:
    n: int = 2
    weights: np.ndarray = None  # no config value can be checked against it


def setup(problem, dtype):
    return {"n": jnp.asarray(problem.n)}


def init_params(data, key):
    return jnp.ones(2)


def objective(params, data):
    return jnp.sum(params**2)
"""


def _user_experiment(tmp_path, monkeypatch, name, source, **problem):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {
        "experiment": name,
        "steps": 4,
        "log_every": 2,
        "checkpoint_every": 2,
        "optimizer": {"name": "adam", "learning_rate": 0.1},
        "problem": problem,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _refused(capsys, out, args, message):
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or list(out.iterdir()) == []
    return err


def test_a_vector_objective_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    path = _user_experiment(tmp_path, monkeypatch, "vector_objective_exp", VECTOR_EXP)
    out = tmp_path / "out"
    message = "vector_objective_exp: objective(params, data): expected a real scalar, got an array float32[2]"
    _refused(capsys, out, ["run", str(path), "--out", str(out), "--no-progress"], message)
    # a sweep whose second group returns a vector: refused before the first group runs
    _refused(capsys, out, ["run", str(path), "--out", str(out), "--no-progress", "--sweep", "problem.d=0,1"], message)
    out.mkdir()  # an existing, empty --out stays empty
    _refused(capsys, out, ["run", str(path), "--out", str(out), "--no-progress"], message)
    assert cli.main(["run", str(path), "--out", str(out), "--no-progress", "--set", "problem.d=0"]) == 0


def test_an_unsupported_problem_field_type_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    path = _user_experiment(tmp_path, monkeypatch, "field_type_exp", FIELD_EXP)
    out = tmp_path / "out"
    err = _refused(
        capsys,
        out,
        ["run", str(path), "--out", str(out), "--no-progress"],
        "Problem.weights: expected a field type a config can give",
    )
    assert "numpy.ndarray" in err and "field_type_exp" in err
