"""The torch dataset: shapes, patch alignment, determinism, masks, windows, speed."""


import numpy as np
import pytest
import torch

from engine.config import DataConfig
from engine.data import DataError, make_pair
from engine.data.normalise import create
from engine.data.torch_dataset import DownscalingDataset, build_datasets

TRAIN = ("2001-01-01", "2001-08-31")


@pytest.fixture(scope="module")
def pair(data_small_demo):
    hr, gcm = data_small_demo
    hr = hr.copy()
    t2m = hr.t2m.values.copy()
    t2m[:, :2, :] = np.nan  # two missing HR rows
    hr["t2m"] = (hr.t2m.dims, t2m, hr.t2m.attrs)
    return make_pair(DataConfig(scale=4, predictors=("pr",)), highres=hr)


@pytest.fixture(scope="module")
def norm(pair):
    return create("global").fit(pair, TRAIN)


def test_patch_items(pair, norm):
    ds = DownscalingDataset(pair, norm, TRAIN, patch_size=8, samples_per_epoch=50, seed=1)
    assert len(ds) == 50
    assert ds.input_channels == ["t2m", "pr", "elevation", "land_mask"]
    assert ds.static_channels == ["elevation", "land_mask"]
    item = ds[3]
    assert item["x"].shape == (4, 2, 2) and item["x"].dtype == torch.float32
    assert item["static_hr"].shape == (2, 8, 8) and item["y"].shape == (1, 8, 8)
    assert item["mask"].shape == (1, 8, 8) and item["mask"].dtype == torch.float32
    for i in range(len(ds)):
        it = ds[i]
        assert torch.isfinite(it["x"]).all() and torch.isfinite(it["y"]).all()
        assert 0 <= it["time"] < len(ds.times)


def test_patches_aligned_to_scale(pair, norm):
    """The LR patch is exactly the block mean of the HR patch (PerfectProg, no NaN in it)."""
    ds = DownscalingDataset(pair, norm, TRAIN, patch_size=8, samples_per_epoch=40, seed=2)
    checked = 0
    for i in range(len(ds)):
        it = ds[i]
        if it["mask"].min() < 1:
            continue
        y = it["y"][0].numpy()
        lr_from_y = y.reshape(2, 4, 2, 4).mean(axis=(1, 3))
        np.testing.assert_allclose(it["x"][0].numpy(), lr_from_y, atol=1e-4)
        # the static fields at LR are the block means of the HR ones
        s = it["static_hr"][0].numpy().reshape(2, 4, 2, 4).mean(axis=(1, 3))
        np.testing.assert_allclose(it["x"][2].numpy(), s, atol=1e-5)
        checked += 1
    assert checked > 5


def test_deterministic_and_epochs(pair, norm):
    a = DownscalingDataset(pair, norm, TRAIN, patch_size=8, samples_per_epoch=10, seed=7)
    b = DownscalingDataset(pair, norm, TRAIN, patch_size=8, samples_per_epoch=10, seed=7)
    for i in range(10):
        assert torch.equal(a[i]["y"], b[i]["y"]) and a[i]["time"] == b[i]["time"]
    b.set_epoch(1)
    assert any(not torch.equal(a[i]["y"], b[i]["y"]) for i in range(10))


def test_mask_and_nan_filling(pair, norm):
    ds = DownscalingDataset(pair, norm, ("2001-09-01", "2001-12-31"), patch_size=None)
    item = ds[0]
    assert item["mask"][0, :2].sum() == 0 and item["mask"][0, 2:].min() == 1
    assert (item["y"][0, :2] == 0).all()
    assert torch.isfinite(item["x"]).all()


def test_full_domain_in_order(pair, norm):
    ds = DownscalingDataset(pair, norm, ("2001-09-01", "2001-12-31"), patch_size=None)
    assert len(ds) == 122 and str(ds.times[0].date()) == "2001-09-01"
    item = ds[5]
    assert item["time"] == 5 and item["x"].shape == (4, 4, 8) and item["y"].shape == (1, 16, 32)
    # inverse of the normalised target gives the physical field back
    phys = norm.inverse_hr(item["y"].numpy()[None], ds.times[5:6])
    np.testing.assert_allclose(phys[0, 0, 2:], pair.hr.values[pair.times.get_loc(ds.times[5]), 2:], atol=1e-3)


def test_spatiotemporal_window(pair, norm):
    ds = DownscalingDataset(pair, norm, TRAIN, patch_size=None, sample="spatiotemporal", time_window=3)
    first, later = ds[0], ds[10]
    assert later["x"].shape == (3, 4, 4, 8)
    # the window ends at the target time: its last step equals the spatial input of that time
    spatial = DownscalingDataset(pair, norm, TRAIN, patch_size=None)
    assert torch.equal(later["x"][-1], spatial[10]["x"])
    assert torch.equal(later["x"][0], spatial[8]["x"])
    assert torch.equal(first["x"][0], first["x"][2])  # before the first step, the first repeats
    patches = DownscalingDataset(pair, norm, TRAIN, 8, 5, 0, time_window=2)  # sample inferred
    assert patches[0]["x"].shape == (2, 4, 2, 2)


def test_bad_arguments(pair, norm):
    with pytest.raises(DataError, match="patch_size=6 is not a multiple of scale=4"):
        DownscalingDataset(pair, norm, TRAIN, patch_size=6)
    with pytest.raises(DataError, match=r"patch_size=64 is larger than the HR domain 16 x 32"):
        DownscalingDataset(pair, norm, TRAIN, patch_size=64)
    with pytest.raises(DataError, match=r"contains no time step of the data, which cover 2001-01-01"):
        DownscalingDataset(pair, norm, ("2005-01-01", "2005-12-31"))
    with pytest.raises(DataError, match="time_window"):
        DownscalingDataset(pair, norm, TRAIN, sample="spatial", time_window=3)


def test_build_datasets_mos_instance(data_small_demo):
    hr, gcm = data_small_demo
    cfg = DataConfig(
        downscaling="mos", lowres="gcm", scale=4, predictors=("uas", "vas"), normalisation="instance",
        train_period=TRAIN, val_period=("2001-09-01", "2001-10-31"), test_period=("2001-11-01", "2001-12-31"),
        patch_size=8,
    )
    pair = make_pair(cfg, highres=hr, lowres=gcm)
    d = build_datasets(cfg, samples_per_epoch=20, seed=0, pair=pair)
    assert len(d.train) == 20 and len(d.val) == 61 and len(d.test) == 61
    assert d.train.input_channels == ["t2m", "uas", "vas", "elevation", "land_mask"]
    assert d.test[0]["x"].shape == (5, 4, 8)
