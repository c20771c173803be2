"""The scorecard's shortcuts give the registered definitions' numbers: the truth's side cached
(correlation), ensembles scored on their mean (RMSE) and first member (the rest)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr


@pytest.fixture
def truth_file(tmp_path):
    t = xr.date_range("1981-01-01", periods=400, freq="D", calendar="noleap", use_cftime=True)
    rng = np.random.default_rng(1)
    tx = 280 + 10 * np.sin(np.arange(400) / 58.0)[:, None, None] + rng.normal(0, 2, (400, 6, 5))
    pr = np.clip(rng.gamma(0.8, 3.0, (400, 6, 5)) - 0.5 * (tx - 280), 0, None)
    ds = xr.Dataset({"tasmax": (("time", "y", "x"), tx.astype(np.float32), {"units": "K"}),
                     "pr": (("time", "y", "x"), pr.astype(np.float32), {"units": "mm/day"})},
                    coords={"time": t, "y": np.arange(6.0), "x": np.arange(5.0)})
    path = tmp_path / "truth.nc"
    ds.to_netcdf(path)
    return path, ds


def test_correlation_bias_with_the_truth_cached_equals_the_diagnostic(truth_file):
    from engine.evaluation.diagnostics import correlation_bias, reduce_map
    from engine.mlbench.scoring import _Truth, score_arrays

    path, ds = truth_file
    rng = np.random.default_rng(2)
    pred = {v: ds[v].values + rng.normal(0, 1, ds[v].shape).astype(np.float32) for v in ("tasmax", "pr")}
    pred["pr"] = np.clip(pred["pr"], 0, None)
    truth = _Truth(path, ("y", "x"))
    got = score_arrays(pred, truth)["corr_bias"]
    want = float(reduce_map(correlation_bias(xr.Dataset({v: ds[v].copy(data=a) for v, a in pred.items()}), ds)
                            ["correlation_bias"]))
    assert got == want
    assert score_arrays(pred, truth)["corr_bias"] == got  # second row: the cached truth side


def test_an_ensemble_is_scored_on_its_mean_and_first_member(truth_file):
    from engine.mlbench.scoring import _Truth, score_arrays

    path, ds = truth_file
    truth = _Truth(path, ("y", "x"))
    tx = ds["tasmax"].values
    members = np.stack([tx + 1.0, tx - 3.0, tx + 5.0])  # mean: tx + 1
    got = score_arrays({"tasmax": members}, truth)
    assert got["tasmax_rmse"] == pytest.approx(1.0, abs=1e-4)  # by hand: the mean is 1 K off everywhere
    first = score_arrays({"tasmax": members[0]}, truth)
    assert got["tasmax_bias_mean"] == first["tasmax_bias_mean"] == pytest.approx(1.0, abs=1e-4)
    assert got["tasmax_wasserstein"] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(Exception, match="prediction of shape \\(3, 400, 6, 4\\)"):
        score_arrays({"tasmax": members[..., :4]}, truth)
