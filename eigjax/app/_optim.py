"""Optimisers for the runner and the config checks: optax optimisers by name.

``make_optimizer(cfg["optimizer"])`` is ``optax.inject_hyperparams(optax.<name>)``: float
hyperparameters (given or default) live in the optimiser state, so sweep points that
differ only in them (or in the seed) share one compiled, ``vmap``-ped program
(:func:`is_vmappable`). optax is imported inside the functions, so ``eigjax --help`` does
not import it.
"""

from __future__ import annotations

import inspect

import jax

from ._errors import ConfigError, short_repr, short_text

_VMAPPABLE_PREFIX = "optimizer."


def is_vmappable(key: str, value) -> bool:
    """Sweep keys that can share one compiled program: the seed and float hyperparameters."""
    if key == "seed":
        return isinstance(value, int) and not isinstance(value, bool)
    return (
        key.startswith(_VMAPPABLE_PREFIX)
        and key.count(".") == 1
        and isinstance(value, float)
        and key != "optimizer.name"
    )


def optax_promotion():
    """Standard dtype promotion around optax's own code (construction, init, update).

    optax is not clean under ``jax.numpy_dtype_promotion("strict")`` (its schedules
    and updates mix float32 constants with float64 values), while eigjax's library
    functions and its experiments are. The runner is an application: it lets optax
    promote as it was written to, and keeps the user's setting everywhere else.
    """
    return jax.numpy_dtype_promotion("standard")


def make_optimizer(opt_cfg: dict):
    """``optax.inject_hyperparams(optax.<name>)(**kwargs)`` for a config's ``optimizer:`` block.

    Raises:
      ConfigError: optax rejected the arguments.
    """
    with optax_promotion():
        return _make_optimizer(opt_cfg)


def _make_optimizer(opt_cfg: dict):
    import optax

    name = opt_cfg["name"]
    kwargs = {k: v for k, v in opt_cfg.items() if k not in ("name", "schedule")}
    sched = opt_cfg.get("schedule")
    if sched:
        sargs = {k: v for k, v in sched.items() if k != "name"}
        kwargs["learning_rate"] = getattr(optax.schedules, sched["name"])(**sargs)
    # Floats (given or default) become injected (traced, vmappable) hyperparameters;
    # everything else (ints such as memory sizes, bools, None, objects) is static.
    static = []
    for pname, param in inspect.signature(getattr(optax, name)).parameters.items():
        value = kwargs.get(pname, param.default)
        if not (isinstance(value, float) or callable(value)):
            static.append(pname)
    try:
        return optax.inject_hyperparams(getattr(optax, name), static_args=static)(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"optimizer: expected arguments that optax.{name} accepts, got {short_repr(kwargs)}: {short_text(exc, 300)}"
        ) from None
