"""The ``eigjax`` command line: ``eigjax run CONFIG``, ``eigjax list``, ``eigjax check``.

``eigjax run`` takes a config file or the name of a shipped config (``eigjax run fmmc``;
an existing file of that name comes first), applies the config's ``smoke:`` overlay with
``--smoke`` and the ``--set`` overrides on top. While it imports the experiment, the current
directory and the config file's folder are importable, as the current directory is under
``python -m eigjax``: a config can name the user's module beside it (``experiment: mymod``).
How ``experiment:`` names resolve (shipped short names first) is in
``eigjax.app._shipped``.

Exit codes: 0 success; 2 invalid config or arguments (nothing written); 3 the run cannot
go on from what is on disk: it stopped on a non-finite objective (the last good checkpoint
is kept), or a file in the output directory is damaged, missing or a link eigjax did not
create (the message names it); 1 any other error. A reader that closes the pipe early
(``eigjax check rosser | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys

RUN_EXAMPLES = """examples:
  eigjax run seed_example3                  # a shipped config, by name (eigjax list shows them)
  eigjax run fmmc --smoke                   # its smoke overlay: a tiny run of the same config
  eigjax run fmmc --set problem.graph.n=8 --set optimizer.learning_rate=0.05
  eigjax run my_config.yaml --out runs/mine --resume
  eigjax run seed_example3 --sweep seed=0,1,2 --sweep optimizer.learning_rate=0.1,0.01
