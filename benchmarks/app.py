"""Dashboard speed in real Chromium: time to first render and time to update a map.

``python -m benchmarks.app`` serves the dashboard (``python -m app`` on a free localhost port,
run store in a temporary folder) and drives Debian's Chromium through Playwright:

1. **first render** — from ``page.goto`` until the template is painted (tabs visible), and until
   the first view is usable (catalogue table shown: the engine's registries and catalogue are
   read after the page appears, in ``onload``);
2. **map update after moving the time selector** — one key press on the slider until the new
   image data has arrived in the browser *and* been painted (a Bokeh document change event on a
   data source, then two animation frames), on
   a. the demo data (Data tab: 64 x 128 high-res map + low-res + static maps), and
   b. a synthetic 1000 x 1000 predictions file (Runs tab, results of the selected run: truth,
      bicubic and model maps rasterized on the server by datashader, plus RMSE).

Each update is measured ``--repeat`` times (median and max reported). The target is under 1 s.
Options: ``--size`` (default 1000), ``--times`` (time steps in the synthetic file), ``--repeat``,
``--csv PATH``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CHROMIUM = "/usr/bin/chromium"

#: Collects, in the page, the times at which the server changed a data source of the document.
_HOOK = """
() => {
  window.__fs = [];
  for (const doc of Bokeh.documents) {
    doc.on_change((ev) => {
      const m = ev.model;
      const isData = m && m.type && /DataSource/.test(m.type) || (ev.attr === "data") ||
                     (ev.constructor && /ColumnData|Columns/.test(ev.constructor.name));
      if (isData) window.__fs.push(performance.now());
    });
  }
}
"""

_WAIT_PAINT = """
async (t0) => {
  const deadline = performance.now() + 60000;
  while (!window.__fs.some((t) => t > t0)) {
    if (performance.now() > deadline) return -1;
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - t0;
}
"""


def synthetic_run(root: Path, size: int, times: int) -> str:
    """A run folder whose predictions.nc is a ``times`` x ``size`` x ``size`` field (float32)."""
    import xarray as xr

    from engine.config import ExperimentConfig
    from engine.runs import RunStore

    run = RunStore(root).create(ExperimentConfig(name=f"grid{size}"))
    rng = np.random.default_rng(0)
    lat = np.linspace(35.0, 60.0, size)
    lon = np.linspace(-10.0, 25.0, size)
    yy, xx = np.meshgrid(np.linspace(0, 6, size), np.linspace(0, 6, size), indexing="ij")
    base = (280 + 8 * np.cos(yy) + 4 * np.sin(xx)).astype(np.float32)
    truth = np.stack([base + rng.normal(0, 1, (size, size)).astype(np.float32) for _ in range(times)])
    dims = ("time", "lat", "lon")
    attrs = {"units": "K", "long_name": "2 metre temperature"}
    ds = xr.Dataset(
        {"truth": (dims, truth, attrs),
         "model": (dims, truth + rng.normal(0, 0.5, truth.shape).astype(np.float32), attrs),
         "bicubic": (dims, truth + rng.normal(0, 1.0, truth.shape).astype(np.float32), attrs),
         "mask": (("lat", "lon"), np.ones((size, size), dtype="int8"))},
        coords={"time": pd.date_range("2003-07-01", periods=times, freq="D"), "lat": lat, "lon": lon},
        attrs={"Conventions": "CF-1.8", "variable": "t2m", "finescale_run": run.run_id},
    )
    ds.to_netcdf(run.predictions_path)
    run.update_status(state="completed", progress=1.0, epoch=0, epochs=1, launcher="local")
    return run.run_id


def _slider_step(page, css: str, t_hook: bool = True) -> float:
    """Press ArrowRight on a slider; seconds until new image data is in the page and painted."""
    handle = page.locator(f"{css} .noUi-handle").first
    handle.focus()
    t0 = page.evaluate("() => performance.now()")
    handle.press("ArrowRight")
    ms = page.evaluate(_WAIT_PAINT, t0)
    if ms < 0:
        raise RuntimeError(f"no map update arrived after moving {css}")
    return ms / 1000.0


def run(size: int = 1000, times: int = 8, repeat: int = 5) -> pd.DataFrame:
    from playwright.sync_api import expect, sync_playwright

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.app.conftest import Served

    rows = []
    with tempfile.TemporaryDirectory(prefix="finescale-bench-app-") as tmp:
        root = Path(tmp) / "runs"
        root.mkdir()
        t = time.perf_counter()
        big = synthetic_run(root, size, times)
        print(f"synthetic {size}x{size}x{times} predictions written in {time.perf_counter() - t:.1f} s", flush=True)
        served = Served(root, Path(tmp) / "serve.log")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
                page = browser.new_page(viewport={"width": 1500, "height": 1600})
                # Warm-up session: the server's first session imports torch and the registries.
                page.goto(served.url)
                expect(page.locator(".fs-catalogue")).to_be_visible(timeout=300_000)
                for attempt in range(repeat):
                    page = browser.new_page(viewport={"width": 1500, "height": 1600})
                    t0 = time.perf_counter()
                    page.goto(served.url)
                    page.locator(".bk-tab").first.wait_for(timeout=120_000)
                    t_paint = time.perf_counter() - t0
                    expect(page.locator(".fs-catalogue")).to_be_visible(timeout=120_000)
                    t_usable = time.perf_counter() - t0
                    rows.append({"measure": "first render: template painted", "grid": "-", "seconds": t_paint})
                    rows.append({"measure": "first render: data view usable", "grid": "-", "seconds": t_usable})
                    print(rows[-2:], flush=True)
                    if attempt < repeat - 1:
                        page.close()
                # (a) demo data, Data tab
                expect(page.locator(".fs-data-maps canvas").first).to_be_attached(timeout=120_000)
                page.wait_for_timeout(1500)
                page.evaluate(_HOOK)
                for _ in range(repeat):
                    rows.append({"measure": "map update after a time step", "grid": "demo 64x128 (4 maps)",
                                 "seconds": _slider_step(page, ".fs-data-time")})
                    print(rows[-1], flush=True)
                    page.wait_for_timeout(300)
                # (b) the 1000 x 1000 run, Runs tab
                page.locator(".bk-tab", has_text="Runs").first.click()
                page.locator(".fs-runs-table").get_by_text(f"grid{size}").first.click()
                t0 = time.perf_counter()
                expect(page.locator(".fs-maps canvas").first).to_be_attached(timeout=300_000)
                page.wait_for_timeout(1000)
                rows.append({"measure": "first maps of a selected run", "grid": f"{size}x{size} (4 maps)",
                             "seconds": time.perf_counter() - t0})
                page.evaluate(_HOOK)
                for _ in range(repeat):
                    rows.append({"measure": "map update after a time step", "grid": f"{size}x{size} (3 rasterized maps)",
                                 "seconds": _slider_step(page, ".fs-time-slider")})
                    print(rows[-1], flush=True)
                    page.wait_for_timeout(300)
                Path("test-artifacts").mkdir(exist_ok=True)
                page.screenshot(path="test-artifacts/benchmark-1000x1000.png", full_page=True)
                browser.close()
        finally:
            served.close()
    df = pd.DataFrame(rows)
    table = df.groupby(["measure", "grid"], sort=False)["seconds"].agg(["median", "max", "count"]).reset_index()
    return table


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table (without the optional ``tabulate`` dependency of ``to_markdown``)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--times", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    table = run(args.size, args.times, args.repeat)
    print(markdown(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(json.dumps({"target_update_s": 1.0,
                      "worst_update_s": float(table[table.measure.str.startswith("map update")]["max"].max())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
