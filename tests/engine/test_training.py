"""The trainer end to end on the demo data: run store contents, checkpoints, resume, seeds,
and predictions written back in physical units as CF NetCDF."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from engine.inference import load_run, predict_run, write_predictions
from engine.runs import RunStore
from engine.training.loop import load_checkpoint
from engine.training.trainer import train

pytestmark = pytest.mark.slow


def test_training_fills_the_run_store(tmp_path, tiny_config):
    run = RunStore(tmp_path).create(tiny_config)
    summary = train(run)
    epochs = run.epochs()
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(np.isfinite(e["train_loss"]) and np.isfinite(e["val_rmse"]) for e in epochs)
    assert 0 <= epochs[-1]["data_wait_fraction"] < 1 and epochs[-1]["samples_per_s"] > 0
    assert summary["best_epoch"] in (0, 1)
    status = run.status()
    assert status["progress"] == pytest.approx(1.0) and status["parameters"] > 0
    assert status["input_channels"][0] == "t2m"
    assert json.loads(run.normalisation_path.read_text())  # statistics stored with the run
    state = load_checkpoint(run.checkpoint("best"))  # weights_only=True: data, not code
    assert {"model", "optimizer", "epoch", "config"} <= set(state)
    assert not list(run.checkpoint_dir.glob("*.tmp"))  # nothing half-written left behind


def test_resume_continues_after_the_last_completed_epoch(tmp_path, tiny_config):
    run = RunStore(tmp_path).create(tiny_config.replace(training={"epochs": 1}))
    train(run)
    first = load_checkpoint(run.checkpoint("last"))["model"]
    run.config_path.write_text(tiny_config.replace(training={"epochs": 2}).to_yaml())
    train(run)
    starts = [e["epoch"] for e in run.events("start")]
    assert starts == [0, 1]  # the second process started at epoch 1, not 0
    assert [e["epoch"] for e in run.epochs()] == [0, 1]
    second = load_checkpoint(run.checkpoint("last"))["model"]
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_same_seed_same_result(tmp_path, tiny_config):
    cfg = tiny_config.replace(training={"epochs": 1, "precision": "32-true"})
    a = train(RunStore(tmp_path / "a").create(cfg))
    b = train(RunStore(tmp_path / "b").create(cfg))
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_predictions_are_cf_netcdf_in_physical_units(tmp_path, tiny_config):
    run = RunStore(tmp_path).create(tiny_config)
    train(run)
    ds = write_predictions(run)
    on_disk = xr.open_dataset(run.predictions_path)
    assert on_disk.attrs["Conventions"].startswith("CF-") and on_disk.attrs["finescale_run"] == run.run_id
    for name in ("truth", "model", "nearest", "bilinear", "bicubic"):
        assert on_disk[name].dims == ("time", "lat", "lon")
        assert on_disk[name].attrs["units"] == "K"
    assert on_disk.lat.attrs["units"] == "degrees_north" and on_disk.lon.attrs["standard_name"] == "longitude"
    test_start, test_end = tiny_config.data.test_period
    assert str(on_disk.time.values[0])[:10] == test_start and str(on_disk.time.values[-1])[:10] == test_end
    # Physical units: 2 m temperature over the Alps lies between 220 and 320 K.
    assert 220 < float(ds.model.min()) and float(ds.model.max()) < 320
    rmse_model = float(np.sqrt(((ds.model - ds.truth) ** 2).mean()))
    rmse_bicubic = float(np.sqrt(((ds.bicubic - ds.truth) ** 2).mean()))
    assert rmse_model < 3 * rmse_bicubic  # two tiny epochs: sane, not yet better
    on_disk.close()


def test_prediction_of_an_untrained_run_is_a_clear_error(tmp_path, tiny_config):
    from engine.inference import PredictionError

    run = RunStore(tmp_path).create(tiny_config)
    with pytest.raises(PredictionError, match="no best checkpoint yet"):
        load_run(run)
    with pytest.raises(PredictionError, match="period 'winter' is not valid"):
        train(run)
        predict_run(run, "winter")


@pytest.mark.parametrize(
    "changes",
    [
        {"model": {"lcb": True}},  # location-specific weights: needs the patch offsets and the HR grid
        {"data": {"sample": "spatiotemporal", "time_window": 3}},  # ConvGRU over 3 LR steps
        {"model": {"backbone": "unet", "upsampling": "pin"}},
    ],
    ids=["lcb", "spatiotemporal", "unet-pin"],
)
def test_zoo_variants_train_and_predict_through_the_run_store(tmp_path, tiny_config, changes):
    run = RunStore(tmp_path).create(tiny_config.replace(training={"epochs": 1}, **changes).validate())
    train(run)
    ds = predict_run(run, "test")
    assert np.isfinite(ds.model.values).all() and ds.model.shape == ds.truth.shape


def test_an_epoch_event_lost_after_its_checkpoint_is_restored_on_resume(tmp_path, tiny_config):
    """Killed between writing last.pt and the epoch event: the checkpoint holds the epoch, and
    resume writes the missing event back, so the loss curve has no hole."""
    run = RunStore(tmp_path).create(tiny_config.replace(training={"epochs": 1}))
    train(run)
    lines = run.events_path.read_text().splitlines()
    run.events_path.write_text("\n".join(line for line in lines if '"kind": "epoch"' not in line) + "\n")
    assert run.epochs() == [] and load_checkpoint(run.checkpoint("last"))["epoch"] == 0
    run.config_path.write_text(tiny_config.replace(training={"epochs": 2}).to_yaml())
    train(run)
    epochs = run.epochs()
    assert [e["epoch"] for e in epochs] == [0, 1] and epochs[0]["restored"] is True
