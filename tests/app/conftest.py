"""Fixtures of the dashboard tests: a run store holding real run folders (the files a finished
run leaves: config.yaml, status.json, events.jsonl, predictions.nc, scores.csv), written here
with the engine's own RunStore so that the views read exactly what they read in production."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import pytest

from engine.config import ExperimentConfig
from engine.runs import RunStore
from tests.helpers import skip_or_fail_in_ci, stand_in_job, stop_process


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _kill_servers():
    """Panel servers started by a test (serve_component) must not outlive it."""
    yield
    pn.state.kill_all_servers()


@pytest.fixture
def run_root(tmp_path, monkeypatch):
    """An empty run store, also as ``$FINESCALE_RUNS`` so every default points to it."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("FINESCALE_RUNS", str(root))
    return root


def write_predictions(run, nt: int = 4, ny: int = 24, nx: int = 32) -> None:
    """A small predictions.nc in the documented format (Ligurian coast: land and sea)."""
    import xarray as xr

    rng = np.random.default_rng(0)
    lat = np.linspace(42.0, 46.6, ny)
    lon = np.linspace(6.0, 12.2, nx)
    time = pd.date_range("2003-07-01", periods=nt, freq="D")
    base = 290 + 5 * np.cos(np.deg2rad(lat))[None, :, None] + np.zeros((nt, ny, nx))
    truth = base + rng.normal(0, 1, base.shape)
    attrs = {"units": "K", "long_name": "2 metre temperature", "standard_name": "air_temperature"}
    mask = np.ones((ny, nx), dtype="int8")
    mask[0, 0] = 0
    ds = xr.Dataset(
        {
            "truth": (("time", "lat", "lon"), truth, attrs),
            "model": (("time", "lat", "lon"), truth + rng.normal(0, 0.5, base.shape), attrs),
            "bicubic": (("time", "lat", "lon"), truth + rng.normal(0, 1.0, base.shape), attrs),
            "mask": (("lat", "lon"), mask),
        },
        coords={
            "time": time,
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={"Conventions": "CF-1.8", "variable": "t2m", "finescale_run": run.run_id},
    )
    ds.to_netcdf(run.predictions_path)


def write_scores(run) -> None:
    rows = []
    for model, rmse in (("model", 0.5), ("bicubic", 1.0), ("bilinear", 1.1)):
        for metric, value in (("rmse", rmse), ("mae", rmse * 0.8)):
            rows.append({"run": run.run_id, "model": model, "metric": metric, "variable": "t2m",
                         "period": "test", "region": "all", "value": value})
    pd.DataFrame(rows).to_csv(run.scores_path, index=False)


def make_run(root, name="fake", state="completed", epochs=3, results=True, **status):
    """A run folder as a finished (or running) run leaves it."""
    store = RunStore(root)
    config = ExperimentConfig(name=name).replace(training={"epochs": epochs})
    run = store.create(config)
    done = epochs if state == "completed" else 1
    for epoch in range(done):
        run.log_event("epoch", epoch=epoch, train_loss=1.0 / (epoch + 1), val_loss=1.2 / (epoch + 1), val_rmse=2.0)
    if results:
        write_predictions(run)
        write_scores(run)
    run.update_status(state=state, progress=done / epochs, epoch=done - 1, epochs=epochs,
                      launcher=status.pop("launcher", "local"), job_id=status.pop("job_id", "4242"),
                      scores={"model": {"rmse": 0.5, "mae": 0.4}, "bicubic": {"rmse": 1.0, "mae": 0.8}} if results else {},
                      **status)
    (run.logs_dir / "stdout.log").write_text("epoch 0 done\n")
    return run


@pytest.fixture
def live_job():
    """A real process standing in for a local training job (so the launcher sees it alive and
    can cancel it)."""
    yield from stand_in_job(120)


@pytest.fixture
def finished_run(run_root):
    return make_run(run_root)


def as_json(obj) -> str:
    return json.dumps(obj, default=str)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served_app(run_root, tmp_path):
    """``panel serve app`` on 127.0.0.1 (as ``make app`` does), run store in a temporary folder."""
    port = _free_port()
    log = open(tmp_path / "panel-serve.log", "w")
    env = {**os.environ, "FINESCALE_RUNS": str(run_root), "BOKEH_LOG_LEVEL": "info"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "panel", "serve", "app", "--port", str(port), "--address", "127.0.0.1",
         "--allow-websocket-origin", f"127.0.0.1:{port}"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/app"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError("panel serve did not come up:\n" + (tmp_path / "panel-serve.log").read_text())
            time.sleep(0.5)
    yield url
    stop_process(proc)
    log.close()




# ---------------------------------------------------------------------------------------
# More run folders: seasonal scores, ensembles, a really trained run
# ---------------------------------------------------------------------------------------
def write_season_scores(run, rmse: float = 0.5) -> None:
    """scores.csv as engine.evaluation writes it: periods test + seasons, regions domain + a box."""
    rows = []
    for model, factor in (("model", 1.0), ("bicubic", 2.0), ("bilinear", 2.2)):
        for period, pf in (("test", 1.0), ("JJA", 0.9), ("SON", 1.1)):
            for region, rf in (("domain", 1.0), ("alps", 1.3)):
                for metric, value in (("rmse", rmse), ("mae", rmse * 0.8), ("bias", 0.01)):
                    rows.append({"run": run.run_id, "model": model, "metric": metric, "variable": "t2m",
                                 "period": period, "region": region, "value": value * factor * pf * rf})
    pd.DataFrame(rows).to_csv(run.scores_path, index=False)


def add_members(run, members: int = 5, spread: float = 0.5, seed: int = 1) -> None:
    """Turn a run's predictions into an ensemble: ``model`` (member, time, lat, lon), members
    scattered around the deterministic prediction (what engine.inference.ensembles writes)."""
    import xarray as xr

    with xr.open_dataset(run.predictions_path) as ds:
        ds = ds.load()
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, spread, (members, *ds["model"].shape))
    ens = xr.DataArray(ds["model"].values[None] + noise, dims=("member", *ds["model"].dims),
                       attrs=ds["model"].attrs)
    ds = ds.drop_vars("model").assign(model=ens)
    ds.to_netcdf(run.predictions_path)


def make_ensemble_run(root, name="ens", members=5):
    run = make_run(root, name=name)
    add_members(run, members)
    return run


TINY_TRAINING = dict(data={"patch_size": 32}, model={"filters": 8, "blocks": 1},
                     training={"epochs": 1, "samples_per_epoch": 32, "batch_size": 8, "patience": 5},
                     launch={"launcher": "inline"})


@pytest.fixture(scope="session")
def trained_run_dir(tmp_path_factory):
    """A run really trained (inline, 1 epoch, 8 filters) on the demo data: checkpoint,
    normalisation, predictions and scores, as the engine writes them. Trained once per test
    session (about a minute here); tests copy it into their own run store."""
    from engine import launch

    root = tmp_path_factory.mktemp("trained-runs")
    config = ExperimentConfig(name="tiny").replace(**TINY_TRAINING)
    handle = launch.submit(config, RunStore(root))
    assert handle.wait(timeout=900) == "completed", handle.logs()[-2000:]
    return Path(handle.run.path)


def copy_run(run_dir: Path, root: Path) -> Path:
    import shutil

    dst = Path(root) / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst


# ---------------------------------------------------------------------------------------
# One served app per browser-test module
# ---------------------------------------------------------------------------------------
class Served:
    """A ``python -m app`` server on 127.0.0.1 (a free port) and its run store."""

    def __init__(self, root: Path, log_path: Path, prefix: str = ""):
        self.root, self.log_path, self.prefix = Path(root), Path(log_path), prefix
        self.port = _free_port()
        env = {**os.environ, "FINESCALE_RUNS": str(root), "BOKEH_LOG_LEVEL": "info"}
        args = [sys.executable, "-m", "app", "--port", str(self.port)]
        if prefix:
            args += ["--prefix", prefix]
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}{prefix}/app"
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=10).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("the app did not come up:\n" + self.log_path.read_text())
                time.sleep(0.5)

    def stacks(self, tail: int = 12_000) -> str:
        """The end of the server's log after it printed every thread's stack (SIGUSR1, armed by
        ``app/serve_setup.py``): what a test that waited in vain shows of a hung server."""
        import signal

        before = self.log_path.stat().st_size
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            # wait on the dump itself (up to 10 s: a diagnostic, the test has failed already)
            for _ in range(100):
                dump = self.log_path.read_bytes()[before:]
                if b"Current thread" in dump or b"Thread 0x" in dump:
                    break
                time.sleep(0.1)
        else:
            print(f"the server exited with {self.proc.returncode}")
        return self.log_path.read_text(errors="replace")[-tail:]

    def close(self) -> None:
        stop_process(self.proc)
        self._log.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used a served app reports every thread's stack of that server: a browser
    wait that ran out tells a hung or busy server from a lost event (SIGUSR1, app/serve_setup.py)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, Served):
            report.sections.append((f"server {name}: log and threads' stacks", value.stacks()))


CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (one per module)."""
    from playwright import sync_api

    if not Path(CHROMIUM).exists():
        skip_or_fail_in_ci(f"{CHROMIUM} is missing: install Debian's chromium")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


# BokehJS's "reference pNNNN isn't known": a document event naming a model that a concurrent update
# has just replaced, a known upstream race in Panel/Bokeh (holoviz/panel#6019, #5830) that appears
# on a loaded machine when sessions update panes from threads; the page carries on. Every other
# JavaScript error still fails the tests.
_KNOWN_RACE = re.compile(r"reference p\d+ isn't known")


def record_js_errors(page) -> list[str]:
    """Collect the page's uncaught JavaScript errors in ``page.js_errors`` (known races left out)."""
    errors: list[str] = []

    def on_error(exc, errors=errors):
        if not _KNOWN_RACE.search(str(exc)):
            errors.append(str(exc))

    page.on("pageerror", on_error)
    page.js_errors = errors
    return errors


def new_page(browser, width=1500, height=1800):
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    record_js_errors(page)
    return page


def shot(page, name: str, locator=None) -> Path:
    """Save a screenshot to test-artifacts/ (gitignored) and return its path."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    try:
        (locator or page).screenshot(path=str(path), timeout=120_000, **({} if locator else {"full_page": True}))
    except PlaywrightTimeout:
        # A screenshot is a diagnostic, not a check: on a loaded machine Chromium may wait long
        # for the template's web font (no network here); the test's assertions stand without it.
        print(f"screenshot {name} timed out; not saved")
    return path
