"""app.niceness: local jobs started from the dashboard run at a lower CPU priority (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.niceness import JOB_NICENESS, autogroup_niceness, job_niceness, nicer_autogroup, yield_cpu
from engine.config import ExperimentConfig
from engine.launch.local import LocalHandle
from engine.runs import RunStore


@pytest.fixture
def job(tmp_path):
    """A real process group like a local worker's (its own session) with a child, and its handle."""
    code = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
           "print(c.pid, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    child = int(proc.stdout.readline())
    run = RunStore(tmp_path / "runs").create(ExperimentConfig(name="nice"))
    yield LocalHandle(run, proc.pid), proc, child
    os.killpg(proc.pid, 9)
    proc.wait()


def test_local_job_and_its_children_get_nicer(job):
    handle, proc, child = job
    assert yield_cpu(handle, 7) == 7
    assert os.getpriority(os.PRIO_PROCESS, proc.pid) == 7
    assert os.getpriority(os.PRIO_PROCESS, child) == 7  # the data-loading processes too
    assert yield_cpu(handle, 3) == 7  # never made less nice


def test_the_jobs_own_session_autogroup_gets_nicer_not_the_servers(job):
    # With autogroup scheduling a niceness only counts inside a session; the worker leads its own.
    handle, proc, child = job
    if autogroup_niceness(proc.pid) is None:
        pytest.skip("this kernel has no scheduling autogroups (/proc/<pid>/autogroup)")
    ours = autogroup_niceness(os.getpid())
    assert yield_cpu(handle, 7) == 7
    assert autogroup_niceness(proc.pid) == 7 and autogroup_niceness(child) == 7
    assert autogroup_niceness(os.getpid()) == ours  # the calling process's group is left alone
    assert nicer_autogroup(proc.pid, 3) == 7  # never made less nice
    assert nicer_autogroup(child, 12) is None  # not a session leader: its group is not its own


def test_zero_or_another_launcher_leaves_the_job_alone(job):
    handle, proc, _ = job
    assert yield_cpu(handle, 0) is None
    handle.launcher = "slurm"
    assert yield_cpu(handle, 7) is None
    assert os.getpriority(os.PRIO_PROCESS, proc.pid) == os.getpriority(os.PRIO_PROCESS, 0)


def test_niceness_from_the_environment(monkeypatch):
    monkeypatch.delenv("FINESCALE_JOB_NICENESS", raising=False)
    assert job_niceness() == JOB_NICENESS == 19
    monkeypatch.setenv("FINESCALE_JOB_NICENESS", "4")
    assert job_niceness() == 4
    for bad in ("-1", "20", "high"):
        monkeypatch.setenv("FINESCALE_JOB_NICENESS", bad)
        with pytest.raises(ValueError, match=f"FINESCALE_JOB_NICENESS='{bad}' is not valid; accepted: an integer from 0 to 19"):
            job_niceness()
