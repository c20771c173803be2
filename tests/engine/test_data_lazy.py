"""Larger than memory: pairing stays lazy, statistics stream, the sampler reads one block at a time
and shards blocks over DataLoader workers and DDP ranks, and a run trains from a chunked Zarr store.

Memory is tested by behaviour, never by timing: a dask callback records the largest array any task
produced, and the dataset's held block is inspected, for stores of different lengths.
"""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from dask.callbacks import Callback
from torch.utils.data import DataLoader

from engine.config import DataConfig, ExperimentConfig
from engine.data import blocks
from engine.data.normalise import create
from engine.data.pairing import make_pair
from engine.data.torch_dataset import BlockStream, DownscalingDataset

NY, NX, CHUNK = 16, 32, 8
STEP = NY * NX * 4  # bytes of one float32 HR field


def _store(path, steps: int, seed: int = 0) -> xr.Dataset:
    """A daily Zarr store (time chunks of CHUNK steps) with a seasonal cycle, noise and a NaN corner."""
    rng = np.random.default_rng(seed)
    time = pd.date_range("2001-01-01", periods=steps, freq="D")
    season = 8 * np.sin(2 * np.pi * np.arange(steps) / 365.25)[:, None, None]
    t2m = (283 + season + rng.normal(0, 2, (steps, NY, NX))).astype(np.float32)
    t2m[:, :2, :4] = np.nan  # cells that never have data
    pr = rng.gamma(0.5, 4.0, (steps, NY, NX)).astype(np.float32)
    ds = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), t2m, {"units": "K"}), "pr": (("time", "lat", "lon"), pr, {"units": "mm/day"})},
        coords={
            "time": time,
            "lat": ("lat", np.linspace(45.0, 46.25, NY), {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", np.linspace(5.0, 7.58, NX), {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )
    ds.chunk({"time": CHUNK}).to_zarr(path, mode="w", consolidated=False)
    return xr.open_zarr(path, consolidated=False)


class Largest(Callback):
    """The largest array (bytes) any dask task produced while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        self.largest = max(self.largest, int(getattr(result, "nbytes", 0)))


def _pair(path, steps=None, **kw):
    """The pair of the store at ``path`` (written first with ``steps`` time steps if given)."""
    store = _store(path, steps) if steps else xr.open_zarr(path, consolidated=False)
    return make_pair(DataConfig(scale=4, predictors=("pr",), static=(), **kw), highres=store)


@pytest.fixture(scope="module")
def lazy(tmp_path_factory):
    pair = _pair(tmp_path_factory.mktemp("lazy") / "hr.zarr", 96)
    return pair, create("global").fit(pair, ("2001-01-01", "2001-03-10"))


def test_pairing_returns_lazy_float32(lazy):
    pair, _ = lazy
    assert pair.hr.chunks is not None and all(pair.lr[v].chunks is not None for v in pair.lr.data_vars)
    assert pair.hr.dtype == np.float32 and pair.lr.pr.dtype == np.float32
    assert pair.hr.chunks[0][0] == CHUNK  # the storage chunks are kept
    assert isinstance(pair.mask.data, np.ndarray) and not bool(pair.mask[0, 0]) and bool(pair.mask[5, 5])


@pytest.mark.parametrize("steps", [48, 192])
def test_memory_does_not_grow_with_the_number_of_time_steps(tmp_path, monkeypatch, steps):
    """The same block budget holds the same block, and no task ever computes more than one block
    (pairing's mask pass, the statistics pass, the sampler), whether the store has 48 or 192 steps."""
    _store(tmp_path / "hr.zarr", steps)
    budget = CHUNK * (4 * 2 * 4 * 8 + 5 * NY * NX)  # one chunk of LR channels, target and mask
    monkeypatch.setattr(blocks, "BLOCK_BYTES", budget)
    with Largest() as seen:
        pair = _pair(tmp_path / "hr.zarr")
        assert blocks.step_bytes(pair) * CHUNK == budget
        norm = create("per_pixel").fit(pair, (str(pair.times[0].date()), str(pair.times[-1].date())))
        ds = DownscalingDataset(pair, norm, None, patch_size=8, samples_per_epoch=64, seed=0, patches_per_block=16)
        for item in DataLoader(ds.stream(batch_size=8), batch_size=8):
            assert item["x"].shape == (8, 2, 2, 2)
            held = ds._cached
            assert held.y.shape[0] <= CHUNK and held.x.shape[0] <= CHUNK
    assert 0 < seen.largest <= budget  # never the whole array (48 steps are 6 blocks)
    assert steps * STEP >= 6 * CHUNK * STEP
    assert ds.loads == 4  # 64 samples / 16 per block: four blocks, each read once


@pytest.mark.parametrize("name", ["global", "per_pixel", "monthly_domain", "monthly_pixel"])
def test_streamed_statistics_equal_the_in_memory_float64_ones(tmp_path, monkeypatch, name):
    pair = _pair(tmp_path / "hr.zarr", 120)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 3 * blocks.step_bytes(pair))  # many small blocks
    train = ("2001-01-01", "2001-03-31")
    with Largest() as seen:
        norm = create(name).fit(pair, train)
    assert seen.largest <= CHUNK * STEP

    sel = pair.hr.time.to_index() <= "2001-03-31"
    hr = pair.hr.values[sel].astype(np.float64)
    pr = pair.lr.pr.values[sel].astype(np.float64)
    months = pair.hr.time.to_index()[sel].month.values

    def expect(a, axis, groups=None):
        if groups is None:
            return np.nanmean(a, axis=axis), np.nanstd(a, axis=axis)
        parts = [expect(a[groups == m], axis) for m in np.unique(groups)]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])

    pixel, monthly = name in ("per_pixel", "monthly_pixel"), name.startswith("monthly")
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning) if pixel else _nothing():
        mean, std = expect(hr, 0 if pixel else None, months if monthly else None)
        pr_mean, pr_std = expect(pr, 0 if pixel else None, months if monthly else None)
    got_mean, got_std = (np.asarray(v) for v in norm.hr_stats)
    if monthly:  # January to March have data; the other months repeat the all-months statistics
        got_mean, got_std = got_mean[:3], got_std[:3]
    ok = np.isfinite(mean)
    np.testing.assert_allclose(got_mean[ok], mean[ok], rtol=1e-7)
    np.testing.assert_allclose(got_std[ok], std[ok], rtol=1e-6)
    assert norm.floor["__hr__"] == pytest.approx(np.nanstd(hr), rel=1e-6)
    if pixel:  # cells that never have data get the domain statistics (over all months)
        assert np.all(got_mean[~ok] == pytest.approx(np.nanmean(hr), rel=1e-7))
    lr_mean, lr_std = (np.asarray(v)[:3] if monthly else np.asarray(v) for v in norm.lr_stats["pr"])
    np.testing.assert_allclose(lr_mean, pr_mean, rtol=1e-6)  # pr has no NaN
    np.testing.assert_allclose(lr_std, np.maximum(pr_std, 0.01 * np.nanstd(pr)), rtol=1e-6)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _blocks_of(ds, items):
    """Blocks the items came from (from their dataset time index)."""
    return {int(np.searchsorted(ds._block_start, it["time"], side="right") - 1) for it in items}


