"""The terminal follows a run: progress from the run's events, the failure's last line in `runs`."""

import pytest
from rich.console import Console

from engine.cli import failure_line, main
from engine.config import ExperimentConfig
from engine.follow import EventTail, epoch_line, follow, position, step_info
from engine.runs import RunStore


def test_progress_texts_by_hand():
    assert position({"epoch": 2}, 20) == "epoch 3/20"
    assert position({"epoch": 0, "member": 1, "members": 3}, 5) == "epoch 1/5 member 2/3"
    assert step_info({"step": 40, "train_loss": 0.12345}, 128, 612.4) == "step 41/128  loss 0.1235  612 samples/s"
    assert step_info({"step": 0}, 8, None) == "step 1/8"
    line = epoch_line({"epoch": 3, "train_loss": 0.5, "val_loss": 0.25, "val_rmse": 1.5, "samples_per_s": 99.6})
    assert line == "  epoch   3  train_loss 0.5000  val_loss 0.2500  val_rmse 1.500  100 samples/s"


def test_event_tail_reads_only_new_complete_lines(tmp_path):
    run = RunStore(tmp_path).create(ExperimentConfig(name="t"))
    tail = EventTail(run)
    run.log_event("step", epoch=0, step=1)
    assert [e["step"] for e in tail.read()] == [1]
    with open(run.events_path, "a") as f:
        f.write('{"kind": "step", "epoch": 0, "st')  # a line still being written
    assert tail.read() == []
    with open(run.events_path, "a") as f:
        f.write('ep": 2}\n')
    assert [e["step"] for e in tail.read()] == [2]


def test_follow_prints_epochs_until_the_run_ends(tmp_path):
    run = RunStore(tmp_path).create(ExperimentConfig(name="f").replace(
        training={"epochs": 2, "samples_per_epoch": 64, "batch_size": 8, "seeds": 2}))
    run.log_event("step", epoch=0, step=3, train_loss=0.25, member=0, members=2)
    run.log_event("epoch", epoch=0, train_loss=0.2, val_loss=0.1, val_rmse=1.25, samples_per_s=300.0, member=0)
    run.log_event("message", text="early stopping after epoch 0")
    run.update_status(state="completed", progress=1.0)
    console = Console(record=True, force_terminal=True, width=200)
    status = follow(run, console=console, poll=0.01)
    text = console.export_text()
    assert status["state"] == "completed"
    assert "epoch   0  member 0  train_loss 0.2000" in text and "early stopping after epoch 0" in text
    assert "100%" in text


def test_runs_shows_the_last_line_of_a_failure(tmp_path, capsys):
    store = RunStore(tmp_path)
    run = store.create(ExperimentConfig(name="bad"))
    run.update_status(state="failed", error="BaselineError: baseline 'quantile_map' needs at least 30\n"
                                            "values per cell; 2 cell(s) have fewer")
    assert failure_line(run.status()) == "values per cell; 2 cell(s) have fewer"
    assert main(["--runs", str(tmp_path), "runs"]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "2 cell(s) have fewer" in out


def test_detach_needs_a_separate_process(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    ExperimentConfig().to_yaml(config)
    assert main(["--runs", str(tmp_path / "runs"), "train", str(config), "--launcher", "inline", "--detach"]) == 2
    assert "--detach needs a launcher that runs apart" in capsys.readouterr().err


@pytest.mark.slow
def test_train_follows_an_inline_run_and_reports_a_failure(tmp_path, capsys, tiny_config):
    config = tmp_path / "exp.yaml"
    # 20 training days: quantile mapping cannot be fitted; the run fails before any epoch
    tiny_config.replace(data={"train_period": ["2001-01-01", "2001-01-20"]}).to_yaml(config)
    runs = str(tmp_path / "runs")
    assert main(["--runs", runs, "train", str(config), "--launcher", "inline"]) == 1
    captured = capsys.readouterr()
    assert "submitted (inline)" in captured.out and ": failed" in captured.out
    assert "at least 30 training values" in captured.err
    assert main(["--runs", runs, "runs"]) == 0
    assert "drop 'quantile_map' from inference.baselines" in capsys.readouterr().out
