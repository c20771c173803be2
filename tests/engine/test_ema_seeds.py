"""Moving average of the weights, early stopping with a minimum delta, and seed ensembles."""

import pytest
import torch
from torch import nn

from engine.runs import RunStore
from engine.training.ema import EMA
from engine.training.loop import load_checkpoint
from engine.training.trainer import train


def test_ema_update_by_hand():
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.5)
    expected = 0.0
    for t, w in enumerate([10.0, 20.0, 30.0]):
        with torch.no_grad():
            net.weight.fill_(w)
        d = min(0.5, (1 + t) / (10 + t))  # warm-up: 0.1, 0.1818..., 0.25
        expected = d * expected + (1 - d) * w
        ema.update(net)
    assert float(ema.module.weight) == pytest.approx(expected)  # 0.1*0 + 0.9*10 = 9; then 20 - ...; ...
    assert expected == pytest.approx(((0.0 * 0.1 + 0.9 * 10) * (2 / 11) + (9 / 11) * 20) * 0.25 + 0.75 * 30)
    assert ema.state_dict() == {"updates": 3, "decay": 0.5}
    with pytest.raises(ValueError, match="decay=1.0 is not valid"):
        EMA(net, 1.0)


def test_ema_is_validated_saved_and_resumed(tiny_config, tmp_path):
    cfg = tiny_config.replace(training={"epochs": 1, "samples_per_epoch": 32, "batch_size": 8, "ema_decay": 0.9})
    run = RunStore(tmp_path).create(cfg.validate())
    train(run)
    last = load_checkpoint(run.checkpoint("last"))
    assert last["ema"] == {"updates": 4, "decay": 0.9}  # 32 samples / 8 per batch
    # the saved "model" (what inference loads) is the average, not the raw weights
    name = next(k for k, v in last["model"].items() if v.dtype.is_floating_point and v.numel() > 1)
    assert not torch.equal(last["model"][name], last["train_model"][name])
    # resume: one more epoch continues the count from the checkpoint
    run2 = run.path / "config.yaml"
    run2.write_text(cfg.replace(training={"epochs": 2}).to_yaml())
    train(run)
    assert load_checkpoint(run.checkpoint("last"))["ema"]["updates"] == 8
    ev = [e for e in run.epochs()]
    assert [e["epoch"] for e in ev] == [0, 1]


def test_min_delta_stops_runs_that_improve_by_less(tiny_config, tmp_path):
    # A min_delta larger than any loss: epoch 0 counts (from infinity), no later epoch can, so
    # patience 1 stops after epoch 1 even if its loss is lower (best.pt still follows it).
    cfg = tiny_config.replace(training={"epochs": 5, "samples_per_epoch": 16, "patience": 1, "min_delta": 100.0})
    run = RunStore(tmp_path).create(cfg.validate())
    summary = train(run)
    assert summary["stopped_early"] and summary["epoch"] == 1
    assert any("min_delta=100" in e.get("text", "") for e in run.events("message"))
    assert load_checkpoint(run.checkpoint("last"))["stop_ref"] == pytest.approx(run.epochs()[0]["val_loss"])


@pytest.mark.slow
def test_seeds_train_members_and_predict_a_deep_ensemble(tiny_config, tmp_path):
    from engine.evaluation.report import evaluate_run
    from engine.inference import write_predictions
    from engine.training.seeds import member_runs

    cfg = tiny_config.replace(training={"epochs": 1, "samples_per_epoch": 16, "seeds": 2, "seed": 5})
    run = RunStore(tmp_path).create(cfg.validate())
    summary = train(run)
    assert summary["members"] == 2 and summary["val_rmse_spread"] >= 0
    members = member_runs(run)
    assert [m.run_id for m in members] == ["seed5", "seed6"]
    assert [m.config.training.seed for m in members] == [5, 6]
    assert all(m.status()["state"] == "completed" and m.checkpoint("best").exists() for m in members)
    # the parent follows its members: their epochs with a member field, progress to the end
    assert sorted((e["member"], e["epoch"]) for e in run.events("epoch")) == [(0, 0), (1, 0)]
    assert run.status()["progress"] == pytest.approx(1.0)
    # a second train() (resume) keeps the finished members
    before = members[0].checkpoint("best").stat().st_mtime_ns
    train(run)
    assert members[0].checkpoint("best").stat().st_mtime_ns == before
    ds = write_predictions(run)
    assert ds["model"].dims == ("member", "time", "lat", "lon") and ds.sizes["member"] == 2
    assert ds.attrs["finescale_run"] == run.run_id and "quantile_map" in ds
    scores = evaluate_run(run)
    assert {"crps", "spread_skill_ratio", "ensemble_mean_rmse"} <= set(scores.metric)


def test_default_patch_fits_a_small_domain(tiny_config):
    from engine.data.check import check_config
    from engine.training.loop import prepare_data

    # 24 x 40 cells of the demo: smaller than the default 64-cell patch
    cfg = tiny_config.replace(data={"patch_size": 64, "bbox": [45.0, 46.99, 7.0, 10.3]},
                              training={"samples_per_epoch": 40}).validate()
    assert not any("patch_size" in p for p in check_config(cfg))
    data = prepare_data(cfg)
    H, W = data.grid_shape
    assert min(H, W) < 64 and data.train.patch_size == min(H, W) - min(H, W) % 4
    assert len(data.train) == 40  # samples_per_epoch honoured
    item = data.train[0]
    assert item["y"].shape[-2:] == (data.train.patch_size, data.train.patch_size)
