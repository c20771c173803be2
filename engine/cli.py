"""Command line: ``python -m engine <command>`` (also installed as ``finescale``).

Commands
--------
train CONFIG.yaml      create a run and launch it (``--launcher inline|local|slurm``, ``--set k=v``)
evaluate RUN           (re)write predictions.nc and scores.csv of a trained run
runs                   list runs with state, progress and headline scores
compare RUN [RUN ...]  scores side by side with the baselines
cancel RUN             cancel a pending or running run
config                 print the default configuration as YAML (a starting point)
check CONFIG.yaml      check the data a configuration names; every problem at once (exit 1)
catalog                list the catalogue entries
mlbench ...            CORDEX ML-Bench: list, download, standin, train, score (engine.mlbench.cli)

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
from engine.follow import follow
from engine.runs import FINAL_STATES, RunStore, RunStoreError


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
    """``rmse=1.234 (best baseline quantile_map 1.500, ratio 0.82)``: the headline is against the
    best baseline on the validation period (``scores["reference"]``), bicubic for older runs."""
    scores = status.get("scores") or {}
    model = scores.get("model") or {}
    if model.get("rmse") is None:
        return ""
    ref = scores.get("reference") or {}
    name = ref.get("name") or "bicubic"
    base = scores.get(name) or {}
    text = f"rmse={model['rmse']:.3f}"
    if base.get("rmse"):
        label = f"best baseline {name}" if ref.get("name") else name
        text += f" ({label} {base['rmse']:.3f}, ratio {model['rmse'] / base['rmse']:.2f})"
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
    detach = args.detach or args.no_wait
    if detach and cfg.launch.launcher == "inline":
        raise ConfigError("--detach needs a launcher that runs apart from this process ('local' or 'slurm'); "
                          "the 'inline' launcher trains here and ends with this command")
    store = RunStore(args.runs)
    if cfg.launch.launcher == "inline":
        # The inline launcher trains in the calling process: submit in a thread, follow from here.
        import threading

        before = _run_ids(store)
        result: dict[str, Any] = {}

        def submit() -> None:
            try:
                result["handle"] = launch.submit(cfg, store)
            except BaseException as exc:  # re-raised below: the one-line error of main()
                result["error"] = exc

        worker = threading.Thread(target=submit, daemon=True)
        worker.start()
        run = None
        while run is None and worker.is_alive():
            new = sorted(i for i in _run_ids(store) - before if f"-{cfg.name}-" in i)
            try:
                run = store.get(new[0]) if new else None
            except RunStoreError:  # the folder exists, its files not yet
                run = None
            if run is None:
                time.sleep(0.1)
        if run is None:
            worker.join()
            if "error" in result:
                raise result["error"]
            run = result["handle"].run
        print(f"run {run.run_id} submitted (inline) -> {run.path}", flush=True)
        follow(run, ended=lambda: not worker.is_alive())
        worker.join()
        if "error" in result:
            raise result["error"]
        status = run.status()
    else:
        handle = launch.submit(cfg, store)
        run = handle.run
        print(f"run {run.run_id} submitted ({cfg.launch.launcher}) -> {run.path}", flush=True)
        if detach:
            print(f"detached; follow it with: python -m engine --runs {store.root} follow {run.run_id}")
            return 0
        try:
            follow(run, ended=lambda: handle.status().get("state") in FINAL_STATES)
        except KeyboardInterrupt:  # the run goes on without us
            print(f"\nstopped following; run {run.run_id} goes on (python -m engine follow {run.run_id})")
            return 0
        status = run.status()
    return _final_line(run, status)


def _run_ids(store: RunStore) -> set[str]:
    root = store.root
    return {p.name for p in root.iterdir() if p.is_dir()} if root.exists() else set()


def _final_line(run, status: dict[str, Any]) -> int:
    print(f"run {run.run_id}: {status.get('state')} {_format_scores(status)}")
    if status.get("state") != "completed":
        if status.get("error"):
            print(status["error"], file=sys.stderr)
        return 1
    return 0


def cmd_follow(args) -> int:
    run = RunStore(args.runs).resolve(args.run)
    try:
        status = follow(run)
    except KeyboardInterrupt:
        return 0
    return _final_line(run, status)


def cmd_evaluate(args) -> int:
    from engine.evaluation.report import evaluate_run
    from engine.inference import write_predictions

    from engine.launch.dask_cluster import dask_client, dask_settings

    run = RunStore(args.runs).resolve(args.run)
    launch = run.config.launch
    if getattr(args, "dask", None):  # --dask overrides the run's launch.dask.cluster for this evaluation
        launch = run.config.replace(launch={"dask": {**launch.dask, "cluster": args.dask}}).launch
    settings = dask_settings(launch)  # a bad launch.dask is refused before any work
    write_predictions(run)
    # evaluation's dask computes run on the cluster launch.dask asks for (none: dask's threads)
    with dask_client(settings, log_directory=run.path / "dask-logs", name=f"finescale-dask-{run.run_id}"[:64]):
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
        try:  # a running run whose worker is gone shows "died"; an unreadable status "corrupt"
            s = run.check_worker()
            row = (f"{run.run_id:50s} {str(s.get('state', '?')):10s} {100 * float(s.get('progress') or 0):7.0f}% "
                   f"{str(s.get('launcher', '')):9s} {str(s.get('job_id') or ''):>8s}  {_format_scores(s)}")
            if s.get("state") in ("corrupt", "died", "failed"):
                row += f"  {failure_line(s)}"
        except (RunStoreError, OSError, TypeError, ValueError, KeyError) as exc:  # one damaged run hides no other
            row = f"{run.run_id:50s} {'corrupt':10s} {'':>8s} {'':9s} {'':>8s}  {exc}"
        print(row)
    return 0


def failure_line(status: dict[str, Any], width: int = 300) -> str:
    """The last line of a failed run's error (what went wrong, not the whole traceback), or the
    traceback's last line when the error is empty."""
    for text in (status.get("error"), status.get("traceback")):
        lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
        if lines:
            return lines[-1][:width]
    return ""


