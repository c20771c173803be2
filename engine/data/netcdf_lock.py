"""One re-entrant lock for every netCDF/HDF5 call in the process: opens, reads and writes.

The netCDF-C and HDF5 libraries are not thread-safe. xarray serialises data reads and writes
under its own lock, but not the metadata calls it makes while opening a file (variable filters,
chunking, attributes: ``NetCDF4DataStore.open_store_variable`` runs outside the lock) or while
writing one (``set_dimension``, ``set_attribute``, ``prepare_variable``, ``sync``: every store method
that touches the file is listed in :data:`_STORE_METHODS`). So a thread opening a
file while another reads or writes one crashes the process (a segmentation fault or a bus error:
the dashboard's data check opening an entry while a view reads a prediction or a test writes one).

:data:`LOCK` fixes that in one place. :func:`install` (run on import of ``engine.data``) makes it
xarray's default lock for the netCDF4 backend, so reads and writes take it, and holds it around
the backend's open, so every open in the process does too. It is re-entrant, because xarray takes
it again inside an open that already holds it. ``catalog.OPEN_LOCK`` is the same lock, for code
that calls netCDF4 directly (appending to a prediction file).

Hold it around opens and in-thread reads only, never around a dask ``compute``: dask's worker
threads read chunks under the same lock and would wait for ever on the thread that holds it.
"""

from __future__ import annotations

import functools
import threading
import uuid

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


class SerializableRLock:
    """A re-entrant lock that survives pickling: every copy with the same token is the same lock
    within a process (what dask's ``SerializableLock`` does, re-entrant). Dask pickles the lock
    with the tasks that read chunks; an unpickled copy in another process is that process's lock.
    """

    def __init__(self, token: str | None = None) -> None:
        self.token = token or uuid.uuid4().hex
        with _LOCKS_GUARD:
            self.lock = _LOCKS.setdefault(self.token, threading.RLock())

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()

    def locked(self) -> bool:
        """Whether another thread holds it (an owner's own re-entry would succeed)."""
        if self.lock.acquire(blocking=False):
            self.lock.release()
            return False
        return True

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __getstate__(self) -> str:
        return self.token

    def __setstate__(self, token: str) -> None:
        self.__init__(token)

    def __repr__(self) -> str:
        return f"<SerializableRLock {self.token[:8]}>"


#: The process's netCDF/HDF5 lock (a fixed token: every unpickled copy is the same lock).
LOCK = SerializableRLock("finescale-netcdf")


#: NetCDF4DataStore methods that call netCDF4 on the file outside xarray's lock (every method
#: that uses ``self.ds``; they compute nothing, so holding the lock cannot starve dask's threads).
_STORE_METHODS = ("__init__", "get_attrs", "get_dimensions", "get_parent_dimensions", "get_variables",
                  "get_encoding", "set_dimension", "set_attribute", "prepare_variable", "sync")


def _locked(method):
    """``method`` run while holding :data:`LOCK`."""

    @functools.wraps(method)
    def locked(*args, **kwargs):
        with LOCK:
            return method(*args, **kwargs)

    locked._finescale_locked = True
    return locked


def install() -> None:
    """Make :data:`LOCK` xarray's lock for netCDF4 files: its default lock for reads and writes,
    held around the backend's whole open (xarray reads the metadata outside its lock there) and
    around each metadata call of a write (dimensions, attributes, variables: outside it too).

    Both reach every netCDF4 open in the process, intake's and third-party ones included, so no
    call site has to remember the lock. Idempotent. An xarray without these names keeps its own
    locking (the tests in ``tests/engine/test_netcdf_lock.py`` then fail and say so).
    """
    try:
        from xarray.backends import netCDF4_
    except ImportError:  # no netCDF4 backend: nothing to lock
        return
    if hasattr(netCDF4_, "NETCDF4_PYTHON_LOCK"):
        # xarray looks this name up at each open (``NetCDF4DataStore.open``).
        netCDF4_.NETCDF4_PYTHON_LOCK = LOCK
    # Writing, xarray takes its lock to create the file and to write data, but not for the
    # metadata calls between (dimensions, attributes, variable creation): a write racing with
    # another thread's open corrupted HDF5's state, and the writer crashed in close (a
    # segmentation fault in to_netcdf, seen in two fresh-clone test runs).
    store = getattr(netCDF4_, "NetCDF4DataStore", None)
    for name in _STORE_METHODS:
        method = getattr(store, name, None)
        if method is not None and not getattr(method, "_finescale_locked", False):
            setattr(store, name, _locked(method))
    entrypoint = getattr(netCDF4_, "NetCDF4BackendEntrypoint", None)
    opener = getattr(entrypoint, "open_dataset", None)
    if opener is None or getattr(opener, "_finescale_locked", False):
        return

    # The backend's open builds lazy arrays only (dask wraps them afterwards, outside): no
    # compute runs while the lock is held.
    entrypoint.open_dataset = _locked(opener)

install()
