"""The ML-Bench tab: a real ML-Bench run (stand-in archive, DeepESD, 2 epochs) scored and drawn
through the engine's scorecard and index maps, shared between sessions, errors shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    assert {"fs-mb-table", "fs-mb-maps", "fs-mb-runs"} <= classes
    assert len(view.map_layout()) == 3  # truth, model, bias
    empty = MLBenchView(state=AppState(run_root=str(root / "nothing")))
    assert empty.map_layout() is None
