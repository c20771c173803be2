"""The ML-Bench tab in real headless Chromium: a run trained on the stand-in scored through the
served dashboard, its scorecard coloured, a clicked cell drawn as index maps with spectra, and the
extrapolation skill beside them. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import pytest

from .conftest import REPO, Served, new_page, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The stand-in and a 1-epoch DeepESD run made by the command line in their own process (the
    test process keeps no netCDF/HDF5 or torch state of theirs), served by the dashboard."""
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("mlbench")
    root = tmp_path_factory.mktemp("mlbench-runs")
    engine = [sys.executable, "-m", "engine", "--runs", str(root), "mlbench"]
    subprocess.run(engine + ["standin", "--domain", "ALPS", "--out", str(work), "--train-years", "1",
                             "--test-years", "1", "--days-per-year", "30"], check=True, cwd=REPO)
    subprocess.run(engine + ["train", "--domain", "ALPS", "--experiment", "ESD_pseudo_reality", "--model", "deepesd",
                             "--epochs", "1", "--root", str(work / "ALPS_domain")], check=True, cwd=REPO)
    (run,) = [p for p in root.iterdir() if (p / "mlbench.json").is_file()]
    served = Served(root, root.parent / "browser-mlbench-serve.log")
    served.run_id = run.name
    yield served
    served.close()


def _choose_run(page, run_id: str) -> None:
    """Pick ``run_id`` in the tab's "Runs to score" box and wait for its chip (the browser's copy
    of the choice; the server's follows over the same socket)."""
    from playwright.sync_api import expect

    runs = page.locator(".fs-mb-runs")
    chip = runs.locator(".choices__list--multiple .choices__item", has_text=run_id)
    if chip.count():
        return
    runs.locator("input").first.click()
    runs.locator(".choices__item--choice", has_text=run_id).first.click()
    page.keyboard.press("Escape")
    expect(chip).to_be_visible(timeout=60_000)


def _score(page, server) -> None:
    """Press Score and wait for the scorecard: on the page's state, up to 5 min on a loaded machine.

    A click that reaches the server before the chosen run (Panel runs callbacks in a thread pool)
    is answered "Choose at least one ML-Bench run": the run is chosen again if its chip went, and
    Score pressed again. A scorecard that never comes fails with what the page showed and where
    the server's threads were (their stacks, from ``Served.stacks``)."""
    from playwright.sync_api import expect

    table, error = page.locator(".fs-mb-table"), page.locator(".fs-mb-error")
    score = page.locator(".fs-mb-score button")
    score.click()
    for _ in range(60):
        try:
            expect(table).to_be_visible(timeout=5_000)
            return
        except AssertionError:
            message = error.first.text_content(timeout=1_000) if error.count() else ""
            assert not message or "Choose at least one" in message, message
            if message and score.is_enabled():
                _choose_run(page, server.run_id)
                score.click()
    shot(page, "view-mlbench-no-scorecard")
    # what the tab said (its status and table panes; Bokeh's shadow DOM hides them from body's text)
    shown = {name: page.locator(name).first.text_content(timeout=5_000)
             for name in (".fs-mb-busy", ".fs-mb-error", ".fs-mb-empty", ".fs-mb-table-empty")
             if page.locator(name).count()}
    raise AssertionError(
        "the scorecard did not appear in 5 minutes.\n"
        f"the tab showed: {shown}; runs chosen in the browser: "
        f"{page.locator('.fs-mb-runs .choices__list--multiple .choices__item').count()} "
        "(the report's server section has the server's thread stacks)")


def test_score_click_a_cell_and_see_maps_spectra_and_extrapolation(browser, server):
    from playwright.sync_api import expect

    page = new_page(browser)
    page.goto(server.url)
    expect(page.locator(".fs-catalogue")).to_be_visible(timeout=180_000)
    page.locator(".bk-tab", has_text="ML-Bench").first.click()
    _choose_run(page, server.run_id)
    _score(page, server)
    table = page.locator(".fs-mb-table")
    expect(table).to_contain_text("climatology", timeout=60_000)
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
