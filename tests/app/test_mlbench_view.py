"""The ML-Bench tab: a real ML-Bench run (stand-in archive, DeepESD, 2 epochs) scored and drawn
through the engine's scorecard and index maps, shared between sessions, errors shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.document import Document

from app import cache
from app.mlbench import MLBenchState, index_choices, mlbench_runs
from app.state import AppState
from app.views.mlbench import MLBenchView
from tests.app.conftest import make_run

pytestmark = pytest.mark.slow  # trains a real (small) ML-Bench run once for the module


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A run store with one ML-Bench run (ALPS stand-in, ESD pseudo-reality) and one ordinary run."""
    from engine.mlbench.experiments import MLBenchConfig, train
    from engine.mlbench.standin import generate_standin

    archive = generate_standin("ALPS", tmp_path_factory.mktemp("mlbench"), train_years=1, test_years=1,
                               days_per_year=30)
    root = tmp_path_factory.mktemp("runs")
    cfg = MLBenchConfig(domain="ALPS", experiment="ESD_pseudo_reality", model="deepesd", epochs=2, root=str(archive))
    run = train(cfg, root, log=lambda s: None)
    make_run(root, name="ordinary")
    return root, Path(run), archive


def _state(root):
    app = AppState(run_root=str(root))
    app.poll()
    return app, MLBenchState(app=app)


def test_only_mlbench_runs_are_offered_with_their_test_files(store):
    root, run, _ = store
    app, mb = _state(root)
    assert len(app.runs) == 2
    assert mlbench_runs(app) == [run.name] == mb.param.runs.objects
    assert mb.run == run.name
    from engine.mlbench.protocol import EXPERIMENTS, get_domain

    dom = get_domain("ALPS")
    expected = list(dict.fromkeys(f"{t.period}/{t.mode}/{t.gcm(dom)}" for t in EXPERIMENTS["ESD_pseudo_reality"].tests))
    assert mb.param.test.objects == expected and mb.test == expected[0] == "historical/perfect/CNRM-CM5"
    assert index_choices("tasmax") == ["mean", "txx", "txn", "su", "lag1_autocorr", "interannual_var"]  # no q98
    mb.variable = "pr"
    assert mb.param.index.objects == index_choices("pr") and "rx1day" in mb.param.index.objects
    assert mb.index == "mean"


def test_scorecard_is_the_engines_and_shared_between_sessions(store):
    from engine.mlbench.scoring import scorecard

    root, run, _ = store
    _, mb = _state(root)
    mb.score()
    assert mb.error == "Choose at least one ML-Bench run to score." and mb.table is None
    mb.runs = [run.name]
    mb.score()
    assert mb.error == "" and not mb.busy and mb.version == 1
    expected = scorecard([run])
    assert list(mb.table.columns) == list(expected.columns)
    np.testing.assert_allclose(mb.table[mb.score_columns()].values.astype(float),
                               expected[mb.score_columns()].values.astype(float), equal_nan=True)
    assert set(mb.table.model) == {"deepesd", "interpolation", "linear_regression", "climatology"}
    _, other = _state(root)  # another session: the same table object, computed once
    other.runs = [run.name]
    other.score()
    assert other.table is mb.table
    loads = [n for key, n in cache.LOADS.items() if key[0] == "mlbench-scorecard"]
    assert loads == [1]


def test_index_maps_against_the_truth_file_and_errors(store):
    from engine.mlbench.protocol import open_cf, truth_path

    root, run, archive = store
    _, mb = _state(root)
    mb.load_maps()
    assert mb.error == "" and mb.maps_version == 1
    ds = mb.maps
    assert set(ds.data_vars) == {"truth", "model", "bias"} and ds["truth"].dims == ("y", "x")
    with open_cf(truth_path(Path(archive), "historical", "CNRM-CM5")) as t:
        by_hand = t["tasmax"].values.mean(axis=0)  # the "mean" index: the time mean of every cell
    np.testing.assert_allclose(ds["truth"].values, by_hand, rtol=1e-5)
    np.testing.assert_allclose(ds["bias"].values, ds["model"].values - ds["truth"].values, atol=1e-4)
    mb.season = "JJA"  # the stand-in's test file holds 30 January days
    mb.load_maps()
    assert "no JJA days in the data" in mb.error and mb.maps is ds and not mb.busy


