"""Training speed of the default settings against every precision x memory format x threads
combination on the machine it runs on.

``python -m benchmarks.speed`` trains the reference network (DL4DS's configuration: ResNet-SPC,
8 filters, 4 blocks, 128 x 128 HR patches, x4, batch 16, elevation as the static field, MAE)
with the real trainer (:func:`engine.training.trainer.train`, through the run store) once with
the defaults (``training.precision: auto``, ``channels_last: auto``, threads and workers from
the CPUs, see :mod:`engine.hardware`) and once per combination of

- precision: ``32-true``, ``bf16-mixed`` (``16-mixed`` too on a GPU),
- memory format: channels-last, NCHW,
- intra-op threads: 1 and the CPUs of the job (the default's count), on CPU,

each in rounds (every setting once per round, ``--rounds`` rounds, the best epoch rate of each
kept: on a shared machine the best is the least disturbed measurement). It prints a Markdown table
with samples/s, the ratio to the best and the data wait, and **exits 1 when the default is slower
than 0.9x the best combination** (and 0 otherwise).

``--emulate avx2`` measures the same as an AVX2-only CPU would (it re-runs itself with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``: oneDNN and ATen then use AVX2 kernels and
:mod:`engine.hardware` sees no native bf16), where the target is default >= 0.95x float32.
``--overhead`` adds the framework against a minimal hand-written loop on the same batches.

Options: ``--epochs`` (timed epochs after one warm-up epoch), ``--samples`` (per epoch),
``--patch``, ``--filters``, ``--blocks``, ``--batch``, ``--workers`` (extra rows with that many
DataLoader workers), ``--rounds``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time

import torch

from engine import hardware
from engine.config import ExperimentConfig
from engine.runs import RunStore

EMULATIONS = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def speed_config(args, **training) -> ExperimentConfig:
    cfg = ExperimentConfig(name="speed").replace(
        data={"patch_size": args.patch, "static": ["elevation"]},
        model={"backbone": "resnet", "upsampling": "spc", "filters": args.filters, "blocks": args.blocks},
        training={"epochs": args.epochs + 1, "samples_per_epoch": args.samples, "batch_size": args.batch,
                  "patience": 100, "loss": "mae", "lr_schedule": "constant"},
        launch={"launcher": "inline"},
    )
    data = {k: training.pop(k) for k in ("workers",) if k in training}
    return cfg.replace(training=training, data=data).validate()


def framework_speed(cfg: ExperimentConfig, root: str) -> dict:
    """Samples/s and data wait of the real trainer (the first epoch warms up and is not counted)."""
    from engine.training.trainer import train

    run = RunStore(root).create(cfg)
    train(run)
    epochs = run.epochs()[1:]
    return {"samples_per_s": max(e["samples_per_s"] for e in epochs),
            "data_wait": min(e["data_wait_fraction"] for e in epochs),
            "parameters": run.status()["parameters"], "hardware": run.status().get("hardware", "")}


def settings(args, device: str, default: hardware.Decision) -> list[tuple[str, dict]]:
    """(label, training overrides) of the default and of every combination."""
    precisions = ["32-true", "bf16-mixed"] + (["16-mixed"] if device == "cuda" else [])
    # 1 thread, the default's count and the whole allocation (the default may use fewer when
    # other processes keep CPUs busy)
    threads = sorted({1, default.threads, max(1, default.cpus - default.workers)}) if device == "cpu" \
        else [default.threads]
    rows = [("default (auto)", {})]
    for precision, cl, n in itertools.product(precisions, (True, False), threads):
        label = f"{precision}, {'channels-last' if cl else 'NCHW'}, {n} thread(s)"
        rows.append((label, {"precision": precision, "channels_last": cl, "threads": n}))
    for w in args.workers:
        rows.append((f"default with {w} worker(s)", {"workers": w}))
        rows.append((f"default with {w} worker(s), {max(1, default.threads - w)} thread(s)",
                     {"workers": w, "threads": max(1, default.threads - w)}))
    return rows


def minimal_speed(cfg: ExperimentConfig) -> float:
    """The same network and batches in the plainest loop we would write by hand (``--overhead``)."""
    from torch.utils.data import DataLoader

    from engine.data.pairing import make_pair
    from engine.data.torch_dataset import DownscalingDataset
    from engine.models import build_model
    from engine.training.loop import fit_normaliser
    from engine.training.losses import build_loss

    d = hardware.decide(cfg)
    hardware.apply_threads(d)
    t = cfg.training
    torch.manual_seed(t.seed)
    pair = make_pair(cfg.data)
    normaliser = fit_normaliser(cfg, pair)
    dataset = DownscalingDataset(pair, normaliser, cfg.data.train_period, patch_size=cfg.data.patch_size,
                                 samples_per_epoch=t.samples_per_epoch, seed=t.seed)
    batches = list(DataLoader(dataset, batch_size=t.batch_size, drop_last=True))
    cl = torch.channels_last
    batches = [{k: (v.contiguous(memory_format=cl) if d.channels_last and v.ndim == 4 else v) for k, v in b.items()}
               for b in batches]
    model = build_model(cfg.model, len(dataset.input_channels), len(dataset.static_channels), pair.scale)
    if d.channels_last:
        model = model.to(memory_format=cl)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    loss_fn = build_loss(t.loss)

    def epoch() -> float:
        start = time.perf_counter()
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=d.precision == "bf16-mixed"):
                pred = model(b["x"], b["static_hr"])
            loss = loss_fn(pred.float(), b["y"], b["mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return len(batches) * t.batch_size / (time.perf_counter() - start)

    epoch()
    return max(epoch() for _ in range(t.epochs - 1))


def measure(args) -> int:
    base = speed_config(args)
    default = hardware.decide(base)
    device = default.device
    rows = settings(args, device, default)
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="finescale-speed-") as root:
        for _ in range(args.rounds):
            for label, overrides in rows:
                result = framework_speed(speed_config(args, **overrides), root)
                if label not in best or result["samples_per_s"] > best[label]["samples_per_s"]:
                    best[label] = {**result, "data_wait": min(result["data_wait"],
                                                              best.get(label, result)["data_wait"])}
        overhead = minimal_speed(base) if args.overhead else None
    fastest = max(r["samples_per_s"] for r in best.values())
    fw = best["default (auto)"]
    float32 = max(r["samples_per_s"] for label, r in best.items() if label.startswith("32-true"))
    emul = f" (emulating {args.emulate}: {' '.join(f'{k}={v}' for k, v in EMULATIONS[args.emulate].items())})" \
        if args.emulate else ""
    print(f"Training speed, resnet+spc ({fw['parameters']:,} parameters, {args.filters} filters, {args.blocks} blocks), "
          f"{base.data.highres} x{base.data.scale}, {args.patch}x{args.patch} HR patches, batch {args.batch}, "
          f"{hardware._cpu_model()}, torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}{emul}; best of {args.rounds} round(s) of {args.epochs} "
          f"timed epoch(s) x {args.samples} samples\n")
    print(f"Default: {fw['hardware']}\n")
    print("| settings | samples/s | ratio to best | data wait |")
    print("|---|---:|---:|---:|")
    for label, _ in rows:
        r = best[label]
        print(f"| {label} | {r['samples_per_s']:.1f} | {r['samples_per_s'] / fastest:.2f} | {100 * r['data_wait']:.1f} % |")
    if overhead is not None:
        print(f"| minimal PyTorch loop, default settings (pre-loaded batches) | {overhead:.1f} | "
              f"{overhead / fastest:.2f} | 0 % |")
    ratio = fw["samples_per_s"] / fastest
    print(f"\ndefault / best = {ratio:.2f}; default / best float32 = {fw['samples_per_s'] / float32:.2f}; "
          f"default data wait = {100 * fw['data_wait']:.1f} %")
    if ratio < 0.9:
        print(f"FAIL: the default is slower than 0.9x the best combination ({ratio:.2f})")
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="extra rows with N DataLoader workers")
    parser.add_argument("--overhead", action="store_true", help="also time a minimal hand-written loop")
    parser.add_argument("--emulate", choices=sorted(EMULATIONS), default=None,
                        help="measure as a CPU with only this instruction set would")
    args = parser.parse_args(argv)
    if args.emulate and any(os.environ.get(k) != v for k, v in EMULATIONS[args.emulate].items()):
        # oneDNN and ATen read these once, at start: run again in a fresh process.
        env = {**os.environ, **EMULATIONS[args.emulate]}
        argv = sys.argv[1:] if argv is None else list(argv)
        return subprocess.run([sys.executable, "-m", "benchmarks.speed", *argv], env=env).returncode
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
