"""What a user takes home: predictions (NetCDF), scores (CSV), the maps on screen (PNG) and
attributions (NetCDF).

Each function returns the file's bytes (a :class:`io.BytesIO`), for a Panel ``FileDownload``
callback; files are read from the run store by run id (never from a path the browser sends).

The map PNG is drawn with matplotlib from the same arrays, colour maps, limits and titles as
the page's maps (bokeh's own PNG export needs a browser on the server); coastlines are the land
mask's 0.5 contour, as on the page.

Example
-------
>>> buf = predictions_file(state)        # doctest: +SKIP
>>> xr.open_dataset(buf)                 # doctest: +SKIP
"""

from __future__ import annotations

import io
from typing import Any


def _run(state, run_id: str | None = None):
    run_id = run_id or state.selected_run
    if not run_id:
        raise ValueError("no run is selected")
    return state.store.get(run_id)  # confined to the run root


def predictions_file(state, run_id: str | None = None) -> io.BytesIO:
    """The selected run's predictions.nc as written by the engine (CF-compliant NetCDF)."""
    run = _run(state, run_id)
    if not run.predictions_path.exists():
        raise FileNotFoundError(f"run {run.run_id} has no predictions yet")
    return io.BytesIO(run.predictions_path.read_bytes())


def scores_file(state, run_id: str | None = None) -> io.BytesIO:
    """The selected run's scores.csv (every metric, period, region and baseline)."""
    run = _run(state, run_id)
    if not run.scores_path.exists():
        raise FileNotFoundError(f"run {run.run_id} has no scores yet")
    return io.BytesIO(run.scores_path.read_bytes())


def attributions_file(result) -> io.BytesIO:
    """An attribution Dataset (:func:`engine.explain.explain_run`) as NetCDF bytes."""
    if result is None:
        raise ValueError("no attributions computed yet")
    ds = result.copy()
    # NetCDF attributes must be strings, numbers or arrays: anything else is written as text.
    ds.attrs = {k: (v if isinstance(v, (str, int, float)) else str(v)) for k, v in ds.attrs.items()}
    for name in ds.variables:
        ds[name].attrs = {k: (v if isinstance(v, (str, int, float)) else str(v)) for k, v in ds[name].attrs.items()}
    import tempfile
    from pathlib import Path

    # Through a file: NetCDF-4 (the engine's format) is written by the netCDF4 library to a path.
    with tempfile.TemporaryDirectory(prefix="finescale-dl-") as tmp:
        path = Path(tmp) / "attributions.nc"
        ds.to_netcdf(path)
        return io.BytesIO(path.read_bytes())


def maps_png(panels: list[tuple[str, Any, dict]], coast=None, cols: int = 2, dpi: int = 110) -> io.BytesIO:
    """A PNG of maps: ``panels`` is ``[(title, (lat, lon) DataArray, {cmap, clim}), ...]``.

    ``cmap`` is a list of hex colours (as the page's maps take), ``clim`` the colour limits;
    ``coast`` an optional ``(lat, lon)`` land mask drawn as its 0.5 contour on every map.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    n = len(panels)
    if n == 0:
        raise ValueError("no maps to draw")
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, min(cols, n), figsize=(5.2 * min(cols, n), 4.2 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, (title, da, opts) in zip(axes.ravel(), panels):
        from .maps import cell_latlon, spatial_dims

        dims = spatial_dims(da)
        da = da.transpose(*dims)
        # Every cell where it is (2-D latitude/longitude for rotated and projected grids).
        lat, lon = cell_latlon(da)
        cmap = opts.get("cmap")
        cmap = ListedColormap(cmap) if isinstance(cmap, (list, tuple)) else cmap
        lo, hi = opts.get("clim") or (None, None)
        mesh = ax.pcolormesh(lon, lat, np.asarray(da.values, dtype=float), cmap=cmap, vmin=lo, vmax=hi,
                             shading="nearest")
        if coast is not None and coast["lat"].ndim == 1:
            ax.contour(coast["lon"].values, coast["lat"].values, np.asarray(coast.transpose("lat", "lon").values),
                       levels=[0.5], colors="black", linewidths=0.8)
        units = str(da.attrs.get("units", ""))
        fig.colorbar(mesh, ax=ax, label=f"{da.name or ''} ({units})" if units else str(da.name or ""))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("Longitude (°E)")
        ax.set_ylabel("Latitude (°N)")
        ax.set_aspect(1 / max(np.cos(np.deg2rad(float(np.mean(lat)))), 0.2))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    buf.seek(0)
    return buf
