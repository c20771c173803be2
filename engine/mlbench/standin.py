"""A stand-in for the CORDEX ML-Bench archive: the real layout, names and grids, synthetic weather.

The real archives (~5 GB per domain on Zenodo) cannot be reached offline, so this writes files
with exactly the archive's layout (:mod:`engine.mlbench.protocol`), file and variable names, dims,
attributes and calendars, on the real target grids (the benchmark's templates: ALPS 128 x 128 on
the Aladin63 Lambert grid with 2-D lat/lon, NZ regular 0.11 degree; SA regular 0.1 degree from its
template's coordinates, which are an exact arithmetic sequence), with *real orography*
(pvlib's global elevation sampled at every target cell, :func:`engine.data.static.static_on`).
Periods keep their real names (``CNRM-CM5_1961-1980.nc``) but hold only the first
``train_years`` (training) or last ``test_years`` (test) years of each period, and optionally
only the first ``days_per_year`` days of each year, so that the protocol runs in minutes.

What a model can learn from it
------------------------------
Each GCM's weather is four AR(1) modes (lag-1 correlation 0.8) with smooth spatial patterns of
1500-3000 km wavelength, a seasonal cycle and a climate-change warming dT(year) (0 K up to 1970,
+1 K in 2000, +2.5 K in 2050, +4.5 K in 2090; the transferability GCM warms 20 % more). The
predictors (z, u, v, t, q at 850/700/500 hPa on the 16 x 16 grid) are smooth functions of that
state: t follows the modes, season and dT; z the thickness; q grows 7 %/K with t (Clausius-
Clapeyron) and, at 700 and 500 hPa, with the large-scale ascent of mode 1 (ascending air
moistens the mid-troposphere, :data:`ASCENT_MOISTENING`); u, v the mode gradients. *Imperfect*
predictors (the driving GCM) add a smooth bias (+1 K, 10 % moister, 10 % weaker wind) and small
daily noise to the *perfect* ones.
The targets, on the 128 x 128 grid, are functions of the same large-scale state *at each cell's
true position* plus the orography:

- ``tasmax`` = t850 + 2 K + a lapse rate from 1500 m to the cell's elevation that varies with
  season and weather (6.5 K/km +- 25 % +- 30 % x mode 3: inversions) + a foehn term (wind x
  orographic slope) + a snow-albedo term that switches on with warmth at high elevation
  (a sigmoid of t850, hence *nonlinear in the warming*: a model that saw only 1961-1980 must
  extrapolate it; the emulator experiment sees it in its 2080-2099 years) + 0.5 K unpredictable
  small-scale noise;
- ``pr`` (mm/day) = q850-scaled intensity of large-scale ascent (a mode that each cell's mid-level
  humidity shows, so a convolution network can read it locally) plus orographic uplift
  (wind . slope), plus a convective term that sets in on hot, moist days (3 mm/day x q850 / 6 g/kg
  x a sigmoid of t850 centred on 292 K: convection grows with instability, which a warmer,
  moister lower troposphere supplies), zero below a threshold (dry days), with 30 % multiplicative
  noise. The convective term is the precipitation counterpart of the snow-albedo term: it acts on
  about 2 % of the cell-days of 1961-1980 and 14 % of 2080-2099, so a model trained on the
  historical period sees only its onset and must extrapolate, while the emulator experiment sees it.

So a perfect downscaling model is a smooth function of the predictors and the orography; the
interpolation baseline misses the lapse rate, foehn and orographic precipitation; a linear model
misses the thresholds, the snow-albedo feedback and the convective onset.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import xarray as xr

from engine.files import atomic_path
from engine.mlbench.download import template_path
from engine.mlbench.protocol import (
    EXPERIMENTS, LEVELS, PERIODS, PREDICTOR_VARIABLES, Domain, MLBenchError, get_domain, predictor_path,
    truth_path, train_files,
)

# SA: its template's grid (format_predictions/templates/*_SA.nc): 0.1 degree, float32 centres
SA_GRID = {"lat": (-34.7, 0.1, 128), "lon": (20.5, 0.1, 128)}
TEMPLATE_ATTRS = {  # variable attributes of the SA templates (used when the SA file is absent)
    "tasmax": {"standard_name": "air_temperature", "long_name": "Daily Maximum Near-Surface Air Temperature",
               "units": "K", "cell_methods": "time: maximum (interval: 1 day time: mean"},
    "pr": {"units": "mm/day"},
}
PREDICTOR_ATTRS = {
    "z": {"standard_name": "geopotential_height", "long_name": "Geopotential height", "units": "m"},
    "u": {"standard_name": "eastward_wind", "long_name": "Eastward wind", "units": "m s-1"},
    "v": {"standard_name": "northward_wind", "long_name": "Northward wind", "units": "m s-1"},
    "t": {"standard_name": "air_temperature", "long_name": "Air temperature", "units": "K"},
    "q": {"standard_name": "specific_humidity", "long_name": "Specific humidity", "units": "kg kg-1"},
}
WARMING = ([1900, 1970, 2000, 2050, 2090, 2100], [0.0, 0.0, 1.0, 2.5, 4.5, 5.0])
# the convective precipitation term (see the module docstring): its rate per unit of q850 / 6 g/kg
# and the 850 hPa temperature at which it is half on
CONVECTIVE_MM_DAY, CONVECTIVE_ONSET_K = 3.0, 292.0
# the mid-level moistening by ascent: q at 500 hPa is exp(0.3) = 1.35 times moister per unit of
# ascent (about one standard deviation of the mode), 700 hPa 0.43 times as much, 850 hPa unchanged
ASCENT_MOISTENING = 0.3
# bumped whenever the generator's weather changes, so that a cached stand-in is written again
STANDIN_VERSION = 3


def target_template(domain: Domain) -> xr.Dataset:
    """An empty target-grid Dataset (no time) with the template's coordinates and variable attributes."""
    if domain.name == "SA":
        try:
            return _from_templates(domain)
        except MLBenchError:
            pass  # offline without the SA templates: the grid from its documented coordinates
        lat = np.float32(np.round(SA_GRID["lat"][0] + SA_GRID["lat"][1] * np.arange(SA_GRID["lat"][2]), 1))
        lon = np.float32(np.round(SA_GRID["lon"][0] + SA_GRID["lon"][1] * np.arange(SA_GRID["lon"][2]), 1))
        ds = xr.Dataset(coords={
            "lat": ("lat", lat, {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north", "axis": "Y"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east", "axis": "X"}),
        })
        ds.attrs["finescale_template"] = "SA grid from the template's coordinates (file not available)"
        ds.attrs["variable_attrs"] = repr(TEMPLATE_ATTRS)
        return ds
    return _from_templates(domain)


