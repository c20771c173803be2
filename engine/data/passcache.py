"""The result of pairing's streaming pass (mask + normalisation moments) kept on disk per store.

A job on a 16 GiB store spends most of its set-up reading the store once (:mod:`engine.data.datapass`);
a second job on the same data, with the same data configuration, would read it again for the same
numbers. Each pass's result is stored under ``<cache>/passes/<key>.npz`` (:func:`engine.data.paths.cache_dir`,
written atomically), where ``key`` is a hash of:

- every local file of the entries read (path, size, modification time in ns; a Zarr store's chunk
  files one by one), and the catalogue file (path, size, modification time): a changed, added or removed
  chunk, or an edited catalogue, gives another key;
- the data configuration (every ``data.*`` field except those that do not change the values read:
  ``workers``, ``patch_size``, ``sample``, ``time_window``), which includes the variables, the
  normalisation kind and the training period;
- :data:`CACHE_VERSION` (bumped when what a pass computes changes).

No cache is used (the pass always runs) for data given as datasets rather than catalogue entries, remote
archives (``s3://``, ``https://``; their files cannot be listed cheaply), predictor entries, or when
``data.statistics_cache`` is false or ``$FINESCALE_PASS_CACHE=0``. The moments are stored as the float64
accumulators themselves, so statistics fitted from the cache are bit-identical to a fresh pass.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from engine.data.datapass import Moments, PassResult
from engine.data.paths import atomic_path, cache_dir, default_catalog

#: Bumped whenever what a pass computes (or how it is stored) changes.
CACHE_VERSION = 2
#: Most bytes the cache keeps: after each write the least recently used results beyond it are deleted
#: (a per-cell monthly result on a 1024 x 1024 grid is about 250 MB).
CACHE_BYTES = 2 * 2**30
#: Data configuration fields that do not change the values a pass reads.
IGNORED_FIELDS = ("workers", "patch_size", "sample", "time_window")


def enabled(cfg) -> bool:
    """Whether the cache may be used for this data configuration."""
    return os.environ.get("FINESCALE_PASS_CACHE", "1") != "0" and bool(getattr(cfg, "statistics_cache", True))


def local_files(urlpath, catalog_dir: str | None = None) -> list[tuple[str, int, int]] | None:
    """(path, size, mtime_ns) of every file ``urlpath`` names (a path, glob or list; directories such as
    Zarr stores walked file by file); None when one of them is remote or missing."""
    if urlpath is None:
        return None
    out = []
    for item in (urlpath if isinstance(urlpath, (list, tuple)) else [urlpath]):
        text = os.fspath(item) if isinstance(item, os.PathLike) else str(item)
        if catalog_dir:
            text = text.replace("{{ CATALOG_DIR }}", str(catalog_dir)).replace("{{CATALOG_DIR}}", str(catalog_dir))
        if "://" in text and not text.startswith("file://"):
            return None
        text = text.removeprefix("file://")
        paths = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not paths:
            return None
        for path in paths:
            if os.path.isdir(path):
                for root, dirs, files in os.walk(path):
                    dirs.sort()
                    for name in sorted(files):
                        full = os.path.join(root, name)
                        st = os.stat(full)
                        out.append((full, st.st_size, st.st_mtime_ns))
            elif os.path.exists(path):
                st = os.stat(path)
                out.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
            else:
                return None
    return out


def _config_items(cfg) -> dict:
    raw = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
    return {k: v for k, v in raw.items() if k not in IGNORED_FIELDS}


def fingerprint(cfg, sources) -> str | None:
    """The cache key of a pass over ``sources`` (``[(urlpath, catalog_dir), ...]``, one per entry
    read) with data configuration ``cfg``; None when the cache cannot be used."""
    if not enabled(cfg) or getattr(cfg, "predictor_entries", ()):
        return None
    h = hashlib.sha256()
    h.update(f"finescale-pass-{CACHE_VERSION}\n".encode())
    h.update(json.dumps(_config_items(cfg), sort_keys=True, default=str).encode())
    catalog = Path(getattr(cfg, "catalog", None) or default_catalog())
    if catalog.exists():
        st = catalog.stat()
        h.update(f"\ncatalog {catalog.resolve()} {st.st_size} {st.st_mtime_ns}".encode())
    for urlpath, catalog_dir in sources:
        files = local_files(urlpath, catalog_dir)
        if not files:
            return None
        for path, size, mtime in files:
            h.update(f"\n{path} {size} {mtime}".encode())
    return h.hexdigest()[:32]


def _path(key: str) -> Path:
    return cache_dir("passes") / f"{key}.npz"


def save(key: str | None, result: PassResult) -> None:
    """Store ``result`` under ``key`` (nothing when ``key`` is None). A cache that cannot be written
    (read-only, full disk) costs only the next job's pass."""
    if key is None or result.mask is None:
        return
    arrays = {"mask": result.mask, "count": result.count if result.count is not None else np.zeros(0, np.int64)}
    names = [n for n in result.moments if n != "__hr__"]
    for i, name in enumerate(["__hr__", *names]):
        if name in result.moments:
            arrays.update(result.moments[name].arrays(f"m{i}_"))
    meta = {"names": ["__hr__", *names] if "__hr__" in result.moments else [], "train_key": result.train_key,
            "monthly": result.monthly, "pixel": result.pixel, "version": CACHE_VERSION,
            "sampled": result.sampled, "train_steps": result.train_steps}
    try:
        with atomic_path(_path(key)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
    except OSError:
        return
    _evict()


def _evict(limit: int | None = None) -> None:
    """Delete the least recently used results until the cache holds at most ``limit`` bytes
    (default :data:`CACHE_BYTES`); :func:`load` touches what it reads."""
    limit = CACHE_BYTES if limit is None else limit
    try:
        files = sorted(cache_dir("passes").glob("*.npz"), key=lambda f: f.stat().st_mtime, reverse=True)
        total = 0
        for f in files:
            total += f.stat().st_size
            if total > limit:
                f.unlink(missing_ok=True)
    except OSError:  # another process evicting at the same time
        pass


def load(key: str | None) -> PassResult | None:
    """The stored result for ``key``, or None (absent, unreadable, or another version)."""
    if key is None:
        return None
    path = _path(key)
    if not path.exists():
        return None
    try:
        os.utime(path)  # recently used: evicted last
        with np.load(path, allow_pickle=False) as raw:
            meta = json.loads(str(raw["meta"]))
            if meta.get("version") != CACHE_VERSION:
                return None
            moments = {name: Moments.from_arrays(raw, f"m{i}_", meta["pixel"]) for i, name in enumerate(meta["names"])}
            count = raw["count"]
            return PassResult(mask=np.asarray(raw["mask"], bool), count=count if count.size else None,
                              moments=moments, train_key=meta["train_key"], monthly=bool(meta["monthly"]),
                              pixel=bool(meta["pixel"]), origin="cache", sampled=meta.get("sampled"),
                              train_steps=int(meta.get("train_steps", 0)))
    except (OSError, ValueError, KeyError):  # a damaged file: the pass runs again and rewrites it
        return None
