"""The model-zoo benchmark: DL4DS's comparison table, trained with the real trainer.

``python -m benchmarks.zoo`` trains a design grid around DL4DS's best configuration (MOS or
PerfectProg, supervised or adversarial, resnet / unet / convnext (+ swin beyond DL4DS), spc or
pin, LCB on or off, mae or dssim+mae, static fields or none) for a fixed budget per data set, on

- ``demo``: the embedded demo (``demo_alps``, daily t2m over the Alps, x4 PerfectProg),
- ``mos``: the same target from the demo's coarse "GCM" (``demo_alps_gcm``, x4 MOS),
- ``era5``: ERA5 UK (``era5_uk_t2m``, hourly t2m, March 2019, x4 PerfectProg, bbox
  (50.25, 58.0, -10.0, 1.75) so the 32 x 48 grid divides by 4; elevation + land mask static),

through the run store (:class:`engine.runs.RunStore`, :func:`engine.training.trainer.train`,
:func:`engine.inference.predict_run`) and scores the test period with
:mod:`engine.evaluation.metrics`. Every configuration runs in its own process, so the peak
memory (max RSS) and timings are its own. It prints a Markdown table (parameters, training
samples/s, inference fields/s, peak memory, MAE / RMSE / SSIM / PSNR / Pearson, RMSE ratio to
bicubic) and writes it to ``benchmarks/results/zoo.md``.

It also measures the reference speed: DL4DS's reference configuration (resnet + spc, 8 filters,
4 residual blocks, batch 16, 128 x 128 HR patches, x4, one static field, MAE) with the real
trainer and its default precision / memory format, on a 128 x 128 demo domain (the catalogue's
demo is 64 x 128, too small for 128 x 128 patches).

Options: ``--quick`` (a few configurations, tiny budget), ``--only demo,mos,era5``,
``--epochs``, ``--samples`` (per epoch), ``--speed-only``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

# (label, model changes, training changes, data changes). The first row is DL4DS's reference design
# (resnet + spc, MAE, static fields at HR); the others change one factor at a time.
BASE_MODEL = {"backbone": "resnet", "upsampling": "spc", "filters": 32, "blocks": 4, "lcb": False}
GAN = {"learning": "gan", "gan_pixel_weight": 100.0}
GRID = [
    ("resnet-spc-mae", {}, {}, {}),
    ("resnet-spc-mae +LCB", {"lcb": True}, {}, {}),
    ("resnet-spc-mae, no static", {}, {}, {"static": []}),
    ("resnet-spc-dssim+mae", {}, {"loss": "dssim+mae"}, {}),
    ("resnet-spc-mae+spectral", {}, {"loss": "mae+spectral"}, {}),
    ("resnet-pin-mae", {"upsampling": "pin", "filters": 16}, {}, {}),
    ("unet-pin-mae", {"backbone": "unet", "upsampling": "pin", "filters": 16, "blocks": 2}, {}, {}),
    ("convnext-spc-mae", {"backbone": "convnext", "normalization": "layer"}, {}, {}),
    ("convnext-pin-mae", {"backbone": "convnext", "upsampling": "pin", "normalization": "layer", "filters": 16}, {}, {}),
    ("swin-spc-mae", {"backbone": "swin", "blocks": 2}, {}, {}),
    ("resnet-spc-mae GAN", {}, GAN, {}),
    ("resnet-spc-mae GAN +LCB", {"lcb": True}, GAN, {}),
]
QUICK = ["resnet-spc-mae", "resnet-spc-mae +LCB", "unet-pin-mae", "resnet-spc-mae GAN"]


def seed_era5_cache() -> None:
    """Copy the shared ERA5 sample into the download cache (offline machines, CI)."""
    from engine.data.catalog import tutorial_cache_path

    target = tutorial_cache_path("era5-2mt-2019-03-uk.grib")
    source = SHARED_DATA / "era5-2mt-2019-03-uk.grib"
    if not target.exists() and source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)


def experiment(case: str, label: str, epochs: int, samples: int):
    from engine.config import ExperimentConfig

    _, model, training, data = next(g for g in GRID if g[0] == label)
    return ExperimentConfig(name=f"zoo-{case}").replace(
        data={**DATA[case], **data},
        model={**BASE_MODEL, **model},
        training={"epochs": epochs, "samples_per_epoch": samples, "batch_size": 16, "patience": epochs,
                  "loss": "mae", **training},
        launch={"launcher": "inline"},
    ).validate()


def run_one(case: str, label: str, epochs: int, samples: int) -> dict:
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
    cfg = experiment(case, label, epochs, samples)
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
    mask = ds["mask"] > 0
    row = {"case": case, "config": label, "parameters": parameters,
           "train_samples_per_s": float(np.mean([e["samples_per_s"] for e in timed])),
           "inference_fields_per_s": fields_per_s, "train_seconds": train_seconds,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for who in ("model", "bicubic"):
        for name in ("mae", "rmse", "ssim", "psnr", "pearson"):
            row[f"{who}_{name}"] = float(getattr(M, name)(ds[who], ds["truth"], mask=mask))
    row["rmse_ratio"] = row["model_rmse"] / row["bicubic_rmse"]
    return row


def reference_speed(epochs: int = 3, samples: int = 512, filters: int = 8) -> dict:
    """Samples/s of DL4DS's reference configuration with the real trainer and its defaults.
    ``filters=24`` gives ~89k parameters, the size of DL4DS's own resnet+spc (its blocks grow in
    width), for a like-for-like comparison with DL4DS's 74-80 samples/s."""
    import numpy as np

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
        ).validate()
        run = RunStore(f"{root}/runs").create(cfg)
        train(run)
        timed = run.epochs()[1:]
        return {"samples_per_s": float(np.mean([e["samples_per_s"] for e in timed])),
                "data_wait": float(np.mean([e["data_wait_fraction"] for e in timed])),
                "parameters": run.status()["parameters"], "filters": filters, "precision": cfg.training.precision,
                "channels_last": cfg.training.channels_last}


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


