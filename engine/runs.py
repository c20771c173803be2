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
import errno
import fcntl
import json
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any

from engine.config import ExperimentConfig
from engine.files import atomic_path, write_text_atomic  # noqa: F401  (re-exported)

STATES = ("pending", "running", "completed", "failed", "cancelled", "died")
#: ``died``: the worker vanished without reporting (``kill -9``, out-of-memory killer, a node
#: lost); ``corrupt``: the status file cannot be read (never written, only reported).
FINAL_STATES = ("completed", "failed", "cancelled", "died", "corrupt")
LOCK_NAME = ".lock"


class RunStoreError(ValueError):
    """A run store problem (unknown run, root not writable, corrupt status)."""


class RunLocked(RunStoreError):
    """The run folder is locked by a live worker; ``holder`` says which (pid, host, since)."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


class RunLock:
    """An exclusive ``flock`` on ``<run>/.lock``, held by the run's worker for as long as it runs.

    The kernel drops the lock when the last descriptor closes, so a worker that dies (even by
    ``kill -9``) frees its run. The file holds the holder's identity (JSON) for messages. A
    launcher may take the lock and hand the descriptor to the worker it starts (inherited
    descriptors share one lock), so that no second start can slip in between.
    """

    def __init__(self, run: "Run", fd: int):
        self.run, self.fd = run, fd

    @classmethod
    def acquire(cls, run: "Run", **holder: Any) -> "RunLock":
        fd = os.open(run.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            held = run.lock_holder() or {}
            raise RunLocked(f"run {run.run_id!r} is already being run by {_describe_holder(held)}; "
                            "a second start or resume is refused (cancel it first)", held) from None
        lock = cls(run, fd)
        lock.set_holder(**holder)
        return lock

    def set_holder(self, **holder: Any) -> None:
        from engine.process import boot_id, proc_start_ticks, this_host

        pid = int(holder.pop("pid", os.getpid()))
        info = {"pid": pid, "host": this_host(), "boot_id": boot_id(), "start_ticks": proc_start_ticks(pid),
                "since": now_iso(), **holder}
        data = json.dumps(info).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing our descriptor; a child that inherited it keeps the lock
            self.fd = -1


def _write_error(path: Path, exc: OSError) -> RunStoreError:
    """A clear error for a failed write in a run folder (read-only, full, no permission)."""
    import shutil

    try:
        free = f"; {shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
    except OSError:
        free = ""
    return RunStoreError(f"cannot write {path.name!r} in the run folder {str(path.parent)!r}: "
                         f"{exc.strerror or exc}{free}")


def _describe_holder(held: dict[str, Any]) -> str:
    if not held.get("pid"):
        return "another process (holder unknown)"
    return f"pid {held['pid']} on host {held.get('host', '?')} since {held.get('since', '?')}"


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

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

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
        ``created``, ``started``, ``ended``, ``error``, ``scores`` ...).

        Never raises for a damaged file: a status that cannot be read is reported as state
        ``corrupt`` with the reason in ``error`` (a listing shows it beside the healthy runs)."""
        try:
            return self._read_status()
        except RunStoreError as exc:
            return {"state": "corrupt", "progress": 0.0, "error": str(exc), "corrupt": True}

    def _read_status(self) -> dict[str, Any]:
        try:
            status = json.loads(self.status_path.read_text())
        except FileNotFoundError:
            return {"state": "pending", "progress": 0.0}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # atomic writes never leave this
            raise RunStoreError(f"status file {str(self.status_path)!r} of run {self.run_id!r} is corrupt ({exc}); "
                                "the run's other files are kept: repair or delete status.json") from None
        except OSError as exc:
            raise RunStoreError(f"status file {str(self.status_path)!r} cannot be read: {exc.strerror}") from None
        if not isinstance(status, dict) or not isinstance(status.get("state", "pending"), str):
            raise RunStoreError(f"status file {str(self.status_path)!r} of run {self.run_id!r} is corrupt (expected "
                                f"a JSON object with a state, got {str(status)[:80]!r}); repair or delete status.json")
        return status

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
        status = self._read_status()  # a corrupt status is refused, not overwritten
        status.update(changes)
        status["updated"] = now_iso()
        text = json.dumps(status, indent=1, default=str)
        try:
            write_text_atomic(self.status_path, text)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._write_in_place(text):
                raise _write_error(self.status_path, exc) from exc
        return status

    def _write_in_place(self, text: str) -> bool:
        """Last resort on a full disk: overwrite status.json in place (its own blocks are reused;
        a reader may briefly see it half-written and report "corrupt"), so that the run can still
        say why it stopped. True when that worked."""
        try:
            fd = os.open(self.status_path, os.O_WRONLY)
        except OSError:
            return False
        try:
            data = text.encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    # -- events --------------------------------------------------------------------------
    def log_event(self, kind: str, **values: Any) -> None:
        """Append one progress event (``kind`` is e.g. "epoch", "step", "message")."""
        record = {"time": now_iso(), "kind": kind, **values}
        line = json.dumps(record, default=float) + "\n"
        # One write() of a short line in append mode is atomic enough for a single writer;
        # readers skip a trailing partial line (see events()).
        try:
            with open(self.events_path, "a") as fh:
                fh.write(line)
                fh.flush()
        except OSError as exc:
            raise _write_error(self.events_path, exc) from exc

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        out = []
        try:
            text = self.events_path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            if not isinstance(record, dict):
                continue
            if kind is None or record.get("kind") == kind:
                out.append(record)
        return out

    def epochs(self) -> list[dict[str, Any]]:
        """The per-epoch metrics, one dict per finished epoch (latest value per epoch)."""
        by_epoch: dict[int, dict[str, Any]] = {}
        for record in self.events("epoch"):
            try:
                by_epoch[int(record["epoch"])] = record
            except (KeyError, TypeError, ValueError):
                continue  # a damaged record ("epoch": "abc"): the others still count
        return [by_epoch[k] for k in sorted(by_epoch)]

    # -- the worker: lock and liveness ----------------------------------------------------
    def acquire_lock(self, **holder: Any) -> RunLock:
        """Take the run folder's exclusive lock (see :class:`RunLock`) or raise :class:`RunLocked`
        naming the holder."""
        return RunLock.acquire(self, **holder)

    def lock_holder(self) -> dict[str, Any] | None:
        """Who holds the run folder's lock (``pid``, ``host``, ``since``), or None when nobody does."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    held = json.loads(os.pread(fd, 4096, 0) or b"{}")
                except ValueError:
                    held = {}
                return held if isinstance(held, dict) else {}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def worker_alive(self) -> bool | None:
        """Whether the run's worker is alive: True/False, or None when that cannot be told from
        this machine (the worker's host is another one).

        A held lock means alive. Without a lock file (a run from before locks, or a stand-in
        process) the pid recorded in the status must be proven to be the worker (start time and
        command line or token, see :mod:`engine.process`)."""
        from engine.process import boot_id, is_run_worker, this_host

        status = self.status()
        if status.get("host") and status["host"] != this_host():
            return None
        if status.get("boot_id") and status["boot_id"] != boot_id():
            return False
        if self.lock_holder() is not None:
            return True
        if self.lock_path.exists():
            return False  # a worker took the lock, and nobody holds it now
        if status.get("launcher") != "local":
            return None  # a run from before locks; its launcher (squeue ...) knows, not a pid
        return is_run_worker(status.get("job_id"), status.get("job_start"), self.path, status.get("job_token"))

    def check_worker(self) -> dict[str, Any]:
        """The status, after marking a ``running`` run whose worker is gone as ``died``.

        What ``engine runs`` and the dashboard show: a run killed with ``kill -9`` reads
        ``died`` with its last event, not ``running 95 %``."""
        status = self.status()
        if status.get("state") == "running" and self.worker_alive() is False:
            pid = status.get("job_id")
            status = self.mark_died(f"the worker (pid {pid} on {status.get('host', '?')}) is gone without reporting "
                                    "a final state (killed, out of memory, or its machine restarted)")
        return status

    def mark_died(self, message: str) -> dict[str, Any]:
        """Record that the worker vanished: state ``died``, ``message``, the last event and how
        to continue. Files already written are kept; temporary halves of writes are removed."""
        events = self.events()
        last = events[-1] if events else None
        epochs = self.epochs()
        text = message
        if last is not None:
            what = {k: v for k, v in last.items() if k not in ("time",)}
            text += f"; last event at {last.get('time', '?')}: {json.dumps(what, default=str)[:200]}"
        if epochs:
            text += f"; {len(epochs)} epoch(s) completed, resume continues from checkpoints/last.pt"
        for tmp in self.path.rglob(".*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass
        return self.update_status(state="died", error=text, last_event=last, ended=now_iso())

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
        # A symbolic link in the store must not lead out of it.
        if run.path.is_symlink() and not run.path.resolve().is_relative_to(self.root.resolve()):
            raise RunStoreError(f"run {run_id!r} in {self.root} is a link to {str(run.path.resolve())!r}, outside "
                                "the run store; accepted: run folders inside it")
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
        return sorted(runs, key=lambda r: (str(r.status().get("created", "")), r.run_id))
