"""jupyter-server-proxy entry point: the dashboard as a launcher item in JupyterLab/JupyterHub.

Registered in ``pyproject.toml``::

    [project.entry-points.jupyter_serverproxy_servers]
    finescale = "app.proxy:setup_finescale"

With ``jupyter-server-proxy`` installed in the single-user server's environment, JupyterLab's
launcher shows "finescale"; it opens ``<hub prefix>/finescale/app``. The proxy starts the server
on a free localhost port and forwards under the user's URL prefix, so the dashboard is served
with Panel's ``--prefix`` and never listens on a public address; JupyterHub's own login
protects it.
"""

from __future__ import annotations

import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent


def setup_finescale() -> dict:
    """The server process specification jupyter-server-proxy expects.

    ``{port}`` and ``{base_url}`` are filled in by the proxy. ``absolute_url=True`` keeps the
    prefix in forwarded requests, matching ``--prefix``.
    """
    return {
        "command": [
            sys.executable, "-m", "panel", "serve", str(APP_DIR),
            "--address", "127.0.0.1", "--port", "{port}",
            "--prefix", "{base_url}finescale",
            "--allow-websocket-origin", "*",  # only the proxy reaches 127.0.0.1; it checks the user
            "--index", "app",
            "--num-threads", "4",  # callbacks off the event loop (app.main)
            "--setup", str(APP_DIR / "serve_setup.py"),  # warm-up before the first session (app.warmup)
        ],
        "absolute_url": True,
        "timeout": 120,
        "launcher_entry": {"title": "finescale", "enabled": True},
        "new_browser_tab": True,
    }
