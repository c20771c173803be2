"""Ensembles: Monte-Carlo dropout and diffusion members, deep ensembles of runs, the member
dimension in predictions, derived mean and spread, and clear errors for bad requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from engine.config import ConfigError, ExperimentConfig, ModelConfig
from engine.inference.ensembles import (
    EnsembleError,
    check_members,
    ensemble_kind,
    ensemble_mean,
    ensemble_spread,
    make_forward,
)
from engine.inference.stitching import StitchingError
from engine.models import build_model
from engine.models.diffusion import build_diffusion


def _inputs(batch=2, lr=8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, lr, lr, generator=g), torch.randn(batch, 2, lr * 4, lr * 4, generator=g)


def _zoo(dropout=0.0):
    torch.manual_seed(0)
    return build_model(ModelConfig(filters=4, blocks=1, dropout=dropout), 3, 2, 4).eval()


def test_kinds():
    assert ensemble_kind(_zoo()) is None
    assert ensemble_kind(_zoo(dropout=0.2)) == "mc_dropout"
    assert ensemble_kind(build_diffusion(ModelConfig(filters=4, blocks=1), 3, 2, 4)) == "diffusion"


def test_bad_member_requests_are_clear_errors():
    with pytest.raises(EnsembleError, match=r"members=0 is not valid; expected an integer >= 1"):
        check_members(0)
    with pytest.raises(EnsembleError, match=r"members=4: the model \(DownscalingNet\) is deterministic and cannot "
                                            r"produce an ensemble; accepted: a diffusion run"):
        make_forward(_zoo(), 4, scale=4)
    with pytest.raises(ConfigError, match=r"inference.members=0 is not valid; expected an integer >= 1"):
        ExperimentConfig().replace(inference={"members": 0}).validate()
    assert make_forward(_zoo(), 1, scale=4).members == 1  # one member of a deterministic model is fine


def test_mc_dropout_members_differ_are_reproducible_and_leave_the_model_deterministic():
    net = _zoo(dropout=0.3)
    x, st = _inputs()
    state = torch.random.get_rng_state()
    fwd = make_forward(net, 3, scale=4, seed=1)
    a, b = fwd(x, st, None, key=0), fwd(x, st, None, key=0)
    assert a.shape == (3, 2, 1, 32, 32)
    torch.testing.assert_close(a, b)  # reproducible
    assert not torch.allclose(a[0], a[1])  # members differ
    assert not torch.allclose(fwd(x, st, None, key=8), a)  # and between batches
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    with torch.no_grad():
        torch.testing.assert_close(net(x, st), net(x, st))  # dropout off again afterwards


def test_diffusion_members_and_tiled_members():
    model = build_diffusion(ModelConfig(filters=4, blocks=1, diffusion_steps=20, sampling_steps=2), 3, 2, 4).eval()
    x, st = _inputs(batch=1, lr=16)
    out = make_forward(model, 2, scale=4)(x, st, None)
    assert out.shape == (2, 1, 1, 64, 64) and not torch.allclose(out[0], out[1])
    tiled = make_forward(model, 2, scale=4, tile=48, overlap=32)(x, st, None)
    assert tiled.shape == out.shape and torch.isfinite(tiled).all()


def test_mean_and_spread_are_derived():
    values = np.stack([np.zeros((2, 3, 4)), 2 * np.ones((2, 3, 4))]).astype(np.float32)
    ds = xr.Dataset({"model": (("member", "time", "lat", "lon"), values, {"units": "K"}),
                     "truth": (("time", "lat", "lon"), np.ones((2, 3, 4), np.float32))})
    assert float(ensemble_mean(ds).max()) == 1.0 and ensemble_mean(ds).attrs["units"] == "K"
    assert float(ensemble_spread(ds).max()) == pytest.approx(np.sqrt(2.0))
    with pytest.raises(EnsembleError, match="'truth' has no 'member' dimension"):
        ensemble_mean(ds, "truth")


SHORT = {"val_period": ["2003-01-01", "2003-01-03"], "test_period": ["2003-07-01", "2003-07-03"]}


@pytest.mark.slow
def test_mc_dropout_and_deep_ensembles_through_predictions(tmp_path, tiny_config):
    from engine.evaluation.probabilistic import crps, spread_skill_ratio
    from engine.inference import load_run, predict
    from engine.inference.ensembles import predict_deep_ensemble
    from engine.inference.predict import write_netcdf
    from engine.runs import RunStore
    from engine.training.trainer import train

    store = RunStore(tmp_path)
    cfg = tiny_config.replace(data=SHORT, model={"filters": 4, "dropout": 0.2},
                              training={"epochs": 1, "samples_per_epoch": 16}, inference={"members": 3})
    runs = [store.create(cfg.replace(training={"seed": s}), run_id=f"seed{s}") for s in (0, 1)]
    for run in runs:
        train(run)
    ds = predict(load_run(runs[0]), "test")  # inference.members = 3 from the configuration
    assert ds.model.dims == ("member", "time", "lat", "lon") and ds.sizes["member"] == 3
    assert "ensemble" in ds.model.attrs["description"] and "mc_dropout" in ds.model.attrs["description"]
    assert float(crps(ds.model, ds.truth, mask=ds.mask > 0)) > 0
    assert float(spread_skill_ratio(ds.model, ds.truth, mask=ds.mask > 0)) > 0
    assert not any("mean" in v or "spread" in v for v in ds.data_vars)  # derived, not stored
    write_netcdf(ds, tmp_path / "mc.nc")

    deep = predict_deep_ensemble(runs, "test")
    assert deep.model.dims == ("member", "time", "lat", "lon") and list(deep.member_run.values) == ["seed0", "seed1"]
    assert float(abs(deep.model.isel(member=0) - deep.model.isel(member=1)).max()) > 0
    with pytest.raises(StitchingError, match="smaller than the model.s receptive field"):
        predict(load_run(runs[0]), "test", members=1, tile=16, overlap=8)
    tiled = predict(load_run(runs[0]), "test", members=1, tile=56, overlap=24)
    assert tiled.model.dims == ("time", "lat", "lon")
    with pytest.raises(EnsembleError, match="a deep ensemble needs at least 2 runs"):
        predict_deep_ensemble(runs[:1])
