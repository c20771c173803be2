"""Scale of prediction and evaluation: a period of daily high-resolution fields predicted and scored
in bounded memory.

``python -m benchmarks.scale_predict`` writes a synthetic daily Zarr store (``--grid`` x ``--grid``,
default 1024 x 1024, through :func:`benchmarks.scale.write_store`) holding a short training period,
a validation period and a test period of ``--days`` days (default 365: one year), trains a small
network for a few steps on it, then in fresh processes

- **predict**: :func:`engine.inference.predict.write_predictions` (block by block into
  ``predictions.nc``, all baselines), and
- **evaluate**: :func:`engine.evaluation.report.evaluate_run` (dask, block by block),

each with its peak memory (PSS of the process and its children, peak RSS of the process, polled
every 0.2 s by :class:`benchmarks.scale.TreeMemory`), wall time and fields per second (test days /
seconds). ``--days`` may be given several times (``--days 30,120``) to show that the peak does not
grow with the period. Target (issue 11): peak RSS <= 3 GiB for each.

``python -m benchmarks.scale --predict`` adds these rows to the scale table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.scale import GIB, VARIABLE, TreeMemory, catalog_for, write_store
from benchmarks.scale import _child as scale_child

TRAIN_DAYS, VAL_DAYS = 48, 16
CHUNK = 8  # time steps per storage chunk: 32 MiB at 1024 x 1024


def _periods(steps: int, days: int) -> dict[str, list[str]]:
    import pandas as pd

    t = pd.date_range("1950-01-01", periods=steps, freq="D")
    day = lambda i: str(t[i].date())  # noqa: E731
    return {"train_period": [day(0), day(TRAIN_DAYS - 1)], "val_period": [day(TRAIN_DAYS), day(TRAIN_DAYS + VAL_DAYS - 1)],
            "test_period": [day(steps - days), day(steps - 1)]}


def _config(store: Path, steps: int, days: int):
    from engine.config import ExperimentConfig

    return ExperimentConfig(name=f"scale-predict-{days}d").replace(
        data={"highres": "scale_store", "catalog": str(catalog_for(store)), "variable": VARIABLE, "scale": 4,
              "patch_size": 64, "static": [], **_periods(steps, days)},
        model={"backbone": "resnet", "upsampling": "spc", "filters": 16, "blocks": 2},
        training={"epochs": 1, "samples_per_epoch": 64, "batch_size": 16, "patience": 10},
        launch={"launcher": "inline"},
    )


def _child(args: list[str], timeout: float = 7200) -> tuple[dict, TreeMemory, float]:
    """:func:`benchmarks.scale._child` for this module's rows, plus the wall time."""
    start = time.perf_counter()
    result, mem = scale_child(args, timeout=timeout, module="benchmarks.scale_predict", one_thread=False)
    return result, mem, time.perf_counter() - start


def prediction_rows(folder: Path, grid: int, days_list: list[int], keep: bool = False,
                    kinds: tuple[str, ...] = ("predict", "evaluate")) -> list[dict]:
    """Store, tiny training, then a predict and an evaluate row per test length in ``days_list``
    (``keep``: leave the store and the trained run in ``folder`` for :func:`run_rows`)."""
    rows = []
    for days in days_list:
        steps = TRAIN_DAYS + VAL_DAYS + days
        store = folder / f"predict_{grid}_{days}d.zarr"
        info = write_store(store, steps * grid * grid * 4 / GIB, grid, chunk=CHUNK)
        steps = info["steps"]  # rounded to whole chunks: the test period takes the extra days
        days = steps - TRAIN_DAYS - VAL_DAYS
        runs = folder / "runs"
        trained, _, _ = _child(["--child", "train", "--store", str(store), "--steps", str(steps), "--days", str(days),
                                "--runs", str(runs)])
        print(f"trained run: {trained['run']}", flush=True)
        rows += run_rows(trained["run"], kinds, store_gib=info["bytes"] / GIB)
        if not keep:
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(runs, ignore_errors=True)
    return rows


