"""State of the data view: the catalogue as a table, and LR / HR / static fields at one time.

Reads only through :mod:`engine.data.catalog` (lazy ``open_dataset``) and
:func:`engine.data.static.static_fields`; one time step is read per map update, never the whole
dataset. Remote entries are listed but not opened (selecting one must not hit the network).

Example
-------
>>> app = AppState(); app.load_choices()            # doctest: +SKIP
>>> data = CatalogueState(app=app)                  # doctest: +SKIP
>>> data.table().columns.tolist()                   # doctest: +SKIP
['entry', 'role', 'variables', 'units', 'grid', 'time span', 'pairs with', 'description']
>>> data.fields()["hr"].dims                        # doctest: +SKIP
('lat', 'lon')
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import param

from engine.data.timeaxis import stamp

from .state import AppState, _as_list

log = logging.getLogger(__name__)

#: Columns of :meth:`CatalogueState.table`.
TABLE_COLUMNS = ("entry", "role", "variables", "units", "grid", "time span", "pairs with", "description")


class CatalogueState(param.Parameterized):
    """The data view's state: which time step of the selected dataset the maps show.

    Parameters
    ----------
    app : AppState
        Shared state: ``dataset``, ``variable``, ``scale``, the downscaling type and the picked
        ``region`` come from there (and the region is written back there).
    """

    app = param.ClassSelector(class_=AppState)
    times = param.List(default=[], item_type=str, doc="Time labels of the selected dataset.")
    time_index = param.Integer(default=0, bounds=(0, None), doc="Index into times of the maps.")
    version = param.Integer(default=0, doc="Bumped when another dataset (or variable) is opened.")
    error = param.String(default="", doc="Why the dataset's maps cannot be shown ('' if they can).")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._ds = None
        self._lowres = None
        self._key = None
        self._static = {}
        self._fields_memo = None  # (key, fields) of the last time read
        self.app.param.watch(lambda *e: self.open(), ["dataset", "variable", "choices_loaded"])
        self.app.options.param.watch(lambda *e: self.open(), ["data_downscaling", "data_lowres"])
        if self.app.choices_loaded and self.app.dataset is not None:
            # Made after the dataset was chosen (a notebook: load_choices, dataset, then the
            # view): no watcher fires, so open it now.
            self.open()

    # -- catalogue table ----------------------------------------------------------------
    def table(self):
        """One row per catalogue entry: role, variables and units, grid, time span, pairs.

        From the catalogue's metadata only (no file is opened), so it is instant even for
        remote entries.
        """
        import pandas as pd

        from engine.data import catalog

        rows = []
        for name in catalog.list_entries(self.app.catalog):
            try:
                meta = catalog.entry_metadata(name, self.app.catalog) or {}
            except Exception as exc:  # one broken entry must not hide the others
                rows.append({"entry": name, "role": "?", "description": f"unreadable: {exc}"})
                continue
            variables = meta.get("variables") or {}
            units = [str(v.get("units", "")) for v in variables.values() if isinstance(v, dict)] \
                if isinstance(variables, dict) else []
            res = meta.get("resolution")
            grid = f"{res:.4g}°" if isinstance(res, (int, float)) else (str(res) if res else "")
            if meta.get("time_step"):
                grid += f", {meta['time_step']}"
            period = meta.get("period") or []
            span = " → ".join(str(p) if p else "now" for p in period) if period else ""
            rows.append({
                "entry": name, "role": str(meta.get("role", "")), "variables": ", ".join(_as_list(variables)),
                "units": ", ".join(units), "grid": grid, "time span": span,
                "pairs with": ", ".join(meta.get("pairs_with") or []),
                "description": str(meta.get("description", ""))[:160] + (" (remote)" if meta.get("remote") else ""),
            })
        return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))

    # -- the selected dataset ------------------------------------------------------------
    def open(self) -> None:
        """Open the selected dataset lazily (and the low-res entry for MOS); read its times."""
        app = self.app
        if app.dataset is None:
            return
        key = (app.dataset, app.variable, app.options.data_downscaling, app.options.data_lowres)
        if key == self._key:
            return
        from engine.data import catalog

        self._key, self._ds, self._lowres = key, None, None
        info = app.dataset_info or {}
        error, labels = "", []
        if info.get("remote"):
            error = f"{app.dataset} is remote: its maps are not read here (needs network)."
        else:
            try:
                self._ds = catalog.open_dataset(app.dataset, app.catalog)
                if app.options.data_downscaling == "mos" and app.options.data_lowres:
                    self._lowres = catalog.open_dataset(app.options.data_lowres, app.catalog)
                if "time" in self._ds.dims:
                    labels = [stamp(t)[:16] for t in self._ds["time"].values]  # any calendar
            except Exception as exc:  # shown in the view, the form still works
                log.warning("cannot open %s: %s", app.dataset, exc)
                error = f"Cannot open {app.dataset}: {exc}"
                self._ds = None
        with param.parameterized.batch_call_watchers(self):
            self.error = error
            self.times = labels
            self.param.time_index.bounds = (0, max(len(labels) - 1, 0))
            self.time_index = min(self.time_index, max(len(labels) - 1, 0))
            self.version += 1

    @property
    def time_label(self) -> str:
        return self.times[self.time_index] if self.times else ""

    def fields(self, time_index: int | None = None) -> dict:
        """The maps at one time: ``hr`` (target), ``lr`` (model input), and each static field.

        ``lr`` is what the engine feeds the model: the HR field block-mean coarsened by the
        scale (perfect prognosis) or the low-resolution entry's field nearest in time (MOS).

        Returns
        -------
        dict of name -> xarray.DataArray ``(lat, lon)``; empty when nothing can be shown.
        """
        ds, app = self._ds, self.app
        if ds is None or app.variable not in ds:
            return {}
        i = self.time_index if time_index is None else time_index
        # The HR and LR maps each ask for the same time: read it once.
        memo = (self._key, app.scale, i)
        if self._fields_memo is not None and self._fields_memo[0] == memo:
            return dict(self._fields_memo[1])
        out = self._read_fields(ds, app, i)
        self._fields_memo = (memo, out)
        return dict(out)

    def _read_fields(self, ds, app, i: int) -> dict:
        da = ds[app.variable]
        if "time" in da.dims:
            da = da.isel(time=min(i, da.sizes["time"] - 1))
        hr = da.load()
        out = {"hr": hr}
        if self._lowres is not None and app.variable in self._lowres:
            lr = self._lowres[app.variable]
            if "time" in lr.dims:
                lr = lr.sel(time=hr["time"].values, method="nearest") if "time" in hr.coords else lr.isel(time=0)
            out["lr"] = lr.load()
        else:
            s = max(int(app.scale or 1), 1)  # an emptied scale field: shown as is until fixed
            from .maps import spatial_dims

            out["lr"] = hr.coarsen(dict.fromkeys(spatial_dims(hr), s), boundary="trim").mean()
        out["lr"].attrs = dict(hr.attrs)
        out.update(self.static())
        return out

    def static(self) -> dict:
        """Static fields on the HR grid (real elevation and land mask), cached per dataset."""
        ds = self._ds
        if ds is None:
            return {}
        key = self._key[0]
        if key not in self._static:
            try:
                from engine.data.static import STATIC_FIELDS, static_fields

                st = static_fields(ds["lat"].values, ds["lon"].values, STATIC_FIELDS)
                self._static[key] = {name: st[name] for name in st.data_vars}
            except Exception as exc:
                log.warning("no static fields for %s: %s", key, exc)
                self._static[key] = {}
        return self._static[key]

    def domain(self) -> tuple[float, float, float, float] | None:
        """The dataset's domain ``(lat_min, lat_max, lon_min, lon_max)``."""
        if self._ds is None:
            return None
        lat, lon = self._ds["lat"].values, self._ds["lon"].values
        return (float(lat.min()), float(lat.max()), float(lon.min()), float(lon.max()))

    def set_region_from_bounds(self, bounds) -> None:
        """Region picker callback: ``bounds`` = (lon_min, lat_min, lon_max, lat_max) of a drawn
        box (holoviews ``BoundsXY``), clipped to the domain; a box outside it clears the region."""
        if bounds is None:
            self.app.region = None
            return
        x0, y0, x1, y1 = (float(v) for v in bounds)
        lon0, lon1 = sorted((x0, x1))
        lat0, lat1 = sorted((y0, y1))
        dom = self.domain()
        if dom is not None:
            lat0, lat1 = max(lat0, dom[0]), min(lat1, dom[1])
            lon0, lon1 = max(lon0, dom[2]), min(lon1, dom[3])
        if not (lat0 < lat1 and lon0 < lon1):
            self.app.region = None
            return
        self.app.region = tuple(round(v, 4) for v in (lat0, lat1, lon0, lon1))

    def region_values(self) -> dict | None:
        """Mean, min and max of the HR field at the current time inside the picked region."""
        region = self.app.region
        hr = self.fields().get("hr")
        if region is None or hr is None:
            return None
        lat0, lat1, lon0, lon1 = region
        sub = hr.sel(lat=slice(lat0, lat1), lon=slice(lon0, lon1))
        vals = np.asarray(sub.values, dtype=float)
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            return None
        return {"pixels": int(vals.size), "mean": float(vals.mean()), "min": float(vals.min()), "max": float(vals.max())}
