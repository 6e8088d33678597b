"""What ships with the application: experiments and configs, found by short name, and each
config's smoke overlay.

The repository keeps ``experiments/`` and ``configs/`` at its root; pyproject.toml installs
them as the packages ``eigjax.experiments`` and ``eigjax.configs`` (a wheel has no top-level
``experiments``). Run from a source tree (a checkout with ``pyproject.toml`` next to the
``eigjax`` package: an editable install, or ``PYTHONPATH=checkout``) the checkout's own
folders are used, loaded under those same names, so the experiments always match the
``eigjax`` that is running.

Names in a config's ``experiment:`` key resolve in this order (:func:`experiment_module_name`):

1. ``batch_eval``: the built-in batch evaluator (``eigjax/app/_batch.py``; the CLI runs it);
2. the short name of a shipped experiment (``fmmc`` -> ``eigjax.experiments.fmmc``);
3. anything else is the import path of the user's own module (``mymod``, ``pkg.exp``),
   imported with the current directory and the config file's folder importable
   (``eigjax run`` puts them on ``sys.path``).

A shipped short name wins over a user's module of the same name; give a user's module a
different name (or a dotted path) to use it.

A config's ``smoke:`` key holds its smoke overlay: dotted keys and values (as ``--set``
takes them) that ``eigjax run CONFIG --smoke`` applies to make a tiny run of the same
config. Each key must name a key the config states: an overlay changes values, it adds
none (:func:`split_smoke`). Without ``--smoke`` the overlay is dropped; it is never part of
the resolved config.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import pathlib
import pkgutil
import sys
import types
from importlib.resources.abc import Traversable

BATCH_EVAL = "batch_eval"  # the built-in batch evaluator's experiment name
EXPERIMENTS = "eigjax.experiments"
CONFIGS = "eigjax.configs"


# ----------------------------------------------------------------------------- locating the packages


def _source_folder(name: str) -> pathlib.Path | None:
    """The checkout's ``name/`` folder when ``eigjax`` runs from a source tree, else None."""
    root = pathlib.Path(__file__).resolve().parents[2]
    folder = root / name
    if (root / "pyproject.toml").is_file() and (folder / "__init__.py").is_file():
        return folder
    return None


def _package(fullname: str, folder_name: str) -> types.ModuleType:
    """``eigjax.experiments`` or ``eigjax.configs``: the source tree's folder when there is one,
    else the installed package."""
    if fullname in sys.modules:
        return sys.modules[fullname]
    folder = _source_folder(folder_name)
    if folder is None:
        return importlib.import_module(fullname)
    spec = importlib.util.spec_from_file_location(
        fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None  # a .py file always has a spec and a loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[fullname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[fullname]
        raise
    parent = importlib.import_module(fullname.rpartition(".")[0])
    setattr(parent, fullname.rpartition(".")[2], module)
    return module


def experiments_package() -> types.ModuleType:
    """``eigjax.experiments``, imported (or loaded from the checkout, see the module docstring)."""
    return _package(EXPERIMENTS, "experiments")


def import_shipped(name: str) -> types.ModuleType:
    """A module of the shipped experiments by its short name (``fmmc``, or ``_graphs``)."""
    experiments_package()
    return importlib.import_module(f"{EXPERIMENTS}.{name}")


def shipped_experiments() -> list[str]:
    """Short names of the shipped experiments (the public modules of eigjax.experiments)."""
    package = experiments_package()
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def experiment_module_name(name: str) -> str:
    """The module a config's ``experiment:`` names: a shipped short name first, else an
    import path as given."""
    if "." not in name and name in shipped_experiments():
        return f"{EXPERIMENTS}.{name}"
    return name


# ----------------------------------------------------------------------------- configs


def configs_folder() -> Traversable:
    """The shipped configs' folder (an ``importlib.resources`` Traversable)."""
    return importlib.resources.files(_package(CONFIGS, "configs"))


def shipped_configs() -> dict[str, Traversable]:
    """Shipped config name (the file's stem) -> its file (a Traversable)."""
    return {
        entry.name[: -len(".yaml")]: entry
        for entry in sorted(configs_folder().iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml") and entry.is_file()
    }


def header(text: str) -> str:
    """A config's description: its first comment line that is not a command line."""
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("#"):
            if line:
                break
            continue
        line = line.lstrip("#").strip()
        if line and not line.lower().startswith(("run:", "smoke:", "smoke (")):
            return line
    return ""


# ----------------------------------------------------------------------------- smoke overlays
