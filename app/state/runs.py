"""The runs: starting and cancelling them through the engine's launchers, polling the run
store (the table, notifications when a run ends), and the selected run's progress (per step,
samples/s, ETA), logs and loss curves.
"""

from __future__ import annotations

import logging
import time

import param

from ..validation import IN_PROCESS_LAUNCHERS
from .results import ResultsState
from .values import _epoch_label, _handle_run_id, _units_of

log = logging.getLogger(__name__)

#: Seconds between two questions to a launcher about an unfinished run (see RunsState.poll).
JOB_CHECK_SECONDS = 10.0

#: Columns of :attr:`RunsState.runs` (one dict per run, newest first).
RUN_COLUMNS = ("run_id", "name", "variable", "state", "progress", "epoch", "rmse", "units", "launcher", "job_id",
               "created")


class RunsState(ResultsState):
    """:class:`~app.state.results.ResultsState` plus the run store's runs and the selected run."""

    # -- runs ---------------------------------------------------------------------------
    runs = param.List(default=[], item_type=dict, doc="One dict per run in the store (see RUN_COLUMNS), newest first.")
    selected_run = param.String(default=None, allow_None=True, doc="Run id shown in the progress and results views.")
    picked_runs = param.List(default=[], item_type=str, doc="Run ids ticked in the runs table (the compare view "
                                                              "shows them).")
    run_status = param.Dict(default={}, doc="status.json of the selected run.")
    epochs_log = param.List(default=[], item_type=dict, doc="Per-epoch metrics of the selected run.")
    log_tail = param.String(default="", doc="The last lines of the selected run's logs.")
    step_log = param.List(default=[], item_type=dict, doc="Step losses of the selected run: dicts with 'epoch' "
                                                            "(fractional, from 1), 'metric' and 'value'.")
    progress_info = param.Dict(default={}, doc="Live progress of the selected run: epoch, step, steps (per epoch), "
                                               "loss, samples_per_s, elapsed_s, eta_s (absent when unknown).")

    def train(self) -> str | None:
        """Validate the form and submit the run through its launcher.

        Returns
        -------
        str or None
            The new run id, or None when the configuration is invalid (see ``config_error``)
            or the launcher refused it (see ``message``).
        """
        from engine import launch
        from engine.config import ConfigError

        try:
            # Every check of the form, the data checks included (waited for: a job must never
            # fail on something the form could have said).
            errors = self._form_errors(wait=True)
            config = None if errors else self.build_config().validate()
        except Exception as exc:  # ConfigError names the bad value; anything else is shown too
            errors = {"": str(exc) if isinstance(exc, (ConfigError, ValueError)) else f"{type(exc).__name__}: {exc}"}
        if errors:
            self._set_errors(errors)
            return None
        if config.launch.launcher in IN_PROCESS_LAUNCHERS:  # refused by the checks; never reached
            return None
        try:
            handle = launch.submit(config, self._store)
        except Exception as exc:  # shown to the user; the traceback goes to the server log
            log.exception("submit failed")
            self.message = f"Could not start the run: {exc}"
            return None
        run_id = _handle_run_id(handle)
        self._handles[run_id] = handle
        from ..niceness import yield_cpu

        try:  # a local job yields the CPU to the sessions of this server (app.niceness)
            yield_cpu(handle)
        except ValueError as exc:  # a bad $FINESCALE_JOB_NICENESS: the run still trains
            log.warning("%s", exc)
        self.message = f"Started run {run_id} ({config.launch.launcher})."
        self.poll()
        self.selected_run = run_id
        return run_id

    def cancel(self, run_id: str | None = None) -> None:
        """Cancel a run (default: the selected one) through its launcher handle."""
        from engine import launch
        from engine.runs import FINAL_STATES, RunStoreError

        run_id = run_id or self.selected_run
        if not run_id:
            return
        try:
            run = self._store.get(run_id)
        except RunStoreError as exc:
            self.message = str(exc)
            return
        if run.state in FINAL_STATES:
            self.message = f"Run {run_id} is already {run.state}."
            return
        try:
            handle = self._handles.get(run_id) or launch.attach(run)
            handle.cancel()
        except Exception as exc:
            log.exception("cancel failed")
            self.message = f"Could not cancel {run_id}: {exc}"
            return
        self.message = f"Cancelled run {run_id}."
        self.poll()

    # ======================================================================================
    # Runs: polling the run store
    # ======================================================================================
    def poll(self) -> None:
        """Re-read the run store: the runs list and the selected run's progress and results.

        Cheap enough for a periodic callback (a status.json per run, the selected run's
        events); parameters are only set when their value changed, so views re-render only
        when something happened.
        """
        # Periodic polls run in Panel's thread pool: one at a time per session (a slow file
        # system must not pile them up), the next simply skips.
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            self._poll()
        finally:
            self._poll_lock.release()

    def _poll(self) -> None:
        from engine.runs import FINAL_STATES

        before = {r["run_id"]: r["state"] for r in self.runs}
        rows = []
        for run in reversed(self._store.list()):
            try:
                status = run.status()
                if status.get("state") not in FINAL_STATES:
                    self._check_job(run)
                    status = run.status()
            except Exception as exc:  # one broken folder must not hide the others
                status = {"state": "unknown", "error": str(exc)}
            rows.append(self._run_row(run, status))
        if rows != self.runs:
            self.runs = rows
            self._update_run_choices()
            if self.on_run_state is not None and before:
                for row in rows:  # finished or failed since the last poll: tell the user
                    old = before.get(row["run_id"])
                    if old is not None and old != row["state"] and row["state"] in FINAL_STATES:
                        try:
                            self.on_run_state(row["run_id"], row["state"])
                        except Exception:  # a notification must never break polling
                            log.exception("run state notification failed")
        if self.selected_run is not None:
            self._refresh_selected()

    def _check_job(self, run) -> None:
        """Ask the launcher about an unfinished run now and then (not every poll: for SLURM
        that is a squeue call). A job that died without reporting is then marked failed in
        its status.json by the handle, and the table shows it."""
        now = time.monotonic()
        if now - self._job_checked.get(run.run_id, -1e9) < JOB_CHECK_SECONDS:
            return
        self._job_checked[run.run_id] = now
        from engine import launch

        try:
            handle = self._handles.get(run.run_id)
            if handle is None:
                handle = self._handles[run.run_id] = launch.attach(run)
            handle.status()
        except Exception as exc:  # a launcher that cannot be reached from here (no sbatch)
            log.debug("cannot check job of %s: %s", run.run_id, exc)

    def _run_row(self, run, status: dict) -> dict:
        if run.run_id not in self._run_names:
            # config.yaml never changes: name, variable and its units are read once per run.
            try:
                config = run.config
                self._run_names[run.run_id] = config.name
                self._run_vars[run.run_id] = (config.data.variable, _units_of(config.data.highres, config.data.variable,
                                                                              config.data.catalog))
            except Exception:
                self._run_names[run.run_id] = ""
                self._run_vars[run.run_id] = ("", "")
        variable, units = self._run_vars.get(run.run_id, ("", ""))
        scores = status.get("scores") or {}
        rmse = (scores.get("model") or {}).get("rmse")
        return {
            "run_id": run.run_id,
            "name": self._run_names[run.run_id],
            "variable": variable,
            "units": units,
            "launcher": str(status.get("launcher") or ""),
            "job_id": str(status.get("job_id") or ""),
            "state": str(status.get("state", "pending")),
            "progress": float(status.get("progress") or 0.0),
            "epoch": _epoch_label(status),
            "rmse": float(rmse) if rmse is not None else None,
            "created": str(status.get("created") or ""),
        }

    @param.depends("selected_run", watch=True)
    def _on_selected_run(self) -> None:
        from engine.runs import RunStoreError

        if self.selected_run is None:
            self._clear_selected()
            return
        try:
            self._store.get(self.selected_run)  # confines ids to the run root
        except RunStoreError as exc:
            self.message = str(exc)
            self.selected_run = None
            return
        self._refresh_selected()

    def _clear_selected(self) -> None:
        self.run_status, self.epochs_log, self.log_tail = {}, [], ""
        self.step_log, self.progress_info = [], {}
        self._set_results(None)

    def _refresh_selected(self) -> None:
        from engine.runs import RunStoreError

        try:
            run = self._store.get(self.selected_run)
        except RunStoreError:
            self.selected_run = None
            return
        status = run.status()
        if status != self.run_status:
            self.run_status = status
        epochs = run.epochs()
        if epochs != self.epochs_log:
            self.epochs_log = epochs
        tail = run.log_tail(30)
        if tail != self.log_tail:
            self.log_tail = tail
        steps, info = self._progress_of(run, status)
        if steps != self.step_log:
            self.step_log = steps
        if info != self.progress_info:
            self.progress_info = info
        self._load_results(run)

    def _progress_of(self, run, status: dict) -> tuple[list[dict], dict]:
        """Step losses and live progress from the run's events (engine.runs: "step" events are
        written every few seconds during an epoch) and status (progress, start time)."""
        import pandas as pd

        try:
            config = run.config
            batch = int(config.training.batch_size)
            per_epoch = max(1, int(config.training.samples_per_epoch) // max(batch, 1))
        except Exception:  # a run folder without a readable configuration
            batch, per_epoch = 0, 0
        steps = run.events("step")
        rows, info = [], {}
        for e in steps:
            loss = {k: v for k, v in e.items() if "loss" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
            x = int(e.get("epoch", 0)) + ((int(e.get("step", 0)) + 1) / per_epoch if per_epoch else 0.0)
            for k, v in loss.items():
                rows.append({"epoch": x, "metric": f"{k} (step)", "value": float(v)})
        progress = float(status.get("progress") or 0.0)
        started = status.get("started")
        if steps:
            last = steps[-1]
            info.update(epoch=int(last.get("epoch", 0)) + 1, step=int(last.get("step", 0)) + 1, steps=per_epoch or None)
            loss = [v for k, v in last.items() if "loss" in k and isinstance(v, (int, float))]
            if loss:
                info["loss"] = float(loss[0])
            same = [e for e in steps if e.get("epoch") == last.get("epoch")]
            if len(same) >= 2 and batch:
                dt = (pd.Timestamp(same[-1]["time"]) - pd.Timestamp(same[0]["time"])).total_seconds()
                if dt > 0:
                    info["samples_per_s"] = (int(same[-1]["step"]) - int(same[0]["step"])) * batch / dt
        epochs = run.epochs()
        if "samples_per_s" not in info and epochs and epochs[-1].get("samples_per_s"):
            info["samples_per_s"] = float(epochs[-1]["samples_per_s"])
        if started and status.get("state") == "running":
            try:
                elapsed = (pd.Timestamp.now(tz="UTC") - pd.Timestamp(started).tz_convert("UTC")).total_seconds()
            except (TypeError, ValueError):
                elapsed = None
            if elapsed is not None and elapsed > 0:
                info["elapsed_s"] = elapsed
                if 0 < progress < 1:
                    info["eta_s"] = elapsed * (1 - progress) / progress
        return rows, info

    @property
    def loss_history(self):
        """Per-epoch loss values of the selected run as a tidy DataFrame (epoch, metric, value)."""
        import pandas as pd

        rows = []
        for record in self.epochs_log:
            for key, value in record.items():
                if "loss" in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                    rows.append({"epoch": int(record["epoch"]), "metric": key, "value": float(value)})
        return pd.DataFrame(rows, columns=["epoch", "metric", "value"])
