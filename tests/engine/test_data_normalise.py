"""Normalisations: round trips, training-period-only statistics, serialisation, NaN."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import DataConfig
from engine.data import DataError, make_pair
from engine.data.normalise import create, from_dict
from engine.registry import NORMALISATIONS

NAMES = ("global", "per_pixel", "monthly_pixel", "seasonal_pixel", "monthly_domain", "monthly_domain_lr", "instance")
TRAIN = ("2001-01-01", "2001-08-31")


@pytest.fixture(scope="module")
def pair(data_small_demo):
    hr, _ = data_small_demo
    hr = hr.copy()
    pr = hr.pr.values.copy()
    pr[:, 0, :4] = np.nan  # some missing cells
    hr["pr"] = (hr.pr.dims, pr, hr.pr.attrs)
    return make_pair(DataConfig(variable="pr", predictors=("t2m",), scale=4, static=()), highres=hr)


def test_all_registered():
    assert set(NAMES) <= set(NORMALISATIONS.names())
    assert DataConfig().normalisation in NORMALISATIONS


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_and_json(name, pair):
    norm = create(name).fit(pair, TRAIN)
    x = norm.lr(pair.lr)
    y = norm.hr(pair.hr)
    assert x.pr.dtype == np.float32 and y.dtype == np.float32
    assert np.isnan(y.values[:, 0, :4]).all()  # NaN stays NaN
    # normalised training target is roughly standardised
    yt = y.sel(time=slice(*TRAIN)).values
    assert abs(np.nanmean(yt)) < 0.5 and 0.3 < np.nanstd(yt) < 3
    back = norm.inverse_hr(y.values, pair.times)
    np.testing.assert_allclose(back, pair.hr.values, rtol=1e-5, atol=1e-3)
    # (T, 1, H, W) as a model outputs it, and a DataArray
    back4 = norm.inverse_hr(y.values[:, None], pair.times)
    np.testing.assert_allclose(back4[:, 0], back, rtol=1e-6, atol=1e-5)
    assert isinstance(norm.inverse_hr(y, pair.times), xr.DataArray)
    # JSON round trip gives the same transform
    again = from_dict(json.loads(json.dumps(norm.to_dict(), allow_nan=False)))
    assert type(again) is type(norm)
    x2 = again.lr(pair.lr)  # (instance: records the per-time statistics again)
    np.testing.assert_allclose(x2.pr.values, x.pr.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(again.hr(pair.hr).values, y.values, rtol=1e-6, atol=1e-6)


def test_inverse_torch(pair):
    import torch

    norm = create("monthly_domain").fit(pair, TRAIN)
    y = norm.hr(pair.hr).values[:5]
    out = norm.inverse_hr(torch.from_numpy(np.nan_to_num(y))[:, None], pair.times[:5])
    assert isinstance(out, torch.Tensor) and out.shape == (5, 1, 16, 32)


@pytest.mark.parametrize("name", ["global", "per_pixel", "monthly_domain"])
def test_statistics_from_training_period_only(name, pair):
    norm = create(name).fit(pair, TRAIN)
    # change the data outside the training period: the statistics must not move
    hr2 = pair.hr.copy()
    hr2.loc[dict(time=slice("2001-09-01", None))] += 1000.0
    lr2 = pair.lr.copy()
    lr2["pr"] = lr2.pr + xr.where(lr2.time >= np.datetime64("2001-09-01"), 1000.0, 0.0)
    pair2 = type(pair)(**{**pair.__dict__, "hr": hr2, "lr": lr2})
    norm2 = create(name).fit(pair2, TRAIN)
    assert json.dumps(norm.to_dict()) == json.dumps(norm2.to_dict())


def test_global_by_hand():
    times = pd.date_range("2001-01-01", periods=4)
    hr = xr.DataArray(
        np.array([1, 2, 3, 100], np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32),
        dims=("time", "lat", "lon"),
        coords={"time": times, "lat": [0.0, 1.0], "lon": [0.0, 1.0]},
        name="v",
    )
    pair = make_pair(DataConfig(variable="v", scale=2, static=()), highres=hr.to_dataset())
    norm = create("global").fit(pair, ("2001-01-01", "2001-01-03"))
    d = norm.to_dict()
    assert d["hr"]["mean"] == pytest.approx(2.0) and d["hr"]["std"] == pytest.approx(np.sqrt(2 / 3))


def test_monthly_domain_lr_uses_lr_statistics(pair):
    a = create("monthly_domain_lr").fit(pair, TRAIN).to_dict()
    assert a["hr"] == a["lr"]["pr"]
    b = create("monthly_domain").fit(pair, TRAIN).to_dict()
    assert np.asarray(b["hr"]["mean"]).shape == (12,)
    assert np.asarray(create("monthly_pixel").fit(pair, TRAIN).to_dict()["hr"]["mean"]).shape == (12, 16, 32)


def test_instance_uses_lr_statistics_per_sample(pair):
    norm = create("instance").fit(pair, TRAIN)
    x = norm.lr(pair.lr)
    # each time step of the LR target channel is standardised over the domain (unless floored)
    t2m = norm.lr(pair.lr[["t2m"]]).t2m.values
    np.testing.assert_allclose(t2m.reshape(t2m.shape[0], -1).mean(1), 0.0, atol=1e-4)
    assert x.pr.shape == pair.lr.pr.shape
    fresh = create("instance").fit(pair, TRAIN)
    with pytest.raises(DataError, match=r"normalise the LR inputs with lr\(\) first"):
        fresh.hr(pair.hr)


def test_errors(pair):
    with pytest.raises(DataError, match="not fitted"):
        create("global").hr(pair.hr)
    with pytest.raises(KeyError, match="unknown normalisation 'zscore'; registered normalisations: global"):
        create("zscore")
    with pytest.raises(DataError, match="contains no time step of the data"):
        create("global").fit(pair, ("1990-01-01", "1990-12-31"))
    norm = create("per_pixel").fit(pair, TRAIN)
    with pytest.raises(DataError, match="per-pixel statistics"):
        norm.inverse_hr(np.zeros((2, 8, 8)), pair.times[:2])
    with pytest.raises(DataError, match="no statistics for variable"):
        norm.lr(pair.lr.rename(t2m="tas"))


@pytest.mark.parametrize("name", ["global", "monthly_pixel"])
def test_files_round_trip_binary_sidecar_and_old_json(name, pair, tmp_path):
    """save() writes scalars and small arrays as JSON and large arrays to normalisation.npz; load()
    gives the same statistics bit for bit, and still reads an older run's all-JSON file."""
    from engine.data.normalise import load, save

    norm = create(name).fit(pair, TRAIN)
    path = tmp_path / "normalisation.json"
    save(norm, path)
    doc = json.loads(path.read_text())
    sidecar = tmp_path / "normalisation.npz"
    if name == "monthly_pixel":  # (12, H, W) per-cell climatologies: binary, not text
        assert doc["arrays_file"] == "normalisation.npz" and sidecar.exists()
        assert doc["hr"]["mean"] == {"array": "hr/mean", "shape": list(norm.hr_stats[0].shape)}
        assert path.stat().st_size < 2000
    else:  # scalars only: no sidecar
        assert "arrays_file" not in doc and not sidecar.exists()
    again = load(path)
    assert type(again) is type(norm) and again.variable == norm.variable and again.floor == norm.floor
    for a, b in zip(again.hr_stats, norm.hr_stats):
        np.testing.assert_array_equal(a, b)
    for v in norm.lr_stats:
        for a, b in zip(again.lr_stats[v], norm.lr_stats[v]):
            np.testing.assert_array_equal(a, b)
    # an older run: every value in the JSON
    old = tmp_path / "old" / "normalisation.json"
    old.parent.mkdir()
    old.write_text(json.dumps(norm.to_dict()))
    np.testing.assert_array_equal(load(old).hr_stats[0], norm.hr_stats[0])
    if name == "monthly_pixel":  # a sidecar from another fit is refused, naming both files
        other = tmp_path / "other"
        other.mkdir()
        save(create(name).fit(pair, ("2001-01-01", "2001-04-30")), other / "normalisation.json")
        (other / "normalisation.npz").replace(sidecar)
        with pytest.raises(DataError, match="normalisation.npz does not match .*normalisation.json"):
            load(path)
