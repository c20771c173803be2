"""Compare and uncertainty views without a browser, on run folders in the documented format."""

from __future__ import annotations

import numpy as np
import pytest

from app.state import AppState
from app.views import CompareView, UncertaintyView

from .conftest import add_members, make_run, write_season_scores


@pytest.fixture
def two_runs(run_root):
    a = make_run(run_root, name="alpha")
    b = make_run(run_root, name="beta")
    write_season_scores(a, 0.5)
    write_season_scores(b, 0.4)
    return a, b


@pytest.fixture
def compare(two_runs):
    state = AppState()
    state.poll()
    view = CompareView(state=state)
    view.cmp.runs = [r.run_id for r in two_runs]
    return view


def test_choices_are_runs_with_predictions(run_root, two_runs):
    make_run(run_root, name="nothing-yet", state="failed", results=False)
    state = AppState()
    state.poll()
    view = CompareView(state=state)
    assert set(view.cmp.param.runs.objects) == {r.run_id for r in two_runs}
    assert view.cmp.runs == []
    assert "Pick one or more runs" in view._maps_pane().object


def test_maps_truth_baselines_runs_errors_and_rmse(compare, two_runs):
    cmp = compare.cmp
    assert cmp.time == cmp.param.time.objects[0] and len(cmp.param.time.objects) == 4
    assert cmp.param.baselines.objects == ["bicubic"]  # what the predictions hold
    labels = [label for label, _, _ in cmp.sources()]
    assert labels[0] == "bicubic" and any("alpha" in l for l in labels) and any("beta" in l for l in labels)
    layout = compare.maps()
    # truth + bicubic + 2 runs; 3 error maps; 3 RMSE maps
    assert len(layout) == 4 + 3 + 3
    a = two_runs[0]
    err = cmp.error(a.run_id, "model")
    np.testing.assert_allclose(err.values, (cmp.field(a.run_id, "model") - cmp.truth()).values)
    assert np.isnan(err.values[0, 0])  # masked pixel
    t0 = cmp.truth().values.copy()
    cmp.time = cmp.param.time.objects[2]
    assert not np.allclose(cmp.truth().values, t0, equal_nan=True)
    rmse = cmp.rmse_map(a.run_id, "model")
    assert rmse.dims == ("lat", "lon") and 0.3 < float(rmse.mean()) < 0.7  # model = truth + N(0, 0.5)
    assert compare.__panel__().get_root() is not None


def test_scores_by_season_and_region_with_the_picked_region(compare):
    cmp = compare.cmp
    by_season = cmp.scores_table("season")
    assert set(by_season["season"]) == {"JJA", "SON"}
    assert set(by_season["model"]) == {"model", "bicubic"}
    assert {"rmse", "mae", "bias"} <= set(by_season.columns)
    alpha = by_season[by_season.run.str.contains("alpha") & (by_season.model == "model")]
    assert alpha.set_index("season")["rmse"].to_dict() == pytest.approx({"JJA": 0.45, "SON": 0.55})
    by_region = cmp.scores_table("region")
    assert set(by_region["region"]) == {"domain", "alps"}
    compare.state.region = (43.0, 45.0, 7.0, 10.0)
    by_region = cmp.scores_table("region")
    picked = by_region[(by_region.region == "picked") & (by_region.model == "model")]
    assert len(picked) == 2 and picked["rmse"].between(0.3, 0.7).all()
    cmp.breakdown = "region"
    assert "picked" in compare._scores().object.to_string()


def test_tap_gives_the_time_series_at_the_point(compare):
    compare.maps()
    assert compare._taps
    compare._taps[0].event(x=9.0, y=44.5)  # lon, lat as the Tap stream sends them
    assert compare.cmp.point == (44.5, 9.0)
    series = compare.cmp.series()
    assert set(series["source"]) == {"truth", "bicubic"} | {l for l, _, _ in compare.cmp.sources()}
    assert len(series) == 4 * len(set(series["source"]))
    assert compare._series().object is not None


def test_spectra_of_every_source(compare):
    df = compare.cmp.spectra()
    assert set(df["source"]) >= {"truth", "bicubic"} and (df["power"] >= 0).all()
    # noisier fields (bicubic = truth + N(0, 1)) carry more small-scale power than the truth
    small = df[df.wavelength == df.wavelength.min()].set_index("source")["power"]
    assert small["bicubic"] > small["truth"]


# -- uncertainty ---------------------------------------------------------------------------
@pytest.fixture
def ensemble(run_root):
    make_run(run_root, name="deterministic")
    run = make_run(run_root, name="ens")
    add_members(run, members=5, spread=0.5)
    state = AppState()
    state.poll()
    return run, UncertaintyView(state=state)


def test_only_runs_with_members_are_offered(ensemble):
    run, view = ensemble
    assert view.ens.param.run.objects == [run.run_id] and view.ens.run == run.run_id
    assert view.ens.members == 5 and view.ens.param.member.bounds == (0, 4)


def test_member_mean_spread_maps(ensemble):
    run, view = ensemble
    ens = view.ens
    f = ens.fields()
    ds = ens.dataset
    model0 = ds["model"].isel(time=0)
    np.testing.assert_allclose(f["mean"].values[1:, 1:], model0.mean("member").values[1:, 1:], rtol=1e-6)
    np.testing.assert_allclose(f["spread"].values[1:, 1:], model0.std("member", ddof=1).values[1:, 1:], rtol=1e-6)
    assert np.isnan(f["spread"].values[0, 0])  # masked
    m0 = f["member"].values.copy()
    ens.member = 3
    assert not np.allclose(ens.fields()["member"].values, m0, equal_nan=True)
    layout = view.maps()
    assert len(layout) == 5
    assert view.__panel__().get_root() is not None


def test_rank_histogram_spread_skill_and_scores(ensemble):
    run, view = ensemble
    ranks = view.ens.rank_histogram()
    assert ranks.sizes["rank"] == 6 and float(ranks.sum()) == pytest.approx(1.0)
    # members scattered by 0.5 around a model whose error is 0.5: spread ≈ skill
    ss = view.ens.spread_skill(bins=5)
    assert len(ss) == 5 and ss["spread"].is_monotonic_increasing
    scores = view.ens.scores()
    assert 0.6 < scores["spread_skill_ratio"] < 1.6 and scores["crps"] > 0
    text = view._calibration().objects[0].object
    assert "crps" in text and "spread skill ratio" in text


def test_without_ensembles_the_view_says_how_to_get_one(run_root):
    make_run(run_root)
    state = AppState()
    state.poll()
    view = UncertaintyView(state=state)
    assert view.ens.run is None
    assert "inference.members" in view._maps_pane().object
