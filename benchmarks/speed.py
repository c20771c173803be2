"""Training speed of the framework against a minimal hand-written PyTorch loop.

``python -m benchmarks.speed`` trains the ResNet-SPC model with the real trainer
(:func:`engine.training.trainer.train`, through the run store) and then trains the *same network*
on the *same tensors* (the batches the framework's dataset yields, materialised beforehand) with a
bare loop using the same precision and memory format. The ratio of the two is the framework's
overhead; the trainer's own ``data_wait_fraction`` tells how much of a step waits for data.

All are measured in one process (minimal, framework, minimal again), so the ratio is meaningful on a
shared, noisy machine even when the absolute figures are not. Prints a table (Markdown).

Options: ``--epochs`` (timed epochs after one warm-up epoch), ``--samples`` (samples per epoch),
``--patch`` (HR patch size), ``--filters``, ``--blocks``, ``--precision``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from engine.config import ExperimentConfig
from engine.data.pairing import make_pair
from engine.data.torch_dataset import DownscalingDataset
from engine.models import build_model, count_parameters
from engine.runs import RunStore
from engine.training.losses import build_loss
from engine.training.loop import fit_normaliser
from engine.training.trainer import train


def speed_config(args) -> ExperimentConfig:
    return ExperimentConfig(name="speed").replace(
        data={"patch_size": args.patch, "static": ["elevation"]},
        model={"backbone": "resnet", "upsampling": "spc", "filters": args.filters, "blocks": args.blocks},
        training={"epochs": args.epochs + 1, "samples_per_epoch": args.samples, "batch_size": args.batch,
                  "precision": args.precision, "patience": 100, "loss": "mae"},
        launch={"launcher": "inline"},
    ).validate()


def framework_speed(cfg: ExperimentConfig, root: str) -> dict[str, float]:
    run = RunStore(root).create(cfg)
    train(run)
    epochs = run.epochs()[1:]  # the first epoch warms up (allocations, autocast caches)
    return {
        "samples_per_s": sum(e["samples_per_s"] for e in epochs) / len(epochs),
        "data_wait": sum(e["data_wait_fraction"] for e in epochs) / len(epochs),
        "parameters": run.status()["parameters"],
    }


def minimal_speed(cfg: ExperimentConfig) -> float:
    """The same network and batches in the plainest loop we would write by hand."""
    t = cfg.training
    torch.manual_seed(t.seed)
    pair = make_pair(cfg.data)
    normaliser = fit_normaliser(cfg, pair)
    dataset = DownscalingDataset(pair, normaliser, cfg.data.train_period, patch_size=cfg.data.patch_size,
                                 samples_per_epoch=t.samples_per_epoch, seed=t.seed)
    batches = list(DataLoader(dataset, batch_size=t.batch_size, drop_last=True))
    cl = torch.channels_last
    batches = [{k: (v.contiguous(memory_format=cl) if t.channels_last and v.ndim == 4 else v) for k, v in b.items()}
               for b in batches]
    model = build_model(cfg.model, len(dataset.input_channels), len(dataset.static_channels), pair.scale)
    if t.channels_last:
        model = model.to(memory_format=cl)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    loss_fn = build_loss(t.loss)
    autocast = t.precision == "bf16-mixed"

    def epoch() -> float:
        start = time.perf_counter()
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                pred = model(b["x"], b["static_hr"])
            loss = loss_fn(pred.float(), b["y"], b["mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return len(batches) * t.batch_size / (time.perf_counter() - start)

    epoch()  # warm-up, as for the framework
    rates = [epoch() for _ in range(t.epochs - 1)]
    return sum(rates) / len(rates)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--filters", type=int, default=ExperimentConfig().model.filters)
    parser.add_argument("--blocks", type=int, default=ExperimentConfig().model.blocks)
    parser.add_argument("--precision", default=ExperimentConfig().training.precision)
    args = parser.parse_args(argv)
    cfg = speed_config(args)
    # minimal, framework, minimal: the mean of the two minimal runs brackets the framework's run
    # in time, so a drift in the machine's load does not bias the ratio.
    before = minimal_speed(cfg)
    with tempfile.TemporaryDirectory() as root:
        fw = framework_speed(cfg, root)
    after = minimal_speed(cfg)
    minimal = (before + after) / 2
    print(f"Training speed, resnet+spc ({fw['parameters']:,} parameters), {cfg.data.highres} x{cfg.data.scale}, "
          f"{args.patch}x{args.patch} HR patches, batch {args.batch}, {args.precision}, "
          f"{torch.get_num_threads()} threads\n")
    print("| loop | samples/s | ratio to minimal | data wait |")
    print("|---|---:|---:|---:|")
    print(f"| finescale trainer | {fw['samples_per_s']:.1f} | {fw['samples_per_s'] / minimal:.2f} | {100 * fw['data_wait']:.1f} % |")
    print(f"| minimal PyTorch loop (before / after) | {minimal:.1f} ({before:.1f} / {after:.1f}) | 1.00 | 0 % (pre-loaded) |")


if __name__ == "__main__":
    main()