def _from_templates(domain: Domain) -> xr.Dataset:
    out = None
    attrs = {}
    for var in ("tasmax", "pr"):
        with xr.open_dataset(template_path(var, domain.name, download=domain.name == "SA")) as t:
            t = t.load()
        attrs[var] = dict(t[var].attrs)
        if out is None:
            out = t.drop_vars([v for v in t.data_vars]).isel(time=0, drop=True)
    out.attrs["variable_attrs"] = repr(attrs)
    return out


def variable_attrs(template: xr.Dataset) -> dict:
    import ast

    return ast.literal_eval(template.attrs["variable_attrs"])


def _latlon(template: xr.Dataset, domain: Domain) -> tuple[np.ndarray, np.ndarray]:
    if domain.spatial_dims == ("y", "x"):
        return template["lat"].values.astype(float), template["lon"].values.astype(float)
    return np.meshgrid(template["lat"].values.astype(float), template["lon"].values.astype(float), indexing="ij")


def predictor_grid(template: xr.Dataset, domain: Domain) -> tuple[np.ndarray, np.ndarray]:
    """The 16 x 16, 2-degree predictor grid centred on the target domain (1-D lat, lon ascending)."""
    lat2, lon2 = _latlon(template, domain)
    clat, clon = np.round(lat2.mean()), np.round(lon2.mean())
    offs = 2.0 * (np.arange(16) - 7.5)
    return np.round(clat + offs, 1), np.round(clon + offs, 1)


# -- the synthetic climate -----------------------------------------------------------------------

