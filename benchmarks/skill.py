"""Skill of the default ResNet-SPC model against bicubic interpolation.

``python -m benchmarks.skill`` trains the model with the real trainer (through the run store),
predicts the test period and prints the test RMSE of the model and of bicubic and their ratio for

- the embedded demo data (``demo_alps``: daily 2 m temperature over the Alps, x4 PerfectProg), and
- ERA5 UK (``era5_uk_t2m``: hourly 2 m temperature, March 2019, 0.25 degree, x4 PerfectProg to 1
  degree), with real elevation and land mask as static fields. Its download cache is seeded from
  ``../shared/data`` when that folder exists (offline); otherwise the normal download path runs.

Target of the first version: on ERA5 UK x4, model RMSE < 0.7 x bicubic.
Options: ``--epochs``, ``--samples`` (per epoch), ``--only demo|era5``, ``--set section.field=value``
(repeatable, e.g. ``--set model.filters=64 --set model.blocks=6`` for the wider ResNet).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from engine.cli import apply_overrides
from engine.config import ExperimentConfig
from engine.evaluation.metrics import rmse
from engine.inference import predict_run
from engine.runs import RunStore
from engine.training.trainer import train

CASES = {
    "demo": ExperimentConfig(name="skill-demo").replace(
        data={"highres": "demo_alps", "variable": "t2m", "scale": 4, "patch_size": 64}),
    # ERA5 UK: 33 x 49 at 0.25 degree; the bbox keeps 32 x 48 so that x4 divides the grid.
    "era5": ExperimentConfig(name="skill-era5").replace(
        data={"highres": "era5_uk_t2m", "variable": "t2m", "scale": 4, "patch_size": None,
              "bbox": [50.2, 58.05, -10.05, 1.8],
              "train_period": ["2019-03-01", "2019-03-21"], "val_period": ["2019-03-22", "2019-03-25"],
              "test_period": ["2019-03-26", "2019-03-31T23:00"]}),
}


def run_case(name: str, cfg: ExperimentConfig, root: str) -> dict:
    run = RunStore(root).create(cfg.validate())
    start = time.perf_counter()
    summary = train(run)
    seconds = time.perf_counter() - start
    ds = predict_run(run, "test")
    mask = ds["mask"] > 0
    model = float(rmse(ds["model"], ds["truth"], mask=mask))
    bicubic = float(rmse(ds["bicubic"], ds["truth"], mask=mask))
    return {"case": name, "model": model, "bicubic": bicubic, "ratio": model / bicubic,
            "epochs": summary.get("epoch", -1) + 1, "seconds": seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--only", choices=sorted(CASES), default=None)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name, cfg in CASES.items():
            if args.only and name != args.only:
                continue
            cfg = apply_overrides(cfg.replace(training={"epochs": args.epochs, "samples_per_epoch": args.samples},
                                              launch={"launcher": "inline"}), args.set)
            try:
                rows.append(run_case(name, cfg, root))
            except Exception as exc:  # e.g. ERA5 offline without ../shared/data: say so, go on
                rows.append({"case": name, "error": f"{type(exc).__name__}: {exc}"})
    model = f"resnet+spc, {' '.join(args.set) or 'defaults'}"
    print(f"Test RMSE [K], model = {model}, {args.epochs} epochs x {args.samples} samples\n")
    print("| data | model RMSE | bicubic RMSE | ratio | epochs run | train time |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['case']} | not run: {row['error']} | | | | |")
        else:
            print(f"| {row['case']} | {row['model']:.3f} | {row['bicubic']:.3f} | {row['ratio']:.2f} | "
                  f"{row['epochs']} | {row['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
