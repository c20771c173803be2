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

3. **sessions opened together** — ``--sessions`` (default 5) pages opened at once on the warm
   server (each its own browser context, so its own session): seconds until each shows its
   catalogue *and* answers a click (the Runs tab lists the runs); target 5 s each;
4. **map update while a run trains** — another session starts a real training run on the demo
   (``local`` launcher: a separate process, 3 epochs) and, while it runs, the first session moves
   the demo map's time slider; target under 1 s.

Each update is measured ``--repeat`` times (median and max reported). The target is under 1 s.
Options: ``--size`` (default 1000), ``--times`` (time steps in the synthetic file), ``--repeat``,
``--sessions``, ``--no-train``, ``--csv PATH``.

``--before REF`` measures a change on a shared, loaded machine: it serves two dashboards side by
side on the same run store, the ``app/`` package of git revision ``REF`` ("before") and a copy of
the working tree's ``app/`` ("after"; the engine is the working tree's for both), and measures 2a.
(the demo's map updates, in a fresh session), 3. and 4. on each, alternated (``--rounds`` times for
2a. and 3.), so that both see the same machine load.
The load average is printed beside every figure.

``--cpu --floor`` adds two near-empty Panel pages (two Markdown panes in tabs, with the
dashboard's template and extensions and without; :data:`FLOOR_APPS`), measured alternated with the
dashboard: the part of the figure that any Panel page costs on the machine at hand.

``--cpu`` measures 3. as CPU seconds instead (the server's process and Chromium's, from ``/proc``),
median of ``--rounds``, for the working tree or, with ``--before REF``, both servers alternated:
CPU seconds hardly depend on what else runs on a shared machine, wall-clock does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
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


def _wait_for_training(viewer, training) -> None:
    """Wait (polling the run store, at most 5 min) until ``training()`` says a run is running, then
    hook the viewer page's map-update timer."""
    deadline = time.monotonic() + 300
    while not training() and time.monotonic() < deadline:
        viewer.wait_for_timeout(500)
    if not training():
        raise RuntimeError("the training run never reached 'running'")
    viewer.evaluate(_HOOK)


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


def _sessions_together(browser, url: str, n: int) -> list[dict]:
    """Open ``n`` pages at once; seconds until each lists its catalogue and answers a click."""
    from playwright.sync_api import expect

    pages = [browser.new_page(viewport={"width": 1500, "height": 1600}) for _ in range(n)]
    t0 = time.perf_counter()
    for page in pages:
        page.goto(url, wait_until="commit")
    rows, ready = [], {}
    for i, page in enumerate(pages):
        expect(page.locator(".fs-catalogue")).to_be_visible(timeout=300_000)
        ready[i] = time.perf_counter() - t0
    for i, page in enumerate(pages):
        # Timeouts of minutes: on the shared machine a loaded server takes long, and the figure
        # (not a failure) is what is measured.
        page.locator(".bk-tab", has_text="Runs").first.click(timeout=300_000)
        expect(page.locator(".fs-runs-table")).to_be_visible(timeout=300_000)
        rows.append({"measure": f"{n} sessions opened together: catalogue shown", "grid": "demo", "seconds": ready[i]})
        rows.append({"measure": f"{n} sessions opened together: catalogue + a click answered", "grid": "demo",
                     "seconds": time.perf_counter() - t0})
    for page in pages:
        page.close()
    return rows


def _start_training(browser, url: str):
    """A second session starts a real local training run on the demo (3 epochs); its page."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 1600})
    page.goto(url + "?tab=Experiment")
    train = page.locator(".fs-train button")
    expect(train).to_be_enabled(timeout=300_000)
    page.locator(".fs-launcher select").select_option("local", timeout=300_000)
    expect(train).to_be_enabled(timeout=120_000)
    train.click(timeout=300_000)
    expect(page.locator(".fs-message")).to_contain_text("Started run", timeout=120_000)
    return page


REPO = Path(__file__).resolve().parents[1]


def load() -> float:
    """The 1-minute load average (the machine is shared: every figure is reported beside it)."""
    return round(os.getloadavg()[0], 1)


def app_copy(dest: Path, ref: str | None) -> Path:
    """The ``app/`` package of git revision ``ref`` (None: the working tree's) under ``dest``."""
    dest.mkdir(parents=True)
    if ref is None:
        shutil.copytree(REPO / "app", dest / "app", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "app"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


class ServedCopy:
    """``python -m app`` from a copy of the ``app/`` package (its folder first on the path, the
    working tree's engine after it), on a free localhost port, reading the run store ``root``."""

    def __init__(self, folder: Path, root: Path, log_path: Path):
        env = {**os.environ, "FINESCALE_RUNS": str(root), "BOKEH_LOG_LEVEL": "info",
               "PYTHONPATH": os.pathsep.join([str(folder), str(REPO), os.environ.get("PYTHONPATH", "")])}
        self._serve([sys.executable, "-m", "app", "--port"], log_path, cwd=folder, env=env)

    def _serve(self, command: list[str], log_path: Path, cwd: Path | None = None, env: dict | None = None) -> None:
        """Start ``command`` + a free port (its log in ``log_path``) and wait until the page answers
        (the server imports and warms up first)."""
        import urllib.request

        from tests.app.conftest import _free_port

        self.port = _free_port()
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(command + [str(self.port)], cwd=cwd, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}/app"
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=30).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("the app did not come up:\n" + Path(log_path).read_text()) from None
                time.sleep(0.5)

    def close(self) -> None:
        from tests.helpers import stop_process

        stop_process(self.proc)
        self._log.close()


#: The least a Panel page can be, two ways: the dashboard's template and extensions around two
#: Markdown panes that carry the classes ``_sessions_cpu`` waits for, and the same tabs without
#: template or extensions. What five of these cost is the floor under the dashboard's figure on the
#: machine at hand (``--floor``).
FLOOR_APPS = {
    "floor: empty page, same template": """
import panel as pn

pn.extension("tabulator", sizing_mode="stretch_width", loading_indicator=True, notifications=True)
tabs = pn.Tabs(("Data", pn.pane.Markdown("catalogue", css_classes=["fs-catalogue"])),
               ("Runs", pn.pane.Markdown("runs", css_classes=["fs-runs-table"])), dynamic=True)
pn.template.FastListTemplate(title="floor", main=[tabs], sidebar_width=300).servable()
""",
    "floor: bare Panel tabs": """
import panel as pn

pn.extension(sizing_mode="stretch_width")
pn.Tabs(("Data", pn.pane.Markdown("catalogue", css_classes=["fs-catalogue"])),
        ("Runs", pn.pane.Markdown("runs", css_classes=["fs-runs-table"])), dynamic=True).servable()
""",
}


class ServedFloor(ServedCopy):
    """``panel serve`` of one of :data:`FLOOR_APPS` (written to ``folder``) on a free localhost port."""

    def __init__(self, source: str, folder: Path, log_path: Path):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "app.py").write_text(source)
        self._serve([sys.executable, "-m", "panel", "serve", str(folder / "app.py"), "--address", "127.0.0.1",
                     "--port"], log_path)


def _updates_while_training(browser, url: str, root: Path, repeat: int, label: str) -> list[dict]:
    """Start a run from one session of ``url``; time the demo map's updates in another while it
    trains; cancel the run afterwards (the next measurement must not share the CPU with it)."""
    from playwright.sync_api import expect

    from engine import launch
    from engine.runs import RunStore

    viewer = browser.new_page(viewport={"width": 1500, "height": 1600})
    viewer.goto(url)
    expect(viewer.locator(".fs-data-maps canvas").first).to_be_attached(timeout=300_000)
    before = {r.run_id for r in RunStore(root).list()}
    trainer = _start_training(browser, url)

    def ours():
        return [r for r in RunStore(root).list() if r.run_id not in before]

    def training() -> bool:
        return any(r.state == "running" for r in ours())

    _wait_for_training(viewer, training)
    rows = []
    for _ in range(repeat):
        if not training():
            print("training ended before every update was measured", flush=True)
            break
        rows.append({"measure": "map update while another session's run trains", "grid": label,
                     "seconds": _slider_step(viewer, ".fs-data-time"), "load": load()})
        print(rows[-1], flush=True)
        viewer.wait_for_timeout(300)
    for run in ours():
        try:
            launch.cancel(run)
        except Exception as exc:  # ended by itself meanwhile
            print(f"cancel {run.run_id}: {exc}", flush=True)
    trainer.close()
    viewer.close()
    return rows


def _demo_updates(browser, url: str, repeat: int, label: str) -> list[dict]:
    """``repeat`` map updates of the demo's Data tab (one time step each) in a fresh session of ``url``."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 1600})
    page.goto(url)
    expect(page.locator(".fs-data-maps canvas").first).to_be_attached(timeout=300_000)
    page.wait_for_timeout(1500)
    page.evaluate(_HOOK)
    rows = []
    for _ in range(repeat):
        rows.append({"measure": "map update after a time step (demo 64x128, 4 maps)", "grid": label,
                     "seconds": _slider_step(page, ".fs-data-time"), "load": load()})
        print(rows[-1], flush=True)
        page.wait_for_timeout(300)
    page.close()
    return rows


@contextlib.contextmanager
def _warm_servers(before: str | None, label: str, floor: bool = False):
    """Servers of the ``app/`` of git revision ``before`` (if given) and of the working tree on one
    fresh run store (and, with ``floor``, of :data:`FLOOR_APPS`), each past its warm-up session, and
    a Chromium: ``(browser, servers, root)``."""
    from playwright.sync_api import expect, sync_playwright

    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="finescale-bench-app-") as tmp:
        tmp = Path(tmp)
        root = tmp / "runs"
        root.mkdir()
        servers = {}
        try:
            if before:
                servers[f"before ({before})"] = ServedCopy(app_copy(tmp / "before", before), root, tmp / "before.log")
            servers[label] = ServedCopy(app_copy(tmp / "after", None), root, tmp / "after.log")
            for i, (name, source) in enumerate(FLOOR_APPS.items() if floor else ()):
                servers[name] = ServedFloor(source, tmp / f"floor{i}", tmp / f"floor{i}.log")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
                for served in servers.values():  # warm-up session of each server
                    page = browser.new_page(viewport={"width": 1500, "height": 1600})
                    page.goto(served.url)
                    expect(page.locator(".fs-catalogue")).to_be_visible(timeout=300_000)
                    page.close()
                yield browser, servers, root
                browser.close()
        finally:
            for served in servers.values():
                served.close()


def compare(before: str, repeat: int = 3, sessions: int = 5, rounds: int = 2, train: bool = True) -> pd.DataFrame:
    """2a., 3. and 4. on the ``app/`` of git revision ``before`` and on the working tree's, alternated."""
    rows = []
    with _warm_servers(before, "after") as (browser, servers, root):
        for _ in range(rounds):
            for label, served in servers.items():
                rows += _demo_updates(browser, served.url, repeat, label)
            for label, served in servers.items():
                got = _sessions_together(browser, served.url, sessions)
                for row in got:
                    row.update(grid=label, load=load())
                rows += got
                print(got[-1], flush=True)
        if train:
            for label, served in servers.items():
                rows += _updates_while_training(browser, served.url, root, repeat, label)
    df = pd.DataFrame(rows)
    return df.groupby(["measure", "grid"], sort=False).agg(
        median=("seconds", "median"), max=("seconds", "max"), count=("seconds", "count"),
        load_min=("load", "min"), load_max=("load", "max")).reset_index()



def _proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) from ``/proc``; None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> list[int]:
    """Process ids below ``root`` (children, grandchildren ...), read from ``/proc``."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], [root]
    while frontier:
        kids = [pid for pid, ppid in parent.items() if ppid in frontier]
        out += kids
        frontier = kids
    return out


def _chromium_cpu() -> dict[int, float]:
    """CPU seconds of every Chromium process this benchmark started (browser, renderers, GPU)."""
    out = {}
    for pid in _descendants(os.getpid()):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if "chrom" in name:
            cpu = _proc_cpu(pid)
            if cpu is not None:
                out[pid] = cpu
    return out


def _sessions_cpu(browser, url: str, server_pid: int, n: int) -> dict:
    """Open ``n`` pages at once on a warm server (each its own context), wait until each shows its
    catalogue and answers a click on Runs; the CPU seconds the server and Chromium spent meanwhile.

    CPU seconds, not wall-clock: on a shared machine they hardly depend on what else runs, so a
    change can be measured while other work goes on. Chromium processes that end meanwhile are
    not counted (none do: the pages stay open until the figures are read).
    """
    from playwright.sync_api import expect

    server0, chrome0 = _proc_cpu(server_pid), _chromium_cpu()
    t0 = time.perf_counter()
    pages = [browser.new_context(viewport={"width": 1500, "height": 1600}).new_page() for _ in range(n)]
    for page in pages:
        page.goto(url, wait_until="commit")
    shown = []
    for page in pages:
        expect(page.locator(".fs-catalogue")).to_be_visible(timeout=300_000)
        shown.append(time.perf_counter() - t0)
    for page in pages:
        page.locator(".bk-tab", has_text="Runs").first.click(timeout=300_000)
        expect(page.locator(".fs-runs-table")).to_be_visible(timeout=300_000)
    wall = time.perf_counter() - t0
    server1, chrome1 = _proc_cpu(server_pid), _chromium_cpu()
    for page in pages:
        page.context.close()
    return {"server_cpu_s": server1 - server0,
            "chromium_cpu_s": sum(v - chrome0.get(pid, 0.0) for pid, v in chrome1.items()),
            "slowest_catalogue_s": max(shown), "all_clicked_s": wall, "load": load()}


def cpu(before: str | None, sessions: int = 5, rounds: int = 3, floor: bool = False) -> pd.DataFrame:
    """CPU seconds of the server and of Chromium for ``sessions`` pages opened together, ``rounds``
    times; with ``before``, on the ``app/`` of that git revision and the working tree's, alternated;
    with ``floor``, also on near-empty Panel pages (:data:`FLOOR_APPS`)."""
    rows = []
    with _warm_servers(before, "after" if before else "working tree", floor) as (browser, servers, root):
        time.sleep(3)
        for r in range(rounds):
            for label, served in servers.items():
                row = {"server": label, "round": r, **_sessions_cpu(browser, served.url, served.proc.pid, sessions)}
                rows.append(row)
                print(row, flush=True)
                time.sleep(3)  # the closed pages' processes end
    df = pd.DataFrame(rows)
    return df.groupby("server", sort=False).agg(
        server_cpu_s=("server_cpu_s", "median"), chromium_cpu_s=("chromium_cpu_s", "median"),
        slowest_catalogue_s=("slowest_catalogue_s", "median"), all_clicked_s=("all_clicked_s", "median"),
        rounds=("round", "count"), load_min=("load", "min"), load_max=("load", "max")).reset_index()


def run(size: int = 1000, times: int = 8, repeat: int = 5, sessions: int = 5, train: bool = True) -> pd.DataFrame:
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
                page.close()
                # (3) several sessions opened together on the warm server
                if sessions:
                    rows += _sessions_together(browser, served.url, sessions)
                    print(rows[-2:], flush=True)
                # (4) a map update in one session while another session's run trains
                if train:
                    viewer = browser.new_page(viewport={"width": 1500, "height": 1600})
                    viewer.goto(served.url)
                    expect(viewer.locator(".fs-data-maps canvas").first).to_be_attached(timeout=300_000)
                    trainer = _start_training(browser, served.url)
                    from engine.runs import RunStore

                    def training() -> bool:
                        return any(r.state == "running" for r in RunStore(root).list())

                    _wait_for_training(viewer, training)
                    for _ in range(repeat):
                        if not training():
                            print("training ended before every update was measured", flush=True)
                            break
                        rows.append({"measure": "map update while another session's run trains",
                                     "grid": "demo 64x128 (4 maps)", "seconds": _slider_step(viewer, ".fs-data-time")})
                        print(rows[-1], flush=True)
                        viewer.wait_for_timeout(300)
                    trainer.close()
                    viewer.close()
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
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--no-train", action="store_true", help="skip the map update while a run trains")
    parser.add_argument("--csv", default=None)
    parser.add_argument("--before", default=None, metavar="REF",
                        help="also serve app/ of git revision REF and measure 2a., 3. and 4. on both, alternated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 3. per server with --before (and --cpu)")
    parser.add_argument("--cpu", action="store_true",
                        help="only 3., as CPU seconds of the server and of Chromium (median of --rounds; "
                             "with --before on both servers, alternated)")
    parser.add_argument("--floor", action="store_true",
                        help="with --cpu: also serve near-empty Panel pages (with the same template and without) "
                             "and measure them alternated with the dashboard (what any Panel page costs here)")
    args = parser.parse_args(argv)
    if args.floor and not args.cpu:
        parser.error("--floor is a --cpu measurement; add --cpu")
    if args.cpu:
        table = cpu(args.before, args.sessions, args.rounds, args.floor)
        print(markdown(table))
        if args.csv:
            table.to_csv(args.csv, index=False)
        return 0
    if args.before:
        table = compare(args.before, args.repeat, args.sessions, args.rounds, not args.no_train)
    else:
        table = run(args.size, args.times, args.repeat, args.sessions, not args.no_train)
    print(markdown(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    sessions = table[table.measure.str.contains("click answered")]
    print(json.dumps({"target_update_s": 1.0,
                      "worst_update_s": float(table[table.measure.str.startswith("map update")]["max"].max()),
                      "target_session_s": 5.0,
                      "worst_session_s": float(sessions["max"].max()) if len(sessions) else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
