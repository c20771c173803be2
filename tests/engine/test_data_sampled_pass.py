"""A sampled statistics pass (``data.statistics_sample``): large archives start training without
reading every step.

The sample is whole blocks, one drawn at random from each equal stratum of the training period;
its statistics must agree with the exact pass within their sampling error, every month of a
multi-year period must be represented, and the counts must be scaled to the whole period.
"""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import ConfigError, DataConfig
from engine.data import datapass
from engine.data.errors import DataError
from engine.data.normalise import create
from engine.data.pairing import make_pair

NY, NX, CHUNK = 6, 8, 10
STEPS = 730  # two years of daily data from 1 Jan 2001


def _store(tmp_path):
    """Daily data with a seasonal cycle of +-10 K and 1 K noise, 10-step chunks, in a Zarr store."""
    rng = np.random.default_rng(1)
    t = np.arange(STEPS)
    season = 10 * np.sin(2 * np.pi * t / 365.25)
    values = (280 + season[:, None, None] + rng.normal(size=(STEPS, NY, NX))).astype(np.float32)
    ds = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), values, {"units": "K"})},
        coords={"time": pd.date_range("2001-01-01", periods=STEPS, freq="D"),
                "lat": ("lat", np.linspace(45.0, 45.5, NY), {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", np.linspace(5.0, 5.7, NX), {"units": "degrees_east", "standard_name": "longitude"})},
    )
    ds.chunk({"time": CHUNK}).to_zarr(tmp_path / "s.zarr", consolidated=False)
    return xr.open_zarr(tmp_path / "s.zarr", consolidated=False), values


def _cfg(sample):
    return DataConfig(scale=2, static=(), normalisation="monthly_pixel", statistics_sample=sample,
                      train_period=("2001-01-01", "2002-09-30"), val_period=("2002-10-01", "2002-11-15"),
                      test_period=("2002-11-16", "2002-12-31"))


def test_sample_blocks_takes_one_block_per_stratum_the_same_every_time():
    plan = [np.arange(i * 4, i * 4 + 4) for i in range(10)]  # 10 blocks of 4 steps
    picked = datapass.sample_blocks(plan, max_steps=12)
    assert len(picked) == 3  # 12 steps = 3 whole blocks
    starts = [int(b[0]) // 4 for b in picked]
    # strata of the 10 blocks: [0, 3), [3, 7), [7, 10) (np.linspace(0, 10, 4) rounded)
    assert 0 <= starts[0] < 3 <= starts[1] < 7 <= starts[2] < 10
    assert [b.tolist() for b in datapass.sample_blocks(plan, 12)] == [b.tolist() for b in picked]
    assert datapass.sample_blocks(plan, 40) is plan  # everything fits: every block
    assert len(datapass.sample_blocks(plan, 1)) == 1  # fewer steps than a block: still one block


def test_sample_steps_rules():
    gib = 2**30
    assert datapass.sample_steps("all", 10**6, 10**6, 10**6) is None
    assert datapass.sample_steps(None, 10**6, 10**6, 10**6) is None
    assert datapass.sample_steps(50, 10, 8, 4) == 50
    # auto: every step while the target holds at most 1 GiB ...
    assert datapass.sample_steps("auto", 1024, 2**20 + 2**16, 2**20) is None  # 1024 steps of 1 MiB
    # ... else about 1 GiB of reads: 1 GiB / (1 MiB target + 64 KiB input) per step
    assert datapass.sample_steps("auto", 1025, 2**20 + 2**16, 2**20) == gib // (2**20 + 2**16)
    for bad in (0, -3, "some", 2.5, True):
        with pytest.raises(DataError, match="statistics_sample.*accepted: 'auto', 'all'"):
            datapass.sample_steps(bad, 10, 8, 4)


@pytest.mark.parametrize("bad", [0, -1, "half", True, 1.5])
def test_config_refuses_a_bad_statistics_sample(bad):
    with pytest.raises(ConfigError, match=r"data.statistics_sample=.*accepted: 'auto', 'all' or a whole number"):
        DataConfig(statistics_sample=bad)
    assert DataConfig(statistics_sample="120").statistics_sample == 120
    assert DataConfig().statistics_sample == "auto"


def test_sampled_statistics_agree_with_the_exact_pass_within_sampling_error(tmp_path):
    store, values = _store(tmp_path)
    exact_pair = make_pair(_cfg("all"), highres=store)
    sample_pair = make_pair(_cfg(200), highres=store)
    exact, sample = exact_pair.prepass, sample_pair.prepass
    n_train = 638  # 1 Jan 2001 .. 30 Sep 2002
    assert exact.sampled is None and exact.train_steps == n_train
    assert sample.sampled is not None and 0 < sample.sampled <= 200 and sample.train_steps == n_train
    assert "a sample of" in sample.describe() and "'all' reads every step" in sample.describe()
    assert exact.describe() == f"all {n_train} training steps"
    # every calendar month of the two training years is in the sample (strata over the period)
    assert (sample.moments["__hr__"].steps > 0).all()
    # counts scaled to the whole training period (no NaN here: n_train in every cell)
    np.testing.assert_array_equal(exact.count, n_train)
    assert np.abs(sample.count - n_train).max() <= 1
    # monthly per-cell statistics: the sample's mean within 5 standard errors of the exact one
    e_norm = create("monthly_pixel").fit(exact_pair, _cfg("all").train_period)
    s_norm = create("monthly_pixel").fit(sample_pair, _cfg(200).train_period)
    assert s_norm.origin == "prepass"
    e_mean, e_std = (np.asarray(a) for a in e_norm.hr_stats)
    s_mean, s_std = (np.asarray(a) for a in s_norm.hr_stats)
    n_month = sample.moments["__hr__"].steps  # sampled steps per month
    stderr = e_std / np.sqrt(n_month)[:, None, None]
    assert np.all(np.abs(s_mean - e_mean) < 5 * stderr)
    assert np.all(np.abs(s_mean - e_mean) > 0)  # an estimate, not the exact pass again
    # the spread: a month's few sampled days hold less of its seasonal drift, so per cell it varies
    # more; averaged over the cells, each month's within 40 % of the exact one
    np.testing.assert_allclose(s_std.mean(axis=(1, 2)), e_std.mean(axis=(1, 2)), rtol=0.4)
    # the valid-data mask: every cell holds data in the sample, as in the whole period
    assert sample.mask.all() and exact.mask.all()


def test_auto_reads_every_step_of_a_small_archive(tmp_path):
    store, _ = _store(tmp_path)
    pair = make_pair(_cfg("auto"), highres=store)
    assert pair.prepass.sampled is None and pair.prepass.train_steps == 638
