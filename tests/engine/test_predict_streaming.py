"""Streaming prediction: block by block into NetCDF (appended along time) or Zarr (regions),
resumed after an interruption, bounded memory, and a clear error for a read-only destination."""

import importlib
import os
import tracemalloc

import cftime
import numpy as np
import pytest
import xarray as xr

predict_module = importlib.import_module("engine.inference.predict")
from engine.inference.output import STEPS_ATTR, BlockWriter, OutputError
from engine.inference.predict import PredictionError, load_run, predict, write_predictions
from engine.runs import RunStore
from engine.training.trainer import train

TEST_PERIOD = ("2003-07-01", "2003-07-20")  # 20 daily steps
BLOCK = 6  # -> blocks of 6, 6, 6, 2
BASELINES = ("nearest", "bilinear")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from engine.config import ExperimentConfig

    cfg = ExperimentConfig(name="stream").replace(
        data={"patch_size": 32, "test_period": list(TEST_PERIOD)},
        model={"filters": 8, "blocks": 1},
        training={"epochs": 1, "samples_per_epoch": 32, "batch_size": 8, "precision": "32-true", "threads": 1},
        inference={"block": BLOCK},
        launch={"launcher": "inline"},
    )
    run = RunStore(tmp_path_factory.mktemp("runs")).create(cfg)
    train(run)
    return run


@pytest.fixture(scope="module")
def reference(trained):
    return predict(load_run(trained), "test", baselines=BASELINES)


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    for name in ("truth", "model", *BASELINES):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=0, atol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(a["mask"].values, b["mask"].values)
    assert list(a.time.values) == list(b.time.values)


def test_netcdf_streaming_matches_in_memory_prediction(trained, reference, tmp_path):
    path = tmp_path / "predictions.nc"
    ds = write_predictions(trained, "test", path=path, baselines=BASELINES)
    assert ds.model.chunks is not None  # returned lazily, nothing loaded
    _same(ds.load(), reference)
    assert not path.with_name("predictions.nc.partial").exists()
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        assert nc.dimensions["time"].isunlimited() and len(nc.dimensions["time"]) == 20
        assert STEPS_ATTR not in nc.ncattrs() and nc.Conventions == "CF-1.8"
        assert nc.variables["mask"].dtype == np.int8 and nc.variables["model"].units == "K"
        assert nc.variables["lat"].standard_name == "latitude"
    assert "best_baseline" in ds.attrs and ds.attrs["finescale_run"] == trained.run_id


def test_interrupted_prediction_resumes_at_the_first_unwritten_block(trained, reference, tmp_path, monkeypatch):
    path = tmp_path / "predictions.nc"
    computed = []
    real_block = predict_module._Predictor.block

    def counting_block(self, positions):
        computed.append(len(computed))
        if len(computed) == 3:  # the process dies while the third block is being predicted
            raise KeyboardInterrupt("simulated kill")
        return real_block(self, positions)

    monkeypatch.setattr(predict_module._Predictor, "block", counting_block)
    with pytest.raises(KeyboardInterrupt):
        write_predictions(trained, "test", path=path, baselines=BASELINES)
    partial = path.with_name("predictions.nc.partial")
    assert partial.exists() and not path.exists()
    with xr.open_dataset(partial) as part:
        assert int(part.attrs[STEPS_ATTR]) == 2 * BLOCK

    monkeypatch.setattr(predict_module._Predictor, "block", real_block)
    resumed = []
    monkeypatch.setattr(predict_module._Predictor, "block",
                        lambda self, positions: resumed.append(len(positions)) or real_block(self, positions))
    ds = write_predictions(trained, "test", path=path, baselines=BASELINES)
    assert resumed == [BLOCK, 20 - 3 * BLOCK]  # blocks 3 and 4 only
    _same(ds.load(), reference)
    assert any("resuming after 12 of 20" in e["text"] for e in trained.events("message"))


def test_stop_after_and_a_changed_request_start_again(trained, tmp_path):
    path = tmp_path / "predictions.nc"
    assert write_predictions(trained, "test", path=path, baselines=BASELINES, stop_after=1) is None
    # the same path asked with other baselines: the partial file is not theirs, start afresh
    ds = write_predictions(trained, "test", path=path, baselines=("nearest",))
    assert set(ds.data_vars) >= {"truth", "model", "nearest", "mask"} and "bilinear" not in ds


def test_zarr_regions(trained, reference, tmp_path):
    path = tmp_path / "predictions.nc"
    assert write_predictions(trained, "test", path=path, format="zarr", baselines=BASELINES, stop_after=2) is None
    ds = write_predictions(trained, "test", path=path, format="zarr", baselines=BASELINES)
    assert (tmp_path / "predictions.zarr").is_dir() and not path.exists()
    _same(ds.load(), reference)


