"""The ``local`` launcher: each run trains in its own process on this machine.

The dashboard's server never trains in its own process: it starts
``python -m engine.launch.worker RUN`` in a new session (so that cancel reaches every rank and
nothing else), with stdout/stderr appended to ``logs/stdout.log`` and ``logs/stderr.log``.
``status.json`` records the pid, its start time (clock ticks after boot, so a recycled pid is
never taken for the job), a random token in the worker's environment, the boot id and the host.
:meth:`LocalLauncher.attach` rebuilds a handle from those after a restart; a process that is gone
while its run still says ``running`` is marked ``died`` with its last event (e.g. after
``kill -9`` or the out-of-memory killer).

The launcher takes the run folder's lock (:class:`engine.runs.RunLock`) before it starts the
worker and hands the descriptor down, so the worker holds it for its whole life: a second start
or resume of the same run is refused naming the holder. ``cancel`` signals a process only once it
is proven to be this run's worker (pid, start time, and command line or token:
:func:`engine.process.is_run_worker`); a bare pid from ``status.json`` is never signalled.

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
from engine.launch.base import (Handle, LaunchError, boot_id, check_run_writable, check_store_writable,
                                cleanup_partial_files, mark_dead, proc_start_ticks, process_alive, this_host)
from engine.process import TOKEN_ENV, is_run_worker, new_token
from engine.launch.inline import _check_local_gpus
from engine.registry import LAUNCHERS
from engine.runs import FINAL_STATES, Run, RunLocked, RunStore, now_iso

CANCEL_GRACE_S = 10.0


class LocalHandle(Handle):
    """A run training in a process of this machine (see the module docstring)."""

    launcher = "local"

    def __init__(self, run: Run, pid: int | None, start_ticks: int | None = None, host: str | None = None,
                 boot: str | None = None, process: subprocess.Popen | None = None, token: str | None = None):
        super().__init__(run, str(pid) if pid else None)
        self.token = token
        self.pid = pid
        self.start_ticks = start_ticks
        self.host = host or this_host()
        self.boot = boot or boot_id()
        self._process = process  # only in the session that started it: lets us reap the child

    def _reachable(self) -> bool:
        return self.host == this_host() and (not self.boot or self.boot == boot_id())

    def alive(self) -> bool | None:
        """True/False, or None when the process runs on another host (cannot be checked here).

        True only for a process proven to be this run's worker (pid + start time + command line
        or token); a recycled or unrelated pid counts as gone."""
        if self._process is not None:
            return self._process.poll() is None
        if not self._reachable():
            return None
        return is_run_worker(self.pid, self.start_ticks, self.run.path, self.token)

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
                if self.run.lock_holder() is None:  # a worker of a later resume holds it otherwise
                    status = mark_dead(self.run, message)
        job_state = {True: "RUNNING", False: "EXITED", None: f"UNKNOWN (process on host {self.host})"}[alive]
        if alive and status.get("state") in FINAL_STATES:
            job_state = "COMPLETING"  # recorded its outcome, still exiting
        return {**status, "launcher": self.launcher, "job_id": self.job_id, "job_state": job_state}

    def cancel(self) -> None:
        """SIGTERM to the job's process group (every rank); SIGKILL after ``CANCEL_GRACE_S``.

        Only a process proven to be the run's worker is signalled (see the module docstring).

        Raises
        ------
        LaunchError
            The worker runs on another host, or the run's lock is held by a process that cannot
            be proven to be its worker (nothing is signalled then)."""
        alive = self.alive()
        if alive is None:
            raise LaunchError(f"run {self.run.run_id} runs on host {self.host}; cancel it there (pid {self.pid})")
        if not alive and self.run.state not in FINAL_STATES:
            holder = self.run.lock_holder()
            if holder is not None and not is_run_worker(holder.get("pid"), holder.get("start_ticks"), self.run.path,
                                                        self.token):
                raise LaunchError(
                    f"run {self.run.run_id} is locked by pid {holder.get('pid')} on {holder.get('host')}, which cannot "
                    f"be proven to be its worker (status names pid {self.pid}); nothing was signalled")
        if alive:  # proven to be the worker: from here on, the same pid and start time are the same process
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + CANCEL_GRACE_S
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._running():
                self._signal(signal.SIGKILL)
                while self._running():
                    time.sleep(0.05)
        if self.run.state not in FINAL_STATES:
            self.run.update_status(state="cancelled", ended=now_iso(), error="cancelled")
        cleanup_partial_files(self.run)

    def _running(self) -> bool:
        """The proven worker still exists (an exiting process loses its command line first, so
        pid + start time are checked here, not the whole proof)."""
        if self._process is not None:
            return self._process.poll() is None
        return process_alive(self.pid, self.start_ticks)

    def _signal(self, sig: int) -> None:
        """Signal the worker's process group; call only after :meth:`alive` proved the worker."""
        if not self._running():
            return
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
        try:
            lock = run.acquire_lock(role="launcher")  # handed to the worker below
        except RunLocked as exc:
            raise LaunchError(str(exc)) from None
        run.logs_dir.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
        # Not a SLURM task, even when launched from inside an allocation: Fabric must not see one.
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)
        src = str(Path(engine.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        token = new_token()
        env[TOKEN_ENV] = token
        # The absolute folder on the command line: part of the proof that a pid is this worker.
        cmd = [sys.executable, "-m", "engine.launch.worker", str(run.path.resolve()), "--wait-stdin",
               "--nprocs", str(cfg.launch.tasks_per_node), "--lock-fd", str(lock.fd)]
        try:
            with open(run.logs_dir / "stdout.log", "ab") as out, open(run.logs_dir / "stderr.log", "ab") as err:
                process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
                                           start_new_session=True, close_fds=True, pass_fds=(lock.fd,))
            ticks = proc_start_ticks(process.pid)
            lock.set_holder(pid=process.pid, role="worker")
            run.update_status(state="pending", launcher=self.name, job_id=str(process.pid), job_start=ticks,
                              job_token=token, boot_id=boot_id(), host=this_host(), submitted=now_iso(), error=None,
                              ended=None)
        finally:
            lock.release()  # ours only: the worker's inherited descriptor keeps the lock
        process.stdin.close()  # the worker waits for this: our status write is done
        return LocalHandle(run, process.pid, ticks, this_host(), boot_id(), process=process, token=token)

    def submit(self, config: ExperimentConfig, store: RunStore) -> LocalHandle:
        check_store_writable(store)
        self.check(config)
        return self.start(store.create(config))

    def attach(self, run: Run) -> LocalHandle:
        status = run.status()
        pid = int(status["job_id"]) if str(status.get("job_id") or "").isdigit() else None
        return LocalHandle(run, pid, status.get("job_start"), status.get("host"), status.get("boot_id"),
                           token=status.get("job_token"))
