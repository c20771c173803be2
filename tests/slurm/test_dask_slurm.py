"""launch.dask on a real SLURM cluster (see conftest.py): evaluation's dask work runs on a
dask-jobqueue SLURMCluster worker job and scores what dask's threaded scheduler scores; the
worker job is gone afterwards, also after an error in the block; an unknown partition is refused
before anything is submitted."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from engine.config import ExperimentConfig
from engine.launch import LaunchError
from engine.launch.dask_cluster import dask_client, queued_jobs, slurm_job_ids
from engine.runs import RunStore
from tests.engine.test_dask_cluster import _predictions  # hand-valued predictions
from tests.helpers import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
distributed = pytest.importorskip("distributed")
pytest.importorskip("dask_jobqueue")


def _squeue(fmt: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", fmt], capture_output=True, text=True)
    return out.stdout.split()


def _launch(partition: str, **dask):
    return ExperimentConfig(name="dasktest").replace(launch={
        "partition": partition, "dask": {"cluster": "slurm", "workers": 1, "cores": 1, "memory": "1GB",
                                         "walltime": "00:10:00", "timeout": 180, **dask}})


def test_evaluation_on_slurm_worker_equals_threaded(tmp_path, slurm_cluster):
    from distributed import get_task_stream

    from engine.evaluation.report import evaluate_run

    config = _launch(slurm_cluster).validate()
    run = RunStore(tmp_path / "runs").create(config, run_id="run-slurm-dask")
    _predictions().to_netcdf(run.predictions_path)
    threaded = evaluate_run(run, block=2)
    name = "finescale-dask-test"
    with dask_client(run.config.launch, log_directory=tmp_path / "dask-logs", name=name) as client:
        ids = slurm_job_ids(client.cluster)
        assert len(ids) == 1 and ids[0] in _squeue("%i")
        # the worker runs inside that SLURM job (its environment says so)
        assert list(client.run(os.getenv, "SLURM_JOB_ID").values()) == ids
        with get_task_stream(client) as stream:
            on_slurm = evaluate_run(run, block=2)
    assert stream.data, "no task of the evaluation ran on the SLURM worker"
    wait_for(lambda: not queued_jobs(ids), 120, f"the dask worker job {ids} to leave squeue", poll=0.5)
    assert name not in _squeue("%j")
    keys = ["model", "metric", "variable", "period", "region"]
    a = threaded.sort_values(keys).reset_index(drop=True)
    b = on_slurm.sort_values(keys).reset_index(drop=True)
    assert a[keys].equals(b[keys]) and len(a) > 20
    np.testing.assert_allclose(b.value.to_numpy(float), a.value.to_numpy(float), rtol=1e-9, atol=1e-9,
                               equal_nan=True)
    rmse = b[(b.model == "model") & (b.metric == "rmse") & (b.period == "test") & (b.region == "domain")]
    assert float(rmse.value.iloc[0]) == pytest.approx(1.0, abs=1e-6)  # the hand value


def test_error_in_block_leaves_no_slurm_job(tmp_path, slurm_cluster):
    launch = _launch(slurm_cluster).launch
    with pytest.raises(RuntimeError, match="deliberate"):
        with dask_client(launch, log_directory=tmp_path / "dask-logs", name="finescale-dask-err") as client:
            ids = slurm_job_ids(client.cluster)
            assert ids and set(ids) <= set(_squeue("%i"))
            raise RuntimeError("deliberate failure while the worker job runs")
    wait_for(lambda: not queued_jobs(ids), 120, f"the dask worker job {ids} to leave squeue", poll=0.5)


def test_unknown_partition_refused_before_submitting(tmp_path, slurm_cluster):
    before = _squeue("%i")
    launch = _launch("no-such-partition").launch
    with pytest.raises(LaunchError, match=r"launch.partition='no-such-partition' \(for the dask worker jobs\) "
                                          rf"does not exist on this cluster; accepted: .*{slurm_cluster}"):
        with dask_client(launch, log_directory=tmp_path / "dask-logs"):
            pass
    assert _squeue("%i") == before and not (tmp_path / "dask-logs").exists()


def test_no_worker_in_time_names_partition_and_cancels(tmp_path, slurm_cluster):
    """A worker job SLURM keeps pending (a singleton behind a held job of the same name) never
    connects: after launch.dask.timeout the error names the partition and the job's state, and
    the pending job is cancelled."""
    name = "finescale-dask-pending"
    held = subprocess.run(["sbatch", "--parsable", "--hold", "-J", name, "-p", slurm_cluster, "-t", "5",
                           "--mem=100M", "-o", str(tmp_path / "held.out"), "--wrap", "sleep 600"],
                          capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        launch = _launch(slurm_cluster, timeout=5, extra={"dependency": "singleton"}).launch
        with pytest.raises(LaunchError) as err:
            with dask_client(launch, log_directory=tmp_path / "dask-logs", name=name):
                pytest.fail("no worker can have connected")
        message = str(err.value)
        assert f"0 of launch.dask.workers=1 dask worker(s) connected within launch.dask.timeout=5 s on SLURM " \
               f"partition {slurm_cluster!r}" in message
        assert "PENDING" in message and "Dependency" in message, message
        ids = [j for j in _squeue("%i") if j != held]
        wait_for(lambda: not [j for j in _squeue("%i") if j != held], 120,
                 f"the pending dask worker job(s) {ids} to leave squeue", poll=0.5)
    finally:
        subprocess.run(["scancel", held], capture_output=True)
