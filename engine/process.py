"""Who a process is: enough to prove that a pid is a run's worker before anything signals it.

A pid alone proves nothing: pids are recycled, and ``status.json`` is a file anyone with access
to the run store can edit. A run's worker is proven by three things together, all read from
``/proc``: the pid, its start time (clock ticks after boot, recorded when the job started) and
either its command line (``python -m engine.launch.worker <this run folder>``) or the run's token
in its environment (``FINESCALE_RUN_TOKEN``, recorded as ``job_token`` in the status).
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

TOKEN_ENV = "FINESCALE_RUN_TOKEN"
WORKER_MODULE = "engine.launch.worker"


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot (None if no such live process). Stored
    with the pid so that a re-attach never mistakes a recycled pid for our job."""
    try:
        raw = Path(f"/proc/{int(pid)}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, OSError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # a zombie has finished; PID 1 here reaps slowly
        return None
    return int(fields[19])


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def this_host() -> str:
    return socket.gethostname()


def new_token() -> str:
    return secrets.token_hex(16)


def _cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def _environ_has(pid: int, token: str) -> bool:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{TOKEN_ENV}={token}".encode() in env


def is_run_worker(pid: object, start_ticks: object, run_path: str | os.PathLike, token: str | None = None) -> bool:
    """Whether ``pid`` is proven to be the worker of the run at ``run_path``: its start time is
    ``start_ticks`` and either its command line runs :mod:`engine.launch.worker` on that folder or
    its environment holds ``token``. Without a recorded start time nothing is proven."""
    try:
        pid = int(pid)  # type: ignore[arg-type]
        start_ticks = int(start_ticks)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    if pid <= 1 or proc_start_ticks(pid) != start_ticks:
        return False
    if token and _environ_has(pid, token):
        return True
    args = _cmdline(pid)
    if WORKER_MODULE not in args:
        return False
    target = Path(run_path).resolve()
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        cwd = Path.cwd()
    return any((cwd / arg).resolve() == target for arg in args if not arg.startswith("-"))
