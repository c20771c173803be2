"""Every zoo family in the ML-Bench protocol: a diffusion model conditioned on the predictors (trained,
sampled into ensemble members in the submission format, scored) and an upsampling network with
``pin``; tiny sizes (a few days, 1 epoch, small networks)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.mlbench.protocol import DOMAINS, EXPERIMENTS, MLBenchError, all_test_inputs, open_cf, submission_file, truth_path

from tests.helpers import needs_mlbench_templates as needs_templates

TINY_DIFFUSION = {"filters": 4, "blocks": 1, "diffusion_steps": 50, "sampling_steps": 1}
MEMBERS = 2  # the submission's 10 members: test_ten_member_files_pass_the_template_check


@pytest.fixture(scope="module")
def alps(tmp_path_factory):
    from engine.mlbench.standin import generate_standin

    return generate_standin("ALPS", tmp_path_factory.mktemp("mlbench"), train_years=1, test_years=1, days_per_year=35)


@pytest.fixture(scope="module")
def diffusion_run(alps, tmp_path_factory):
    from engine.mlbench.experiments import MLBenchConfig, train

    cfg = MLBenchConfig(domain="ALPS", experiment="ESD_pseudo_reality", model="diffusion", epochs=1, root=str(alps),
                        val_fraction=0.45, batch_size=8, members=MEMBERS,
                        model_options=TINY_DIFFUSION)  # days 30-34 held out
    return train(cfg, tmp_path_factory.mktemp("runs"), log=lambda s: None)


def test_learning_follows_the_preset_and_bad_values_are_refused():
    from engine.mlbench.experiments import MLBenchConfig

    cfg = MLBenchConfig(model="diffusion").validate()
    assert cfg.learning == "diffusion" and cfg.experiment_config().training.learning == "diffusion"
    assert cfg.experiment_config().model.backbone == "unet"
    assert MLBenchConfig(model="resnet").learning == "supervised"
    with pytest.raises(MLBenchError, match="learning='gan' is not valid in the protocol; accepted: supervised, diffusion"):
        MLBenchConfig(model="resnet", model_options={"learning": "gan"}).validate()
    with pytest.raises(MLBenchError, match="members=0 is not valid; expected an integer >= 1"):
        MLBenchConfig(model="diffusion", members=0).validate()


def test_climatology_mean_is_zero_on_the_target_grid():
    import torch

    from engine.mlbench.generative import ClimatologyMean

    out = ClimatologyMean(8)(torch.ones(3, 15, 16, 16))
    assert out.shape == (3, 1, 128, 128) and not out.any()


@needs_templates
def test_diffusion_run_writes_ensemble_submission_files(alps, diffusion_run):
    import json

    from engine.mlbench.submission import check_prediction_file

    dom, exp = DOMAINS["ALPS"], EXPERIMENTS["ESD_pseudo_reality"]
    info = json.loads((diffusion_run / "mlbench.json").read_text())
    assert info["val_days"] == 5 and len(info["val_losses"]["tasmax"]) == 1
    assert np.isfinite(info["val_rmse"]["pr"][0])
    events = [json.loads(line) for line in (diffusion_run / "events.jsonl").read_text().splitlines()]
    assert sum(e.get("kind") == "epoch" for e in events) == 2  # one epoch per variable
    for period, mode, gcm in all_test_inputs(dom):
        path = submission_file(diffusion_run / "submission", dom, exp, period, mode, gcm)
        check_prediction_file(path, "ALPS", generative=True, members=MEMBERS)  # member first, template's grid
    with open_cf(submission_file(diffusion_run / "submission", dom, exp, "historical", "perfect", dom.gcm)) as ds:
        assert ds["tasmax"].dims == ("member", "time", "y", "x") and ds.sizes["member"] == MEMBERS
        tx, pr = ds["tasmax"].values, ds["pr"].values
    assert (pr >= 0).all()
    # members are different draws, each a field of plausible temperatures
    assert np.abs(tx[0] - tx[1]).mean() > 1e-3
    assert 200 < np.nanmean(tx) < 330


@needs_templates
def test_ten_member_files_pass_the_template_check(alps, tmp_path):
    from engine.mlbench.submission import ENSEMBLE_MEMBERS, check_prediction_file, write_prediction

    with open_cf(truth_path(alps, "historical", "CNRM-CM5")) as t:
        times = t.indexes["time"][:3]
    rng = np.random.default_rng(0)
    for members in (ENSEMBLE_MEMBERS, 9):
        arrays = {v: rng.random((members, 3, 128, 128)) for v in ("tasmax", "pr")}
        path = write_prediction(arrays, times, "ALPS", tmp_path / f"m{members}.nc")
        if members == ENSEMBLE_MEMBERS:
            check_prediction_file(path, "ALPS", times=times, generative=True)
        else:
            with pytest.raises(MLBenchError, match="member has size 9; generative models need 10"):
                check_prediction_file(path, "ALPS", times=times, generative=True)
    with pytest.raises(MLBenchError, match="has dims \\('member', 'time', 'y', 'x'\\), the ALPS template needs \\('time', 'y', 'x'\\)"):
        check_prediction_file(tmp_path / "m10.nc", "ALPS")


@needs_templates
def test_diffusion_members_are_reproducible(alps, diffusion_run):
    from engine.mlbench.prediction import predictor_fn
    from engine.mlbench.protocol import predictor_path

    predict = predictor_fn(diffusion_run)
    with open_cf(predictor_path(alps, "historical", "perfect", "CNRM-CM5")) as ds:
        ds = ds.isel(time=slice(0, 3)).load()
    a, b = predict(ds), predict(ds)
    assert a["tasmax"].shape == (MEMBERS, 3, 128, 128)
    np.testing.assert_array_equal(a["tasmax"], b["tasmax"])


@needs_templates
def test_diffusion_run_is_scored_on_its_ensemble_mean(alps, diffusion_run):
    from engine.evaluation.metrics import rmse
    from engine.mlbench.scoring import scorecard

    dom, exp = DOMAINS["ALPS"], EXPERIMENTS["ESD_pseudo_reality"]
    table = scorecard([diffusion_run], baselines=False)
    assert len(table) == len(exp.tests) and set(table.model) == {"diffusion"}
    assert np.isfinite(table.drop(columns=["model", "domain", "experiment", "test", "period", "mode", "gcm"])
                       .values.astype(float)).all()
    row = table[(table.test == "Perfect_cross_validation")].iloc[0]
    with open_cf(submission_file(diffusion_run / "submission", dom, exp, "historical", "perfect", dom.gcm)) as p, \
            open_cf(truth_path(alps, "historical", dom.gcm)) as t:
        mean = p["tasmax"].mean("member")
        want = float(rmse(mean.transpose(*t["tasmax"].dims), t["tasmax"]))
        by_hand = float(np.sqrt(np.mean((p["tasmax"].values.mean(0) - t["tasmax"].values) ** 2)))
    assert row.tasmax_rmse == pytest.approx(want, rel=1e-5)
    assert row.tasmax_rmse == pytest.approx(by_hand, rel=1e-4)


def test_ensemble_index_maps_and_spectra(alps, diffusion_run):
    """A dashboard's maps of an ensemble submission are of its member mean; its spectrum averages
    every member's fields (as RALSD reads an ensemble). Both by hand from the files."""
    from engine.evaluation.diagnostics import radial_psd
    from engine.mlbench.scoring import index_maps, spectra

    dom, exp = DOMAINS["ALPS"], EXPERIMENTS["ESD_pseudo_reality"]
    maps = index_maps(diffusion_run, "historical", "perfect", dom.gcm, "tasmax", "mean")
    psd = spectra(diffusion_run, "historical", "perfect", dom.gcm, "tasmax")
    with open_cf(submission_file(diffusion_run / "submission", dom, exp, "historical", "perfect", dom.gcm)) as p, \
            open_cf(truth_path(alps, "historical", dom.gcm)) as t:
        members = p["tasmax"].transpose("member", *t["tasmax"].dims).values
        np.testing.assert_allclose(maps["model"].values, members.mean(axis=(0, 1)), rtol=1e-5)
        np.testing.assert_allclose(maps["truth"].values, t["tasmax"].values.mean(0), rtol=1e-5)
        fields = t["tasmax"].copy(data=members[0])
        by_member = [radial_psd(fields.copy(data=m)).values for m in members]
    np.testing.assert_allclose(psd["model"].values, np.mean(by_member, axis=0), rtol=1e-5)


