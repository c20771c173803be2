"""What a page costs the browser (app.pagecost, app.main): canvas maps, no MathJax bundle
unless a page has TeX."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import Served, record_js_errors


def _bundle_js(*objs) -> list[str]:
    """The JavaScript files Panel's server page would load for documents holding ``objs``."""
    import panel as pn
    from bokeh.document import Document
    from bokeh.resources import Resources
    from panel.io.resources import bundle_resources

    doc = Document()
    for obj in objs:
        doc.add_root(pn.panel(obj).get_root(doc))
    return [str(f) for f in bundle_resources(doc.roots, Resources(mode="server")).js_files]


def test_mathjax_bundle_only_for_pages_with_tex():
    import panel as pn

    from app import pagecost

    pagecost.configure()
    plain = _bundle_js(pn.pane.Markdown("Runs are kept in **$FINESCALE_RUNS** (a 5 $ fee)"),
                       pn.pane.HTML("<b>$$x$$</b>"))  # an HTML pane has math disabled by default
    assert plain and not any("mathjax" in f for f in plain), plain
    assert any("bokeh-widgets" in f for f in plain)  # the other bundles stay
    with_tex = _bundle_js(pn.pane.Markdown("The loss is $$\\sum_i (y_i - \\hat y_i)^2$$"))
    assert any("bokeh-mathjax" in f for f in with_tex), with_tex


def test_maps_are_drawn_on_a_canvas_not_webgl():
    import holoviews as hv
    import numpy as np

    from app import pagecost

    pagecost.configure()
    pagecost.configure()  # idempotent
    plot = hv.renderer("bokeh").get_plot(hv.Image(np.random.default_rng(0).random((4, 5))))
    assert plot.state.output_backend == "canvas"


@pytest.mark.browser
@pytest.mark.slow
def test_a_served_page_loads_no_mathjax_and_draws_canvas_maps(browser, tmp_path):
    """On a warm server the page loads no MathJax bundle and its maps are canvases."""
    from playwright.sync_api import expect

    root = tmp_path / "runs"
    root.mkdir()
    served = Served(root, tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 300
        while "finescale warm-up done" not in Path(served.log_path).read_text():
            assert time.monotonic() < deadline, "the server's warm-up did not end"
            time.sleep(0.5)
        context = browser.new_context(viewport={"width": 1500, "height": 1600})
        page = context.new_page()
        record_js_errors(page)
        urls = []
        page.on("request", lambda request: urls.append(request.url))
        page.goto(served.url)
        expect(page.locator(".fs-catalogue")).to_be_visible(timeout=180_000)
        expect(page.locator(".fs-data-maps canvas").first).to_be_attached(timeout=180_000)
        assert not [u for u in urls if "mathjax" in u], urls
        backends = page.evaluate("""() => [...Bokeh.documents[0]._all_models.values()]
                                    .filter((m) => m.type === "Figure").map((m) => m.output_backend)""")
        assert backends and set(backends) == {"canvas"}, backends
        assert not page.js_errors, page.js_errors
        context.close()
    finally:
        served.close()
