"""The embedded demo: synthetic daily 2 m temperature and precipitation over the Alps, built on
real elevation and land–sea mask, plus a "GCM-like" low-resolution companion for MOS.

What it is
----------
``demo_alps`` (high resolution): 1/12 degree, 64 x 128 cells, 43.0–48.33N, 5.0–15.67E (the Alps
with some Ligurian and Adriatic sea), daily 2001-01-01 … 2003-12-31 (1095 days), variables

- ``t2m`` [K]: a sea-level temperature with a latitude gradient and a seasonal cycle that is larger
  over land than over the sea (land–sea contrast), minus a seasonally varying lapse rate times the
  real elevation (~5.0 K/km in winter, ~6.6 K/km in summer), plus weather: a domain-wide AR(1)
  anomaly and a spatially coherent (~50–100 km) anomaly field that persists from day to day (AR(1))
  while being advected by a daily steering wind; anomalies are damped over the sea.
- ``pr`` [mm/day]: a latent moisture field built the same way (advected AR(1)) plus a domain-wide
  wetness; it rains where the latent field exceeds a threshold (about half the days are dry at a
  point), with intensity enhanced by elevation and by upslope flow (steering wind · terrain
  gradient), so windward slopes get more rain than lee sides; always >= 0.

``demo_alps_gcm`` (low resolution, for MOS): the same weather on a 0.3 degree grid (a non-integer
3.6 times coarser, 20 x 38 cells on a larger box, about 42.6–48.6N, 4.6–16.0E), conservatively averaged from the same
realisation, with a smooth spatial and seasonal warm bias (~1–2 K), a wet bias with drizzle, and extra
spatially smooth noise that the high-resolution truth does not share. It also carries the daily
steering wind ``uas``, ``vas`` [m/s] as predictors.

What a model can learn from it
------------------------------
- the lapse-rate signal (temperature below the coarse mean on peaks, above it in valleys), which
  needs the elevation static field; its season-dependence needs the date or the coarse field;
- land–sea contrast along the coasts (needs the land mask);
- orographic precipitation: where rain falls inside a coarse cell depends on terrain and on the wind
  direction (with MOS the wind is a predictor; with PerfectProg it is only implicit in the pattern);
- with MOS, the GCM's smooth bias (a learnable correction) but not its extra noise.

What it cannot learn
--------------------
Real meteorology. The physics here are a handful of statistical rules: no fronts, no convection,
no snow, no cold-air pools, no diurnal cycle, no trend; sub-grid weather below ~50 km is not
predictable from the coarse field except through the static fields. Skill on the demo says the
pipeline works, not that a model is good on real data. Use ERA5 (``era5_uk_t2m``) or your own data
for that.

Generation takes a few seconds (vectorised numpy, FFT-filtered noise) and is deterministic for a
given seed; files are cached in the finescale cache folder (``$FINESCALE_DATA`` or
``~/.cache/finescale``) as compressed CF NetCDF.

Example
-------
>>> hr, gcm = make_demo(n_lat=16, n_lon=32, start="2001-01-01", end="2001-02-28", seed=1)
>>> hr.t2m.dims
('time', 'lat', 'lon')
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import xarray as xr

from engine.data.errors import DataError
from engine.data.paths import atomic_path, cache_dir
from engine.data.regrid import conservative
from engine.data.static import static_fields

#: Bump when the generator's output changes, so caches are not reused.
VERSION = 2

#: The demo box: south-west corner, resolution and size of the high-resolution grid.
HR_LAT0, HR_LON0, HR_RES, HR_SHAPE = 43.0, 5.0, 1.0 / 12.0, (64, 128)
GCM_RES = 0.3
PERIOD = ("2001-01-01", "2003-12-31")

_T_ATTRS = {"units": "K", "standard_name": "air_temperature", "long_name": "2 m air temperature (daily mean)"}
_PR_ATTRS = {
    "units": "mm/day",
    "standard_name": "lwe_precipitation_rate",
    "long_name": "precipitation (daily total)",
}
_U_ATTRS = {"units": "m s-1", "standard_name": "eastward_wind", "long_name": "steering-level eastward wind"}
_V_ATTRS = {"units": "m s-1", "standard_name": "northward_wind", "long_name": "steering-level northward wind"}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian noise (T, H, W), smoothed in space with a Gaussian of ``sigma``
    cells through the FFT (periodic, so that advection by rolling has no edges)."""
    from scipy import fft  # scipy keeps float32 (numpy's FFT would double the memory)

    T, H, W = shape
    white = rng.standard_normal(shape, dtype=np.float32)
    ky = np.fft.fftfreq(H)[:, None]
    kx = np.fft.rfftfreq(W)[None, :]
    gain = np.exp(-2.0 * (np.pi * sigma) ** 2 * (ky**2 + kx**2)).astype(np.float32)
    spec = fft.rfft2(white)
    spec *= gain
    out = fft.irfft2(spec, s=(H, W)).astype(np.float32, copy=False)
    # variance of filtered white noise = mean of gain^2 over the full frequency plane
    full = np.exp(-2.0 * (np.pi * sigma) ** 2 * (np.fft.fftfreq(H)[:, None] ** 2 + np.fft.fftfreq(W)[None, :] ** 2))
    out *= np.float32(1.0 / np.sqrt(np.mean(full**2)))
    return out


