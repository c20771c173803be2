"""Metrics against values worked out by hand (the arithmetic is written next to each value)."""

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.evaluation import metrics as M
from engine.evaluation._common import MetricError, wet_threshold
from engine.registry import METRICS, UnknownNameError

# A 2x2 field: truth [[1, 2], [3, 4]], prediction [[2, 2], [5, 3]] -> errors [[1, 0], [2, -1]].
LAT = [0.0, 60.0]  # cos(lat) = 1, 0.5


def field(values, lat=LAT):
    return xr.DataArray(np.array(values, float), dims=("lat", "lon"), coords={"lat": lat, "lon": [10.0, 11.0]})


TRUTH = field([[1, 2], [3, 4]])
PRED = field([[2, 2], [5, 3]])
MASK = field([[1, 1], [0, 1]]).astype(bool)  # drops the error 2


def test_error_metrics_by_hand():
    assert float(M.mae(PRED, TRUTH)) == pytest.approx((1 + 0 + 2 + 1) / 4)
    assert float(M.mse(PRED, TRUTH)) == pytest.approx((1 + 0 + 4 + 1) / 4)
    assert float(M.rmse(PRED, TRUTH)) == pytest.approx(math.sqrt(6 / 4))
    assert float(M.bias(PRED, TRUTH)) == pytest.approx((1 + 0 + 2 - 1) / 4)
    # relative bias = sum(p - t) / sum(t) = 2 / 10
    assert float(M.relative_bias(PRED, TRUTH)) == pytest.approx(0.2)


def test_error_metrics_with_mask():
    # errors left: 1, 0, -1
    assert float(M.mae(PRED, TRUTH, MASK)) == pytest.approx(2 / 3)
    assert float(M.rmse(PRED, TRUTH, MASK)) == pytest.approx(math.sqrt(2 / 3))
    assert float(M.bias(PRED, TRUTH, MASK)) == pytest.approx(0.0)
    # relative bias = 0 / (1 + 2 + 4)
    assert float(M.relative_bias(PRED, TRUTH, MASK)) == pytest.approx(0.0)
    # 0/1 int masks work the same
    assert float(M.mae(PRED, TRUTH, MASK.astype("int8"))) == pytest.approx(2 / 3)


def test_nan_counts_as_invalid():
    pred = PRED.copy()
    pred[1, 0] = np.nan
    assert float(M.mae(pred, TRUTH)) == pytest.approx(2 / 3)


def test_latitude_weights_by_hand():
    # weights: row lat 0 -> 1, row lat 60 -> 0.5; sum of weights 1 + 1 + 0.5 + 0.5 = 3
    assert M.lat_weights(LAT).values == pytest.approx([1.0, 0.5])
    assert float(M.bias_latw(PRED, TRUTH)) == pytest.approx((1 + 0 + 0.5 * 2 + 0.5 * -1) / 3)
    assert float(M.mae_latw(PRED, TRUTH)) == pytest.approx((1 + 0 + 0.5 * 2 + 0.5 * 1) / 3)
    assert float(M.rmse_latw(PRED, TRUTH)) == pytest.approx(math.sqrt((1 + 0 + 0.5 * 4 + 0.5 * 1) / 3))
    # with the mask too: weights 1, 1, 0.5 on errors 1, 0, -1
    assert float(M.bias_latw(PRED, TRUTH, MASK)) == pytest.approx((1 + 0 - 0.5) / 2.5)
    # explicit weights equal the _latw variant
    w = M.lat_weights(TRUTH.lat)
    assert float(M.rmse(PRED, TRUTH, weights=w)) == pytest.approx(float(M.rmse_latw(PRED, TRUTH)))


def test_lat_weights_zero_at_poles_and_range_checked():
    assert M.lat_weights([90.0, -90.0]).values.tolist() == [0.0, 0.0]
    with pytest.raises(MetricError, match="latitudes"):
        M.lat_weights([95.0])


def test_spatial_and_temporal_dims():
    # two time steps; step 0 errors [[1, 0], [2, -1]], step 1 errors all 1
    truth = xr.concat([TRUTH, TRUTH], dim="time")
    pred = xr.concat([PRED, TRUTH + 1], dim="time")
    spatial = M.bias(pred, truth, dim=("lat", "lon"))
    assert spatial.dims == ("time",)
    assert spatial.values == pytest.approx([0.5, 1.0])
    temporal = M.bias(pred, truth, dim="time")  # the per-pixel map
    assert temporal.dims == ("lat", "lon")
    assert temporal.values == pytest.approx(np.array([[(1 + 1) / 2, (0 + 1) / 2], [(2 + 1) / 2, (-1 + 1) / 2]]))
    rmse_map = M.rmse(pred, truth, dim="time")
    assert rmse_map.values[1, 0] == pytest.approx(math.sqrt((4 + 1) / 2))


