"""The model-zoo benchmark: DL4DS's comparison table, trained with the real trainer.

``python -m benchmarks.zoo`` trains DL4DS's full factorial design (Gonzalez-Abad et al.'s
comparison table): downscaling (PerfectProg or MOS) x learning (supervised or adversarial) x
backbone (resnet / unet / convnext) x upsampling (spc / pin) x LCB (off / on) x loss (mae /
dssim+mae), generated in code (:func:`factorial`), for a small fixed screening budget per data set:

- ``demo``: the embedded demo (``demo_alps``, daily t2m over the Alps, x4 PerfectProg),
- ``mos``: the same target from the demo's coarse "GCM" (``demo_alps_gcm``, x4 MOS), the demo's
  MOS partner,
- ``era5``: ERA5 UK (``era5_uk_t2m``, hourly t2m, March 2019, x4 PerfectProg, bbox
  (50.25, 58.0, -10.0, 1.75) so the 32 x 48 grid divides by 4; elevation + land mask static).
  ERA5 UK has no coarse model partner in the catalogue, so it has no MOS cells.

Combinations that :meth:`engine.config.ExperimentConfig.validate` refuses (U-Net runs at high
resolution and takes ``pin`` only) stay in the table as "refused: <message>"; the rule is asked of
the validator, not written here. After the factorial, a short "beyond the grid" list (no static
fields, mae+spectral, swin) runs, then stage 2 ("full budget"): the two best factorial cells of
each data case, chosen by the RMSE ratio on the *validation* period, are retrained for longer
(early stopping on the validation loss) and scored on the test period; where the best of them
still misses RMSE <= 0.5 x bicubic, the best supervised and the best GAN cell (by validation)
are also retrained wider (labelled "wide"). Each case's model is the stage-2 row with the best
validation ratio.

Everything runs through the run store (:class:`engine.runs.RunStore`,
:func:`engine.training.trainer.train`, :func:`engine.inference.predict_run`) and is scored with
:mod:`engine.evaluation.metrics`. Every configuration runs in its own process, so the peak
memory (max RSS) and timings are its own. It prints a Markdown table (parameters, training
samples/s, inference fields/s, peak memory, MAE / RMSE / SSIM / PSNR / Pearson, RMSE ratio to
bicubic), a summary of the factors' effects (paired: cells that differ only in that factor) and
writes it all to ``benchmarks/results/zoo.md``.

It also measures the reference speed: DL4DS's reference configuration (resnet + spc, 8 filters,
4 residual blocks, batch 16, 128 x 128 HR patches, x4, one static field, MAE) with the real
trainer and its default precision / memory format, on a 128 x 128 demo domain (the catalogue's
demo is 64 x 128, too small for 128 x 128 patches). ``--reference-accuracy`` trains that
configuration for the same epochs with our defaults and as a plain float32 NCHW copy, and prints
samples/s and test RMSE of both (speed must not cost skill).

Options: ``--quick`` (a few configurations, tiny budget, a smoke test), ``--only demo,mos,era5``,
``--configs`` (comma-separated labels), ``--epochs``, ``--samples`` (per epoch, screening),
``--stage2-epochs``, ``--stage2-samples``, ``--stage2-patience``, ``--no-stage2``, ``--no-wide``,
``--no-extras``, ``--speed-only``, ``--list`` (the cells and the validator's verdicts, no training),
``--reuse-screening`` (screening rows from ``benchmarks/results/zoo.json``, written by every run;
stage 2 only), ``--reference-accuracy`` (see above).
``ZOO_THREADS`` sets the torch threads of each configuration's process. The table is rewritten after
every configuration, so an interrupted run leaves what finished (rows still to run say so).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

DATA = {
    "demo": {"highres": "demo_alps", "variable": "t2m", "scale": 4, "patch_size": 64},
    "mos": {"highres": "demo_alps", "variable": "t2m", "scale": 4, "patch_size": 64,
            "downscaling": "mos", "lowres": "demo_alps_gcm"},
    "era5": {"highres": "era5_uk_t2m", "variable": "t2m", "scale": 4, "patch_size": None,
             "bbox": [50.25, 58.0, -10.0, 1.75], "static": ["elevation", "land_mask"],
             "train_period": ["2019-03-01", "2019-03-21"], "val_period": ["2019-03-22", "2019-03-25"],
             "test_period": ["2019-03-26", "2019-03-31T23:00"]},
}
DOWNSCALING = {"demo": "PerfectProg", "mos": "MOS", "era5": "PerfectProg"}

# The factors of DL4DS's table, in label order. Widths are modest so that the whole factorial
# fits a laptop budget: post-upsampling (spc) networks run at LR with 32 filters; pre-upsampling
# (pin) ones run at HR, 16x the pixels, so with 16 filters; U-Net has 2 levels.
LEARNING = ("supervised", "gan")
BACKBONES = ("resnet", "unet", "convnext")
UPSAMPLING = ("spc", "pin")
LCB = (False, True)
LOSSES = ("mae", "dssim+mae")
BACKBONE_MODEL = {"resnet": {"blocks": 4}, "unet": {"blocks": 2}, "convnext": {"blocks": 4, "normalization": "layer"}}
UPSAMPLING_MODEL = {"spc": {"filters": 32}, "pin": {"filters": 16}}
GAN = {"learning": "gan", "gan_pixel_weight": 100.0}
WIDE = {"filters": 64, "blocks": 6}  # stage 2's wider networks, only where the target is missed
WIDE_TAG = " wide(64 filters, 6 blocks)"


def label_of(backbone: str, upsampling: str, loss: str, lcb: bool, learning: str) -> str:
    """``resnet-spc-mae +LCB GAN``: backbone-upsampling-loss, then +LCB, then GAN."""
    return f"{backbone}-{upsampling}-{loss}" + (" +LCB" if lcb else "") + (" GAN" if learning == "gan" else "")


def _cell(label: str, backbone: str, upsampling: str, loss: str, lcb: bool, learning: str, data: dict | None = None,
          **factors) -> dict:
    model = {"backbone": backbone, "upsampling": upsampling, "lcb": lcb,
             **BACKBONE_MODEL[backbone], **UPSAMPLING_MODEL[upsampling]}
    training = {"loss": loss, **(GAN if learning == "gan" else {})}
    return {"label": label, "model": model, "training": training, "data": data or {},
            "factors": {**{"backbone": backbone, "upsampling": upsampling, "loss": loss, "lcb": lcb,
                           "learning": learning, "static": True}, **factors}}


def factorial() -> list[dict]:
    """DL4DS's design for one data case (the downscaling type is the case): 2 x 3 x 2 x 2 x 2 = 48 cells."""
    return [_cell(label_of(b, u, loss, lcb, learn), b, u, loss, lcb, learn)
            for learn, b, u, lcb, loss in itertools.product(LEARNING, BACKBONES, UPSAMPLING, LCB, LOSSES)]


