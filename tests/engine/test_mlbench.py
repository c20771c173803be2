"""CORDEX ML-Bench end to end on the stand-in: the archive's layout on the real target grids, the
real download code offline, training an experiment into submission files checked against the
benchmark's templates, the command line, and bad input with clear messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from engine.mlbench.protocol import (
    DOMAINS, EXPERIMENTS, PERIODS, PREDICTORS, MLBenchError, all_test_inputs, get_domain, get_experiment, open_cf,
    submission_file, predictor_path, truth_path, train_files,
)

from tests.helpers import SHARED_DATA as SHARED, needs_mlbench_templates as needs_templates


@pytest.fixture(scope="module")
def alps(tmp_path_factory):
    from engine.mlbench.standin import generate_standin

    return generate_standin("ALPS", tmp_path_factory.mktemp("mlbench"), train_years=1, test_years=1, days_per_year=30)


@pytest.fixture(scope="module")
def alps_run(alps, tmp_path_factory):
    from engine.mlbench.experiments import MLBenchConfig, train

    cfg = MLBenchConfig(domain="ALPS", experiment="ESD_pseudo_reality", model="deepesd", epochs=2, root=str(alps))
    return train(cfg, tmp_path_factory.mktemp("runs"), log=lambda s: None)


# -- names ---------------------------------------------------------------------------------------

def test_unknown_names_list_the_accepted_ones():
    from engine.mlbench.experiments import MLBenchConfig

    with pytest.raises(MLBenchError, match="unknown ML-Bench domain 'EU'; accepted: ALPS, NZ, SA"):
        get_domain("EU")
    with pytest.raises(MLBenchError, match="accepted: ESD_pseudo_reality, Emulator_hist_future"):
        get_experiment("ESD")
    with pytest.raises(MLBenchError, match="unknown ML-Bench model 'vgg'; accepted: deepesd, deepesd-relu, resnet"):
        MLBenchConfig(model="vgg").validate()
    with pytest.raises(MLBenchError, match="unknown backbone 'vgg'"):
        MLBenchConfig(model="vgg:spc").validate()
    with pytest.raises(MLBenchError, match="variables .* accepted: tasmax, pr"):
        MLBenchConfig(variables=("tas",)).validate()


def test_protocol_tables():
    esd, emu = EXPERIMENTS["ESD_pseudo_reality"], EXPERIMENTS["Emulator_hist_future"]
    assert esd.years == "1961-1980" and emu.years == "1961-1980_2080-2099"
    assert {t.period for t in esd.tests} == set(PERIODS)
    assert "end_century" not in {t.period for t in emu.tests}  # the emulator trains on 2080-2099
    assert len(PREDICTORS) == 15 and PREDICTORS[0] == "z_850"
    assert len(all_test_inputs(DOMAINS["ALPS"])) == 12


# -- the stand-in ----------------------------------------------------------------------------------

@needs_templates
def test_standin_has_the_archive_layout_names_dims_and_calendars(alps):
    dom = DOMAINS["ALPS"]
    template = xr.open_dataset(SHARED / "mlbench_template_tasmax_ALPS.nc")
    for exp in EXPERIMENTS.values():
        files = train_files(alps, dom, exp)
        assert files["predictors"].name == f"CNRM-CM5_{exp.years}.nc"
        with open_cf(files["predictors"]) as p, open_cf(files["target"]) as t, open_cf(files["static"]) as s:
            assert list(p.data_vars) == list(PREDICTORS)
            assert p["t_850"].dims == ("time", "lat", "lon") and p.sizes["lat"] == p.sizes["lon"] == 16
            assert np.allclose(np.diff(p["lat"]), 2.0) and p["t_850"].attrs["units"] == "K"
            assert set(t.data_vars) == {"pr", "tasmax"} and t["tasmax"].dims == ("time", "y", "x")
            for c in ("x", "y", "lat", "lon"):
                np.testing.assert_allclose(t[c].values, template[c].values)
            for k, v in template["tasmax"].attrs.items():
                assert t["tasmax"].attrs.get(k, t["tasmax"].encoding.get(k)) == v, k
            assert t["pr"].attrs["units"] == "mm/day"
            assert t.time.dt.calendar in ("standard", "gregorian") and t.time.dt.hour[0] == 12
            assert s["orog"].dims == ("y", "x") and 2000 < float(s["orog"].max()) < 4810  # real Alps
        years = {d.year for d in p.indexes["time"]}
        assert years == ({1961} if exp.name == "ESD_pseudo_reality" else {1961, 2080})
    for period, mode, gcm in all_test_inputs(dom):
        assert predictor_path(alps, period, mode, gcm).is_file()
        assert truth_path(alps, period, gcm).is_file()
    with open_cf(truth_path(alps, "historical", "MPI-ESM-LR")) as t:
        assert t.time.dt.calendar == "proleptic_gregorian"


@needs_templates
def test_standin_carries_what_its_docstring_promises(alps):
    dom = DOMAINS["ALPS"]
    with open_cf(truth_path(alps, "historical", dom.gcm)) as h, \
            open_cf(truth_path(alps, "end_century", dom.gcm)) as e:
        warming = float(e["tasmax"].mean() - h["tasmax"].mean())
    assert 2.0 < warming < 8.0  # +1 K (2000) -> +4.5..5 K (2099), season-matched days
    with open_cf(predictor_path(alps, "historical", "perfect", dom.gcm)) as p, \
            open_cf(predictor_path(alps, "historical", "imperfect", dom.gcm)) as i:
        assert 0.5 < float((i["t_850"] - p["t_850"]).mean()) < 2.0  # the GCM's warm bias
        assert float(xr.corr(i["t_850"], p["t_850"])) > 0.9  # same large-scale weather


def test_standin_convection_is_mostly_a_future_climate_regime():
    """The docstring's promise behind the emulator experiment's pr advantage: the convective term
    is on (past its half-way point) on ~2 % of the 1961-1980 cell-days and ~14 % of 2080-2099,
    counted over whole years (the fixture keeps only January) at every 8th target cell."""
    from engine.mlbench.standin import CONVECTIVE_ONSET_K, _latlon, _modes, _state, _times, target_template

    dom = DOMAINS["ALPS"]
    lat, lon = (a[::8, ::8] for a in _latlon(target_template(dom), dom))
    share = {}
    for label, years in {"historical": [1961, 1962], "end_century": [2099, 2100]}.items():
        times = _times(years, dom.calendars[dom.gcm], None)
        state = _state(lat, lon, times, _modes(dom.gcm, times, 0), dom, dom.gcm, (float(lat.mean()), float(lon.mean())))
        share[label] = float((state["t850"] > CONVECTIVE_ONSET_K).mean())
    assert 0.005 < share["historical"] < 0.04, share
    assert 0.08 < share["end_century"] < 0.25 and share["end_century"] > 4 * share["historical"], share


def _local_pr_skill(moistening: float, monkeypatch) -> float:
    """Share of the climatology's RMSE that a per-block linear regression of the stand-in's pr (8 x 8
    block means) on the block's own aligned predictors removes in 1962, fitted on 1961 (flat
    orography: the large-scale ascent and convection are all there is to find)."""
    from engine.mlbench import standin
    from engine.mlbench.interp import PredictorAlignment

    monkeypatch.setattr(standin, "ASCENT_MOISTENING", moistening)
    dom = DOMAINS["ALPS"]
    template = standin.target_template(dom)
    lat1, lon1 = standin.predictor_grid(template, dom)
    lat2, lon2 = standin._latlon(template, dom)
    centre = (float(lat2.mean()), float(lon2.mean()))
    align = PredictorAlignment(lat1, lon1, lat2, lon2)
    x, y = {}, {}
    for year in (1961, 1962):
        times = standin._times([year], dom.calendars[dom.gcm], None)
        modes = standin._modes(dom.gcm, times, 0)
        p = standin._predictors(lat1, lon1, times, modes, dom, dom.gcm, False, 0, (850, 700, 500), centre)
        x[year] = align(np.stack([p[v].values for v in p.data_vars], axis=1))  # (T, C, 16, 16)
        pr = standin._targets(template, dom, dom.gcm, times, modes, np.zeros(lat2.shape), 0)["pr"].values
        y[year] = pr.reshape(len(times), 16, 8, 16, 8).mean(axis=(2, 4))
    err_model, err_clim = 0.0, 0.0
    for i in range(16):
        for j in range(16):
            a, b = (np.column_stack([np.ones(len(x[k])), x[k][:, :, i, j]]) for k in (1961, 1962))
            mu, sd = a[:, 1:].mean(0), a[:, 1:].std(0) + 1e-12
            a[:, 1:], b[:, 1:] = (a[:, 1:] - mu) / sd, (b[:, 1:] - mu) / sd
            coef = np.linalg.lstsq(a, y[1961][:, i, j], rcond=None)[0]
            err_model += float(((b @ coef - y[1962][:, i, j]) ** 2).sum())
            err_clim += float(((y[1961][:, i, j].mean() - y[1962][:, i, j]) ** 2).sum())
    return 1 - np.sqrt(err_model / err_clim)


def test_standin_ascent_shows_in_each_cells_own_column(monkeypatch):
    """The stand-in's large-scale ascent moistens the mid-troposphere where it acts, so a model that
    reads each cell's own column (a convolution network) can learn pr. Without the moistening the
    ascent was only readable from the domain-wide mode decomposition: each block's own predictors
    then explain little of its pr (measured: 12 % of the climatology's RMSE removed, 43 % with it)."""
    with_column = _local_pr_skill(0.3, monkeypatch)
    without = _local_pr_skill(0.0, monkeypatch)
    assert with_column > 0.3, with_column
    assert without < 0.2 and with_column > 2.5 * without, (with_column, without)


def test_sa_grid_built_from_its_template_coordinates(tmp_path, monkeypatch):
    from engine.mlbench.standin import generate_standin

    monkeypatch.setenv("FINESCALE_DATA", str(tmp_path / "cache"))  # no SA template there
    root = generate_standin("SA", tmp_path, train_years=1, test_years=1, days_per_year=5)
    with open_cf(train_files(root, DOMAINS["SA"], EXPERIMENTS["ESD_pseudo_reality"])["target"]) as t:
        assert t["tasmax"].dims == ("time", "lat", "lon")
        assert float(t.lat[0]) == pytest.approx(-34.7) and float(t.lon[-1]) == pytest.approx(33.2)
    with open_cf(truth_path(root, "mid_century", "NorESM2-MM")) as t:
        assert t.time.dt.calendar == "noleap"


# -- the real download code, offline -----------------------------------------------------------------

def test_download_offline_message_and_cached_archive(alps, tmp_path):
    from engine.mlbench.download import archive_root, download_archive

    with pytest.raises(MLBenchError) as err:
        download_archive("NZ", root=tmp_path / "nz")
    message = str(err.value)
    for word in ("zenodo.org/records/17957264", "NZ_domain.zip", str(tmp_path / "nz"), "mlbench standin"):
        assert word in message
    # an archive already unpacked there is used without any network
    assert download_archive("ALPS", root=alps.parent) == alps
    assert archive_root("ALPS", alps.parent) == alps


@needs_templates
def test_templates_are_checksummed(tmp_path, monkeypatch):
    from engine.mlbench.download import template_cache_path, template_path

    monkeypatch.setenv("FINESCALE_DATA", str(tmp_path))
    assert template_path("pr", "NZ").name == "mlbench_template_pr_NZ.nc"  # the shared copy, verified
    bad = template_cache_path("pr", "NZ")
    bad.write_bytes((SHARED / "mlbench_template_pr_NZ.nc").read_bytes()[:-10] + b"0123456789")
    with pytest.raises(MLBenchError, match="does not match the benchmark's .*delete it"):
        template_path("pr", "NZ")
    with pytest.raises(MLBenchError, match="unknown ML-Bench variable 'tas'"):
        template_path("tas", "NZ")


# -- experiments -> submission files ------------------------------------------------------------------

@needs_templates
def test_training_writes_every_submission_file_in_the_template_format(alps, alps_run):
    dom, exp = DOMAINS["ALPS"], EXPERIMENTS["ESD_pseudo_reality"]
    for var in ("tasmax", "pr"):
        assert (alps_run / "checkpoints" / f"{var}.pt").is_file()
    template = {v: xr.open_dataset(SHARED / f"mlbench_template_{v}_ALPS.nc") for v in ("tasmax", "pr")}
    for period, mode, gcm in all_test_inputs(dom):
        path = submission_file(alps_run / "submission", dom, exp, period, mode, gcm)
        assert path.name == f"Predictions_pr_tasmax_{gcm}_{PERIODS[period]}.nc"
        assert path.parent == alps_run / "submission" / "ALPS_Domain" / exp.name / period / mode
        with open_cf(path) as ds, open_cf(predictor_path(alps, period, mode, gcm)) as pred:
            for var, t in template.items():
                assert ds[var].dims == t[var].dims  # (time, y, x)
                assert ds[var].dtype == t[var].dtype
                for c in t[var].coords:
                    if c != "time":
                        np.testing.assert_allclose(ds[c].values, t[c].values)
                assert {k: ds[var].attrs.get(k, ds[var].encoding.get(k)) for k in t[var].attrs} == t[var].attrs
            assert list(ds.indexes["time"]) == list(pred.indexes["time"])
            assert float(ds["pr"].min()) >= 0


@needs_templates
def test_a_file_that_does_not_match_its_template_is_refused(alps_run, tmp_path):
    from engine.mlbench.submission import check_prediction_file

    dom, exp = DOMAINS["ALPS"], EXPERIMENTS["ESD_pseudo_reality"]
    good = submission_file(alps_run / "submission", dom, exp, "historical", "perfect", dom.gcm)
    with open_cf(good) as ds:
        ds = ds.load()
    cases = {
        "lacks \\['pr'\\]": ds.drop_vars("pr"),
        "coordinate 'x' differs from the ALPS template's \\(a test set on another grid": ds.assign_coords(x=ds.x + 12.5),
        "attribute units=.*'K'": ds.assign(tasmax=ds.tasmax.assign_attrs(units="degC")),
        "has dims \\('time', 'x', 'y'\\)": ds.assign(tasmax=ds.tasmax.transpose("time", "x", "y")),
        "NaN": ds.assign(pr=ds.pr.where(ds.pr > 1e9)),
    }
    for i, (words, bad) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.nc"
        bad.to_netcdf(path)
        with pytest.raises(MLBenchError, match=words):
            check_prediction_file(path, "ALPS")
    with pytest.raises(MLBenchError, match="time axis .* is not the predictors'"):
        check_prediction_file(good, "ALPS", times=ds.indexes["time"][1:])
    with pytest.raises(MLBenchError, match="does not exist"):
        check_prediction_file(tmp_path / "missing.nc", "ALPS")


@needs_templates
def test_predictors_with_a_missing_level_or_on_another_grid(alps, alps_run, tmp_path):
    from engine.mlbench.experiments import MLBenchConfig, load_training
    from engine.mlbench.prediction import predictor_fn

    predict = predictor_fn(alps_run)
    with open_cf(predictor_path(alps, "historical", "perfect", "CNRM-CM5")) as ds:
        ds = ds.load()
    with pytest.raises(MLBenchError, match="lacks predictor\\(s\\) z_500, u_500, v_500, t_500, q_500 \\(level\\(s\\) 500 hPa\\)"):
        predict(ds.drop_vars([f"{v}_500" for v in "zuvtq"]), "no500.nc")
    with pytest.raises(MLBenchError, match="12x12 grid; the run was trained on 16x16"):
        predict(ds.isel(lat=slice(0, 12), lon=slice(0, 12)), "small.nc")
    # a training archive whose predictors miss a level is refused before any training
    root = tmp_path / "ALPS_domain"
    files = train_files(root, DOMAINS["ALPS"], EXPERIMENTS["ESD_pseudo_reality"])
    src = train_files(alps, DOMAINS["ALPS"], EXPERIMENTS["ESD_pseudo_reality"])
    for key in ("target", "static"):
        files[key].parent.mkdir(parents=True, exist_ok=True)
        files[key].write_bytes(src[key].read_bytes())
    with open_cf(src["predictors"]) as p:
        p.load().drop_vars("q_700").to_netcdf(files["predictors"])
    with pytest.raises(MLBenchError, match="lacks predictor\\(s\\) q_700 \\(level\\(s\\) 700 hPa\\)"):
        load_training(MLBenchConfig(root=str(root)))


# -- the command line ------------------------------------------------------------------------------

@pytest.mark.slow  # trains and scores a second run
@needs_templates
def test_command_line_train_and_score(alps, tmp_path, capsys):
    from engine.cli import main

    runs = tmp_path / "runs"
    assert main(["--runs", str(runs), "mlbench", "train", "--domain", "ALPS", "--experiment", "ESD_pseudo_reality",
                 "--model", "deepesd", "--epochs", "1", "--root", str(alps)]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (run / "mlbench.json").is_file()
    out = tmp_path / "card.csv"
    assert main(["mlbench", "score", str(run), "--out", str(out), "--no-baselines"]) == 0
    assert out.is_file() and "tasmax_rmse" in out.read_text().splitlines()[0]
    assert main(["mlbench", "train", "--domain", "EU", "--experiment", "ESD_pseudo_reality"]) == 2
    assert "unknown ML-Bench domain 'EU'; accepted: ALPS, NZ, SA" in capsys.readouterr().err
    assert main(["mlbench", "score", str(tmp_path)]) == 2
    assert "not an ML-Bench run folder" in capsys.readouterr().err


# -- scoring ------------------------------------------------------------------------------------------

@pytest.mark.slow  # ~1 min alone: 17 diagnostics x 2 variables x 24 rows
@needs_templates
def test_scorecard_rows_columns_and_baselines(alps_run):
    from engine.mlbench.scoring import scorecard

    table = scorecard([alps_run])
    tests = EXPERIMENTS["ESD_pseudo_reality"].tests
    assert len(table) == 4 * len(tests)
    assert set(table.model) == {"deepesd", "interpolation", "linear_regression", "climatology"}
    for col in ("tasmax_rmse", "tasmax_ralsd", "tasmax_wasserstein", "tasmax_bias_txx", "tasmax_bias_su",
                "pr_rmse", "pr_bias_rx1day", "pr_bias_sdii", "pr_bias_cdd", "pr_bias_cwd", "corr_bias"):
        assert col in table, col
    interp = table[table.model == "interpolation"]
    assert interp["pr_rmse"].isna().all() and np.isfinite(interp["tasmax_rmse"]).all()
    model = table[table.model == "deepesd"].drop(columns=["model", "domain", "experiment", "test", "period", "mode", "gcm"])
    assert np.isfinite(model.values.astype(float)).all() and (model.values >= 0).all()
    wider = scorecard([alps_run], baselines=False, all_tests=True)
    assert len(wider) == len(tests) + 1  # + the emulator's imperfect mid-century test with the second GCM
    assert "Imperfect_interpolation_GCM_transferability" in set(wider.test)


@needs_templates
def test_baselines_fitted_on_the_training_period(alps):
    from engine.mlbench.experiments import MLBenchConfig, load_training
    from engine.mlbench.scoring import fit_baselines

    fitted = fit_baselines("ALPS", "ESD_pseudo_reality", alps)
    data = load_training(MLBenchConfig(root=str(alps)))
    with open_cf(train_files(alps, DOMAINS["ALPS"], EXPERIMENTS["ESD_pseudo_reality"])["predictors"]) as p:
        interp = fitted["interpolation"](p)
        linear = fitted["linear_regression"](p)
    # the per-cell offset makes the interpolated predictor unbiased at every cell over training
    np.testing.assert_allclose((interp["tasmax"] - data["y"]["tasmax"]).mean(0), 0, atol=1e-3)
    # least squares with an intercept: zero mean residual at every cell, and a better fit than the offset alone
    np.testing.assert_allclose((linear["tasmax"] - data["y"]["tasmax"]).mean(0), 0, atol=1e-3)
    assert np.mean((linear["tasmax"] - data["y"]["tasmax"]) ** 2) < np.mean(
        (data["y"]["tasmax"] - data["y"]["tasmax"].mean(0)) ** 2)


@needs_templates
def test_index_maps_for_a_map_view_and_bad_shapes(alps_run):
    from engine.mlbench.scoring import _Truth, index_maps, score_arrays

    maps = index_maps(alps_run, "historical", "perfect", "CNRM-CM5", "tasmax", "txx")
    assert set(maps.data_vars) == {"truth", "model", "bias"} and maps["bias"].dims == ("y", "x")
    assert maps["lat"].dims == ("y", "x")
    np.testing.assert_allclose(maps["bias"].values, (maps["model"] - maps["truth"]).values)
    archive = Path(json.loads((alps_run / "mlbench.json").read_text())["archive"])
    truth = _Truth(truth_path(archive, "historical", "CNRM-CM5"), ("y", "x"))
    with pytest.raises(MLBenchError, match="prediction of shape .* against a truth of shape .* another grid"):
        score_arrays({"tasmax": np.zeros((3, 128, 100))}, truth)


def test_catalogue_opens_the_archive_layout(alps):
    import warnings

    from engine.data.catalog import _entry, list_entries

    catalog = Path(__file__).resolve().parents[2] / "catalogs" / "mlbench.yaml"
    names = list_entries(str(catalog))
    assert {f"mlbench_{d}_{k}" for d in ("alps", "nz", "sa")
            for k in ("train_predictors", "train_target", "static", "test_predictors")} == set(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # intake 2: "Shell command not executed" per str parameter
        target = _entry("mlbench_alps_train_target", str(catalog)).get(
            root=str(alps), experiment="Emulator_hist_future", years="1961-1980_2080-2099").to_dask()
        test = _entry("mlbench_alps_test_predictors", str(catalog)).get(
            root=str(alps), period="end_century", years="2080-2099", mode="imperfect", gcm="MPI-ESM-LR").to_dask()
    assert target["tasmax"].dims == ("time", "y", "x") and target.sizes["x"] == 128
    assert set(PREDICTORS) <= set(test.data_vars) and test.sizes["lat"] == 16
