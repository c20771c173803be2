"""``panel serve --setup app/serve_setup.py``: warm the server up before the first session
(:mod:`app.warmup`); ``python -m app`` passes it."""

import os
import sys
from pathlib import Path

# The folder holding the app package, so that it imports from a setup script too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import warmup  # noqa: E402

warmup.start(os.environ.get("FINESCALE_CATALOG") or None)
