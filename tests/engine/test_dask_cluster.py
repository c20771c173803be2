"""launch.dask: every bad value refused with its message before a run folder exists, and the
evaluation of a run on a real distributed LocalCluster (worker processes) scoring exactly what
dask's threaded scheduler scores, with the hand values; the netCDF lock in a worker process; the
cluster closed after an error in the block. (The SLURMCluster is tested in tests/slurm/.)"""

from __future__ import annotations

import os

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import ConfigError, ExperimentConfig
from engine.launch import submit
from engine.launch.dask_cluster import DaskSettings, dask_client, dask_settings
from engine.runs import RunStore

distributed = pytest.importorskip("distributed")


@pytest.mark.parametrize("dask_section, message", [
    ({"cluster": "yarn"}, "launch.dask.cluster='yarn' is not valid; accepted: none, local, slurm"),
    ({"workers": 0}, "launch.dask.workers=0 is not valid; expected an integer from 1 to 1024"),
    ({"workers": 2.5}, "launch.dask.workers=2.5 is not valid; expected an integer from 1 to 1024"),
    ({"cores": "many"}, "launch.dask.cores='many' is not valid; expected an integer from 1 to 1024"),
    ({"cores": True}, "launch.dask.cores=True is not valid"),
    ({"memory": "lots"}, "launch.dask.memory='lots' is not valid; expected a size such as '4GB'"),
    ({"memory": "100MB"}, "at least 256MiB"),
    ({"memory": 0}, "launch.dask.memory=0 is not valid"),
    ({"walltime": "1h"}, "launch.dask.walltime='1h' is not valid; accepted SLURM formats: 'MM', 'HH:MM:SS'"),
    ({"timeout": 0}, "launch.dask.timeout=0 is not valid; expected the seconds to wait"),
    ({"timeout": "soon"}, "launch.dask.timeout='soon' is not valid"),
    ({"interface": "eth0; rm"}, "launch.dask.interface='eth0; rm' is not valid; expected a network interface name"),
    ({"extra": {"setup": "module load x"}}, "launch.dask.extra.setup is not accepted in a run configuration"),
    ({"extra": {"srun_args": "--x"}}, "launch.dask.extra.srun_args is not accepted"),
    ({"extra": {"comment": "a\nb"}}, "launch.dask.extra.comment='a\\nb' is not valid: it holds a newline"),
    ({"extra": {"chdir": "/tmp"}}, "launch.dask.extra.chdir is not an accepted sbatch option; accepted: constraint"),
    ({"extra": {"exclusive": "yes"}}, "launch.dask.extra.exclusive='yes' is not valid; expected true or false"),
    ({"extra": "--exclusive"}, "launch.dask.extra='--exclusive' is not valid; expected a mapping"),
    ({"scheduler": "threads"}, "unknown key(s) ['scheduler'] in launch.dask; accepted: cluster, workers, cores"),
])
def test_bad_dask_section_refused_before_a_run_folder_exists(tmp_path, dask_section, message):
    config = ExperimentConfig(name="daskbad").replace(launch={"launcher": "inline", "dask": dask_section})
    with pytest.raises(ConfigError) as err:
        submit(config, RunStore(tmp_path / "runs"))
    assert message in str(err.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_dask_section_defaults_and_yaml_round_trip():
    assert dask_settings(ExperimentConfig().launch) == DaskSettings()  # none: dask's threads, as before
    config = ExperimentConfig().replace(launch={"partition": "debug", "qos": "short", "dask": {
        "cluster": "slurm", "workers": "3", "cores": 2, "memory": 4, "walltime": "00:30:00",
        "extra": {"--mail-type": "END", "exclusive": True}}})
    again = ExperimentConfig.from_yaml(config.validate().to_yaml())
    settings = dask_settings(again.launch)
    assert (settings.cluster, settings.workers, settings.cores, settings.memory) == ("slurm", 3, 2, "4GB")
    assert settings.memory_bytes == 4 * 10**9 and settings.walltime == "00:30:00"
    assert (settings.partition, settings.qos) == ("debug", "short")
    assert settings.extra == {"mail_type": "END", "exclusive": True}


def test_cluster_none_yields_no_client():
    with dask_client(ExperimentConfig().launch) as client:
        assert client is None
        assert dask.config.get("scheduler", None) is None


# -- a run evaluated on a LocalCluster --------------------------------------------------------------
H = W = 12
TIMES = pd.date_range("2003-07-01", periods=6, freq="D")  # inside the default test period


def _predictions() -> xr.Dataset:
    """model = truth + 1 and bicubic = truth - 2 wherever valid (hand values: RMSE 1 and 2, bias
    +1 and -2); the masked first column holds garbage that evaluation must leave out."""
    rng = np.random.default_rng(3)
    truth = 280.0 + 3.0 * rng.normal(size=(len(TIMES), H, W))
    model, bicubic = truth + 1.0, truth - 2.0
    model[:, :, 0] = 1e6
    mask = np.ones((H, W), dtype="int8")
    mask[:, 0] = 0
    dims = ("time", "lat", "lon")
    return xr.Dataset(
        {"truth": (dims, truth, {"units": "K"}), "model": (dims, model, {"units": "K"}),
         "bicubic": (dims, bicubic, {"units": "K"}), "mask": (("lat", "lon"), mask)},
        coords={"time": TIMES, "lat": ("lat", np.linspace(40, 45.5, H), {"units": "degrees_north"}),
                "lon": ("lon", np.linspace(0, 5.5, W), {"units": "degrees_east"})},
        attrs={"variable": "t2m", "Conventions": "CF-1.8"})


def _pick(df: pd.DataFrame, model: str, metric: str) -> float:
    sel = df[(df.model == model) & (df.metric == metric) & (df.period == "test") & (df.region == "domain")]
    assert len(sel) == 1, (model, metric, sel)
    return float(sel.value.iloc[0])


def _lock_in_this_process(lock) -> tuple[int, bool, bool]:
    """Runs in a dask worker: the unpickled netCDF lock is that process's LOCK, and xarray's."""
    from xarray.backends import netCDF4_

    from engine.data import netcdf_lock

    return os.getpid(), lock.lock is netcdf_lock.LOCK.lock, netCDF4_.NETCDF4_PYTHON_LOCK is netcdf_lock.LOCK


@pytest.mark.slow  # two full evaluations and a worker process start: ~30 s on a loaded 2-core machine
def test_evaluation_on_local_cluster_equals_threaded(tmp_path):
    from distributed import get_task_stream

    from engine.data import netcdf_lock
    from engine.evaluation.report import evaluate_run

    store = RunStore(tmp_path / "runs")
    local = store.create(ExperimentConfig(name="dasklocal").replace(
        launch={"dask": {"cluster": "local", "workers": 1, "cores": 1, "memory": "1GB", "timeout": 120}}),
        run_id="run-dask")
    _predictions().to_netcdf(local.predictions_path)
    threaded = evaluate_run(local, block=2)  # no client: dask's threaded scheduler
    with dask_client(local.config.launch) as client:
        assert isinstance(client, distributed.Client)
        assert len(client.scheduler_info()["workers"]) == 1
        with get_task_stream(client) as stream:
            on_cluster = evaluate_run(local, block=2)  # 3 time blocks -> tasks on the workers
        pid, same_lock, xarray_lock = client.submit(_lock_in_this_process, netcdf_lock.LOCK, pure=False).result()
    assert stream.data, "no task of the evaluation ran on the cluster's workers"
    assert pid != os.getpid() and same_lock and xarray_lock
    assert client.status == "closed" and dask.config.get("scheduler", None) is None
    # hand values, then every score of the two schedulers
    assert _pick(on_cluster, "model", "rmse") == pytest.approx(1.0, abs=1e-6)
    assert _pick(on_cluster, "model", "bias") == pytest.approx(1.0, abs=1e-6)
    assert _pick(on_cluster, "bicubic", "rmse") == pytest.approx(2.0, abs=1e-6)
    assert _pick(on_cluster, "bicubic", "bias") == pytest.approx(-2.0, abs=1e-6)
    keys = ["model", "metric", "variable", "period", "region"]
    a = threaded.sort_values(keys).reset_index(drop=True)
    b = on_cluster.sort_values(keys).reset_index(drop=True)
    assert a[keys].equals(b[keys]) and len(a) > 20
    np.testing.assert_allclose(b.value.to_numpy(float), a.value.to_numpy(float), rtol=1e-9, atol=1e-9,
                               equal_nan=True)


def test_error_in_block_closes_local_cluster():
    launch = ExperimentConfig().replace(launch={"dask": {"cluster": "local", "memory": "512MiB"}}).launch
    with pytest.raises(RuntimeError, match="deliberate"):
        with dask_client(launch) as client:
            cluster = client.cluster
            assert client.submit(sum, [1, 2, 3]).result() == 6
            raise RuntimeError("deliberate failure inside the block")
    assert client.status == "closed" and cluster.status.name == "closed"
    assert dask.config.get("scheduler", None) is None


def test_cli_evaluate_refuses_bad_dask_section_before_any_work(tmp_path, capsys):
    """A run whose launch.dask is bad (edited by hand after training) is refused by `engine
    evaluate` before predictions are written, with the message naming the value."""
    from engine.cli import main

    store = RunStore(tmp_path / "runs")
    run = store.create(ExperimentConfig(name="daskcli").replace(launch={"dask": {"cluster": "spark"}}),
                       run_id="run-cli")
    assert main(["--runs", str(store.root), "evaluate", "run-cli"]) == 2
    err = capsys.readouterr().err
    assert "launch.dask.cluster='spark' is not valid; accepted: none, local, slurm" in err
    assert not run.predictions_path.exists() and not run.scores_path.exists()


@pytest.mark.slow  # trains a tiny run, then starts a LocalCluster for its evaluation
def test_run_evaluated_on_local_cluster_through_the_worker(tmp_path, tiny_config):
    """A run whose launch.dask asks for a local cluster: the worker's evaluation phase runs under
    it (its event names the cluster) and the run completes with scores for the model."""
    config = tiny_config.replace(data={"test_period": ["2003-12-01", "2003-12-10"]},  # a short evaluation
                                 training={"epochs": 1, "samples_per_epoch": 16},
                                 launch={"dask": {"cluster": "local", "workers": 1, "memory": "1GB"}})
    handle = submit(config, RunStore(tmp_path / "runs"))
    assert handle.wait(timeout=600) == "completed", handle.status().get("error")
    texts = [e.get("text", "") for e in handle.run.events("message")]
    assert any(t.startswith("evaluation on a dask LocalCluster of 1 worker(s) at tcp://127.0.0.1:") for t in texts), texts
    scores = handle.status()["scores"]
    assert scores["model"]["rmse"] is not None and handle.run.scores_path.exists()
    assert dask.config.get("scheduler", None) is None  # the client is gone with the evaluation
