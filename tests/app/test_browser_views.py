"""Every view of the served dashboard in real headless Chromium (Debian's, through Playwright).

One ``python -m app`` server for the module, on a run store holding: two evaluated runs (with
scores by season and region), an ensemble run, a run really trained on the demo data (for the
explain view) and a running job (to cancel). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import pytest

from tests.helpers import stand_in_job

from .conftest import Served, add_members, copy_run, make_run, new_page, shot, write_season_scores

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def job():
    """A live process standing in for a local training job (to be cancelled)."""
    yield from stand_in_job(600)


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_run_dir, job):
    root = tmp_path_factory.mktemp("browser-runs")
    a, b = make_run(root, name="alpha"), make_run(root, name="beta")
    write_season_scores(a, 0.5)
    write_season_scores(b, 0.4)
    add_members(make_run(root, name="ensemble"), members=6)
    copy_run(trained_run_dir, root)
    running = make_run(root, name="to-cancel", state="running", results=False, **job)
    served = Served(root, root.parent / "browser-views-serve.log")
    served.runs = {"alpha": a.run_id, "beta": b.run_id, "running": running.run_id, "trained": trained_run_dir.name}
    yield served
    served.close()


@pytest.fixture
def page(browser, server):
    from playwright.sync_api import expect

    page = new_page(browser)
    page.goto(server.url)
    # The catalogue and registries load after the page is shown (onload).
    expect(page.locator(".fs-catalogue")).to_be_visible(timeout=180_000)
    yield page
    assert not page.js_errors, page.js_errors
    page.close()


def open_tab(page, name: str) -> None:
    page.locator(".bk-tab", has_text=name).first.click()


def test_data_view_catalogue_maps_time_and_region(page):
    from playwright.sync_api import expect

    expect(page.locator(".fs-catalogue").get_by_text("demo_alps_gcm").first).to_be_visible(timeout=60_000)
    maps = page.locator(".fs-data-maps")
    expect(maps).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1500)
    label = page.locator(".fs-data-time-label")
    before = label.text_content()
    handle = page.locator(".fs-data-time .noUi-handle").first
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    expect(label).not_to_have_text(before, timeout=20_000)
    # Draw a box on the high-res map with the box-select tool: the region picker. The maps re-render
    # after the time change, and a drag on a canvas being replaced is lost, so draw again until the
    # picker reports a region (waiting on the page's state, not on a fixed time).
    region = page.locator(".fs-region")
    for attempt in range(6):
        canvas = maps.locator("canvas").first
        box = canvas.bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.35
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + box["width"] * 0.15, y0 + box["height"] * 0.15, steps=8)
        page.mouse.move(x0 + box["width"] * 0.3, y0 + box["height"] * 0.3, steps=8)
        page.mouse.up()
        try:
            expect(region).to_contain_text("°N", timeout=10_000)
            break
        except AssertionError:
            if attempt == 5:
                raise
    expect(page.locator(".fs-summary")).to_contain_text("°N", timeout=20_000)  # shared state, sidebar
    page.wait_for_timeout(1500)
    shot(page, "view-data")


def test_experiment_every_option_validation_and_yaml(page, tmp_path):
    from playwright.sync_api import expect

    open_tab(page, "Experiment")
    train = page.locator(".fs-train button")
    expect(train).to_be_enabled(timeout=60_000)
    page.locator(".fs-card-model").get_by_text("Model: head options").click()
    filters = page.locator(".fs-opt-model_filters input").first
    filters.fill("0")
    filters.press("Enter")
    expect(page.locator(".fs-config-error")).to_contain_text("model.filters=0", timeout=20_000)
    expect(train).to_be_disabled()
    filters.fill("8")
    filters.press("Enter")
    expect(page.locator(".fs-config-error")).to_be_hidden(timeout=20_000)
    # Save the form as YAML, change it, load the file back.
    with page.expect_download() as info:
        page.locator(".fs-save-yaml button, .fs-save-yaml a").first.click()
    saved = tmp_path / "saved.yaml"
    info.value.save_as(saved)
    text = saved.read_text()
    assert "filters: 8" in text and "backbone:" in text and "members:" in text
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text(text.replace("name: demo", "name: from-file"))
    page.locator(".fs-load-yaml input[type='file']").set_input_files(str(yaml_file))
    expect(page.locator(".fs-status-message")).to_contain_text("from-file", timeout=20_000)
    page.wait_for_timeout(800)
    shot(page, "view-experiment")


def test_runs_view_cancel_a_running_job(page, server):
    from playwright.sync_api import expect

    open_tab(page, "Runs")
    table = page.locator(".fs-runs-table")
    table.get_by_text("to-cancel").first.click()
    cancel = page.locator(".fs-cancel button")
    expect(cancel).to_be_enabled(timeout=20_000)
    cancel.click()
    expect(page.locator(".fs-run-status")).to_contain_text("cancelled", timeout=30_000)
    expect(table.get_by_text("cancelled").first).to_be_visible(timeout=30_000)
    page.wait_for_timeout(800)
    shot(page, "view-runs-cancelled")


def click_map_until(page, canvas, done, tries: int = 8) -> None:
    """Click the middle of a map until ``done`` (a locator) shows up. A map pane re-rendered
    while the server is busy (e.g. after a second run was picked) replaces the plot the first
    click landed on; on 2 shared cores that can take seconds."""
    from playwright.sync_api import expect

    for attempt in range(tries):
        box = canvas.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5)
        try:
            expect(done).to_be_visible(timeout=5_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


def _pick(page, css: str, text: str) -> None:
    page.locator(f"{css} input").first.click()
    page.locator(".choices__item--choice", has_text=text).first.click()


def test_compare_two_runs_maps_scores_spectra_and_a_clicked_point(page, server):
    from playwright.sync_api import expect

    open_tab(page, "Compare")
    _pick(page, ".fs-compare-runs", server.runs["alpha"])
    _pick(page, ".fs-compare-runs", server.runs["beta"])
    page.keyboard.press("Escape")
    maps = page.locator(".fs-compare-maps")
    expect(maps).to_be_visible(timeout=60_000)
    expect(page.locator(".fs-compare-scores")).to_contain_text("JJA", timeout=30_000)
    expect(page.locator(".fs-compare-spectra canvas").first).to_be_attached(timeout=30_000)
    page.wait_for_timeout(2000)
    click_map_until(page, maps.locator("canvas").first, page.locator(".fs-compare-series canvas").first)
    page.locator(".fs-compare-breakdown button", has_text="region").click()
    expect(page.locator(".fs-compare-scores")).to_contain_text("alps", timeout=30_000)
    page.wait_for_timeout(1500)
    shot(page, "view-compare")


def test_uncertainty_members_spread_rank_histogram(page):
    from playwright.sync_api import expect

    open_tab(page, "Uncertainty")
    expect(page.locator(".fs-ens-members")).to_contain_text("6 members", timeout=60_000)
    expect(page.locator(".fs-rank-histogram canvas").first).to_be_attached(timeout=30_000)
    expect(page.locator(".fs-spread-skill canvas").first).to_be_attached(timeout=30_000)
    expect(page.locator(".fs-ens-scores")).to_contain_text("crps")
    page.wait_for_timeout(2000)
    shot(page, "view-uncertainty")


def test_explain_a_clicked_pixel_of_a_trained_run(page, server):
    from playwright.sync_api import expect

    open_tab(page, "Explain")
    page.locator(".fs-xp-run select").select_option(server.runs["trained"])
    page.locator(".fs-xp-method select").select_option("saliency")
    pred = page.locator(".fs-xp-prediction")
    expect(pred).to_be_visible(timeout=60_000)
    page.wait_for_timeout(2000)
    click_map_until(page, pred.locator("canvas").first, page.locator(".fs-xp-status", has_text="°N"))
    page.locator(".fs-explain button").click()
    expect(page.locator(".fs-xp-importance canvas").first).to_be_attached(timeout=180_000)
    expect(page.locator(".fs-xp-info")).to_contain_text("saliency")
    expect(page.locator(".fs-xp-maps canvas").first).to_be_attached(timeout=60_000)
    page.wait_for_timeout(2000)
    shot(page, "view-explain")
