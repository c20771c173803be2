"""The ``slurm`` launcher: runs go to a SLURM cluster through submitit (``sbatch``, ``srun``).

Resources come from :class:`engine.config.LaunchConfig`: ``partition``, ``account``, ``qos``,
``time`` (SLURM format), ``nodes``, ``tasks_per_node`` (one task per GPU for DDP),
``gpus_per_node``, ``cpus_per_task``, ``mem_gb`` and ``extra``. ``extra`` accepts only the
allow-listed sbatch options of :mod:`engine.launch.sbatch`, each value validated
(``{"reservation": "course"}`` -> ``#SBATCH --reservation=course``); shell ``setup`` lines,
``srun_args`` and forced options come only from the site launcher configuration on the server
(``$FINESCALE_SITE_CONFIG`` or ``/etc/finescale/launcher.yaml``), never from a run configuration.

Before anything is submitted the configuration is checked against the cluster (``sinfo``): the
partition exists, it has GPUs if GPUs are asked for, the time limit is within its maximum, it
has enough nodes.

The submitit folder is ``<run>/slurm`` (one per run: job ids restart on a fresh cluster, and a
shared folder would mix their result files). The job is a :class:`SlurmJobFunction`, a
``submitit.helpers.Checkpointable``: on the time-limit or preemption signal (``USR2``,
``signal_delay_s`` before the end) rank 0 records the requeue in the run store and submitit
requeues the job; the trainer then resumes from ``checkpoints/last.pt`` (written atomically
after every epoch), so no finished epoch is trained twice.

A handle re-attaches from ``status.json`` (``job_id``, ``slurm_folder``) with
``submitit.SlurmJob(folder, job_id)``; job states come from ``sacct`` (accounting) with a
fallback on ``squeue``.
"""

from __future__ import annotations

import math
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.config import ExperimentConfig
from engine.launch import sbatch
from engine.launch.base import (Handle, LaunchError, check_run_writable, check_store_writable,
                                cleanup_partial_files, mark_dead, tail_file, time_limit_seconds)
from engine.launch.distributed import export_slurm_environment, global_rank
from engine.registry import LAUNCHERS
from engine.runs import FINAL_STATES, Run, RunStore, now_iso

try:  # submitit is a dependency; its absence only disables this launcher
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover
    Checkpointable = object  # type: ignore

