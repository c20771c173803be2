"""Follow a run on the terminal: a progress bar fed by the run's events until the run ends.

Works the same for every launcher, because it reads only the run store: ``events.jsonl`` (step
and epoch events, a ``member`` field for seed ensembles) and ``status.json`` (progress, state).
The bar shows the epoch (and member), the step in the epoch, the last training loss, samples per
second and the time left; each finished epoch stays above it as one line. Where the output is
not a terminal (a pipe, CI) only those lines are printed.

Example
-------
>>> follow(run, ended=lambda: handle.status()["state"] in FINAL_STATES)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, Callable

from engine.runs import FINAL_STATES, Run


class EventTail:
    """The events appended to a run's ``events.jsonl`` since the last call (a line still being
    written is kept for the next call)."""

    def __init__(self, run: Run):
        self.path, self.offset, self._rest = run.events_path, 0, b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()  # b"" after a complete line
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a damaged line: the others still count
        return out


def epoch_line(event: dict[str, Any]) -> str:
    """One finished epoch as a line (the format ``python -m engine train`` always printed)."""
    member = f"  member {event['member']}" if "member" in event else ""

    def num(key: str, fmt: str) -> str:
        value = event.get(key)
        return format(value, fmt) if isinstance(value, (int, float)) and math.isfinite(value) else "-"

    return (f"  epoch {int(event.get('epoch', -1)):3d}{member}  train_loss {num('train_loss', '.4f')}  "
            f"val_loss {num('val_loss', '.4f')}  val_rmse {num('val_rmse', '.3f')}  "
            f"{num('samples_per_s', '.0f')} samples/s")


def follow(run: Run, ended: Callable[[], bool] | None = None, poll: float = 0.5, console=None) -> dict[str, Any]:
    """Show the run's progress until it reaches a final state (or ``ended()`` is True); return
    its status.

    Parameters
    ----------
    run : the run to follow
    ended : extra end condition (e.g. the launcher's job is gone, an inline thread returned)
    poll : seconds between reads of the run store
    console : a ``rich.console.Console`` (default: one on stdout)
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    console = console or Console(file=sys.stdout)
    cfg = _config(run)
    epochs = int(getattr(cfg.training, "epochs", 0) or 0) if cfg else 0
    members = int(getattr(cfg.training, "seeds", 1) or 1) if cfg else 1
    steps = max(1, int(cfg.training.samples_per_epoch) // max(1, int(cfg.training.batch_size))) if cfg else 0
    batch = int(cfg.training.batch_size) if cfg else 1
    tail = EventTail(run)
    rate = _Rate(batch)
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"epoch 0/{epochs}", total=100.0, info="starting")
        while True:
            for event in tail.read():
                kind = event.get("kind") or event.get("event")
                where = position(event, epochs, members)
                if kind == "step":
                    bar.update(task, description=where, info=step_info(event, steps, rate.add(event)))
                elif kind == "epoch":
                    bar.console.print(epoch_line(event), highlight=False)
                    bar.update(task, description=where, info=f"val_rmse {event.get('val_rmse', float('nan')):.3f}")
                elif kind == "message" and event.get("text"):
                    bar.console.print(f"  {event['text']}", highlight=False)
            status = run.status()
            bar.update(task, completed=100.0 * float(status.get("progress") or 0.0))
            if status.get("state") in FINAL_STATES or (ended is not None and ended()):
                for event in tail.read():  # what was written at the very end
                    if (event.get("kind") or event.get("event")) == "epoch":
                        bar.console.print(epoch_line(event), highlight=False)
                return run.status()
            time.sleep(poll)


def position(event: dict[str, Any], epochs: int, members: int = 1) -> str:
    """``epoch 3/20`` (``member 2/3`` added for seed ensembles), counted from 1."""
    where = f"epoch {int(event.get('epoch', 0)) + 1}/{epochs}"
    if "member" in event:
        where += f" member {int(event['member']) + 1}/{int(event.get('members', members))}"
    return where


def step_info(event: dict[str, Any], steps: int, speed: float | None) -> str:
    """``step 41/128  loss 0.1234  612 samples/s`` for a step event."""
    loss = event.get("train_loss")
    return (f"step {int(event.get('step', 0)) + 1}/{steps}"
            + (f"  loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
            + (f"  {speed:.0f} samples/s" if speed else ""))


class _Rate:
    """Samples per second from consecutive step events of one epoch."""

    def __init__(self, batch: int):
        self.batch, self.last = batch, None

    def add(self, event: dict[str, Any]) -> float | None:
        now, key = time.monotonic(), (event.get("epoch"), event.get("member"))
        step = int(event.get("step", 0))
        speed = None
        if self.last and self.last[0] == key and step > self.last[1] and now > self.last[2]:
            speed = (step - self.last[1]) * self.batch / (now - self.last[2])
        self.last = (key, step, now)
        return speed


def _config(run: Run):
    try:
        return run.config
    except Exception:  # an unreadable configuration still shows state and progress
        return None
