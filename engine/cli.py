"""Command line: ``python -m engine <command>`` (also installed as ``finescale``).

Commands
--------
train CONFIG.yaml      create a run and launch it (``--launcher inline|local|slurm``, ``--set k=v``)
evaluate RUN           (re)write predictions.nc and scores.csv of a trained run
runs                   list runs with state, progress and headline scores
compare RUN [RUN ...]  scores side by side with the baselines
cancel RUN             cancel a pending or running run
config                 print the default configuration as YAML (a starting point)
catalog                list the catalogue entries

The run store root is ``--runs`` or ``$FINESCALE_RUNS`` (default ``./runs``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

import yaml

from engine.config import ConfigError, ExperimentConfig
from engine.config import SECTIONS
from engine.runs import RunStore, RunStoreError


def _parse_value(text: str) -> Any:
    # YAML scalars: numbers, booleans, null, lists ("[a, b]") -- never evaluated as code.
    return yaml.safe_load(text)


def apply_overrides(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """Apply ``section.field=value`` overrides, e.g. ``training.epochs=3`` (``name=...`` sets the name
    through ``--name``)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, field_name = key.partition(".")
        if not sep or not dot:
            raise ConfigError(f"--set {item!r} is not valid; expected section.field=value, e.g. training.epochs=3")
        if section not in SECTIONS:
            raise ConfigError(f"unknown configuration section {section!r}; accepted: {', '.join(SECTIONS)}")
        cfg = cfg.replace(**{section: {field_name: _parse_value(value)}})
    return cfg


def _format_scores(status: dict[str, Any]) -> str:
    scores = status.get("scores") or {}
    model = scores.get("model", {})
    base = scores.get("bicubic", {})
    if "rmse" not in model:
        return ""
    text = f"rmse={model['rmse']:.3f}"
    if base.get("rmse"):
        text += f" (bicubic {base['rmse']:.3f}, ratio {model['rmse'] / base['rmse']:.2f})"
    return text


def cmd_train(args) -> int:
    from engine import launch

    cfg = ExperimentConfig.from_yaml(args.config)
    cfg = apply_overrides(cfg, args.set or [])
    if args.name:
        cfg = cfg.replace(name=args.name)
    if args.launcher:
        cfg = cfg.replace(launch={"launcher": args.launcher})
    cfg.validate()
    store = RunStore(args.runs)
    handle = launch.submit(cfg, store)
    run = handle.run
    print(f"run {run.run_id} submitted ({cfg.launch.launcher}) -> {run.path}")
    if args.no_wait:
        return 0
    seen = 0
    while True:
        epochs = run.epochs()
        for record in epochs[seen:]:
            print(f"  epoch {record['epoch']:3d}  train_loss {record['train_loss']:.4f}  val_loss {record['val_loss']:.4f}"
                  f"  val_rmse {record['val_rmse']:.3f}  {record['samples_per_s']:.0f} samples/s", flush=True)
        seen = len(epochs)
        status = handle.status()
        if status.get("state") in ("completed", "failed", "cancelled"):
            break
        time.sleep(1.0)
    status = run.status()
    print(f"run {run.run_id}: {status['state']} {_format_scores(status)}")
    if status["state"] != "completed":
        if status.get("error"):
            print(status["error"], file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(args) -> int:
    from engine.evaluation.report import evaluate_run
    from engine.inference import write_predictions

    run = RunStore(args.runs).resolve(args.run)
    write_predictions(run)
    table = evaluate_run(run)
    print(f"wrote {run.predictions_path} and {run.scores_path} ({len(table)} scores)")
    print(_format_scores(run.status()))
    return 0


def cmd_runs(args) -> int:
    runs = RunStore(args.runs).list()
    if not runs:
        print(f"no runs in {RunStore(args.runs).root}")
        return 0
    print(f"{'run':50s} {'state':10s} {'progress':>8s} {'launcher':9s} {'job':>8s}  scores")
    for run in runs:
        s = run.status()
        print(f"{run.run_id:50s} {s.get('state', '?'):10s} {100 * float(s.get('progress') or 0):7.0f}% "
              f"{str(s.get('launcher', '')):9s} {str(s.get('job_id') or ''):>8s}  {_format_scores(s)}")
    return 0


def cmd_compare(args) -> int:
    import pandas as pd

    from engine.evaluation.report import compare_runs

    store = RunStore(args.runs)
    table = compare_runs([store.resolve(r) for r in args.run])
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", 200):
        print(table.to_string())
    return 0


def cmd_cancel(args) -> int:
    from engine import launch

    run = RunStore(args.runs).resolve(args.run)
    launch.cancel(run)
    print(f"run {run.run_id}: {run.state}")
    return 0


def cmd_config(args) -> int:
    print(ExperimentConfig().to_yaml(), end="")
    return 0


def cmd_catalog(args) -> int:
    from engine.data.catalog import entry_metadata, list_entries

    for name in list_entries(args.catalog):
        meta = entry_metadata(name, args.catalog)
        print(f"{name:20s} {str(meta.get('role', '')):9s} {meta.get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="finescale: deep-learning downscaling")
    parser.add_argument("--runs", default=None, help="run store root (default $FINESCALE_RUNS or ./runs)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="create a run from CONFIG.yaml and launch it")
    p.add_argument("config")
    p.add_argument("--launcher", default=None, help="override launch.launcher (inline, local, slurm)")
    p.add_argument("--name", default=None)
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a field (repeatable)")
    p.add_argument("--no-wait", action="store_true", help="return after submitting")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="predict the test period and score a trained run")
    p.add_argument("run")
    p.set_defaults(func=cmd_evaluate)

    sub.add_parser("runs", help="list runs").set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="compare runs and baselines")
    p.add_argument("run", nargs="+")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("cancel", help="cancel a run")
    p.add_argument("run")
    p.set_defaults(func=cmd_cancel)

    sub.add_parser("config", help="print the default configuration").set_defaults(func=cmd_config)

    p = sub.add_parser("catalog", help="list catalogue entries")
    p.add_argument("--catalog", default=None, help="catalogue YAML (default: the bundled one)")
    p.set_defaults(func=cmd_catalog)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, RunStoreError, ValueError, FileNotFoundError, RuntimeError) as exc:
        # A clear one-line error for the user; the traceback adds nothing for bad input.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