@needs_templates
def test_an_upsampling_network_with_pin_runs_the_protocol(alps, tmp_path):
    from engine.mlbench.experiments import MLBenchConfig, train
    from engine.mlbench.submission import check_prediction_file

    cfg = MLBenchConfig(domain="ALPS", experiment="Emulator_hist_future", model="unet:pin", epochs=1, root=str(alps),
                        samples_per_epoch=16, model_options={"filters": 4, "blocks": 1})
    assert cfg.validate().model_config().upsampling == "pin"
    run = train(cfg, tmp_path / "runs", log=lambda s: None)
    dom, exp = DOMAINS["ALPS"], EXPERIMENTS["Emulator_hist_future"]
    for period, mode, gcm in all_test_inputs(dom):
        check_prediction_file(submission_file(run / "submission", dom, exp, period, mode, gcm), "ALPS")


@pytest.mark.slow  # trains and samples a second diffusion run through the command line
@needs_templates
def test_command_line_trains_and_scores_a_diffusion_model(alps, tmp_path, capsys):
    from pathlib import Path

    from engine.cli import main

    assert main(["--runs", str(tmp_path / "runs"), "mlbench", "train", "--domain", "ALPS", "--experiment",
                 "ESD_pseudo_reality", "--model", "diffusion", "--epochs", "1", "--root", str(alps),
                 "--samples-per-epoch", "16", "--sampling-steps", "1", "--members", "2"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    with open_cf(next((run / "submission").rglob("*.nc"))) as ds:
        assert ds.sizes["member"] == 2
    out = tmp_path / "card.csv"
    assert main(["mlbench", "score", str(run), "--out", str(out), "--no-baselines"]) == 0
    assert "diffusion" in out.read_text()
