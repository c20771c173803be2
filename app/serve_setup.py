"""``panel serve --setup app/serve_setup.py``: warm the server up before the first session
(:mod:`app.warmup`); ``python -m app`` passes it.

It also arms Python's fault handler, so that a server that hangs or crashes says where:
``kill -USR1 <server pid>`` prints the stack of every thread to the server's stderr (a callback
stuck on a lock, a file read that never returns), and a segmentation fault prints them before the
process dies."""

import faulthandler
import os
import signal
import sys
from pathlib import Path

# The folder holding the app package, so that it imports from a setup script too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import warmup  # noqa: E402

faulthandler.enable(all_threads=True)
if hasattr(signal, "SIGUSR1"):  # not on Windows
    faulthandler.register(signal.SIGUSR1, all_threads=True)

warmup.start(os.environ.get("FINESCALE_CATALOG") or None)
