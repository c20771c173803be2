"""Quantiles over blocks (engine.evaluation.streaming): histograms within one bin of numpy's,
per-pixel tail quantiles exactly numpy's."""

import numpy as np
import pytest

from engine.evaluation.streaming import BINS, Histogram, TailQuantiles


@pytest.mark.parametrize("n", [1, 2, 7, 5000])
def test_histogram_quantiles_within_one_bin(n):
    x = np.random.default_rng(n).gamma(2.0, 3.0, n)
    h = Histogram(x.min(), x.max())
    for part in np.array_split(x, 3):
        h.add(part)
    width = (x.max() - x.min()) / BINS if n > 1 else 1.0 / BINS
    for q in (0.0, 0.01, 0.5, 0.95, 0.99, 1.0):
        assert abs(h.quantile(q) - np.quantile(x, q)) <= width + 1e-12


def test_histogram_by_hand():
    h = Histogram(0.0, 4.0, bins=4)  # one value per bin, each at its bin's centre
    h.add(np.array([0.5, 1.5, 2.5, 3.5]))
    assert h.quantile(0.5) == pytest.approx(2.0)  # rank 1.5: halfway between 1.5 and 2.5
    assert np.isnan(Histogram(0.0, 1.0).quantile(0.5))


def test_tail_quantiles_exact_per_pixel_with_gaps():
    rng = np.random.default_rng(0)
    T, H, W = 250, 3, 4
    x = rng.normal(size=(T, H, W))
    valid = rng.random((T, H, W)) > 0.2
    valid[:, 0, 0] = False  # a pixel without any value
    expected = np.stack([np.array([[np.quantile(x[valid[:, i, j], i, j], q) if valid[:, i, j].any() else np.nan
                                    for j in range(W)] for i in range(H)]) for q in (0.01, 0.05, 0.99)])
    for step in (32, 1, 7, T):  # blocks smaller and larger than the candidates' room
        tq = TailQuantiles((H, W), T, (0.01, 0.05, 0.99))
        for start in range(0, T, step):
            tq.add(x[start:start + step], valid[start:start + step])
        np.testing.assert_allclose(tq.quantiles(), expected, rtol=0, atol=1e-12, equal_nan=True)
        assert tq.low.shape[0] == tq.k < T  # only the tails are kept


def test_tail_quantiles_refuse_the_middle():
    with pytest.raises(ValueError, match="tails only"):
        TailQuantiles((2, 2), 10, (0.5,))


def test_pixel_series_gives_back_every_pixels_time_series_by_strips():
    from engine.evaluation.streaming import PixelSeries

    rng = np.random.default_rng(5)
    data = rng.normal(size=(11, 7, 5)).astype(np.float32)
    data[3, 2, 1] = np.nan
    with PixelSeries(data.shape, rows=3) as series:
        for s in (slice(0, 4), slice(4, 5), slice(5, 11)):  # blocks of time, as evaluation reads them
            series.add(s.start, data[s])
        strips = list(series.strips())
    assert [sl for sl, _ in strips] == [slice(0, 3), slice(3, 6), slice(6, 7)]
    np.testing.assert_array_equal(np.concatenate([v for _, v in strips], axis=1), data)