def cmd_compare(args) -> int:
    import pandas as pd

    from engine.evaluation.report import compare_runs

    store = RunStore(args.runs)
    runs = [store.resolve(r) for r in args.run]
    table = compare_runs(runs)
    # name each run's reference: its best baseline on the validation period
    refs = {r.run_id: ((r.status().get("scores") or {}).get("reference") or {}).get("name") for r in runs}
    marked = [refs.get(run) == model for run, model in zip(table["run"], table["model"])]
    table["model"] = [f"{m} *" if flag else m for m, flag in zip(table["model"], marked)]
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", 200):
        print(table.to_string())
    if any(marked):
        print("* the run's best baseline on the validation period (the reference of its headline ratio)")
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


def cmd_check(args) -> int:
    from engine.data.check import check_config

    cfg = apply_overrides(ExperimentConfig.from_yaml(args.config), args.set or [])
    problems = []
    try:
        cfg.validate()
    except ConfigError as exc:  # reported with the data problems, not instead of them
        problems.append(str(exc))
    problems += [p for p in check_config(cfg) if p not in problems]
    if problems:
        print(f"{args.config}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    d = cfg.data
    print(f"{args.config}: ok ({d.downscaling} {d.variable} from {d.highres}"
          f"{f' <- {d.lowres}' if d.downscaling == 'mos' else ''}, x{d.scale})")
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
    p.add_argument("--detach", action="store_true", help="return after submitting (local, slurm); follow later")
    p.add_argument("--no-wait", action="store_true", help=argparse.SUPPRESS)  # the old name of --detach
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("follow", help="follow a run's progress until it ends")
    p.add_argument("run")
    p.set_defaults(func=cmd_follow)

    p = sub.add_parser("evaluate", help="predict the test period and score a trained run")
    p.add_argument("run")
    p.add_argument("--dask", choices=("none", "local", "slurm"), default=None,
                   help="where evaluation's dask work runs (overrides the run's launch.dask.cluster)")
    p.set_defaults(func=cmd_evaluate)

    sub.add_parser("runs", help="list runs").set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="compare runs and baselines")
    p.add_argument("run", nargs="+")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("cancel", help="cancel a run")
    p.add_argument("run")
    p.set_defaults(func=cmd_cancel)

    sub.add_parser("config", help="print the default configuration").set_defaults(func=cmd_config)

    p = sub.add_parser("check", help="check the data of CONFIG.yaml; every problem at once")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override a field (repeatable)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("catalog", help="list catalogue entries")
    p.add_argument("--catalog", default=None, help="catalogue YAML (default: the bundled one)")
    p.set_defaults(func=cmd_catalog)

    from engine.mlbench.cli import add_parser as add_mlbench

    add_mlbench(sub)
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
