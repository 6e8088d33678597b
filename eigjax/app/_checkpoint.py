"""The runner's state on disk: checkpoints, ``metrics.jsonl`` and the files it owns.

A checkpoint (``checkpoint.npz``, one per vmapped group) holds the stacked parameter and
optimiser-state leaves (``leaf_<i>``), the step, each point's best objective, each point's
``metrics.jsonl`` size when it was written (a resume truncates the file back to it), and a
fingerprint: the resolved configs of the group's points. It is written whole with
:func:`eigjax.app._files.atomic_write_bytes`. ``metrics.jsonl`` is the one file appended to
in place; it is opened with ``O_NOFOLLOW`` (:func:`open_own_file`), so a symbolic link
planted at its path is refused, never written through.

Errors: a damaged, missing or linked file is a :class:`StateError` naming it; a checkpoint
written for other configs is a :class:`ConfigError`.
"""

from __future__ import annotations

import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from . import _files
from ._errors import ConfigError, StateError, short_text

OUR_FILES = (
    "checkpoint.npz",
    "metrics.jsonl",
    "summary.json",
    "params.npz",
    "config.yaml",
    "objective.png",
    "eigenvalues.png",
    "sweep_summary.md",
    "sweep_summary.json",
)


def open_own_file(path: str, mode: str):
    """Open a file eigjax wrote itself for appending (``"a"``) or resizing (``"r+b"``),
    never through a symbolic link (``O_NOFOLLOW``): a link at that path was not made by
    eigjax, and writing through it would change a file outside the output directory."""
    flags = {"a": os.O_WRONLY | os.O_APPEND, "r+b": os.O_RDWR}[mode]
    try:
        fd = _files.open_nofollow(path, flags)
    except FileNotFoundError:
        raise StateError(f"{path} is missing; rerun without --resume to start over") from None
    except _files.SymlinkRefused:
        raise StateError(
            f"{path} is a symbolic link (to {_link_target(path)}); eigjax writes only files it created "
            "and never through a link: remove the link or use another --out"
        ) from None
    except OSError as exc:
        raise StateError(f"{path} cannot be opened for writing: {exc}") from None
    return os.fdopen(fd, "a" if mode == "a" else "r+b")


def ensure_own_dir(path: str) -> None:
    """Create ``path`` as a directory, refusing a symbolic link in its place (a sweep's
    point and group directories live inside ``--out``; a link would redirect them)."""
    if os.path.islink(path):
        raise StateError(
            f"{path} is a symbolic link (to {_link_target(path)}); eigjax writes only into directories it "
            "created: remove the link or use another --out"
        )
    os.makedirs(path, exist_ok=True)


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def remove_temporaries(directory: str) -> None:
    """Remove the temporary files of atomic writes of eigjax's files that a killed run left."""
    if os.path.isdir(directory):
        for name in OUR_FILES:
            _files.remove_temps(os.path.join(directory, name))


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def fingerprint(points) -> str:
    """What a checkpoint was written for: the resolved configs of its points."""
    return json.dumps([p.cfg for p in points], sort_keys=True)


def _check_fingerprint(z, state_dir: str, expected: str) -> None:
    """Raise ConfigError if the open checkpoint ``z`` was written for other configs."""
    if str(z["fingerprint"]) != expected:
        raise ConfigError(
            f"--resume: the checkpoint in {state_dir} was written for a different config; "
            "rerun without --resume or use another --out"
        )


def check_resumable(state_dir: str, points) -> None:
    """Raise ConfigError if ``state_dir`` holds a checkpoint written for other configs, or
    StateError if it is damaged (a sweep checks every group this way before any runs)."""
    ckpt_path = os.path.join(state_dir, "checkpoint.npz")
    if not os.path.lexists(ckpt_path):
        return
    try:
        with np.load(ckpt_path, allow_pickle=False) as z:
            _check_fingerprint(z, state_dir, fingerprint(points))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file
        raise StateError(
            f"checkpoint {ckpt_path} is damaged ({type(exc).__name__}: {short_text(exc, 200)}); "
            "rerun without --resume to start over"
        ) from None


def load_checkpoint(path, state_dir, expected_fingerprint, template, npoints):
    """(params, opt_state, step, best, metrics sizes) from ``path``; StateError if damaged,
    ConfigError if it was written for another config."""

    def damaged(why):
        return StateError(f"checkpoint {path} is damaged ({why}); rerun without --resume to start over")

    try:
        with np.load(path, allow_pickle=False) as z:
            _check_fingerprint(z, state_dir, expected_fingerprint)
            leaves, treedef = jax.tree_util.tree_flatten(template)
            loaded = []
            for i, leaf in enumerate(leaves):
                arr = z[f"leaf_{i}"]
                if arr.shape != leaf.shape:
                    raise damaged(f"leaf_{i} has shape {arr.shape}, expected {leaf.shape}")
                loaded.append(jnp.asarray(arr, dtype=leaf.dtype))
            if f"leaf_{len(leaves)}" in z.files:
                raise damaged(f"it holds more than the {len(leaves)} arrays of this config's state")
            step = int(z["step"])
            best = [float(b) for b in z["best"]]
            sizes = [int(s) for s in z["metrics_bytes"]]
    except (StateError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy and KeyError all signal a damaged file
        raise damaged(f"{type(exc).__name__}: {short_text(exc, 200)}") from None
    if len(best) != npoints or len(sizes) != npoints or step < 0:
        raise damaged(f"step {step}, {len(best)} best values and {len(sizes)} metrics sizes for {npoints} points")
    params, opt_state = jax.tree_util.tree_unflatten(treedef, loaded)
    return params, opt_state, step, best, sizes


def truncate_metrics(metrics_paths, sizes, ckpt_path) -> None:
    """Cut each ``metrics.jsonl`` back to the size the checkpoint recorded (rows logged
    after it are logged again); a file shorter than that is damaged."""
    for path, size in zip(metrics_paths, sizes):
        with open_own_file(path, "r+b") as f:
            have = os.fstat(f.fileno()).st_size
            if have < size:
                raise StateError(
                    f"{path} is damaged: {have} bytes, but the checkpoint {ckpt_path} was written when it held "
                    f"{size}; rerun without --resume to start over"
                )
            f.truncate(size)


def save_checkpoint(path, params, opt_state, step, best, metrics_path, fp):
    leaves = jax.tree_util.tree_leaves((params, opt_state))
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update(
        step=np.asarray(step),
        best=np.asarray(best, dtype=np.float64),
        metrics_bytes=np.asarray([os.path.getsize(p) for p in metrics_path]),
        fingerprint=np.asarray(fp),
    )
    _files.atomic_write_bytes(path, npz_bytes(arrays))
