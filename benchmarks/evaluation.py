"""Speed of the evaluation suite and of the attributions.

``python -m benchmarks.evaluation`` prints a table:

1. the full evaluation suite (:func:`engine.evaluation.report.evaluate_dataset`: every
   deterministic score by season and month and for two regions, lat-weighted variants, skill vs
   bicubic, SSIM, quantile biases, spectra, per-pixel and seasonal maps) on one year of daily
   predictions on a 256 x 256 grid, for the model and three baselines: wall time and peak
   memory (the process's peak resident set size grows by this much while scoring, and the
   largest numpy allocation peak seen by tracemalloc);
2. attribution timings (Saliency, Integrated Gradients with 32 steps, GradientSHAP with 32
   samples, Grad-CAM, Occlusion) for a small conv net on a 16 x 32 LR / 64 x 128 HR domain and an
   8 x 8 output box.

Options: ``--days``, ``--size``, ``--quick`` (60 days on 128 x 128), ``--no-attributions``,
``--csv PATH`` (also write the table).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc

import numpy as np
import pandas as pd
import xarray as xr


def synthetic_predictions(days: int = 365, size: int = 256, seed: int = 0) -> xr.Dataset:
    """A year of daily 'temperature' on a size x size grid: a seasonal cycle, smooth large-scale
    anomalies and small-scale detail; the model adds noise; baselines lose the small scales."""
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    lat = np.linspace(40.0, 50.0, size)
    lon = np.linspace(0.0, 12.0, size)
    yy, xx = np.meshgrid(np.linspace(0, 2 * np.pi, size), np.linspace(0, 2 * np.pi, size), indexing="ij")
    base = (280.0 + 5 * np.cos(yy) + 3 * np.sin(2 * xx)).astype(np.float32)
    season = (8 * np.sin(2 * np.pi * t / 365.25)).astype(np.float32)[:, None, None]
    coarse = rng.normal(size=(days, size // 16, size // 16)).astype(np.float32)
    large = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
    truth = base + season + 2 * large + rng.normal(scale=0.7, size=(days, size, size)).astype(np.float32)
    blocks = truth.reshape(days, size // 4, 4, size // 4, 4).mean(axis=(2, 4))
    nearest = np.repeat(np.repeat(blocks, 4, axis=1), 4, axis=2)
    dims = ("time", "lat", "lon")
    mask = np.ones((size, size), dtype="int8")
    mask[: size // 8, : size // 8] = 0  # a masked corner (sea, say)
    ds = xr.Dataset(
        {
            "truth": (dims, truth, {"units": "K"}),
            "model": (dims, truth + rng.normal(scale=0.5, size=truth.shape).astype(np.float32), {"units": "K"}),
            "nearest": (dims, nearest, {"units": "K"}),
            "bilinear": (dims, nearest + rng.normal(scale=0.1, size=truth.shape).astype(np.float32), {"units": "K"}),
            "bicubic": (dims, nearest + rng.normal(scale=0.05, size=truth.shape).astype(np.float32), {"units": "K"}),
            "mask": (("lat", "lon"), mask),
        },
        coords={"time": pd.date_range("2003-01-01", periods=days, freq="D"), "lat": lat, "lon": lon},
        attrs={"variable": "t2m"},
    )
    return ds


def _rss_mb() -> float:
    # ru_maxrss is in kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_evaluation(days: int, size: int) -> list[dict]:
    from engine.evaluation.report import evaluate_dataset

    ds = synthetic_predictions(days, size)
    regions = {"north": (45.0, 50.0, 0.0, 12.0), "east": (40.0, 50.0, 6.0, 12.0)}
    evaluate_dataset(ds.isel(time=slice(0, 4)), regions=regions)  # imports and warm-up
    gc.collect()
    rss0 = _rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    ev = evaluate_dataset(ds, run="bench", regions=regions)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = _rss_mb()
    data_mb = sum(v.nbytes for v in ds.data_vars.values()) / 2**20
    top = ev.scores.query("period == 'test' and region == 'domain' and metric == 'rmse'")
    label = f"evaluate_dataset: {days} days x {size}x{size}, model + 3 baselines, 3 regions"
    return [
        {"benchmark": label, "value": round(elapsed, 2), "unit": "s"},
        {"benchmark": "  rows in the scores table", "value": len(ev.scores), "unit": "rows"},
        {"benchmark": "  input data in memory", "value": round(data_mb), "unit": "MiB"},
        {"benchmark": "  peak RSS growth while scoring", "value": round(rss1 - rss0), "unit": "MiB"},
        {"benchmark": "  tracemalloc peak (numpy allocations)", "value": round(peak / 2**20), "unit": "MiB"},
        {"benchmark": "  RMSE model / bicubic", "value": " / ".join(f"{v:.3f}" for v in top.value), "unit": "K"},
    ]


def bench_attributions(repeats: int = 3) -> list[dict]:
    import torch
    from torch import nn

    from engine.explain import attribute

    class SmallNet(nn.Module):
        def __init__(self, c_in=3, s=2, f=16, scale=4):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c_in, f, 3, padding=1), nn.ReLU(), nn.Conv2d(f, f, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(f, f, 3, padding=1), nn.ReLU())
            self.up = nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False)
            self.fuse = nn.Conv2d(f + s, f, 3, padding=1)
            self.out = nn.Conv2d(f, 1, 3, padding=1)

        def forward(self, x, static_hr):
            h = self.up(self.body(x))
            return self.out(torch.relu(self.fuse(torch.cat([h, static_hr], 1))))

    torch.manual_seed(0)
    model = SmallNet().eval()
    x = torch.randn(1, 3, 16, 32)
    s = torch.randn(1, 2, 64, 128)
    box = (28, 36, 60, 68)
    rows = []
    for method, kw in (("saliency", {}), ("integrated_gradients", {"n_steps": 32}), ("gradient_shap", {"n_steps": 32}),
                       ("grad_cam", {}), ("occlusion", {})):
        attribute(model, x, s, region=box, method=method, **kw)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            attribute(model, x, s, region=box, method=method, **kw)
            times.append(time.perf_counter() - t0)
        name = {"integrated_gradients": "IG-32", "gradient_shap": "GradientSHAP-32", "grad_cam": "Grad-CAM"}.get(
            method, method.capitalize())
        rows.append({"benchmark": f"attribution {name}, 16x32 LR / 64x128 HR, 8x8 box", "value": round(min(times), 3),
                     "unit": "s"})
    return rows


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="60 days on 128 x 128")
    ap.add_argument("--no-attributions", action="store_true")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)
    days, size = (60, 128) if args.quick else (args.days, args.size)
    rows = bench_evaluation(days, size)
    if not args.no_attributions:
        rows += bench_attributions()
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_colwidth", 90, "display.width", 140):
        print(table.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
