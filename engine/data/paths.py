"""Where the data layer keeps files it generates or downloads.

The cache folder is ``$FINESCALE_DATA`` when set, else ``~/.cache/finescale``. Everything written
there is written atomically (temporary name, then :func:`os.replace`), because several processes
(a dashboard, a training job, the tests) may create the same file at the same time.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.files import atomic_path  # noqa: F401  (re-exported for the data layer)

#: The repository root (``catalogs/`` lives there); the package sits in ``<root>/engine/data``.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The catalogue bundled with finescale (in the checkout; an install elsewhere names it by
#: ``$FINESCALE_CATALOG``, see :func:`default_catalog`).
DEFAULT_CATALOG = REPO_ROOT / "catalogs" / "finescale.yaml"


def default_catalog() -> Path:
    """``$FINESCALE_CATALOG`` when set (a site's own catalogue, or the bundled one when finescale
    is installed outside its checkout), else the bundled ``catalogs/finescale.yaml``."""
    return Path(os.environ["FINESCALE_CATALOG"]) if os.environ.get("FINESCALE_CATALOG") else DEFAULT_CATALOG


def cache_dir(sub: str | None = None) -> Path:
    """The cache folder (created if missing), or its subfolder ``sub``."""
    root = os.environ.get("FINESCALE_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "finescale")
    path = Path(root) / sub if sub else Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