# Correlations: p = [1, 2, 3, 4], t = [1, 3, 2, 5]
P = xr.DataArray([1.0, 2, 3, 4], dims="x")
T = xr.DataArray([1.0, 3, 2, 5], dims="x")


def test_pearson_by_hand():
    # means 2.5, 2.75; deviations p: -1.5 -.5 .5 1.5, t: -1.75 .25 -.75 2.25
    # sum dp dt = 2.625 - .125 - .375 + 3.375 = 5.5; sum dp^2 = 5; sum dt^2 = 8.75
    assert float(M.pearson(P, T)) == pytest.approx(5.5 / math.sqrt(5 * 8.75))


def test_pearson_weighted_by_hand():
    # w = [1, 1, 2, 1]: weighted means 13/5 both; dp = -1.6 -.6 .4 1.4; dt = -1.6 .4 -.6 2.4
    # sum w dp dt = 2.56 - .24 - .48 + 3.36 = 5.2; sum w dp^2 = 5.2; sum w dt^2 = 9.2
    w = xr.DataArray([1.0, 1, 2, 1], dims="x")
    assert float(M.pearson(P, T, weights=w)) == pytest.approx(5.2 / math.sqrt(5.2 * 9.2))


def test_pearson_mask_drops_points():
    # dropping the last point: p = 1 2 3, t = 1 3 2: dp = -1 0 1, dt = -1 1 0 -> 1 / sqrt(2 * 2)
    mask = xr.DataArray([True, True, True, False], dims="x")
    assert float(M.pearson(P, T, mask)) == pytest.approx(0.5)


def test_spearman_by_hand():
    # ranks p 1 2 3 4, t 1 3 2 4: d = 0 -1 1 0; rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert float(M.spearman(P, T)) == pytest.approx(0.8)


def test_acc_by_hand():
    # climatology 2: anomalies p -1 0 1 2, t -1 1 0 3; sum a_p a_t = 7; sums of squares 6, 11
    clim = xr.DataArray(2.0)
    assert float(M.acc(P, T, climatology=clim)) == pytest.approx(7 / math.sqrt(66))
    with pytest.raises(MetricError, match="climatology"):
        M.acc(P, T)


def test_acc_monthly_climatology_selects_per_step():
    time = pd.to_datetime(["2003-01-15", "2003-02-15"])
    truth = xr.DataArray([[1.0, 3.0], [5.0, 7.0]], dims=("time", "x"), coords={"time": time})
    pred = xr.DataArray([[2.0, 2.0], [6.0, 8.0]], dims=("time", "x"), coords={"time": time})
    clim = xr.DataArray([2.0, 6.0], dims="month", coords={"month": [1, 2]})
    # Jan anomalies p 0 0, t -1 1 -> 0 / 0 -> NaN; Feb: p 0 2, t -1 1: 2 / sqrt(4 * 2)
    out = M.acc(pred, truth, climatology=clim, dim="x")
    assert np.isnan(out.values[0])
    assert out.values[1] == pytest.approx(2 / math.sqrt(8))


def test_psnr_by_hand_and_against_torchmetrics():
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio

    t = xr.DataArray([0.0, 10.0])
    # R = 10, MSE = 1: 10 log10(100 / 1) = 20 dB
    assert float(M.psnr(t + 1.0, t)) == pytest.approx(20.0)
    # stated data range 20: 10 log10(400) = 26.0206
    assert float(M.psnr(t + 1.0, t, data_range=20.0)) == pytest.approx(10 * math.log10(400))
    assert M.psnr(t + 1.0, t).attrs["data_range"] == 10.0
    # masked: only the second point, error 2: 10 log10(100 / 4)
    assert float(M.psnr(t + xr.DataArray([9.0, 2.0]), t, mask=xr.DataArray([False, True]), data_range=10.0)) == \
        pytest.approx(10 * math.log10(25))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 8, 8))
    ours = float(M.psnr(xr.DataArray(a, dims=("lat", "lon")), xr.DataArray(b, dims=("lat", "lon")), data_range=3.0))
    theirs = float(peak_signal_noise_ratio(torch.tensor(a), torch.tensor(b), data_range=3.0))
    assert ours == pytest.approx(theirs)


