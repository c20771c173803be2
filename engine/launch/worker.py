"""The job entry point: every launcher ends up calling :func:`run_job` on a run folder.

``run_job`` trains the run (:func:`engine.training.trainer.train`, which resumes from
``checkpoints/last.pt``), then writes predictions and scores when those parts of the engine
are installed, and records the outcome in ``status.json``: ``completed``, or ``failed`` with the
error and the tail of the traceback. Only global rank 0 writes to the run store.

As a command (what the ``local`` launcher starts)::

    python -m engine.launch.worker RUN_FOLDER [--nprocs N]

With ``--nprocs N > 1`` this process supervises N ranks on this machine (torch.distributed
``env://`` variables, gloo on CPU / NCCL on GPU as Fabric chooses) and stops them all when one
fails or when it receives SIGTERM (cancel).

Rank 0 holds the run folder's exclusive lock (:class:`engine.runs.RunLock`) while it works: taken
here, or handed down by the launcher (``--lock-fd``). A job that cannot take it (another worker
runs the folder) stops before writing anything. A job that runs out of disk space fails with a
message naming the folder and the free space; ``resume`` continues once space is freed.

``FINESCALE_TRAIN_FN=module:function`` replaces the trainer by another ``function(run) -> dict``
(and skips predictions and evaluation, which need a trained network); the launcher tests and
benchmarks use it to exercise and time the machinery without training.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from engine.launch.distributed import global_rank
from engine.runs import Run, RunLock, now_iso

TRACEBACK_LINES = 25
#: Below this many free bytes, a failed write is taken for a full disk even without ENOSPC
#: (torch.save reports a full disk as "RuntimeError: ... file write failed").
LOW_SPACE_BYTES = 1 << 20
#: Locks handed down by a launcher (``--lock-fd``), by resolved run folder.
_ADOPTED: dict[str, RunLock] = {}


class JobCancelled(BaseException):
    """Raised in a local job on SIGTERM. A BaseException, so that no ``except Exception`` in the
    trainer mistakes a cancel for a failure."""


def _train_function() -> Callable[[Run], dict]:
    spec = os.environ.get("FINESCALE_TRAIN_FN")
    if spec:
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name or "train")
    from engine.training.trainer import train

    return train


def _optional(module: str, name: str) -> Callable | None:
    """``module.name`` if that part of the engine exists yet, else None. An import error inside
    an existing module is a real bug and propagates."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ModuleNotFoundError:
        return None
    return getattr(importlib.import_module(module), name, None)


def _job_identity() -> dict[str, Any]:
    ident: dict[str, Any] = {"host": socket.gethostname()}
    if os.environ.get("SLURM_JOB_ID"):
        ident["job_id"] = os.environ["SLURM_JOB_ID"]
        ident["attempt"] = int(os.environ.get("SLURM_RESTART_COUNT", 0)) + 1
    return ident


def _still_ours(run: Run) -> bool:
    """False once someone cancelled the run: a job that outlives its cancel (SLURM's KillWait)
    must not overwrite ``cancelled`` with ``completed``."""
    return run.status().get("state") != "cancelled"


def run_job(run_path: str | Path) -> dict[str, Any]:
    """Train, predict and evaluate one run folder; record the outcome in its status.

    Parameters
    ----------
    run_path : str or Path
        A run folder made by :meth:`engine.runs.RunStore.create`.

    Returns
    -------
    dict
        The trainer's summary (best epoch, losses, timings).

    Raises
    ------
    Exception
        Whatever the trainer raised, after the run was marked ``failed`` with the error and the
        traceback tail (so the launcher, too, sees a failed job).
    """
    run = Run(run_path)
    rank0 = global_rank() == 0
    lock = own_lock = None
    if rank0:
        lock = _ADOPTED.pop(str(run.path.resolve()), None)
        if lock is None:  # RunLocked: another worker runs this folder; write nothing
            lock = own_lock = run.acquire_lock(role="worker")
    try:
        return _run_locked(run, rank0)
    finally:
        if own_lock is not None:
            own_lock.release()


