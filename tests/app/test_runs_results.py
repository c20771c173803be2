"""The runs list, progress and results of the dashboard, from real run folders (no browser)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import panel as pn
import pytest

from app.state import AppState
from app.views import ResultsView, RunsView

from .conftest import make_run


def test_poll_lists_every_run_in_the_store_newest_first(run_root, live_job):
    old = make_run(run_root, name="cli-run", state="completed", launcher="slurm", job_id="123456")
    new = make_run(run_root, name="running", state="running", results=False, **live_job)
    state = AppState()
    assert state.run_root == str(run_root)
    state.poll()
    ids = [row["run_id"] for row in state.runs]
    assert set(ids) == {old.run_id, new.run_id}
    by_id = {row["run_id"]: row for row in state.runs}
    assert by_id[old.run_id]["launcher"] == "slurm"
    assert by_id[old.run_id]["job_id"] == "123456"
    assert by_id[old.run_id]["state"] == "completed"
    assert by_id[old.run_id]["rmse"] == pytest.approx(0.5)
    assert by_id[old.run_id]["epoch"] == "3/3"
    assert by_id[new.run_id]["state"] == "running"
    assert by_id[new.run_id]["progress"] == pytest.approx(1 / 3)
    assert by_id[new.run_id]["name"] == "running"


def test_poll_sees_a_run_created_later_and_status_changes(run_root, live_job):
    state = AppState()
    state.poll()
    assert state.runs == []
    run = make_run(run_root, state="running", results=False, **live_job)
    state.poll()
    assert [r["state"] for r in state.runs] == ["running"]
    run.update_status(state="failed", error="boom")
    state.selected_run = run.run_id
    state.poll()
    assert [r["state"] for r in state.runs] == ["failed"]
    assert state.run_status["error"] == "boom"


def test_poll_does_not_reassign_unchanged_runs(run_root):
    make_run(run_root)
    state = AppState()
    state.poll()
    seen = []
    state.param.watch(lambda event: seen.append(event), "runs")
    state.poll()
    assert seen == []  # views re-render only when something changed


def test_selecting_a_run_loads_progress_loss_history_and_logs(finished_run):
    state = AppState()
    state.poll()
    state.selected_run = finished_run.run_id
    assert state.run_status["state"] == "completed"
    history = state.loss_history
    assert set(history["metric"]) == {"train_loss", "val_loss"}
    assert history[history.metric == "train_loss"]["value"].tolist() == pytest.approx([1, 1 / 2, 1 / 3])
    assert "epoch 0 done" in state.log_tail


@pytest.mark.parametrize("bad", ["../etc", "/etc/passwd", "..", "nope"])
def test_selected_run_is_confined_to_the_run_root(run_root, bad):
    state = AppState()
    state.selected_run = bad
    assert state.selected_run is None
    assert state.predictions is None
    assert state.message


def test_results_of_a_finished_run(finished_run):
    state = AppState()
    state.selected_run = finished_run.run_id
    assert len(state.times) == 4
    assert state.selected_time == state.times[0]
    assert state.param.selected_time.objects == state.times
    # Scores: one row per model, one column per metric, the model first.
    scores = state.scores
    assert list(scores["model"]) == ["model", "bicubic", "bilinear"]
    assert scores.set_index("model").loc["bicubic", "rmse"] == pytest.approx(1.0)
    # Maps: masked where mask == 0, and a different field at another time.
    truth0 = state.map_field("truth")
    assert truth0.dims == ("lat", "lon") and np.isnan(truth0.values[0, 0])
    state.selected_time = state.times[2]
    truth2 = state.map_field("truth")
    assert not np.allclose(truth0.values[1:], truth2.values[1:])
    ds = state.predictions
    np.testing.assert_allclose(truth2.values[1:, 1:], ds["truth"].isel(time=2).values[1:, 1:])
    # RMSE field: per pixel over the period, by hand.
    rmse = state.map_field("rmse")
    expected = np.sqrt(((ds["model"] - ds["truth"]) ** 2).mean("time")).values
    np.testing.assert_allclose(rmse.values[1:, 1:], expected[1:, 1:])
    assert np.isnan(rmse.values[0, 0])


def test_deselecting_clears_results(finished_run):
    state = AppState()
    state.selected_run = finished_run.run_id
    version = state.results_version
    state.selected_run = None
    assert state.predictions is None and state.times == [] and state.scores is None
    assert state.results_version > version


def test_results_appear_when_a_running_run_writes_predictions(run_root, live_job):
    from .conftest import write_predictions, write_scores

    run = make_run(run_root, state="running", results=False, **live_job)
    state = AppState()
    state.selected_run = run.run_id
    assert state.predictions is None
    write_predictions(run)
    write_scores(run)
    run.update_status(state="completed", progress=1.0)
    state.poll()
    assert state.predictions is not None and state.scores is not None


def test_results_view_has_four_linked_maps_with_coastlines(finished_run):
    import holoviews as hv

    state = AppState()
    state.selected_run = finished_run.run_id
    view = ResultsView(state=state)
    layout = view.maps()
    assert isinstance(layout, hv.Layout) and len(layout) == 4
    titles = []
    for panel in layout:
        overlay = panel[()] if isinstance(panel, hv.DynamicMap) else panel
        image = overlay.get(0)
        titles.append(hv.Store.lookup_options("bokeh", image, "plot").kwargs.get("title"))
        assert [d.name for d in image.kdims] == ["lon", "lat"]
        contours = overlay.get(1)
        assert isinstance(contours, hv.Contours)
    # Every map of a time says its date; the RMSE (over the period) does not.
    assert titles[:3] == [f"{t} — 2003-07-01" for t in ("Truth", "Bicubic", "Model")] and titles[3].startswith("RMSE")
    # Temperature in a sequential map, the RMSE in another one starting at 0.
    truth_opts = hv.Store.lookup_options("bokeh", layout[0][()].get(0), "style").kwargs
    assert truth_opts["cmap"][0] != truth_opts["cmap"][-1] and len(truth_opts["cmap"]) == 256
    # The grid spans the Ligurian coast: the real land mask's 0.5 contour has line segments.
    coast = layout[3].get(1)
    assert len(coast.split()) >= 1 and len(coast.dimension_values("lon")) > 2
    # Renders to a bokeh model without a browser.
    root = view.__panel__().get_root()
    assert root is not None


def test_results_view_time_change_updates_the_dynamic_maps(finished_run):
    import holoviews as hv

    state = AppState()
    state.selected_run = finished_run.run_id
    layout = ResultsView(state=state).maps()
    truth = layout[0]
    assert isinstance(truth, hv.DynamicMap)
    first = truth[()].get(0).dimension_values(2, flat=False).copy()
    state.selected_time = state.times[3]
    later = truth[()].get(0).dimension_values(2, flat=False)
    assert not np.allclose(np.nan_to_num(first), np.nan_to_num(later))


def test_results_view_without_a_run_says_what_to_do(run_root):
    view = ResultsView(state=AppState())
    assert view.maps() is None
    panel = view._maps_pane()
    assert "Maps appear here" in panel.object


def test_runs_view_table_and_selection(run_root, live_job):
    a = make_run(run_root, name="a")
    b = make_run(run_root, name="b", state="running", results=False, **live_job)
    state = AppState()
    state.poll()
    view = RunsView(state=state)
    view.__panel__().get_root()
    table = view._table
    assert isinstance(table.value, pd.DataFrame)
    assert set(table.value["run_id"]) == {a.run_id, b.run_id}
    assert {"launcher", "job_id", "state", "progress"} <= set(table.value.columns)
    # A click on a row selects the run for the whole dashboard.
    row = list(table.value["run_id"]).index(b.run_id)
    table.selection = [row]
    assert state.selected_run == b.run_id
    status = view._status()
    assert "running" in status.object and b.run_id in status.object
    assert view._cancel.disabled is False
    # Selecting from the state side moves the table selection.
    state.selected_run = a.run_id
    assert table.selection == [list(table.value["run_id"]).index(a.run_id)]
    view._status()
    assert view._cancel.disabled is True  # a completed run cannot be cancelled
    curve = view._loss_curve()
    assert isinstance(curve, pn.pane.HoloViews)


def test_cancel_of_a_finished_run_only_says_so(finished_run):
    state = AppState()
    state.cancel(finished_run.run_id)
    assert "already completed" in state.message


def test_a_job_that_died_is_shown_died(run_root):
    run = make_run(run_root, state="running", results=False, launcher="local", job_id="999999999")
    state = AppState()
    state.poll()
    assert state.runs[0]["state"] == "died"  # the launcher noticed; status.json says so too
    assert run.state == "died"


def test_cancel_a_running_job(run_root, live_job):
    import os
    import time

    run = make_run(run_root, state="running", results=False, **live_job)
    state = AppState()
    state.poll()
    state.selected_run = run.run_id
    view = RunsView(state=state)
    view._status()
    assert not view._cancel.disabled
    view._cancel.clicks += 1  # the button's click, as the browser sends it
    assert run.state == "cancelled"
    assert state.runs[0]["state"] == "cancelled"
    assert "Cancelled" in state.message
    pid = int(live_job["job_id"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"job process {pid} still alive after cancel")


def test_large_grids_are_rasterized(finished_run, monkeypatch):
    import holoviews as hv

    from app.views import results

    monkeypatch.setattr(results, "RASTERIZE_ABOVE", 10)  # the fake grid (24 x 32) counts as large
    state = AppState()
    state.selected_run = finished_run.run_id
    layout = ResultsView(state=state).maps()
    assert len(layout) == 4
    for panel in layout:
        assert isinstance(panel, hv.DynamicMap)  # rasterize makes every map dynamic
    ResultsView(state=state).__panel__().get_root()


def test_panel_serve_app_serves_the_page_on_localhost(served_app, finished_run):
    """``panel serve app`` (what ``make app`` runs) answers on 127.0.0.1 with the template."""
    import urllib.request

    assert served_app.startswith("http://127.0.0.1:")
    html = urllib.request.urlopen(served_app, timeout=30).read().decode()
    assert "finescale" in html


def test_a_failed_runs_error_is_shown_as_plain_text(run_root):
    run = make_run(run_root, state="failed", results=False, error="<script>alert(1)</script> ``` boom")
    state = AppState()
    state.selected_run = run.run_id
    shown = RunsView(state=state)._status()
    error = shown.objects[1]
    assert isinstance(error, pn.pane.Str) and "boom" in error.object


def test_runs_table_has_variable_units_and_full_state_and_picks_runs_for_compare(run_root):
    from app.analysis import CompareState

    a = make_run(run_root, name="a")
    b = make_run(run_root, name="b")
    state = AppState()
    state.poll()
    view = RunsView(state=state)
    frame = view._table.value
    assert {"variable", "units", "state", "rmse"} <= set(frame.columns)
    assert set(frame["variable"]) == {"t2m"} and set(frame["units"]) == {"K"}  # demo_alps t2m is in K
    assert set(frame["state"]) == {"completed"}
    assert view._table.widths["state"] >= 100  # "completed" is never cut to "completec"
    cmp = CompareState(app=state)
    # Two rows ticked in the table: the last is the selected run, both are compared.
    view._table.selection = [0, 1]
    assert set(state.picked_runs) == {a.run_id, b.run_id}
    assert state.selected_run in {a.run_id, b.run_id}
    assert set(cmp.runs) == {a.run_id, b.run_id}


def test_live_progress_from_step_events(run_root, live_job):
    run = make_run(run_root, name="live", state="running", results=False, **live_job)
    import datetime as dt

    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=60)
    run.update_status(started=start.isoformat(), progress=0.5)
    # Two step events 10 s apart, 20 steps of batch 16 (ExperimentConfig's default batch) between.
    batch = run.config.training.batch_size
    for step, t in ((10, start + dt.timedelta(seconds=40)), (30, start + dt.timedelta(seconds=50))):
        with open(run.events_path, "a") as fh:
            import json

            fh.write(json.dumps({"time": t.isoformat(), "kind": "step", "epoch": 1, "step": step, "loss": 0.25}) + "\n")
    state = AppState()
    state.poll()
    state.selected_run = run.run_id
    info = state.progress_info
    assert info["epoch"] == 2 and info["step"] == 31 and info["loss"] == pytest.approx(0.25)
    assert info["samples_per_s"] == pytest.approx(20 * batch / 10.0)
    # Half done after about 60 s: about 60 s to go.
    assert 50 <= info["eta_s"] <= 90
    assert any(r["metric"] == "loss (step)" for r in state.step_log)
    text = RunsView(state=state)._status().object
    assert "step 31" in text and "samples/s" in text and "ETA" in text


def test_downloads_are_the_runs_files_and_a_png_of_the_maps(finished_run, tmp_path):
    import xarray as xr
    from PIL import Image

    from app import downloads

    state = AppState()
    state.selected_run = finished_run.run_id
    view = ResultsView(state=state)
    row = view.downloads()
    names = [w.filename for w in row]
    assert names[0] == f"{finished_run.run_id}-predictions.nc" and names[1].endswith("-scores.csv")
    assert names[2].endswith("-maps-2003-07-01.png")
    saved = tmp_path / names[0]
    saved.write_bytes(downloads.predictions_file(state).read())
    with xr.open_dataset(saved) as ds:
        assert {"truth", "model", "bicubic"} <= set(ds.data_vars) and ds["truth"].attrs["units"] == "K"
    scores = pd.read_csv(downloads.scores_file(state))
    assert scores.set_index(["model", "metric"]).loc[("model", "rmse"), "value"] == pytest.approx(0.5)
    png = Image.open(view.maps_png())
    assert png.format == "PNG" and png.size[0] > 600 and png.size[1] > 400
    pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 100  # coloured maps, not a blank canvas
    with pytest.raises(FileNotFoundError):
        other = make_run(finished_run.path.parent, name="empty", results=False)
        downloads.predictions_file(state, other.run_id)
