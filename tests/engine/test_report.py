"""evaluate_run / evaluate_dataset / compare_runs: files, formats, hand values, breakdowns, errors."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import ExperimentConfig
from engine.evaluation import metrics as M
from engine.evaluation._common import MetricError
from engine.evaluation.breakdown import period_groups, region_masks
from engine.evaluation.report import COLUMNS, HEADLINE, compare_runs, evaluate_dataset, evaluate_run
from engine.runs import RunStore

H = W = 16
LAT = np.linspace(40.0, 47.5, H)
LON = np.linspace(0.0, 7.5, W)
# two July and two December days in the default test period (2003-07-01 .. 2003-12-31), and
# one day before it that evaluate_run must leave out
TIMES = pd.to_datetime(["2003-06-30", "2003-07-01", "2003-07-02", "2003-12-01", "2003-12-02"])


def predictions(seed=0, variable="t2m"):
    """Errors chosen for hand values: model = truth + 1 everywhere valid; bicubic = truth + 2 in
    July and truth - 2 in December; the masked column holds garbage; the day before the test
    period is garbage for every prediction."""
    rng = np.random.default_rng(seed)
    truth = 280.0 + 3.0 * rng.normal(size=(len(TIMES), H, W))
    sign = np.array([9.0, 1.0, 1.0, -1.0, -1.0])[:, None, None]
    model = truth + 1.0
    bicubic = truth + 2.0 * sign
    mask = np.ones((H, W), dtype="int8")
    mask[:, 0] = 0
    model[:, :, 0] = 1e6
    model[0] = -1e6
    dims = ("time", "lat", "lon")
    ds = xr.Dataset(
        {"truth": (dims, truth, {"units": "K"}), "model": (dims, model, {"units": "K"}),
         "bicubic": (dims, bicubic, {"units": "K"}), "mask": (("lat", "lon"), mask)},
        coords={"time": TIMES, "lat": ("lat", LAT, {"units": "degrees_north"}),
                "lon": ("lon", LON, {"units": "degrees_east"})},
        attrs={"variable": variable, "Conventions": "CF-1.8"},
    )
    return ds


@pytest.fixture
def run(tmp_path):
    store = RunStore(tmp_path / "runs")
    r = store.create(ExperimentConfig(name="evaltest"), run_id="run-a")
    predictions().to_netcdf(r.predictions_path)
    return r


def _pick(df, model, metric, period="test", region="domain"):
    sel = df[(df.model == model) & (df.metric == metric) & (df.period == period) & (df.region == region)]
    assert len(sel) == 1, (model, metric, period, region, sel)
    return float(sel.value.iloc[0])


def test_evaluate_run_writes_table_maps_status(run):
    df = evaluate_run(run)
    assert list(df.columns) == COLUMNS
    on_disk = pd.read_csv(run.scores_path)
    assert list(on_disk.columns) == COLUMNS and len(on_disk) == len(df)
    assert set(df.run) == {"run-a"} and set(df.variable) == {"t2m"}
    # hand values: model errors are 1 wherever valid; the garbage column and day are left out
    assert _pick(df, "model", "rmse") == pytest.approx(1.0)
    assert _pick(df, "model", "mae") == pytest.approx(1.0)
    assert _pick(df, "model", "bias") == pytest.approx(1.0)
    assert _pick(df, "bicubic", "rmse") == pytest.approx(2.0)
    assert _pick(df, "bicubic", "bias") == pytest.approx(0.0, abs=1e-9)  # +2 twice, -2 twice
    # breakdown by season and month: bicubic +2 in July (JJA), -2 in December (DJF)
    assert _pick(df, "bicubic", "bias", "JJA") == pytest.approx(2.0)
    assert _pick(df, "bicubic", "bias", "DJF") == pytest.approx(-2.0)
    assert _pick(df, "bicubic", "bias", "Dec") == pytest.approx(-2.0)
    assert {"test", "JJA", "DJF", "Jul", "Dec"} <= set(df.period)
    # skill vs bicubic: 1 - MSE / MSE_ref = 1 - 1/4; 1 - MAE / MAE_ref = 1 - 1/2
    assert _pick(df, "model", "mse_skill") == pytest.approx(0.75)
    assert _pick(df, "model", "mae_skill") == pytest.approx(0.5)
    # PSNR with the stated data range R = valid truth max - min: 10 log10(R^2 / 1)
    with xr.open_dataset(run.maps_path) as maps:
        R = maps.attrs["data_range"]
        assert maps["rmse"].dims == ("model", "lat", "lon")
        assert list(maps.model.values) == ["model", "bicubic"]
        rm = maps["rmse"].sel(model="model").values
        assert np.isnan(rm[:, 0]).all() and rm[:, 1:] == pytest.approx(np.ones((H, W - 1)))
        assert maps["bias_season"].sel(model="bicubic", season="DJF").values[:, 1:] == pytest.approx(
            np.full((H, W - 1), -2.0))
        assert {"power_spectrum", "spectral_ratio", "ssim", "pearson", "q99_bias"} <= set(maps.data_vars)
    truth = predictions().truth.isel(time=slice(1, None)).values[:, :, 1:]
    assert R == pytest.approx(truth.max() - truth.min())
    assert _pick(df, "model", "psnr") == pytest.approx(10 * math.log10(R**2))
    status = json.loads(run.status_path.read_text())
    assert set(status["scores"]) == {"model", "bicubic"}
    assert set(status["scores"]["model"]) == set(HEADLINE)
    assert status["scores"]["model"]["rmse"] == pytest.approx(1.0)
    assert status["scores"]["bicubic"]["mae"] == pytest.approx(2.0)


def test_table_equals_the_metric_functions():
    ds = predictions(seed=3).isel(time=slice(1, None))
    rng = np.random.default_rng(4)
    ds["model"] = ds.truth + rng.normal(size=ds.truth.shape)  # not a constant error: correlations mean something
    ev = evaluate_dataset(ds, regions={"north": (44.0, 48.0, 0.0, 8.0)})
    df = ev.scores
    mask = ds.mask.astype(bool)
    p, t = ds.model, ds.truth
    clim = t.where(mask).groupby("time.month").mean("time")
    north = xr.DataArray(region_masks({"north": (44.0, 48.0, 0.0, 8.0)}, LAT, LON).sel(region="north").values,
                         dims=("lat", "lon"))
    for region, m in (("domain", mask), ("north", mask & north)):
        assert _pick(df, "model", "rmse", region=region) == pytest.approx(float(M.rmse(p, t, m)))
        assert _pick(df, "model", "relative_bias", region=region) == pytest.approx(float(M.relative_bias(p, t, m)))
        assert _pick(df, "model", "pearson", region=region) == pytest.approx(
            float(M.pearson(p, t, m, dim=("lat", "lon")).mean()))
        # SSIM images are computed on the whole domain, then averaged over the region
        inside = (m & mask).astype(float) if region == "domain" else north.astype(float)
        assert _pick(df, "model", "ssim", region=region) == pytest.approx(
            float(M.ssim(p, t, mask, weights=inside)), abs=2e-4)
        assert _pick(df, "model", "psnr", region=region) == pytest.approx(
            float(M.psnr(p, t, m, data_range=ev.maps.attrs["data_range"])))
        assert _pick(df, "model", "acc_latw", region=region) == pytest.approx(
            float(M.acc_latw(p, t, m, dim=("lat", "lon"), climatology=clim).mean()))
        assert _pick(df, "model", "rmse_latw", "JJA", region) == pytest.approx(
            float(M.rmse_latw(p.sel(time="2003-07"), t.sel(time="2003-07"), m)))
    # the table's pooled quantiles come from per-block histograms: within one bin of each (1/65536 of the range)
    span = float(max(p.max(), t.max()) - min(p.min(), t.min()))
    assert _pick(df, "model", "q99_bias") == pytest.approx(float(M.METRICS.get("q99_bias")(p, t, mask)),
                                                           abs=2 * span / 65536)
    assert ev.maps["pearson"].sel(model="model").values[:, 1:] == pytest.approx(
        M.pearson(p, t, mask, dim="time").values[:, 1:])


def test_compare_runs_side_by_side(run, tmp_path):
    other = RunStore(run.path.parent).create(ExperimentConfig(name="evaltest"), run_id="run-b")
    ds = predictions()
    ds["model"] = ds.truth + 0.5
    ds.to_netcdf(other.predictions_path)
    table = compare_runs([run, other], metrics=("rmse", "mae", "ssim"))
    assert list(table.columns) == ["run", "model", "rmse", "mae", "ssim"]
    assert list(zip(table.run, table.model)) == [("run-a", "model"), ("run-a", "bicubic"),
                                                 ("run-b", "model"), ("run-b", "bicubic")]
    assert table.rmse.tolist() == pytest.approx([1.0, 2.0, 0.5, 2.0])
    with pytest.raises(ValueError, match="registered metrics"):
        compare_runs([run], metrics=("rmsee",))


def test_region_missing_the_domain(run):
    with pytest.raises(MetricError, match="'arctic' misses the domain"):
        evaluate_run(run, regions={"arctic": (80, 90, 0, 10)})
    assert not run.scores_path.exists()  # nothing half written


def test_regionmask_regions_and_polygons():
    import regionmask
    from shapely.geometry import box

    regions = regionmask.Regions([box(0, 40, 4, 44)], names=["sw"], abbrevs=["sw"])
    masks = region_masks(regions, LAT, LON)
    assert list(masks.region.values) == ["domain", "sw"]
    poly = region_masks({"poly": box(0, 40, 4, 44)}, LAT, LON)
    assert (poly.sel(region="poly").values == masks.sel(region="sw").values).all()
    with pytest.raises(MetricError, match="no region"):
        region_masks(regionmask.Regions([box(100, 0, 110, 10)], names=["far"], abbrevs=["far"]), LAT, LON)
    with pytest.raises(MetricError, match="accepted"):
        region_masks({"bad": "north"}, LAT, LON)


def test_all_nan_period_and_missing_predictions(tmp_path):
    ds = predictions().isel(time=slice(1, None))
    with pytest.raises(MetricError, match="all NaN or masked in the period 'test'"):
        evaluate_dataset(ds.assign(truth=ds.truth * np.nan))
    with pytest.raises(MetricError, match="no predictions to score"):
        evaluate_dataset(ds[["truth", "mask"]])
    store = RunStore(tmp_path)
    r = store.create(ExperimentConfig(name="x"), run_id="late")
    ds.assign_coords(time=ds.time + np.timedelta64(800, "D")).to_netcdf(r.predictions_path)
    with pytest.raises(MetricError, match="no time step in the test period"):
        evaluate_run(r)
    with pytest.raises(MetricError, match="no predictions.nc"):
        evaluate_run(store.create(ExperimentConfig(name="x"), run_id="empty"))


def test_precipitation_ensembles_and_hours():
    rng = np.random.default_rng(5)
    times = pd.date_range("2003-07-01", periods=8, freq="6h")
    dims = ("time", "lat", "lon")
    truth = rng.gamma(0.5, 4.0, size=(8, H, W))
    ens = truth[None] * rng.uniform(0.5, 1.5, size=(3, 8, H, W))
    ds = xr.Dataset({"truth": (dims, truth, {"units": "mm/day"}), "model": (("member",) + dims, ens),
                     "bicubic": (dims, truth * 0.9)},
                    coords={"time": times, "lat": LAT, "lon": LON}, attrs={"variable": "pr"})
    df = evaluate_dataset(ds).scores
    assert {"wet_day_frequency_bias", "wet_q95_bias", "wet_q99_bias", "crps", "spread_skill_ratio",
            "ensemble_mean_rmse"} <= set(df.metric)
    assert {"hour-00", "hour-06", "hour-12", "hour-18"} <= set(df.period)
    # the deterministic scores use the ensemble mean
    assert _pick(df, "model", "rmse") == pytest.approx(_pick(df, "model", "ensemble_mean_rmse"))
    # bicubic = 0.9 truth: the wet-day frequency can only drop
    assert _pick(df, "bicubic", "wet_day_frequency_bias") <= 0


def test_period_groups_labels():
    t = xr.DataArray(pd.date_range("2003-02-27", periods=4, freq="D"), dims="time")
    groups = period_groups(t, "test")
    assert list(groups) == ["test", "DJF", "MAM", "Feb", "Mar"]
    assert groups["Mar"].tolist() == [False, False, True, True]
    with pytest.raises(MetricError, match="accepted: season, month, hour"):
        period_groups(t, by=("week",))


def test_truth_statistics_and_monthly_climatology_read_block_by_block():
    """The one pass over the truth (blocks of 3 steps) gives the count, mean, range and the
    monthly mean per pixel of the valid truth, as xarray's whole-array reductions do; the
    climatology is expanded only for the block asked."""
    from engine.evaluation.report import _ClimBlocks, _truth_pass

    times = pd.date_range("2001-01-25", periods=12)  # January and February
    values = np.arange(12 * 2 * 3, dtype=float).reshape(12, 2, 3)
    values[4, 1, 2] = np.nan
    truth = xr.DataArray(values, dims=("time", "lat", "lon"), coords={"time": times})
    mask = xr.DataArray(np.array([[True, True, False], [True, True, True]]), dims=("lat", "lon"))
    out = _truth_pass(truth, mask, block=3, monthly=True)
    valid = truth.where(mask)
    assert out["n"] == int(valid.count()) == 12 * 5 - 1
    assert out["mean"] == pytest.approx(float(valid.mean()))
    assert (out["min"], out["max"]) == (float(valid.min()), float(valid.max()))
    expected = valid.groupby("time.month").mean("time")
    np.testing.assert_allclose(out["monthly"].values, expected.values, equal_nan=True)
    clim = _ClimBlocks(out["monthly"], truth)
    np.testing.assert_allclose(clim.block(slice(6, 9)), expected.sel(month=[1, 2, 2]).values, equal_nan=True)