def _run_locked(run: Run, rank0: bool) -> dict[str, Any]:
    if rank0:
        run.update_status(state="running", started=run.status().get("started") or now_iso(),
                          error=None, traceback=None, ended=None, **_job_identity())
        run.log_event("message", text=f"job started on {socket.gethostname()} (pid {os.getpid()})")
    try:
        summary = _train_function()(run) or {}
        if rank0 and not os.environ.get("FINESCALE_TRAIN_FN"):
            for module, name, what in (("engine.inference.predict", "write_predictions", "predictions"),
                                       ("engine.evaluation.report", "evaluate_run", "evaluation")):
                fn = _optional(module, name)
                if fn is not None:
                    run.update_status(phase=what)
                    if what == "evaluation":  # its dask work on the cluster launch.dask asks for
                        from engine.launch.dask_cluster import dask_client

                        with dask_client(run.config.launch, log_directory=run.path / "dask-logs",
                                         name=f"finescale-dask-{run.run_id}"[:64]) as client:
                            if client is not None:
                                workers = len(client.scheduler_info().get("workers", {}))
                                run.log_event("message", text=f"evaluation on a dask {type(client.cluster).__name__}"
                                                              f" of {workers} worker(s) at {client.scheduler.address}")
                            fn(run)
                    else:
                        fn(run)
        if rank0 and _still_ours(run):
            run.update_status(state="completed", progress=1.0, phase=None, ended=now_iso(),
                              summary=_jsonable(summary))
        return summary
    except JobCancelled:
        if rank0:
            run.update_status(state="cancelled", ended=now_iso(), error="cancelled")
            run.log_event("message", text="cancelled")
        raise
    except Exception as exc:
        if rank0 and _still_ours(run):
            tb = traceback.format_exc().splitlines()
            error = disk_full_message(run, exc) or f"{type(exc).__name__}: {exc}"
            try:
                run.update_status(state="failed", ended=now_iso(), error=error,
                                  traceback="\n".join(tb[-TRACEBACK_LINES:]))
                run.log_event("message", text=f"failed: {error}")
            except Exception:  # the disk may be too full even for the status: say it on stderr
                print(f"finescale: {error}", file=sys.stderr, flush=True)
        raise


def disk_full_message(run: Run, exc: BaseException) -> str | None:
    """A message naming the run folder and its free space when ``exc`` comes from a full disk
    (or quota), else None."""
    seen, chain = set(), [exc]
    full = False
    while chain:
        err = chain.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            full = True
        elif "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            full = True
        chain += [err.__cause__, err.__context__]
    try:
        free = shutil.disk_usage(run.path).free
    except OSError:
        free = None
    if not full and not (free is not None and free < LOW_SPACE_BYTES and "write" in str(exc).lower()):
        return None
    space = f"{free} bytes ({free / 2**20:.1f} MiB) free" if free is not None else "free space unknown"
    return (f"no space left on the device of the run folder {str(run.path)!r} ({space}) while writing "
            f"({type(exc).__name__}: {str(exc)[:200]}); free some space, then resume the run: finished epochs "
            "are kept in checkpoints/last.pt")


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in summary.items():
        if hasattr(value, "item"):
            value = value.item()
        out[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return out


# -- the local process (and its ranks) ----------------------------------------------------------

def _on_sigterm(signum, frame):
    raise JobCancelled()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _supervise(run_path: str, nprocs: int, lock_fd: int | None = None) -> int:
    """Start ``nprocs`` ranks of this module on this machine and wait for them all."""
    env = dict(os.environ)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(nprocs),
               LOCAL_WORLD_SIZE=str(nprocs), NODE_RANK="0", GROUP_RANK="0")
    procs = []
    for rank in range(nprocs):
        cmd = [sys.executable, "-m", "engine.launch.worker", run_path, "--rank", str(rank)]
        fds: tuple[int, ...] = ()
        if rank == 0 and lock_fd is not None:  # rank 0 writes the run store: it shares our lock
            cmd += ["--lock-fd", str(lock_fd)]
            fds = (lock_fd,)
        procs.append(subprocess.Popen(cmd, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, pass_fds=fds))

    def stop_all(signum=None, frame=None):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_all)
    code = 0
    while any(p.poll() is None for p in procs):
        failed = [p for p in procs if p.poll() not in (None, 0)]
        if failed and code == 0:
            code = failed[0].returncode
            stop_all()  # one rank failed: the others would wait forever in a collective
        time.sleep(0.2)
    codes = [p.returncode for p in procs]
    code = code or next((c for c in codes if c), 0)
    run = Run(run_path)
    if code and run.status().get("state") not in ("failed", "cancelled"):
        # A rank other than 0 died (rank 0 records its own errors); say which.
        run.update_status(state="failed", ended=now_iso(),
                          error=f"rank exit codes {codes}; see logs/stderr.log for the traceback")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.launch.worker", description=__doc__.split("\n")[0])
    parser.add_argument("run_path")
    parser.add_argument("--nprocs", type=int, default=1, help="ranks to start on this machine (DDP)")
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--wait-stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lock-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lock_fd is not None:
        # The launcher took the run folder's lock and handed us the descriptor: hold it until exit.
        run = Run(args.run_path)
        _ADOPTED[str(run.path.resolve())] = RunLock(run, args.lock_fd)
    if args.wait_stdin:
        # The launcher records our pid in status.json, then closes our stdin: waiting for that
        # keeps its write and our first status write from racing.
        sys.stdin.read()
    if args.rank is None and args.nprocs > 1:
        return _supervise(args.run_path, args.nprocs, args.lock_fd)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        run_job(args.run_path)
    except JobCancelled:
        return 143
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
