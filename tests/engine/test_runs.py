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


def test_corrupt_status_is_named(tmp_path):
    run = RunStore(tmp_path).create(ExperimentConfig())
    run.status_path.write_text("{")
    with pytest.raises(RunStoreError, match="corrupt"):
        run.status()
