"""The ``inline`` launcher: the run trains in the calling process (tests, notebooks, debugging).

``submit`` returns when the run has ended; the handle then only reads the run store. Errors do
not propagate: like the other launchers, the outcome is in ``handle.status()``.
"""

from __future__ import annotations

from typing import Any

from engine.config import ExperimentConfig
from engine.launch.base import Handle, LaunchError, check_run_writable, check_store_writable
from engine.registry import LAUNCHERS
from engine.runs import FINAL_STATES, Run, RunStore, now_iso


class InlineHandle(Handle):
    launcher = "inline"

    def status(self) -> dict[str, Any]:
        status = self.run.status()
        return {**status, "launcher": self.launcher, "job_id": None, "job_state": status.get("state", "pending").upper()}

    def cancel(self) -> None:
        """Nothing to stop: an inline run has ended when its handle exists. A run left
        ``running`` by a crashed session is marked ``cancelled``."""
        if self.run.state not in FINAL_STATES:
            self.run.update_status(state="cancelled", ended=now_iso(), error="cancelled")

    def logs(self, lines: int = 100) -> str:
        return self.run.log_tail(lines)


@LAUNCHERS.register("inline", description="in the calling process (tests, notebooks)")
class InlineLauncher:
    name = "inline"

    def check(self, config: ExperimentConfig) -> None:
        lch = config.launch
        if lch.tasks_per_node > 1 or lch.nodes > 1:
            raise LaunchError(
                f"launch.tasks_per_node={lch.tasks_per_node}, launch.nodes={lch.nodes}: the inline launcher runs "
                "one process; use launch.launcher='local' (one machine) or 'slurm' for data parallel training"
            )
        _check_local_gpus(lch.gpus_per_node)

    def start(self, run: Run) -> InlineHandle:
        from engine.launch.worker import run_job

        check_run_writable(run)
        holder = run.lock_holder()
        if holder is not None:
            raise LaunchError(f"run {run.run_id!r} is already being run by pid {holder.get('pid')} on host "
                              f"{holder.get('host')}; a second start or resume is refused (cancel it first)")
        run.update_status(launcher=self.name, job_id=None, submitted=now_iso())
        try:
            run_job(run.path)
        except Exception:
            pass  # recorded in the run's status by run_job
        return InlineHandle(run)

    def submit(self, config: ExperimentConfig, store: RunStore) -> InlineHandle:
        check_store_writable(store)
        self.check(config)
        return self.start(store.create(config))

    def attach(self, run: Run) -> InlineHandle:
        return InlineHandle(run)


def _check_local_gpus(gpus: int) -> None:
    if gpus <= 0:
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > have:
        raise LaunchError(
            f"launch.gpus_per_node={gpus} but this machine has {have} CUDA GPU(s); accepted here: "
            f"0{'' if not have else f' to {have}'} (or launch.launcher='slurm' for GPU nodes)"
        )
