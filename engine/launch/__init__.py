"""Launchers: run an experiment in this process, in a local process, or on a SLURM cluster.

Every launcher gives the same :class:`~engine.launch.base.Handle` (``status()``, ``cancel()``,
``logs()``, ``wait()``), and every handle can be rebuilt from the run store with :func:`attach`
after a restart. A job always runs :func:`engine.launch.worker.run_job` on its run folder.

Example
-------
>>> from engine.launch import submit, attach
>>> handle = submit(config, RunStore("runs"), launcher="local")   # doctest: +SKIP
>>> handle.status()["state"], handle.logs()[-200:]                 # doctest: +SKIP
>>> attach(handle.run).wait(timeout=600)                           # doctest: +SKIP
'completed'
"""

from __future__ import annotations

from pathlib import Path

from engine.config import ConfigError, ExperimentConfig
from engine.launch.base import Handle, LaunchError
from engine.launch.inline import InlineHandle, InlineLauncher
from engine.launch.local import LocalHandle, LocalLauncher
from engine.launch.slurm import SlurmHandle, SlurmLauncher
from engine.registry import LAUNCHERS
from engine.runs import FINAL_STATES, Run, RunStore

__all__ = ["submit", "attach", "cancel", "resume", "get_launcher", "Handle", "LaunchError",
           "InlineHandle", "LocalHandle", "SlurmHandle"]


def get_launcher(name: str):
    """The launcher registered as ``name`` (an instance), or an error listing the accepted names."""
    return LAUNCHERS.get(name)()


def _store(store: RunStore | str | Path | None) -> RunStore:
    return store if isinstance(store, RunStore) else RunStore(store)


def submit(config: ExperimentConfig, store: RunStore | str | Path | None = None,
           launcher: str | None = None) -> Handle:
    """Validate ``config``, check it against the launcher's resources, create a run folder and
    start the job.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment; ``config.launch`` says where and with which resources.
    store : RunStore, path or None
        Where the run folder goes (default: ``$FINESCALE_RUNS`` or ``./runs``).
    launcher : str, optional
        Overrides ``config.launch.launcher`` (``inline``, ``local``, ``slurm``); the run's
        ``config.yaml`` records the launcher actually used.

    Returns
    -------
    Handle

    Raises
    ------
    engine.config.ConfigError, LaunchError, engine.data.check.DataCheckError
        Before anything is created or submitted: an invalid configuration, data problems (every
        one, see :func:`engine.data.check.check_config`), an unknown partition,
        GPUs asked for where there are none, a run folder root that is not writable ...
    """
    if launcher is not None:
        if launcher not in LAUNCHERS:
            raise LaunchError(f"launcher={launcher!r} is not valid; accepted: {', '.join(LAUNCHERS.names())}")
        config = config.replace(launch={"launcher": launcher})
    config = config.validate()
    from engine.data.check import require_valid  # data layer loaded on first submit, not on import

    require_valid(config)  # every data problem at once, before a run folder exists
    # A model too large for the memory the run may use is refused now, with the estimate, not
    # minutes later as an out-of-memory kill (engine.launch.resources).
    from engine.launch.resources import check_fits

    check_fits(config)
    return get_launcher(config.launch.launcher).submit(config, _store(store))


def attach(run: Run | str | Path, store: RunStore | str | Path | None = None) -> Handle:
    """A handle on a run that was launched earlier (by this or another process), from its
    ``status.json``. A run never launched gets the handle of its configured launcher."""
    run = _store(store).resolve(run)
    name = run.status().get("launcher") or run.config.launch.launcher
    return get_launcher(name).attach(run)


def cancel(run: Run | str | Path | Handle, store: RunStore | str | Path | None = None) -> dict:
    """Cancel a run (a handle, a Run, a run folder or a run id) and return its final status."""
    handle = run if isinstance(run, Handle) else attach(run, store)
    handle.cancel()
    return handle.status()


def resume(run: Run | str | Path, store: RunStore | str | Path | None = None,
           launcher: str | None = None) -> Handle:
    """Start an ended run again in the same folder; training continues after the last completed
    epoch (``checkpoints/last.pt``). Used after a crash, a ``kill -9`` or a cancel.

    Raises
    ------
    LaunchError
        If the run is still active (pending or running), or its folder is locked by a live worker
        (named in the message): cancel it first.
    """
    run = _store(store).resolve(run)
    handle = attach(run)
    status = handle.status()  # also marks a dead "running" job as died
    state = status["state"]
    if state == "corrupt":  # change nothing in a folder whose status cannot be read
        raise LaunchError(f"run {run.run_id} cannot be resumed: {status.get('error')}")
    if state not in FINAL_STATES:
        raise LaunchError(f"run {run.run_id} is still {state!r} ({handle.launcher} job {handle.job_id}); "
                          "cancel it before resuming")
    holder = run.lock_holder()
    if holder is not None:  # a live worker, whatever status.json says: change nothing
        raise LaunchError(f"run {run.run_id!r} is already being run by pid {holder.get('pid')} on host "
                          f"{holder.get('host')} since {holder.get('since')}; a second start or resume is refused "
                          "(cancel it first)")
    config = run.config
    if launcher is not None and launcher != config.launch.launcher:
        config = config.replace(launch={"launcher": launcher})
        try:
            config.validate()
        except ConfigError as exc:
            raise LaunchError(str(exc)) from None
        from engine.runs import write_text_atomic

        write_text_atomic(run.config_path, config.to_yaml())
    chosen = get_launcher(config.launch.launcher)
    chosen.check(config)
    run.log_event("message", text=f"resumed with launcher {config.launch.launcher} (was {state})")
    return chosen.start(run)
