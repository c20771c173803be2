"""What every trainer shares (supervised, GAN, diffusion): the run-store bookkeeping around an
epoch loop. A trainer keeps only what is its own: the networks, the optimisers and the step.

:class:`EpochLoop` owns resume from ``checkpoints/last.pt``, the "start" / "step" / "epoch" events,
progress in ``status.json``, early stopping on the validation loss, and the atomic ``best.pt`` /
``last.pt`` checkpoints. Only global rank 0 writes; metrics are reduced over ranks first.

Sketch of a trainer::

    loop = EpochLoop(run, cfg, fabric, data)
    start = loop.resume({"model": net, "optimizer": opt})
    loop.start(parameters=count_parameters(net), learning="supervised")
    for epoch in loop.epochs(start):
        for batch in loop.batches(train_loader, epoch):
            loss = ...; loss.backward(); opt.step()
            loop.record(train_loss=loss)
        if loop.end_epoch(epoch, val, {"model": net, "optimizer": opt}):
            break
    return loop.finish()
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

from engine.config import ExperimentConfig
from engine.runs import Run, now_iso, write_text_atomic
from engine.training.ddp_sync import blocks_read, compare_checksums, gather_blocks, weight_checksum

STEP_EVENT_SECONDS = 2.0


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says why."""


@dataclass
class TrainingData:
    """The paired data, its normalisation and the two datasets a trainer iterates over."""

    pair: Any
    normaliser: Any
    train: Any
    val: Any

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.train.hr_shape)

    def checkpoint_info(self, cfg: ExperimentConfig) -> dict[str, Any]:
        """What inference needs, besides the weights, to rebuild the network."""
        return {"input_channels": list(self.train.input_channels), "static_channels": list(self.train.static_channels),
                "scale": int(self.pair.scale), "grid_shape": list(self.grid_shape),
                "time_window": int(cfg.data.time_window)}


def configure(run: Run) -> ExperimentConfig:
    """The run's validated configuration with its automatic settings decided for this machine.

    ``training.precision`` / ``channels_last`` / ``threads`` and ``data.workers`` left on
    "auto" (or null) are chosen by :func:`engine.hardware.decide` from the device and the job's
    CPU allocation; torch's intra-op threads are set; rank 0 writes the choice and the reason for
    each setting to the run's ``hardware.json``, to ``status.json`` (``hardware``) and to the
    events. Every trainer calls this first, so a bad value (``training.threads: 0``, more workers
    than CPUs) fails before any data are read.
    """
    from engine import hardware

    cfg = run.config.validate()
    decision = hardware.decide(cfg)
    hardware.apply_threads(decision)
    if _rank() == 0:
        write_text_atomic(run.path / "hardware.json", _json(decision.to_dict()))
        run.update_status(hardware=decision.summary())
        run.log_event("message", text=f"hardware: {decision.summary()}; "
                                      + "; ".join(f"{k}: {v}" for k, v in decision.reasons.items()))
    return hardware.settle(cfg, decision)


def _rank() -> int:
    value = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    return int(value) if value.isdigit() else 0


