"""The run store: folders, atomic status and checkpoints, events, confinement to the root."""

import os
import stat

import pytest

from engine.config import ExperimentConfig
from engine.runs import RunStore, RunStoreError, atomic_path


def test_create_list_get(tmp_path):
    store = RunStore(tmp_path)
    run = store.create(ExperimentConfig(name="a"))
    assert run.config == ExperimentConfig(name="a")
    assert run.status()["state"] == "pending" and run.status()["host"]
    other = store.create(ExperimentConfig(name="b"), run_id="fixed-id")
    assert [r.run_id for r in store.list()] == [run.run_id, "fixed-id"]
    assert store.get("fixed-id").path == other.path
    assert store.resolve(str(other.path)).run_id == "fixed-id"
    with pytest.raises(RunStoreError, match="no run 'nope'.*recent runs"):
        store.get("nope")
    with pytest.raises(RunStoreError, match="already exists"):
        store.create(ExperimentConfig(), run_id="fixed-id")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", ""])
def test_run_ids_are_confined_to_the_root(tmp_path, bad):
    with pytest.raises(RunStoreError):
        RunStore(tmp_path).get(bad)


def test_status_updates_merge_and_reject_unknown_states(tmp_path):
    run = RunStore(tmp_path).create(ExperimentConfig())
    run.update_status(state="running", progress=0.5)
    run.update_status(job_id="42")
    status = run.status()
    assert status["state"] == "running" and status["progress"] == 0.5 and status["job_id"] == "42"
    with pytest.raises(RunStoreError, match="state 'done' is not valid; accepted: pending, running"):
        run.update_status(state="done")


def test_events_skip_a_partial_last_line(tmp_path):
    run = RunStore(tmp_path).create(ExperimentConfig())
    run.log_event("epoch", epoch=0, val_loss=1.0)
    run.log_event("epoch", epoch=1, val_loss=0.5)
    run.log_event("epoch", epoch=1, val_loss=0.4)  # a resumed epoch: the latest wins
    with open(run.events_path, "a") as fh:
        fh.write('{"kind": "epo')  # a writer killed mid-line
    assert [e["val_loss"] for e in run.epochs()] == [1.0, 0.4]


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; permission test needs a normal user")
def test_unwritable_root_is_a_clear_error(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(RunStoreError, match="not writable"):
        RunStore(root).create(ExperimentConfig())


def test_unwritable_root_as_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunStoreError, match="not writable"):
        RunStore(blocker / "runs").create(ExperimentConfig())


@pytest.mark.parametrize("text", ["{", "", "[1, 2]", '"running"', "\x00\xff\xfe", '{"state": 3}'])
def test_a_corrupt_status_is_listed_as_corrupt_beside_the_others(tmp_path, text, capsys):
    from engine.cli import main

    store = RunStore(tmp_path)
    good = store.create(ExperimentConfig(name="good"))
    bad = store.create(ExperimentConfig(name="bad"))
    bad.status_path.write_bytes(text.encode("latin-1"))
    status = bad.status()  # never raises: the dashboard's poll reads through this
    assert status["state"] == "corrupt" and "status.json" in status["error"] and "corrupt" in status["error"]
    assert {r.run_id for r in store.list()} == {good.run_id, bad.run_id}
    with pytest.raises(RunStoreError, match="corrupt"):
        bad.update_status(state="running")  # refused, not overwritten
    assert bad.status_path.read_bytes() == text.encode("latin-1")
    assert main(["--runs", str(tmp_path), "runs"]) == 0
    out = capsys.readouterr().out
    assert good.run_id in out and bad.run_id in out and "corrupt" in out


def test_a_damaged_event_line_is_skipped(tmp_path):
    run = RunStore(tmp_path).create(ExperimentConfig())
    run.log_event("epoch", epoch=0, val_loss=1.0)
    with open(run.events_path, "a") as fh:
        fh.write('{"kind": "epoch", "epoch": "abc"}\n[1]\n{"kind": "epoch"}\n')
    run.log_event("epoch", epoch=1, val_loss=0.5)
    assert [e["epoch"] for e in run.epochs()] == [0, 1]


def _mount_tmpfs(path, options):
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8) (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    return path


def _umount(path):
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_run_root_is_a_clear_error_naming_it(tmp_path, tiny_config):
    from engine.launch import LaunchError, submit

    root = _mount_tmpfs(tmp_path / "ro", "ro,size=1m")
    try:
        with pytest.raises(RunStoreError, match=rf"run store root '{root}' is not writable \(Read-only file system\)"):
            RunStore(root).create(ExperimentConfig())
        with pytest.raises(LaunchError, match=rf"run folder root '{root}' is not writable"):
            submit(tiny_config, RunStore(root), launcher="local")
    finally:
        _umount(root)


def test_a_run_folder_turned_read_only_is_a_clear_error(tmp_path):
    import subprocess

    root = _mount_tmpfs(tmp_path / "rw", "size=1m")
    try:
        run = RunStore(root).create(ExperimentConfig())
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        with pytest.raises(RunStoreError, match=rf"cannot write 'status.json' in the run folder '{run.path}': "
                                                "Read-only file system"):
            run.update_status(state="running")
        with pytest.raises(RunStoreError, match="cannot write 'events.jsonl' .*Read-only file system"):
            run.log_event("message", text="x")
        assert run.status()["state"] == "pending"
    finally:
        _umount(root)


def test_symlinked_run_out_of_the_store_is_refused(tmp_path):
    outside = RunStore(tmp_path / "elsewhere").create(ExperimentConfig(), run_id="victim")
    store = RunStore(tmp_path / "store")
    store.create(ExperimentConfig(), run_id="real")
    (store.root / "link").symlink_to(outside.path)
    with pytest.raises(RunStoreError, match="is a link to .*outside the run store"):
        store.get("link")
