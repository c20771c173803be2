"""The form's data checks (``engine check``), run off the event loop and shared by sessions.

:func:`engine.data.check.check_config` opens the configuration's entries lazily (seconds for a
large archive), so the experiment form never runs it on the server's event loop: it is
submitted to a small thread pool and its result kept per *data key* (the configuration's data
section and patch size), for every session of the server. While the engine has no
``check_config``, the patch is checked against the high-resolution domain's size here
(:func:`app.validation.domain_errors`).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

log = logging.getLogger(__name__)

_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="finescale-check")
_LOCK = threading.Lock()
_RESULTS: dict[str, dict[str, str]] = {}
_RUNNING: dict[str, Future] = {}
_SHAPES: dict[tuple, Any] = {}

#: Results kept at most (one per data section seen; a few hundred bytes each).
MAX_RESULTS = 512


def key_of(config) -> str:
    """What the data checks depend on: the data section (patch size included)."""
    import json
    import dataclasses

    return json.dumps(dataclasses.asdict(config.data), sort_keys=True, default=str)


def cached(key: str) -> dict[str, str] | None:
    with _LOCK:
        return _RESULTS.get(key)


def domain_shape(name: str, catalog: str | None) -> tuple[int, int] | None:
    """``(ny, nx)`` of a local catalogue entry (opened lazily, cached); None for remote or
    downloaded entries (a check must not hit the network) and unreadable ones."""
    key = (name, catalog)
    with _LOCK:
        if key in _SHAPES:
            return _SHAPES[key]
    from engine.data import catalog as cat

    shape = None
    try:
        meta = cat.entry_metadata(name, catalog) or {}
        if not meta.get("remote") and not meta.get("fetch"):
            with cat.open_dataset(name, catalog) as ds:
                dims = [d for d in ds.dims if d not in ("time", "level", "member", "bnds", "nv")]
                try:
                    from engine.data.grid import spatial_dims  # the grid contract, once it exists

                    dims = list(spatial_dims(ds))
                except Exception:  # noqa: BLE001 (not written yet, or a grid it cannot read)
                    dims = [d for d in ("lat", "y") if d in ds.dims][:1] + [d for d in ("lon", "x") if d in ds.dims][:1]
                if len(dims) == 2:
                    shape = (int(ds.sizes[dims[0]]), int(ds.sizes[dims[1]]))
    except Exception as exc:  # the check is then the engine's, in the job
        log.warning("cannot read the domain of %s: %s", name, exc)
    with _LOCK:
        _SHAPES[key] = shape
    return shape


def _remote(name: str, catalog: str | None) -> bool:
    from engine.data import catalog as cat

    try:
        meta = cat.entry_metadata(name, catalog) or {}
    except Exception:  # an unknown entry: the configuration checks name it
        return False
    return bool(meta.get("remote") or meta.get("fetch"))


def run(config, key: str | None = None) -> dict[str, str]:
    """The data checks of ``config`` now, in this thread (``{dotted field: message}``)."""
    from . import validation as V

    key = key or key_of(config)
    try:
        if _remote(config.data.highres, config.data.catalog) or (
                config.data.lowres and _remote(config.data.lowres, config.data.catalog)):
            # Never from a form: a remote entry is checked by the job (launch.submit runs the
            # same checks), not by opening it over the network on each keystroke.
            errors: dict[str, str] | None = {}
        else:
            errors = V.data_check(config)
        if errors is None:
            errors = V.domain_errors(config, domain_shape(config.data.highres, config.data.catalog))
    except Exception as exc:  # a check that crashes says so rather than passing silently
        log.exception("data check failed")
        errors = {"": f"the data checks failed: {type(exc).__name__}: {exc}"}
    with _LOCK:
        if len(_RESULTS) >= MAX_RESULTS:
            _RESULTS.clear()
        _RESULTS[key] = errors
    return errors


def submit(config, key: str, done: Callable[[dict[str, str]], None]) -> Future:
    """Run the checks in the pool (once per key at a time) and call ``done(errors)`` after."""
    with _LOCK:
        future = _RUNNING.get(key)
        if future is None:
            future = _RUNNING[key] = _POOL.submit(run, config, key)
            future.add_done_callback(lambda f: _RUNNING.pop(key, None))

    def callback(f: Future) -> None:
        try:
            done(f.result())
        except Exception:  # a view that went away meanwhile
            log.exception("data check callback failed")

    future.add_done_callback(callback)
    return future


def wait_idle(timeout: float = 60.0) -> None:
    """Wait until no check runs (tests and the benchmark)."""
    import concurrent.futures as cf

    with _LOCK:
        running = list(_RUNNING.values())
    cf.wait(running, timeout=timeout)
