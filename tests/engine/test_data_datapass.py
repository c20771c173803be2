"""Pairing's single streaming pass (engine.data.datapass) and its cache (engine.data.passcache).

The pass gives the valid-data mask (every step) and the normalisation moments (training steps) in one
read; the statistics are checked against plain numpy worked on the whole array, and against values
worked out by hand. The cache must give the same statistics on unchanged data, and a new pass once a
chunk of the store or the configuration changes.
"""

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import DataConfig
from engine.data import datapass, passcache
from engine.data.normalise import create
from engine.data.pairing import make_pair
from engine.data.regrid import block_mean as xr_block_mean

NY, NX, CHUNK, STEPS = 8, 12, 7, 70  # 70 daily steps from 1 Jan: January, February and March


def _values(seed=0):
    rng = np.random.default_rng(seed)
    v = (280 + 5 * rng.normal(size=(STEPS, NY, NX))).astype(np.float32)
    v[:, 0, 0] = np.nan  # never valid
    v[::3, 1, 2] = np.nan  # sometimes missing
    v[40:, 2, 3] = np.nan  # valid only in the training period
    v[-5:, 3, 3] = np.nan
    return v


def _dataset(values):
    return xr.Dataset(
        {"t2m": (("time", "lat", "lon"), values, {"units": "K"})},
        coords={"time": pd.date_range("2001-01-01", periods=values.shape[0], freq="D"),
                "lat": ("lat", np.linspace(45.0, 45.7, NY), {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", np.linspace(5.0, 6.1, NX), {"units": "degrees_east", "standard_name": "longitude"})},
    )


def test_column_moments_by_hand():
    """[1, 2, 3, NaN] shifted by 2: count 3, sum of deviations 0, of squares 2 (mean 2, std sqrt(2/3))."""
    values = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, 5.0], [np.nan, np.nan]], np.float32)
    cnt, s1, s2 = datapass.column_moments(values, 2.0)
    assert cnt.tolist() == [3, 1] and s1.tolist() == [0.0, 3.0] and s2.tolist() == [2.0, 9.0]
    m = datapass.Moments(1, pixel=True)
    m.add(values[:, :, None], np.zeros(4, int))
    mean, std = m.overall()
    assert mean[:, 0] == pytest.approx([2.0, 5.0]) and std[:, 0] == pytest.approx([np.sqrt(2 / 3), 0.0])
    assert datapass.valid_any(values).tolist() == [True, True]
    assert datapass.valid_any(np.full((3, 2), np.nan, np.float32)).tolist() == [False, False]


def test_block_mean_matches_the_lazy_block_mean():
    v = _values()[:10]
    da = xr.DataArray(v, dims=("time", "lat", "lon"), coords={"lat": np.arange(NY) * 1.0, "lon": np.arange(NX) * 1.0})
    want = xr_block_mean(da, 2).values
    got = datapass.block_mean(v, 2)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("kind", ["monthly_pixel", "per_pixel", "global", "monthly_domain"])
