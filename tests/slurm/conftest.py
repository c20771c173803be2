"""The real SLURM cluster the tests in this folder submit to.

``slurm_cluster`` (session) uses a running controller when ``sinfo`` answers, and otherwise
starts the single-node cluster of ``scripts/slurm-cluster.sh`` (root and Debian's SLURM,
munge and MariaDB packages needed) and stops it after the session. Without those the tests
skip and say why. Submissions go through the real ``sbatch``; nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.config import ExperimentConfig
from tests.helpers import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"


def _controller_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


@pytest.fixture(scope="session")
def slurm_cluster():
    """A SLURM controller that accepts jobs; yields the name of its default partition."""
    started = False
    if not _controller_answers():
        missing = [c for c in ("sbatch", "sinfo", "slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
                   if shutil.which(c) is None and not Path("/usr/sbin", c).exists()]
        if missing:
            skip_or_fail_in_ci(f"SLURM packages missing ({', '.join(missing)}): run scripts/install-system-deps.sh as root")
        if os.geteuid() != 0:
            skip_or_fail_in_ci("no SLURM controller running, and starting one (scripts/slurm-cluster.sh) needs root")
        out = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            pytest.fail(f"scripts/slurm-cluster.sh start failed:\n{out.stdout}\n{out.stderr}")
        started = True
        env_line = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True).stdout.strip()
        conf = env_line.partition("=")[2]
        if Path("/etc/slurm/slurm.conf").resolve() != Path(conf).resolve():
            os.environ["SLURM_CONF"] = conf  # /etc/slurm/slurm.conf belongs to another cluster
    lines = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
    default = next((p.rstrip("*") for p in lines if p.endswith("*")), lines[0].rstrip("*"))
    try:
        yield default
    finally:
        if started:
            subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120)


@pytest.fixture
def slurm_config(slurm_cluster) -> ExperimentConfig:
    """A tiny experiment for the demo data, to run through SLURM on one CPU."""
    return ExperimentConfig(name="slurmtiny").replace(
        data={"patch_size": 32},
        model={"filters": 8, "blocks": 1},
        training={"epochs": 2, "samples_per_epoch": 32, "batch_size": 8, "precision": "32-true"},
        launch={"launcher": "slurm", "partition": slurm_cluster, "time": "00:10:00", "cpus_per_task": 1,
                "mem_gb": 2},
    )