def loader_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """DataLoader keyword arguments from a :func:`configure`-d configuration: workers (persistent
    across epochs) and pinned memory on a GPU."""
    workers = int(cfg.data.workers or 0)
    cuda = cfg.training.device == "cuda" or (cfg.training.device == "auto" and torch.cuda.is_available())
    return {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": cuda and workers > 0}


def make_train_loader(cfg: ExperimentConfig, fabric, dataset):
    """The training DataLoader, set up by ``fabric``: the dataset's chunk-aware
    :class:`~engine.data.torch_dataset.BlockStream` (each DataLoader worker, and under DDP each rank,
    reads only its own blocks of the store and draws many items from each), whole batches only and
    the same number on every rank."""
    from torch.utils.data import DataLoader

    stream = dataset.stream(cfg.training.batch_size, rank=fabric.global_rank, world=fabric.world_size)
    return fabric.setup_dataloaders(DataLoader(stream, batch_size=cfg.training.batch_size, **loader_options(cfg)))


def make_fabric(cfg: ExperimentConfig):
    """A Fabric for this configuration: device, precision, and DDP when the environment (SLURM,
    torchrun) has more than one task."""
    from lightning.fabric import Fabric

    t, launch = cfg.training, cfg.launch
    accelerator = t.device
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise TrainingError("training.device='cuda' but no CUDA device is visible; accepted here: 'cpu' or 'auto'")
    # bf16 autocast is applied by the loop itself (see autocast()), not by Fabric: Fabric's
    # "bf16-mixed" also casts the *inputs* to bfloat16, which rounds the LR field to 3 significant
    # digits before the interpolated residual is added (~0.05 K on temperature) and slows bicubic.
    precision = "32-true" if t.precision in ("bf16-mixed", "auto") else t.precision
    world = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
    if world > 1:
        devices = max(1, world // max(1, launch.nodes))
        return Fabric(accelerator=accelerator, devices=devices, num_nodes=launch.nodes, strategy="ddp",
                      precision=precision)
    # One process: say so explicitly, otherwise Fabric inspects SLURM variables (and warns about
    # srun) when a single-task job runs on a cluster node.
    from lightning.fabric.plugins.environments import LightningEnvironment

    return Fabric(accelerator=accelerator, devices=1, precision=precision, plugins=[LightningEnvironment()])


def autocast(cfg: ExperimentConfig, device: torch.device):
    """The forward-pass autocast context: bfloat16 for ``precision="bf16-mixed"`` (weights, inputs
    and the loss stay float32), a no-op otherwise. ``"auto"`` (a configuration that did not go
    through :func:`configure`) is decided here for ``device``."""
    precision = cfg.training.precision
    if precision == "auto":
        from engine.hardware import native_bf16

        precision = "bf16-mixed" if native_bf16(device.type)[0] else "32-true"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def make_optimizer(cfg: ExperimentConfig, params) -> torch.optim.Optimizer:
    t = cfg.training
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=1e-4)
    return torch.optim.SGD(params, lr=t.lr, momentum=0.9)


def make_scheduler(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer):
    """The learning-rate schedule, stepped once per epoch: ``cosine`` decays the rate to 1 % of
    ``training.lr`` over ``training.epochs`` (the last epochs refine at a small rate, which is
    where most of the final skill comes from); ``constant`` keeps it."""
    if cfg.training.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.training.epochs,
                                                          eta_min=cfg.training.lr * 0.01)
    return None


def fit_normaliser(cfg: ExperimentConfig, pair):
    """The configured normalisation, fitted on the training period only."""
    from engine.registry import NORMALISATIONS

    normaliser = NORMALISATIONS.get(cfg.data.normalisation)()
    normaliser.fit(pair, pair.hr.time.sel(time=slice(*cfg.data.train_period)).values)
    return normaliser


def prepare_data(cfg: ExperimentConfig, normaliser=None) -> TrainingData:
    """Pair the configured data, fit (or take) the normalisation, build the train/val datasets
    (random patches for training, whole fields for validation)."""
    from engine.data.pairing import make_pair
    from engine.data.torch_dataset import DownscalingDataset

    d, t = cfg.data, cfg.training
    pair = make_pair(d)
    # Baselines that cannot be fitted (no training period, < 30 values per cell for quantile
    # mapping) fail now, not after training when predictions are written.
    from engine.inference.baselines import check_config as check_baselines
    check_baselines(cfg, pair)
    normaliser = normaliser if normaliser is not None else fit_normaliser(cfg, pair)
    common = dict(seed=t.seed, sample=d.sample, time_window=d.time_window)
    train = DownscalingDataset(pair, normaliser, d.train_period, patch_size=fit_patch_size(d.patch_size, pair),
                               samples_per_epoch=t.samples_per_epoch, **common)
    val = DownscalingDataset(pair, normaliser, d.val_period, patch_size=None, **common)
    return TrainingData(pair, normaliser, train, val)


