"""Scale: training from stores larger than memory, with memory bounded by blocks, not by the data.

``python -m benchmarks.scale`` writes synthetic Zarr stores of 1, 4 and 16 GiB and one of about
30 GiB (more than this machine's 24 GiB of memory), trains a fixed number of steps on each through the
real path (catalogue -> pairing -> normaliser -> dataset -> DataLoader -> trainer, ``train(run)`` in a
fresh process) and prints a Markdown table:

- **peak memory** of the training process and its DataLoader workers, polled from ``/proc`` every
  0.2 s: the sum of their proportional set sizes (PSS: pages shared between the forked workers and
  the main process counted once), with the main process's own peak RSS beside it;
- **setup**: pairing and the normalisation statistics: one streaming pass over the store for the mask
  and the statistics together (:mod:`engine.data.datapass`; its own time beside it), or none when the
  pass cache holds them (:mod:`engine.data.passcache`; each row starts with an empty cache except the
  ``cached`` rows of ``--cached``); with the default ``data.statistics_sample: auto`` a store whose
  target exceeds 1 GiB is read as a stratified sample of about 1 GiB (the "statistics from" column
  says how many steps); **job start -> first batch**: from the child's start (configuration
  read) to the first batch any DataLoader yields, everything the job does before training included;
  **DataLoader -> first batch**: worker start and the first block read only;
- **samples/s** and **data wait** (fraction of the step time spent waiting for data) of the second
  epoch (the first warms up).

The ``in-memory`` row trains on the first store listed (1 GiB by default) with the whole training period read as one block
(``engine.data.blocks.BLOCK_BYTES = inf``: the old behaviour, everything loaded and normalised up
front) for the throughput ratio. Stores are deleted afterwards unless ``--keep``; ``--dir`` says where
they go (default: a temporary folder). Each row kind is one function (:data:`ROWS`), so other kinds
(prediction, evaluation) add their own.

Targets (issue 10): peak memory <= 2 GiB and flat (within 20 %) across sizes; first batch <= 30 s at
every size; lazy samples/s >= 0.8 x in-memory on the 1 GiB store.

Options: ``--sizes 1,4,16,30`` (GiB), ``--grid 512`` (HR edge), ``--steps`` (batches per epoch),
``--batch``, ``--patch``, ``--workers``, ``--cold`` (page cache emptied before each row, root only), ``--repeat`` (in-memory/lazy pairs on the first size; the
ratio is of the medians), ``--cached 16`` (a second lazy row on those sizes, with the pass cache), ``--compress``, ``--no-memory-row``, ``--dir``, ``--keep``, ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

GIB = 2**30
CHUNK_STEPS = 32  # time steps per storage chunk (32 MiB at 512 x 512)
VARIABLE = "t2m"


# -- stores -----------------------------------------------------------------------------------
def write_store(path: Path, gib: float, grid: int, chunk: int = CHUNK_STEPS, compress: bool = False) -> dict:
    """A daily Zarr store of ``gib`` GiB: ``t2m (time, lat, lon)`` float32 on a ``grid`` x ``grid``
    regular grid, chunked by ``chunk`` time steps, written chunk by chunk with dask (memory: a few
    chunks). Field: a fixed spatial pattern, a seasonal cycle and uniform noise (seeded per chunk).
    ``compress``: Zarr's default codec (zstd) instead of raw chunks."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    steps = max(chunk, int(round(gib * GIB / (grid * grid * 4) / chunk)) * chunk)
    y, x = np.meshgrid(np.linspace(0, 1, grid), np.linspace(0, 1, grid), indexing="ij")
    base = (280 + 6 * np.sin(3 * np.pi * x) * np.cos(2 * np.pi * y) - 8 * y).astype(np.float32)

    def field(block_info=None):
        (t0, t1), _, _ = block_info[None]["array-location"]
        rng = np.random.default_rng(t0)
        season = (10 * np.sin(2 * np.pi * np.arange(t0, t1) / 365.25)).astype(np.float32)
        return base[None] + season[:, None, None] + 4 * rng.random((t1 - t0, grid, grid), dtype=np.float32) - 2

    data = da.map_blocks(field, chunks=((chunk,) * (steps // chunk), (grid,), (grid,)), dtype=np.float32)
    ds = xr.Dataset(
        {VARIABLE: (("time", "lat", "lon"), data, {"units": "K", "long_name": "2 m air temperature"})},
        coords={
            "time": pd.date_range("1950-01-01", periods=steps, freq="D"),
            "lat": ("lat", np.linspace(40.0, 40.0 + 0.02 * (grid - 1), grid),
                    {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", np.linspace(0.0, 0.02 * (grid - 1), grid),
                    {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )
    start = time.perf_counter()
    # Uncompressed: noise does not compress, and decompression would dominate the reads on two shared
    # cores (measured 3.8 x slower reads with zstd); a compressed archive costs more CPU per block.
    encoding = {} if compress else {VARIABLE: {"compressors": None}}
    ds.to_zarr(path, mode="w", consolidated=False, encoding=encoding)
    return {"steps": steps, "bytes": steps * grid * grid * 4, "write_s": time.perf_counter() - start}


def catalog_for(store: Path) -> Path:
    """An intake catalogue with one entry, ``scale_store``, for ``store`` (next to it)."""
    path = store.parent / f"{store.name}.yaml"
    text = (
        "sources:\n"
        "  scale_store:\n"
        "    driver: zarr\n"
        f"    args: {{urlpath: \"{store}\", chunks: {{}}, consolidated: false}}\n"
        "    metadata:\n"
        "      role: highres\n"
        f"      variables: {{{VARIABLE}: {{units: K, long_name: 2 m air temperature}}}}\n"
    )
    if not path.exists() or path.read_text() != text:  # rewritten only when it changes (the pass cache keys on it)
        path.write_text(text)
    return path


def periods(steps: int) -> dict[str, list[str]]:
    """Training on all but the last 24 days; 16 days of validation, 8 of test."""
    import pandas as pd

    t = pd.date_range("1950-01-01", periods=steps, freq="D")
    day = lambda i: str(t[i].date())  # noqa: E731
    return {"train_period": [day(0), day(steps - 25)], "val_period": [day(steps - 24), day(steps - 9)],
            "test_period": [day(steps - 8), day(steps - 1)]}


# -- memory of a process tree ---------------------------------------------------------------------
def _smaps(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in bytes from /proc/<pid>/smaps_rollup; zeros once it has gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def _children(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                kids = [int(k) for k in fh.read().split()]
        except OSError:
            kids = []
        out.extend(kids)
        todo.extend(kids)
    return out


class TreeMemory(threading.Thread):
    """Polls a process and its descendants (DataLoader workers); keeps the peaks."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_pss = self.peak_rss_sum = self.peak_main_rss = 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            main = _smaps(self.pid)
            kids = [_smaps(k) for k in _children(self.pid)]
            self.peak_main_rss = max(self.peak_main_rss, main[0])
            self.peak_rss_sum = max(self.peak_rss_sum, main[0] + sum(k[0] for k in kids))
            self.peak_pss = max(self.peak_pss, main[1] + sum(k[1] for k in kids))
            self._stop_event.wait(self.every)

    def stop(self):
        self._stop_event.set()
        self.join()


def _child(args: list[str], timeout: float = 3600, module: str = "benchmarks.scale",
           one_thread: bool = True) -> tuple[dict, TreeMemory]:
    """Run ``python -m <module> --child ...`` and poll its memory; its last stdout line is JSON.
    ``one_thread`` pins OMP_NUM_THREADS=1 (the training rows); False keeps the automatic threads."""
    env = dict(os.environ, OMP_NUM_THREADS="1") if one_thread else dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    mem = TreeMemory(proc.pid)
    mem.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        mem.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), mem


# -- rows ---------------------------------------------------------------------------------------
def train_row(store: Path, info: dict, args, mode: str = "lazy", cached: bool = False) -> dict:
    """Train ``args.steps`` batches x 2 epochs on ``store`` in a fresh process; ``mode`` "lazy" (the
    default block budget) or "in-memory" (the whole training period as one block). Each row starts
    with an empty pass cache (:mod:`engine.data.passcache`: mask and statistics read from the store),
    except ``cached`` ones, which find what the previous row on the same store left there."""
    cache = store.parent / f"{store.name}.cache"
    if not cached:
        shutil.rmtree(cache, ignore_errors=True)
    if getattr(args, "cold", False) and not cached:
        drop_page_cache()
    os.environ["FINESCALE_DATA"] = str(cache)
    result, mem = _child(["--child", "train", "--store", str(store), "--store-steps", str(info["steps"]),
                          "--mode", mode, "--steps", str(args.steps), "--batch", str(args.batch),
                          "--patch", str(args.patch), "--workers", str(args.workers)])
    if cached:
        mode = f"{mode}, cached"
    return {"kind": "train", "mode": mode, "store_gib": info["bytes"] / GIB, "steps": info["steps"],
            "peak_pss_gib": mem.peak_pss / GIB, "peak_rss_sum_gib": mem.peak_rss_sum / GIB,
            "peak_main_rss_gib": mem.peak_main_rss / GIB, **result}


def drop_page_cache() -> None:
    """Empty the kernel's page cache (``--cold``), so the row reads the store from disk as a job on an
    archive written long ago would; root only (``/proc/sys/vm/drop_caches``)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"--cold needs to write /proc/sys/vm/drop_caches (root): {exc}") from None


#: Row kinds: name -> function(store, info, args) -> dict. Prediction/evaluation rows add theirs.
ROWS = {"train": train_row}


def child_train(args) -> dict:
    """In the child process: train through the run store and report the timings."""
    from engine.config import ExperimentConfig
    from engine.data import blocks
    from engine.runs import RunStore
    from engine.training import trainer

    job_start = time.perf_counter()  # the job starts here: configuration read, then everything up to training
    first_batch_at: list[float] = []
    from torch.utils.data import dataloader

    next_batch = dataloader._BaseDataLoaderIter.__next__

    def timed_next(self):  # the first batch any DataLoader yields is the first training batch
        out = next_batch(self)
        if not first_batch_at:
            first_batch_at.append(time.perf_counter())
        return out

    dataloader._BaseDataLoaderIter.__next__ = timed_next
    if args.mode == "in-memory":
        blocks.BLOCK_BYTES = math.inf  # the whole training period read and normalised up front
    store = Path(args.store)
    os.environ["FINESCALE_DATA_ROOTS"] = str(store.parent)  # the catalogue and store are a site's data
    cfg = ExperimentConfig(name=f"scale-{args.mode}").replace(
        data={"highres": "scale_store", "catalog": str(catalog_for(store)), "variable": VARIABLE, "scale": 4,
              "patch_size": args.patch, "static": [], "workers": args.workers, **periods(args.store_steps)},
        model={"backbone": "resnet", "upsampling": "spc", "filters": 16, "blocks": 2},
        training={"epochs": 2, "samples_per_epoch": args.steps * args.batch, "batch_size": args.batch,
                  "precision": "32-true", "threads": 1, "patience": 10, "loss": "mae", "lr_schedule": "constant"},
        launch={"launcher": "inline"},
    )
    setup: dict[str, float] = {}
    prepare = trainer.prepare_data

    def timed_prepare(*a, **k):  # pairing + statistics + datasets, timed
        start = time.perf_counter()
        out = prepare(*a, **k)
        setup["setup_s"] = time.perf_counter() - start
        setup["statistics"] = out.normaliser.origin  # prepass (pairing's one pass), cache, or pass
        setup["pass_s"] = float(getattr(out.pair.prepass, "seconds", 0.0))
        sampled = getattr(out.pair.prepass, "sampled", None)  # data.statistics_sample: auto samples a large store
        if sampled:
            setup["statistics"] += f", sample of {sampled}/{out.pair.prepass.train_steps} steps"
        return out

    trainer.prepare_data = timed_prepare
    with tempfile.TemporaryDirectory() as root:
        run = RunStore(root).create(cfg)
        trainer.train(run)
        epochs = run.epochs()
    first, last = epochs[0], epochs[-1]
    return {**setup, "first_batch_s": first["first_batch_seconds"], "job_first_batch_s": first_batch_at[0] - job_start,
            "samples_per_s": last["samples_per_s"],
            "data_wait": last["data_wait_fraction"], "epoch_s": last["seconds"]}


# -- table --------------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    head = ("| row | store (GiB) | time steps | peak PSS, process + workers (GiB) | peak RSS main (GiB) | "
            "setup: pairing + statistics (s) | of which the data pass (s) | statistics from | "
            "job start -> first batch (s) | DataLoader -> first batch (s) | samples/s | data wait |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['kind']} {r['mode']} | {r['store_gib']:.1f} | {r['steps']} | {r['peak_pss_gib']:.2f} | "
            f"{r['peak_main_rss_gib']:.2f} | {r['setup_s']:.1f} | {r.get('pass_s', float('nan')):.1f} | "
            f"{r.get('statistics', '?')} | {r.get('job_first_batch_s', float('nan')):.1f} | {r['first_batch_s']:.1f} | "
            f"{r['samples_per_s']:.0f} | {r['data_wait']:.1%} |"
        )
    return "\n".join(lines)


def verdict(rows: list[dict]) -> list[str]:
    """The issue's targets, each with its measured value."""
    lazy = [r for r in rows if r["kind"] == "train" and r["mode"].startswith("lazy")]
    mem = [r for r in rows if r["kind"] == "train" and r["mode"] == "in-memory"]
    out = []
    if lazy:
        peaks = [r["peak_pss_gib"] for r in lazy]
        out.append(f"peak memory <= 2 GiB: {'met' if max(peaks) <= 2 else 'MISSED'} (max {max(peaks):.2f} GiB)")
        spread = (max(peaks) - min(peaks)) / min(peaks)
        out.append(f"flat within 20 % across sizes: {'met' if spread <= 0.2 else 'MISSED'} (spread {spread:.0%})")
        for label, group in (("first run on a store", [r for r in lazy if "cached" not in r["mode"]]),
                             ("again on an unchanged store (pass cache)", [r for r in lazy if "cached" in r["mode"]])):
            if group:
                fb = [r["job_first_batch_s"] for r in group]
                each = ", ".join(f"{r['store_gib']:g} GiB {r['job_first_batch_s']:.0f} s" for r in group)
                out.append(f"first batch <= 30 s from the job's start, {label}: "
                           f"{'met' if max(fb) <= 30 else 'MISSED'} ({each})")
        if mem:  # medians over the repeated pairs on the in-memory row's store
            same = [r["samples_per_s"] for r in lazy if r["store_gib"] == mem[0]["store_gib"] and r["mode"] == "lazy"]
            ratio = float(np.median(same) / np.median([r["samples_per_s"] for r in mem]))
            out.append(f"samples/s >= 0.8 x in-memory ({mem[0]['store_gib']:.0f} GiB store, median of "
                       f"{len(mem)} pair(s)): {'met' if ratio >= 0.8 else 'MISSED'} ({ratio:.2f} x)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,4,16,30", help="store sizes in GiB (comma-separated)")
    p.add_argument("--grid", type=int, default=512, help="HR grid edge (cells)")
    p.add_argument("--steps", type=int, default=150, help="training batches per epoch (2 epochs)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    p.add_argument("--no-memory-row", action="store_true", help="skip the in-memory row")
    p.add_argument("--repeat", type=int, default=1, help="in-memory/lazy pairs on the first size (median ratio)")
    p.add_argument("--compress", action="store_true", help="write the stores with Zarr's default codec (zstd)")
    p.add_argument("--cold", action="store_true",
                   help="empty the page cache before each first-run row (root): the store is read from disk")
    p.add_argument("--cached", default="", help="sizes (GiB) on which a second lazy row runs with the pass cache "
                                                "the first left (engine.data.passcache)")
    p.add_argument("--dir", default=None, help="folder for the stores (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the stores (reused when present)")
    p.add_argument("--out", default=None, help="write the table (Markdown) to this file")
    p.add_argument("--predict", default=None, metavar="DAYS",
                   help="add prediction and evaluation rows (benchmarks.scale_predict) on a 2 x --grid grid "
                        "(1024 by default) for these test lengths in days, e.g. 365")
    # the child process
    p.add_argument("--child", choices=sorted(ROWS), help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--store-steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="lazy", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child == "train":
        print(json.dumps(child_train(args)))
        return 0

    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    cached_sizes = [float(s) for s in (args.cached or "").split(",") if s.strip()]
    folder = Path(args.dir or tempfile.mkdtemp(prefix="finescale-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for gib in sizes:
            store = folder / f"scale_{gib:g}gib.zarr"
            info_path = folder / f"scale_{gib:g}gib.json"
            if args.keep and info_path.exists() and store.exists():
                info = json.loads(info_path.read_text())
            else:
                shutil.rmtree(store, ignore_errors=True)
                info = write_store(store, gib, args.grid, compress=args.compress)
                info_path.write_text(json.dumps(info))
            print(f"# {gib:g} GiB store: {info['steps']} steps, written in {info['write_s']:.0f} s", flush=True)
            # On the first size listed: in-memory and lazy alternated --repeat times (on a shared,
            # loaded machine one pair of runs can differ by 2 x in speed for reasons of its own).
            first = gib == sizes[0] and not args.no_memory_row
            for _ in range(args.repeat if first else 1):
                for mode in (("in-memory", "lazy") if first else ("lazy",)):
                    rows.append(train_row(store, info, args, mode=mode))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
            if gib in cached_sizes:  # the same job again: mask and statistics from the pass cache
                rows.append(train_row(store, info, args, mode="lazy", cached=True))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
            shutil.rmtree(store.parent / f"{store.name}.cache", ignore_errors=True)
            if not args.keep:
                shutil.rmtree(store, ignore_errors=True)
                info_path.unlink(missing_ok=True)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    text = table(rows) + "\n\n" + "\n".join(f"- {v}" for v in verdict(rows))
    if args.predict:  # prediction and evaluation of a period of daily fields (their own table)
        from benchmarks import scale_predict

        with tempfile.TemporaryDirectory(prefix="finescale-scale-predict-", dir=args.dir) as tmp:
            more = scale_predict.prediction_rows(Path(tmp), 2 * args.grid, [int(d) for d in args.predict.split(",")])
        text += "\n\n" + scale_predict.table(more) + "\n\n" + "\n".join(f"- {v}" for v in scale_predict.verdict(more))
    print("\n" + text)
    if args.out:
        cmd = "python -m benchmarks.scale " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.out).write_text(f"# Scale benchmark\n\n`{cmd}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
