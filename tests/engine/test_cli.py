"""``python -m engine``: train, runs, evaluate, compare, cancel, config, catalog."""

import subprocess
import sys

import pytest
import yaml

from engine.cli import main
from engine.config import ExperimentConfig


def test_config_prints_the_default_yaml(capsys):
    assert main(["config"]) == 0
    assert ExperimentConfig.from_dict(yaml.safe_load(capsys.readouterr().out)) == ExperimentConfig()


def test_catalog_lists_entries(capsys):
    assert main(["catalog"]) == 0
    out = capsys.readouterr().out
    assert "demo_alps" in out and "era5_uk_t2m" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "missing.yaml"], "does not exist"),
        (["train", "{config}", "--set", "training.epochs"], "expected section.field=value"),
        (["train", "{config}", "--set", "model.backbone=resnett"], "model.backbone='resnett'"),
        (["train", "{config}", "--set", "optim.lr=1"], "unknown configuration section 'optim'"),
        (["train", "{config}", "--launcher", "kubernetes"], "kubernetes"),
        (["evaluate", "no-such-run"], "no run 'no-such-run'"),
        (["cancel", "no-such-run"], "no run 'no-such-run'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    config = tmp_path / "exp.yaml"
    ExperimentConfig().to_yaml(config)
    argv = [a.replace("{config}", str(config)) for a in argv]
    assert main(["--runs", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.slow
def test_train_runs_evaluate_compare(tmp_path, capsys, tiny_config):
    config = tmp_path / "exp.yaml"
    tiny_config.to_yaml(config)
    runs = str(tmp_path / "runs")
    assert main(["--runs", runs, "train", str(config), "--launcher", "inline", "--set", "training.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "epoch   0" in out and "completed" in out and "best baseline" in out
    assert main(["--runs", runs, "runs"]) == 0
    listing = capsys.readouterr().out
    run_id = listing.splitlines()[1].split()[0]
    assert "completed" in listing and "inline" in listing
    assert main(["--runs", runs, "evaluate", run_id]) == 0
    assert "scores.csv" in capsys.readouterr().out
    assert main(["--runs", runs, "compare", run_id]) == 0
    table = capsys.readouterr().out
    assert "bicubic" in table and "rmse" in table


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "evaluate", "runs", "compare", "cancel"):
        assert command in out
