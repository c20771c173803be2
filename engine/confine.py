"""Where a configuration may point: files it names stay inside the configured data roots, and
runs it names are run ids inside the run store.

A configuration can come from a form or an upload, so a path in it is untrusted. The data roots
are set on the server, never by a configuration:

- the bundled ``catalogs/`` folder, and the folder of ``$FINESCALE_CATALOG`` when set;
- the data cache (``$FINESCALE_DATA``, default ``~/.cache/finescale``);
- every folder in ``$FINESCALE_DATA_ROOTS`` (separated by ``:``): a site's own data.

Paths are resolved first (symbolic links followed, ``..`` removed), so neither a link nor a
``..`` leads out. Code that calls the library directly (``open_dataset(name, catalog=path)``) is
not confined: it runs with its caller's rights already.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
DATA_ROOTS_ENV = "FINESCALE_DATA_ROOTS"


class PathNotAllowed(ValueError):
    """A path outside the allowed roots, or a run reference that is not a run id."""


def data_roots() -> list[Path]:
    """The folders a configuration may name files in (see the module docstring), resolved."""
    from engine.data.paths import DEFAULT_CATALOG

    roots = [DEFAULT_CATALOG.parent]
    if os.environ.get("FINESCALE_CATALOG"):
        roots.append(Path(os.environ["FINESCALE_CATALOG"]).expanduser().parent)
    roots.append(Path(os.environ.get("FINESCALE_DATA") or Path.home() / ".cache" / "finescale"))
    roots += [Path(p) for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [r.expanduser().resolve() for r in roots]


def confine(path: str | os.PathLike, roots: list[Path], what: str) -> Path:
    """``path`` resolved (links followed) if it lies inside one of ``roots``.

    Raises
    ------
    PathNotAllowed
        Naming ``what`` (e.g. ``data.catalog``), the path and the accepted roots.
    """
    text = os.fspath(path)
    if "\0" in text or not text.strip():
        raise PathNotAllowed(f"{what}={text!r} is not a valid path")
    resolved = Path(text).expanduser().resolve()
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise PathNotAllowed(
        f"{what}={text!r} is outside the allowed folders (resolves to {str(resolved)!r}); accepted: files under "
        f"{', '.join(repr(str(r)) for r in roots)} (a site adds folders with ${DATA_ROOTS_ENV})")


def check_run_id(ref: object, what: str) -> str:
    """``ref`` if it is a run id (no path: no ``/``, ``..`` or leading ``.``)."""
    if not isinstance(ref, str) or not RUN_ID.fullmatch(ref) or ".." in ref:
        raise PathNotAllowed(f"{what}={ref!r} is not a run id; accepted: the id of a run in the same run store "
                             "(letters, digits, '_', '-', '.'; not a path)")
    return ref
