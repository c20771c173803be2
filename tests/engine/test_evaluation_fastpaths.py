"""The evaluation's fast paths give what the slower, plainer forms they replace give."""

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from engine.evaluation import metrics as M


@pytest.mark.parametrize("shape, rows", [((2, 13, 17), None), ((1, 150, 40), 16), ((3, 40, 12), 7)])
def test_gaussian_blur_equals_two_scipy_correlations(shape, rows):
    rng = np.random.default_rng(0)
    x = rng.random(shape)
    g = np.exp(-(np.arange(-5, 6) / 1.5) ** 2 / 2)
    g /= g.sum()
    ours = M.gaussian_blur(x, g, rows=rows)
    ref = ndimage.correlate1d(ndimage.correlate1d(x, g, axis=-1, mode="mirror"), g, axis=-2, mode="mirror")
    assert ours.shape == x.shape and ours.dtype == x.dtype
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-13)
    # a hand case: a 3-tap box on a 1 x 3 ... needs 2 pixels a side; a delta in a 5 x 5 image
    d = np.zeros((5, 5))
    d[2, 2] = 1.0
    box = M.gaussian_blur(d, np.array([0.25, 0.5, 0.25]))
    assert box[1:4, 1:4] == pytest.approx(np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25]))
    assert box.sum() == pytest.approx(1.0)


def test_gaussian_blur_refuses_images_smaller_than_the_kernel():
    with pytest.raises(M.MetricError, match="at least 6 pixels"):
        M.gaussian_blur(np.zeros((5, 40)), np.ones(11) / 11)


def test_float32_ssim_image_matches_the_float64_one():
    import torch

    rng = np.random.default_rng(4)
    t = rng.random((3, 1, 70, 90))
    p = np.clip(t + 0.2 * rng.normal(size=t.shape), 0, 1)
    a = M._separable_ssim_image(torch.tensor(p), torch.tensor(t)).numpy()
    b = M._separable_ssim_image(torch.tensor(p, dtype=torch.float32), torch.tensor(t, dtype=torch.float32)).numpy()
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, atol=2e-5)


def test_ssim_by_strips_is_independent_of_the_strip_height():
    rng = np.random.default_rng(5)
    t = rng.random((2, 45, 33))
    p = np.clip(t + 0.3 * rng.normal(size=t.shape), 0, 1)
    g = np.exp(-(np.arange(-5, 6) / 1.5) ** 2 / 2)
    g /= g.sum()
    whole = M._ssim_image_strips(p, t, g, 1e-4, 9e-4, rows=45)
    for rows in (6, 16):
        np.testing.assert_allclose(M._ssim_image_strips(p, t, g, 1e-4, 9e-4, rows=rows), whole, rtol=0, atol=1e-14)
    # identical images: SSIM 1 everywhere
    np.testing.assert_allclose(M._ssim_image_strips(t, t, g, 1e-4, 9e-4, rows=7), 1.0, atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 15, 22), (3, 21, 13)])
def test_power_sum_equals_the_summed_dataarray_spectra(shape):
    from engine.evaluation.spectral import power_spectrum, power_sum

    rng = np.random.default_rng(6)
    x = rng.normal(size=shape) + 280.0
    valid = rng.random(shape) > 0.2
    valid[1] = False  # a step without valid points adds nothing
    x[~valid] = np.nan
    dims = ("time", "a", "b")
    ref = power_spectrum(xr.DataArray(x, dims=dims), xr.DataArray(valid, dims=dims), dims=dims[1:]).sum("time").values
    np.testing.assert_allclose(power_sum(x, valid), ref, rtol=1e-10, atol=1e-14)
    # by hand: a unit cosine of wavenumber 4 along a 16-wide grid, every row: mean power 0.5 / (bin 4's count)
    if shape[1:] == (16, 16):
        cos = np.cos(2 * np.pi * 4 * np.arange(16) / 16)[None, None, :] * np.ones((2, 16, 1))
        summed = power_sum(cos, np.ones(cos.shape, bool))
        count = power_spectrum(xr.DataArray(cos[0], dims=("a", "b")), dims=("a", "b"), average="sum").values[3] / \
            power_spectrum(xr.DataArray(cos[0], dims=("a", "b")), dims=("a", "b")).values[3]
        assert summed[3] == pytest.approx(2 * 0.5 / count)
        assert np.delete(summed, 3) == pytest.approx(0.0, abs=1e-20)