def fit_patch_size(patch_size: int | None, pair) -> int | None:
    """``data.patch_size`` on a domain smaller than the patch: the largest patch the domain holds
    (a multiple of the scale; the whole domain when it is square), so a default configuration
    trains on any domain and ``training.samples_per_epoch`` random samples are still drawn."""
    if patch_size is None:
        return None
    from engine.data.grid import spatial_dims

    H, W = (pair.hr.sizes[dim] for dim in spatial_dims(pair.hr))
    edge = min(H, W) - min(H, W) % pair.scale
    return min(int(patch_size), edge) if edge >= pair.scale else None


def to_device(batch: dict[str, torch.Tensor], device, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


#: Batches the prefetch thread may assemble ahead of the step. Reading and normalising a new block
#: of the store takes several steps' time; with 2 batches ahead the step waited for data 4-6 % of the
#: time on the 2-core benchmark machine, with 8 ahead 2-2.3 % (alternated runs, benchmarks/results/speed.md).
#: A batch of 16 patches of 64^2 is well under 1 MB, so 8 cost nothing worth counting.
PREFETCH_BATCHES = 8


def prefetched(iterable: Iterable, depth: int = PREFETCH_BATCHES) -> Iterator:
    """``iterable``'s items in order, the next ``depth`` produced by a background thread while the
    caller works on the current one. The iterator is made and its first item taken in the calling
    thread (a shuffling sampler draws its permutation from torch's generator there, as without
    prefetching); an error in the producer is raised here, at the item where it happened."""
    import queue
    import threading

    iterator = iter(iterable)
    try:
        first = next(iterator)
    except StopIteration:
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as exc:  # handed to the consumer
            items.put((done, exc))

    thread = threading.Thread(target=produce, name="finescale-prefetch", daemon=True)
    thread.start()
    try:
        yield first
        while True:
            item, exc = items.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:  # the consumer stopped early (early stopping, an error): release the producer
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def save_checkpoint(path, state: dict[str, Any]) -> None:
    """torch.save through a temporary file and a rename (atomic)."""
    from engine.files import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


class CheckpointError(TrainingError):
    """A checkpoint file that is missing, truncated, damaged or not written by finescale."""


def load_checkpoint(path) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dictionary (weights, optimiser state, epoch ...).

    Raises
    ------
    CheckpointError
        For a missing, truncated, damaged or foreign file. Such a file is never loaded in a
        less safe way: a checkpoint is data, never code (``weights_only=True``, no pickle of
        arbitrary objects).
    """
    import pickle
    import zipfile

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError,
            zipfile.BadZipFile, UnicodeDecodeError, AttributeError, TypeError) as exc:
        # Not the library's message: it suggests weights_only=False, i.e. running the file's code.
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a finescale checkpoint "
                              f"({type(exc).__name__}); delete it, or resume from another checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a finescale checkpoint "
                              f"(it holds a {type(state).__name__}, not a dictionary of weights)")
    return state


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


class EpochLoop:
    """Run-store bookkeeping around a trainer's epochs (see the module docstring)."""

    def __init__(self, run: Run, cfg: ExperimentConfig, fabric, data: TrainingData):
        self.run, self.cfg, self.fabric, self.data = run, cfg, fabric, data
        self.rank0 = fabric.is_global_zero
        self.best_val, self.best_epoch, self.bad_epochs = math.inf, -1, 0
        self.stop_ref = math.inf  # the loss an epoch must beat by training.min_delta to reset patience
        self.summary: dict[str, Any] = {}
        self.stopped_early = False
        self._names: list[str] = []
        self._objects: dict[str, Any] = {}
        self._blocks: list[int] | None = None  # the time blocks this rank read in its first epoch

    # -- before the first epoch ---------------------------------------------------------------
    def resume(self, objects: dict[str, Any], enabled: bool = True) -> tuple[int, dict[str, Any] | None]:
        """Load ``last.pt`` into ``objects`` (name -> object with ``load_state_dict``) when it
        exists; return (first epoch to train, the checkpoint or None)."""
        path = self.run.checkpoint("last")
        if not (enabled and path.exists()):
            return 0, None
        state = load_checkpoint(path)
        for name, obj in objects.items():
            if obj is not None and state.get(name):
                obj.load_state_dict(state[name])
        self.best_val, self.best_epoch = float(state["best_val"]), int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.stop_ref = float(state.get("stop_ref", self.best_val))
        epoch = int(state["epoch"])
        logged = {int(e["epoch"]) for e in self.run.epochs()}
        if self.rank0 and state.get("metrics") and epoch not in logged:  # killed between checkpoint and event
            self.run.log_event("epoch", **state["metrics"], restored=True)
        return epoch + 1, state

    def start(self, first_epoch: int, parameters: int, **status: Any) -> None:
        """Store the normalisation and mark the run running."""
        if not self.rank0:
            return
        run, fabric = self.run, self.fabric
        from engine.data.normalise import save as save_normalisation

        save_normalisation(self.data.normaliser, run.normalisation_path)  # JSON + .npz sidecar for arrays
        prepass = getattr(self.data.pair, "prepass", None)
        # every training step read, or a sample of them (said) -- when the statistics came from that pass
        if prepass is not None and prepass.train_steps and self.data.normaliser.origin in ("prepass", "cache"):
            status.setdefault("statistics", prepass.describe())
        run.update_status(state="running", started=run.status().get("started") or now_iso(), host=socket.gethostname(),
                          pid=os.getpid(), world_size=fabric.world_size, device=str(fabric.device),
                          parameters=parameters, epochs=self.cfg.training.epochs,
                          input_channels=list(self.data.train.input_channels),
                          static_channels=list(self.data.train.static_channels), **status)
        run.log_event("start", epoch=first_epoch, world_size=fabric.world_size, device=str(fabric.device),
                      parameters=parameters, learning=self.cfg.training.learning)

    # -- the loop -----------------------------------------------------------------------------
    def epochs(self, first_epoch: int) -> Iterator[int]:
        for epoch in range(first_epoch, self.cfg.training.epochs):
            self.data.train.set_epoch(epoch)
            yield epoch

    def batches(self, loader: Iterable, epoch: int, channels_last: bool | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Yield the epoch's batches on the device (channels-last as configured unless
        ``channels_last`` says otherwise), timing the wait for data and writing step events (at
        most every :data:`STEP_EVENT_SECONDS`). Call :meth:`record` once per batch."""
        device = self.fabric.device
        channels_last = self.cfg.training.channels_last is True if channels_last is None else channels_last
        self._totals: torch.Tensor | None = None
        self._wait, self._started = 0.0, time.perf_counter()
        last_event = tick = self._started
        n_batches = max(1, len(loader))
        self._first_batch: float | None = None
        if self._blocks is None and self.fabric.world_size > 1:
            self._blocks = blocks_read(loader, epoch)
        # In-process loading (no DataLoader workers) overlaps the step in a thread: the network's
        # kernels release the GIL, so the next batch is assembled while this one trains.
        batches = loader if getattr(loader, "num_workers", 0) else prefetched(loader)
        for step, batch in enumerate(batches):
            self._wait += time.perf_counter() - tick
            if step == 0:  # worker start and the first block read: what a user waits before training
                self._first_batch = time.perf_counter() - self._started
            yield to_device(batch, device, channels_last)
            if self.rank0 and time.perf_counter() - last_event > STEP_EVENT_SECONDS:
                last_event = time.perf_counter()
                self.run.log_event("step", epoch=epoch, step=step, **self._last)
                self.run.update_status(progress=(epoch + (step + 1) / n_batches) / self.cfg.training.epochs)
            tick = time.perf_counter()
        self._elapsed = time.perf_counter() - self._started

    def record(self, **losses: torch.Tensor) -> None:
        """Add this batch's losses (scalars; the first is the training loss) to the epoch's means."""
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        if not torch.isfinite(values).all():
            raise TrainingError(f"training losses became {dict(zip(losses, values.tolist()))}; lower training.lr "
                                "or check the data for NaN outside the mask")
        self._names = list(losses)
        self._last = dict(zip(self._names, values.tolist()))
        row = torch.cat([values, torch.ones(1, device=values.device)])
        self._totals = row if self._totals is None else self._totals + row

    def end_epoch(self, epoch: int, val: dict[str, float], objects: dict[str, Any],
                  extra_state: dict[str, Any] | None = None) -> bool:
        """Reduce the epoch's losses over ranks, update early stopping, write the epoch event and
        the checkpoints (``objects``' state dicts plus ``extra_state``); True when training should
        stop early."""
        self._objects = objects
        totals = self.fabric.all_reduce(self._totals, reduce_op="sum")
        batches = float(totals[-1].clamp_min(1))
        train = {name: float(totals[i]) / batches for i, name in enumerate(self._names)}
        samples = batches * self.cfg.training.batch_size
        timing = {"samples_per_s": samples / self._elapsed, "data_wait_fraction": self._wait / self._elapsed,
                  "seconds": self._elapsed, "first_batch_seconds": self._first_batch}
        # best.pt follows any improvement; patience restarts only on one larger than
        # training.min_delta (a noisy validation set otherwise keeps, or stops, runs at random).
        improved = val["val_loss"] < self.best_val
        if improved:
            self.best_val, self.best_epoch = val["val_loss"], epoch
        if val["val_loss"] < self.stop_ref - self.cfg.training.min_delta:
            self.stop_ref, self.bad_epochs = val["val_loss"], 0
        else:
            self.bad_epochs += 1
        if self.rank0:
            record = {"epoch": epoch, **train, **val, **timing, "best": improved}
            state = {name: obj.state_dict() for name, obj in objects.items() if obj is not None}
            state.update(epoch=epoch, best_val=self.best_val, best_epoch=self.best_epoch, bad_epochs=self.bad_epochs,
                         stop_ref=self.stop_ref,
                         config=self.cfg.to_dict(), metrics=record, **self.data.checkpoint_info(self.cfg),
                         **(extra_state or {}))
            # Checkpoints first, the event after: the run store never claims an epoch that no
            # checkpoint holds. A process killed in between loses only the event line, and
            # resume() writes it back from the checkpoint's "metrics".
            if improved:
                save_checkpoint(self.run.checkpoint("best"), state)
            save_checkpoint(self.run.checkpoint("last"), state)  # after best: a resumed run never lacks its best
            self.run.log_event("epoch", **record)
            self.run.update_status(progress=(epoch + 1) / self.cfg.training.epochs, epoch=epoch,
                                   best_epoch=self.best_epoch, best_val_loss=self.best_val)
        self.summary = {"epoch": epoch, **train, **val, "best_epoch": self.best_epoch,
                        "best_val_loss": self.best_val, **timing}
        if self.bad_epochs >= self.cfg.training.patience:
            self.stopped_early = True
            if self.rank0:
                self.run.log_event("message", text=f"early stopping after epoch {epoch}: no improvement larger than "
                                                   f"training.min_delta={self.cfg.training.min_delta:g} in "
                                                   f"{self.cfg.training.patience} epochs")
            return True
        return False

    def finish(self) -> dict[str, Any]:
        self.fabric.barrier()
        if self.fabric.world_size > 1 and self._objects:
            self._check_ranks_in_sync()
        return {**self.summary, "stopped_early": self.stopped_early}

    def _check_ranks_in_sync(self) -> None:
        """Under DDP: gather every rank's weight checksum (and the blocks it read); rank 0 records
        ``ddp_weights_in_sync`` / ``ddp_weights_max_diff`` (and ``ddp_blocks_per_rank``) in the
        status and logs an error when the ranks' weights differ."""
        modules = [m for m in self._objects.values() if isinstance(m, torch.nn.Module)]
        gathered = self.fabric.all_gather(weight_checksum(modules).to(self.fabric.device))
        in_sync, diff = compare_checksums(gathered.reshape(self.fabric.world_size, -1).cpu())
        blocks = gather_blocks(self.fabric, self._blocks) if self._blocks is not None else None
        if not self.rank0:
            return
        extra = {"ddp_blocks_per_rank": blocks} if blocks is not None else {}
        self.run.update_status(ddp_weights_in_sync=in_sync, ddp_weights_max_diff=diff, **extra)
        if not in_sync:
            text = (f"DDP ranks ended with different weights (largest checksum difference {diff:.3g}): "
                    "gradients were not synchronised; do not trust this run's checkpoint")
            logging.getLogger(__name__).error(text)  # in the job's log, where a user looks first
            self.run.log_event("message", level="error", text=text)