def run_rows(run_path: str, kinds: tuple[str, ...] = ("predict", "evaluate"), store_gib: float | None = None) -> list[dict]:
    """The predict and/or evaluate rows of an already trained run (``--trained RUN``); the grid,
    the test days and the store's size come from the run's configuration and its store."""
    import pandas as pd
    import xarray as xr

    from engine.runs import Run

    cfg = Run(run_path).config
    catalog = Path(cfg.data.catalog)
    store = catalog.with_name(catalog.name.removesuffix(".yaml"))  # benchmarks.scale.catalog_for
    grid = int(xr.open_zarr(store, consolidated=False).sizes["lat"])
    if store_gib is None:
        store_gib = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / GIB
    days = len(pd.date_range(*cfg.data.test_period, freq="D"))
    rows = []
    for kind in kinds:
        result, mem, wall = _child(["--child", kind, "--run", str(run_path)])
        rows.append({"kind": kind, "grid": grid, "days": days, "store_gib": store_gib,
                     "peak_pss_gib": mem.peak_pss / GIB, "peak_main_rss_gib": mem.peak_main_rss / GIB,
                     "wall_s": wall, **result, "fields_per_s": days / result["seconds"]})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def child(args) -> dict:
    from engine.runs import Run, RunStore

    if args.child == "train":
        store = Path(args.store)
        os.environ["FINESCALE_DATA_ROOTS"] = str(store.parent)
        from engine.training.trainer import train

        run = RunStore(args.runs).create(_config(store, args.steps, args.days))
        train(run)
        return {"run": str(run.path)}
    run = Run(args.run)
    os.environ["FINESCALE_DATA_ROOTS"] = str(Path(run.config.data.catalog).parent)
    start = time.perf_counter()
    if args.child == "predict":
        from engine.inference.predict import write_predictions

        ds = write_predictions(run)
        out = {"variables": len(ds.data_vars), "file_gib": run.predictions_path.stat().st_size / GIB}
    else:
        from engine.evaluation.report import evaluate_run

        scores = evaluate_run(run)
        out = {"scores": len(scores)}
    return {**out, "seconds": time.perf_counter() - start}


def table(rows: list[dict]) -> str:
    lines = ["| row | grid | test days | store (GiB) | peak PSS, process + children (GiB) | peak RSS main (GiB) | "
             "time (s) | fields/s |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['grid']}x{r['grid']} | {r['days']} | {r['store_gib']:.1f} | "
                     f"{r['peak_pss_gib']:.2f} | {r['peak_main_rss_gib']:.2f} | {r['seconds']:.0f} | "
                     f"{r['fields_per_s']:.2f} |")
    return "\n".join(lines)


def verdict(rows: list[dict]) -> list[str]:
    out = []
    for kind in ("predict", "evaluate"):
        peaks = [r["peak_main_rss_gib"] for r in rows if r["kind"] == kind]
        if peaks:
            out.append(f"{kind}: peak RSS <= 3 GiB: {'met' if max(peaks) <= 3 else 'MISSED'} (max {max(peaks):.2f} GiB"
                       f" over {', '.join(str(r['days']) for r in rows if r['kind'] == kind)} test days)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=1024)
    p.add_argument("--days", default="365", help="test period lengths in days (comma-separated)")
    p.add_argument("--dir", default=None, help="folder for the stores (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the store and the trained run in --dir")
    p.add_argument("--trained", default=None, help="rows for this already trained run (its store kept by --keep)")
    p.add_argument("--only", choices=("predict", "evaluate"), default=None, help="one kind of row only")
    p.add_argument("--child", choices=("train", "predict", "evaluate"), help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--runs", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.days = int(args.days)
        print(json.dumps(child(args)))
        return 0
    kinds = (args.only,) if args.only else ("predict", "evaluate")
    if args.keep and args.dir is None:
        p.error("--keep needs --dir (the folder the store and the run stay in)")
    if args.trained:
        rows = run_rows(args.trained, kinds)
    else:
        folder = Path(args.dir or tempfile.mkdtemp(prefix="finescale-scale-predict-"))
        folder.mkdir(parents=True, exist_ok=True)
        try:
            rows = prediction_rows(folder, args.grid, [int(d) for d in args.days.split(",") if d.strip()], args.keep,
                                   kinds)
        finally:
            if args.dir is None:
                shutil.rmtree(folder, ignore_errors=True)
    print("\n" + table(rows) + "\n\n" + "\n".join(f"- {v}" for v in verdict(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