def test_average_ranks_by_hand_and_against_scipy():
    from scipy.stats import rankdata

    from engine.evaluation.streaming import average_ranks

    assert list(average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0]))) == [4.0, 1.0, 4.0, 2.0, 4.0]
    x = np.random.default_rng(7).integers(0, 20, 500).astype(float)  # many ties
    np.testing.assert_array_equal(average_ranks(x), rankdata(x))
    y = np.random.default_rng(8).random(300)
    np.testing.assert_array_equal(average_ranks(y), rankdata(y))


def test_spatial_spearman_equals_the_xskillscore_metric_per_step():
    from engine.evaluation.streaming import spatial_spearman

    rng = np.random.default_rng(9)
    t = np.round(rng.random((4, 12, 10)) * 8)  # ties
    p = t + rng.normal(size=t.shape)
    valid = rng.random(t.shape) > 0.25
    dims = ("time", "lat", "lon")
    ref = M.spearman(xr.DataArray(np.where(valid, p, np.nan), dims=dims),
                     xr.DataArray(np.where(valid, t, np.nan), dims=dims), dim=("lat", "lon")).values
    ours = [spatial_spearman(p[i][valid[i]], t[i][valid[i]]) for i in range(4)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    # by hand: a monotone transform has Spearman 1; reversed order -1; a constant field NaN
    x = np.array([1.0, 5.0, 2.0, 9.0])
    assert spatial_spearman(np.exp(x), x) == pytest.approx(1.0)
    assert spatial_spearman(-x, x) == pytest.approx(-1.0)
    assert np.isnan(spatial_spearman(np.ones(4), x))


def test_series_spearman_equals_the_xskillscore_metric_over_time():
    from engine.evaluation.streaming import series_spearman

    rng = np.random.default_rng(10)
    T, H, W = 40, 3, 5
    t = np.round(rng.random((T, H, W)) * 6)  # ties
    p = t + rng.normal(size=t.shape)
    p[rng.random(p.shape) < 0.2] = np.nan  # missing in one of the two
    t[rng.random(t.shape) < 0.1] = np.nan
    p[:, 0, 0] = 5.0  # a constant series: NaN
    p[:-1, 0, 1] = np.nan  # one valid step: NaN
    dims = ("time", "lat", "lon")
    ref = M.spearman(xr.DataArray(p, dims=dims), xr.DataArray(t, dims=dims), dim="time").values
    ours = series_spearman(p, t)
    assert np.isnan(ours[0, 0]) and np.isnan(ours[0, 1])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, equal_nan=True)
    # float32 series as the temporary file holds them
    np.testing.assert_allclose(series_spearman(p.astype(np.float32), t.astype(np.float32)),
                               M.spearman(xr.DataArray(p.astype(np.float32).astype(float), dims=dims),
                                          xr.DataArray(t.astype(np.float32).astype(float), dims=dims), dim="time").values,
                               rtol=1e-12, equal_nan=True)


def test_truth_ranks_shared_by_predictions_give_the_same_scores():
    from engine.evaluation.streaming import TruthRanks, streamed_extras

    rng = np.random.default_rng(11)
    T, H, W = 6, 9, 8
    dims = ("time", "lat", "lon")
    t = np.round(rng.random((T, H, W)) * 5, 1)  # ties
    t[2, 3, 3] = np.nan
    truth = xr.DataArray(t, dims=dims)
    mask = xr.DataArray(np.ones((H, W), bool), dims=dims[1:])
    mask[0, 0] = False
    regions = np.ones((1, H, W), bool)
    p1 = t + rng.normal(size=t.shape)
    p2 = t + rng.normal(size=t.shape)
    p2[4, 1, 1] = np.nan  # missing where the truth is valid: that step ranks the truth itself
    p3 = t + rng.normal(size=t.shape)  # valid wherever the truth is: reads the stored ranks
    args = (mask, regions, ["domain"], ("lat", "lon"), 4, (-5.0, 10.0), False, True, None)
    plain = [streamed_extras(truth, xr.DataArray(p, dims=dims), *args) for p in (p1, p2, p3)]
    ranks = TruthRanks((T, H, W))
    shared = [streamed_extras(truth, xr.DataArray(p, dims=dims), *args, truth_ranks=ranks) for p in (p1, p2, p3)]
    assert ranks.stored.sum() == T  # every step's truth ranks stored by the first prediction
    assert ranks.series_stored  # and its time ranks strip by strip
    ranks.close()
    for (rows_a, maps_a), (rows_b, maps_b) in zip(plain, shared):
        assert rows_a == rows_b
        np.testing.assert_array_equal(maps_a["spearman"], maps_b["spearman"])