def test_fused_pass_statistics_equal_numpy(tmp_path, kind):
    """make_pair's one pass (chunks of 7 steps, blocks of 2 chunks) gives the mask over every step and
    the moments over the training steps only; the fitted statistics equal numpy on the whole array."""
    values = _values()
    _dataset(values).chunk({"time": CHUNK}).to_zarr(tmp_path / "s.zarr", consolidated=False)
    store = xr.open_zarr(tmp_path / "s.zarr", consolidated=False)
    cfg = DataConfig(scale=2, static=(), normalisation=kind, train_period=("2001-01-01", "2001-02-20"),
                     val_period=("2001-02-21", "2001-03-01"), test_period=("2001-03-02", "2001-03-11"))
    pair = make_pair(cfg, highres=store)
    assert pair.prepass.origin == "prepass"
    np.testing.assert_array_equal(pair.mask.values, np.isfinite(values).any(0))
    assert not pair.mask.values[0, 0] and pair.mask.values[2, 3]
    train = np.arange(51)  # 1 Jan .. 20 Feb
    np.testing.assert_array_equal(pair.prepass.count, np.isfinite(values[train]).sum(0))
    norm = create(kind).fit(pair, cfg.train_period)
    assert norm.origin == "prepass"
    hr = values[train].astype(np.float64)
    months = pd.DatetimeIndex(pair.times[train]).month.values
    if kind == "global":
        want = (np.nanmean(hr), np.nanstd(hr))
        assert float(norm.hr_stats[0]) == pytest.approx(want[0], rel=1e-12)
        assert float(norm.hr_stats[1]) == pytest.approx(want[1], rel=1e-6)
    elif kind == "per_pixel":
        ok = pair.mask.values & np.isfinite(hr).any(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_allclose(norm.hr_stats[0][ok], np.nanmean(hr, 0)[ok], rtol=1e-10)
            np.testing.assert_allclose(norm.hr_stats[1][ok], np.nanstd(hr, 0)[ok], rtol=1e-5)
        lr = hr.reshape(-1, NY // 2, 2, NX // 2, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lr = np.nanmean(lr, axis=(2, 4))
            np.testing.assert_allclose(norm.lr_stats["t2m"][0][1:, 1:], np.nanmean(lr, 0)[1:, 1:], rtol=1e-6)
    elif kind == "monthly_pixel":
        for month, k in ((1, 0), (2, 1)):
            part = hr[months == month]
            ok = np.isfinite(part).any(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                np.testing.assert_allclose(norm.hr_stats[0][k][ok], np.nanmean(part, 0)[ok], rtol=1e-10)
                np.testing.assert_allclose(norm.hr_stats[1][k][ok], np.nanstd(part, 0)[ok], rtol=1e-5)
        # March has no training step: the all-months statistics
        ok = np.isfinite(hr).any(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_allclose(norm.hr_stats[0][2][ok], np.nanmean(hr, 0)[ok], rtol=1e-10)
    else:  # monthly_domain
        for month, k in ((1, 0), (2, 1)):
            part = hr[months == month]
            assert norm.hr_stats[0][k] == pytest.approx(np.nanmean(part), rel=1e-12)
            assert norm.hr_stats[1][k] == pytest.approx(np.nanstd(part), rel=1e-6)
    # the same statistics from a pass of fit's own (no pairing pass to reuse)
    pair.prepass = None
    again = create(kind).fit(pair, cfg.train_period)
    assert again.origin == "pass"
    for a, b in zip(norm.hr_stats, again.hr_stats):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def _catalog(tmp_path, monkeypatch):
    store = tmp_path / "data" / "s.zarr"
    store.parent.mkdir()
    _dataset(_values()).chunk({"time": CHUNK}).to_zarr(store, consolidated=False)
    catalog = tmp_path / "data" / "cat.yaml"
    catalog.write_text(
        "sources:\n  s:\n    driver: zarr\n"
        f"    args: {{urlpath: \"{store}\", chunks: {{}}, consolidated: false}}\n"
        "    metadata:\n      role: highres\n      variables: {t2m: {units: K}}\n")
    monkeypatch.setenv("FINESCALE_DATA_ROOTS", str(tmp_path / "data"))
    monkeypatch.setenv("FINESCALE_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("FINESCALE_PASS_CACHE", raising=False)
    cfg = DataConfig(highres="s", catalog=str(catalog), scale=2, static=(), normalisation="per_pixel",
                     train_period=("2001-01-01", "2001-02-20"), val_period=("2001-02-21", "2001-03-01"),
                     test_period=("2001-03-02", "2001-03-11"))
    return store, cfg


def test_cache_reused_on_unchanged_data_and_invalidated_when_a_chunk_changes(tmp_path, monkeypatch):
    store, cfg = _catalog(tmp_path, monkeypatch)
    first = make_pair(cfg)
    assert first.prepass.origin == "prepass" and list((tmp_path / "cache" / "passes").glob("*.npz"))
    norm1 = create("per_pixel").fit(first, cfg.train_period)

    second = make_pair(cfg)
    assert second.prepass.origin == "cache"
    norm2 = create("per_pixel").fit(second, cfg.train_period)
    assert norm2.origin == "cache"
    np.testing.assert_array_equal(second.mask.values, first.mask.values)
    for a, b in zip(norm1.hr_stats, norm2.hr_stats):
        np.testing.assert_array_equal(a, b)  # the accumulators themselves are stored: bit-identical

    # another training period: another key, a new pass
    other = make_pair(dataclasses.replace(cfg, train_period=("2001-01-01", "2001-01-31")))
    assert other.prepass.origin == "prepass"

    # one chunk of the store rewritten (first week doubled): the fingerprint changes, the pass runs again
    changed = _values()
    changed[:CHUNK] *= 2
    _dataset(changed).isel(time=slice(0, CHUNK)).drop_vars(["lat", "lon"]).chunk({"time": CHUNK}).to_zarr(
        store, region={"time": slice(0, CHUNK)}, consolidated=False, mode="r+")
    third = make_pair(cfg)
    assert third.prepass.origin == "prepass"
    norm3 = create("per_pixel").fit(third, cfg.train_period)
    assert not np.allclose(norm3.hr_stats[0][3:, 3:], norm1.hr_stats[0][3:, 3:])


def test_cache_off_and_no_cache_for_datasets(tmp_path, monkeypatch):
    store, cfg = _catalog(tmp_path, monkeypatch)
    monkeypatch.setenv("FINESCALE_PASS_CACHE", "0")
    make_pair(cfg)
    assert make_pair(cfg).prepass.origin == "prepass"
    assert not list((tmp_path / "cache").glob("passes/*.npz"))
    monkeypatch.delenv("FINESCALE_PASS_CACHE")
    assert passcache.fingerprint(cfg, [(None, None)]) is None  # a dataset given in memory: nothing to key on
    assert passcache.fingerprint(cfg, [("s3://bucket/store.zarr", None)]) is None  # remote: not listed
    assert passcache.fingerprint(cfg, [(str(store), None)]) is not None


def test_damaged_cache_file_is_ignored(tmp_path, monkeypatch):
    _, cfg = _catalog(tmp_path, monkeypatch)
    make_pair(cfg)
    for f in (tmp_path / "cache" / "passes").glob("*.npz"):
        f.write_bytes(b"not an npz")
    assert make_pair(cfg).prepass.origin == "prepass"


def test_sampler_block_mean_channel_equals_the_lazy_input(tmp_path):
    """The sampler computes the PerfectProg input channel from the target block in memory; its items
    equal those read through the lazy block mean (the path without that shortcut)."""
    from engine.data.torch_dataset import DownscalingDataset

    _dataset(_values()).chunk({"time": CHUNK}).to_zarr(tmp_path / "s.zarr", consolidated=False)
    cfg = DataConfig(scale=2, static=(), normalisation="monthly_pixel", train_period=("2001-01-01", "2001-02-20"))
    pair = make_pair(cfg, highres=xr.open_zarr(tmp_path / "s.zarr", consolidated=False))
    assert pair.attrs["lr_block_mean_of_hr"] == "t2m"
    norm = create("monthly_pixel").fit(pair, cfg.train_period)
    fast = DownscalingDataset(pair, norm, ("2001-01-20", "2001-02-10"), patch_size=None, block_bytes=10 * NY * NX * 5)
    items = [fast[i] for i in range(len(fast))]
    assert fast.loads > 1  # several blocks
    pair.attrs["lr_block_mean_of_hr"] = None
    slow = DownscalingDataset(pair, norm, ("2001-01-20", "2001-02-10"), patch_size=None, block_bytes=10 * NY * NX * 5)
    for i, item in enumerate(items):
        want = slow[i]
        np.testing.assert_allclose(item["x"].numpy(), want["x"].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(item["y"].numpy(), want["y"].numpy())
        np.testing.assert_array_equal(item["mask"].numpy(), want["mask"].numpy())
    # and the normalised block equals the float64 formula on the raw values
    t = int(np.flatnonzero(pd.DatetimeIndex(pair.times) == "2001-02-01")[0])
    raw = _values()[t].astype(np.float64)
    mean, std = norm.hr_stats[0][1], norm.hr_stats[1][1]  # February
    want = np.nan_to_num((raw - mean) / std)
    np.testing.assert_allclose(items[t - 19]["y"][0].numpy(), want, rtol=1e-5, atol=1e-5)


def test_quantile_check_counts_from_the_pass(tmp_path):
    """The quantile-mapping check (>= 30 training values per cell) uses the per-cell count of the pass
    instead of reading the training period again; it still refuses a short training period."""
    from engine.inference.baselines import BaselineError, Baselines

    _dataset(_values()).chunk({"time": CHUNK}).to_zarr(tmp_path / "s.zarr", consolidated=False)
    cfg = DataConfig(scale=2, static=(), normalisation="global", train_period=("2001-01-01", "2001-01-20"))
    pair = make_pair(cfg, highres=xr.open_zarr(tmp_path / "s.zarr", consolidated=False))
    np.testing.assert_array_equal(pair.prepass.count, np.isfinite(_values()[:20]).sum(0))
    with pytest.raises(BaselineError, match="fewest: 13"):  # cell (1, 2): 7 of its 20 steps missing
        Baselines(pair, ("quantile_map",), train_period=cfg.train_period).check()
    pair.prepass.count = np.full_like(pair.prepass.count, 25)  # the check reads the pass's count
    with pytest.raises(BaselineError, match="fewest: 25"):
        Baselines(pair, ("quantile_map",), train_period=cfg.train_period).check()


def test_cache_keeps_the_most_recently_used_results_within_its_size(tmp_path, monkeypatch):
    _, cfg = _catalog(tmp_path, monkeypatch)
    make_pair(cfg)
    first = next((tmp_path / "cache" / "passes").glob("*.npz"))
    size = first.stat().st_size
    monkeypatch.setattr(passcache, "CACHE_BYTES", int(1.5 * size))
    make_pair(dataclasses.replace(cfg, train_period=("2001-01-01", "2001-01-31")))  # a second result: the first goes
    left = list((tmp_path / "cache" / "passes").glob("*.npz"))
    assert len(left) == 1 and left[0] != first
