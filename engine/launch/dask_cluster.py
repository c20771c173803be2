"""A dask ``distributed`` cluster for the dask work of evaluation: none, local or on SLURM.

``launch.dask`` in a run configuration says where the dask computations of evaluation run::

    launch:
      partition: gpu            # also the worker jobs' partition, account and QoS
      dask: {cluster: slurm, workers: 4, cores: 2, memory: 8GB, walltime: "00:30:00"}

- ``cluster: none`` (the default): dask's threaded scheduler in the calling process, as without
  this section.
- ``cluster: local``: a :class:`distributed.LocalCluster` of ``workers`` processes with
  ``cores`` threads and ``memory`` each, on this machine.
- ``cluster: slurm``: a :class:`dask_jobqueue.SLURMCluster`: one SLURM job per worker (``cores``
  CPUs, ``memory``, ``walltime``) in ``launch.partition`` / ``account`` / ``qos``. Extra sbatch
  options come from ``launch.dask.extra``, checked against the same allow-list as
  ``launch.extra`` (:data:`engine.launch.sbatch.OPTIONS`); shell lines (``module load``, an
  environment to activate) only from the site launcher file's ``setup``.

:func:`dask_client` is the one entry point: a context manager that starts the cluster, scales it
to ``workers``, waits until they have connected (``timeout`` seconds at most, then an error naming
the partition and the jobs' SLURM states) and yields a :class:`distributed.Client` that is the
default scheduler inside the block (``None`` for ``cluster: none``). It always closes the cluster,
also after an error, and cancels any of its SLURM jobs still queued, so no worker job outlives it.
Nothing here is a scheduler of our own: dask's is used as is.

Example
-------
>>> with dask_client(run.config.launch, log_directory=run.path / "dask") as client:   # doctest: +SKIP
...     evaluate_run(run)   # every dask compute inside runs on the cluster's workers
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from engine.config import ConfigError

#: Accepted values of ``launch.dask.cluster``.
CLUSTERS = ("none", "local", "slurm")
#: Keys of ``launch.dask`` and their defaults.
DEFAULTS: dict[str, Any] = {"cluster": "none", "workers": 1, "cores": 1, "memory": "2GB",
                            "walltime": "01:00:00", "timeout": 300, "interface": None, "extra": {}}
#: A worker below this memory cannot hold a block of a field and dask's own state.
MIN_MEMORY = 256 * 2**20
_SLURM_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
_INTERFACE = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
#: sbatch options of launch.extra that are submitit's, not sbatch's: meaningless for a dask job.
_NOT_SBATCH = ("max_num_timeout", "signal_delay_s")


@dataclass(frozen=True)
class DaskSettings:
    """``launch.dask`` checked, with defaults filled in (see the module docstring)."""

    cluster: str = "none"
    workers: int = 1
    cores: int = 1
    memory: str = "2GB"
    walltime: str = "01:00:00"
    timeout: float = 300.0
    interface: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None

    @property
    def memory_bytes(self) -> int:
        from dask.utils import parse_bytes

        return int(parse_bytes(self.memory))


def _integer(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\+?\d+\s*", value):
        value = int(value)  # YAML and forms hand over text
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"launch.dask.{key}={value!r} is not valid; expected an integer from {low} to {high}")
    return value


def _memory(value: Any) -> str:
    """A memory size as dask writes it: a number means GB, text goes through dask's parser."""
    from dask.utils import parse_bytes

    accepted = "a size such as '4GB', '512MiB' or a number of GB such as 4; at least 256MiB"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"launch.dask.memory={value!r} is not valid; expected {accepted}")
    text = f"{value}GB" if isinstance(value, (int, float)) else str(value).strip()
    if any(ch in text for ch in "\n\r\0"):
        raise ConfigError(f"launch.dask.memory={value!r} is not valid: it holds a newline or NUL character")
    try:
        size = parse_bytes(text)
    except (ValueError, TypeError):
        raise ConfigError(f"launch.dask.memory={value!r} is not valid; expected {accepted}") from None
    if not math.isfinite(size) or size < MIN_MEMORY:
        raise ConfigError(f"launch.dask.memory={value!r} is not valid; expected {accepted}")
    return text


