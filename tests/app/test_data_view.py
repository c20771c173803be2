"""The data view without a browser: catalogue table, LR/HR/static maps, time, region picker."""

from __future__ import annotations

import numpy as np
import pytest

from app.state import AppState
from app.views import DataView


@pytest.fixture
def view(run_root):
    state = AppState()
    state.load_choices()
    v = DataView(state=state)
    v.data.open()
    return v


def test_catalogue_table_lists_every_entry_with_roles_and_units(view):
    from engine.data import catalog

    table = view.data.table()
    assert list(table["entry"]) == catalog.list_entries()
    row = table.set_index("entry").loc["demo_alps"]
    assert row["role"] == "highres" and "t2m" in row["variables"] and "K" in row["units"]
    assert "2001" in row["time span"] and "°" in row["grid"] and "demo_alps_gcm" in row["pairs with"]
    assert set(table["role"]) >= {"highres", "lowres"}


def test_fields_lr_is_the_hr_coarsened_by_the_scale_and_static_is_real(view):
    state, data = view.state, view.data
    assert len(data.times) > 300 and data.time_label.startswith("2001-01-01")
    fields = data.fields()
    hr, lr = fields["hr"], fields["lr"]
    assert hr.dims == ("lat", "lon") and lr.shape == (hr.shape[0] // state.scale, hr.shape[1] // state.scale)
    np.testing.assert_allclose(float(lr[0, 0]), float(hr[:state.scale, :state.scale].mean()), rtol=1e-5)
    assert {"elevation", "land_mask"} <= set(fields)
    assert float(fields["elevation"].max()) > 2000  # the Alps
    data.time_index = 180  # summer is warmer than New Year's day in the Alps
    assert float(data.fields()["hr"].mean()) > float(hr.mean()) + 5


def test_mos_maps_read_the_low_resolution_entry(view):
    state = view.state
    state.options.data_downscaling = "mos"
    state.options.data_lowres = "demo_alps_gcm"
    lr = view.data.fields()["lr"]
    hr = view.data.fields()["hr"]
    assert lr.shape != (hr.shape[0] // state.scale, hr.shape[1] // state.scale)  # 0.3° grid, not HR / 4


def test_region_picker_sets_the_shared_region_clipped_to_the_domain(view):
    state = view.state
    layout = view.map_layout()
    assert len(layout) == 4  # HR, LR, elevation, land mask
    assert view._bounds is not None
    view._bounds.event(bounds=(8.0, 44.0, 10.0, 46.5))  # (lon0, lat0, lon1, lat1), as BoundsXY sends it
    assert state.region == (44.0, 46.5, 8.0, 10.0)
    assert "44.00–46.50°N" in view._region().object and "pixels" in view._region().object
    view._bounds.event(bounds=(0.0, 40.0, 9.0, 45.0))  # partly outside: clipped
    lat0, lat1, lon0, lon1 = state.region
    assert lat0 == pytest.approx(43.04, abs=0.05) and lon0 == pytest.approx(5.04, abs=0.05)
    view._bounds.event(bounds=(-30.0, 0.0, -20.0, 10.0))  # all outside: no region
    assert state.region is None
    view._bounds.event(bounds=(8.0, 44.0, 10.0, 46.5))
    view._clear.clicks += 1
    assert state.region is None


def test_region_becomes_the_training_box_on_request(view):
    state = view.state
    state.region = (44.0, 46.0, 8.0, 10.0)
    assert state.build_config().data.bbox is None  # only when asked
    state.use_region = True
    assert state.build_config().data.bbox == (44.0, 46.0, 8.0, 10.0)
    assert state.config_error == ""
    state.dataset = "demo_alps_gcm" if "demo_alps_gcm" in state.param.dataset.objects else state.dataset
    state.dataset = "demo_alps"


def test_data_view_renders_maps_and_a_selectors_only_copy(view):
    assert view.__panel__().get_root() is not None
    assert view._maps().object is not None
    side = DataView(state=view.state, maps=False)
    assert side.data is None and side.__panel__().get_root() is not None


def test_remote_entries_are_not_opened(run_root, monkeypatch):
    from engine.data import catalog

    remote = [n for n in catalog.list_entries() if catalog.entry_metadata(n).get("remote")]
    if not remote:
        pytest.skip("no remote entry in the catalogue")
    state = AppState()
    state.load_choices()
    view = DataView(state=state)

    def boom(*a, **k):
        raise AssertionError("a remote entry was opened")

    monkeypatch.setattr(catalog, "open_dataset", boom)
    state.dataset = remote[0]
    view.data.open()
    assert "remote" in view.data.error and view.data.fields() == {}
