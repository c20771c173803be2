"""The served dashboard in real headless Chromium (Debian's /usr/bin/chromium via Playwright).

Serves ``panel serve app`` on a free localhost port with the run store in a temporary folder,
picks the demo dataset, trains a tiny model with the ``local`` launcher, waits for the maps and
the scores table, and saves a screenshot to ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import record_js_errors
from tests.helpers import skip_or_fail_in_ci

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def page():
    from playwright import sync_api

    if not Path(CHROMIUM).exists():
        skip_or_fail_in_ci(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 2100})
        record_js_errors(page)
        yield page
        browser.close()


def _set_number(page, css: str, value: int) -> None:
    box = page.locator(f"{css} input").first
    box.fill(str(value))
    box.press("Enter")  # a spinner commits its value on Enter / blur


def test_train_and_see_maps_in_chromium(served_app, page, run_root):
    from playwright.sync_api import expect

    page.goto(served_app)
    # The registries and catalogue load after the page is shown (onload).
    expect(page.locator(".fs-catalogue")).to_be_visible(timeout=180_000)
    page.locator(".fs-dataset select").select_option("demo_alps")
    page.locator(".bk-tab", has_text="Experiment").first.click()
    train = page.locator(".fs-train button")
    expect(train).to_be_enabled(timeout=60_000)
    page.locator(".fs-launcher select").select_option("local")

    # The SLURM fields appear for the slurm launcher and a bad time limit is refused inline.
    if page.locator(".fs-launcher select option[value='slurm']").count():
        page.locator(".fs-launcher select").select_option("slurm")
        page.locator(".fs-time input").fill("soon")
        page.locator(".fs-time input").press("Enter")
        expect(page.locator(".fs-config-error")).to_contain_text("launch.time", timeout=20_000)
        expect(train).to_be_disabled()
        page.locator(".fs-time input").fill("01:00:00")
        page.locator(".fs-time input").press("Enter")
        page.locator(".fs-launcher select").select_option("local")
        expect(page.locator(".fs-config-error")).to_be_hidden(timeout=20_000)
    # A tiny model, so the test finishes on a shared CPU.
    _set_number(page, ".fs-epochs", 1)
    _set_number(page, ".fs-samples", 64)
    expect(train).to_be_enabled(timeout=20_000)
    train.click()
    page.locator(".bk-tab", has_text="Runs").first.click()

    # Live progress: the run appears in the table while it trains.
    page.locator(".fs-runs-table").get_by_text("local").first.wait_for(timeout=60_000)
    # The maps and the scores table appear when the run has written its results.
    page.locator(".fs-scores table").wait_for(timeout=600_000)
    maps = page.locator(".fs-maps")
    maps.wait_for(timeout=60_000)
    # bokeh draws the canvases after the pane arrives: wait for them, not for a fixed time
    maps.locator("canvas").nth(3).wait_for(timeout=60_000)  # truth, bicubic, model, RMSE (+ colourbars)
    page.locator(".fs-loss-curve canvas").first.wait_for(timeout=60_000)
    expect(page.locator(".fs-scores table")).to_contain_text("bicubic", timeout=20_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    maps.screenshot(path=str(ARTIFACTS / "maps.png"))

    scores = page.locator(".fs-scores table").text_content()
    assert "model" in scores and "bicubic" in scores and "rmse" in scores
    expect(page.locator(".fs-runs-table").get_by_text("completed").first).to_be_visible(timeout=20_000)
    runs = [p for p in run_root.iterdir() if (p / "config.yaml").exists()]
    assert len(runs) == 1 and (runs[0] / "predictions.nc").exists()
    assert not page.js_errors, page.js_errors
