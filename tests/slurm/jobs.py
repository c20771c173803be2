"""Stand-in training functions for the launcher tests and benchmarks (``FINESCALE_TRAIN_FN``).

They use the run store the way the trainer does (epoch events, an atomic ``checkpoints/last.pt``,
resume after the last completed epoch) without building a network, so that the launch
machinery can be tested and timed apart from the trainer.
"""

from __future__ import annotations

import json
import os
import time

from engine.runs import Run, write_text_atomic


def noop(run: Run) -> dict:
    """Returns at once: measures the launcher's own overhead."""
    return {"ok": 1}


def fail(run: Run) -> dict:
    raise ValueError("deliberate failure in tests.slurm.jobs.fail (launcher test)")


def epochs(run: Run) -> dict:
    """``training.epochs`` epochs of ``$FINESCALE_TEST_EPOCH_S`` seconds (default 0.5), each
    ending with an atomic checkpoint and then its event; resumes after the last completed one."""
    seconds = float(os.environ.get("FINESCALE_TEST_EPOCH_S", "0.5"))
    total = run.config.training.epochs
    last = run.checkpoint("last")
    saved = json.loads(last.read_text()) if last.exists() else None
    start = saved["epoch"] + 1 if saved else 0
    if saved and saved["epoch"] not in {e["epoch"] for e in run.epochs()}:
        # killed between checkpoint and event: write the event back, as EpochLoop.resume does
        run.log_event("epoch", **saved["metrics"], restored=True)
    run.update_status(state="running")
    run.log_event("start", epoch=start)
    for epoch in range(start, total):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # busy in small steps, like a training loop
            time.sleep(0.01)
        metrics = {"epoch": epoch, "train_loss": 1.0 / (epoch + 1)}
        # checkpoint first, event after (as EpochLoop does); large enough that a kill can land mid-write
        write_text_atomic(last, json.dumps({"epoch": epoch, "metrics": metrics, "pad": "x" * 200_000}))
        run.log_event("epoch", **metrics)
        run.update_status(progress=(epoch + 1) / total, epoch=epoch)
    return {"epoch": total - 1}
