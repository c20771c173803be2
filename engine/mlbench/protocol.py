"""The CORDEX ML-Bench protocol: domains, training experiments, test sets and the archive's layout.

Everything here is read from the benchmark's own documents (GitHub WCRP-CORDEX/ml-benchmark,
README.md, data/README.md, data/experiments.ipynb, submission/README.md; MIT):

- three domains, each one RCM driven by two GCMs, the first used for training and testing, the
  second for testing transferability only (ALPS: Aladin63 driven by CNRM-CM5 / MPI-ESM-LR; NZ:
  CCAM driven by ACCESS-CM2 / EC-Earth3; SA: ACCESS-CM2 / NorESM2-MM);
- predictors ``{z,u,v,t,q}_{850,700,500}`` on a 16 x 16 grid of ~2 degrees, dims (time, lat, lon),
  for every domain (the ALPS predictors too: the benchmark's own scripts transpose them to
  ``("time", "variable", "lat", "lon")``). The README's prose also names 300 hPa; the archive's
  printed predictor file holds 15 variables (5 x 3 levels), which is what we follow;
- targets ``tasmax`` and ``pr`` on 128 x 128 grids: ALPS (y, x) in km on the RCM's Lambert
  projection with 2-D lat/lon, NZ and SA regular (lat, lon);
- the archive layout below, with ``<domain>_domain/`` at the top of each Zenodo zip.

Layout (``root`` = the unpacked ``<domain>_domain`` folder)::

    train/<experiment>/predictors/<GCM>_<years>.nc
    train/<experiment>/predictors/Static_fields.nc        (orog on the target grid)
    train/<experiment>/target/pr_tasmax_<GCM>_<years>.nc
    test/<period>/predictors/{perfect,imperfect}/<GCM>_<years>.nc
    test/<period>/target/pr_tasmax_<GCM>_<years>.nc       (the held-out truth: not in the public
                                                          archive; the stand-in writes it so a
                                                          run can be scored offline)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class MLBenchError(ValueError):
    """Bad ML-Bench input: unknown domain or experiment, a file that does not follow the
    benchmark's layout or format, predictors missing a level, a test set on another grid."""


VARIABLES = ("tasmax", "pr")
PREDICTOR_VARIABLES = ("z", "u", "v", "t", "q")
LEVELS = (850, 700, 500)
PREDICTORS = tuple(f"{v}_{lev}" for v in PREDICTOR_VARIABLES for lev in LEVELS)
PERIODS = {"historical": "1981-2000", "mid_century": "2041-2060", "end_century": "2080-2099"}
MODES = ("perfect", "imperfect")


@dataclass(frozen=True)
class Domain:
    """One benchmark domain."""

    name: str
    rcm: str
    gcm: str  # training (and testing) GCM
    gcm_transfer: str  # the second GCM, for transferability tests only
    spatial_dims: tuple[str, str]
    calendars: dict  # GCM -> calendar of its files


DOMAINS = {
    "ALPS": Domain("ALPS", "Aladin63", "CNRM-CM5", "MPI-ESM-LR", ("y", "x"),
                   {"CNRM-CM5": "gregorian", "MPI-ESM-LR": "proleptic_gregorian"}),
    "NZ": Domain("NZ", "CCAM-2203", "ACCESS-CM2", "EC-Earth3", ("lat", "lon"),
                 {"ACCESS-CM2": "proleptic_gregorian", "EC-Earth3": "proleptic_gregorian"}),
    # SA's driving GCMs as in data/README.md; NorESM2-MM runs on a 365-day calendar (the archive's
    # printed test file decodes to cftime objects)
    "SA": Domain("SA", "CCAM", "ACCESS-CM2", "NorESM2-MM", ("lat", "lon"),
                 {"ACCESS-CM2": "standard", "NorESM2-MM": "noleap"}),
}


@dataclass(frozen=True)
class TestSet:
    """One test of an experiment's table: predictors of ``period`` (``mode``) from ``gcm``."""

    name: str  # the benchmark's name, e.g. "Perfect_cross_validation"
    period: str  # historical | mid_century | end_century
    mode: str  # perfect | imperfect
    transfer: bool  # True: the second GCM (transferability)

    def gcm(self, domain: Domain) -> str:
        return domain.gcm_transfer if self.transfer else domain.gcm

    def label(self, domain: Domain) -> str:
        return f"{self.period}/{self.mode}/{self.gcm(domain)}"


@dataclass(frozen=True)
class Experiment:
    name: str
    train_periods: tuple[str, ...]  # year ranges, e.g. ("1961-1980", "2080-2099")
    tests: tuple[TestSet, ...]

    @property
    def years(self) -> str:
        return "_".join(self.train_periods)