def _img(value, n=16):
    return xr.DataArray(np.full((n, n), float(value)), dims=("lat", "lon"))


def test_ssim_constant_images_by_hand():
    # Constant images: sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 1)^2
    # on the fields scaled by data_min = 0, data_range = 1: a = 0.2, b = 0.6
    expected = (2 * 0.2 * 0.6 + 1e-4) / (0.2**2 + 0.6**2 + 1e-4)
    assert float(M.ssim(_img(0.2), _img(0.6), data_range=1.0, data_min=0.0)) == pytest.approx(expected, rel=1e-5)
    # the scaling: the same images in other units (x 10 + 273) give the same score
    assert float(M.ssim(_img(275.0), _img(279.0), data_range=10.0, data_min=273.0)) == pytest.approx(expected, rel=1e-5)
    assert float(M.ssim(_img(0.6), _img(0.6), data_range=1.0, data_min=0.0)) == pytest.approx(1.0)


def test_ssim_matches_torchmetrics_unmasked():
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    rng = np.random.default_rng(1)
    t = rng.random((3, 20, 24))
    p = t + 0.1 * rng.normal(size=t.shape)
    dims = ("time", "lat", "lon")
    ours = M.ssim(xr.DataArray(p, dims=dims), xr.DataArray(t, dims=dims), data_range=1.0, data_min=0.0,
                  dim=("lat", "lon"))
    theirs = structural_similarity_index_measure(torch.tensor(p)[:, None], torch.tensor(t)[:, None],
                                                 data_range=1.0, reduction="none")
    assert ours.values == pytest.approx(theirs.numpy(), abs=1e-5)
    assert ours.attrs["data_range"] == 1.0


def test_separable_ssim_image_equals_torchmetrics():
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    rng = np.random.default_rng(3)
    t = rng.random((2, 1, 24, 30))
    p = np.clip(t + 0.2 * rng.normal(size=t.shape), 0, 1)
    ours = M._separable_ssim_image(torch.tensor(p), torch.tensor(t))
    _, theirs = structural_similarity_index_measure(torch.tensor(p), torch.tensor(t), data_range=1.0,
                                                    reduction="none", return_full_image=True)
    assert ours.numpy() == pytest.approx(theirs.numpy(), abs=1e-10)
    dims = ("lat", "lon")
    a = M.ssim_map(xr.DataArray(p[0, 0], dims=dims), xr.DataArray(t[0, 0], dims=dims), backend="torchmetrics")
    b = M.ssim_map(xr.DataArray(p[0, 0], dims=dims), xr.DataArray(t[0, 0], dims=dims))
    assert a.values == pytest.approx(b.values, abs=1e-10)


def test_ssim_mask_ignores_garbage_and_maps():
    rng = np.random.default_rng(2)
    t = xr.DataArray(rng.random((2, 16, 16)), dims=("time", "lat", "lon"))
    p = t + 0.05 * rng.normal(size=t.shape)
    mask = xr.DataArray(np.ones((16, 16), bool), dims=("lat", "lon"))
    mask[:, :4] = False
    garbage = p.copy()
    garbage[:, :, :4] = 1e6
    a = float(M.ssim(p, t, mask, data_range=1.0, data_min=0.0))
    b = float(M.ssim(garbage, t, mask, data_range=1.0, data_min=0.0))
    assert a == pytest.approx(b)
    smap = M.ssim(p, t, mask, data_range=1.0, data_min=0.0, dim="time")
    assert smap.dims == ("lat", "lon") and np.isnan(smap.values[:, :4]).all()


def test_ms_ssim_constant_images_by_hand():
    # Constant images: every contrast-structure term is C2 / C2 = 1, the luminance stays
    # (2ab + C1) / (a^2 + b^2 + C1) at every scale, so MS-SSIM = l ** beta_last.
    # 16x16 with an 11 window fits one scale (betas renormalised: beta = 1);
    # 48x48 fits three: beta_last = 0.3001 / (0.0448 + 0.2856 + 0.3001).
    lum = (2 * 0.2 * 0.6 + 1e-4) / (0.2**2 + 0.6**2 + 1e-4)
    one = M.ms_ssim(_img(0.2), _img(0.6), data_range=1.0, data_min=0.0)
    assert float(one) == pytest.approx(lum, rel=1e-4) and one.attrs["scales"] == 1
    three = M.ms_ssim(_img(0.2, 48), _img(0.6, 48), data_range=1.0, data_min=0.0)
    assert three.attrs["scales"] == 3
    assert float(three) == pytest.approx(lum ** (0.3001 / (0.0448 + 0.2856 + 0.3001)), rel=1e-4)
    with pytest.raises(MetricError, match="lat"):
        M.ms_ssim(_img(0.2), _img(0.6), dim="lat")


