"""The explain view: a clicked pixel or a drawn box -> engine.explain -> maps and importance.

The fast tests stand in for the engine's ``explain_run`` with attributions in its documented
format (``engine.explain.to_dataset``); the slow one explains a really trained run."""

from __future__ import annotations

import shutil
import time

import numpy as np
import panel as pn
import pytest

from app.state import AppState
from app.views import ExplainView

from .conftest import copy_run, make_run


def _fake_attributions(run, time_label, region, method, **kw):
    from engine.explain import to_dataset

    ny, nx = 24, 32
    rng = np.random.default_rng(0)
    result = {"method": method, "output": np.array([1.0]), "region": np.zeros((ny, nx), dtype=bool),
              "x": rng.normal(size=(1, 2, ny // 4, nx // 4)), "static_hr": rng.normal(size=(1, 2, ny, nx))}
    lat = np.linspace(42.0, 46.6, ny)
    lon = np.linspace(6.0, 12.2, nx)
    ds = to_dataset(result, ["t2m", "elevation"], ["elevation", "land_mask"],
                    {"lat": lat[1::4], "lon": lon[1::4]}, {"lat": lat, "lon": lon},
                    np.array([np.datetime64("2003-07-01")]))
    ds.attrs["asked"] = repr((time_label, region, method))
    return ds


@pytest.fixture
def view(run_root, monkeypatch):
    import engine.explain
    import engine.inference

    run = make_run(run_root, name="trained")
    (run.path / "checkpoints").mkdir(exist_ok=True)
    calls = []

    def fake_explain_run(run, time, region=None, method="integrated_gradients", **kw):
        calls.append((run.run_id, time, region, method, kw))
        return _fake_attributions(run, time, region, method)

    monkeypatch.setattr(engine.explain, "explain_run", fake_explain_run)
    monkeypatch.setattr(engine.inference, "load_run", lambda run: object())
    state = AppState()
    state.poll()
    v = ExplainView(state=state)
    v.calls = calls
    return v


def test_completed_runs_with_a_checkpoint_are_offered(view, run_root):
    make_run(run_root, name="no-checkpoint")
    view.state.poll()
    assert len(view.xp.param.run.objects) == 1 and view.xp.run == view.xp.param.run.objects[0]
    assert view.xp.time == view.xp.param.time.objects[0]


def test_click_a_pixel_and_explain(view, tmp_path):
    from engine.explain import METHODS

    view.state.load_choices()
    assert view.xp.param.method.objects == list(METHODS)
    assert view.prediction_map() is not None
    view.xp.explain()
    assert "click a pixel" in view.xp.error and view.calls == []  # nothing clicked yet
    view._tap.event(x=9.0, y=44.0)
    assert view.xp.point == (44.0, 9.0) and view.xp.target == "pixel"
    assert "44.00°N" in view._status().object
    view.xp.method = "saliency"
    view.xp.explain()
    assert view.xp.error == ""
    run_id, time_label, region, method, kw = view.calls[-1]
    assert (region, method, time_label) == ((44.0, 9.0), "saliency", view.xp.time)
    maps = view.xp.channel_maps()
    assert set(maps) == {"input_t2m", "input_elevation", "static_elevation", "static_land_mask"}
    assert all(m.dims == ("lat", "lon") for m in maps.values())
    imp = view.xp.importance()
    assert list(imp["channel"]) == list(view.xp.result["channel"].values)
    assert float(imp["importance"].sum()) == pytest.approx(1.0)
    layout, bars = view.attribution_layout()
    assert len(layout) == 4 and len(bars.data) == 4
    assert view.__panel__().get_root() is not None
    # The attributions download as NetCDF with every channel's map.
    import xarray as xr

    download = view._info().select(pn.widgets.FileDownload)[0]
    assert download.filename.endswith("-attributions-saliency.nc")
    saved = tmp_path / download.filename
    saved.write_bytes(download.callback().read())
    with xr.open_dataset(saved) as ds:
        assert list(ds["channel"].values) == list(view.xp.result["channel"].values)


def test_draw_a_box_or_use_the_picked_region(view):
    view.prediction_map()
    view.xp.target = "region"
    view.xp.explain()
    assert "draw a box" in view.xp.error
    view._bounds.event(bounds=(7.0, 43.0, 9.0, 45.0))
    assert view.state.region == (43.0, 45.0, 7.0, 9.0) and view.xp.target == "region"
    view.xp.explain()
    assert view.calls[-1][2] == (43.0, 45.0, 7.0, 9.0)
    view.xp.target = "domain"
    view.xp.explain()
    assert view.calls[-1][2] is None


def test_explain_runs_off_the_event_loop_and_reports_errors(view, monkeypatch):
    import engine.explain

    def failing(*a, **k):
        time.sleep(0.2)
        raise engine.explain.ExplainError("region holds no pixel")

    monkeypatch.setattr(engine.explain, "explain_run", failing)
    view.xp.target = "domain"
    thread = view.xp.explain_async()
    assert view.xp.busy and view._go.disabled  # until the worker is done
    assert view.xp.explain_async() is None  # one at a time
    thread.join(10)
    assert not view.xp.busy and "region holds no pixel" in view.xp.error
    assert view._status().alert_type == "danger"


@pytest.mark.slow
def test_explain_a_really_trained_run(run_root, trained_run_dir):
    copy_run(trained_run_dir, run_root)
    state = AppState()
    state.poll()
    view = ExplainView(state=state)
    xp = view.xp
    assert xp.run == trained_run_dir.name
    xp.point = (46.0, 10.0)
    xp.method, xp.n_steps = "integrated_gradients", 8
    xp.explain()
    assert xp.error == "", xp.error
    ds = xp.result
    assert ds.attrs["method"] == "integrated_gradients" and "file" in ds.attrs
    imp = xp.importance()
    assert float(imp["importance"].sum()) == pytest.approx(1.0)
    # the target variable's own low-res value matters most for a downscaled temperature
    assert imp.set_index("channel")["importance"].idxmax() == "input_t2m"
    assert view.attribution_layout() is not None
    shutil.rmtree(run_root / trained_run_dir.name / "attributions", ignore_errors=True)


def test_sparse_attribution_maps_get_a_visible_colour_range():
    """A one-pixel attribution touches only its receptive field: the colour range must come from
    those values, not a unit default that renders the map blank."""
    import numpy as np

    from app.maps import robust_clim

    values = np.zeros((64, 128))
    values[30:33, 60:63] = 0.02
    assert robust_clim(values, hi=99.5, symmetric=True) == (-0.02, 0.02)
    assert robust_clim(np.zeros((4, 4)), symmetric=True) == (-1.0, 1.0)