def _tests(rows) -> tuple[TestSet, ...]:
    out = []
    for name, periods, mode, transfer in rows:
        for period in periods:
            out.append(TestSet(name, period, mode, transfer))
    return tuple(out)


# The README's experiment tables ("mid/final term" tests have one file per period).
EXPERIMENTS = {
    "ESD_pseudo_reality": Experiment("ESD_pseudo_reality", ("1961-1980",), _tests([
        ("Perfect_cross_validation", ["historical"], "perfect", False),
        ("Imperfect_cross_validation", ["historical"], "imperfect", False),
        ("Perfect_extrapolation", ["mid_century", "end_century"], "perfect", False),
        ("Imperfect_extrapolation", ["mid_century", "end_century"], "imperfect", False),
        ("Perfect_extrapolation_GCM_transferability", ["mid_century", "end_century"], "perfect", True),
    ])),
    "Emulator_hist_future": Experiment("Emulator_hist_future", ("1961-1980", "2080-2099"), _tests([
        ("Perfect_cross_validation", ["historical"], "perfect", False),
        ("Imperfect_cross_validation", ["historical"], "imperfect", False),
        ("Perfect_interpolation", ["mid_century"], "perfect", False),
        ("Imperfect_interpolation", ["mid_century"], "imperfect", False),
        ("Perfect_interpolation_GCM_transferability", ["mid_century"], "perfect", True),
        ("Imperfect_interpolation_GCM_transferability", ["mid_century"], "imperfect", True),
    ])),
}


def get_domain(name: str) -> Domain:
    """The domain ``name``; an unknown name raises an error listing the domains."""
    if name not in DOMAINS:
        raise MLBenchError(f"unknown ML-Bench domain {name!r}; accepted: {', '.join(DOMAINS)}")
    return DOMAINS[name]


def get_experiment(name: str) -> Experiment:
    """The training experiment ``name``; an unknown name raises an error listing them."""
    if name not in EXPERIMENTS:
        raise MLBenchError(f"unknown ML-Bench experiment {name!r}; accepted: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


# -- file layout ----------------------------------------------------------------------------------

def train_files(root: Path, domain: Domain, experiment: Experiment) -> dict[str, Path]:
    """``predictors``, ``static`` and ``target`` files of a training experiment under ``root``."""
    base = Path(root) / "train" / experiment.name
    return {
        "predictors": base / "predictors" / f"{domain.gcm}_{experiment.years}.nc",
        "static": base / "predictors" / "Static_fields.nc",
        "target": base / "target" / f"pr_tasmax_{domain.gcm}_{experiment.years}.nc",
    }


def predictor_path(root: Path, period: str, mode: str, gcm: str) -> Path:
    return Path(root) / "test" / period / "predictors" / mode / f"{gcm}_{PERIODS[period]}.nc"


def truth_path(root: Path, period: str, gcm: str) -> Path:
    return Path(root) / "test" / period / "target" / f"pr_tasmax_{gcm}_{PERIODS[period]}.nc"


def all_test_inputs(domain: Domain) -> list[tuple[str, str, str]]:
    """Every (period, mode, GCM) predictor file of the test folder: a submission predicts them all."""
    return [(p, m, g) for p in PERIODS for m in MODES for g in (domain.gcm, domain.gcm_transfer)]


def submission_file(out: Path, domain: Domain, experiment: Experiment, period: str, mode: str, gcm: str) -> Path:
    """Where the submission README puts a prediction file."""
    return (Path(out) / f"{domain.name}_Domain" / experiment.name / period / mode
            / f"Predictions_pr_tasmax_{gcm}_{PERIODS[period]}.nc")


def check_predictors(ds, name: str, expected: tuple[str, ...] = PREDICTORS) -> None:
    """Refuse a predictor file that lacks a variable or a level, naming what is missing."""
    missing = [v for v in expected if v not in ds.data_vars]
    if missing:
        by_level = sorted({m.split("_")[1] for m in missing})
        raise MLBenchError(
            f"{name} lacks predictor(s) {', '.join(missing)} (level(s) {', '.join(by_level)} hPa); "
            f"the benchmark's predictors are {', '.join(expected)}")


def open_cf(path) -> "xr.Dataset":
    """Open a benchmark file with its times as cftime objects on the file's own calendar (so that
    files of every calendar compare and index alike)."""
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise MLBenchError(f"{path} does not exist; is the archive complete? (layout: see engine.mlbench.protocol)")
    return xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