def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def _times(years: list[int], calendar: str, days_per_year: int | None) -> xr.CFTimeIndex:
    out = []
    for y in years:
        t = xr.date_range(f"{y}-01-01 12:00", f"{y}-12-31 12:00", freq="D", calendar=calendar, use_cftime=True)
        out.extend(list(t[:days_per_year] if days_per_year else t))
    return xr.CFTimeIndex(out)


def _modes(gcm: str, times: xr.CFTimeIndex, seed: int) -> np.ndarray:
    """(time, 4) AR(1) modes; each year's weather is drawn from its own seed, so that a day has the
    same weather in every file that holds it (training and test files of one GCM agree)."""
    years = np.array([t.year for t in times])
    out = np.zeros((len(times), 4))
    for y in np.unique(years):
        idx = np.flatnonzero(years == y)
        rng = np.random.default_rng(_seed("modes", gcm, y, seed))
        e = rng.standard_normal((idx.size, 4))
        a = np.zeros_like(e)
        a[0] = e[0]
        for i in range(1, idx.size):
            a[i] = 0.8 * a[i - 1] + 0.6 * e[i]
        out[idx] = a
    return out


def _state(lat, lon, times, modes, domain: Domain, gcm: str, centre: tuple[float, float]):
    """Large-scale fields (time, *grid) at positions lat, lon (any shape): t850, u850, v850, q850,
    ascent; ``centre`` (lat, lon) of the domain anchors the patterns for every grid alike."""
    clat, clon = centre
    la, lo = np.deg2rad(lat - clat), np.deg2rad(lon - clon)
    patterns = np.stack([
        np.cos(2.1 * la + 1.3 * lo), np.sin(1.7 * lo - 0.9 * la + 0.5),
        np.cos(2.8 * la - 2.2 * lo + 1.0), np.sin(3.1 * la + 0.4),
    ])  # (4, *grid), wavelengths ~1500-3000 km
    doy = np.array([t.dayofyr for t in times], float)
    hemisphere = 1.0 if domain.name == "ALPS" else -1.0
    season = -hemisphere * np.cos(2 * np.pi * (doy - 15) / 365.25)
    years = np.array([t.year + (t.dayofyr - 1) / 365.25 for t in times])
    dt = np.interp(years, *WARMING) * (1.2 if gcm == domain.gcm_transfer else 1.0)
    w = np.einsum("tk,k...->t...", modes, patterns)
    ex = (slice(None),) + (None,) * np.ndim(lat)
    base = 279.0 - 0.5 * (np.abs(lat) - abs(clat))
    t850 = base + 7.0 * season[ex] + dt[ex] + 3.0 * w
    u850 = 8.0 + 6.0 * np.einsum("t,...->t...", modes[:, 1], np.cos(1.7 * lo - 0.9 * la + 0.5)) + 2.0 * season[ex]
    v850 = 6.0 * np.einsum("t,...->t...", modes[:, 2], np.sin(2.8 * la - 2.2 * lo + 1.0))
    q850 = 0.006 * np.exp(0.07 * (t850 - 279.0)) * (1 + 0.15 * np.einsum("t,...->t...", modes[:, 3], patterns[3]))
    ascent = np.einsum("t,...->t...", -modes[:, 0], patterns[0])
    return {"t850": t850, "u850": u850, "v850": v850, "q850": q850, "ascent": ascent, "dt": dt}


