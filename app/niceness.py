"""Training started from the dashboard on the dashboard's own machine yields the CPU to it.

A ``local`` run trains in a separate process (never in the server), but on the same cores: a
demo run on a 2-core login node took most of the CPU, and every session's map updates slowed
from about 0.5 s to several seconds. The dashboard therefore lowers the CPU priority of the
jobs it starts there (``nice``, the whole process group of the worker: its data-loading
processes included): training still gets every cycle nobody else wants, and the interactive
server answers first. SLURM jobs run on compute nodes and are left alone.

The niceness is ``$FINESCALE_JOB_NICENESS`` (default :data:`JOB_NICENESS`; 0 leaves jobs at the
server's own priority). Raising a priority back needs privileges, so a job is only ever made
nicer, never less nice.

Linux with automatic group scheduling (``/proc/sys/kernel/sched_autogroup_enabled``, on in most
desktop and many server kernels) shares the CPU first between *sessions*, and a process's
niceness only counts within its own session. A local worker leads its own session, so its
niceness alone changed nothing against the server (another session): the job's autogroup is
made as nice as well (``/proc/<pid>/autogroup``), which is what lets the server's sessions
answer first.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: Default niceness of local jobs started from the dashboard (0..19; 19 = about 1/70 of the
#: weight of a process (or autogroup) at niceness 0 when both want the same core: the job still
#: gets every cycle the dashboard leaves idle).
JOB_NICENESS = 19


def job_niceness() -> int:
    """The niceness for local jobs: ``$FINESCALE_JOB_NICENESS`` or :data:`JOB_NICENESS`.

    Raises
    ------
    ValueError
        When the variable is not an integer from 0 to 19 (named with its value).
    """
    text = os.environ.get("FINESCALE_JOB_NICENESS", "").strip()
    if not text:
        return JOB_NICENESS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ValueError(f"FINESCALE_JOB_NICENESS={text!r} is not valid; accepted: an integer from 0 to 19")
    return value


def yield_cpu(handle, niceness: int | None = None) -> int | None:
    """Lower the CPU priority of a local job's process group to ``niceness``.

    Parameters
    ----------
    handle : engine.launch handle
        What :func:`engine.launch.submit` returned; only a ``local`` handle with a ``pid`` on
        this machine is touched (the worker leads its own process group).
    niceness : int, optional
        Default :func:`job_niceness`.

    Returns
    -------
    int or None
        The niceness the job now has, or None when it was left alone (another launcher, no
        pid, niceness 0, or the process already gone).
    """
    niceness = job_niceness() if niceness is None else int(niceness)
    pid = getattr(handle, "pid", None)
    if niceness <= 0 or getattr(handle, "launcher", None) != "local" or not pid:
        return None
    try:
        # The group: children already forked are in it, later ones inherit the worker's niceness.
        group = os.getpgid(pid)
        target = group if group == pid else None
        current = os.getpriority(os.PRIO_PGRP if target else os.PRIO_PROCESS, pid)
        if current >= niceness:  # never less nice than it is (that needs privileges)
            return current
        if target:
            os.setpriority(os.PRIO_PGRP, target, niceness)
        else:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
        nicer_autogroup(pid, niceness)
        return niceness
    except (ProcessLookupError, PermissionError) as exc:  # ended already, or not ours
        log.info("left the priority of job %s alone: %s", pid, exc)
        return None


def autogroup_niceness(pid: int) -> int | None:
    """The niceness of the scheduling autogroup of process ``pid``; None without autogroups."""
    try:
        with open(f"/proc/{pid}/autogroup") as fh:
            text = fh.read()  # "/autogroup-1234 nice 0"
        return int(text.split("nice")[-1])
    except (OSError, ValueError):
        return None


def nicer_autogroup(pid: int, niceness: int) -> int | None:
    """Make the autogroup of a job that leads its own session at least ``niceness`` nice.

    Only a session leader's autogroup is touched: it holds the job and its children alone
    (a process in the server's session shares the server's autogroup, which must keep its
    priority). Never made less nice. Returns the autogroup's niceness after the call, or None
    where there is none (no autogroups, not a session leader, the process gone).
    """
    try:
        if os.getsid(pid) != pid:
            return None
    except OSError:
        return None
    current = autogroup_niceness(pid)
    if current is None or current >= niceness:
        return current
    try:
        with open(f"/proc/{pid}/autogroup", "w") as fh:
            fh.write(str(int(niceness)))
    except OSError as exc:  # e.g. a kernel that refuses it: the job's own niceness still holds
        log.info("left the autogroup of job %s alone: %s", pid, exc)
    return autogroup_niceness(pid)
