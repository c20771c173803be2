"""Launchers without SLURM: a local process per run with status, logs, cancel and re-attach;
faults (``kill -9`` mid-epoch, then resume); bad input refused before anything starts."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from engine.launch import LaunchError, LocalHandle, attach, cancel, resume, submit
from engine.runs import RunStore
from engine.training.loop import load_checkpoint
from tests.helpers import wait_for

STAND_IN = "tests.slurm.jobs:"


def _kill9(handle: LocalHandle) -> None:
    os.killpg(int(handle.job_id), signal.SIGKILL)
    wait_for(lambda: not handle.alive(), 10, "the killed process to go")


@pytest.fixture
def stand_in(monkeypatch):
    def use(name: str, epoch_s: float = 0.2):
        monkeypatch.setenv("FINESCALE_TRAIN_FN", STAND_IN + name)
        monkeypatch.setenv("FINESCALE_TEST_EPOCH_S", str(epoch_s))
    return use


def test_local_run_is_a_separate_process_with_status_and_logs(tmp_path, tiny_config, stand_in):
    stand_in("epochs")
    handle = submit(tiny_config, RunStore(tmp_path), launcher="local")
    assert isinstance(handle, LocalHandle) and int(handle.job_id) != os.getpid()
    assert handle.wait(timeout=120) == "completed"
    status = handle.status()
    assert status["launcher"] == "local" and status["job_state"] == "EXITED"
    assert status["job_id"] == handle.job_id and status["job_start"] and status["host"]
    assert handle.run.config.launch.launcher == "local"  # the override is recorded
    assert "stdout.log" in handle.logs()


def test_failure_reports_error_and_traceback(tmp_path, tiny_config, stand_in):
    stand_in("fail")
    handle = submit(tiny_config, RunStore(tmp_path), launcher="local")
    assert handle.wait(timeout=120) == "failed"
    status = handle.status()
    assert status["error"].startswith("ValueError: deliberate failure")
    assert "raise ValueError" in status["traceback"]
    assert "deliberate failure" in handle.logs()


def test_reattach_after_restart_and_cancel(tmp_path, tiny_config, stand_in):
    stand_in("epochs", 0.3)
    store = RunStore(tmp_path)
    first = submit(tiny_config.replace(training={"epochs": 500}), store, launcher="local")
    wait_for(lambda: first.run.epochs(), 60, "a first epoch")
    # "The dashboard restarts": a handle from the run store alone, no Popen object.
    again = attach(first.run.run_id, store)
    assert isinstance(again, LocalHandle) and again.job_id == first.job_id and again.alive()
    assert again.status()["state"] == "running"
    status = cancel(again)
    assert status["state"] == "cancelled"
    assert not again.alive() and not first.alive()
    assert not list(first.run.path.rglob("*.tmp"))
    json.loads(first.run.checkpoint("last").read_text())  # complete


def test_dead_process_is_marked_died(tmp_path, tiny_config, stand_in):
    stand_in("epochs", 0.3)
    handle = submit(tiny_config.replace(training={"epochs": 500}), RunStore(tmp_path), launcher="local")
    wait_for(lambda: handle.run.epochs(), 60, "a first epoch")
    _kill9(handle)
    assert handle.run.status()["state"] == "running"  # nobody has told the run store yet
    status = attach(handle.run).status()
    assert status["state"] == "died"
    assert f"process {handle.job_id}" in status["error"] and "ended without reporting" in status["error"]
    assert "resume continues from checkpoints/last.pt" in status["error"]
    assert "last event at" in status["error"] and status["last_event"]["kind"] in ("epoch", "message", "start")


def test_the_run_store_alone_sees_a_dead_worker(tmp_path, tiny_config, stand_in, capsys):
    """``engine runs`` (and the dashboard through Run.check_worker) show "died" with the last
    event, without any launcher handle."""
    from engine.cli import main

    stand_in("epochs", 0.3)
    handle = submit(tiny_config.replace(training={"epochs": 500}), RunStore(tmp_path), launcher="local")
    wait_for(lambda: handle.run.epochs(), 60, "a first epoch")
    os.killpg(int(handle.job_id), signal.SIGKILL)
    handle._process.wait()
    assert main(["--runs", str(tmp_path), "runs"]) == 0
    out = capsys.readouterr().out
    assert " died " in out and "last event at" in out
    assert handle.run.state == "died"


def test_a_second_start_is_refused_naming_the_holder(tmp_path, tiny_config, stand_in):
    stand_in("epochs", 0.3)
    store = RunStore(tmp_path)
    handle = submit(tiny_config.replace(training={"epochs": 500}), store, launcher="local")
    try:
        wait_for(lambda: handle.run.epochs(), 60, "a first epoch")
        # The status says final (a stale or hand-edited file), yet the worker runs: the lock decides.
        handle.run.update_status(state="failed")
        for launcher in ("local", "inline"):
            with pytest.raises(LaunchError, match=rf"already being run by pid {handle.job_id} on host"):
                resume(handle.run, store, launcher=launcher)
        holder = handle.run.lock_holder()
        assert holder["pid"] == int(handle.job_id)
    finally:
        handle.run.update_status(state="running")
        handle.cancel()
    assert handle.run.lock_holder() is None  # the worker is gone: the lock with it
    again = resume(handle.run, store)  # free again: resume is accepted
    wait_for(lambda: again.run.lock_holder(), 60, "the resumed worker to hold the lock")
    assert again.run.lock_holder()["pid"] == int(again.job_id)
    again.cancel()


def test_concurrent_resumes_start_one_worker(tmp_path, tiny_config, stand_in):
    import threading

    stand_in("epochs", 0.2)
    store = RunStore(tmp_path)
    run = store.create(tiny_config.replace(training={"epochs": 20}, launch={"launcher": "local"}))
    run.update_status(state="failed")
    results, barrier = [], threading.Barrier(4)

    def start():
        barrier.wait()
        try:
            results.append(resume(run, store))
        except LaunchError as exc:
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handles = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(handles) == 1, results
    assert all("already being run by" in str(e) or "still 'pending'" in str(e) or "still 'running'" in str(e)
               for e in refused)
    assert handles[0].wait(timeout=120) == "completed"
    assert len({e["epoch"] for e in run.epochs()}) == 20 and len(run.epochs()) == 20


def test_cancel_never_signals_a_pid_it_cannot_prove(tmp_path, tiny_config):
    """status.json names an unrelated process (no start time, or a wrong one, or another
    program): cancel does not signal it."""
    import subprocess
    import threading

    from engine.process import proc_start_ticks

    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    threading.Thread(target=bystander.wait, daemon=True).start()
    try:
        store = RunStore(tmp_path)
        for fields in ({"job_id": str(bystander.pid)},  # no job_start: the case
                       {"job_id": str(bystander.pid), "job_start": 1},  # wrong start time
                       {"job_id": str(bystander.pid), "job_start": proc_start_ticks(bystander.pid)}):  # not a worker
            run = store.create(tiny_config.replace(launch={"launcher": "local"}))
            run.update_status(state="running", launcher="local", **fields)
            status = cancel(run, store)
            assert status["state"] == "cancelled"
            assert bystander.poll() is None, f"an unproven pid was signalled ({fields})"
    finally:
        bystander.kill()


def test_kill9_never_leaves_a_half_written_checkpoint(tmp_path, tiny_config, stand_in):
    """Kill the stand-in (which writes a 200 kB checkpoint every 50 ms) at many moments; the
    checkpoint always parses and resuming never loses a completed epoch."""
    stand_in("epochs", 0.05)
    store = RunStore(tmp_path)
    handle = submit(tiny_config.replace(training={"epochs": 60}), store, launcher="local")
    for i in range(4):
        wait_for(lambda: len(handle.run.epochs()) > 3 * (i + 1), 60, "more epochs")
        time.sleep(0.013 * (i + 1))
        _kill9(handle)
        done = handle.run.epochs()[-1]["epoch"]
        saved = json.loads(handle.run.checkpoint("last").read_text())["epoch"]
        assert saved >= done  # the checkpoint is written before the epoch is reported
        assert attach(handle.run).status()["state"] == "died"
        handle = resume(handle.run)
    assert handle.wait(timeout=120) == "completed"
    logged = [e["epoch"] for e in handle.run.events("epoch")]
    assert sorted(set(logged)) == list(range(60))
    assert len(logged) - 60 <= 4  # at most the epoch in flight at each kill is redone
    assert not list(handle.run.path.rglob("*.tmp"))


@pytest.mark.slow
def test_kill9_mid_epoch_of_real_training_then_resume(tmp_path, tiny_config):
    cfg = tiny_config.replace(training={"epochs": 4, "samples_per_epoch": 512, "patience": 100})
    store = RunStore(tmp_path)
    handle = submit(cfg, store, launcher="local")
    wait_for(lambda: handle.run.epochs(), 300, "a first epoch")
    time.sleep(0.3)  # into the next epoch
    _kill9(handle)
    finished = [e["epoch"] for e in handle.run.epochs()]
    state = load_checkpoint(handle.run.checkpoint("last"))  # loads: not half-written
    assert state["epoch"] >= finished[-1]
    assert attach(handle.run).status()["state"] == "died"
    handle = resume(handle.run)
    assert handle.wait(timeout=600) == "completed", handle.status().get("error")
    run = handle.run
    starts = [e["epoch"] for e in run.events("start")]
    assert starts == [0, state["epoch"] + 1]  # resumed after the last completed epoch
    assert [e["epoch"] for e in run.epochs()] == list(range(4))
    assert load_checkpoint(run.checkpoint("last"))["epoch"] == 3
    assert not list(run.path.rglob("*.tmp"))


@pytest.mark.slow
def test_inline_runs_the_whole_job(tmp_path, tiny_config):
    handle = submit(tiny_config, RunStore(tmp_path), launcher="inline")
    assert handle.status()["state"] == "completed", handle.status().get("error")
    assert handle.run.predictions_path.exists()


def test_resume_refuses_an_active_run(tmp_path, tiny_config, stand_in):
    stand_in("epochs", 0.3)
    handle = submit(tiny_config.replace(training={"epochs": 500}), RunStore(tmp_path), launcher="local")
    try:
        with pytest.raises(LaunchError, match="cancel it before resuming"):
            resume(handle.run)
    finally:
        handle.cancel()


@pytest.mark.parametrize("launcher, change, match", [
    ("local", {"gpus_per_node": 1}, "launch.gpus_per_node=1 but this machine has"),
    ("inline", {"tasks_per_node": 2}, "the inline launcher runs one process"),
])
def test_bad_resources_refused_before_start(tmp_path, tiny_config, launcher, change, match):
    import torch

    if "gpus_per_node" in change and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(LaunchError, match=match):
        submit(tiny_config.replace(launch=change), RunStore(tmp_path), launcher=launcher)
    assert not list(tmp_path.iterdir())


def test_unknown_launcher_and_unwritable_folder(tmp_path, tiny_config):
    with pytest.raises(LaunchError, match="launcher='cluster' is not valid; accepted: inline, local, slurm"):
        submit(tiny_config, RunStore(tmp_path), launcher="cluster")
    with pytest.raises(LaunchError, match="not writable"):
        submit(tiny_config, RunStore("/proc/finescale-runs"), launcher="local")


@pytest.mark.slow
def test_disk_full_mid_run_fails_clearly_then_resume_completes(tmp_path, tiny_config, capsys):
    """A real run on a small tmpfs that fills up after its first epoch: the worker fails naming
    the folder and the free space, listing it ends (no endless poll), and resume completes once
    space is freed, without losing the finished epoch."""
    import shutil
    import subprocess

    from engine.cli import main

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8) (CI runs as root)")
    root = tmp_path / "small"
    root.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        store = RunStore(root / "runs")
        cfg = tiny_config.replace(training={"epochs": 3, "samples_per_epoch": 256, "precision": "32-true", "patience": 10})
        handle = submit(cfg, store, launcher="local")
        run = handle.run
        wait_for(lambda: run.epochs() or run.state in ("failed", "completed"), 600, "a first epoch")
        filler = root / "filler"
        with open(filler, "wb") as fh:  # the disk fills up (another job's output, say), leaving 8 kB
            fh.write(b"\0" * (shutil.disk_usage(root).free - 8 * 1024))
        assert handle.wait(timeout=600) == "failed"
        error = handle.status()["error"]
        assert f"no space left on the device of the run folder '{run.path}'" in error, error
        assert "MiB) free" in error and "resume the run" in error
        kept = [e["epoch"] for e in run.epochs()]
        assert kept and kept[0] == 0
        assert main(["--runs", str(store.root), "runs"]) == 0
        assert " failed " in capsys.readouterr().out
        filler.unlink()
        handle = resume(run, store)
        assert handle.wait(timeout=600) == "completed", handle.status().get("traceback")
        assert [e["epoch"] for e in run.epochs()] == [0, 1, 2]
        assert load_checkpoint(run.checkpoint("last"))["epoch"] == 2
        assert not list(run.path.rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)
