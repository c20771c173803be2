"""CORDEX ML-Bench on the stand-in, end to end: ``python -m benchmarks.mlbench``.

Generates the stand-in archive of one domain (default ALPS: the Lambert target grid), trains
DeepESD and the best zoo model on both training experiments (ESD pseudo-reality, Emulator
hist+future; the zoo model is the candidate of ``--zoo`` with the lowest held-out error on the ESD
experiment's own held-out training days, :func:`choose_zoo`, never on a test set), writes every
submission file (checked against the templates), scores every run and the three baselines
(interpolated predictor, per-cell linear regression, monthly climatology) on every test set,
prints the scorecard and checks the targets:

1. both models beat the interpolation baseline on RMSE and RALSD in every test set (tasmax: the
   interpolation baseline has no precipitation counterpart), and the training months' climatology
   on pr RMSE in every test set (a model that learnt no pr would not);
2. the emulator experiment beats the ESD experiment on end-century RMSE (it has seen the future
   climate), for both models, tasmax and pr;
3. the whole run within 30 minutes on this machine's CPU.

Results: ``benchmarks/results/mlbench.md`` (and the full scorecard as ``mlbench_scorecard.csv``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from engine.mlbench.adjust import ADJUSTMENTS
from engine.mlbench.experiments import MLBenchConfig, train
from engine.mlbench.scoring import scorecard
from engine.mlbench.standin import generate_standin

RESULTS = Path(__file__).parent / "results"
EXPERIMENTS = ("ESD_pseudo_reality", "Emulator_hist_future")
# the zoo's supervised presets (engine.mlbench.experiments.MODEL_PRESETS), all at one small size
ZOO_CANDIDATES = ("resnet", "convnet", "convnext", "densenet", "swin", "unet")
SHOWN = ["tasmax_rmse", "tasmax_ralsd", "tasmax_bias_txx", "tasmax_bias_su", "pr_rmse", "pr_ralsd", "pr_bias_rx1day",
         "pr_bias_cdd", "corr_bias"]


def check_targets(table: pd.DataFrame, models, adjustment: str = "none") -> list[tuple[str, bool, str]]:
    # the interpolation baseline that saw the same (adjusted or raw) predictors as the models
    interpolation = "interpolation" if adjustment == "none" else f"interpolation+{adjustment}"
    out = []
    for model in models:
        for exp in EXPERIMENTS:
            rows = table[(table.model == model) & (table.experiment == exp)]
            base = table[(table.model == interpolation) & (table.experiment == exp)]
            merged = rows.merge(base, on=["test", "period", "mode", "gcm"], suffixes=("", "_interp"))
            for col in ("tasmax_rmse", "tasmax_ralsd"):
                worse = merged[merged[col] >= merged[f"{col}_interp"]]
                out.append((f"{model} {exp}: {col} < interpolation in all {len(merged)} test sets", worse.empty,
                            "" if worse.empty else "missed: " + ", ".join(f"{r.test}/{r.period}" for r in worse.itertuples())))
            # pr has no interpolated predictor: a model must show it learnt the day's weather by
            # beating the training months' climatology
            clim = table[(table.model == "climatology") & (table.experiment == exp)]
            merged = rows.merge(clim, on=["test", "period", "mode", "gcm"], suffixes=("", "_clim"))
            worse = merged[merged["pr_rmse"] >= merged["pr_rmse_clim"]]
            out.append((f"{model} {exp}: pr_rmse < climatology in all {len(merged)} test sets", worse.empty and len(merged) > 0,
                        "" if worse.empty else "missed: " + ", ".join(f"{r.test}/{r.period}" for r in worse.itertuples())))
        end = table[(table.model == model) & (table.period == "end_century") & (table["mode"] == "perfect")
                    & (table.gcm == table.gcm.iloc[0])]
        for var in ("tasmax", "pr"):
            esd = end[end.experiment == EXPERIMENTS[0]][f"{var}_rmse"]
            emu = end[end.experiment == EXPERIMENTS[1]][f"{var}_rmse"]
            if len(esd) and len(emu):
                ok = float(emu.iloc[0]) < float(esd.iloc[0])
                out.append((f"{model}: emulator beats ESD on end-century {var} RMSE", ok,
                            f"{float(emu.iloc[0]):.3f} vs {float(esd.iloc[0]):.3f}"))
    return out


def choose_zoo(runs: dict) -> pd.DataFrame:
    """Rank zoo candidates ({model: ESD run folder}) by their held-out error: for each variable,
    the best epoch's validation RMSE relative to the best candidate's; the mean over variables is
    the score (1.0: best in every variable). Returns the table, best first."""
    rows = {}
    for model, path in runs.items():
        info = json.loads((Path(path) / "mlbench.json").read_text())
        rows[model] = {f"{v}_val_rmse": min(r) for v, r in info["val_rmse"].items()}
        rows[model]["train_seconds"] = sum(info["seconds"].get(v, 0.0) for v in info["val_rmse"])
    table = pd.DataFrame.from_dict(rows, orient="index")
    cols = [c for c in table if c.endswith("_val_rmse")]
    table["score"] = (table[cols] / table[cols].min()).mean(axis=1)
    return table.sort_values("score", kind="stable")  # a tie keeps the order of --zoo


def markdown(table, checks, timings, args, total, choice) -> str:
    zoo = choice.index[0]
    lines = ["# CORDEX ML-Bench on the stand-in", "",
             f"`{' '.join(['python -m benchmarks.mlbench'] + sys.argv[1:])}` on {platform.node()} "
             f"({platform.processor() or platform.machine()}), shared CPU; total {total / 60:.1f} min.", "",
             f"Domain {args.domain}; stand-in with {args.train_years} training year(s) per period and "
             f"{args.test_years} test years per period (file names keep the real periods); "
             f"DeepESD {args.epochs_deepesd} epochs, {zoo} {args.epochs_zoo} epochs of {args.samples_per_epoch} random "
             "training days, one network per variable, each a run of the run store (`engine runs`, the dashboard's "
             "run list); the epoch kept is the one with the lowest loss on held-out training days (every 10th 30-day "
             f"block); {zoo} learns tasmax as the correction of the interpolated 850 hPa temperature "
             "(`MLBenchConfig.residual`) and sees the predictors interpolated to the target's 8 x 8 block centres "
             "(`engine.mlbench.interp.PredictorAlignment`); DeepESD learns the target itself from the predictors as "
             "published. Scoring: grouped by truth file, "
             f"{args.workers} process(es) through dask. Imperfect (GCM) predictors: "
             + ("as the benchmark's scripts, standardised with the training statistics only."
                if args.predictor_adjustment == "none" else
                f"`{args.predictor_adjustment}` bias adjustment onto the perfect predictors' 1981-2000 moments "
                "(`engine.mlbench.adjust`), for the models and the baselines alike (`interpolation+...` rows)."),
             "", "## Targets", ""]
    for text, ok, detail in checks:
        lines.append(f"- [{'x' if ok else ' '}] {text} {('(' + detail + ')') if detail else ''}")
    if len(choice) > 1:
        lines += ["", "## Choosing the zoo model", "",
                  f"Each candidate trained on {EXPERIMENTS[0]} ({args.epochs_zoo} epochs of {args.samples_per_epoch} "
                  "days); held-out RMSE of its best epoch on the held-out training days; score = mean over variables "
                  "of RMSE / the best candidate's (`choose_zoo`). The first row goes on to both experiments.", "",
                  "| candidate | " + " | ".join(choice.columns) + " |", "|---" * (len(choice.columns) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(f"{v:.3f}" if k != "train_seconds" else f"{v:.0f}" for k, v in r.items()) + " |"
                  for m, r in choice.iterrows()]
    lines += ["", "## Timings (s)", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    lines += ["", "## Scorecard (lower is better everywhere; all columns in the CSV)", ""]
    cols = ["model", "experiment", "test", "period"] + [c for c in SHOWN if c in table]
    shown = table[cols].copy()
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in shown.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domain", default="ALPS")
    p.add_argument("--zoo", default=",".join(ZOO_CANDIDATES),
                   help="zoo model preset or backbone:upsampling; several, comma-separated: the one with the lowest "
                        "held-out error on the ESD experiment goes on (default: %(default)s)")
    p.add_argument("--train-years", type=int, default=2)
    p.add_argument("--test-years", type=int, default=1)
    p.add_argument("--epochs-deepesd", type=int, default=30)
    p.add_argument("--epochs-zoo", type=int, default=16)
    p.add_argument("--samples-per-epoch", type=int, default=512,
                   help="random training days per epoch (the same budget for both experiments)")
    p.add_argument("--predictor-adjustment", default="mean_variance", choices=ADJUSTMENTS,
                   help="bias adjustment of the GCM (imperfect) predictors for the models and the baselines alike "
                        "(engine.mlbench.adjust); none: the benchmark scripts' plain standardisation")
    p.add_argument("--work", default=None, help="folder for the stand-in and runs (default: a temporary one)")
    p.add_argument("--out", default=str(RESULTS / "mlbench.md"))
    p.add_argument("--reuse", action="store_true", help="reuse a stand-in already in --work (no timing of its generation)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="scoring processes (default: one per CPU)")
    args = p.parse_args(argv)

    start = time.perf_counter()
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        t = time.perf_counter()
        root = work / "archive" / f"{args.domain}_domain"
        if not (args.reuse and (root / "test").is_dir()):
            root = generate_standin(args.domain, work / "archive", train_years=args.train_years,
                                    test_years=args.test_years)
        timings["generate the stand-in"] = time.perf_counter() - t

        def run(model, epochs, exp):
            t = time.perf_counter()
            cfg = MLBenchConfig(domain=args.domain, experiment=exp, model=model, epochs=epochs, root=str(root),
                                samples_per_epoch=args.samples_per_epoch,
                                predictor_adjustment=args.predictor_adjustment)
            path = train(cfg, work / "runs", log=lambda s: print(s, flush=True))
            timings[f"train + predict {model} {exp}"] = time.perf_counter() - t
            sec = json.loads((path / "mlbench.json").read_text())["seconds"]
            timings["... of which predicting the test files (all runs)"] = timings.get(
                "... of which predicting the test files (all runs)", 0.0) + sec["predict"]
            return path

        # the zoo model: the candidate with the lowest held-out error on the ESD experiment's
        # training days (never on a test set); its ESD run is kept
        candidates = [c.strip() for c in args.zoo.split(",") if c.strip()]
        esd = {c: run(c, args.epochs_zoo, EXPERIMENTS[0]) for c in candidates}
        choice = choose_zoo(esd)
        zoo = choice.index[0]
        runs = [run("deepesd", args.epochs_deepesd, exp) for exp in EXPERIMENTS]
        runs += [esd[zoo]] + [run(zoo, args.epochs_zoo, exp) for exp in EXPERIMENTS[1:]]
        t = time.perf_counter()
        table = scorecard(runs, all_tests=True, log=lambda s: print(s, flush=True), workers=args.workers)
        timings["score (runs + baselines, all test sets)"] = time.perf_counter() - t
    total = time.perf_counter() - start
    timings["total"] = total
    checks = check_targets(table, ["deepesd", zoo], args.predictor_adjustment)
    checks.append((f"full run within 30 minutes", total <= 1800, f"{total / 60:.1f} min"))
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.precision", 3):
        print(table[["model", "experiment", "test", "period"] + [c for c in SHOWN if c in table]])
    for text, ok, detail in checks:
        print(("PASS " if ok else "MISS ") + text, detail)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(table, checks, timings, args, total, choice))
    table.to_csv(out.with_name("mlbench_scorecard.csv"), index=False, float_format="%.6g")
    (out.with_name("mlbench_timings.json")).write_text(json.dumps(timings, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
