"""The ``eigjax`` command line: ``eigjax run CONFIG``, ``eigjax list``, ``eigjax check``.

Exit codes: 0 success; 2 invalid config or arguments (nothing written); 3 the run cannot
go on from what is on disk: it stopped on a non-finite objective (the last good checkpoint
is kept), or a file in the output directory is damaged, missing or a link eigjax did not
create (the message names it); 1 any other error. A reader that closes the pipe early
(``eigjax check rosser | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import pkgutil
import sys

RUN_EXAMPLES = """examples:
  eigjax run configs/seed_example3.yaml
  eigjax run configs/fmmc.yaml --set problem.graph.n=8 --set optimizer.learning_rate=0.05
  eigjax run configs/fmmc.yaml --out runs/fmmc_a --resume
  eigjax run configs/seed_example3.yaml --sweep seed=0,1,2 --sweep optimizer.learning_rate=0.1,0.01
"""


def _configs_dir() -> pathlib.Path:
    here = pathlib.Path.cwd() / "configs"
    if here.is_dir():
        return here
    return pathlib.Path(__file__).resolve().parents[1] / "configs"


def _header(path: pathlib.Path) -> str:
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            if text and not text.lower().startswith("run:"):
                return text
        elif line:
            break
    return ""


def cmd_list(args) -> int:
    import importlib

    try:
        import experiments
    except ImportError:
        experiments = None
    print("experiments:")
    if experiments is not None:
        for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            mod = importlib.import_module(f"experiments.{info.name}")
            doc = (mod.__doc__ or "").strip().splitlines()
            print(f"  experiments.{info.name:<28} {doc[0] if doc else ''}")
    print("configs:")
    cdir = _configs_dir()
    for path in sorted(cdir.rglob("*.yaml")):
        rel = os.path.relpath(path, pathlib.Path.cwd())
        print(f"  {rel:<38} {_header(path)}")
    return 0


def cmd_run(args) -> int:
    from ._config import ConfigError, apply_overrides, load_yaml, resolve, sweep_points
    from ._runner import NonFiniteObjective, StateError

    try:
        raw = apply_overrides(load_yaml(args.config), args.set or [])
        if raw.get("experiment") == "batch_eval":
            return _run_batch(raw, args)
        cfg, module, problem = resolve(raw)
        sweep = sweep_points(args.sweep) if args.sweep else None
        out = args.out or os.path.join("runs", pathlib.Path(args.config).stem)
        from ._runner import run

        if sweep:
            from ._config import set_dotted  # noqa: F401  (validated inside run before writing)
        summaries = run(cfg, module, problem, out, resume=args.resume, sweep=sweep, progress=not args.no_progress,
                        label=pathlib.Path(args.config).name)
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
    moved = f"; the objective changed by {change['objective']:.3e} over its last {change['steps']} steps" if change else ""
    lines.append(f"  stopped by the step budget (steps: {s['steps']}), not by a convergence test{moved}")
    proc = s.get("this_process") or {}
    if proc.get("first_step") and not proc.get("steps"):
        lines.append(f"  resumed at step {proc['first_step']}: nothing left to run (summary and plots rewritten)")
    elif proc.get("first_step"):
        rate = f", {s['steps_per_s']:.3g} steps/s" if s.get("steps_per_s") else ""
        lines.append(f"  resumed at step {proc['first_step']}: this process ran steps {proc['first_step']}-{s['steps']}"
                     f" ({proc['steps']} steps{rate}; wall and compile times cover these only)")
    return "\n".join(lines)


def _run_batch(raw: dict, args) -> int:
    """``experiment: batch_eval``: the chunked, sharded batch evaluator (eigjax/app/_batch.py)."""
    from ._batch import BatchConfigError, BatchRunError, run_batch_eval, summary_line, validate_config

    extra = sorted(set(raw) - {"experiment", "batch"})
    if extra:
        print(f"eigjax run: invalid config: {extra[0]}: unknown key for experiment batch_eval; expected batch", file=sys.stderr)
        return 2
    if args.sweep:
        print("eigjax run: invalid config: --sweep: not supported for experiment batch_eval", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", pathlib.Path(args.config).stem)
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
    run.add_argument("config", help="path to a YAML config (see configs/)")
    run.add_argument("--out", help="output directory (default: runs/<config name>)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value; dotted keys, YAML values (repeatable)")
    run.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...", help="run the grid of these values (repeatable)")
    run.add_argument("--resume", action="store_true", help="continue from the checkpoint in the output directory")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    lst = sub.add_parser(
        "list",
        help="list the experiments and configs that ship",
        description="List the experiment modules and the configs, one line each.",
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
    if argv[:1] == ["check"]:  # its own parser (eigjax._diagnostics.run_check), --help included
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
