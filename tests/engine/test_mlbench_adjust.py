"""Bias adjustment of the GCM (imperfect) predictors: the mapping by hand, on the stand-in's files,
through a run's submission and its scorecard, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from engine.mlbench.protocol import PREDICTORS, MLBenchError

from tests.helpers import needs_mlbench_templates as needs_templates


def test_mean_variance_mapping_by_hand():
    from engine.mlbench.adjust import MeanVarianceAdjustment

    # one channel, one cell: the GCM has mean 12, std 2 (values 10, 14); the reference mean 5, std 1 (4, 6)
    gcm = np.array([10.0, 14.0]).reshape(2, 1, 1, 1)
    ref = np.array([4.0, 6.0]).reshape(2, 1, 1, 1)
    adjust = MeanVarianceAdjustment(gcm, ref)
    # (x - 12) * 1/2 + 5: 16 -> 7, 12 -> 5, 10 -> 4
    assert adjust(np.array([16.0, 12.0, 10.0]).reshape(3, 1, 1, 1)).ravel() == pytest.approx([7.0, 5.0, 4.0])
    # a constant channel keeps its (zero) variance and only moves its mean
    const = MeanVarianceAdjustment(np.full((3, 1, 1, 1), 2.0), np.full((3, 1, 1, 1), 7.0))
    assert const(np.array([2.0, 3.0]).reshape(2, 1, 1, 1)).ravel() == pytest.approx([7.0, 8.0])
    with pytest.raises(MLBenchError, match=r"\(1, 1, 1\).*\(2, 1, 1\)"):
        MeanVarianceAdjustment(gcm, np.zeros((2, 2, 1, 1)))
    with pytest.raises(MLBenchError, match="shape"):
        adjust(np.zeros((3, 2, 1, 1)))


@pytest.fixture(scope="module")
def alps(tmp_path_factory):
    from engine.mlbench.standin import generate_standin

    return generate_standin("ALPS", tmp_path_factory.mktemp("mlbench"), train_years=1, test_years=1, days_per_year=30)


@needs_templates
def test_the_gcm_bias_is_removed_and_the_climate_signal_kept(alps):
    """The stand-in's GCM is +1 K (plus the warming's own noise) in t850 against the perfect
    predictors; after the adjustment the end-century bias is near 0 while both keep the warming."""
    from engine.mlbench.adjust import adjustment_for
    from engine.mlbench.experiments import _predictor_array
    from engine.mlbench.protocol import open_cf, predictor_path

    c = PREDICTORS.index("t_850")
    gcm = "CNRM-CM5"
    assert adjustment_for("mean_variance", alps, "perfect", gcm) is None
    assert adjustment_for("none", alps, "imperfect", gcm) is None
    adjust = adjustment_for("mean_variance", alps, "imperfect", gcm)
    arrays = {}
    for period in ("historical", "end_century"):
        for mode in ("perfect", "imperfect"):
            with open_cf(predictor_path(alps, period, mode, gcm)) as ds:
                arrays[period, mode] = _predictor_array(ds, "p")[:, c].astype(np.float64)
    raw_bias = (arrays["end_century", "imperfect"] - arrays["end_century", "perfect"]).mean()
    assert raw_bias > 0.5
    with open_cf(predictor_path(alps, "end_century", "imperfect", gcm)) as ds:
        adjusted = adjust(_predictor_array(ds, "p"))[:, c]
    assert abs((adjusted - arrays["end_century", "perfect"]).mean()) < 0.2 * raw_bias
    warming = arrays["end_century", "perfect"].mean() - arrays["historical", "perfect"].mean()
    assert warming > 2.0  # the stand-in warms ~4 K from 1981-2000 to 2080-2099
    assert adjusted.mean() - arrays["historical", "perfect"].mean() == pytest.approx(warming, abs=0.5)


@needs_templates
def test_a_missing_reference_file_and_a_bad_name_are_refused(alps, tmp_path):
    import shutil

    from engine.mlbench.adjust import adjustment_for
    from engine.mlbench.experiments import MLBenchConfig
    from engine.mlbench.protocol import predictor_path

    with pytest.raises(MLBenchError, match="predictor_adjustment='quantile'.*none, mean_variance"):
        MLBenchConfig(predictor_adjustment="quantile").validate()
    with pytest.raises(MLBenchError, match="accepted: none, mean_variance"):
        adjustment_for("quantile", alps, "imperfect", "CNRM-CM5")
    copy = tmp_path / "ALPS_domain"
    shutil.copytree(alps, copy)
    predictor_path(copy, "historical", "perfect", "CNRM-CM5").unlink()
    with pytest.raises(MLBenchError, match="historical perfect predictors .*missing.*predictor_adjustment='none'"):
        adjustment_for("mean_variance", copy, "imperfect", "CNRM-CM5")


def test_an_archive_written_again_is_fitted_again(alps, tmp_path):
    """The fit is kept per process, but a reference file written again at the same path (a
    regenerated stand-in) gives a new fit, not the old one."""
    import shutil

    import xarray as xr

    from engine.mlbench.adjust import adjustment_for
    from engine.mlbench.protocol import predictor_path

    copy = tmp_path / "ALPS_domain"
    shutil.copytree(alps, copy)
    gcm = "CNRM-CM5"
    x = np.zeros((1, len(PREDICTORS), 16, 16), np.float32)
    before = adjustment_for("mean_variance", copy, "imperfect", gcm)(x)
    assert adjustment_for("mean_variance", copy, "imperfect", gcm) is adjustment_for("mean_variance", copy, "imperfect", gcm)
    path = predictor_path(copy, "historical", "perfect", gcm)
    with xr.open_dataset(path) as ds:
        shifted = (ds + 1.0).load()  # every reference predictor 1 unit higher: the adjusted mean moves by 1
    shifted.to_netcdf(path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    after = adjustment_for("mean_variance", copy, "imperfect", gcm)(x)
    assert np.allclose(after - before, 1.0, atol=1e-3)


@needs_templates
def test_a_run_with_adjusted_predictors_and_its_baselines(alps, tmp_path):
    """The submission of an imperfect file is the prediction from the adjusted predictors, and the
    scorecard's baselines of that run see the same adjusted predictors (their own row names)."""
    import xarray as xr

    from engine.mlbench.adjust import adjustment_for
    from engine.mlbench.experiments import MLBenchConfig, train
    from engine.mlbench.prediction import predictor_fn
    from engine.mlbench.protocol import get_domain, get_experiment, open_cf, predictor_path, submission_file
    from engine.mlbench.scoring import scorecard

    cfg = MLBenchConfig(domain="ALPS", experiment="ESD_pseudo_reality", model="deepesd", epochs=1, root=str(alps),
                        samples_per_epoch=16, predictor_adjustment="mean_variance")
    run = train(cfg, tmp_path / "runs", log=lambda s: None)
    dom, exp = get_domain("ALPS"), get_experiment("ESD_pseudo_reality")
    predict = predictor_fn(run)
    src = predictor_path(alps, "end_century", "imperfect", dom.gcm)
    with open_cf(src) as ds:
        want = predict(ds, src.name, adjust=adjustment_for("mean_variance", alps, "imperfect", dom.gcm))
        raw = predict(ds, src.name)
    with xr.open_dataset(submission_file(run / "submission", dom, exp, "end_century", "imperfect", dom.gcm)) as sub:
        assert sub.attrs["predictor_adjustment"] == "mean_variance"
        got = sub["tasmax"].transpose("time", *dom.spatial_dims).values
    assert np.allclose(got, want["tasmax"], atol=1e-3)
    assert not np.allclose(got, raw["tasmax"], atol=0.1)  # the adjustment changed the inputs
    table = scorecard([run])
    assert {"interpolation+mean_variance", "linear_regression+mean_variance"} <= set(table.model)
    assert "interpolation" not in set(table.model)
    # the adjusted interpolation removes the GCM's +1 K: closer to the truth than the raw one
    from engine.mlbench.protocol import truth_path
    from engine.mlbench.scoring import fit_baselines

    base = fit_baselines("ALPS", "ESD_pseudo_reality", alps)
    with open_cf(src) as ds, open_cf(truth_path(alps, "end_century", dom.gcm)) as t:
        truth = t["tasmax"].transpose("time", *dom.spatial_dims).values
        raw_rmse = float(np.sqrt(((base["interpolation"](ds)["tasmax"] - truth) ** 2).mean()))
    row = table[(table.model == "interpolation+mean_variance") & (table.period == "end_century")
                & (table["mode"] == "imperfect")]
    assert float(row["tasmax_rmse"].iloc[0]) < raw_rmse
