"""The MOS walkthrough notebook runs end to end on the public engine API."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "mos_walkthrough.ipynb"


@pytest.mark.slow
def test_mos_walkthrough_runs(tmp_path, monkeypatch):
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    monkeypatch.setenv("FINESCALE_MOS_DIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name=NATIVE_KERNEL_NAME, timeout=1200,
                            resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "entry 'reanalysis' on its native grid" in text
    assert "at least 30 training values" in text
    assert "members: 2" in text and "('member', 'time', 'lat', 'lon')" in text
    assert "best baseline on validation" in text and "crps" in text
    assert (tmp_path / "runs").exists()
