"""What every launcher shares: the :class:`Handle` interface, errors, and small helpers for
processes, time limits and leftover temporary files.

A handle is a thin view over a run folder plus whatever the launcher needs to reach the job
(a pid, a SLURM job id). Everything a handle knows can be rebuilt from ``status.json``, which is
what lets :func:`engine.launch.attach` re-attach after the dashboard or a notebook restarts.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from engine.process import boot_id, proc_start_ticks, this_host  # noqa: F401  (re-exported)
from engine.runs import FINAL_STATES, Run, RunStore, RunStoreError, now_iso

JOB_EXIT_GRACE_S = 60.0


class LaunchError(ValueError):
    """A run cannot be launched (or reached) as configured; the message names the bad value and
    the accepted ones. Raised before anything is submitted."""


class Handle:
    """A launched run: the same interface for every launcher.

    Attributes
    ----------
    run : engine.runs.Run
        The run folder; the single source of truth for state, progress, metrics and files.
    launcher : str
        ``"inline"``, ``"local"`` or ``"slurm"``.
    job_id : str or None
        The launcher's id: a pid for ``local``, a SLURM job id for ``slurm``.
    """

    launcher = "base"

    def __init__(self, run: Run, job_id: str | None = None):
        self.run = run
        self.job_id = job_id

    # -- the interface ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The run's status (``state``, ``progress``, ``error`` ...) plus ``launcher``,
        ``job_id`` and ``job_state`` (the launcher's own word for the job, e.g. ``RUNNING``).

        A job that died without reporting (``kill -9``, node failure, time limit without
        requeue) is detected here and its run marked ``failed`` with a message."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop the job; the run ends ``cancelled`` (checkpoints already written stay valid)."""
        raise NotImplementedError

    def logs(self, lines: int = 100) -> str:
        """The last ``lines`` of the job's stdout and stderr."""
        raise NotImplementedError

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> str:
        """Block until the run reaches a final state and return it (``completed``, ``failed``,
        ``cancelled``).

        Raises
        ------
        TimeoutError
            If ``timeout`` seconds pass first; the job keeps running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.status()["state"]
            if state in FINAL_STATES:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {self.run.run_id} ({self.launcher} job {self.job_id}) still {state!r} after {timeout} s"
                )
            time.sleep(poll)
        # The run has recorded its outcome; give the job a moment to exit too, so that the
        # launcher's state (process, SLURM job) is final as well when wait() returns.
        grace = time.monotonic() + JOB_EXIT_GRACE_S
        while self._job_active() and time.monotonic() < grace:
            time.sleep(min(poll, 0.2))
        return self.run.state

    def _job_active(self) -> bool:
        """Whether the launcher's job (process, SLURM job) still exists."""
        return False

    # -- conveniences ----------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self.status()["state"]

    def done(self) -> bool:
        return self.state in FINAL_STATES

    def __repr__(self) -> str:
        return f"{type(self).__name__}(run={self.run.run_id!r}, job_id={self.job_id!r})"


# -- helpers shared by the launchers ---------------------------------------------------------

def check_store_writable(store: RunStore) -> None:
    """Refuse a run store root that cannot be written, before a run folder or job exists."""
    root = Path(store.root)
    probe_dir = root
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise LaunchError(
            f"run folder root {str(root)!r} is not writable (checked {str(probe_dir)!r}); "
            "set FINESCALE_RUNS or pass RunStore(<a writable folder>)"
        )
    try:
        store._check_writable()  # the real probe: a file written and removed
    except RunStoreError as exc:
        raise LaunchError(str(exc)) from None


def check_run_writable(run: Run) -> None:
    if not os.access(run.path, os.W_OK | os.X_OK):
        raise LaunchError(f"run folder {str(run.path)!r} is not writable; a job could not record its progress")


def time_limit_seconds(text: str) -> int:
    """Seconds in a SLURM time limit: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``.

    >>> time_limit_seconds("01:30:00"), time_limit_seconds("90"), time_limit_seconds("1-00")
    (5400, 5400, 86400)
    """
    text = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise LaunchError(
            f"launch.time={text!r} is not valid; accepted SLURM formats: 'MM', 'MM:SS', 'HH:MM:SS', "
            "'D-HH', 'D-HH:MM', 'D-HH:MM:SS' (e.g. '01:30:00')"
        )
    days, a, b, c = m.groups()
    a, b, c = int(a), (int(b) if b else None), (int(c) if c else None)
    if days is not None:  # D-H[:M[:S]]
        return int(days) * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:
        return a * 3600 + b * 60 + c
    if b is not None:
        return a * 60 + b
    return a * 60


def process_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """Whether a process with this pid (and, when given, this start time) exists. Liveness only:
    before signalling anything, prove it is the run's worker with
    :func:`engine.process.is_run_worker`."""
    if not pid:
        return False
    ticks = proc_start_ticks(int(pid))
    if ticks is None:
        return False
    return start_ticks is None or int(start_ticks) == ticks


def cleanup_partial_files(run: Run) -> list[Path]:
    """Remove temporary files left by a writer that was killed mid-write (the renamed targets
    are intact; these are the unrenamed halves). Call only once no process writes the run."""
    removed = []
    for path in run.path.rglob(".*.tmp"):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def mark_dead(run: Run, message: str) -> dict[str, Any]:
    """Mark a run whose job vanished without reporting as ``died`` (with its last event),
    keeping what it finished."""
    return run.mark_died(message)


def tail_file(path: Path, lines: int) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
