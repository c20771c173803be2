"""The schema of a finescale catalogue file, checked before intake reads it.

intake accepts almost any YAML (a catalogue with a misspelt role, an entry without ``urlpath``,
even ``/etc/passwd`` read as an empty catalogue). :func:`check_catalog_file` refuses such files
with a message that names the file, the entry, the field, the bad value and the accepted ones:

- the file is UTF-8 YAML holding a mapping with a ``sources`` mapping of at least one entry;
- every entry is a mapping with a ``driver`` that intake knows and ``args.urlpath`` (text or a
  list of text);
- ``metadata.role`` (default ``highres``) is one of :data:`ROLES`; ``pairs_with`` names entries
  of this file; ``variables`` is a mapping or a list; ``generator`` is text, ``generator_args`` a
  mapping, ``fetch`` a mapping with ``via`` and ``name``, ``remote`` a boolean.

Example
-------
>>> check_catalog_file("catalogs/finescale.yaml")["sources"].keys()  # doctest: +SKIP
dict_keys(['demo_alps', 'demo_alps_gcm', ...])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from engine.data.errors import DataError

ROLES = ("highres", "lowres", "static", "predictor")
#: Largest catalogue file read (a catalogue is a short text; anything bigger is not one).
MAX_BYTES = 5_000_000


def _drivers() -> list[str]:
    try:
        import intake

        return sorted(intake.registry)
    except Exception:  # an intake without a registry: do not second-guess it
        return []


def check_catalog_file(path: str | Path) -> dict[str, Any]:
    """Read and check the catalogue file at ``path``; return its parsed content.

    Raises
    ------
    DataError
        Naming the file (and the line for YAML errors, the entry and field otherwise).
    """
    path = Path(path)
    where = f"catalogue file {str(path)!r}"
    if not path.is_file():
        raise DataError(f"{where} is not a file; give a path to an intake YAML catalogue")
    if path.stat().st_size > MAX_BYTES:
        raise DataError(f"{where} has {path.stat().st_size} bytes; a catalogue has at most {MAX_BYTES}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{where} is not UTF-8 text, so not an intake YAML catalogue") from None
    except OSError as exc:
        raise DataError(f"{where} cannot be read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise DataError(f"{where}{line} is not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("sources"), Mapping) or not raw["sources"]:
        got = type(raw).__name__ if not isinstance(raw, Mapping) else f"keys {sorted(map(str, raw))}"
        raise DataError(f"{where} is not an intake catalogue: expected a mapping with a non-empty 'sources' "
                        f"mapping of entries, got {got}")
    sources = raw["sources"]
    drivers = _drivers()
    for name, entry in sources.items():
        _check_entry(where, str(name), entry, sources, drivers)
    return dict(raw)


def _check_entry(where: str, name: str, entry: Any, sources: Mapping, drivers: list[str]) -> None:
    at = f"{where}, entry {name!r}"
    if not isinstance(entry, Mapping):
        raise DataError(f"{at} is not a mapping (driver, args, metadata); got {entry!r}")
    driver = entry.get("driver")
    if not isinstance(driver, str) or not driver:
        raise DataError(f"{at} has no driver; accepted: {', '.join(drivers) or 'an intake driver name'}")
    if drivers and driver not in drivers:
        raise DataError(f"{at}: driver {driver!r} is not known to intake; accepted: {', '.join(drivers)}")
    args = entry.get("args")
    if not isinstance(args, Mapping) or "urlpath" not in args:
        raise DataError(f"{at} has no args.urlpath (where the data are); every entry needs one, e.g. "
                        "args: {urlpath: '{{ CATALOG_DIR }}/data.nc'}")
    url = args["urlpath"]
    if not (isinstance(url, str) and url.strip()) and not (
            isinstance(url, list) and url and all(isinstance(u, str) and u.strip() for u in url)):
        raise DataError(f"{at}: args.urlpath={url!r} is not valid; expected a path or URL (or a list of them)")
    meta = entry.get("metadata", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise DataError(f"{at}: metadata must be a mapping, got {meta!r}")
    role = meta.get("role", "highres")
    if role not in ROLES:
        raise DataError(f"{at}: role {role!r} is not valid; accepted: {', '.join(ROLES)}")
    pairs = meta.get("pairs_with", [])
    pairs = [pairs] if isinstance(pairs, str) else pairs
    if pairs is None:
        pairs = []
    if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
        raise DataError(f"{at}: pairs_with={meta.get('pairs_with')!r} is not valid; expected a list of entry names")
    missing = [p for p in pairs if p not in sources]
    if missing:
        raise DataError(f"{at}: pairs_with names {', '.join(map(repr, missing))}, which is not an entry of this "
                        f"catalogue; accepted: {', '.join(sorted(map(str, sources)))}")
    variables = meta.get("variables", {})
    if variables is not None and not isinstance(variables, (Mapping, list, str)):
        raise DataError(f"{at}: variables={variables!r} is not valid; expected a mapping name -> {{units, long_name}}")
    for key, kind, what in (("generator", str, "a generator name"), ("generator_args", Mapping, "a mapping"),
                            ("fetch", Mapping, "a mapping {via, name}"), ("remote", bool, "true or false")):
        if key in meta and not isinstance(meta[key], kind):
            raise DataError(f"{at}: {key}={meta[key]!r} is not valid; expected {what}")
    if isinstance(meta.get("fetch"), Mapping) and not {"via", "name"} <= set(meta["fetch"]):
        raise DataError(f"{at}: fetch={dict(meta['fetch'])!r} needs 'via' and 'name' (e.g. via: xarray_tutorial)")
