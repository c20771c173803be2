"""Small helpers shared by test modules."""

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

#: Real data samples beside the repository (../shared/data); absent in a user's fresh clone.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: The CORDEX ML-Bench target templates in ../shared/data (the ALPS tasmax one stands for all).
needs_mlbench_templates = pytest.mark.skipif(
    not (SHARED_DATA / "mlbench_template_tasmax_ALPS.nc").is_file(),
    reason="the ML-Bench templates are not in ../shared/data (a fresh clone has no ../shared)")


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop_process(proc: subprocess.Popen, grace: float = 20) -> None:
    """Terminate ``proc``, and kill it if it has not ended after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()


def stand_in_job(seconds: int):
    """Generator for fixtures: a live process standing in for a local training job (to be
    cancelled); yields its run-store identity and kills it afterwards. Reaped by a thread, so a
    killed job does not linger as a zombie."""
    from engine.launch.base import boot_id, proc_start_ticks, this_host
    from engine.process import TOKEN_ENV, new_token

    # The run's token in its environment is what proves it to be the run's worker (a real one
    # also shows engine.launch.worker and the run folder on its command line).
    token = new_token()
    proc = subprocess.Popen(["sleep", str(seconds)], start_new_session=True, env={**os.environ, TOKEN_ENV: token})
    threading.Thread(target=proc.wait, daemon=True).start()
    yield {"launcher": "local", "job_id": str(proc.pid), "job_start": proc_start_ticks(proc.pid),
           "job_token": token, "boot_id": boot_id(), "host": this_host()}
    if proc.poll() is None:
        proc.kill()


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip a test whose system dependency is missing on a developer's machine, but fail under CI
    (``CI`` set), where ``make test`` installs it: a missing install must not pass as a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it, so this is a broken install, not a skip)")
    pytest.skip(reason)
