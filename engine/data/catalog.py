"""The catalogue: which datasets exist, what they hold, and opening them in finescale's layout.

The catalogue is a classic intake YAML file (``catalogs/finescale.yaml`` by default; any user path
works), so plain ``intake.open_catalog`` reads it too. What this module adds on top of intake:

- datasets made on first use by a generator inside :mod:`engine.data` (``metadata.generator``,
  looked up in :data:`engine.data.demo.GENERATORS`, never imported from a name in the YAML);
- files fetched through xarray's tutorial download path (``metadata.fetch``: pooch into
  ``<cache>/xarray_tutorial_data``), so tests can seed that cache and run the same code offline;
- remote archives (``metadata.remote``) that fail fast with a clear message without network;
- one layout for everything (:mod:`engine.data.grid`): dims ``(time, lat, lon)`` on regular grids
  (latitude ascending, longitude continuous), ``(time, y, x)`` with 2-D lat/lon and the CRS on
  rotated-pole, projected and curvilinear grids.

Example
-------
>>> list_entries()[:2]
['arco_era5', 'demo_alps']
>>> entry_metadata("demo_alps")["role"]
'highres'
>>> ds = open_dataset("demo_alps")  # generated and cached on first use
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import xarray as xr

from engine.data import netcdf_lock
from engine.data.errors import DataError
from engine.data.integrity import check_files
from engine.data.paths import cache_dir, default_catalog

#: Seconds to wait for a remote host before declaring there is no network.
NETWORK_TIMEOUT = 5.0

def _catalog_path(catalog) -> Path:
    path = Path(catalog) if catalog is not None else default_catalog()
    if not path.exists():
        hint = "" if catalog is not None else (" (the default: set FINESCALE_CATALOG to the catalogue's path when "
                                               "finescale is installed outside its checkout)")
        raise DataError(f"catalogue file {str(path)!r} does not exist{hint}; give a path to an intake YAML catalogue")
    return path.resolve()


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float):
    import intake

    from engine.data.catalog_schema import check_catalog_file

    check_catalog_file(path)  # roles, urlpath, driver, pairs: a clear DataError before intake reads it
    try:
        return intake.open_catalog(path)
    except Exception as exc:  # intake raises many types for bad YAML
        raise DataError(f"could not read the catalogue {path!r}: {exc}") from None


def _open_catalog(catalog):
    if catalog is not None and not isinstance(catalog, (str, os.PathLike)):
        return catalog  # an intake catalogue object already
    path = _catalog_path(catalog)
    return _load(str(path), path.stat().st_mtime)


def _entries(cat) -> dict:
    return dict(getattr(cat, "_entries", {}) or {name: cat[name] for name in cat})


def list_entries(catalog=None) -> list[str]:
    """Names of the catalogue's entries, sorted.

    Parameters
    ----------
    catalog : path to an intake YAML catalogue, an intake catalogue, or None for the bundled one.
    """
    return sorted(_entries(_open_catalog(catalog)))


def _entry(name: str, catalog):
    entries = _entries(_open_catalog(catalog))
    if name not in entries:
        raise DataError(f"unknown catalogue entry {name!r}; known entries: {', '.join(sorted(entries))}")
    return entries[name]


def entry_metadata(name: str, catalog=None) -> dict[str, Any]:
    """The metadata of entry ``name``: ``role``, ``variables`` (name -> {units, long_name}),
    ``pairs_with``, ``description``, ``driver`` and whatever else the entry declares."""
    entry = _entry(name, catalog)
    desc = entry.describe()
    meta = dict(desc.get("metadata") or {})
    meta.pop("catalog_dir", None)
    meta.setdefault("role", "highres")
    meta.setdefault("variables", {})
    meta.setdefault("pairs_with", [])
    pairs = meta["pairs_with"]
    meta["pairs_with"] = [pairs] if isinstance(pairs, str) else list(pairs or [])
    meta["description"] = " ".join(str(desc.get("description") or "").split())
    driver = desc.get("driver")
    meta["driver"] = driver[0] if isinstance(driver, (list, tuple)) and driver else driver
    meta["name"] = name
    return meta


# -- resolving where the data are -----------------------------------------------------------------
def _generated(meta: dict) -> Path:
    from engine.data.demo import GENERATORS

    gen = meta["generator"]
    if gen not in GENERATORS:
        raise DataError(
            f"entry {meta['name']!r} names generator {gen!r}, which is not a finescale generator; "
            f"accepted: {', '.join(sorted(GENERATORS))}"
        )
    return Path(GENERATORS[gen](**dict(meta.get("generator_args") or {})))


def tutorial_url(fname: str) -> str:
    """The URL that ``xarray.tutorial.open_dataset(fname)`` downloads."""
    import xarray.tutorial as xt

    return f"{xt.base_url}/raw/{xt.version}/{fname}"


def tutorial_cache_path(fname: str) -> Path:
    """Where the download of tutorial file ``fname`` is cached (pooch's name for it); put a copy
    there to use the file offline."""
    import pooch

    return cache_dir("xarray_tutorial_data") / pooch.utils.unique_file_name(tutorial_url(fname))


def _fetched(meta: dict) -> Path:
    fetch = meta["fetch"]
    via = fetch.get("via")
    if via != "xarray_tutorial":
        raise DataError(f"entry {meta['name']!r}: fetch via {via!r} is not supported; accepted: xarray_tutorial")
    import pooch
    import xarray as _xr

    fname = fetch["name"]
    url = tutorial_url(fname)
    folder = cache_dir("xarray_tutorial_data")
    # The same call xarray.tutorial.open_dataset makes: pooch reuses a file already in the cache.
    try:
        downloader = pooch.HTTPDownloader(headers={"User-Agent": f"xarray {_xr.__version__}"}, timeout=30)
        return Path(pooch.retrieve(url=url, known_hash=None, path=folder, downloader=downloader))
    except Exception as exc:
        raise DataError(
            f"could not download {fname!r} for entry {meta['name']!r} from {url}: {type(exc).__name__}: {exc}. "
            f"Network access is needed the first time; offline, place the file at {tutorial_cache_path(fname)}"
        ) from None


def _check_network(url: str, name: str) -> None:
    parsed = urlparse(url)
    host = parsed.hostname
    if parsed.scheme in ("", "file") or not host:
        return
    if parsed.scheme in ("gs", "gcs"):
        host = "storage.googleapis.com"
    elif parsed.scheme == "s3":
        host = "s3.amazonaws.com"
    try:
        socket.create_connection((host, parsed.port or 443), timeout=NETWORK_TIMEOUT).close()
    except OSError as exc:
        raise DataError(
            f"entry {name!r} is a remote archive at {url}; opening it needs network access, "
            f"and {host} cannot be reached ({type(exc).__name__}: {exc})"
        ) from None


# -- the common layout --------------------------------------------------------------------------
def standardise(ds: xr.Dataset, name: str = "dataset") -> xr.Dataset:
    """finescale's layout: dims ``(time, ..., lat, lon)`` for a regular lat/lon grid (latitude
    ascending, longitude continuous over the domain), ``(time, ..., y, x)`` with 2-D ``lat``/``lon``
    and a ``crs`` coordinate for every other grid (see :mod:`engine.data.grid`).

    Lazy: works on dask-backed datasets without loading them.
    """
    from engine.data.grid import standardise_grid

    return standardise_grid(ds, name)


# netCDF-C/HDF5 are not thread-safe, and xarray's lock does not cover the metadata calls of an open:
# a thread opening an entry while another read a file crashed the process (the dashboard's data
# check beside a view). engine.data.netcdf_lock makes one re-entrant lock xarray's lock for netCDF
# reads, writes and opens; this is that lock, for code calling netCDF4 itself.
OPEN_LOCK = netcdf_lock.LOCK
# Generating a missing demo file or downloading a fetched one: once, whichever thread asks first.
_MAKE_LOCK = threading.RLock()


def open_dataset(name: str, catalog=None) -> xr.Dataset:
    """Open catalogue entry ``name`` as an ``xarray.Dataset`` in finescale's layout (:func:`standardise`).
    See :func:`_open_dataset`."""
    return _open_dataset(name, catalog)


def _open_dataset(name: str, catalog=None) -> xr.Dataset:
    """Open catalogue entry ``name`` as an ``xarray.Dataset`` in finescale's layout (:func:`standardise`).

    Large (remote) sources stay lazy (dask); select before loading.

    Raises
    ------
    DataError
        unknown entry (lists the known ones), unreadable or truncated file (names it), remote
        archive without network (names the URL).
    """
    entry = _entry(name, catalog)
    meta = entry_metadata(name, catalog)
    args = dict(entry.describe().get("args") or {})
    urlpath = args.get("urlpath")
    if meta.get("generator"):
        with _MAKE_LOCK:
            urlpath = str(_generated(meta))
        source = entry.get(urlpath=urlpath)
    elif meta.get("fetch"):
        with _MAKE_LOCK:
            urlpath = str(_fetched(meta))
        source = entry.get(urlpath=urlpath)
    else:
        if meta.get("remote"):
            _check_network(str(urlpath), name)
        source = entry.get()
    check_files(urlpath, name, os.path.dirname(str(getattr(_open_catalog(catalog), "path", "") or "")))  # truncated
    try:
        ds = source.to_dask()  # each netCDF open holds OPEN_LOCK (netcdf_lock.install)
    except Exception as exc:
        hint = ""
        if meta.get("generator"):
            hint = "; delete it to have it generated again"
        elif meta.get("fetch"):
            hint = "; delete it to have it downloaded again"
        raise DataError(
            f"could not open entry {name!r} from {urlpath}: {type(exc).__name__}: {exc}. "
            f"The file may be truncated or corrupt{hint}"
        ) from None
    ds = standardise(ds, f"entry {name!r}")
    ds.attrs.setdefault("finescale_entry", name)
    # where the values come from (engine.data.passcache fingerprints these files)
    ds.encoding["finescale_urlpath"] = urlpath
    ds.encoding["finescale_catalog_dir"] = os.path.dirname(str(getattr(_open_catalog(catalog), "path", "") or ""))
    return ds
