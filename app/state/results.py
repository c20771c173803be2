"""The selected run's results: its predictions (shared by every session, :mod:`app.cache`),
time labels, scores table and the maps the results view shows (truth, bicubic, model, RMSE).
"""

from __future__ import annotations

import logging
from pathlib import Path

import param

from .checks import CheckedState
from .values import _valid_mask

log = logging.getLogger(__name__)


class ResultsState(CheckedState):
    """:class:`~app.state.checks.CheckedState` plus the results of one run."""

    # -- results of the selected run ----------------------------------------------------
    times = param.List(default=[], item_type=str, doc="Time labels of the selected run's predictions.")
    selected_time = param.Selector(default=None, objects=[], doc="Time shown in the maps.")
    results_version = param.Integer(default=0, doc="Bumped whenever another run's results are loaded.")
    scores = param.DataFrame(default=None, allow_None=True, doc="Scores table (model x metric) of the selected run.")

    def _load_results(self, run) -> None:
        """Load predictions.nc and scores.csv once they exist (and again if they change)."""
        path = run.predictions_path
        if not path.exists():
            if self._predictions_key is not None and self._predictions_key[0] != run.run_id:
                self._set_results(None)
            return
        stat = path.stat()
        scores_mtime = run.scores_path.stat().st_mtime if run.scores_path.exists() else None
        key = (run.run_id, stat.st_mtime, stat.st_size, scores_mtime)
        if key == self._predictions_key:
            return
        from .. import cache

        # Shared by every session and view of the server (app.cache), read once per version.
        ds = cache.predictions(path)
        if ds is None:
            return
        self._predictions_key = key
        self._set_results(ds, run)

    def _set_results(self, ds, run=None) -> None:
        self._predictions = ds
        self._rmse = None
        if ds is None:
            self._predictions_key = None
            with param.parameterized.batch_call_watchers(self):
                self.times = []
                self.param.selected_time.objects = []
                self.selected_time = None
                self.scores = None
                self.results_version += 1
            return
        from engine.data.timeaxis import stamp  # any calendar (noleap, 360_day: cftime times)

        labels = [stamp(t)[:16] for t in ds["time"].values] if "time" in ds.dims else []
        with param.parameterized.batch_call_watchers(self):
            self.times = labels
            self.param.selected_time.objects = labels
            if self.selected_time not in labels:
                self.selected_time = labels[0] if labels else None
            self.scores = _scores_table(run.scores_path) if run is not None else None
            self.results_version += 1

    @property
    def predictions(self):
        """The selected run's predictions (``xarray.Dataset``, in memory) or None."""
        return self._predictions

    @property
    def variable_name(self) -> str:
        ds = self._predictions
        return str(ds.attrs.get("variable", "")) if ds is not None else ""

    #: The fields of :meth:`map_field`, in the order the maps show them.
    MAP_FIELDS = ("truth", "bicubic", "model", "rmse")

    def map_field(self, name: str, time: str | None = None):
        """One map of the selected run, masked where invalid.

        Parameters
        ----------
        name : {"truth", "bicubic", "model", "rmse"}
            A field of predictions.nc at ``time``, or the per-pixel RMSE of the model over the
            whole prediction period (which does not depend on ``time``).
        time : str, optional
            A label from :attr:`times`; default the selected time.

        Returns
        -------
        xarray.DataArray or None
            ``(lat, lon)``; None when the run has no such field.
        """
        ds = self._predictions
        if ds is None:
            return None
        if name == "rmse":
            return self.rmse_field()
        if name not in ds:
            return None
        time = time or self.selected_time
        index = self.times.index(time) if time in self.times else 0
        da = ds[name]
        if "member" in da.dims:  # ensembles: the maps show the ensemble mean
            da = da.mean("member")
        if "time" in da.dims:
            da = da.isel(time=index)
        mask = _valid_mask(ds)
        if mask is not None:
            da = da.where(mask.isel(time=index) if "time" in mask.dims else mask)
        return da

    def rmse_field(self):
        """Per-pixel RMSE of the model over the run's prediction period, ``(lat, lon)``."""
        ds = self._predictions
        if ds is None or "model" not in ds or "truth" not in ds:
            return None
        if self._rmse is not None:
            return self._rmse
        import numpy as np

        model = ds["model"].mean("member") if "member" in ds["model"].dims else ds["model"]
        err2 = (model - ds["truth"]) ** 2
        mask = _valid_mask(ds)
        if mask is not None:
            err2 = err2.where(mask)
        rmse = np.sqrt(err2.mean("time")) if "time" in err2.dims else np.sqrt(err2)
        rmse.name = "rmse"
        rmse.attrs = {"long_name": "root mean square error of the model", "units": ds["truth"].attrs.get("units", "")}
        self._rmse = rmse
        return rmse

    def land_mask(self):
        """The real land mask on the predictions' grid (``engine.data.static``), or None.

        Used to draw coastlines offline as its 0.5 contour; cached per grid.
        """
        ds = self._predictions
        if ds is None:
            return None
        lat, lon = ds["lat"].values, ds["lon"].values
        key = (lat.size, float(lat[0]), float(lat[-1]), lon.size, float(lon[0]), float(lon[-1]))
        if key not in self._static_cache:
            try:
                from engine.data.static import static_fields

                self._static_cache[key] = static_fields(lat, lon, ["land_mask"])["land_mask"].astype(float)
            except Exception as exc:  # maps without coastlines beat no maps
                log.warning("no land mask for coastlines: %s", exc)
                self._static_cache[key] = None
        return self._static_cache[key]


def _scores_table(path: Path):
    """scores.csv as a compact table: one row per model (model, baselines), one column per metric."""
    import pandas as pd

    if not Path(path).exists():
        return None
    df = pd.read_csv(path)
    if df.empty or not {"model", "metric", "value"} <= set(df.columns):
        return None
    # The headline table: the whole domain over the test period when those columns exist.
    for column, preferred in (("region", ("all", "global", "domain")), ("period", ("test",))):
        if column in df.columns:
            chosen = df[df[column].astype(str).isin(preferred)]
            if not chosen.empty:
                df = chosen
    table = df.pivot_table(index="model", columns="metric", values="value", aggfunc="mean")
    order = ["model"] + sorted(m for m in table.index if m != "model")
    table = table.reindex([m for m in order if m in table.index])
    table.columns.name = None
    return table.reset_index()
