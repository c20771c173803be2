"""Serving: localhost by default, under a URL prefix (JupyterHub / jupyter-server-proxy), and
five browser sessions at once, each with its own state, one of them training."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import stop_process

from .conftest import REPO, Served, _free_port, make_run, new_page, record_js_errors, shot


# -- without a browser ------------------------------------------------------------------------
def test_python_m_app_binds_to_localhost_unless_told_otherwise():
    from app.__main__ import command

    cmd, env = command([])
    assert cmd[cmd.index("--address") + 1] == "127.0.0.1"
    origins = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--allow-websocket-origin"]
    assert origins and all(o.endswith(":5006") and "*" not in o for o in origins)
    assert "--prefix" not in cmd and env == {}
    cmd, env = command(["--prefix", "user/ana/finescale/", "--port", "7000", "--runs", "somewhere",
                        "--basic-auth", "users.json", "--cookie-secret", "s3cret"])
    assert cmd[cmd.index("--prefix") + 1] == "/user/ana/finescale"
    assert cmd[-4:] == ["--basic-auth", "users.json", "--cookie-secret", "s3cret"]  # passed to panel serve
    assert env["FINESCALE_RUNS"] == str(Path("somewhere").resolve())
    cmd, _ = command(["--address", "0.0.0.0"])
    assert cmd[cmd.index("--address") + 1] == "0.0.0.0"


def test_jupyter_server_proxy_entry_point():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"]["jupyter_serverproxy_servers"]["finescale"]
    assert target == "app.proxy:setup_finescale"
    from app.proxy import setup_finescale

    spec = setup_finescale()
    cmd = spec["command"]
    assert cmd[cmd.index("--address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "{port}"
    assert cmd[cmd.index("--prefix") + 1] == "{base_url}finescale"
    assert spec["absolute_url"] is True and spec["launcher_entry"]["title"] == "finescale"


# -- served, in Chromium -------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.slow
def test_the_proxy_command_serves_the_app_under_a_prefix(browser, tmp_path):
    """The jupyter-server-proxy command, filled in as the proxy does, answers under the prefix
    (page, static resources and the websocket), and nothing answers outside it."""
    from playwright.sync_api import expect

    from app.proxy import setup_finescale

    root = tmp_path / "runs"
    root.mkdir()
    make_run(root, name="served-under-a-prefix")
    port = _free_port()
    base_url = "/user/ana/proxy/"  # what JupyterHub gives a single-user server, + the proxy's path
    cmd = [a.format(port=port, base_url=base_url) for a in setup_finescale()["command"]]
    log = open(tmp_path / "proxy-serve.log", "w")
    env = {**os.environ, "FINESCALE_RUNS": str(root)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}{base_url}finescale/app"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                html = urllib.request.urlopen(url, timeout=10).read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "proxy-serve.log").read_text()
                time.sleep(0.5)
        assert "finescale" in html
        # Resources are linked relative to the page, so they resolve under the prefix too.
        assert 'src="static/js/bokeh.min.js' in html
        js = urllib.request.urlopen(f"http://127.0.0.1:{port}{base_url}finescale/static/js/bokeh.min.js", timeout=30)
        assert js.status == 200
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/app", timeout=10)
        page = new_page(browser)
        page.goto(url)
        expect(page.locator(".fs-catalogue")).to_be_visible(timeout=180_000)  # the websocket works
        page.locator(".bk-tab", has_text="Runs").first.click()
        expect(page.locator(".fs-runs-table").get_by_text("served-under-a-prefix").first).to_be_visible(timeout=30_000)
        shot(page, "served-under-prefix")
        assert not page.js_errors, page.js_errors
        page.close()
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("session-runs")
    served = Served(root, root.parent / "sessions-serve.log")
    yield served
    served.close()


def _enter_until_valid(page, box, value: str, tries: int = 3) -> None:
    """Type ``value`` and press Enter until the form's error is gone (waiting on the page's state).

    Seen once in a fresh-clone CI run (of two) while a run trained: the box still held the refused
    value after Enter, as if the server's echo of the previous value arrived after the new text was
    typed. Typing again fixes it; a form that keeps refusing a valid name still fails here.
    """
    from playwright.sync_api import expect

    for attempt in range(tries):
        box.fill(value)
        box.press("Enter")
        try:
            expect(page.locator(".fs-config-error")).to_be_hidden(timeout=30_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


@pytest.mark.browser
@pytest.mark.slow
def test_five_sessions_keep_their_own_state_while_one_trains(browser, server):
    """Five browser contexts on one server: each holds its own form; while the first trains a
    model (a separate process), the others still answer a change within seconds."""
    from playwright.sync_api import expect

    contexts = [browser.new_context(viewport={"width": 1400, "height": 1400}) for _ in range(5)]
    pages = []
    for ctx in contexts:
        page = ctx.new_page()
        record_js_errors(page)
        page.goto(server.url)
        pages.append(page)
    for page in pages:
        expect(page.locator(".fs-catalogue")).to_be_visible(timeout=240_000)
        page.locator(".bk-tab", has_text="Experiment").first.click()
        expect(page.locator(".fs-train button")).to_be_enabled(timeout=120_000)
    # Each session names its run differently; session 2 makes its name invalid.
    for i, page in enumerate(pages):
        name = page.locator(".fs-exp-name input")
        name.fill("bad/name" if i == 2 else f"session-{i}")
        name.press("Enter")
    expect(pages[2].locator(".fs-config-error")).to_contain_text("name=", timeout=30_000)
    for i, page in enumerate(pages):
        if i != 2:
            expect(page.locator(".fs-config-error")).to_be_hidden()
            assert page.locator(".fs-exp-name input").input_value() == f"session-{i}"
    # Session 0 trains a small model with the local launcher, for long enough that it is still
    # training when the other sessions have been checked (one epoch finished first in a CI run);
    # the test cancels it at the end.
    trainer = pages[0]
    for css, value in ((".fs-epochs", "500"), (".fs-samples", "32")):
        box = trainer.locator(f"{css} input").first
        box.fill(value)
        box.press("Enter")
    trainer.locator(".fs-train button").click()
    trainer.locator(".bk-tab", has_text="Runs").first.click()
    expect(trainer.locator(".fs-runs-table").get_by_text("session-0").first).to_be_visible(timeout=60_000)
    # While it trains, every other session answers a change of its own form quickly.
    latencies = []
    for i, page in enumerate(pages[1:], start=1):
        name = page.locator(".fs-exp-name input")
        start = time.monotonic()
        name.fill("x" * 81)  # too long: the engine refuses it
        name.press("Enter")
        expect(page.locator(".fs-config-error")).to_contain_text("name=", timeout=30_000)
        latencies.append(time.monotonic() - start)
        _enter_until_valid(page, name, f"session-{i}")
    training = [p for p in server.root.glob("*/status.json") if '"completed"' not in p.read_text()]
    assert training, "the run finished before the other sessions were checked: the test proves nothing"
    shot(pages[1], "sessions-other-page-while-training")
    # Only session 0 selected the new run; the others see it in the shared run store's table.
    other = pages[3]
    other.locator(".bk-tab", has_text="Runs").first.click()
    # 120 s: seen once empty for over 60 s with two CPU burners beside the five sessions (session 10);
    # if it fails, the report carries the server's thread stacks (tests/app/conftest.py).
    expect(other.locator(".fs-runs-table").get_by_text("session-0").first).to_be_visible(timeout=120_000)
    expect(other.locator(".fs-run-status")).to_have_count(0)
    expect(trainer.locator(".fs-run-status")).to_contain_text("session-0", timeout=30_000)
    shot(trainer, "sessions-trainer")
    print(f"answer latencies of the other sessions while one trains: {[round(v, 2) for v in latencies]} s")
    assert max(latencies) < 20, latencies  # generous: 2 shared cores; typically well under 2 s
    # Cancel the training (frees the CPU for the next tests); every session shows it cancelled.
    trainer.locator(".fs-cancel button").click()
    expect(trainer.locator(".fs-run-status")).to_contain_text("cancelled", timeout=60_000)
    expect(other.locator(".fs-runs-table").get_by_text("cancelled").first).to_be_visible(timeout=60_000)
    for page in pages:
        assert not page.js_errors, page.js_errors
    for ctx in contexts:
        ctx.close()


@pytest.mark.slow
def test_a_served_app_prints_its_threads_stacks_on_sigusr1(server):
    """``kill -USR1 <pid>`` (armed by app/serve_setup.py) prints every thread's stack to the
    server's log and the server carries on serving."""
    log = server.stacks()
    assert "Thread 0x" in log or "Current thread" in log, log[-2000:]
    assert 'File "' in log and "tornado" in log, log[-2000:]  # the event loop's frames
    assert urllib.request.urlopen(server.url, timeout=60).status == 200