def test_read_only_destination_fails_before_predicting(trained, tmp_path, monkeypatch):
    if os.geteuid() == 0:
        folder = "/sys/finescale-readonly"  # root writes through chmod; sysfs refuses everyone
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    monkeypatch.setattr(predict_module, "load_run", lambda *a, **k: pytest.fail("predicted before checking"))
    with pytest.raises(PredictionError, match=r"cannot write predictions to .*finescale-readonly|ro.*not writable"):
        write_predictions(trained, "test", path=f"{folder}/predictions.nc")


def test_unknown_format_is_refused(trained, tmp_path):
    with pytest.raises(PredictionError, match=r"inference.format='grib' is not valid; accepted: netcdf, zarr"):
        write_predictions(trained, "test", path=tmp_path / "p.nc", format="grib")


def test_memory_is_bounded_by_one_block(trained, tmp_path):
    """With 2-step blocks the traced peak (numpy arrays included) stays well below holding the
    whole 20-step period, and below predicting it as one block. The data sit in chunks of 2 steps
    (a block reads the storage chunks it covers, whatever their size, so the test makes them
    small); baselines are left out: their fitting has its own, block-independent cost."""
    import dataclasses

    loaded = load_run(trained)
    pair = loaded.pair
    loaded.pair = dataclasses.replace(pair, hr=pair.hr.load().chunk(time=2), lr=pair.lr.load().chunk(time=2))
    step_bytes = 4 * int(np.prod(loaded.pair.hr.shape[1:]))
    whole = 20 * step_bytes * 3  # truth, model, inputs
    tracemalloc.start()
    try:
        write_predictions(trained, "test", path=tmp_path / "small.nc", baselines=(), loaded=loaded, block=2)
        _, small = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        predict(loaded, "test", baselines=(), block=20)
        _, big = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert small < whole / 2 and small < big / 2, (small, big, whole)


def _cftime_block(times) -> xr.Dataset:
    values = np.arange(len(times) * 6, dtype=np.float32).reshape(len(times), 2, 3)
    return xr.Dataset({"model": (("time", "lat", "lon"), values), "mask": (("lat", "lon"), np.ones((2, 3), np.int8))},
                      coords={"time": times, "lat": [1.0, 2.0], "lon": [3.0, 4.0, 5.0]})


def test_writer_keeps_cftime_calendars_and_resumes(tmp_path):
    times = xr.date_range("2001-02-27", periods=5, freq="D", calendar="noleap", use_cftime=True)
    path = tmp_path / "p.nc"
    writer = BlockWriter(path, "netcdf", times=times, signature="x")
    assert writer.resume_step() == 0
    writer.write(_cftime_block(times[:2]), 0)
    again = BlockWriter(path, "netcdf", times=times, signature="x")
    assert again.resume_step() == 2
    again.write(_cftime_block(times[2:]), 2)
    again.finish()
    with xr.open_dataset(path) as ds:  # noleap decodes to cftime
        assert isinstance(ds.time.values[0], cftime.DatetimeNoLeap)
        assert [t.day for t in ds.time.values] == [27, 28, 1, 2, 3]  # no 29 February in noleap
        np.testing.assert_array_equal(ds.model.values[2:], _cftime_block(times[2:]).model.values)


def test_writer_refuses_unknown_format(tmp_path):
    with pytest.raises(OutputError, match="accepted: netcdf, zarr"):
        BlockWriter(tmp_path / "p.nc", "hdf4", times=[0])


def test_blocks_are_sized_by_bytes_when_a_chunk_exceeds_the_budget():
    """The demo's 548-step chunks: blocks take what the budget allows (not the largest divisor
    of 548 that fits, 4 steps, each block decompressing the whole chunk again)."""
    import xarray as xr

    from engine.data.blocks import plan
    from engine.inference.predict import block_chunk

    hr = xr.DataArray(np.zeros((1096, 2, 2), np.float32), dims=("time", "lat", "lon")).chunk({"time": 548})
    assert block_chunk(hr, per_step=100, budget=10_000) is None  # 548 steps x 100 bytes > 10 kB
    assert block_chunk(hr, per_step=10, budget=10_000) == 548  # whole chunks fit: aligned to them
    assert block_chunk(hr.compute(), per_step=10, budget=10_000) is None  # in memory: no chunks
    blocks = plan(np.arange(1096), block_chunk(hr, 100, 10_000), 100, 10_000)
    assert [len(b) for b in blocks[:2]] == [100, 100] and sum(map(len, blocks)) == 1096