def extras() -> list[dict]:
    """Rows beyond DL4DS's grid: static fields off (paired with factorial cells), mae+spectral, swin."""
    return [
        _cell("resnet-spc-mae no-static", "resnet", "spc", "mae", False, "supervised", {"static": []}, static=False),
        _cell("resnet-spc-mae +LCB no-static", "resnet", "spc", "mae", True, "supervised", {"static": []}, static=False),
        _cell("resnet-spc-mae+spectral", "resnet", "spc", "mae+spectral", False, "supervised"),
        {**(swin := _cell("swin-spc-mae", "resnet", "spc", "mae", False, "supervised")),
         "model": {"backbone": "swin", "upsampling": "spc", "filters": 32, "blocks": 2, "lcb": False},
         "factors": {**swin["factors"], "backbone": "swin"}},
    ]


def cells(case: str) -> list[dict]:
    """The factorial then the extras for ``case``; each cell carries ``refused`` (the validator's
    message, or None) and ``group`` ("factorial" / "beyond")."""
    from engine.config import ConfigError

    out = []
    for group, items in (("factorial", factorial()), ("beyond", extras())):
        for cell in items:
            try:
                experiment(case, cell["label"], 1, 16)
                refused = None
            except ConfigError as err:
                refused = str(err)
            out.append({**cell, "group": group, "refused": refused})
    return out


def shorten(message: str, width: int = 110) -> str:
    """The validator's message, shortened for a table cell (no pipes)."""
    message = message.replace("|", "/").replace("\n", " ")
    return message if len(message) <= width else message[: width - 3].rstrip() + "..."


def seed_era5_cache() -> None:
    """Copy the shared ERA5 sample into the download cache (offline machines, CI)."""
    from engine.data.catalog import tutorial_cache_path

    target = tutorial_cache_path("era5-2mt-2019-03-uk.grib")
    source = SHARED_DATA / "era5-2mt-2019-03-uk.grib"
    if not target.exists() and source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)