def dask_settings(launch) -> DaskSettings:
    """``launch.dask`` of a :class:`~engine.config.LaunchConfig` checked, with its defaults.

    Raises
    ------
    engine.config.ConfigError
        Naming the bad key or value and the accepted ones: an unknown key, a cluster other than
        ``none``/``local``/``slurm``, workers or cores outside their range, a memory dask cannot
        read or below 256 MiB, a walltime not in a SLURM format, a timeout that is not a positive
        number, an interface that is not a name, or ``extra`` options outside the sbatch
        allow-list (the same as ``launch.extra``'s).
    """
    raw = getattr(launch, "dask", None) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"launch.dask={raw!r} is not valid; expected a mapping with keys {', '.join(DEFAULTS)}")
    unknown = sorted(str(k) for k in set(raw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in launch.dask; accepted: {', '.join(DEFAULTS)}")
    values = {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None or k == "interface"}}
    cluster = values["cluster"]
    if cluster is False:  # YAML reads an unquoted `none`/`no`/`off` of some writers as false
        cluster = "none"
    if cluster not in CLUSTERS:
        raise ConfigError(f"launch.dask.cluster={cluster!r} is not valid; accepted: {', '.join(CLUSTERS)}")
    workers = _integer("workers", values["workers"], 1, 1024)
    cores = _integer("cores", values["cores"], 1, 1024)
    memory = _memory(values["memory"])
    walltime = values["walltime"]
    if isinstance(walltime, bool) or not isinstance(walltime, (str, int)) or not _SLURM_TIME.match(str(walltime)):
        raise ConfigError(f"launch.dask.walltime={walltime!r} is not valid; accepted SLURM formats: 'MM', "
                          "'HH:MM:SS', 'D-HH:MM:SS' (e.g. '00:30:00')")
    timeout = values["timeout"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or not 0 < timeout <= 86400:
        raise ConfigError(f"launch.dask.timeout={timeout!r} is not valid; expected the seconds to wait for the "
                          "workers, a number above 0 and at most 86400")
    interface = values["interface"]
    if interface is not None and (not isinstance(interface, str) or not _INTERFACE.fullmatch(interface)):
        raise ConfigError(f"launch.dask.interface={interface!r} is not valid; expected a network interface name "
                          "such as 'ib0' or 'eth0' (letters, digits and _.:-), or null for the default")
    from engine.launch import sbatch

    try:  # the same allow-list as launch.extra: nothing in a run configuration reaches the script as shell
        extra = sbatch.check_extra(values["extra"])
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("launch.extra", "launch.dask.extra")) from None
    return DaskSettings(cluster=cluster, workers=workers, cores=cores, memory=memory, walltime=str(walltime),
                        timeout=float(timeout), interface=interface, extra=extra,
                        partition=getattr(launch, "partition", None), account=getattr(launch, "account", None),
                        qos=getattr(launch, "qos", None))


def _directives(settings: DaskSettings) -> list[str]:
    """``#SBATCH`` lines beyond the ones dask-jobqueue writes: QoS, the site's forced options,
    then the run's allow-listed ``launch.dask.extra`` (all checked for newlines again)."""
    from engine.launch import sbatch

    site = sbatch.load_site_config()
    options: dict[str, Any] = {}
    if settings.qos:
        options["qos"] = settings.qos
    options.update(site.get("sbatch", {}))
    options.update({k: v for k, v in settings.extra.items() if k not in _NOT_SBATCH})
    sbatch.check_parameters(options)
    lines = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            lines.append(flag)
        elif value is not False and value is not None:
            lines.append(f"{flag}={value}")
    return lines


def _check_partition(settings: DaskSettings) -> None:
    from engine.launch.base import LaunchError
    from engine.launch.slurm import partitions

    if shutil.which("sbatch") is None:
        raise LaunchError("launch.dask.cluster='slurm' needs the SLURM client commands (sbatch, squeue, scancel) "
                          "on PATH; accepted here: launch.dask.cluster 'none' or 'local'")
    parts = partitions()
    if settings.partition is not None and settings.partition not in parts:
        raise LaunchError(f"launch.partition={settings.partition!r} (for the dask worker jobs) does not exist on "
                          f"this cluster; accepted: {', '.join(parts)}")
    if settings.partition is None and not any(p["default"] for p in parts.values()):
        raise LaunchError("launch.partition is not set and the cluster has no default partition; accepted: "
                          f"{', '.join(parts)}")


def _slurm_cluster(settings: DaskSettings, log_directory: Path, name: str):
    from dask_jobqueue import SLURMCluster

    from engine.launch import sbatch

    _check_partition(settings)
    log_directory.mkdir(parents=True, exist_ok=True)
    return SLURMCluster(
        queue=settings.partition, account=settings.account, cores=settings.cores, processes=1,
        memory=settings.memory, walltime=settings.walltime, job_name=name,
        job_extra_directives=_directives(settings),
        # shell lines only from the administrator's site file (module load, an environment)
        job_script_prologue=list(sbatch.load_site_config().get("setup", [])),
        python=sys.executable, log_directory=str(log_directory), interface=settings.interface,
        death_timeout=60,  # a worker whose scheduler vanished ends its job instead of idling to walltime
        scheduler_options={"dashboard": False}, silence_logs="error")


def _local_cluster(settings: DaskSettings):
    from distributed import LocalCluster

    # no dashboard (it would want port 8787, which another cluster on the machine may hold)
    return LocalCluster(n_workers=settings.workers, threads_per_worker=settings.cores, processes=True,
                        memory_limit=settings.memory_bytes, dashboard_address=None,
                        scheduler_kwargs={"dashboard": False}, silence_logs=logging.ERROR, host="127.0.0.1")


def slurm_job_ids(cluster) -> list[str]:
    """The SLURM job ids of a :class:`dask_jobqueue.SLURMCluster`'s worker jobs (submitted ones)."""
    return [str(job.job_id) for job in getattr(cluster, "workers", {}).values() if getattr(job, "job_id", None)]


def queued_jobs(job_ids) -> list[str]:
    """Which of ``job_ids`` ``squeue`` still lists (any state but gone)."""
    wanted = {str(j) for j in job_ids}
    if not wanted or shutil.which("squeue") is None:
        return []
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
    return sorted(wanted & set(out.stdout.split()))


def _job_states(job_ids) -> str:
    if not job_ids or shutil.which("squeue") is None:
        return "no job was accepted by sbatch"
    out = subprocess.run(["squeue", "-h", "-o", "%i %T %r", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, timeout=30)
    return "; ".join(line.strip() for line in out.stdout.splitlines() if line.strip()) or \
        f"jobs {', '.join(job_ids)} are no longer queued (ended before connecting: see their logs)"


def _wait_for_workers(client, settings: DaskSettings, log_directory: Path | None) -> None:
    from engine.launch.base import LaunchError

    try:
        client.wait_for_workers(settings.workers, timeout=settings.timeout)
    except TimeoutError as exc:  # what wait_for_workers raises when fewer workers came
        have = len(client.scheduler_info().get("workers", {}))
        if settings.cluster == "slurm":
            where = (f"SLURM partition {settings.partition!r}" if settings.partition else "the default SLURM partition")
            ids = slurm_job_ids(client.cluster)
            raise LaunchError(
                f"{have} of launch.dask.workers={settings.workers} dask worker(s) connected within "
                f"launch.dask.timeout={settings.timeout:g} s on {where}; worker jobs: {_job_states(ids)}; "
                f"job logs in {log_directory}") from exc
        raise LaunchError(f"{have} of launch.dask.workers={settings.workers} local dask worker(s) started within "
                          f"launch.dask.timeout={settings.timeout:g} s ({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def dask_client(launch, log_directory: str | Path | None = None,
                name: str = "finescale-dask") -> Iterator[Any]:
    """A :class:`distributed.Client` on the cluster ``launch.dask`` asks for, default scheduler
    of every dask compute inside the block; ``None`` for ``cluster: none`` (dask's threads).

    Parameters
    ----------
    launch : LaunchConfig or DaskSettings
        A launch section (``launch.dask`` is checked by :func:`dask_settings`) or checked settings.
    log_directory : path, optional
        Where the SLURM worker jobs write their logs (default ``./dask-logs``); it must be on a
        file system the compute nodes share.
    name : str
        The SLURM job name of the workers.

    Raises
    ------
    engine.config.ConfigError
        For a bad ``launch.dask`` (before anything starts).
    engine.launch.base.LaunchError
        Without SLURM commands, for an unknown partition (before anything is submitted), or when
        the workers have not all connected within ``launch.dask.timeout`` seconds (naming the
        partition and the jobs' states; the jobs are cancelled).
    """
    settings = launch if isinstance(launch, DaskSettings) else dask_settings(launch)
    if settings.cluster == "none":
        yield None
        return
    from distributed import Client

    logs = Path(log_directory) if log_directory is not None else Path.cwd() / "dask-logs"
    cluster = _slurm_cluster(settings, logs, name) if settings.cluster == "slurm" else _local_cluster(settings)
    seen: set[str] = set()
    try:
        if settings.cluster == "slurm":
            cluster.scale(n=settings.workers)
        with Client(cluster, set_as_default=True) as client:
            try:
                _wait_for_workers(client, settings, logs)
            finally:
                seen.update(slurm_job_ids(cluster))
            yield client
            seen.update(slurm_job_ids(cluster))
    finally:
        seen.update(slurm_job_ids(cluster))
        try:
            cluster.close()  # scancels the worker jobs it knows
        finally:
            left = queued_jobs(seen)
            if left:  # a job the cluster lost track of (submitted while closing): cancel it too
                subprocess.run(["scancel", *left], capture_output=True, text=True, timeout=30)