def _advected_ar1(noise: np.ndarray, rho: float, shift_y: np.ndarray, shift_x: np.ndarray) -> np.ndarray:
    """a[t] = rho * roll(a[t-1], shift[t]) + sqrt(1 - rho^2) * noise[t]: anomalies that persist and
    move with the daily wind (integer cells per day)."""
    out = np.empty_like(noise)
    out[0] = noise[0]
    innov = np.float32(np.sqrt(1.0 - rho**2))
    for t in range(1, noise.shape[0]):
        out[t] = rho * np.roll(out[t - 1], (int(shift_y[t]), int(shift_x[t])), axis=(0, 1)) + innov * noise[t]
    return out


def _ar1_series(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    e = rng.standard_normal(n)
    out = np.empty(n)
    out[0] = e[0]
    for t in range(1, n):
        out[t] = rho * out[t - 1] + np.sqrt(1 - rho**2) * e[t]
    return out


def _coords(lat0: float, n: int, res: float) -> np.ndarray:
    return lat0 + (np.arange(n) + 0.5) * res


def make_demo(
    n_lat: int = HR_SHAPE[0],
    n_lon: int = HR_SHAPE[1],
    start: str = PERIOD[0],
    end: str = PERIOD[1],
    seed: int = 0,
    lat0: float = HR_LAT0,
    lon0: float = HR_LON0,
    res: float = HR_RES,
    gcm_res: float = GCM_RES,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Generate the demo pair in memory.

    Parameters
    ----------
    n_lat, n_lon : size of the high-resolution grid (cells of ``res`` degrees from ``lat0``, ``lon0``).
    start, end : inclusive daily period.
    seed : random seed; the same arguments give the same data.
    gcm_res : resolution of the low-resolution "GCM" grid in degrees.

    Returns
    -------
    (hr, gcm) : xr.Dataset, xr.Dataset
        ``hr`` with ``t2m`` [K] and ``pr`` [mm/day] of shape (time, n_lat, n_lon); ``gcm`` with
        ``t2m``, ``pr``, ``uas``, ``vas`` on a ``gcm_res`` grid covering the high-resolution box
        plus about one GCM cell on each side.
    """
    times = pd.date_range(start, end, freq="D")
    if times.size < 2:
        raise DataError(f"the demo needs at least 2 days, got {start!r}..{end!r}")
    rng = np.random.default_rng(seed)
    T = times.size
    # The "world": the HR box plus a margin that covers the GCM grid, at HR resolution.
    margin = int(np.ceil(1.2 * gcm_res / res))
    wlat = _coords(lat0 - margin * res, n_lat + 2 * margin, res)
    wlon = _coords(lon0 - margin * res, n_lon + 2 * margin, res)
    st = static_fields(wlat, wlon, ("elevation", "land_mask"))
    z = st.elevation.values.astype(np.float32) / 1000.0  # km
    land = st.land_mask.values.astype(np.float32)
    H, W = z.shape

    doy = times.day_of_year.values.astype(np.float32)
    season = np.cos(2 * np.pi * (doy - 200.0) / 365.25).astype(np.float32)  # +1 mid July, -1 mid January
    s3 = season[:, None, None]

    # Daily steering wind [m/s]: mostly westerly, AR(1) in time; moves anomalies ~0.5 cell per m/s/day.
    u = (6.0 + 5.0 * _ar1_series(rng, T, 0.7)).astype(np.float32)
    v = (0.5 + 4.0 * _ar1_series(rng, T, 0.7)).astype(np.float32)
    shift_x = np.rint(0.5 * u).astype(int)
    shift_y = np.rint(0.5 * v).astype(int)

    # Coherent anomalies on a periodic padded domain (cropped afterwards, so no wrap shows).
    pad = 48
    shape = (T, H + 2 * pad, W + 2 * pad)
    crop = (slice(None), slice(pad, pad + H), slice(pad, pad + W))
    temp_anom = _advected_ar1(_smooth_noise(rng, shape, 8.0), 0.75, shift_y, shift_x)[crop]
    moist = _advected_ar1(_smooth_noise(rng, shape, 5.0), 0.6, shift_y, shift_x)[crop]
    large_t = _ar1_series(rng, T, 0.85).astype(np.float32)[:, None, None]
    wetness = _ar1_series(rng, T, 0.6).astype(np.float32)[:, None, None]

    # Temperature: sea-level climate (land-sea contrast in mean and amplitude), lapse rate, weather.
    lat2 = (wlat[:, None] - 45.5).astype(np.float32)
    t_sea_level = 283.0 - 0.6 * lat2 + 1.5 * (1 - land) + (6.0 + 4.0 * land) * s3
    lapse = (5.8 + 0.8 * s3) * z  # K (z in km)
    damp = 0.5 + 0.5 * land
    t2m = t_sea_level - lapse + damp * (3.0 * large_t + 1.8 * temp_anom)
    t2m = t2m + 0.2 * rng.standard_normal(t2m.shape, dtype=np.float32)

    # Precipitation: threshold a latent moisture field; orographic and upslope enhancement.
    zs = xr.DataArray(z, dims=("y", "x")).rolling(y=5, x=5, center=True, min_periods=1).mean().values
    gy, gx = np.gradient(zs)  # km per cell
    speed = np.sqrt(u**2 + v**2) + 1e-6
    upslope = (u / speed)[:, None, None] * gx + (v / speed)[:, None, None] * gy
    upslope = np.clip(upslope / 0.05, -1.0, 3.0)  # 50 m per cell ~ a steep slope
    latent = 0.8 * moist + 0.6 * wetness + 0.5 * upslope + 0.25 * z - 0.15 * s3
    excess = np.clip(latent - 0.35, 0.0, None)
    intensity = (3.0 + 1.5 * s3 + 3.0) * (1.0 + 0.5 * z) * excess**1.5
    grain = np.exp(0.3 * _smooth_noise(rng, (T, H, W), 2.0) - 0.045)
    pr = (intensity * grain).astype(np.float32)
    pr[pr < 0.1] = 0.0  # below a gauge's resolution: a dry day

    world = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), t2m.astype(np.float32), _T_ATTRS),
            "pr": (("time", "lat", "lon"), pr, _PR_ATTRS),
        },
        coords={"time": times, "lat": wlat, "lon": wlon},
    )
    hr = world.isel(lat=slice(margin, margin + n_lat), lon=slice(margin, margin + n_lon))
    hr = _finish(hr, "finescale demo_alps: synthetic high-resolution truth", seed)

    # GCM-like side: a grid that covers the HR box with ~1 cell to spare, not aligned with it.
    def gcm_axis(fine: np.ndarray) -> np.ndarray:
        lo, hi = fine[0] - res / 2, fine[-1] + res / 2  # the world's outer edges
        start = lo + 0.1 * gcm_res  # offset, so GCM and HR cell edges do not line up
        n = int(np.floor((hi - start) / gcm_res + 1e-9))  # whole GCM cells inside the world
        return start + (np.arange(n) + 0.5) * gcm_res

    glat, glon = gcm_axis(wlat), gcm_axis(wlon)
    g_t = conservative(world.t2m, glat, glon)
    g_pr = conservative(world.pr, glat, glon)
    gs = (len(glat), len(glon))
    yy, xx = np.meshgrid(np.linspace(0, 1, gs[0]), np.linspace(0, 1, gs[1]), indexing="ij")
    bias_map = (1.2 + 0.6 * np.sin(2.5 * xx + 1.0) * np.cos(2.0 * yy)).astype(np.float32)
    noise_t = _smooth_noise(rng, (T,) + gs, 1.5)
    g_t = g_t + bias_map + 0.4 * s3 + 0.8 * noise_t
    noise_p = _smooth_noise(rng, (T,) + gs, 1.5)
    g_pr = np.clip(1.2 * g_pr * np.exp(0.25 * noise_p) + 0.3, 0.0, None)  # wet bias + drizzle
    g_u = (u[:, None, None] + 0.8 * _smooth_noise(rng, (T,) + gs, 2.0)).astype(np.float32)
    g_v = (v[:, None, None] + 0.8 * _smooth_noise(rng, (T,) + gs, 2.0)).astype(np.float32)
    gcm = xr.Dataset(
        {
            "t2m": g_t.astype(np.float32).assign_attrs(_T_ATTRS),
            "pr": g_pr.astype(np.float32).assign_attrs(_PR_ATTRS),
            "uas": (("time", "lat", "lon"), g_u, _U_ATTRS),
            "vas": (("time", "lat", "lon"), g_v, _V_ATTRS),
        },
        coords={"time": times, "lat": glat, "lon": glon},
    )
    gcm = _finish(gcm, "finescale demo_alps_gcm: synthetic GCM-like low-resolution side (biased, noisy)", seed)
    return hr, gcm


def _finish(ds: xr.Dataset, title: str, seed: int) -> xr.Dataset:
    ds = ds.copy()
    ds.lat.attrs.update(units="degrees_north", standard_name="latitude", long_name="latitude", axis="Y")
    ds.lon.attrs.update(units="degrees_east", standard_name="longitude", long_name="longitude", axis="X")
    ds.time.attrs.update(standard_name="time", axis="T")
    ds.attrs.update(
        Conventions="CF-1.8",
        title=title,
        source=f"engine.data.demo v{VERSION}, seed {seed}; static fields from pvlib and global-land-mask",
        comment="Synthetic data for testing and teaching; see engine.data.demo for what it can and cannot teach.",
    )
    return ds


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` as compressed CF NetCDF-4, atomically."""
    encoding = {name: {"zlib": True, "complevel": 4, "dtype": "float32"} for name in ds.data_vars}
    if "time" in ds.coords:
        encoding["time"] = {"units": "days since 2000-01-01", "calendar": "proleptic_gregorian", "dtype": "float64"}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    return Path(path)


def _paths(seed: int) -> dict[str, Path]:
    folder = cache_dir("demo")
    return {name: folder / f"{name}-v{VERSION}-seed{seed}.nc" for name in ("demo_alps", "demo_alps_gcm")}


def ensure_demo(name: str = "demo_alps", seed: int = 0) -> Path:
    """The cached file of demo ``name`` (``demo_alps`` or ``demo_alps_gcm``), generated on first use."""
    paths = _paths(seed)
    if name not in paths:
        raise DataError(f"unknown demo dataset {name!r}; accepted: {', '.join(paths)}")
    if not paths[name].exists():
        hr, gcm = make_demo(seed=seed)
        write_netcdf(hr, paths["demo_alps"])
        write_netcdf(gcm, paths["demo_alps_gcm"])
    return paths[name]


def _demo_alps(seed: int = 0) -> Path:
    return ensure_demo("demo_alps", seed=seed)


def _demo_alps_gcm(seed: int = 0) -> Path:
    return ensure_demo("demo_alps_gcm", seed=seed)


#: Pressure levels [hPa] of the demo's large-scale predictors and their standard-atmosphere heights [m].
LEVELS = {850: 1457.0, 700: 3012.0, 500: 5574.0}


def make_levels(gcm: xr.Dataset, seed: int = 0, res: float = 1.0) -> xr.Dataset:
    """Large-scale predictors on their own ``res``-degree grid, as a reanalysis provides them: air
    temperature ``ta`` [K] at :data:`LEVELS` (``plev`` in Pa, as CMIP stores it), from the GCM-like
    side's 2 m temperature with the standard lapse rate (6.5 K/km) and smooth level-dependent noise.
    The grid's outer edges enclose the GCM-like grid's, so it covers any domain that grid covers."""
    from engine.data.regrid import bilinear, cell_edges

    ey, ex = cell_edges(gcm.lat.values), cell_edges(gcm.lon.values)
    lat = np.arange(np.floor(ey[0] / res) * res + res / 2, ey[-1] + res / 2, res)
    lon = np.arange(np.floor(ex[0] / res) * res + res / 2, ex[-1] + res / 2, res)
    t2m = bilinear(gcm.t2m.astype(np.float64), lat, lon).values  # edge values beyond the GCM's centres
    rng = np.random.default_rng(seed + 1000)
    T = t2m.shape[0]
    levels = []
    for i, (p, z) in enumerate(LEVELS.items()):
        noise = _ar1_series(rng, T, 0.8)[:, None, None] * (0.5 + 0.5 * i)
        levels.append(t2m - 6.5e-3 * z + noise)
    ta = np.stack(levels, axis=1).astype(np.float32)
    ds = xr.Dataset(
        {"ta": (("time", "plev", "lat", "lon"), ta,
                {"units": "K", "standard_name": "air_temperature", "long_name": "air temperature on pressure levels"})},
        coords={"time": gcm.time.values, "lat": lat, "lon": lon,
                "plev": ("plev", np.array([100.0 * p for p in LEVELS]),
                         {"units": "Pa", "standard_name": "air_pressure", "axis": "Z", "positive": "down"})},
    )
    return _finish(ds, "finescale demo: large-scale predictors on pressure levels (1 degree)", seed)


def _demo_alps_levels(seed: int = 0) -> Path:
    path = cache_dir("demo") / f"demo_alps_levels-v{VERSION}-seed{seed}.nc"
    if not path.exists():
        with xr.open_dataset(ensure_demo("demo_alps_gcm", seed=seed)) as gcm:
            ds = make_levels(gcm.load(), seed=seed)
        write_netcdf(ds, path)
    return path


#: Generators a catalogue entry may name in its ``metadata.generator``: name -> function(**args) -> path.
#: Only these run; a catalogue can never make finescale import arbitrary code.
GENERATORS: dict[str, Callable[..., Path]] = {"demo_alps": _demo_alps, "demo_alps_gcm": _demo_alps_gcm,
                                              "demo_alps_levels": _demo_alps_levels}
