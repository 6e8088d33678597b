"""eigjax as users get it: a non-editable wheel, run from another directory; and a user's own
experiment module found under ``eigjax run``.

The wheel test builds the wheel from a copy of the project files (an in-tree build would
write build/ and *.egg-info into the checkout that other tests read), installs it with
``--no-deps`` into a fresh venv and makes this interpreter's packages (jax, optax, ...)
visible there through a ``.pth`` file that lists this interpreter's site-packages. A
``.pth`` line only appends a folder to ``sys.path``: the ``.pth`` files inside that folder
are not run, so an editable install of eigjax there (its import hook) stays out, and the
venv's own site-packages, with the wheel's eigjax, comes first. Installing jax and the
rest from the index instead would take minutes. Building needs setuptools >= 77: this
interpreter's when it has one, else pip's build isolation fetches it from the package index.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import textwrap
import venv
import zipfile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROJECT_FILES = ["pyproject.toml", "README.md", "eigjax", "experiments", "configs"]


def clean_env(**extra) -> dict:
    """The environment less PYTHONPATH, so a subprocess imports only what its venv has."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


def build_wheel(dest: pathlib.Path) -> pathlib.Path:
    src = dest / "src"
    for name in PROJECT_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    try:
        isolated = int(importlib.metadata.version("setuptools").split(".")[0]) < 77
    except importlib.metadata.PackageNotFoundError:
        isolated = True
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest / "dist"), str(src)]
    if not isolated:
        cmd.insert(4, "--no-build-isolation")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (dest / "dist").glob("eigjax-*.whl")
    return wheel


def wheel_venv(wheel: pathlib.Path, dest: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(the venv's bin folder, its site-packages) with the wheel installed, dependencies
    from this interpreter (module docstring)."""
    venv.EnvBuilder(with_pip=False).create(dest)
    python = dest / "bin" / "python"
    purelib = pathlib.Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True, env=clean_env()
        ).strip()
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (purelib / "zz_test_interpreter_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return dest / "bin", purelib


def test_wheel_installs_experiments_and_configs_under_eigjax_and_runs_them_by_name(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    experiments = sorted(p.name for p in (ROOT / "experiments").glob("*.py"))
    assert {f"eigjax/configs/{n}.yaml" for n in shipped} <= set(names)
    assert {f"eigjax/experiments/{n}" for n in experiments} <= set(names) and "eigjax/app/_shipped.py" in names
    assert not [n for n in names if n.split("/")[0] in ("experiments", "configs")], names

    bin_dir, purelib = wheel_venv(wheel, tmp_path / "venv")
    assert not {"experiments", "configs"} & {p.name for p in purelib.iterdir()}
    work = tmp_path / "elsewhere"  # not the checkout: nothing of it is importable
    work.mkdir()
    where = subprocess.run(
        [
            bin_dir / "python",
            "-c",
            "import importlib.util, eigjax.experiments, eigjax.configs; "
            "print(eigjax.experiments.__file__); print(importlib.util.find_spec('experiments'))",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.splitlines() == [str(purelib / "eigjax" / "experiments" / "__init__.py"), "None"]

    listing = subprocess.run([bin_dir / "eigjax", "list"], cwd=work, capture_output=True, text=True, env=clean_env())
    assert listing.returncode == 0, listing.stderr
    experiments_part, configs_part = listing.stdout.split("\nconfigs")
    for name in shipped:
        assert f"\n  {name} " in configs_part, listing.stdout
    assert "\n  fmmc " in experiments_part and "\n  seed_example3 " in experiments_part

    out = work / "smoke"
    proc = subprocess.run(
        [bin_dir / "eigjax", "run", "seed_example3", "--smoke", "--out", str(out), "--no-progress"],
        cwd=work,
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "seed_example3" and summary["steps"] == 20


# ----------------------------------------------------------------------------- a user's own module

MYMOD = '''
"""A user's experiment: minimise (x - 3)^2."""
import dataclasses
import jax.numpy as jnp

@dataclasses.dataclass
class Problem:
    target: float = 3.0

def setup(problem, dtype):
    return {"target": jnp.asarray(problem.target, dtype=dtype)}

def init_params(data, key):
    return jnp.zeros((), data["target"].dtype)

def objective(x, data):
    return (x - data["target"]) ** 2
'''


def user_config(folder: pathlib.Path, module: str) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(MYMOD))
    cfg = {
        "experiment": module,
        "steps": 20,
        "optimizer": {"name": "sgd", "learning_rate": 0.2},
        "precision": "float64",
        "log_every": 10,
        "checkpoint_every": 20,
    }
    path = folder / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def launchers() -> list[list[str]]:
    """`python -m eigjax`, and the console script where this interpreter has one."""
    found = [[sys.executable, "-m", "eigjax"]]
    script = pathlib.Path(sys.executable).parent / "eigjax"
    if script.is_file():
        found.append([str(script)])
    return found


@pytest.mark.parametrize("launcher", launchers(), ids=lambda c: "python -m eigjax" if "-m" in c else "eigjax")
def test_a_users_module_in_the_current_directory_or_beside_the_config(launcher, tmp_path):
    # the module in the current directory, the config named relative to it
    user_config(tmp_path, "mymod_cwd")
    proc = subprocess.run(
        [*launcher, "run", "mine.yaml", "--out", "o1", "--no-progress"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert summary["experiment"] == "mymod_cwd" and summary["objective"] < 1e-6
    # the module beside the config, run from another directory
    path = user_config(tmp_path / "exp", "mymod_beside")
    (tmp_path / "elsewhere").mkdir()
    proc = subprocess.run(
        [*launcher, "run", str(path), "--out", "o2", "--no-progress"],
        cwd=tmp_path / "elsewhere",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "elsewhere" / "o2" / "summary.json").read_text())["objective"] < 1e-6


def test_shipped_short_names_come_before_a_users_module_of_the_same_name(tmp_path, monkeypatch):
    from eigjax.app._config import import_experiment

    (tmp_path / "fmmc.py").write_text("raise RuntimeError('the shipped fmmc comes first')\n")
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "exp.py").write_text(textwrap.dedent(MYMOD))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_experiment("fmmc").__name__ == "eigjax.experiments.fmmc"
    assert import_experiment("mypkg.exp").__name__ == "mypkg.exp"  # any other name: an import path
