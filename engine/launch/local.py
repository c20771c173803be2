"""The ``local`` launcher: each run trains in its own process on this machine.

The dashboard's server never trains in its own process: it starts
``python -m engine.launch.worker RUN`` in a new session (so that cancel reaches every rank and
nothing else), with stdout/stderr appended to ``logs/stdout.log`` and ``logs/stderr.log``.
``status.json`` records the pid, its start time (clock ticks after boot, so a recycled pid is
never taken for the job), the boot id and the host. :meth:`LocalLauncher.attach` rebuilds a
handle from those after a restart; a process that is gone while its run still says ``running``
is marked ``failed`` with a message (e.g. after ``kill -9`` or the out-of-memory killer).

``launch.tasks_per_node > 1`` trains with data parallel ranks on this machine (gloo on CPU).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import engine
from engine.config import ExperimentConfig
from engine.launch.base import (Handle, boot_id, check_run_writable, check_store_writable,
                                cleanup_partial_files, mark_dead, proc_start_ticks, process_alive, this_host)
from engine.launch.inline import _check_local_gpus
from engine.registry import LAUNCHERS
from engine.runs import FINAL_STATES, Run, RunStore, now_iso

CANCEL_GRACE_S = 10.0


class LocalHandle(Handle):
    """A run training in a process of this machine (see the module docstring)."""

    launcher = "local"

    def __init__(self, run: Run, pid: int | None, start_ticks: int | None = None, host: str | None = None,
                 boot: str | None = None, process: subprocess.Popen | None = None):
        super().__init__(run, str(pid) if pid else None)
        self.pid = pid
        self.start_ticks = start_ticks
        self.host = host or this_host()
        self.boot = boot or boot_id()
        self._process = process  # only in the session that started it: lets us reap the child

    def _reachable(self) -> bool:
        return self.host == this_host() and (not self.boot or self.boot == boot_id())

    def alive(self) -> bool | None:
        """True/False, or None when the process runs on another host (cannot be checked here)."""
        if self._process is not None:
            return self._process.poll() is None
        if not self._reachable():
            return None
        return process_alive(self.pid, self.start_ticks)

    def _job_active(self) -> bool:
        return bool(self.alive())

    def status(self) -> dict[str, Any]:
        alive = self.alive()
        status = self.run.status()
        if alive is False and status.get("state") not in FINAL_STATES:
            status = self.run.status()  # it may have written its final state just before exiting
            if status.get("state") not in FINAL_STATES:
                code = self._process.returncode if self._process is not None else None
                how = f"exit code {code}" if code is not None else "no exit code (killed or host restarted?)"
                if self.pid is None:
                    message = "no process was ever recorded for this run (never started?)"
                else:
                    message = (f"process {self.pid} on {self.host} ended without reporting a final state ({how}); "
                               "see logs/stderr.log")
                status = mark_dead(self.run, message)
        job_state = {True: "RUNNING", False: "EXITED", None: f"UNKNOWN (process on host {self.host})"}[alive]
        if alive and status.get("state") in FINAL_STATES:
            job_state = "COMPLETING"  # recorded its outcome, still exiting
        return {**status, "launcher": self.launcher, "job_id": self.job_id, "job_state": job_state}

    def cancel(self) -> None:
        """SIGTERM to the job's process group (every rank); SIGKILL after ``CANCEL_GRACE_S``."""
        alive = self.alive()
        if alive is None:
            raise RuntimeError(f"run {self.run.run_id} runs on host {self.host}; cancel it there (pid {self.pid})")
        if alive:
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + CANCEL_GRACE_S
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                self._signal(signal.SIGKILL)
                while self.alive():
                    time.sleep(0.05)
        if self.run.state not in FINAL_STATES:
            self.run.update_status(state="cancelled", ended=now_iso(), error="cancelled")
        cleanup_partial_files(self.run)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(int(self.pid), sig)  # the worker leads its own session: all ranks, nothing else
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(int(self.pid), sig)

    def logs(self, lines: int = 100) -> str:
        return self.run.log_tail(lines)


@LAUNCHERS.register("local", description="a separate process on this machine")
class LocalLauncher:
    name = "local"

    def check(self, config: ExperimentConfig) -> None:
        _check_local_gpus(config.launch.gpus_per_node)

    def start(self, run: Run) -> LocalHandle:
        """Start the worker for an existing run folder (a new run, or a resume)."""
        check_run_writable(run)
        cfg = run.config
        run.logs_dir.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
        # Not a SLURM task, even when launched from inside an allocation: Fabric must not see one.
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)
        src = str(Path(engine.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [sys.executable, "-m", "engine.launch.worker", str(run.path), "--wait-stdin",
               "--nprocs", str(cfg.launch.tasks_per_node)]
        with open(run.logs_dir / "stdout.log", "ab") as out, open(run.logs_dir / "stderr.log", "ab") as err:
            process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
                                       start_new_session=True, close_fds=True)
        ticks = proc_start_ticks(process.pid)
        run.update_status(state="pending", launcher=self.name, job_id=str(process.pid), job_start=ticks,
                          boot_id=boot_id(), host=this_host(), submitted=now_iso(), error=None, ended=None)
        process.stdin.close()  # the worker waits for this: our status write is done
        return LocalHandle(run, process.pid, ticks, this_host(), boot_id(), process=process)

    def submit(self, config: ExperimentConfig, store: RunStore) -> LocalHandle:
        check_store_writable(store)
        self.check(config)
        return self.start(store.create(config))

    def attach(self, run: Run) -> LocalHandle:
        status = run.status()
        pid = int(status["job_id"]) if str(status.get("job_id") or "").isdigit() else None
        return LocalHandle(run, pid, status.get("job_start"), status.get("host"), status.get("boot_id"))