def test_skill_score_by_hand():
    # MSE 1 against a reference MSE of 4: 1 - 1/4
    assert M.skill_score(1.0, 4.0) == 0.75
    # the registered skill: pred errors [[1, 0], [2, -1]] (MSE 1.5), reference all 2 (MSE 4)
    skill = METRICS.get("mse_skill")(PRED, TRUTH, reference=TRUTH + 2.0)
    assert float(skill) == pytest.approx(1 - 1.5 / 4)


# ---------------------------------------------------------------------------------------
# Distribution, spectral, probabilistic
# ---------------------------------------------------------------------------------------
def test_quantile_bias_by_hand():
    t = xr.DataArray([1.0, 2, 3, 4, 5])
    p = xr.DataArray([1.0, 2, 3, 4, 10])
    # linear interpolation, position 0.99 * 4 = 3.96: truth 4 + 0.96 * 1, prediction 4 + 0.96 * 6
    assert float(METRICS.get("q99_bias")(p, t)) == pytest.approx((4 + 0.96 * 6) - (4 + 0.96))
    # position 0.01 * 4 = 0.04: both 1 + 0.04 * 1
    assert float(METRICS.get("q01_bias")(p, t)) == pytest.approx(0.0)
    # masking the 10 away: both are 1 2 3 4 -> 0
    assert float(METRICS.get("q99_bias")(p, t, xr.DataArray([1, 1, 1, 1, 0]))) == pytest.approx(0.0)


def test_wet_day_metrics_by_hand():
    t = xr.DataArray([0.0, 2.0, 3.0, 0.5])
    p = xr.DataArray([1.5, 2.0, 0.0, 1.0])
    # wet (>= 1): truth 2 of 4, prediction 3 of 4
    assert float(METRICS.get("wet_day_frequency_bias")(p, t)) == pytest.approx(0.75 - 0.5)
    # wet amounts: truth [2, 3] -> q95 = 2 + 0.95 * 1; prediction [1, 1.5, 2] -> 1.5 + 0.9 * 0.5
    assert float(METRICS.get("wet_q95_bias")(p, t)) == pytest.approx((1.5 + 0.9 * 0.5) - 2.95)
    assert wet_threshold("kg m-2 s-1") == pytest.approx(1 / 86400)
    with pytest.raises(MetricError, match="units"):
        wet_threshold("furlongs")


def test_power_spectrum_of_a_cosine_by_hand():
    from engine.evaluation.spectral import power_spectrum

    x = np.cos(2 * np.pi * 4 * np.arange(16) / 16)[None, :] * np.ones((16, 1))
    da = xr.DataArray(x, dims=("lat", "lon"))
    summed = power_spectrum(da, average="sum")
    # Parseval: the unit cosine's variance 1/2 sits in wavenumber 4 (two coefficients of 1/4)
    assert float(summed.sel(wavenumber=4)) == pytest.approx(0.5)
    assert float(summed.sum()) == pytest.approx(0.5)
    assert float(summed.wavelength.sel(wavenumber=4)) == 4.0
    # Radial mean: 0.5 shared by the 32 integer points with round(r) = 4 on a 16x16 grid:
    # r^2 in {13: 8, 16: 4, 17: 8, 18: 4, 20: 8} points
    mean = power_spectrum(da)
    assert float(mean.sel(wavenumber=4)) == pytest.approx(0.5 / 32)


def test_spectral_ratio_sees_missing_small_scales():
    t = np.cos(2 * np.pi * 2 * np.arange(16) / 16) + 0.5 * np.cos(2 * np.pi * 6 * np.arange(16) / 16)
    truth = xr.DataArray(np.tile(t, (16, 1)), dims=("lat", "lon"))
    smooth = xr.DataArray(np.tile(np.cos(2 * np.pi * 2 * np.arange(16) / 16), (16, 1)), dims=("lat", "lon"))
    ratio = METRICS.get("spectral_ratio")(smooth, truth)
    assert float(ratio.sel(wavenumber=2)) == pytest.approx(1.0)
    assert float(ratio.sel(wavenumber=6)) == pytest.approx(0.0, abs=1e-12)


