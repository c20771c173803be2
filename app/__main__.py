"""``python -m app``: serve the dashboard, bound to localhost unless told otherwise.

A thin wrapper around ``panel serve`` with safe defaults:

- ``--address 127.0.0.1``: only this machine reaches the server (``--address 0.0.0.0`` to
  share it on a network, preferably with ``--basic-auth`` or OAuth, see below);
- ``--allow-websocket-origin`` set to the address and port actually served;
- ``--prefix /some/path``: serve under a URL prefix, as JupyterHub's proxy does
  (:mod:`app.proxy` sets it up for jupyter-server-proxy);
- ``--runs`` / ``--catalog``: the run store and the catalogue (default ``$FINESCALE_RUNS`` or
  ``./runs``, and ``$FINESCALE_CATALOG`` or the engine's catalogue). The dashboard only reads and
  writes below the run store, and reads data only through catalogue entries (by name).

Any further arguments go to ``panel serve`` unchanged, e.g. ``--basic-auth users.json
--cookie-secret ...`` (Panel's basic authentication) or ``--oauth-provider github ...``.

A server that hangs says where: ``kill -USR1 <pid>`` prints every thread's stack to its stderr
(:mod:`app.serve_setup`).

Example
-------
    python -m app --port 5006
    python -m app --prefix /user/ana/finescale --port 8765
    python -m app --address 0.0.0.0 --basic-auth credentials.json --cookie-secret "$SECRET"
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent


def command(argv: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``panel serve`` command line and extra environment for ``argv`` (no side effects).

    Returns
    -------
    (list of str, dict)
        The argument vector (starting with this interpreter) and the environment variables
        to add (``FINESCALE_RUNS`` when ``--runs`` is given).
    """
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5006)
    parser.add_argument("--prefix", default="", help="URL prefix, e.g. /user/ana/finescale (behind a proxy)")
    parser.add_argument("--runs", default=None, help="run store folder (default $FINESCALE_RUNS or ./runs)")
    parser.add_argument("--catalog", default=None, help="intake catalogue YAML (default: the engine's, with the demo)")
    parser.add_argument("--allow-websocket-origin", action="append", default=None,
                        help="browser origins allowed (default: the served address and port)")
    args, rest = parser.parse_known_args(argv)
    origins = args.allow_websocket_origin or [f"{'localhost' if args.address in ('127.0.0.1', '::1') else args.address}:{args.port}",
                                              f"{args.address}:{args.port}"]
    cmd = [sys.executable, "-m", "panel", "serve", str(APP_DIR), "--address", args.address, "--port", str(args.port)]
    for origin in dict.fromkeys(origins):
        cmd += ["--allow-websocket-origin", origin]
    if args.prefix:
        cmd += ["--prefix", "/" + args.prefix.strip("/")]
    env = {}
    if args.runs:
        env["FINESCALE_RUNS"] = str(Path(args.runs).resolve())
    if args.catalog:
        env["FINESCALE_CATALOG"] = str(Path(args.catalog).resolve())
    if not any(a.startswith("--setup") for a in rest):
        # Imports and reads every session needs, done when the server starts (app.warmup).
        cmd += ["--setup", str(APP_DIR / "serve_setup.py")]
    if not any(a.startswith("--num-threads") for a in rest):
        # Callbacks in a thread pool: one session's file reads never hold up another's page.
        cmd += ["--num-threads", os.environ.get("FINESCALE_APP_THREADS", "4")]
    return cmd + rest, env


def main(argv: list[str] | None = None) -> int:
    cmd, env = command(argv)
    os.environ.update(env)
    # exec, not a subprocess: signals (Ctrl-C, a proxy's SIGTERM) reach the server directly.
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
