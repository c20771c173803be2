"""Baselines from the native input grid and bias corrections fitted on the training period,
checked against values worked out by hand."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import ConfigError, DataConfig, ExperimentConfig
from engine.data.pairing import make_pair
from engine.inference.baselines import (
    MIN_QUANTILE_VALUES,
    BaselineError,
    Baselines,
    BiasCorrection,
    interpolate,
    native_input,
)


def _field(lat, lon, times, fn):
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    values = np.stack([fn(la, lo, k) for k in range(len(times))]).astype(np.float32)
    return xr.DataArray(values, {"time": times, "lat": lat, "lon": lon}, ("time", "lat", "lon"), attrs={"units": "K"})


def test_interpolation_at_target_positions_by_hand():
    times = pd.date_range("2001-01-01", periods=2)
    src = _field(np.arange(40.0, 46.0), np.arange(0.0, 8.0), times, lambda la, lo, k: 2 * la + 3 * lo + k)
    tgt = _field(np.array([41.25, 42.5, 44.1]), np.array([1.5, 3.25, 6.8]), times, lambda la, lo, k: 0 * la)
    expected = 2 * tgt.lat.values[:, None] + 3 * tgt.lon.values[None, :]
    out = interpolate(src, tgt, "bilinear")  # reproduces a linear field exactly
    assert out.shape == (2, 3, 3)
    np.testing.assert_allclose(out[0], expected, atol=1e-4)
    np.testing.assert_allclose(out[1], expected + 1, atol=1e-4)
    # Keys bicubic (a = -0.75, as F.interpolate) is exact at the source centres; it does not
    # reproduce a linear field exactly in between (a != -0.5), but stays within a fraction of a step
    on_nodes = _field(np.array([41.0, 43.0]), np.array([2.0, 5.0]), times, lambda la, lo, k: 0 * la)
    np.testing.assert_allclose(interpolate(src, on_nodes, "bicubic")[0],
                               2 * np.array([41.0, 43.0])[:, None] + 3 * np.array([2.0, 5.0])[None, :], atol=1e-4)
    assert np.abs(interpolate(src, tgt, "bicubic")[0] - expected).max() < 0.25 * 3
    near = interpolate(src, tgt, "nearest")
    # nearest source centres: lat 41.25 -> 41, 42.5 -> 42 or 43 (tie), 44.1 -> 44; lon 1.5 -> 1/2, 3.25 -> 3, 6.8 -> 7
    assert near[0, 0, 1] == pytest.approx(2 * 41 + 3 * 3)
    assert near[0, 2, 2] == pytest.approx(2 * 44 + 3 * 7)


def test_native_grid_not_the_intermediate_one():
    """MOS: the demo GCM's own 0.3 degree grid is interpolated to each target cell (checked
    against a bilinear interpolation written out from the four neighbours)."""
    cfg = DataConfig(downscaling="mos", lowres="demo_alps_gcm")
    pair = make_pair(cfg)
    native, note = native_input(pair, cfg)
    assert "demo_alps_gcm" in note and native.sizes["lat"] != pair.lr.sizes["lat"]
    assert float(native.lat[1] - native.lat[0]) == pytest.approx(0.3, abs=1e-4)
    out = interpolate(native.isel(time=[0]), pair.hr, "bilinear")
    i, j = 20, 37
    y, x = float(pair.hr.lat[i]), float(pair.hr.lon[j])
    la, lo = native.lat.values, native.lon.values
    a, b = np.searchsorted(la, y) - 1, np.searchsorted(lo, x) - 1
    ty, tx = (y - la[a]) / (la[a + 1] - la[a]), (x - lo[b]) / (lo[b + 1] - lo[b])
    v = native.isel(time=0).values
    hand = (v[a, b] * (1 - ty) * (1 - tx) + v[a + 1, b] * ty * (1 - tx) + v[a, b + 1] * (1 - ty) * tx
            + v[a + 1, b + 1] * ty * tx)
    assert out[0, i, j] == pytest.approx(hand, abs=1e-3)


def test_constant_bias_field_is_removed_exactly():
    rng = np.random.default_rng(0)
    times = pd.date_range("2001-01-01", periods=60)
    truth = rng.normal(280, 5, size=(60, 3, 4))
    bias = np.arange(12.0).reshape(3, 4) - 4  # a different constant bias in every cell
    corr = BiasCorrection("bias_cell").fit(truth + bias, truth, times)
    np.testing.assert_allclose(corr.bias, bias, atol=1e-9)
    new = rng.normal(280, 5, size=(5, 3, 4))
    np.testing.assert_allclose(corr.apply(new + bias, times[:5]), new, atol=1e-4)


def test_monthly_bias_removed_and_missing_month_falls_back():
    times = pd.date_range("2001-01-01", "2001-02-28")  # January (31 days) and February (28)
    truth = np.zeros((times.size, 1, 2))
    interp = truth + np.where(times.month == 1, 1.0, 3.0)[:, None, None]
    corr = BiasCorrection("bias_month").fit(interp, truth, times)
    test_times = pd.DatetimeIndex(["2002-01-05", "2002-02-05", "2002-03-05"])
    out = corr.apply(np.full((3, 1, 2), 10.0), test_times)
    # March was never seen: the all-period bias (31 * 1 + 28 * 3) / 59
    np.testing.assert_allclose(out[:, 0, 0], [9.0, 7.0, 10.0 - (31 + 84) / 59], atol=1e-5)


def test_quantile_mapping_maps_training_quantiles_exactly():
    rng = np.random.default_rng(1)
    x = rng.permutation(np.arange(100.0))  # the interpolation's training values 0..99 in random order
    interp = x[:, None, None] * np.ones((1, 2, 2))
    truth = 2 * interp + 1  # truth quantiles are 2 q + 1
    times = pd.date_range("2001-01-01", periods=100)
    corr = BiasCorrection("quantile_map").fit(interp, truth, times)
    train_out = corr.apply(interp, times)
    np.testing.assert_allclose(train_out, truth, atol=1e-4)
    probe = np.array([0.0, 49.5, 99.0, 150.0, -10.0])[:, None, None] * np.ones((1, 2, 2))
    out = corr.apply(probe, times[:5])[:, 0, 0]
    # inside: linear between quantiles (2 x + 1); beyond: the end correction kept (+100 above, +1 below)
    np.testing.assert_allclose(out, [1.0, 100.0, 199.0, 250.0, -9.0], atol=1e-4)


def test_quantile_mapping_needs_30_values_per_cell():
    times = pd.date_range("2001-01-01", periods=MIN_QUANTILE_VALUES - 1)
    data = np.ones((times.size, 2, 2))
    with pytest.raises(BaselineError, match=r"at least 30 training values.*fewest: 29"):
        BiasCorrection("quantile_map").fit(data, data, times)


def _pp_pair(days=40):
    times = pd.date_range("2001-01-01", periods=days)
    lat, lon = np.linspace(45, 46.75, 8), np.linspace(7, 8.75, 8)
    hr = _field(lat, lon, times, lambda la, lo, k: 270 + np.sin(la * 3) + np.cos(lo * 2) + 0.1 * k)
    return make_pair(DataConfig(highres="own", scale=2, static=()), highres=hr.to_dataset(name="t2m"))


def test_bias_corrections_refused_before_work():
    pair = _pp_pair(days=40)
    with pytest.raises(BaselineError, match="fitted on the training period, and none was given"):
        Baselines(pair, ("bilinear", "quantile_map"))
    Baselines(pair, ("bilinear", "bicubic"))  # interpolations need no training period
    with pytest.raises(BaselineError, match="holds no time step"):
        Baselines(pair, train_period=("1990-01-01", "1990-12-31")).check()
    with pytest.raises(BaselineError, match="fewest: 20"):  # 20 days of training: before any fitting
        Baselines(pair, train_period=("2001-01-01", "2001-01-20")).check()
    Baselines(pair, ("bias_cell",), train_period=("2001-01-01", "2001-01-20")).check()  # fine without qmap
    with pytest.raises(ConfigError, match=r"training.seeds=0 is not valid"):
        ExperimentConfig().replace(training={"seeds": 0}).validate()


def test_best_baseline_on_validation_period():
    pair = _pp_pair(days=80)
    b = Baselines(pair, train_period=("2001-01-01", "2001-02-10"))
    best, scores = b.best(("2001-02-11", "2001-03-21"))
    assert set(scores) == {"nearest", "bilinear", "bicubic", "conservative", "bias_cell", "bias_month", "quantile_map"}
    assert scores[best] == min(scores.values())
    # the field is a fixed pattern plus a trend: removing the per-cell bias beats plain interpolation
    assert scores["bias_cell"] < scores["bilinear"]
    # PerfectProg with an integer factor: conservative from the block means is the nearest block
    assert scores["conservative"] == pytest.approx(scores["nearest"], rel=1e-5)


def test_predictions_and_scores_name_the_best_baseline(tiny_config, tmp_path, capsys):
    from engine.cli import _format_scores, main
    from engine.evaluation.report import evaluate_run
    from engine.inference import write_predictions
    from engine.runs import RunStore
    from engine.training.trainer import train

    cfg = tiny_config.replace(training={"epochs": 1, "samples_per_epoch": 16})
    run = RunStore(tmp_path).create(cfg.validate())
    train(run)
    ds = write_predictions(run)
    for name in ("nearest", "bilinear", "bicubic", "conservative", "bias_cell", "bias_month", "quantile_map"):
        assert name in ds and ds[name].dims == ("time", "lat", "lon")
        assert "native" in ds[name].attrs["description"] or "training period" in ds[name].attrs["description"]
    assert ds.attrs["best_baseline"] == "quantile_map"  # on the demo, by far (see the test above)
    evaluate_run(run)
    ref = run.status()["scores"]["reference"]
    assert ref["name"] == ds.attrs["best_baseline"] and ref["chosen_on"] == "val"
    model, base = run.status()["scores"]["model"]["rmse"], run.status()["scores"][ref["name"]]["rmse"]
    assert ref["ratio"] == pytest.approx(model / base)
    assert f"best baseline {ref['name']}" in _format_scores(run.status())
    assert main(["--runs", str(tmp_path), "compare", run.run_id]) == 0
    assert f"{ref['name']} *" in capsys.readouterr().out
