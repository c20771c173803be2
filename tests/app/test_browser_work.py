"""The dashboard for real work, in real headless Chromium (Debian's, through Playwright):
errors beside the fields as they are typed, the view in the URL (a link reopens it), downloads
opened and checked, and five sessions opened together, each with the template's theme.

Every wait is on page state (a selector, a text, the URL), never a sleep, so the tests hold
on a loaded machine.
"""

from __future__ import annotations

import re
import time

import pytest

from .conftest import Served, add_members, make_run, new_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: The template's accent (app/main.py): the header of a themed page has this background.
ACCENT_RGB = "rgb(31, 111, 139)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("work-runs")
    a, b = make_run(root, name="alpha"), make_run(root, name="beta")
    add_members(make_run(root, name="ensemble"), members=5)
    served = Served(root, root.parent / "browser-work-serve.log")
    served.runs = {"alpha": a.run_id, "beta": b.run_id}
    yield served
    served.close()


def _ready(page, timeout=180_000):
    from playwright.sync_api import expect

    # The catalogue and registries load after the page is shown (onload, in a thread).
    expect(page.locator(".fs-catalogue")).to_be_visible(timeout=timeout)


def _type(page, css: str, value) -> None:
    box = page.locator(f"{css} input").first
    box.fill(str(value))
    box.press("Enter")  # a spinner commits its value on Enter / blur


def test_errors_stand_beside_their_fields_and_train_waits(browser, server):
    from playwright.sync_api import expect

    page = new_page(browser)
    page.goto(server.url + "?tab=Experiment")
    train = page.locator(".fs-train button")
    expect(train).to_be_enabled(timeout=180_000)
    assert page.locator(".fs-launcher select option", has_text="inline").count() == 0
    for css, value, field, words in (
        (".fs-epochs", 0, "training-epochs", "training.epochs=0"),
        (".fs-epochs", 1000000, "training-epochs", "training.epochs=1000000"),
        (".fs-lr", 5, "training-lr", "training.lr=5"),
        (".fs-patch", 5000, "data-patch-size", "data.patch_size=5000"),
    ):
        _type(page, css, value)
        error = page.locator(f".fs-error-{field}")
        expect(error).to_contain_text(words, timeout=30_000)
        # the button follows the same validation round trip as the message: wait on it as long
        expect(train).to_be_disabled(timeout=30_000)
        # The typed value stays in the field: nothing is restored behind the user's back.
        assert page.locator(f"{css} input").first.input_value().replace(",", "") in (str(value), f"{value}.0")
        good = {".fs-epochs": 3, ".fs-lr": 0.001, ".fs-patch": 32}[css]
        _type(page, css, good)
        expect(error).to_be_hidden(timeout=30_000)
    expect(train).to_be_enabled(timeout=60_000)
    assert not page.js_errors, page.js_errors
    page.close()


def test_the_url_holds_the_view_and_a_link_reopens_it(browser, server):
    from playwright.sync_api import expect

    alpha = server.runs["alpha"]
    page = new_page(browser)
    page.goto(server.url)
    _ready(page)
    page.locator(".bk-tab", has_text="Runs").first.click()
    page.locator(".fs-runs-table .tabulator-row", has_text="alpha").first.click()
    expect(page.locator(".fs-maps-title")).to_contain_text(alpha, timeout=60_000)
    expect(page).to_have_url(re.compile(rf"tab=Runs.*run={alpha}|run={alpha}.*tab=Runs"), timeout=30_000)
    # The server has set the run's first time (and said so in the URL) before the user moves it.
    expect(page).to_have_url(re.compile(r"time=2003-07-01"), timeout=30_000)
    # Move the time one step: the URL follows.
    page.locator(".fs-time-slider .noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    expect(page).to_have_url(re.compile(r"time=2003-07-02"), timeout=30_000)
    link = page.url
    page.close()

    other = new_page(browser)
    other.goto(link)
    expect(other.locator(".fs-maps-title")).to_contain_text(alpha, timeout=180_000)
    expect(other.locator(".bk-tab.bk-active")).to_have_text("Runs")
    expect(other.locator(".fs-time-slider").first).to_contain_text("2003-07-02", timeout=30_000)
    # A link naming a run that is not there opens the dashboard and says so.
    other.goto(server.url + "?tab=Runs&run=20990101-000000-nope-000000")
    expect(other.locator(".fs-status-message")).to_contain_text("ignored from the link", timeout=180_000)
    assert not other.js_errors, other.js_errors
    other.close()


def test_downloads_open_as_what_they_claim(browser, server, tmp_path):
    import numpy as np
    import pandas as pd
    import xarray as xr
    from PIL import Image
    from playwright.sync_api import expect

    alpha = server.runs["alpha"]
    page = new_page(browser)
    page.goto(f"{server.url}?tab=Runs&run={alpha}")
    expect(page.locator(".fs-maps-title")).to_contain_text(alpha, timeout=180_000)
    files = {}
    for css in (".fs-dl-predictions", ".fs-dl-scores", ".fs-dl-maps"):
        with page.expect_download(timeout=60_000) as info:
            page.locator(f"{css} a, {css} button").first.click()
        download = info.value
        path = tmp_path / download.suggested_filename
        download.save_as(path)
        files[css] = path
    with xr.open_dataset(files[".fs-dl-predictions"]) as ds:
        assert {"truth", "model", "bicubic"} <= set(ds.data_vars) and ds.attrs["finescale_run"] == alpha
    scores = pd.read_csv(files[".fs-dl-scores"])
    assert {"model", "metric", "value"} <= set(scores.columns) and (scores["run"] == alpha).all()
    png = Image.open(files[".fs-dl-maps"])
    assert png.format == "PNG" and files[".fs-dl-maps"].name.endswith("2003-07-01.png")
    assert len(np.unique(np.asarray(png.convert("RGB")).reshape(-1, 3), axis=0)) > 100
    assert not page.js_errors, page.js_errors
    page.close()


def test_five_sessions_opened_together_each_interactive_and_themed(browser, server):
    """Five pages opened at once (five browser contexts: five sessions): each shows its
    catalogue, reacts to a click, and has the template's themed header."""
    from playwright.sync_api import expect

    first = new_page(browser)  # the server's warm-up done (app.warmup), as in production
    first.goto(server.url)
    _ready(first)
    first.close()
    pages = [new_page(browser) for _ in range(5)]
    started = time.monotonic()
    for page in pages:
        page.goto(server.url, wait_until="commit")
    took = []
    for page in pages:
        _ready(page)
        took.append(time.monotonic() - started)
    for i, page in enumerate(pages):
        header = page.locator("#header-design-provider")
        expect(header).to_be_visible()
        colour = header.evaluate("el => getComputedStyle(el).backgroundColor")
        assert colour == ACCENT_RGB, f"session {i + 1} came up without the theme ({colour})"
        page.locator(".bk-tab", has_text="Runs").first.click()
        expect(page.locator(".fs-runs-table")).to_contain_text("alpha", timeout=60_000)
        assert not page.js_errors, page.js_errors
    print("sessions interactive after (s):", [round(t, 1) for t in took])
    for page in pages:
        page.close()