ENS = xr.DataArray([[0.0, 2.0], [1.0, 3.0]], dims=("x", "member"))
OBS = xr.DataArray([1.0, 0.0], dims="x")


def test_crps_by_hand():
    # point 0: E|X - y| = 1, E|X - X'| = (0 + 2 + 2 + 0) / 4 = 1 -> 1 - 1/2 = 0.5
    # point 1: E|X - y| = 2, E|X - X'| = 1 -> 2 - 0.5 = 1.5
    crps = METRICS.get("crps")
    assert float(crps(ENS, OBS)) == pytest.approx((0.5 + 1.5) / 2)
    assert float(crps(ENS, OBS, mask=xr.DataArray([True, False], dims="x"))) == pytest.approx(0.5)
    # fair CRPS: E|X - X'| over distinct pairs = 2 -> point 0: 1 - 1 = 0, point 1: 2 - 1 = 1
    assert float(crps(ENS, OBS, method="fair")) == pytest.approx(0.5)


def test_spread_skill_and_ensemble_mean_rmse_by_hand():
    # ensemble means 1, 2 -> errors 0, 2 against obs 1, 0 ... recomputed with obs 0, 0:
    obs = xr.DataArray([0.0, 0.0], dims="x")
    # means [1, 2]: RMSE = sqrt((1 + 4) / 2); member variances (ddof 1) [2, 2]: spread sqrt(2)
    assert float(METRICS.get("ensemble_mean_rmse")(ENS, obs)) == pytest.approx(math.sqrt(2.5))
    expected = math.sqrt(3 / 2) * math.sqrt(2) / math.sqrt(2.5)
    assert float(METRICS.get("spread_skill_ratio")(ENS, obs)) == pytest.approx(expected)


def test_rank_histogram_by_hand():
    ens = xr.DataArray([[0.0, 1.0, 2.0]] * 3, dims=("x", "member"))
    obs = xr.DataArray([-1.0, 1.5, 3.0], dims="x")  # ranks 1, 3, 4 of 4
    hist = METRICS.get("rank_histogram")(ens, obs)
    assert hist.values == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3])
    with pytest.raises(MetricError, match="member"):
        METRICS.get("crps")(OBS, OBS)


# ---------------------------------------------------------------------------------------
# Registry and bad input
# ---------------------------------------------------------------------------------------
def test_registry_info_and_unknown_name():
    for name in METRICS.names():
        info = METRICS.info(name)
        assert info["kind"] in ("deterministic", "probabilistic", "distribution", "spectral"), name
        assert "higher_is_better" in info and "units" in info
    assert METRICS.info("ssim")["higher_is_better"] is True
    assert METRICS.info("rmse")["higher_is_better"] is False
    assert set(M.list_metrics("probabilistic")) == {"crps", "ensemble_mean_rmse", "spread_skill_ratio", "rank_histogram"}
    with pytest.raises(UnknownNameError, match="registered metrics: .*rmse"):
        METRICS.get("rmsee")
    with pytest.raises(MetricError, match="accepted"):
        M.list_metrics("fancy")


def test_different_grids_refused():
    other = field([[1, 2], [3, 4]], lat=[0.0, 61.0])
    with pytest.raises(MetricError, match="different grids along 'lat'"):
        M.rmse(other, TRUTH)
    with pytest.raises(MetricError, match="differ along 'lon'"):
        M.rmse(TRUTH.isel(lon=[0]), TRUTH)


def test_different_time_axes_and_calendars_refused():
    t1 = xr.DataArray([1.0, 2.0], dims="time", coords={"time": pd.date_range("2003-01-01", periods=2)})
    t2 = t1.assign_coords(time=pd.date_range("2003-01-02", periods=2))
    with pytest.raises(MetricError, match="different time axes"):
        M.mae(t2, t1)
    t3 = t1.assign_coords(time=xr.date_range("2003-01-01", periods=2, calendar="noleap", use_cftime=True))
    with pytest.raises(MetricError, match="calendars: 'noleap' vs 'proleptic_gregorian'"):
        M.mae(t3, t1)


def test_all_nan_refused():
    with pytest.raises(MetricError, match="no valid points"):
        M.rmse(PRED, TRUTH * np.nan)
    with pytest.raises(MetricError, match="no valid points"):
        M.ssim(_img(0.2), _img(0.6), mask=_img(0).astype(bool))