def _predictors(lat1, lon1, times, modes, domain, gcm, imperfect: bool, seed: int, levels, centre) -> xr.Dataset:
    lat, lon = np.meshgrid(lat1, lon1, indexing="ij")
    s = _state(lat, lon, times, modes, domain, gcm, centre)
    t850, u, v, q = s["t850"], s["u850"], s["v850"], s["q850"]
    # ascending air carries moisture up: the mid-troposphere is moister where the large-scale flow
    # ascends (the reason mid-level humidity is a precipitation predictor), so each cell's ascent
    # shows in its own column, as in the atmosphere, and not only through the domain-wide mode
    lift = s["ascent"]
    if imperfect:  # the driving GCM: a smooth bias and its own small-scale noise
        rng = np.random.default_rng(_seed("gcm-noise", gcm, times[0].year, seed))
        bias = 1.0 + 0.5 * np.cos(np.deg2rad(lat - lat.mean()) * 3)
        t850 = t850 + bias + 0.4 * rng.standard_normal(t850.shape)
        q, u, v = q * 1.1, u * 0.9, v * 0.9
    fields = {}
    for lev in levels:
        k = (850 - lev) / 350.0  # 0 at 850 hPa, 1 at 500 hPa
        t = t850 - 25.0 * k
        fields[f"z_{lev}"] = 1500.0 + 4100.0 * k * (1 + 0.1 * k) + 20.0 * (t850 - 279.0) * (1 + 2 * k)
        fields[f"u_{lev}"] = u * (1 + 1.2 * k)
        fields[f"v_{lev}"] = v * (1 + 0.8 * k)
        fields[f"t_{lev}"] = t
        fields[f"q_{lev}"] = q * np.exp(-2.2 * k + ASCENT_MOISTENING * k * lift)
    order = [f"{p}_{lev}" for p in PREDICTOR_VARIABLES for lev in levels]
    data = {n: (("time", "lat", "lon"), fields[n].astype(np.float32), dict(PREDICTOR_ATTRS[n.split("_")[0]],
                                                                          level=f"{n.split('_')[1]} hPa"))
            for n in order}
    coords = {"time": ("time", times), "lat": ("lat", lat1, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
              "lon": ("lon", lon1, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"})}
    return xr.Dataset(data, coords=coords)


def _slopes(orog: np.ndarray, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = np.gradient(orog.astype(float), spacing_m)
    return dx, dy


def _targets(template, domain, gcm, times, modes, orog, seed) -> xr.Dataset:
    lat, lon = _latlon(template, domain)
    s = _state(lat, lon, times, modes, domain, gcm, (float(lat.mean()), float(lon.mean())))
    dx, dy = _slopes(orog, 11_000.0)
    rng = np.random.default_rng(_seed("rcm-noise", domain.name, gcm, times[0].year, len(times), seed))
    t850, u, v = s["t850"], s["u850"], s["v850"]
    # the lapse rate varies with the weather (mode 3, seen by the predictors) and the season:
    # stable, inversion-prone winters; a fixed per-cell offset cannot follow it
    hemisphere = 1.0 if domain.name == "ALPS" else -1.0
    doy = np.array([t.dayofyr for t in times], float)
    season = -hemisphere * np.cos(2 * np.pi * (doy - 15) / 365.25)
    ex = (slice(None), None, None)
    rate = 6.5e-3 * (1.0 + 0.25 * season[ex] + 0.3 * modes[:, 2][ex])
    lapse = rate * (1500.0 - orog)
    upslope = u * dx + v * dy  # m/s x m/m: ~0.5 on an Alpine slope in a 10 m/s wind
    foehn = 3.0 * upslope
    snow = 3.0 / (1 + np.exp(-(t850 - 286.0) / 1.5)) * np.clip(orog / 2000.0, 0, 1.5)
    tasmax = t850 + 2.0 + lapse + foehn + snow + 0.5 * rng.standard_normal(t850.shape)
    drive = 1.0 * s["ascent"] + 2.0 * np.clip(upslope, 0, None) + 0.4 * rng.standard_normal(t850.shape) - 0.5
    moisture = s["q850"] / 0.006
    convective = CONVECTIVE_MM_DAY * moisture / (1 + np.exp(-(t850 - CONVECTIVE_ONSET_K)))
    pr = (4.0 * moisture * np.clip(drive, 0, None) ** 1.3 + convective) * np.exp(0.3 * rng.standard_normal(t850.shape))
    pr = np.where(pr < 0.3, 0.0, pr)
    attrs = variable_attrs(template)
    dims = ("time",) + domain.spatial_dims
    pr_attrs = dict(attrs["pr"]) or {}
    pr_attrs.setdefault("units", "mm/day")  # the ALPS template's pr has no attributes; indices need units
    ds = xr.Dataset({"pr": (dims, pr.astype(np.float32), pr_attrs),
                     "tasmax": (dims, tasmax.astype(np.float32), dict(attrs["tasmax"]))},
                    coords={"time": ("time", times)})
    return ds.assign_coords({k: v for k, v in template.coords.items()})


def _write(ds: xr.Dataset, path: Path, calendar: str, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    ds.attrs.update(Conventions="CF-1.8", title=title,
                    source="finescale ML-Bench stand-in (engine.mlbench.standin): synthetic, not RCM output")
    enc = {}
    if "time" in ds.variables:
        enc["time"] = {"units": "days since 1949-12-01 00:00:00", "calendar": calendar, "dtype": "float64"}
    for v in ds.data_vars:
        if "grid_mapping" in ds[v].attrs:  # named in the template, the variable absent (as in the real files)
            enc[v] = {"grid_mapping": ds[v].attrs.pop("grid_mapping")}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, encoding=enc)


def _years(period: str, n: int, last: bool) -> list[int]:
    a, b = (int(x) for x in period.split("-"))
    years = list(range(a, b + 1))
    return years[-n:] if last else years[:n]


def generate_standin(domain: str, root: str | Path, train_years: int = 3, test_years: int = 2,
                     days_per_year: int | None = None, seed: int = 0, levels=LEVELS) -> Path:
    """Write the stand-in archive of ``domain`` under ``root`` (the ``<domain>_domain`` folder).

    Parameters
    ----------
    domain : ALPS, NZ or SA
    root : folder to write; ``<root>/<domain>_domain/{train,test}/...`` as in the real archive
    train_years, test_years : years kept of each training period / test period (first / last ones)
    days_per_year : keep only the first days of each year (tests); None = whole years
    levels : pressure levels of the predictors (the archive's 850, 700, 500)

    Returns
    -------
    The ``<domain>_domain`` folder.
    """
    dom = get_domain(domain)
    out = Path(root) / f"{dom.name}_domain"
    template = target_template(dom)
    lat1, lon1 = predictor_grid(template, dom)
    lat2, lon2 = _latlon(template, dom)
    centre = (float(lat2.mean()), float(lon2.mean()))
    from engine.data.static import static_on

    orog = static_on(template, ["elevation"])["elevation"].values.astype(float)
    static_ds = xr.Dataset({"orog": (dom.spatial_dims, orog.astype(np.float32),
                                     {"standard_name": "surface_altitude", "long_name": "Surface Altitude", "units": "m"})},
                           coords=template.coords)

    def period_data(gcm, years):
        times = _times(years, dom.calendars[gcm], days_per_year)
        return times, _modes(gcm, times, seed)

    for exp in EXPERIMENTS.values():
        years = [y for p in exp.train_periods for y in _years(p, train_years, last=False)]
        times, modes = period_data(dom.gcm, years)
        files = train_files(out, dom, exp)
        cal = dom.calendars[dom.gcm]
        _write(_predictors(lat1, lon1, times, modes, dom, dom.gcm, False, seed, levels, centre), files["predictors"], cal,
               f"{dom.name} {exp.name} perfect predictors ({dom.rcm} upscaled, driven by {dom.gcm})")
        _write(_targets(template, dom, dom.gcm, times, modes, orog, seed), files["target"], cal,
               f"{dom.name} {exp.name} target ({dom.rcm} driven by {dom.gcm})")
        _write(static_ds, files["static"], cal, f"{dom.name} static fields (pvlib elevation at the target cells)")
    for period, span in PERIODS.items():
        for gcm in (dom.gcm, dom.gcm_transfer):
            times, modes = period_data(gcm, _years(span, test_years, last=True))
            cal = dom.calendars[gcm]
            for mode in ("perfect", "imperfect"):
                _write(_predictors(lat1, lon1, times, modes, dom, gcm, mode == "imperfect", seed, levels, centre),
                       predictor_path(out, period, mode, gcm), cal, f"{dom.name} {period} {mode} predictors ({gcm})")
            _write(_targets(template, dom, gcm, times, modes, orog, seed), truth_path(out, period, gcm), cal,
                   f"{dom.name} {period} target ({dom.rcm} driven by {gcm}; held out in the real benchmark)")
    return out