def experiment(case: str, label: str, epochs: int, samples: int, patience: int | None = None):
    """The validated configuration of ``label`` (a factorial or extra cell, optionally ending in
    the stage-2 wide tag) on data ``case``; raises :class:`engine.config.ConfigError` if refused."""
    from engine.config import ExperimentConfig

    wide = label.endswith(WIDE_TAG)
    base = label[: -len(WIDE_TAG)] if wide else label
    cell = next((c for c in factorial() + extras() if c["label"] == base), None)
    if cell is None:
        raise SystemExit(f"unknown configuration {label!r}; accepted: "
                         + ", ".join(c["label"] for c in factorial() + extras()))
    return ExperimentConfig(name=f"zoo-{case}").replace(
        data={**DATA[case], **cell["data"]},
        model={**cell["model"], **(WIDE if wide else {})},
        training={"epochs": epochs, "samples_per_epoch": samples, "batch_size": 16,
                  "patience": patience or epochs, **cell["training"]},
        launch={"launcher": "inline"},
    ).validate()


def run_one(case: str, label: str, epochs: int, samples: int, patience: int | None = None) -> dict:
    """Train, predict and score one configuration (in this process); return a table row."""
    import resource

    import numpy as np
    import torch

    from engine.evaluation import metrics as M
    from engine.inference import predict_run
    from engine.runs import RunStore
    from engine.training.trainer import train

    torch.set_num_threads(int(os.environ.get("ZOO_THREADS", torch.get_num_threads())))
    seed_era5_cache()
    cfg = experiment(case, label, epochs, samples, patience)
    with tempfile.TemporaryDirectory() as root:
        run = RunStore(root).create(cfg)
        start = time.perf_counter()
        train(run)
        train_seconds = time.perf_counter() - start
        epochs_run = run.epochs()
        timed = epochs_run[1:] or epochs_run  # the first epoch warms up
        start = time.perf_counter()
        ds = predict_run(run, "test")
        fields_per_s = ds.sizes["time"] / (time.perf_counter() - start)
        parameters = run.status().get("parameters")
        # Stage 2 picks configurations by the validation period's scores, never the test period's.
        val = predict_run(run, "val")
        val_mask = val["mask"] > 0
        val_rmse = float(M.rmse(val["model"], val["truth"], mask=val_mask))
        val_ratio = val_rmse / float(M.rmse(val["bicubic"], val["truth"], mask=val_mask))
    mask = ds["mask"] > 0
    row = {"case": case, "config": label, "parameters": parameters,
           "train_samples_per_s": float(np.mean([e["samples_per_s"] for e in timed])),
           "inference_fields_per_s": fields_per_s, "train_seconds": train_seconds,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "epochs_run": len(epochs_run), "val_rmse": val_rmse, "val_rmse_ratio": val_ratio}
    for who in ("model", "bicubic"):
        for name in ("mae", "rmse", "ssim", "psnr", "pearson"):
            row[f"{who}_{name}"] = float(getattr(M, name)(ds[who], ds["truth"], mask=mask))
    row["rmse_ratio"] = row["model_rmse"] / row["bicubic_rmse"]
    return row


def reference_speed(epochs: int = 3, samples: int = 512, filters: int = 8, precision: str | None = None,
                    channels_last: bool | None = None) -> dict:
    """Samples/s and test RMSE of DL4DS's reference configuration with the real trainer, by default
    with its default precision and memory format (``precision`` / ``channels_last`` override them).
    ``filters=24`` gives ~89k parameters, the size of DL4DS's own resnet+spc (its blocks grow in
    width), for a like-for-like comparison with DL4DS's 74-80 samples/s."""
    import numpy as np

    from engine.evaluation import metrics as M
    from engine.inference import predict_run

    from engine.config import ExperimentConfig
    from engine.data.demo import make_demo
    from engine.runs import RunStore
    from engine.training.trainer import train

    with tempfile.TemporaryDirectory() as root:
        # The catalogue demo (64 x 128) cannot hold 128 x 128 patches: write a 128 x 128 demo
        # domain and a one-entry catalogue for it, so the real data path runs unchanged.
        hr, _ = make_demo(n_lat=128, n_lon=128, start="2001-01-01", end="2002-06-30", seed=0)
        hr.to_netcdf(f"{root}/demo128.nc")
        with open(f"{root}/catalog.yaml", "w") as fh:
            fh.write("sources:\n  demo128:\n    driver: netcdf\n    args:\n"
                     f"      urlpath: {root}/demo128.nc\n      xarray_kwargs: {{engine: netcdf4}}\n"
                     "    metadata: {role: highres}\n")
        cfg = ExperimentConfig(name="zoo-speed").replace(
            data={"highres": "demo128", "catalog": f"{root}/catalog.yaml", "scale": 4, "patch_size": 128,
                  "static": ["elevation"], "train_period": ["2001-01-01", "2001-12-31"],
                  "val_period": ["2002-01-01", "2002-01-31"], "test_period": ["2002-02-01", "2002-06-30"]},
            model={"backbone": "resnet", "upsampling": "spc", "filters": filters, "blocks": 4},
            training={"epochs": epochs + 1, "samples_per_epoch": samples, "batch_size": 16, "loss": "mae",
                      "patience": 100},
            launch={"launcher": "inline"},
        )
        overrides = {k: v for k, v in (("precision", precision), ("channels_last", channels_last)) if v is not None}
        cfg = cfg.replace(training=overrides).validate()
        run = RunStore(f"{root}/runs").create(cfg)
        train(run)
        timed = run.epochs()[1:]
        ds = predict_run(run, "test")
        return {"samples_per_s": float(np.mean([e["samples_per_s"] for e in timed])),
                "data_wait": float(np.mean([e["data_wait_fraction"] for e in timed])),
                "parameters": run.status()["parameters"], "filters": filters, "precision": cfg.training.precision,
                "channels_last": cfg.training.channels_last, "epochs": epochs + 1,
                "test_rmse": float(M.rmse(ds["model"], ds["truth"], mask=ds["mask"] > 0))}