@pytest.mark.browser
@pytest.mark.slow
def test_the_dashboard_in_a_real_jupyterlab_through_its_proxy(browser, tmp_path):
    """A real JupyterLab server (jupyter-server-proxy installed, our entry point registered)
    starts the dashboard on first request of <base>/finescale/ and proxies it under its prefix:
    the page, its resources and the websocket all work in Chromium."""
    import secrets

    from playwright.sync_api import expect

    root = tmp_path / "runs"
    root.mkdir()
    make_run(root, name="seen-through-jupyterlab")
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path / "jupyterlab.log", "w")
    env = {**os.environ, "FINESCALE_RUNS": str(root), "JUPYTER_TOKEN": token,
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime")}  # its cookie secret stays here
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--port", str(port), "--ip", "127.0.0.1",
           f"--ServerApp.root_dir={tmp_path}", "--ServerApp.open_browser=False"]
    if os.geteuid() == 0:  # CI containers run as root; JupyterLab refuses that unless told
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=10).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "jupyterlab.log").read_text()
                time.sleep(0.5)
        page = new_page(browser)
        # The token logs the browser in (a cookie); the proxy then starts and forwards the app.
        page.goto(f"{base}/lab?token={token}")
        page.goto(f"{base}/finescale/app")
        expect(page.locator(".fs-catalogue")).to_be_visible(timeout=300_000)  # page + websocket proxied
        assert page.url.startswith(f"{base}/finescale/")
        page.locator(".bk-tab", has_text="Runs").first.click()
        expect(page.locator(".fs-runs-table").get_by_text("seen-through-jupyterlab").first).to_be_visible(timeout=60_000)
        shot(page, "jupyterlab-proxy")
        assert not page.js_errors, page.js_errors
        page.close()
    finally:
        stop_process(proc)
        try:  # the dashboard jupyter-server-proxy started is in the server's process group
            os.killpg(proc.pid, 15)
        except ProcessLookupError:
            pass
        log.close()
