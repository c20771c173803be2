"""ML-Bench experiments as runs of the run store: the folder made by RunStore.create and trained by
the engine's job entry point (status, events, configuration), the epoch chosen on held-out days,
and the interpolated-t850 first guess that the zoo models correct."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.mlbench.protocol import PREDICTORS, MLBenchError

from tests.helpers import needs_mlbench_templates as needs_templates


@pytest.fixture(scope="module")
def alps(tmp_path_factory):
    from engine.mlbench.standin import generate_standin

    return generate_standin("ALPS", tmp_path_factory.mktemp("mlbench"), train_years=1, test_years=1, days_per_year=60)


@pytest.fixture(scope="module")
def store_and_run(alps, tmp_path_factory):
    from engine.mlbench.experiments import MLBenchConfig, train

    root = tmp_path_factory.mktemp("runs")
    cfg = MLBenchConfig(domain="ALPS", experiment="ESD_pseudo_reality", model="resnet", epochs=3, root=str(alps),
                        val_fraction=0.45, samples_per_epoch=16)  # k = 2: days 30-59 held out
    return root, train(cfg, root, log=lambda s: None)


def test_validation_days_are_every_kth_30_day_block():
    from engine.mlbench.experiments import validation_days

    v = validation_days(130, 0.25)  # k = 4: block 3 (days 90-119) only
    assert v.sum() == 30 and v[90:120].all() and not v[:90].any() and not v[120:].any()
    assert validation_days(730, 0.1).sum() == 60  # blocks 9 and 19: both periods of an emulator
    assert not validation_days(50, 0).any()
    with pytest.raises(MLBenchError, match="val_fraction=0.6 is not valid; expected 0 <= val_fraction < 0.5"):
        validation_days(10, 0.6)


def test_bad_residual_names_the_accepted_ones():
    from engine.mlbench.experiments import MLBenchConfig

    with pytest.raises(MLBenchError, match="residual='bias' is not valid; accepted: auto, interpolation, None"):
        MLBenchConfig(residual="bias").validate()
    assert MLBenchConfig(model="deepesd").residual_kind is None
    assert MLBenchConfig(model="resnet").residual_kind == "interpolation"
    assert MLBenchConfig(model="resnet", residual=None).residual_kind is None


def test_t850_interpolation_is_exact_on_a_linear_field():
    from engine.mlbench.interp import T850Interpolation

    lat1, lon1 = np.arange(40.0, 56.0), np.arange(0.0, 16.0)
    lat2 = np.array([[41.5, 47.25], [50.0, 54.9]])
    lon2 = np.array([[0.5, 3.75], [10.0, 14.1]])
    x = np.zeros((2, len(PREDICTORS), 16, 16))
    c = PREDICTORS.index("t_850")
    for t in range(2):  # t850 = 250 + t + 2 lat - 0.5 lon: bilinear interpolation reproduces it
        x[t, c] = 250 + t + 2 * lat1[:, None] - 0.5 * lon1[None, :]
    interp = T850Interpolation(lat1, lon1, lat2, lon2)
    expected = np.stack([250 + t + 2 * lat2 - 0.5 * lon2 for t in range(2)])
    np.testing.assert_allclose(interp.raw(x), expected, atol=1e-9)
    truth = expected + np.array([[1.0, -2.0], [0.5, 3.0]])  # a per-cell offset to tasmax
    np.testing.assert_allclose(interp.fit(x, truth)(x), truth, atol=1e-9)
    # on any field: scipy's bilinear interpolation at the same points
    from scipy.interpolate import RegularGridInterpolator

    x[:, c] = np.random.default_rng(0).normal(size=(2, 16, 16))
    ref = RegularGridInterpolator((lat1, lon1), np.moveaxis(x[:, c], 0, -1))(np.stack([lat2.ravel(), lon2.ravel()], 1))
    np.testing.assert_allclose(interp.raw(x), ref.T.reshape(2, 2, 2), atol=1e-12)
    with pytest.raises(ValueError, match="target latitudes 39.000..41.000 lie outside the predictor grid's 40.000..55.000"):
        T850Interpolation(lat1, lon1, np.array([39.0, 41.0]), np.array([1.0, 2.0]))


def test_predictor_alignment_puts_each_block_over_its_target_cells():
    """Linear fields of latitude and longitude come out as the centres of the target's blocks: the
    zoo's upsampling networks then find a target cell's predictors in the coarse cell above it."""
    from engine.mlbench.interp import PredictorAlignment

    # a 2 x 2 predictor grid larger than the target, as on ALPS; a 4 x 4 sheared target (scale 2)
    # inside it: 40-43.3 N, 5-8 E
    lat1, lon1 = np.array([38.0, 46.0]), np.array([2.0, 12.0])
    lat2 = 40.0 + np.arange(4.0)[:, None] + 0.1 * np.arange(4.0)[None, :]
    lon2 = np.broadcast_to(5.0 + np.arange(4.0)[None, :], (4, 4))
    align = PredictorAlignment(lat1, lon1, lat2, lon2)
    x = np.zeros((3, 2, 2, 2))
    x[:, 0] = lat1[:, None] + np.arange(3)[:, None, None]  # channel 0: latitude + day
    x[:, 1] = lon1[None, :]  # channel 1: longitude
    got = align(x)
    centres_lat = lat2.reshape(2, 2, 2, 2).mean(axis=(1, 3))
    centres_lon = lon2.reshape(2, 2, 2, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(got[:, 0], centres_lat[None] + np.arange(3)[:, None, None], atol=1e-5)
    np.testing.assert_allclose(got[:, 1], np.broadcast_to(centres_lon, (3, 2, 2)), atol=1e-5)
    with pytest.raises(ValueError, match="target grid 4x3 is not a multiple of the predictor grid 2x2"):
        PredictorAlignment(lat1, lon1, lat2[:, :3], lon2[:, :3])
    with pytest.raises(ValueError, match="predictors on a 3x3 grid; the alignment was built for 2x2"):
        align(np.zeros((1, 2, 3, 3)))


@needs_templates
def test_a_zoo_run_sees_the_predictors_aligned_and_deepesd_as_published(alps, store_and_run):
    """The resnet run records the alignment and predicts with it: its prediction changes when the
    alignment is taken away (a run from before the alignment has no flag and is predicted unaligned)."""
    from engine.mlbench.experiments import MLBenchConfig
    from engine.mlbench.prediction import predictor_fn
    from engine.mlbench.protocol import open_cf, predictor_path

    assert MLBenchConfig(model="resnet").aligns_predictors and not MLBenchConfig(model="deepesd").aligns_predictors
    _, path = store_and_run
    info_path = path / "mlbench.json"
    saved = info_path.read_text()
    assert json.loads(saved)["aligned_predictors"] is True
    with open_cf(predictor_path(alps, "historical", "perfect", "CNRM-CM5")) as ds:
        aligned = predictor_fn(path)(ds)["pr"]
        try:
            info_path.write_text(json.dumps({k: v for k, v in json.loads(saved).items() if k != "aligned_predictors"}))
            unaligned = predictor_fn(path)(ds)["pr"]
        finally:
            info_path.write_text(saved)
    assert np.abs(aligned - unaligned).max() > 1e-3


@needs_templates
def test_an_mlbench_run_is_a_run_of_the_store(store_and_run):
    from engine.runs import Run, RunStore

    root, path = store_and_run
    assert [r.path for r in RunStore(root).list()] == [path]
    run = Run(path)
    status = run.status()
    assert status["state"] == "completed" and status["kind"] == "mlbench" and status["progress"] == 1.0
    cfg = run.config  # the engine's configuration, read back as every run's
    assert cfg.name == "mlbench-ALPS_ESD_pseudo_reality_resnet_s0"
    assert cfg.model.backbone == "resnet" and cfg.training.epochs == 3
    assert cfg.data.lowres == "mlbench_alps_train_predictors" and tuple(cfg.data.predictors) == PREDICTORS
    epochs = run.epochs()
    assert [e["variable"] for e in epochs] == ["tasmax"] * 3 + ["pr"] * 3
    assert all({"train_loss", "val_loss", "val_rmse", "lr"} <= set(e) for e in epochs)
    info = json.loads((path / "mlbench.json").read_text())
    assert info["train_days"] + info["val_days"] == 60 and info["val_days"] == 30
    for var in ("tasmax", "pr"):  # the kept epoch is the one with the lowest validation loss
        assert info["best_epoch"][var] == int(np.argmin(info["val_losses"][var]))
        assert (path / "checkpoints" / f"{var}.pt").is_file()


@needs_templates
def test_the_zoo_model_starts_from_the_interpolation_baseline(alps, store_and_run):
    """With its output layer zeroed, a residual run predicts the interpolation baseline plus the
    training mean of the correction: the first guess is added back in physical units."""
    import torch

    from engine.mlbench.prediction import predictor_fn
    from engine.mlbench.protocol import open_cf, predictor_path
    from engine.mlbench.scoring import fit_baselines

    _, path = store_and_run
    stats = dict(np.load(path / "normalisation.npz"))
    assert "tasmax_interp_offset" in stats
    ckpt = path / "checkpoints" / "tasmax.pt"
    saved = ckpt.read_bytes()
    try:
        state = torch.load(ckpt, weights_only=True)
        for k in ("output.weight", "output.bias"):
            state["model"][k].zero_()
        torch.save(state, ckpt)
        predict = predictor_fn(path)
        baseline = fit_baselines("ALPS", "ESD_pseudo_reality", alps)["interpolation"]
        with open_cf(predictor_path(alps, "historical", "perfect", "CNRM-CM5")) as ds:
            got = predict(ds)["tasmax"]
            want = baseline(ds)["tasmax"] + stats["tasmax_mean"]
    finally:
        ckpt.write_bytes(saved)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


@pytest.mark.slow  # scores a run and both baselines on every test file twice
@needs_templates
def test_scoring_in_processes_gives_the_same_table(store_and_run):
    import pandas as pd

    from engine.mlbench.scoring import scorecard

    _, path = store_and_run
    serial = scorecard([path], workers=1)
    parallel = scorecard([path], workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert list(serial.model[:3]) == ["resnet", "interpolation", "linear_regression"]  # the row order kept


@needs_templates
def test_climatology_baseline_is_the_training_month_mean(alps):
    """The climatology baseline, by hand with xarray: each cell's mean over the training days of the
    test day's calendar month (the fixture keeps each year's first 60 days); a month the training
    days lack (July) falls back on the whole training mean."""
    import xarray as xr

    from engine.mlbench.protocol import DOMAINS, EXPERIMENTS, open_cf, predictor_path, train_files
    from engine.mlbench.scoring import fit_baselines

    climatology = fit_baselines("ALPS", "ESD_pseudo_reality", alps)["climatology"]
    with open_cf(train_files(alps, DOMAINS["ALPS"], EXPERIMENTS["ESD_pseudo_reality"])["target"]) as t:
        target = t[["tasmax", "pr"]].transpose("time", "y", "x").load()
    by_month = target.groupby("time.month").mean()
    assert list(by_month.month.values) == [1, 2, 3]
    with open_cf(predictor_path(alps, "end_century", "perfect", "CNRM-CM5")) as ds:
        months = ds["time"].dt.month.values
        got = climatology(ds)
        july = ds.isel(time=[0]).assign_coords(time=xr.date_range("2099-07-01", periods=1, calendar=ds.time.dt.calendar,
                                                                     use_cftime=True))
        fallback = climatology(july)
    for var in ("tasmax", "pr"):
        want = by_month[var].sel(month=xr.DataArray(months, dims="time")).values
        np.testing.assert_allclose(got[var], want, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(fallback[var][0], target[var].mean("time").values, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("model", ["resnet", "convnet", "convnext", "densenet", "swin", "unet", "unet:pin", "convnext:rc"])
def test_every_zoo_family_maps_the_predictors_to_the_target_grid(model):
    """Each supervised zoo preset (and a backbone:upsampling pair) builds for the benchmark's shapes,
    16 x 16 predictors (+ orography at 128 x 128) to the 128 x 128 target, and learns: one Adam step
    on a fixed batch lowers its loss."""
    import torch

    from engine.mlbench.experiments import MLBenchConfig
    from engine.models import build_model

    cfg = MLBenchConfig(model=model).validate()
    torch.manual_seed(0)
    net = build_model(cfg.model_config(), len(PREDICTORS), 1, 8, grid_shape=(128, 128))
    x, static, y = torch.randn(2, len(PREDICTORS), 16, 16), torch.randn(2, 1, 128, 128), torch.randn(2, 1, 128, 128)
    net.eval()  # no dropout: the two losses are of the same function
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(2):
        out = net(x, static)
        assert out.shape == (2, 1, 128, 128)
        loss = ((out - y) ** 2).mean()
        losses.append(float(loss))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[1] < losses[0], losses
