"""Launcher overheads and CPU data-parallel scaling.

``python -m benchmarks.launch`` measures

1. **submit-to-start latency** (from the ``submit()`` call to the first line of the training
   function in the job) and **overhead per job** (``submit()`` to ``wait()`` returning, for a job
   that does nothing) for the ``local`` and ``slurm`` launchers. SLURM is measured when a
   controller answers, or after starting the single-node cluster of ``scripts/slurm-cluster.sh``
   (root; stopped afterwards);
2. **DDP scaling on CPU**: the real trainer (tiny ResNet on the demo data) through the local
   launcher with 1 and 2 processes, same samples per epoch and per-process batch (2 processes take
   half the steps, each on a global batch twice as large), with the automatic precision, thread and
   worker settings (:mod:`engine.hardware`: each rank takes its share of the CPUs); samples/s of
   the last epoch, the speed-up and the efficiency ``sps(2) / (2 sps(1))``.

Prints Markdown tables. Options: ``--repeats`` (jobs per launcher), ``--samples`` (samples per
epoch for the scaling runs), ``--no-slurm``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from engine.config import ExperimentConfig
from engine.launch import get_launcher, submit
from engine.runs import Run, RunStore

ROOT = Path(__file__).resolve().parents[1]


def stamp_job(run: Run) -> dict:
    """The job for the latency figures: record when it started, do nothing else."""
    (run.path / "started.json").write_text(json.dumps({"t": time.time()}))
    return {}


def _controller_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


def latency(launcher: str, repeats: int, root: Path) -> dict:
    os.environ["FINESCALE_TRAIN_FN"] = "benchmarks.launch:stamp_job"
    cfg = ExperimentConfig(name=f"bench-{launcher}").replace(launch={"launcher": launcher, "time": "5",
                                                                     "cpus_per_task": 1})
    starts, totals = [], []
    try:
        for _ in range(repeats):
            t0 = time.time()
            # the launcher's start() skips config validation (which imports every plugin) so that
            # the figure is the launcher's own cost; submit() adds the validation.
            launch = get_launcher(launcher)
            launch.check(cfg)
            handle = launch.start(RunStore(root / launcher).create(cfg))
            state = handle.wait(timeout=300, poll=0.05)
            totals.append(time.time() - t0)
            if state != "completed":
                raise RuntimeError(f"{launcher} job ended {state}: {handle.status().get('error')}")
            starts.append(json.loads((handle.run.path / "started.json").read_text())["t"] - t0)
    finally:
        os.environ.pop("FINESCALE_TRAIN_FN", None)
    return {"launcher": launcher, "jobs": repeats, "start_s": statistics.median(starts),
            "start_min_s": min(starts), "overhead_s": statistics.median(totals)}


def scaling(samples: int, root: Path) -> list[dict]:
    # The trainer itself as the job function: predictions and evaluation are not part of the figure.
    os.environ["FINESCALE_TRAIN_FN"] = "engine.training.trainer:train"
    # Threads, workers and precision are the product's automatic settings (engine.hardware): each
    # rank takes its share of this machine's CPUs, less those other processes keep busy; the
    # decision of every run is read back from its hardware.json.
    rows = []
    try:
        for procs in (1, 2):
            cfg = ExperimentConfig(name=f"ddp{procs}").replace(
                data={"patch_size": 32}, model={"filters": 16, "blocks": 2},
                training={"epochs": 3, "samples_per_epoch": samples, "batch_size": 16, "patience": 100},
                launch={"launcher": "local", "tasks_per_node": procs},
            )
            handle = submit(cfg, RunStore(root / f"ddp{procs}"))
            state = handle.wait(timeout=1200)
            if state != "completed":
                raise RuntimeError(f"DDP run with {procs} process(es) ended {state}: {handle.status().get('error')}")
            last = handle.run.epochs()[-1]
            decided = json.loads((handle.run.path / "hardware.json").read_text())
            rows.append({"processes": procs, "samples_per_s": last["samples_per_s"], "epoch_s": last["seconds"],
                         "samples_per_epoch": samples, "threads": decided["threads"], "workers": decided["workers"],
                         "precision": decided["precision"]})
    finally:
        os.environ.pop("FINESCALE_TRAIN_FN", None)
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["efficiency"] = row["samples_per_s"] / (row["processes"] * base)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launch", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--no-slurm", action="store_true")
    args = parser.parse_args(argv)

    started_cluster = False
    with tempfile.TemporaryDirectory(prefix="finescale-bench-launch-") as tmp:
        root = Path(tmp)
        rows = [latency("local", args.repeats, root)]
        if not args.no_slurm:
            if not _controller_answers() and os.geteuid() == 0 and shutil.which("slurmctld"):
                subprocess.run(["bash", str(ROOT / "scripts" / "slurm-cluster.sh"), "start"], check=True)
                started_cluster = True
            try:
                if _controller_answers():
                    rows.append(latency("slurm", args.repeats, root))
                else:
                    print("(no SLURM controller and cannot start one: slurm row skipped)")
            finally:
                if started_cluster:
                    subprocess.run(["bash", str(ROOT / "scripts" / "slurm-cluster.sh"), "stop"], check=False)
        print("\n## Launcher latency (job that does nothing)\n")
        print("| launcher | jobs | submit-to-start median (s) | min (s) | submit-to-done median (s) |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['launcher']} | {r['jobs']} | {r['start_s']:.2f} | {r['start_min_s']:.2f} | {r['overhead_s']:.2f} |")

        scale = scaling(args.samples, root)
        print(f"\n## DDP on CPU (local launcher, gloo; {args.samples} samples per epoch shared by the processes, "
              f"batch 16 per process, last of 3 epochs; {os.cpu_count()} CPU cores, automatic thread settings, "
              f"load average {os.getloadavg()[0]:.1f} at the end)\n")
        print("| processes | threads per process | workers | precision | samples/s | epoch (s) | speed-up | efficiency |")
        print("|---|---|---|---|---|---|---|---|")
        for r in scale:
            print(f"| {r['processes']} | {r['threads']} | {r['workers']} | {r['precision']} | {r['samples_per_s']:.1f} | "
                  f"{r['epoch_s']:.2f} | {r['samples_per_s'] / scale[0]['samples_per_s']:.2f}x | {r['efficiency']:.2f} |")


if __name__ == "__main__":
    main()