def test_sampler_covers_every_block_and_is_reproducible(lazy):
    pair, norm = lazy
    kw = dict(patch_size=8, samples_per_epoch=32, block_bytes=CHUNK * blocks.step_bytes(pair), patches_per_block=16)
    ds = DownscalingDataset(pair, norm, None, seed=3, **kw)
    n = len(ds.blocks)
    assert n == 96 // CHUNK
    visited = [set(ds.shard_blocks(e, 0, 1, 32).tolist()) for e in range(n // 2)]
    assert all(len(v) == 2 for v in visited)  # two blocks of 16 patches per epoch
    assert set().union(*visited) == set(range(n))  # every block within n / 2 epochs
    again = DownscalingDataset(pair, norm, None, seed=3, **kw)
    other = DownscalingDataset(pair, norm, None, seed=4, **kw)
    a, b = [ds[i] for i in range(32)], [again[i] for i in range(32)]
    assert all(torch.equal(x["y"], y["y"]) and torch.equal(x["offset"], y["offset"]) for x, y in zip(a, b))
    assert [other.shard_blocks(e, 0, 1, 32).tolist() for e in range(6)] != [
        ds.shard_blocks(e, 0, 1, 32).tolist() for e in range(6)
    ]
    assert _blocks_of(ds, a) == set(ds.shard_blocks(0, 0, 1, 32).tolist())
    ds.set_epoch(1)
    assert _blocks_of(ds, [ds[i] for i in range(32)]) == set(ds.shard_blocks(1, 0, 1, 32).tolist())


def test_workers_and_ranks_get_disjoint_shards(lazy):
    pair, norm = lazy
    ds = DownscalingDataset(pair, norm, None, patch_size=8, samples_per_epoch=64, seed=0,
                            block_bytes=CHUNK * blocks.step_bytes(pair), patches_per_block=8)
    # 2 ranks x 2 workers = 4 shards, each 2 batches of 8 -> 16 items, 2 blocks each
    for epoch in range(3):
        shards = [set(ds.shard_blocks(epoch, k, 4, 16).tolist()) for k in range(4)]
        assert all(len(s) == 2 for s in shards)
        assert len(set().union(*shards)) == 8  # pairwise disjoint
    ranks = [BlockStream(ds, batch_size=8, rank=r, world=2) for r in (0, 1)]
    assert [len(r) for r in ranks] == [32, 32]  # equal step counts on every rank
    seen = []
    for r, stream in enumerate(ranks):
        got = list(DataLoader(stream, batch_size=8, num_workers=2))
        assert len(got) == 4 and all(b["y"].shape == (8, 1, 8, 8) for b in got)
        # each worker yielded exactly its shard's items: compare with drawing them directly
        want = [ds.draw(0, r * 2 + w, 4, q, 16) for w in (0, 1) for q in range(16)]
        key = lambda y, o, t: (int(t), tuple(o.tolist()), round(float(y.double().sum()), 3))  # noqa: E731
        got_keys = sorted(key(y, o, t) for b in got for y, o, t in zip(b["y"], b["offset"], b["time"]))
        assert got_keys == sorted(key(it["y"], it["offset"], it["time"]) for it in want)
        seen.append(_blocks_of(ds, want))
    assert not seen[0] & seen[1]  # each rank reads only its own blocks


def test_full_domain_training_stream_visits_each_step_once(lazy):
    pair, norm = lazy
    ds = DownscalingDataset(pair, norm, None, patch_size=None, seed=0, block_bytes=CHUNK * blocks.step_bytes(pair))
    items = list(ds.stream(batch_size=1))
    assert sorted(int(it["time"]) for it in items) == list(range(96))
    assert [int(it["time"]) for it in items] != list(range(96))  # shuffled within and across blocks


def test_training_from_a_lazily_paired_zarr_store(tmp_path, monkeypatch):
    from engine.runs import RunStore
    from engine.training.trainer import train

    path = tmp_path / "hr.zarr"
    _store(path, 64)
    catalog = tmp_path / "catalog.yaml"
    monkeypatch.setenv("FINESCALE_DATA_ROOTS", str(tmp_path))  # a site's own data folder
    catalog.write_text(f"""
sources:
  lazy_store:
    driver: zarr
    args: {{urlpath: "{path}", chunks: {{}}, consolidated: false}}
    metadata:
      role: highres
      variables: {{t2m: {{units: K}}, pr: {{units: mm/day}}}}
""")
    cfg = ExperimentConfig(name="lazy").replace(
        data={"highres": "lazy_store", "catalog": str(catalog), "variable": "t2m", "scale": 4, "patch_size": 8,
              "static": [], "train_period": ["2001-01-01", "2001-02-10"], "val_period": ["2001-02-11", "2001-02-20"],
              "test_period": ["2001-02-21", "2001-03-05"], "workers": 1},
        model={"filters": 8, "blocks": 1},
        training={"epochs": 2, "samples_per_epoch": 32, "batch_size": 8, "patience": 5, "precision": "32-true"},
        launch={"launcher": "inline"},
    )
    run = RunStore(tmp_path / "runs").create(cfg)
    train(run)
    epochs = run.epochs()
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(np.isfinite(e["train_loss"]) and np.isfinite(e["val_loss"]) for e in epochs)
    assert run.checkpoint("best").exists() and run.normalisation_path.exists()
