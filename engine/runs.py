"""The run store: one folder per run, the only channel between a training process and the
dashboard, the command line or a later session.

Layout of ``<root>/<run_id>/``::

    config.yaml          the ExperimentConfig that defines the run
    status.json          state, progress, launcher, job id, host, times, error (atomic writes)
    events.jsonl         progress events (one JSON object a line, appended as they happen)
    checkpoints/         best.pt, last.pt (written to a temporary file, then renamed)
    normalisation.json   statistics fitted on the training period
    predictions.nc       CF-compliant NetCDF predictions on the test period
    scores.csv           tidy scores table (run, model, metric, variable, period, region, value)
    maps.nc              per-pixel score maps
    logs/                stdout / stderr of the launcher
    attributions/        Captum attributions as NetCDF

The root is ``$FINESCALE_RUNS`` or ``./runs``. Everything that finished is on disk: a reader
never sees a half-written status, checkpoint or NetCDF file because all of them are written
to a temporary name in the same folder and renamed (atomic on POSIX).

Example
-------
>>> store = RunStore("/tmp/finescale-runs")          # doctest: +SKIP
>>> run = store.create(config)                         # doctest: +SKIP
>>> run.update_status(state="running", progress=0.1)   # doctest: +SKIP
>>> [r.run_id for r in store.list()]                   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any

from engine.config import ExperimentConfig
from engine.files import atomic_path, write_text_atomic  # noqa: F401  (re-exported)

STATES = ("pending", "running", "completed", "failed", "cancelled")
FINAL_STATES = ("completed", "failed", "cancelled")


class RunStoreError(ValueError):
    """A run store problem (unknown run, root not writable, corrupt status)."""


def default_root() -> Path:
    return Path(os.environ.get("FINESCALE_RUNS", "runs")).expanduser()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Run:
    """A handle on one run folder. Cheap to create; reads files on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- identity and files ------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.nc"

    @property
    def scores_path(self) -> Path:
        return self.path / "scores.csv"

    @property
    def maps_path(self) -> Path:
        return self.path / "maps.nc"

    @property
    def normalisation_path(self) -> Path:
        return self.path / "normalisation.json"

    def checkpoint(self, which: str = "best") -> Path:
        return self.checkpoint_dir / f"{which}.pt"

    @property
    def config(self) -> ExperimentConfig:
        if not self.config_path.exists():
            raise RunStoreError(f"run {self.run_id!r} has no config.yaml at {self.config_path}")
        return ExperimentConfig.from_yaml(self.config_path)

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The status dictionary (``state``, ``progress``, ``launcher``, ``job_id``, ``host``,
        ``created``, ``started``, ``ended``, ``error``, ``scores`` ...)."""
        try:
            return json.loads(self.status_path.read_text())
        except FileNotFoundError:
            return {"state": "pending", "progress": 0.0}
        except json.JSONDecodeError as exc:  # cannot happen with atomic writes; say so if it does
            raise RunStoreError(f"status file of run {self.run_id!r} is corrupt: {exc}") from None

    @property
    def state(self) -> str:
        return self.status().get("state", "pending")

    def update_status(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into status.json atomically and return the new status.

        Only one process writes a run's status at a time (the launcher before the job starts,
        the job's rank 0 while it runs), so read-modify-write needs no lock.
        """
        if "state" in changes and changes["state"] not in STATES:
            raise RunStoreError(f"state {changes['state']!r} is not valid; accepted: {', '.join(STATES)}")
        status = self.status()
        status.update(changes)
        status["updated"] = now_iso()
        write_text_atomic(self.status_path, json.dumps(status, indent=1, default=str))
        return status

    # -- events --------------------------------------------------------------------------
    def log_event(self, kind: str, **values: Any) -> None:
        """Append one progress event (``kind`` is e.g. "epoch", "step", "message")."""
        record = {"time": now_iso(), "kind": kind, **values}
        line = json.dumps(record, default=float) + "\n"
        # One write() of a short line in append mode is atomic enough for a single writer;
        # readers skip a trailing partial line (see events()).
        with open(self.events_path, "a") as fh:
            fh.write(line)
            fh.flush()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        out = []
        for line in self.events_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            if kind is None or record.get("kind") == kind:
                out.append(record)
        return out

    def epochs(self) -> list[dict[str, Any]]:
        """The per-epoch metrics, one dict per finished epoch (latest value per epoch)."""
        by_epoch: dict[int, dict[str, Any]] = {}
        for record in self.events("epoch"):
            by_epoch[int(record["epoch"])] = record
        return [by_epoch[k] for k in sorted(by_epoch)]

    def log_tail(self, lines: int = 50) -> str:
        """The last lines of the run's logs (stdout and stderr), for the dashboard and CLI."""
        if not self.logs_dir.exists():
            return ""
        chunks = []
        for path in sorted(self.logs_dir.glob("*")):
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"==> {path.name} <==\n" + "\n".join(text))
        return "\n".join(chunks)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


class RunStore:
    """The folder that holds all runs."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def _check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{uuid.uuid4().hex}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise RunStoreError(
                f"run store root {str(self.root)!r} is not writable ({exc.strerror}); "
                "set FINESCALE_RUNS or pass a writable folder"
            ) from None

    def create(self, config: ExperimentConfig, run_id: str | None = None) -> Run:
        """Make a new run folder holding ``config`` and a ``pending`` status."""
        self._check_writable()
        if run_id is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            run_id = f"{stamp}-{config.name}-{uuid.uuid4().hex[:6]}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
            raise RunStoreError(f"run id {run_id!r} is not valid; use letters, digits, '_', '-' or '.'")
        run = Run(self.root / run_id)
        if run.path.exists():
            raise RunStoreError(f"run {run_id!r} already exists in {self.root}")
        run.path.mkdir(parents=True)
        run.logs_dir.mkdir()
        write_text_atomic(run.config_path, config.to_yaml())
        run.update_status(state="pending", progress=0.0, created=now_iso(), host=socket.gethostname())
        return run

    def get(self, run_id: str) -> Run:
        # Confine to the root: a run id never contains a path separator.
        if not run_id or "/" in run_id or run_id in (".", "..") or "\\" in run_id:
            raise RunStoreError(f"run id {run_id!r} is not valid")
        run = Run(self.root / run_id)
        if not run.config_path.exists():
            known = ", ".join(r.run_id for r in self.list()[-10:]) or "none"
            raise RunStoreError(f"no run {run_id!r} in {self.root}; recent runs: {known}")
        return run

    def resolve(self, run: str | Path | Run) -> Run:
        """Accept a Run, a run folder path or a run id."""
        if isinstance(run, Run):
            return run
        path = Path(run)
        if (path / "config.yaml").exists():
            return Run(path)
        return self.get(str(run))

    def list(self) -> list[Run]:
        """All runs, oldest first."""
        if not self.root.exists():
            return []
        runs = [Run(p) for p in self.root.iterdir() if (p / "config.yaml").exists()]
        return sorted(runs, key=lambda r: (r.status().get("created", ""), r.run_id))