def reference_accuracy(epochs: int, filters: int) -> list[dict]:
    """The reference configuration trained for the same epochs with our defaults and as the plain
    float32 NCHW copy (what the issue's "straightforward PyTorch copy" is), each in its own
    process: samples/s and test RMSE of both, so that speed is never bought with skill."""
    rows = []
    for label, extra in (("defaults", []), ("float32 NCHW", ["--ref-precision", "32-true", "--ref-nchw"])):
        rows.append({"settings": label, **_subprocess(["--speed", "--ref-filters", str(filters),
                                                       "--ref-epochs", str(epochs), *extra])})
    return rows


def head_ab(repeats: int = 5, steps: int = 8) -> list[dict]:
    """Step speed of the reference network (resnet+spc, 8 filters, 4 blocks, batch 16, 128x128,
    x4, one static field, MAE) in variants, interleaved in one process so that the ratios hold on
    a shared machine: our fused HR head vs DL4DS's head (two conv blocks on the static field,
    concat + 1x1 fusion, activation after the last pixel shuffle), in float32 NCHW,
    channels-last, and channels-last + bf16 autocast (the trainer's default)."""
    import statistics

    import torch
    from torch import nn

    from engine.config import ModelConfig
    from engine.models import build_model
    from engine.models.layers import ConvBlock, activation
    from engine.training.losses import mae

    class DL4DSFusion(nn.Module):
        def __init__(self, static_channels: int, features: int):
            super().__init__()
            self.static_block = nn.Sequential(ConvBlock(static_channels, features), ConvBlock(features, features))
            self.fusion = nn.Sequential(nn.Conv2d(2 * features, features, 1), activation("relu"))

        def forward(self, features, static_hr):
            return self.fusion(torch.cat([features, self.static_block(static_hr)], dim=1))

    def network(head: str):
        torch.manual_seed(0)
        net = build_model(ModelConfig(backbone="resnet", upsampling="spc", filters=8, blocks=4), 2, 1, 4)
        if head == "dl4ds":
            net.fusion = DL4DSFusion(1, 8)
            net.upsample.body.append(activation("relu"))
        return net

    g = torch.Generator().manual_seed(0)
    data = [torch.randn(16, 2, 32, 32, generator=g), torch.randn(16, 1, 128, 128, generator=g),
            torch.randn(16, 1, 128, 128, generator=g), torch.ones(16, 1, 128, 128)]
    variants = {}
    for head in ("dl4ds", "finescale"):
        for fmt in ("fp32 NCHW", "channels-last", "channels-last+bf16"):
            cl = fmt != "fp32 NCHW"
            net = network(head)
            tensors = [t.contiguous(memory_format=torch.channels_last) if cl else t for t in data]
            if cl:
                net = net.to(memory_format=torch.channels_last)
            variants[(head, fmt)] = (net, torch.optim.Adam(net.parameters(), 1e-3), tensors, fmt.endswith("bf16"))

    def run(key) -> float:
        net, opt, (x, s, y, m), bf16 = variants[key]
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                pred = net(x, s)
            loss = mae(pred.float(), y, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return 16 * steps / (time.perf_counter() - start)

    for key in variants:  # warm-up (allocator, oneDNN primitive caches)
        run(key)
    rates = {key: [] for key in variants}
    for _ in range(repeats):
        for key in variants:
            rates[key].append(run(key))
    best = statistics.median(rates[("finescale", "channels-last+bf16")])
    return [{"head": h, "format": f, "parameters": sum(p.numel() for p in variants[(h, f)][0].parameters()),
             "samples_per_s": statistics.median(r), "ratio": statistics.median(r) / best}
            for (h, f), r in rates.items()]


QUICK = ["resnet-spc-mae", "resnet-spc-mae +LCB", "unet-spc-mae", "unet-pin-mae", "resnet-spc-mae GAN",
         "resnet-spc-mae no-static"]
TARGET = 0.5  # the skill target: best RMSE / bicubic RMSE on the test period


def _subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.zoo", *args], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:300]}
    return json.loads(lines[-1][4:])


HEADER = ("| data | configuration | params | epochs | train samples/s | inference fields/s | peak MB | MAE | RMSE | SSIM | "
          "PSNR | Pearson | RMSE / bicubic | val RMSE / bicubic |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def _row(r: dict) -> str:
    case = f"{r['case']} ({DOWNSCALING.get(r['case'], '?')})"
    if r.get("refused"):
        return f"| {case} | {r['config']} | refused: {shorten(r['refused'])} ||||||||||||"
    if "error" in r:
        return f"| {case} | {r['config']} | not run: {shorten(r['error'])} ||||||||||||"
    if "rmse_ratio" not in r:
        return f"| {case} | {r['config']} | not run (out of time) ||||||||||||"
    return (f"| {case} | {r['config']} | {r['parameters']:,} | {r['epochs_run']} | {r['train_samples_per_s']:.0f} | "
            f"{r['inference_fields_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['model_mae']:.3f} | "
            f"{r['model_rmse']:.3f} | {r['model_ssim']:.3f} | {r['model_psnr']:.1f} | "
            f"{r['model_pearson']:.3f} | **{r['rmse_ratio']:.2f}** | {r['val_rmse_ratio']:.2f} |")


def _rows_table(rows: list[dict]) -> list[str]:
    out = [HEADER]
    for case in dict.fromkeys(r["case"] for r in rows):
        out += [_row(r) for r in rows if r["case"] == case]
        b = next((r for r in rows if r["case"] == case and "bicubic_rmse" in r), None)
        if b:
            out.append(f"| {case} ({DOWNSCALING.get(case, '?')}) | bicubic | 0 | | | | | {b['bicubic_mae']:.3f} | "
                       f"{b['bicubic_rmse']:.3f} | {b['bicubic_ssim']:.3f} | {b['bicubic_psnr']:.1f} | "
                       f"{b['bicubic_pearson']:.3f} | 1.00 | 1.00 |")
    return out


def done(r: dict) -> bool:
    return "rmse_ratio" in r


# (factor, level A, level B): the summary compares B with A over pairs of cells that differ only there.
EFFECTS = [("lcb", False, True, "LCB on vs off"), ("static", False, True, "static fields vs none"),
           ("learning", "supervised", "gan", "GAN vs supervised"), ("loss", "mae", "dssim+mae", "dssim+mae vs mae"),
           ("upsampling", "spc", "pin", "pin vs spc")]


def effects(rows: list[dict]) -> list[dict]:
    """Paired effects per case: for every pair of trained cells identical but for one factor, the
    mean RMSE ratio at each level and how often level B beats level A. Static fields are not a
    factor of DL4DS's design: their pairs are the no-static rows beyond the grid and their factorial
    partners; every other effect is computed from the factorial alone."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        for factor, a, b, name in EFFECTS:
            trained = [r for r in rows if r["case"] == case and done(r) and r.get("factors")
                       and (factor == "static" or r.get("group") == "factorial")]
            pairs = []
            for r in trained:
                if r["factors"][factor] != a:
                    continue
                partner = {**r["factors"], factor: b}
                match = next((q for q in trained if q["factors"] == partner), None)
                if match:
                    pairs.append((r["rmse_ratio"], match["rmse_ratio"]))
            if pairs:
                out.append({"case": case, "effect": name, "pairs": len(pairs),
                            "mean_a": statistics.mean(p[0] for p in pairs), "mean_b": statistics.mean(p[1] for p in pairs),
                            "b_better": sum(p[1] < p[0] for p in pairs)})
    return out


def table(rows: list[dict], speed: dict | None, budget: str, stage2: list[dict] | None = None,
          stage2_budget: str = "") -> str:
    out = []
    if speed:
        if "error" in speed:
            out.append(f"Reference speed (resnet+spc, 4 blocks, batch 16, 128x128, x4): not run: {speed['error']}\n")
        else:
            out.append(f"Reference speed, DL4DS configuration (resnet+spc, {speed['parameters']:,} parameters, {speed['filters']} filters, "
                       f"4 blocks, batch 16, 128x128 HR patches, x4, one static field, MAE) with the real trainer, "
                       f"{speed['precision']}, channels_last={speed['channels_last']}: "
                       f"**{speed['samples_per_s']:.0f} samples/s** (data wait {100 * speed['data_wait']:.0f} %).\n")
    if not rows:
        return "\n".join(out) + "\n"
    grid = [r for r in rows if r.get("group") == "factorial"]
    beyond = [r for r in rows if r.get("group") == "beyond"]
    out.append(f"## Screening: DL4DS's factorial design ({budget})\n")
    out.append("Downscaling (PerfectProg: `demo`, `era5`; MOS: `mos`, the demo target from the demo's coarse GCM) x "
               "learning (supervised, GAN) x backbone (resnet, unet, convnext) x upsampling (spc, pin) x LCB (off, on) x "
               "loss (mae, dssim+mae): 48 cells per data case. ERA5 UK has no coarse-model (MOS) partner in the "
               "catalogue, so ERA5 has PerfectProg cells only. Widths: spc networks 32 filters (at LR), pin networks "
               "16 filters (at HR, 16x the pixels), resnet/convnext 4 blocks, U-Net 2 levels; static fields "
               "(elevation, land mask) on. Cells the configuration validator refuses are listed with its message. "
               "Scores on the test period; RMSE ratio = model RMSE / bicubic RMSE (lower is better); the validation "
               "ratio is what stage 2 selects by.\n")
    out += _rows_table(grid)
    for case in dict.fromkeys(r["case"] for r in grid):
        trained = [r for r in grid if r["case"] == case and done(r)]
        refused = sum(1 for r in grid if r["case"] == case and r.get("refused"))
        missing = sum(1 for r in grid if r["case"] == case and not done(r) and not r.get("refused"))
        if trained:
            best = min(trained, key=lambda r: r["rmse_ratio"])
            out.append(f"\n{case}: {len(trained)} cells trained, {refused} refused, {missing} not run; "
                       f"best at screening **{best['rmse_ratio']:.2f}** x bicubic ({best['config']}).")
    eff = effects(rows)
    if eff:
        out.append("\n### Effects of the factors (screening budget)\n")
        out.append("Mean RMSE / bicubic over pairs of trained cells that differ only in the factor (static fields: "
                   "the no-static rows beyond the grid against their factorial partners); \"B better\" counts pairs "
                   "where the second level has the lower ratio.\n")
        out.append("| data | effect (B vs A) | pairs | mean ratio A | mean ratio B | B - A | B better |\n"
                   "|---|---|---:|---:|---:|---:|---:|")
        for e in eff:
            out.append(f"| {e['case']} | {e['effect']} | {e['pairs']} | {e['mean_a']:.3f} | {e['mean_b']:.3f} | "
                       f"{e['mean_b'] - e['mean_a']:+.3f} | {e['b_better']}/{e['pairs']} |")
    if beyond:
        out.append(f"\n## Beyond the grid ({budget})\n")
        out.append("No static fields (paired with the factorial's resnet-spc-mae and resnet-spc-mae +LCB), the "
                   "mae+spectral loss, and a SwinIR-style backbone (2 stages, 32 filters).\n")
        out += _rows_table(beyond)
    if stage2 is not None:
        out.append(f"\n## Stage 2: full budget ({stage2_budget})\n")
        out.append("The two best factorial cells of each data case by the *validation* RMSE ratio at screening, "
                   "retrained with early stopping on the validation loss (the best checkpoint predicts). Where the "
                   f"validation-chosen of them still misses RMSE <= {TARGET} x bicubic on the test period, the best "
                   f"supervised and the best GAN cell (by validation) are also retrained wider (\"{WIDE_TAG.strip()}\"). "
                   "The case's model is the stage-2 row with the best validation ratio (the test period chooses "
                   "nothing; it only decides whether wider networks are tried).\n")
        out += _rows_table(stage2)
        out.append("")
        for line in target_lines(stage2):
            out.append(f"- {line}")
    return "\n".join(out) + "\n"


def chosen(rows: list[dict]) -> dict | None:
    """The row with the best validation RMSE ratio (selection never looks at the test period)."""
    trained = [r for r in rows if done(r)]
    return min(trained, key=lambda r: r["val_rmse_ratio"]) if trained else None


def target_lines(stage2: list[dict]) -> list[str]:
    lines = []
    for case in dict.fromkeys(r["case"] for r in stage2):
        pick = chosen([r for r in stage2 if r["case"] == case])
        if pick is None:
            lines.append(f"{case}: target best RMSE/bicubic <= {TARGET}: not run")
            continue
        verdict = "met" if pick["rmse_ratio"] <= TARGET else "MISSED"
        best_test = min(r["rmse_ratio"] for r in stage2 if r["case"] == case and done(r))
        lines.append(f"{case}: target best RMSE/bicubic <= {TARGET}: {verdict} ({pick['rmse_ratio']:.3f}, "
                     f"{pick['config']}, chosen by validation; lowest test ratio of stage 2: {best_test:.3f})")
    return lines


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few configurations, tiny budget (smoke test)")
    parser.add_argument("--only", default="demo,mos,era5", help="comma-separated data cases")
    parser.add_argument("--configs", default=None, help="comma-separated configuration labels (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="screening epochs")
    parser.add_argument("--samples", type=int, default=None, help="screening samples per epoch")
    parser.add_argument("--stage2-epochs", type=int, default=None, help="stage-2 epochs (early stopping)")
    parser.add_argument("--stage2-samples", type=int, default=None, help="stage-2 samples per epoch")
    parser.add_argument("--stage2-patience", type=int, default=10)
    parser.add_argument("--no-stage2", action="store_true", help="screening only")
    parser.add_argument("--no-wide", action="store_true", help="stage 2 never retrains a wider network")
    parser.add_argument("--no-extras", action="store_true", help="skip the rows beyond DL4DS's grid")
    parser.add_argument("--reuse-screening", action="store_true",
                        help="take the screening rows from benchmarks/results/zoo.json (a previous run) and run stage 2 only")
    parser.add_argument("--list", action="store_true", help="print the cells and whether the validator refuses them")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--ref-filters", type=int, default=8,
                        help="filters of the reference speed network (24 ~ DL4DS's 89k parameters)")
    parser.add_argument("--head-ab", action="store_true",
                        help="step speed of our HR head vs DL4DS's, fp32/channels-last/bf16, interleaved")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: case|label|epochs|samples[|patience]
    parser.add_argument("--speed", action="store_true", help=argparse.SUPPRESS)  # internal
    parser.add_argument("--reference-accuracy", action="store_true",
                        help="reference configuration with our defaults vs float32 NCHW: samples/s and test RMSE")
    parser.add_argument("--ref-epochs", type=int, default=None, help="epochs of the reference runs (after warm-up)")
    parser.add_argument("--ref-precision", default=None, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--ref-nchw", action="store_true", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)

    if args.one:
        case, label, epochs, samples, *patience = args.one.split("|")
        print("ROW " + json.dumps(run_one(case, label, int(epochs), int(samples),
                                          int(patience[0]) if patience else None)), flush=True)
        return
    if args.speed:
        epochs = args.ref_epochs or (2 if args.quick else 3)
        print("ROW " + json.dumps(reference_speed(epochs, filters=args.ref_filters, precision=args.ref_precision,
                                                  channels_last=False if args.ref_nchw else None)), flush=True)
        return
    if args.reference_accuracy:
        rows = reference_accuracy(args.ref_epochs or 6, args.ref_filters)
        print(f"DL4DS reference configuration ({args.ref_filters} filters, 4 blocks, batch 16, 128x128 HR patches, x4, "
              f"one static field, MAE), {rows[0].get('epochs', '?')} epochs x 512 samples each, same seed, "
              f"{torch_threads()} threads\n")
        print("| settings | precision | channels-last | train samples/s | test RMSE (K) |\n|---|---|---|---:|---:|")
        for r in rows:
            if "error" in r:
                print(f"| {r['settings']} | not run: {r['error']} ||||")
                continue
            print(f"| {r['settings']} | {r['precision']} | {r['channels_last']} | {r['samples_per_s']:.0f} | "
                  f"{r['test_rmse']:.3f} |")
        if all("error" not in r for r in rows):
            a, b = rows
            print(f"\nspeed ratio {a['samples_per_s'] / b['samples_per_s']:.2f}x; "
                  f"test RMSE ratio {a['test_rmse'] / b['test_rmse']:.3f} (defaults / float32)")
        return
    cases = args.only.split(",")
    if args.list:
        for case in cases:
            for c in cells(case):
                print(f"{case}\t{c['group']}\t{c['label']}\t{'refused: ' + shorten(c['refused']) if c['refused'] else 'ok'}")
        return

    if args.head_ab:
        print(f"Reference network step speed (bare loop, batch 16, 128x128 HR, x4), {torch_threads()} threads, "
              "medians of interleaved repeats\n")
        print("| head | format | params | samples/s | ratio to default |\n|---|---|---:|---:|---:|")
        for r in head_ab():
            print(f"| {r['head']} | {r['format']} | {r['parameters']:,} | {r['samples_per_s']:.0f} | {r['ratio']:.2f} |")
        return
    epochs = args.epochs or (2 if args.quick else 3)
    samples = args.samples or (128 if args.quick else 384)
    epochs2 = args.stage2_epochs or (3 if args.quick else 30)
    samples2 = args.stage2_samples or (128 if args.quick else 1024)
    wall = time.perf_counter()
    speed = _subprocess(["--speed", "--ref-filters", str(args.ref_filters)] + (["--quick"] if args.quick else []))
    print(table([], speed, ""), flush=True)
    budget = (f"{epochs} epochs x {samples} samples per configuration (demo/mos: 64x64 HR patches; ERA5: the full "
              f"32x48 domain), batch 16, Adam, {os.environ.get('ZOO_THREADS', 'all')} CPU thread(s)")
    budget2 = (f"up to {epochs2} epochs x {samples2} samples, patience {args.stage2_patience}, batch 16, "
               f"{os.environ.get('ZOO_THREADS', 'all')} CPU thread(s)")
    wanted = set(args.configs.split(",")) if args.configs else (set(QUICK) if args.quick else None)
    if args.quick:
        cases = [c for c in cases if c != "mos"]
    rows: list[dict] = []
    stage2: list[dict] | None = None if args.no_stage2 else []

    previous = json.loads((RESULTS / "zoo.json").read_text()) if args.reuse_screening else None
    if previous:
        budget = previous["budget"]

    def write() -> None:
        text = table(rows, speed, budget, stage2, budget2)
        RESULTS.mkdir(exist_ok=True)
        # The rows as data, so that stage 2 can be rerun on this screening (--reuse-screening).
        (RESULTS / "zoo.json").write_text(json.dumps({"budget": budget, "stage2_budget": budget2, "speed": speed,
                                                      "rows": rows, "stage2": stage2}, indent=1))
        minutes = (time.perf_counter() - wall) / 60
        (RESULTS / "zoo.md").write_text(f"# Model zoo benchmark ({time.strftime('%Y-%m-%d %H:%M')}, "
                                        f"{minutes:.0f} min wall-clock)\n\nCommand: `ZOO_THREADS={os.environ.get('ZOO_THREADS', '')} "
                                        f"python -m benchmarks.zoo {' '.join(argv if argv is not None else sys.argv[1:])}`"
                                        f"\n\n{text}")

    def train_row(case: str, label: str, e: int, n: int, patience: int | None = None, **extra) -> dict:
        start = time.perf_counter()
        spec = f"{case}|{label}|{e}|{n}" + (f"|{patience}" if patience else "")
        row = {**extra, "case": case, "config": label, **_subprocess(["--one", spec])}
        status = row.get("error") or f"RMSE ratio {row['rmse_ratio']:.3f} (val {row['val_rmse_ratio']:.3f})"
        print(f"[{time.perf_counter() - start:5.0f} s] {case} {label}: {status}", file=sys.stderr, flush=True)
        return row

    if not args.speed_only:
        for group in ("factorial", "beyond"):
            if group == "beyond" and args.no_extras:
                continue
            for case in cases:
                for c in cells(case):
                    if c["group"] == group and (wanted is None or c["label"] in wanted):
                        rows.append({"case": case, "config": c["label"], "group": group, "factors": c["factors"],
                                     "refused": c["refused"]})
        if previous:
            rows[:] = [r for r in previous["rows"] if r["case"] in cases]
        for row in rows:  # rows are listed first, so a table written midway shows what is still to run
            if row["refused"] or done(row):
                continue
            row.update(train_row(row["case"], row["config"], epochs, samples))
            write()
        if stage2 is not None:
            for case in cases:
                grid = [r for r in rows if r["case"] == case and r["group"] == "factorial" and done(r)]
                for best in sorted(grid, key=lambda r: r["val_rmse_ratio"])[:2]:
                    stage2.append(train_row(case, best["config"], epochs2, samples2, args.stage2_patience,
                                            factors=best["factors"]))
                    write()
                pick = chosen([r for r in stage2 if r["case"] == case])
                if pick and pick["rmse_ratio"] > TARGET and not args.no_wide:
                    for learning in LEARNING:  # the best cell of each learning type, by validation, wider
                        of_kind = [r for r in grid if r["factors"]["learning"] == learning]
                        if of_kind:
                            best = min(of_kind, key=lambda r: r["val_rmse_ratio"])
                            stage2.append(train_row(case, best["config"] + WIDE_TAG, epochs2, samples2,
                                                    args.stage2_patience, factors=best["factors"]))
                            write()
    write()
    print((RESULTS / "zoo.md").read_text())
    print(f"wall-clock {(time.perf_counter() - wall) / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