# SLURM job states (sacct/squeue words) -> what they mean for the run.
ACTIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED", "RESV_DEL_HOLD")
CANCELLED_STATES = ("CANCELLED",)
FAILED_STATES = ("FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "REVOKED")



class SlurmJobFunction(Checkpointable):
    """What a SLURM task runs: set up torch.distributed from SLURM's environment, then
    :func:`engine.launch.worker.run_job`. Checkpointable: requeued on time limit / preemption."""

    def __call__(self, run_path: str) -> dict[str, Any]:
        from engine.launch.worker import run_job

        export_slurm_environment()
        # On the requeue signal submitit's handler calls checkpoint() then sys.exit(): a
        # SystemExit, which run_job lets through without marking the run failed.
        return run_job(run_path)

    def checkpoint(self, run_path: str):  # called by submitit on rank 0 in the signal handler
        """Record the requeue; the model state to resume from is ``checkpoints/last.pt``,
        which the trainer writes atomically at every epoch end."""
        from submitit.helpers import DelayedSubmission

        if global_rank() == 0:
            run = Run(run_path)
            epochs = run.epochs()
            last = epochs[-1]["epoch"] if epochs else None
            text = (f"time limit or preemption signal: requeued; resumes after epoch {last}" if last is not None
                    else "time limit or preemption signal: requeued; no epoch finished yet, restarts from scratch")
            run.log_event("message", text=text)
            run.update_status(state="pending", requeued=int(run.status().get("requeued", 0)) + 1, message=text)
        return DelayedSubmission(self, run_path)


def _run_cmd(cmd: list[str], timeout: float = 30) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LaunchError(f"{cmd[0]!r} not found: the slurm launcher needs the SLURM client commands "
                          "(sbatch, sinfo, sacct, scancel) on PATH; accepted launchers here: inline, local") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{' '.join(cmd)!r} did not answer in {timeout} s: is the SLURM controller up?") from None
    if out.returncode != 0:
        raise LaunchError(f"{' '.join(cmd)!r} failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def _parse_gpus(gres: str) -> int:
    """GPUs per node in an sinfo %G string like ``gpu:a100:4(S:0-1),shard:8`` (0 if none)."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu":
            total = max(total, int(parts[-1]) if parts[-1].isdigit() else 1)
    return total


def partitions() -> dict[str, dict[str, Any]]:
    """The cluster's partitions from ``sinfo``: name -> default, max time (s or None), nodes,
    GPUs per node."""
    out = _run_cmd(["sinfo", "-h", "-o", "%P|%l|%D|%G"])
    parts: dict[str, dict[str, Any]] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        name, limit, nodes, gres = line.split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        entry = parts.setdefault(name, {"default": default, "max_time_s": None, "nodes": 0, "gpus_per_node": 0})
        entry["default"] = entry["default"] or default
        if limit not in ("infinite", "n/a", "UNLIMITED"):
            entry["max_time_s"] = time_limit_seconds(limit)
        entry["nodes"] += int(nodes) if nodes.isdigit() else 0
        entry["gpus_per_node"] = max(entry["gpus_per_node"], _parse_gpus(gres) if gres != "(null)" else 0)
    return parts


# The ranks of a multi-task job meet at MASTER_PORT on the first node. Without it, submitit picks a
# port from the job id (random.Random(job_id) in 20000-60000), which lies in Linux's ephemeral
# range: a job was seen failing with EADDRINUSE on that port while rank 1 waited until the time
# limit. The batch script runs on the first node (where rank 0 starts), so a port the kernel hands
# out there as free is taken instead; submitit's environment reads MASTER_PORT when it is set.
_RENDEZVOUS_PORT_LINE = (
    f"export MASTER_PORT=$({shlex.quote(sys.executable)} -c 'import socket; s = socket.socket(); "
    "s.bind((\"\", 0)); print(s.getsockname()[1]); s.close()')"
)


def _executor_parameters(config: ExperimentConfig, run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    lch = config.launch
    seconds = time_limit_seconds(lch.time)
    params: dict[str, Any] = {
        "job_name": f"finescale-{config.name}",
        "time": max(1, math.ceil(seconds / 60)),  # submitit takes minutes
        "nodes": lch.nodes,
        "ntasks_per_node": lch.tasks_per_node,
        "cpus_per_task": lch.cpus_per_task,
        # The signal must come before the end; submitit's default 90 s exceeds a short limit.
        "signal_delay_s": int(min(90, max(10, seconds // 4))),
    }
    for key in ("partition", "account", "qos"):
        if getattr(lch, key):
            params[key] = getattr(lch, key)
    if lch.gpus_per_node:
        params["gpus_per_node"] = lch.gpus_per_node
    if lch.mem_gb is not None:
        params["mem"] = f"{int(math.ceil(lch.mem_gb * 1024))}M"
    # Only allow-listed, validated options from the run configuration; shell lines and forced
    # options only from the site file on the server (engine.launch.sbatch).
    extra = sbatch.check_launch(lch)
    site = sbatch.load_site_config()
    executor_kwargs: dict[str, Any] = {}
    additional: dict[str, Any] = dict(site.get("sbatch", {}))
    for key, value in extra.items():
        if key in sbatch.EXECUTOR_OPTIONS:
            executor_kwargs[key] = value
        elif key in sbatch.SUBMITIT_OPTIONS:
            params[key] = value
        else:
            additional[key] = value
    for key in ("setup", "teardown", "srun_args"):
        if site.get(key):
            params[key] = list(site[key])
    if lch.nodes * lch.tasks_per_node > 1:
        params["setup"] = params.get("setup", []) + [_RENDEZVOUS_PORT_LINE]
        # one rank failing ends the step: the others would otherwise wait in the rendezvous or
        # the next all-reduce until the time limit, holding the allocation
        if not any(str(a).startswith("--kill-on-bad-exit") for a in params.get("srun_args", [])):
            params["srun_args"] = params.get("srun_args", []) + ["--kill-on-bad-exit=1"]
    if additional:
        params["additional_parameters"] = additional
    sbatch.check_parameters(params)
    return params, executor_kwargs


class SlurmHandle(Handle):
    """A run submitted to SLURM (see the module docstring)."""

    launcher = "slurm"

    def __init__(self, run: Run, job_id: str, folder: str | Path):
        super().__init__(run, str(job_id))
        self.folder = Path(folder)
        self._job = None

    @property
    def job(self):
        """The ``submitit.SlurmJob`` (paths of stdout/stderr, results, cancel)."""
        if self._job is None:
            import submitit

            self._job = submitit.SlurmJob(folder=self.folder, job_id=self.job_id)
        return self._job

    def job_state(self) -> str:
        """SLURM's state of the job (``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED`` ...).

        The controller (``squeue -t all``) is asked first: it is current, while accounting
        (``sacct``) can lag by seconds. ``sacct`` answers for jobs the controller has
        forgotten (``MinJobAge`` after their end, or after a controller restart).
        """
        try:
            out = _run_cmd(["squeue", "-h", "-t", "all", "-j", self.job_id, "-o", "%T"], timeout=20).strip()
            if out:
                return out.split()[0]
        except LaunchError:
            pass  # "Invalid job id": no longer known to the controller
        try:
            out = _run_cmd(["sacct", "-j", self.job_id, "-X", "-n", "-P", "-o", "JobID,State"], timeout=20)
            for line in out.splitlines():
                jid, _, state = line.partition("|")
                if jid == self.job_id and state:
                    return state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
        except LaunchError:
            pass
        return "UNKNOWN"

    def _job_active(self) -> bool:
        return self.job_state() in ACTIVE_STATES

    def status(self) -> dict[str, Any]:
        job_state = self.job_state()
        status = self.run.status()
        if status.get("state") not in FINAL_STATES and (job_state in FAILED_STATES + CANCELLED_STATES
                                                         or job_state == "COMPLETED"):
            status = self.run.status()  # the job may have written its own final state just now
            if status.get("state") not in FINAL_STATES:
                status = self._reconcile(job_state)
        return {**status, "launcher": self.launcher, "job_id": self.job_id, "job_state": job_state}

    def _reconcile(self, job_state: str) -> dict[str, Any]:
        """The job has ended without the run recording how: say so in the run store."""
        if job_state in CANCELLED_STATES:
            cleanup_partial_files(self.run)
            return self.run.update_status(state="cancelled", ended=now_iso(), error=f"SLURM job {self.job_id} cancelled")
        reason = {"TIMEOUT": "hit its time limit and was not requeued (raise launch.time, or the requeue limit)",
                  "OUT_OF_MEMORY": "ran out of memory (raise launch.mem_gb)",
                  "NODE_FAIL": "lost its node", "COMPLETED": "ended without the run reporting completion"}
        text = f"SLURM job {self.job_id} {job_state}: {reason.get(job_state, 'ended abnormally')}"
        err = tail_file(self._stderr_path(), 15)
        return mark_dead(self.run, text + (f"\n--- job stderr tail ---\n{err}" if err else ""))

    def _stderr_path(self) -> Path:
        return Path(str(self.job.paths.stderr).replace("%t", "0"))

    def cancel(self, timeout: float = 60.0) -> None:
        """``scancel`` the job, wait until its processes are gone, record ``cancelled``."""
        _run_cmd(["scancel", self.job_id])
        deadline = time.monotonic() + timeout
        # squeue lists the job until every process has ended (COMPLETING): only then is the
        # run folder quiet and the cancel final.
        while time.monotonic() < deadline:
            try:
                if not _run_cmd(["squeue", "-h", "-j", self.job_id, "-o", "%T"], timeout=20).strip():
                    break
            except LaunchError:
                break  # "Invalid job id": it has left the queue
            time.sleep(0.2)
        if self.run.state not in FINAL_STATES or self.run.state == "cancelled":
            self.run.update_status(state="cancelled", ended=now_iso(), error=f"SLURM job {self.job_id} cancelled")
        cleanup_partial_files(self.run)

    def logs(self, lines: int = 100) -> str:
        """Tails of every task's stdout and stderr (``<run>/slurm/<job>_<task>_log.out|err``)."""
        chunks = []
        for path in sorted(self.folder.glob(f"{self.job_id}_*_log.*")):
            chunks.append(f"==> {path.name} <==\n{tail_file(path, lines)}")
        return "\n".join(chunks)


@LAUNCHERS.register("slurm", description="a SLURM cluster through submitit", check_config=sbatch.check_launch)
class SlurmLauncher:
    name = "slurm"

    def check(self, config: ExperimentConfig) -> None:
        """Check the configuration against the cluster; raise :class:`LaunchError` if it cannot run."""
        lch = config.launch
        if shutil.which("sbatch") is None:
            raise LaunchError("launch.launcher='slurm' but 'sbatch' is not on PATH (no SLURM client here); "
                              "accepted launchers on this machine: inline, local")
        seconds = time_limit_seconds(lch.time)
        parts = partitions()
        if not parts:
            raise LaunchError("sinfo lists no partitions: is the SLURM controller up?")
        if lch.partition is None:
            name = next((p for p, v in parts.items() if v["default"]), None)
            if name is None:
                raise LaunchError(f"launch.partition is not set and the cluster has no default partition; "
                                  f"accepted: {', '.join(parts)}")
        else:
            name = lch.partition
            if name not in parts:
                raise LaunchError(f"launch.partition={name!r} does not exist on this cluster; accepted: {', '.join(parts)}")
        part = parts[name]
        if lch.gpus_per_node > part["gpus_per_node"]:
            with_gpus = [p for p, v in parts.items() if v["gpus_per_node"] >= lch.gpus_per_node]
            raise LaunchError(
                f"launch.gpus_per_node={lch.gpus_per_node} but partition {name!r} has "
                f"{part['gpus_per_node'] or 'no'} GPU(s) per node; accepted: gpus_per_node <= {part['gpus_per_node']}"
                + (f", or a partition with GPUs: {', '.join(with_gpus)}" if with_gpus else " (no partition here has GPUs)")
            )
        if part["max_time_s"] is not None and seconds > part["max_time_s"]:
            raise LaunchError(f"launch.time={lch.time!r} exceeds the maximum of partition {name!r} "
                              f"({part['max_time_s']} s); accepted: up to that limit")
        if part["nodes"] and lch.nodes > part["nodes"]:
            raise LaunchError(f"launch.nodes={lch.nodes} but partition {name!r} has {part['nodes']} node(s); "
                              f"accepted: 1 to {part['nodes']}")

    def start(self, run: Run) -> SlurmHandle:
        """Submit an existing run folder (new run, or resume)."""
        import submitit

        check_run_writable(run)
        holder = run.lock_holder()
        if holder is not None:  # the job takes the lock when it starts; refuse a second one now
            raise LaunchError(f"run {run.run_id!r} is already being run by pid {holder.get('pid')} on host "
                              f"{holder.get('host')}; a second start or resume is refused (cancel it first)")
        cfg = run.config
        params, executor_kwargs = _executor_parameters(cfg, run)
        folder = run.path / "slurm"
        executor = submitit.SlurmExecutor(folder=folder, **executor_kwargs)
        executor.update_parameters(**params)
        run.update_status(state="pending", launcher=self.name, slurm_folder=str(folder), submitted=now_iso(),
                          error=None, ended=None)
        try:
            job = executor.submit(SlurmJobFunction(), str(run.path))
        except Exception as exc:  # sbatch refused (account, QoS ...): nothing was submitted
            run.update_status(state="failed", ended=now_iso(), error=f"sbatch refused the job: {exc}")
            raise LaunchError(f"sbatch refused run {run.run_id}: {exc}") from None
        # The job itself records the same job id when it starts (whichever write comes last).
        run.update_status(job_id=str(job.job_id))
        handle = SlurmHandle(run, job.job_id, folder)
        handle._job = job
        return handle

    def submit(self, config: ExperimentConfig, store: RunStore) -> SlurmHandle:
        check_store_writable(store)
        self.check(config)
        return self.start(store.create(config))

    def attach(self, run: Run) -> SlurmHandle:
        status = run.status()
        if not status.get("job_id"):
            raise LaunchError(f"run {run.run_id} has no SLURM job id in its status (state {status.get('state')!r})")
        return SlurmHandle(run, status["job_id"], status.get("slurm_folder") or run.path / "slurm")

