"""Experiment configs: YAML loading, ``--set``/``--sweep`` overrides, typed validation.

A config is a YAML mapping with these keys (all checked; unknown keys are errors)::

    experiment: seed_example3               # a shipped experiment's name, or your module's import path
    seed: 0                                 # PRNG seed (int)
    steps: 100                              # optimisation steps (int >= 1)
    precision: float32                      # float32 | float64
    optimizer:                              # any optax optimizer, by name
      name: adam
      learning_rate: 0.1                    # other keys: that optimizer's keyword arguments
      schedule:                             # optional: an optax schedule used as learning_rate
        name: cosine_decay_schedule
        init_value: 0.1
        decay_steps: 100
    log_every: 10                           # metrics row (and progress update) every N steps
    checkpoint_every: 50                    # checkpoint every N steps (a multiple of log_every)
    problem: {...}                          # validated by the experiment's own ``Problem`` schema

Every problem raises :class:`ConfigError` (``eigjax.app._errors``), whose message names
the key, what was expected and what was given (values shortened to about 200 characters); the CLI turns it
into exit code 2.

**A config is code.** ``experiment:`` names a Python module that is imported, and so
executed, before anything else is checked: run only configs you would run as a Python
script. Right after the import the module is checked against the experiment interface,
:class:`eigjax.app._experiment.Experiment`, and its ``Problem`` fields against the types a
config can give (:func:`import_experiment`, :func:`schema_problems`). YAML aliases may add at most ``MAX_ALIAS_NODES`` values to a
config (an "alias bomb", a few hundred bytes expanding to billions of values, is refused
as it is read), and recursive aliases are refused.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import itertools
import math
import re
import types
import typing
from typing import Any

import yaml

from ._errors import MAX_MESSAGE_VALUE, ConfigError, short_repr, short_text  # noqa: F401 (re-exported)
from ._errors import describe as _describe
from ._experiment import interface_problems
from ._optim import make_optimizer, optax_promotion
from ._shipped import experiment_module_name, shipped_experiments

TOP_LEVEL = {
    "experiment": str,
    "seed": int,
    "steps": int,
    "precision": str,
    "optimizer": dict,
    "log_every": int,
    "checkpoint_every": int,
    "problem": dict,
}
DEFAULTS = {"seed": 0, "precision": "float32", "log_every": 10, "checkpoint_every": 100, "problem": {}}
REQUIRED = ("experiment", "steps", "optimizer")


def _type_name(t) -> str:
    return getattr(t, "__name__", str(t))


MAX_ALIAS_NODES = 100_000  # values that YAML aliases may add to a config


class AliasLimitError(yaml.YAMLError):
    """A YAML document whose aliases expand too far (or recursively)."""


def _expanded_size(root) -> tuple[int, int]:
    """(nodes after expanding every alias, distinct nodes) of a composed YAML node graph.

    Aliases share node objects, so the graph is small while its expansion can be huge;
    the expanded size is counted per distinct node (memoised), never by expanding.
    """
    size: dict[int, int] = {}
    active: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            active.discard(key)
            continue
        if key in size:
            continue
        if key in active:
            raise AliasLimitError("a YAML alias refers to a node that contains it (a recursive structure)")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size[id(root)], len(size)


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


class _Loader(yaml.SafeLoader):
    """A SafeLoader that reads ``1e-5`` as a float (YAML 1.1 reads it as a string) and
    refuses documents whose aliases expand by more than ``MAX_ALIAS_NODES`` values."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            expanded, distinct = _expanded_size(node)
            if expanded - distinct > MAX_ALIAS_NODES:
                raise AliasLimitError(
                    f"YAML aliases expand it to {expanded:.3g} values from {distinct} written ones "
                    f"(at most {MAX_ALIAS_NODES} more are allowed): an alias bomb?"
                )
        return node


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text_or_file):
    return yaml.load(text_or_file, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def load_yaml(path) -> dict:
    try:
        with open(path) as f:
            data = _yaml_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except AliasLimitError as exc:
        raise ConfigError(f"config file {str(path)!r} refused: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a YAML mapping at the top level, got {_describe(data)}")
    return data


def parse_value(text: str):
    """A ``--set``/``--sweep`` value, parsed as YAML (``0.1`` -> float, ``[1, 2]`` -> list)."""
    try:
        return _yaml_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(cfg: dict, key: str, value) -> None:
    """Set ``cfg["a"]["b"] = value`` for ``key = "a.b"``, creating mappings as needed."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"--set {key}: {'.'.join(parts[: i + 1])} is {_describe(child)}, not a mapping, so it has no key {parts[i + 1]!r}"
            )
        node = child
    node[parts[-1]] = value


def parse_assignment(text: str, flag: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"{flag} expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    if not key:
        raise ConfigError(f"{flag} expects KEY=VALUE with a non-empty KEY, got {text!r}")
    return key.strip(), value


def apply_overrides(cfg: dict, assignments: list[str]) -> dict:
    cfg = copy.deepcopy(cfg)
    for text in assignments:
        key, value = parse_assignment(text, "--set")
        set_dotted(cfg, key, parse_value(value))
    return cfg


def sweep_points(sweeps: list[str]) -> list[dict[str, Any]]:
    """The grid of ``--sweep KEY=V1,V2,...`` flags, as a list of {key: value} dicts."""
    axes = []
    for text in sweeps:
        key, values = parse_assignment(text, "--sweep")
        vals = [parse_value(v) for v in values.split(",")]
        if not values or any(v is None for v in vals):
            raise ConfigError(f"--sweep {key}: expected comma-separated values, got {values!r}")
        axes.append([(key, v) for v in vals])
    return [dict(p) for p in itertools.product(*axes)]


# ----------------------------------------------------------------------------- validation


def _check_type(key: str, value, expected) -> Any:
    """Check ``value`` against a type annotation (int, float, str, bool, list, dict, Optional, Literal)."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(expected)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError as exc:
                errors.append(exc)
        names = " or ".join(_type_name(a) if a is not type(None) else "null" for a in args)
        raise ConfigError(f"{key}: expected {names}, got {_describe(value)}")
    if origin is typing.Literal:
        allowed = typing.get_args(expected)
        if value not in allowed:
            raise ConfigError(f"{key}: expected one of {list(allowed)}, got {_describe(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        (item,) = typing.get_args(expected)[:1] or (Any,)
        return [value_ if item is Any else _check_type(f"{key}[{i}]", value_, item) for i, value_ in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        return value
    if expected is Any:
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number (float), got {_describe(value)}")
        return float(value)
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if expected in (str, bool, list, dict):
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected {_type_name(expected)}, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported schema type {expected!r} for {key}")


_SCHEMA_TYPES = "int, float, str, bool, list, dict, Any, Optional[...], Literal[...], list[...]"


def _supported(expected) -> bool:
    """Whether :func:`_check_type` can check a value against the annotation ``expected``."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return all(a is type(None) or _supported(a) for a in typing.get_args(expected))
    if origin is typing.Literal:
        return True
    if origin in (list, tuple):
        return all(a is Any or a is Ellipsis or _supported(a) for a in typing.get_args(expected)[:1])
    if origin is dict:
        return True
    return expected is Any or expected in (int, float, str, bool, list, dict)


def schema_problems(cls) -> list[str]:
    """The fields of a ``Problem`` dataclass whose types a config cannot give (empty if none)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return []  # reported by the interface check
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:  # noqa: BLE001 - a forward reference that does not resolve, say
        return [f"Problem: expected field annotations that resolve, got {type(exc).__name__}: {short_text(exc)}"]
    return [
        f"Problem.{f.name}: expected a field type a config can give ({_SCHEMA_TYPES}), got {short_repr(hints[f.name])}"
        for f in dataclasses.fields(cls)
        if f.name in hints and not _supported(hints[f.name])
    ]


def build_dataclass(cls, values: dict, prefix: str):
    """Instantiate a dataclass schema from a mapping, checking keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {_describe(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}: unknown key; expected one of {sorted(fields)}")
    kwargs = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}"
        if name in values:
            kwargs[name] = _check_type(key, values[name], hints[name])
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{prefix}: {short_text(exc, 400)}") from None
    return obj


_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def import_experiment(name):
    """Import the module a config names and check it against the experiment interface.

    ``name`` is a shipped experiment's short name (``fmmc`` -> ``eigjax.experiments.fmmc``)
    or else the import path of the user's own module; shipped short names come first
    (``eigjax.app._shipped.experiment_module_name``). Importing runs the module's code (a
    config is code, like a Python script); the interface is checked right after, so a
    module that is not an experiment is refused with one message before the runner calls
    anything in it or writes anything.
    """
    if not isinstance(name, str) or not _MODULE_PATH.fullmatch(name):
        raise ConfigError(
            f"experiment: expected a shipped experiment's name (such as fmmc) or a module import path, got {_describe(name)}"
        )
    path = experiment_module_name(name)
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        shipped = ", ".join(shipped_experiments())
        raise ConfigError(
            f"experiment: cannot import module {path!r} ({short_text(exc, 300)}); "
            f"shipped experiments: {shipped}; a module of your own is found from the current directory, "
            "the config's folder or sys.path"
        ) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the module's own code raised
        raise ConfigError(
            f"experiment: importing module {path!r} raised {type(exc).__name__}: {short_text(exc, 300)}"
        ) from None
    problems = interface_problems(module) or schema_problems(module.Problem)
    if problems:
        where = getattr(module, "__file__", None) or "no file"
        raise ConfigError(
            f"experiment: module {path!r} ({where}) is not an eigjax experiment: {'; '.join(problems)} "
            "(the interface: eigjax.app._experiment.Experiment)"
        )
    return module


def _check_optimizer(opt: dict) -> None:
    import optax

    if "name" not in opt:
        raise ConfigError("optimizer.name: required key is missing (an optax optimizer, e.g. adam)")
    name = opt["name"]
    factory = getattr(optax, name, None) if isinstance(name, str) else None
    if factory is None or not callable(factory) or not isinstance(name, str) or name.startswith("_"):
        raise ConfigError(
            f"optimizer.name: expected the name of an optax optimizer (e.g. adam, sgd, lbfgs), got {_describe(name)}"
        )
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in opt:
        if key in ("name", "schedule"):
            continue
        if key not in params and not accepts_any:
            raise ConfigError(f"optimizer.{key}: unknown keyword for optax.{name}; expected one of {sorted(params)}")
    if "schedule" in opt and opt["schedule"] is not None:
        sched = opt["schedule"]
        if not isinstance(sched, dict) or "name" not in sched:
            raise ConfigError(
                f"optimizer.schedule: expected a mapping with a 'name' (an optax schedule), got {_describe(sched)}"
            )
        sname = str(sched["name"])
        sfactory = None if sname.startswith("_") else getattr(optax.schedules, sname, None)
        if sfactory is None or not callable(sfactory):
            raise ConfigError(
                "optimizer.schedule.name: expected the name of an optax schedule "
                f"(e.g. cosine_decay_schedule, exponential_decay), got {_describe(sched['name'])}"
            )
        sparams = inspect.signature(sfactory).parameters
        for key in sched:
            if key != "name" and key not in sparams:
                raise ConfigError(
                    f"optimizer.schedule.{key}: unknown keyword for optax.{sched['name']}; expected one of {sorted(sparams)}"
                )
        if "learning_rate" in opt:
            raise ConfigError("optimizer: give either learning_rate or schedule, not both")
    # Build it once, so a bad value (say a string where a number belongs) fails here, clearly.
    import jax.numpy as jnp

    lr = opt.get("learning_rate")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"optimizer.learning_rate: expected a number > 0, got {short_repr(lr)}")
    try:
        import optax

        optimizer = optax.with_extra_args_support(make_optimizer(opt))
        # init and one update: optax reads most hyperparameters only when it updates
        # (the extra arguments are those of line-search optimizers such as lbfgs)
        x = jnp.ones(1)
        with optax_promotion():  # as the runner calls optax (see eigjax.app._optim.optax_promotion)
            state = optimizer.init(x)
            optimizer.update(x, state, x, value=jnp.sum(x**2) / 2, grad=x, value_fn=lambda p: jnp.sum(p**2) / 2)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - optax raises many kinds; report which key set it off
        given = {k: v for k, v in opt.items() if k != "name"}
        raise ConfigError(
            f"optimizer: optax.{name} cannot be built from {short_repr(given)}: {type(exc).__name__}: {short_text(exc, 300)}"
        ) from None


def resolve(raw: dict):
    """Validate a raw config; return (resolved config dict, experiment module, Problem instance)."""
    if "smoke" in raw:
        # The smoke: overlay is applied by `eigjax run --smoke` before this, or dropped (checked)
        # here: it is never part of the resolved config.
        raw, _ = split_smoke(raw)
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; expected one of {sorted(TOP_LEVEL)}")
    for key in REQUIRED:
        if key not in raw:
            raise ConfigError(f"{key}: required key is missing")
    cfg = {**copy.deepcopy(DEFAULTS), **copy.deepcopy(raw)}
    for key, expected in TOP_LEVEL.items():
        _check_type(key, cfg[key], expected)
    if cfg["steps"] < 1:
        raise ConfigError(f"steps: expected an integer >= 1, got {_describe(cfg['steps'])}")
    if cfg["precision"] not in ("float32", "float64"):
        raise ConfigError(f"precision: expected 'float32' or 'float64', got {_describe(cfg['precision'])}")
    for key in ("log_every", "checkpoint_every"):
        if cfg[key] < 1:
            raise ConfigError(f"{key}: expected an integer >= 1, got {_describe(cfg[key])}")
    if cfg["checkpoint_every"] % cfg["log_every"]:
        raise ConfigError(
            f"checkpoint_every: expected a multiple of log_every ({cfg['log_every']}), got {cfg['checkpoint_every']}"
        )
    _check_optimizer(cfg["optimizer"])
    module = import_experiment(cfg["experiment"])
    problem = build_dataclass(module.Problem, cfg["problem"], "problem")
    cfg["problem"] = dataclasses.asdict(problem)
    return cfg, module, problem


# --- smoke overlays: one `smoke:` mapping per config (eigjax run NAME --smoke) ---


def split_smoke(raw: dict) -> tuple[dict, dict]:
    """(the config without its ``smoke:`` key, the overlay) with the overlay checked.

    Raises:
      ConfigError: the overlay is not a mapping of dotted keys, or one of its keys names
        no key that the config states (message ``smoke.KEY: ...``).
    """
    raw = dict(raw)
    overlay = raw.pop("smoke", None)
    if overlay is None:
        return raw, {}
    if not isinstance(overlay, dict):
        raise ConfigError(
            f"smoke: expected a mapping of dotted keys to values (as --set takes them), got {short_repr(overlay)}"
        )
    for key in overlay:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"smoke: expected dotted keys such as steps or problem.n, got {short_repr(key)}")
        node, parts = raw, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:i]) or "the config"
                raise ConfigError(
                    f"smoke.{key}: the config states no {'.'.join(parts[: i + 1])} (an overlay changes values of "
                    f"the config, it adds no keys); {where} has {sorted(node) if isinstance(node, dict) else 'no keys'}"
                )
            node = node[part]
    return raw, overlay


def apply_smoke(raw: dict, smoke: bool) -> dict:
    """The config with its ``smoke:`` overlay applied (``smoke=True``) or dropped."""
    base, overlay = split_smoke(raw)
    base = copy.deepcopy(base)  # set_dotted writes into nested mappings
    if smoke:
        if not overlay:
            raise ConfigError("--smoke: this config has no smoke: overlay")
        for key, value in overlay.items():
            set_dotted(base, key, value)
    return base
