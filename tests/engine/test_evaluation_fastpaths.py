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