def test_view_renders_table_and_rasterized_maps(store):
    root, run, _ = store
    app, _ = _state(root)
    view = MLBenchView(state=app)
    view.mb.runs = [run.name]
    view.mb.score()
    view.mb.load_maps()
    root_model = pn.panel(view).get_root(Document())
    classes = {c for m in root_model.select({"type": object}) for c in (getattr(m, "css_classes", None) or [])}
    assert {"fs-mb-table", "fs-mb-maps", "fs-mb-runs", "fs-mb-spectra"} <= classes
    # the scorecard is coloured column by column: every row of a score column has a background
    styles = [m.cell_styles["data"] for m in root_model.select({"type": object}) if getattr(m, "cell_styles", None)]
    assert len(styles) == 1 and len(styles[0]) == len(view.mb.table)
    assert all(any(k == "background-color" for cell in row.values() for k, _ in cell) for row in styles[0].values())
    from app.views.mlbench import _column_colours

    colours = _column_colours(pd.Series([1.0, np.nan, 3.0, 2.0]))
    assert colours[1] == "" and colours[0] != colours[2] != colours[3] != colours[0]
    assert colours[0] == _column_colours(pd.Series([5.0, 9.0]))[0]  # the lowest is always the same green
    assert len(view.map_layout()) == 3  # truth, model, bias
    empty = MLBenchView(state=AppState(run_root=str(root / "nothing")))
    assert empty.map_layout() is None


def test_a_clicked_cell_draws_its_run_test_file_and_index_with_spectra(store):
    """A click on a model's cell: the maps of that row's run and test file and the column's index
    (a bias column draws that index, any other the mean), and the spectra, equal to the engine's
    radial_psd of the truth and submission files; a baseline's row says why nothing is drawn."""
    import xarray as xr

    from engine.evaluation.diagnostics import radial_psd
    from engine.mlbench.protocol import get_domain, get_experiment, open_cf, submission_file, truth_path

    root, run, archive = store
    app, mb = _state(root)
    mb.runs = [run.name]
    mb.score()
    table = mb.table
    row = int(np.flatnonzero((table.model == "deepesd") & (table.period == "mid_century"))[0])
    mb.select_cell(row, "pr_bias_rx1day")
    assert not mb.error, mb.error
    record = table.iloc[row]
    assert mb.run == run.name and mb.test == f"{record.period}/{record['mode']}/{record.gcm}"
    assert (mb.variable, mb.index) == ("pr", "rx1day") and mb.maps.attrs["index"] == "rx1day"
    dom, exp = get_domain("ALPS"), get_experiment("ESD_pseudo_reality")
    with open_cf(truth_path(archive, "mid_century", record.gcm)) as t, \
            open_cf(submission_file(run / "submission", dom, exp, "mid_century", record["mode"], record.gcm)) as p:
        np.testing.assert_allclose(mb.spectra["truth"].values, radial_psd(t["pr"]).values, rtol=1e-6)
        np.testing.assert_allclose(mb.spectra["model"].values, radial_psd(p["pr"].transpose(*t["pr"].dims)).values,
                                   rtol=1e-6)
    mb.select_cell(row, "tasmax_rmse")
    assert (mb.variable, mb.index) == ("tasmax", "mean") and not mb.error
    baseline = int(np.flatnonzero(table.model == "climatology")[0])
    mb.select_cell(baseline, "tasmax_rmse")
    assert "climatology is a baseline" in mb.error


def test_extrapolation_skill_side_by_side_from_the_scorecard(store):
    """Historical and end-century RMSE of each model and experiment (perfect predictors, the
    domain's GCM), read from the scorecard rows by hand."""
    root, run, _ = store
    app, mb = _state(root)
    mb.runs = [run.name]
    mb.score()
    wide = mb.extrapolation("tasmax")
    t = mb.table
    for r in wide.itertuples():
        pick = t[(t.model == r.model) & (t.experiment == r.experiment) & (t["mode"] == "perfect")
                 & ~t.test.str.contains("transferability")]
        assert r.historical == float(pick[pick.period == "historical"].tasmax_rmse.iloc[0])
        assert r.end_century == float(pick[pick.period == "end_century"].tasmax_rmse.iloc[0])
    assert {"deepesd", "climatology", "linear_regression"} <= set(wide.model)
    view = MLBenchView(state=app, mb=mb)
    assert view.extrapolation_plot() is not None
