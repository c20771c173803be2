"""CI executes the quickstart notebook: public engine API, inline training, embedded views."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(run_root):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The native kernel runs this interpreter (jupyter_client swaps the kernelspec's "python"
    # for sys.executable, the venv's), in the repository so that `app` and `engine` import the
    # working tree.
    client = nbclient.NotebookClient(nb, kernel_name=NATIVE_KERNEL_NAME, timeout=900,
                                     resources={"metadata": {"path": str(NOTEBOOK.parents[1])}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for o in outputs)
    assert "completed" in text
    # The views rendered as Panel/Bokeh widgets (a mimebundle, not just a repr string).
    bundles = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")]
    assert any("application/vnd.holoviews_exec.v0+json" in o.get("data", {}) for o in bundles)
    # The run landed in the run store the test pointed the kernel to.
    runs = [p for p in run_root.iterdir() if (p / "config.yaml").exists()]
    assert len(runs) == 1 and (runs[0] / "predictions.nc").exists()
