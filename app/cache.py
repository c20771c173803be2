"""What sessions have in common, read once per server: predictions, scores, headers, data.

Every browser session has its own :class:`~app.state.AppState` and views, but the files they
read are the same: a run's ``predictions.nc`` opened by five people (and by the results,
compare and uncertainty views of each) is read once and shared. Entries are keyed by the
file's path *and* its modification time and size, so a rewritten file (a run that evaluated
again) is read again, and by run and period where a result depends on them.

Loads happen in the caller's thread: the served app runs its callbacks in Panel's thread pool
(``pn.config.nthreads``, :mod:`app.main`), never on the event loop. Concurrent callers asking
for the same key wait for one load (a lock per key) instead of each reading the file.

Example
-------
>>> ds = predictions("/runs/20250101-abc/predictions.nc")        # doctest: +SKIP
>>> ds is predictions("/runs/20250101-abc/predictions.nc")       # doctest: +SKIP
True
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

#: Largest total size of cached arrays (bytes); least recently used entries go first.
MAX_BYTES = 2 * 1024**3

_LOCK = threading.Lock()
_ENTRIES: "OrderedDict[tuple, tuple[Any, int]]" = OrderedDict()
_KEY_LOCKS: dict[tuple, threading.Lock] = {}
_BYTES = 0
#: How many times a loader really ran (tests check that sessions share).
LOADS: dict[tuple, int] = {}


def _size_of(value: Any) -> int:
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, (int, float)):
        return int(nbytes)
    try:
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            return int(value.memory_usage(deep=True).sum())
    except Exception:  # noqa: BLE001
        pass
    return 1024


def get(key: tuple, loader: Callable[[], Any]) -> Any:
    """The cached value of ``key``, loaded with ``loader()`` once (concurrent callers wait)."""
    global _BYTES
    with _LOCK:
        if key in _ENTRIES:
            _ENTRIES.move_to_end(key)
            return _ENTRIES[key][0]
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _LOCK:
            if key in _ENTRIES:  # loaded by the caller we waited for
                _ENTRIES.move_to_end(key)
                return _ENTRIES[key][0]
        value = loader()
        LOADS[key[:2]] = LOADS.get(key[:2], 0) + 1
        size = _size_of(value)
        with _LOCK:
            _ENTRIES[key] = (value, size)
            _BYTES += size
            while _BYTES > MAX_BYTES and len(_ENTRIES) > 1:
                _, (_, dropped) = _ENTRIES.popitem(last=False)
                _BYTES -= dropped
            _KEY_LOCKS.pop(key, None)
        return value


def peek(key: tuple) -> Any:
    """The cached value of ``key`` or None (never loads)."""
    with _LOCK:
        hit = _ENTRIES.get(key)
        return hit[0] if hit is not None else None


def file_key(kind: str, path: str | Path) -> tuple | None:
    """``(kind, path, mtime, size)`` of an existing file, None if it does not exist."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    return (kind, str(path.resolve()), st.st_mtime_ns, st.st_size)


def predictions(path: str | Path):
    """A run's predictions.nc read into memory (shared, read-only: never modify it), or None.

    Read fully and closed: the file may be rewritten, and an open handle would keep a deleted
    run folder's file alive.
    """
    key = file_key("predictions", path)
    if key is None:
        return None

    def load():
        import netCDF4  # noqa: F401  (xarray's backend, imported before pyproj's libraries)
        import xarray as xr

        from engine.data.catalog import OPEN_LOCK  # HDF5 is not thread-safe while opening

        with OPEN_LOCK, xr.open_dataset(path) as ds:
            return ds.load()

    return get(key, load)


def has_members(path: str | Path) -> bool:
    """Whether a predictions file holds an ensemble (``member`` > 1); only its header is read."""
    key = file_key("has-members", path)
    if key is None:
        return False

    def load():
        import netCDF4  # noqa: F401
        import xarray as xr

        from engine.data.catalog import OPEN_LOCK  # HDF5 is not thread-safe while opening

        try:
            with OPEN_LOCK, xr.open_dataset(path) as ds:
                return bool("member" in ds.dims and ds.sizes["member"] > 1)
        except Exception:  # noqa: BLE001 (a file being written: asked again next time)
            return False

    return get(key, load)


def derived(kind: str, path: str | Path, compute: Callable[[], Any], *extra) -> Any:
    """A value computed from a file (an RMSE map, a rank histogram), shared per file version and
    ``extra`` (the period, the bins ...)."""
    key = file_key(kind, path)
    if key is None:
        return compute()
    return get((*key, *extra), compute)


def clear() -> None:
    """Forget everything (tests)."""
    global _BYTES
    with _LOCK:
        _ENTRIES.clear()
        _KEY_LOCKS.clear()
        _BYTES = 0
        LOADS.clear()
