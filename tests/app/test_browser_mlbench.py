"""The ML-Bench tab in real headless Chromium: a run trained on the stand-in scored through the
served dashboard, its scorecard coloured, a clicked cell drawn as index maps with spectra, and the
extrapolation skill beside them. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import pytest

from .conftest import Served, new_page, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from engine.mlbench.experiments import MLBenchConfig, train
    from engine.mlbench.standin import generate_standin

    archive = generate_standin("ALPS", tmp_path_factory.mktemp("mlbench"), train_years=1, test_years=1,
                               days_per_year=30)
    root = tmp_path_factory.mktemp("mlbench-runs")
    run = train(MLBenchConfig(domain="ALPS", experiment="ESD_pseudo_reality", model="deepesd", epochs=1,
                              root=str(archive)), root, log=lambda s: None)
    served = Served(root, root.parent / "browser-mlbench-serve.log")
    served.run_id = run.name
    yield served
    served.close()


def test_score_click_a_cell_and_see_maps_spectra_and_extrapolation(browser, server):
    from playwright.sync_api import expect

    page = new_page(browser)
    page.goto(server.url)
    expect(page.locator(".fs-catalogue")).to_be_visible(timeout=180_000)
    page.locator(".bk-tab", has_text="ML-Bench").first.click()
    page.locator(".fs-mb-runs input").first.click()
    page.locator(".choices__item--choice", has_text=server.run_id).first.click()
    page.keyboard.press("Escape")
    page.locator(".fs-mb-score button").click()
    table = page.locator(".fs-mb-table")
    expect(table).to_contain_text("climatology", timeout=180_000)
    expect(table).to_contain_text("deepesd")
    # coloured per column: the score cells carry a background
    cell = table.locator(".tabulator-row", has_text="deepesd").first.locator(
        ".tabulator-cell[tabulator-field='pr_bias_rx1day']")
    expect(cell).to_have_attribute("style", __import__("re").compile("background-color"), timeout=20_000)
    expect(page.locator(".fs-mb-extrapolation canvas").first).to_be_attached(timeout=60_000)
    cell.click()
    expect(page.locator(".fs-mb-maps canvas").first).to_be_attached(timeout=180_000)
    expect(page.locator(".fs-mb-spectra canvas").first).to_be_attached(timeout=60_000)
    expect(page.locator(".fs-mb-index select")).to_have_value("rx1day", timeout=20_000)
    expect(page.locator(".fs-mb-variable select")).to_have_value("pr")
    # a baseline's row has no submission file: said, nothing lost
    table.locator(".tabulator-row", has_text="climatology").first.locator(
        ".tabulator-cell[tabulator-field='pr_rmse']").click()
    expect(page.locator(".fs-mb-error")).to_contain_text("is a baseline", timeout=30_000)
    expect(page.locator(".fs-mb-maps canvas").first).to_be_attached()
    shot(page, "view-mlbench")
    assert not page.js_errors, page.js_errors
    page.close()
