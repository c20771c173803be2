"""CI executes the quickstart notebook: public engine API, inline training, embedded views."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def _execute(path: Path):
    """Run the notebook on the native kernel; no cell may fail and the dashboard views must embed
    as live Panel/Bokeh widgets (a mimebundle, not a repr string). Returns the cells' text output."""
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    nb = nbformat.read(path, as_version=4)
    # The native kernel runs this interpreter (jupyter_client swaps the kernelspec's "python"
    # for sys.executable, the venv's), in the repository so that `app` and `engine` import the
    # working tree.
    client = nbclient.NotebookClient(nb, kernel_name=NATIVE_KERNEL_NAME, timeout=1200,
                                     resources={"metadata": {"path": str(path.parents[1])}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    bundles = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")]
    assert any("application/vnd.holoviews_exec.v0+json" in o.get("data", {}) for o in bundles)
    _check_offline_render(nb, path)
    return "".join(o.get("text", "") for o in outputs)


def _check_offline_render(nb, path: Path) -> None:
    """The executed notebook as HTML, opened in Chromium with every network request refused:
    Panel/Bokeh resources are inline (pn.extension(inline=True)), so each embedded view renders
    (plots draw canvases, tables rows) with no CDN; skipped without Chromium like the browser tests."""
    import nbconvert
    from playwright.sync_api import sync_playwright

    from tests.app.conftest import ARTIFACTS, CHROMIUM
    from tests.helpers import skip_or_fail_in_ci

    if not Path(CHROMIUM).exists():
        skip_or_fail_in_ci(f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)")
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    ARTIFACTS.mkdir(exist_ok=True)
    page_path = ARTIFACTS / f"{path.stem}.html"
    page_path.write_text(html)
    # Views shown by the notebook (a cell whose last line is a view): each must render content.
    views = sum(1 for cell in nb.cells if cell.cell_type == "code"
                and any("application/vnd.holoviews_exec.v0+json" in o.get("data", {}) for o in cell.get("outputs", [])))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        requests = []

        def refuse(route):
            requests.append(route.request.url)
            route.abort()

        page.route(lambda url: not url.startswith(("file:", "data:", "blob:")), refuse)
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_path.as_uri())
        # Bokeh is inline: it defines window.Bokeh and draws every embedded document.
        page.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length >= %d" % views,
                               timeout=120_000)
        # Views render into shadow roots: Playwright's locators look inside them.
        page.locator("canvas").first.wait_for(state="attached", timeout=120_000)
        canvases = page.locator("canvas").count()
        rendered = page.evaluate("() => Bokeh.documents.length")
        page.screenshot(path=str(ARTIFACTS / f"{path.stem}-offline.png"), full_page=True)
        browser.close()
    # nbconvert's own page template asks for require.js and MathJax; the views need nothing.
    views_cdn = [u for u in requests if any(k in u.lower() for k in ("bokeh", "panel", "holoviews", "tabulator", "jquery"))]
    assert not views_cdn, f"view resources fetched from the network: {views_cdn[:5]}"
    assert rendered >= views, (rendered, views)
    assert canvases >= views, f"{canvases} canvases drawn for {views} views"
    assert not [e for e in errors if "Bokeh" in e or "panel" in e.lower()], errors


@pytest.mark.slow
def test_quickstart_notebook_runs(run_root):
    text = _execute(NOTEBOOK)
    assert "completed" in text
    # The run landed in the run store the test pointed the kernel to.
    runs = [p for p in run_root.iterdir() if (p / "config.yaml").exists()]
    assert len(runs) == 1 and (runs[0] / "predictions.nc").exists()


@pytest.mark.slow
def test_bring_your_own_data_notebook_runs(run_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FINESCALE_BYOD_DIR", str(tmp_path / "byod"))
    (tmp_path / "byod").mkdir()
    text = _execute(NOTEBOOK.parent / "bring_your_own_data.ipynb")
    assert "my_t2m" in text and "my_t2m_zarr" in text and "land share" in text
    assert (tmp_path / "byod" / "my_static.nc").exists()
    assert "form error: none" in text
    # a Lambert-conformal file, and MOS (tg [degC] from tas [K], slp predictors on their own grid)
    # trained and predicted on the observations' projected grid
    assert "Grid(kind='projected'" in text and "input channels ['tg', 'psl']" in text
    assert "MOS prediction on the target grid: projected {'time': 16, 'y': 34, 'x': 40} degC" in text


@pytest.mark.slow
def test_uncertainty_and_attributions_notebook_runs(run_root):
    text = _execute(NOTEBOOK.parent / "uncertainty_and_attributions.ipynb")
    assert "completed" in text and "6 members" in text and "spread-skill ratio" in text
    runs = [p for p in run_root.iterdir() if (p / "config.yaml").exists()]
    assert len(runs) == 1 and list((runs[0] / "attributions").glob("*.nc"))