"""


def cmd_list(args) -> int:
    """Every shipped experiment (short name, first doc line) and config (name, header)."""
    from ._shipped import (
        BATCH_EVAL,
        header,
        import_shipped,
        shipped_configs,
        shipped_experiments,
    )

    print("experiments (a config names one as experiment: NAME):")
    print(f"  {BATCH_EVAL:<24} the chunked, sharded batch evaluator (built in: eigjax.app._batch)")
    for name in shipped_experiments():
        doc = (import_shipped(name).__doc__ or "").strip().splitlines()
        print(f"  {name:<24} {doc[0] if doc else ''}")
    print("configs (eigjax run NAME; --smoke for a tiny run of the same config):")
    for name, entry in shipped_configs().items():
        print(f"  {name:<24} {header(entry.read_text())}")
    return 0


def _load_config(args) -> tuple[dict, str]:
    """The raw config ``eigjax run`` was given (a file, or a shipped config's name) with its
    smoke overlay applied or dropped and the ``--set`` overrides on top; and its file name."""
    import importlib.resources

    from ._config import ConfigError, apply_overrides, apply_smoke, load_yaml
    from ._shipped import shipped_configs

    path = pathlib.Path(args.config)
    if not path.is_file() and os.sep not in args.config:
        shipped = shipped_configs()
        if args.config not in shipped:
            raise ConfigError(
                f"config {args.config!r}: no such file, and no shipped config has that name (shipped: {', '.join(shipped)})"
            )
        with importlib.resources.as_file(shipped[args.config]) as file:
            raw = load_yaml(file)
        name = f"{args.config}.yaml"
    else:
        raw, name = load_yaml(path), path.name
    return apply_overrides(apply_smoke(raw, args.smoke), args.set or []), name


@contextlib.contextmanager
def _importable(config: str):
    """The current directory at the front of ``sys.path`` (where ``python -m eigjax`` has it)
    and the config file's folder right after it, while a run imports and runs its experiment,
    so a config can name the user's module beside it or where they run eigjax. A shipped
    config, given by name, adds only the current directory. Both are taken out afterwards."""
    cwd, added = os.getcwd(), []
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
        added.append(cwd)
    if pathlib.Path(config).is_file():
        folder = os.path.dirname(os.path.abspath(config))
        if folder not in sys.path:
            sys.path.insert(sys.path.index(cwd) + 1, folder)
            added.append(folder)
    try:
        yield
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


def cmd_run(args) -> int:
    from ._config import ConfigError, resolve, sweep_points
    from ._distributed import maybe_initialize
    from ._runner import NonFiniteObjective, StateError, run
    from ._shipped import BATCH_EVAL

    out = args.out or os.path.join("runs", pathlib.Path(args.config).stem)
    try:
        with _importable(args.config):
            raw, name = _load_config(args)
            if raw.get("experiment") == BATCH_EVAL:
                return _run_batch(raw, args, out)
            maybe_initialize()  # jax.distributed (a sweep's groups split over processes), before JAX computes
            cfg, module, problem = resolve(raw)
            sweep = sweep_points(args.sweep) if args.sweep else None
            summaries = run(
                cfg, module, problem, out, resume=args.resume, sweep=sweep, progress=not args.no_progress, label=name
            )
    except ConfigError as exc:
        print(f"eigjax run: invalid config: {exc}", file=sys.stderr)
        return 2
    except NonFiniteObjective as exc:
        print(f"eigjax run: stopped: {exc}", file=sys.stderr)
        return 3
    except StateError as exc:
        print(f"eigjax run: cannot continue: {exc}", file=sys.stderr)
        return 3
    for s in summaries:
        print(_summary_lines(s))
    print(f"outputs in {out}")
    return 0


def _summary_lines(s: dict) -> str:
    """What a finished run prints: the result, why it stopped, and what its timing covers."""
    ref = "" if s["reference"] is None else f"  reference {s['reference']:.10g}  gap {s['gap']:.3e}"
    name = f"{s['point']}: " if s.get("point") else ""
    lines = [f"{name}{s['experiment']}: objective {s['objective']:.10g}  best {s['best_objective']:.10g}{ref}"]
    change = s.get("last_interval_change")
    moved = (
        f"; the objective changed by {change['objective']:.3e} over its last {change['steps']} steps" if change else ""
    )
    lines.append(f"  stopped by the step budget (steps: {s['steps']}), not by a convergence test{moved}")
    proc = s.get("this_process") or {}
    if proc.get("first_step") and not proc.get("steps"):
        lines.append(f"  resumed at step {proc['first_step']}: nothing left to run (summary and plots rewritten)")
    elif proc.get("first_step"):
        rate = f", {s['steps_per_s']:.3g} steps/s" if s.get("steps_per_s") else ""
        lines.append(
            f"  resumed at step {proc['first_step']}: this process ran steps {proc['first_step']}-{s['steps']}"
            f" ({proc['steps']} steps{rate}; wall and compile times cover these only)"
        )
    return "\n".join(lines)


def _run_batch(raw: dict, args, out: str) -> int:
    """``experiment: batch_eval``: the chunked, sharded batch evaluator (eigjax/app/_batch.py)."""
    from ._batch import (
        BatchConfigError,
        BatchRunError,
        run_batch_eval,
        summary_line,
        validate_config,
    )

    extra = sorted(set(raw) - {"experiment", "batch"})
    if extra:
        print(
            f"eigjax run: invalid config: {extra[0]}: unknown key for experiment batch_eval; expected batch",
            file=sys.stderr,
        )
        return 2
    if args.sweep:
        print("eigjax run: invalid config: --sweep: not supported for experiment batch_eval", file=sys.stderr)
        return 2
    batch = raw.get("batch") or {}
    if not isinstance(batch, dict):
        print(f"eigjax run: invalid config: batch: expected a mapping, got {batch!r}", file=sys.stderr)
        return 2
    batch = dict(batch)
    if args.no_progress:
        batch["progress"] = False
    try:
        validate_config(batch)
        summary = run_batch_eval(batch, out, resume=args.resume)
    except BatchConfigError as exc:
        print(f"eigjax run: invalid config: {exc}", file=sys.stderr)
        return 2
    except BatchRunError as exc:  # lock held, symlink, damaged progress.json (2); disk full, memory (3)
        print(f"eigjax run: batch_eval: {exc}", file=sys.stderr)
        return exc.exit_code
    print(summary_line(summary, out))
    return 0


def cmd_check(args) -> int:
    from ._check import run_check

    return run_check(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eigjax",
        description="eigjax: differentiable eigendecompositions for JAX; config-driven spectral experiments.",
        epilog=RUN_EXAMPLES + "  eigjax list\n  eigjax check --help\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run one experiment config (or a sweep of it)",
        description="Run an experiment from a YAML config and write metrics.jsonl, summary.json, "
        "params.npz, plots and checkpoints to the output directory.",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", help="a YAML config file, or the name of a shipped config (eigjax list shows them)")
    run.add_argument("--out", help="output directory (default: runs/<config name>)")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value; dotted keys, YAML values (repeatable)",
    )
    run.add_argument(
        "--sweep", action="append", metavar="KEY=V1,V2,...", help="run the grid of these values (repeatable)"
    )
    run.add_argument(
        "--smoke", action="store_true", help="apply the config's smoke: overlay (a tiny run of the same config)"
    )
    run.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output directory")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    lst = sub.add_parser(
        "list",
        help="list the experiments and configs that ship",
        description="List the shipped experiments (by the short name a config gives) and the shipped configs "
        "(by the name `eigjax run NAME` takes), one line each.",
        epilog="example:\n  eigjax list\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lst.set_defaults(func=cmd_list)
    chk = sub.add_parser(
        "check",
        help="spectral and gradient diagnostics for a matrix (.npy or a named test matrix)",
        description="Run eigjax's diagnostics on a matrix; `eigjax check --help` lists the options.",
        add_help=False,
    )
    chk.add_argument("rest", nargs=argparse.REMAINDER)
    chk.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader closed the pipe (`eigjax check rosser | head`): stop quietly. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
            pass
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["check"]:  # its own parser (eigjax.app._check.run_check), --help included
        from ._check import run_check

        return run_check(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # finished work is on disk (checkpoints, finished chunks: atomic writes)
        resume = " (--resume continues from what is on disk)" if args.command == "run" else ""
        print(f"eigjax {args.command}: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