def _subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.zoo", *args], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:300]}
    return json.loads(lines[-1][4:])


def table(rows: list[dict], speed: dict | None, budget: str) -> str:
    out = []
    if speed:
        if "error" in speed:
            out.append(f"Reference speed (resnet+spc, 4 blocks, batch 16, 128x128, x4): not run: {speed['error']}\n")
        else:
            out.append(f"Reference speed, DL4DS configuration (resnet+spc, {speed['parameters']:,} parameters, {speed['filters']} filters, "
                       f"4 blocks, batch 16, 128x128 HR patches, x4, one static field, MAE) with the real trainer, "
                       f"{speed['precision']}, channels_last={speed['channels_last']}: "
                       f"**{speed['samples_per_s']:.0f} samples/s** (data wait {100 * speed['data_wait']:.0f} %).\n")
    out.append(f"Skill on the test period ({budget}); RMSE ratio = model RMSE / bicubic RMSE (lower is better).\n")
    out.append("| data | configuration | params | train samples/s | inference fields/s | peak MB | MAE | RMSE | SSIM | "
               "PSNR | Pearson | RMSE / bicubic |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in dict.fromkeys(r["case"] for r in rows):
        for r in (r for r in rows if r["case"] == case):
            if "error" in r:
                out.append(f"| {case} | {r['config']} | not run: {r['error']} |||||||||||")
                continue
            out.append(f"| {case} | {r['config']} | {r['parameters']:,} | {r['train_samples_per_s']:.0f} | "
                       f"{r['inference_fields_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['model_mae']:.3f} | "
                       f"{r['model_rmse']:.3f} | {r['model_ssim']:.3f} | {r['model_psnr']:.1f} | "
                       f"{r['model_pearson']:.3f} | {r['rmse_ratio']:.2f} |")
        b = next((r for r in rows if r["case"] == case and "error" not in r), None)
        if b:
            out.append(f"| {case} | bicubic | 0 | | | | {b['bicubic_mae']:.3f} | {b['bicubic_rmse']:.3f} | "
                       f"{b['bicubic_ssim']:.3f} | {b['bicubic_psnr']:.1f} | {b['bicubic_pearson']:.3f} | 1.00 |")
    return "\n".join(out) + "\n"


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few configurations, tiny budget")
    parser.add_argument("--only", default="demo,mos,era5", help="comma-separated data cases")
    parser.add_argument("--configs", default=None, help="comma-separated configuration labels (default: all)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--ref-filters", type=int, default=8,
                        help="filters of the reference speed network (24 ~ DL4DS's 89k parameters)")
    parser.add_argument("--head-ab", action="store_true",
                        help="step speed of our HR head vs DL4DS's, fp32/channels-last/bf16, interleaved")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: case|label|epochs|samples
    parser.add_argument("--speed", action="store_true", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)

    if args.one:
        case, label, epochs, samples = args.one.split("|")
        print("ROW " + json.dumps(run_one(case, label, int(epochs), int(samples))), flush=True)
        return
    if args.speed:
        print("ROW " + json.dumps(reference_speed(2 if args.quick else 3, filters=args.ref_filters)), flush=True)
        return

    if args.head_ab:
        print(f"Reference network step speed (bare loop, batch 16, 128x128 HR, x4), {torch_threads()} threads, "
              "medians of interleaved repeats\n")
        print("| head | format | params | samples/s | ratio to default |\n|---|---|---:|---:|---:|")
        for r in head_ab():
            print(f"| {r['head']} | {r['format']} | {r['parameters']:,} | {r['samples_per_s']:.0f} | {r['ratio']:.2f} |")
        return
    epochs = args.epochs or (2 if args.quick else 6)
    samples = args.samples or (128 if args.quick else 768)
    speed = _subprocess(["--speed", "--ref-filters", str(args.ref_filters)] + (["--quick"] if args.quick else []))
    print(table([], speed, ""), flush=True)
    rows: list[dict] = []
    if not args.speed_only:
        labels = args.configs.split(",") if args.configs else (QUICK if args.quick else [g[0] for g in GRID])
        cases = args.only.split(",")
        if args.quick:
            cases = [c for c in cases if c != "mos"]
        for case in cases:
            for label in labels:
                start = time.perf_counter()
                row = {"case": case, "config": label, **_subprocess(["--one", f"{case}|{label}|{epochs}|{samples}"])}
                rows.append(row)
                status = row.get("error") or f"RMSE ratio {row['rmse_ratio']:.2f}"
                print(f"[{time.perf_counter() - start:5.0f} s] {case} {label}: {status}", file=sys.stderr, flush=True)
    budget = f"{epochs} epochs x {samples} samples (demo: 64x64 patches; ERA5: full 32x48 domain), batch 16"
    text = table(rows, speed, budget)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "zoo.md").write_text(f"# Model zoo benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n\n{text}")


if __name__ == "__main__":
    main()
