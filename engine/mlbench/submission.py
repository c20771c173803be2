"""Prediction files in the benchmark's submission format, and the check against its templates.

The submission README (WCRP-CORDEX/ml-benchmark ``submission/README.md``) asks for one NetCDF per
test predictor file, ``<submission>/<domain>_Domain/<experiment>/<period>/<mode>/
Predictions_pr_tasmax_<GCM>_<years>.nc``, holding both ``pr`` and ``tasmax`` on the template's grid:
the template's spatial dims and coordinates (ALPS: ``y``, ``x`` in km and 2-D ``lat``, ``lon``; NZ,
SA: ``lat``, ``lon``), its variable attributes, the predictors' time axis, and for a generative
model a ``member`` dimension of size 10.

Example
-------
>>> write_prediction({"tasmax": tx, "pr": pr}, times, "ALPS", path)        # doctest: +SKIP
>>> check_prediction_file(path, "ALPS")                                    # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from engine.files import atomic_path
from engine.mlbench.protocol import VARIABLES, MLBenchError, get_domain, open_cf
from engine.mlbench.standin import target_template, variable_attrs

ENSEMBLE_MEMBERS = 10  # required of generative models


def write_prediction(arrays: dict[str, np.ndarray], times, domain: str, path: str | Path,
                     template: xr.Dataset | None = None, attrs: dict | None = None) -> Path:
    """Write one prediction file: ``arrays`` maps ``tasmax`` and ``pr`` to (time, H, W) or
    (member, time, H, W) arrays on the template's grid; ``times`` from the predictor file."""
    dom = get_domain(domain)
    template = target_template(dom) if template is None else template
    missing = [v for v in VARIABLES if v not in arrays]
    if missing:
        raise MLBenchError(f"a prediction file needs both {', '.join(VARIABLES)}; missing {missing}")
    vattrs = variable_attrs(template)
    data, enc = {}, {"time": {"units": "days since 1949-12-01 00:00:00", "dtype": "float64"}}
    for var in VARIABLES:
        a = np.asarray(arrays[var], dtype=np.float32)
        dims = ("time",) + dom.spatial_dims if a.ndim == 3 else ("member", "time") + dom.spatial_dims
        shape = tuple(template.sizes[d] for d in dom.spatial_dims)
        if a.shape[-2:] != shape or a.shape[-3] != len(times):
            raise MLBenchError(f"{var}: expected (time={len(times)}, {shape[0]}, {shape[1]}) for {domain}, got {a.shape}")
        at = dict(vattrs[var])
        grid_mapping = at.pop("grid_mapping", None)
        data[var] = (dims, a, at)
        enc[var] = {"grid_mapping": grid_mapping} if grid_mapping else {}
    ds = xr.Dataset(data, coords={"time": ("time", times)}).assign_coords(dict(template.coords))
    calendar = getattr(times, "calendar", None) or getattr(getattr(times, "dt", None), "calendar", None)
    if calendar:
        enc["time"]["calendar"] = calendar
    ds.attrs.update(Conventions="CF-1.8", **(attrs or {}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, encoding=enc)
    return path


def check_prediction_file(path: str | Path, domain: str, times=None, generative: bool = False,
                          members: int = ENSEMBLE_MEMBERS, template: xr.Dataset | None = None) -> None:
    """Refuse a prediction file that does not match the benchmark's template, naming the mismatch.

    Checks: both variables; dims ``(time, *spatial)`` (``member`` of size 10 first when
    ``generative``; ``members`` other than 10 only for quick runs that are not submitted); the template's spatial coordinates (1-D and 2-D) to 1e-4; the template's
    variable attributes; the time axis of ``times`` when given; finite values.
    """
    dom = get_domain(domain)
    template = target_template(dom) if template is None else template  # a caller checking many files passes it
    path = Path(path)
    with open_cf(path) as ds:
        where = f"prediction file {path.name}"
        missing = [v for v in VARIABLES if v not in ds.data_vars]
        if missing:
            raise MLBenchError(f"{where} lacks {missing}; it has {list(ds.data_vars)} (both {', '.join(VARIABLES)} are required)")
        vattrs = variable_attrs(template)
        for var in VARIABLES:
            expected = (("member",) if generative else ()) + ("time",) + dom.spatial_dims
            if ds[var].dims != expected:
                raise MLBenchError(f"{where}: {var} has dims {ds[var].dims}, the {domain} template needs {expected}")
            if generative and ds.sizes["member"] != members:
                raise MLBenchError(f"{where}: member has size {ds.sizes['member']}; generative models need {members}")
            for key, value in vattrs[var].items():
                got = ds[var].attrs.get(key, ds[var].encoding.get(key))
                if got != value:
                    raise MLBenchError(f"{where}: {var} attribute {key}={got!r}, the template has {value!r}")
            if not np.isfinite(ds[var].values).all():
                raise MLBenchError(f"{where}: {var} holds NaN or infinite values")
        for name, coord in template.coords.items():
            if name not in ds.coords:
                raise MLBenchError(f"{where} lacks the template's coordinate {name!r}")
            if ds[name].dims != coord.dims or ds[name].shape != coord.shape or not np.allclose(
                    ds[name].values, coord.values, atol=1e-4):
                raise MLBenchError(
                    f"{where}: coordinate {name!r} differs from the {domain} template's (a test set on another grid?): "
                    f"{ds[name].dims} {_span(ds[name])} vs {coord.dims} {_span(coord)}")
        if times is not None:
            got = ds.indexes["time"]
            if len(got) != len(times) or any(str(a) != str(b) for a, b in zip(got, times)):
                raise MLBenchError(f"{where}: time axis {_span(ds['time'])} is not the predictors' "
                                   f"({len(times)} days from {times[0]} to {times[-1]})")


def _span(c) -> str:
    v = np.asarray(c.values).ravel()
    return f"[{v[0]} .. {v[-1]}] ({v.size} values)" if v.size else "[]"
