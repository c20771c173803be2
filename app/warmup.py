"""Once per server process: the imports and reads every session needs, done before the first
page asks for them.

The first session otherwise pays for importing torch (the model registry), reading the
catalogue, opening the default dataset and computing its land mask: 20 s on a busy login node,
while other sessions wait behind it. :func:`start` does that work in a background thread when
the server loads the app; sessions then find it done (or wait on the same locks, never
repeat it).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

_STARTED = threading.Event()
DONE = threading.Event()


def warm(catalog: str | None = None) -> None:
    """Import the engine's plugins, read the catalogue and open the default dataset's first map."""
    import time

    started = time.monotonic()
    try:
        import holoviews.plotting.bokeh  # noqa: F401  (the plotting backend, imported once)

        from .maps import _geo

        _geo()  # geoviews and cartopy (maps in the data's own CRS): seconds, once per server

        from engine import registry
        from engine.config import DataConfig
        from engine.data import catalog as cat

        registry.load_plugins()
        entries = cat.list_entries(catalog)
        default = DataConfig()
        if default.highres in entries:
            meta = cat.entry_metadata(default.highres, catalog) or {}
            if not meta.get("remote") and not meta.get("fetch"):
                from . import datachecks
                from .maps import land_mask

                with cat.open_dataset(default.highres, catalog) as ds:
                    lat = ds["lat"].values if "lat" in ds.dims else None
                    lon = ds["lon"].values if "lon" in ds.dims else None
                if lat is not None and lon is not None:
                    land_mask(lat, lon)  # cached for every session's coastlines
                datachecks.domain_shape(default.highres, catalog)
    except Exception:  # a failed warm-up only means the first session does the work itself
        log.exception("warm-up failed")
    finally:
        DONE.set()
        # Bokeh's server logs at INFO under the "bokeh" logger: the warm-up reports there too.
        logging.getLogger("bokeh.server").info("finescale warm-up done in %.1f s", time.monotonic() - started)


def start(catalog: str | None = None) -> None:
    """Start :func:`warm` in a daemon thread, once per process."""
    if _STARTED.is_set():
        return
    _STARTED.set()
    threading.Thread(target=warm, args=(catalog,), name="finescale-warmup", daemon=True).start()
