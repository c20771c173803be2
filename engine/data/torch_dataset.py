"""PyTorch datasets over paired data: random aligned patches for training, full domains in time
order for inference.

The paired data stay lazy (dask). They are read in *blocks* of time steps of bounded size
(:mod:`engine.data.blocks`, aligned to the storage chunks), normalised, and held as float32
tensors one block at a time, so ``__getitem__`` is a few tensor slices and memory is bounded by the
block, never by the number of time steps. When the whole period fits in one block (small data), it is
read once and kept: the in-memory case is the same code path.

Training is chunk-aware: an epoch visits a seeded random order of blocks and draws many random patches
from each block before moving on (:meth:`DownscalingDataset.shard_blocks`). :class:`BlockStream` is the
iterable form the trainers' DataLoader uses: each DataLoader worker, and under DDP each rank, reads only
its own shard of blocks. Indexing the dataset (``ds[i]``) gives item ``i`` of the single-shard order.

Items are dicts (see ``docs/DEVELOPING.md``):

- ``x``: ``(C_in, h, w)`` for ``sample="spatial"``, ``(T, C_in, h, w)`` for
  ``sample="spatiotemporal"`` (``T = time_window`` consecutive LR steps ending at the target time;
  before the first step the first one repeats). Channels: the LR variable, the predictors, then the
  static fields block-averaged to the LR grid (:attr:`DownscalingDataset.input_channels`).
- ``static_hr``: ``(S, H, W)`` static fields on the HR grid (:attr:`DownscalingDataset.static_channels`).
- ``y``: ``(1, H, W)`` normalised target; ``mask``: ``(1, H, W)`` float, 1 = valid.
- ``time``: int, the index of the item's time step in :attr:`DownscalingDataset.times`.

NaN in inputs and targets become 0 (the mean after normalisation); the target's NaN are reported in
``mask`` so losses ignore them. Static fields are scaled by fixed physical constants (elevation in
km, land fraction as is), so they mean the same on every domain.

Example
-------
>>> ds = DownscalingDataset(pair, norm, ("2001-01-01", "2002-12-31"), patch_size=32,
...                         samples_per_epoch=512, seed=0)   # doctest: +SKIP
>>> item = ds[0]; item["x"].shape, item["y"].shape             # doctest: +SKIP
(torch.Size([3, 8, 8]), torch.Size([1, 32, 32]))
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from engine.data import blocks
from engine.data.datapass import block_mean
from engine.data.errors import DataError
from engine.data.grid import latlon, spatial_dims
from engine.data.splits import config_period, period_mask
from engine.data.timeaxis import fmt_times, stamp
from engine.data.timeaxis import keys as time_keys

#: Fixed scaling of static fields: value / scale (elevation in km).
STATIC_SCALE = {"elevation": 1000.0, "land_mask": 1.0}

#: Random patches drawn from a block before the next one is read, as a fraction of the block's
#: non-overlapping patch areas (time steps x patches per field), when ``samples_per_epoch`` is too small
#: to spread over every block. Reading a block costs about as much as training on a tenth of its
#: patch areas on a CPU (measured: benchmarks/scale.py), so drawing half of them keeps the reads to a
#: small share of a step while an epoch still visits many blocks.
PATCH_COVERAGE = 0.5
#: ... and never fewer than this many.
MIN_PATCHES_PER_BLOCK = 64


def _fill(a: np.ndarray) -> np.ndarray:
    """NaN (and inf) -> 0 as float32, in place when ``a`` already is a float32 array of our own."""
    a = np.array(a, dtype=np.float32, copy=not (isinstance(a, np.ndarray) and a.dtype == np.float32
                                                and a.flags.writeable))
    bad = ~np.isfinite(a)  # one pass (nan_to_num makes three)
    if bad.any():
        a[bad] = 0.0
    return a


class DownscalingDataset(Dataset):
    """Samples of (LR input, HR target) from a :class:`~engine.data.pairing.PairedData`.

    Parameters
    ----------
    pair : PairedData
    normaliser : a fitted normaliser (:mod:`engine.data.normalise`)
    period : ``(start, end)`` ISO dates (inclusive), a sequence of times, or None for all times
    patch_size : HR patch edge (multiple of ``pair.scale``) for random training patches, or None
        for the full domain, one item per time step in order (inference, validation)
    samples_per_epoch : number of random patches per epoch (patch mode; default: one per time step)
    seed : patches are a function of ``(seed, epoch, index)`` only: deterministic and worker-safe
    sample : ``"spatial"`` or ``"spatiotemporal"``; None: spatiotemporal when ``time_window > 1``
    time_window : LR steps per item (spatiotemporal)
    block_bytes : byte budget of one block of time steps read at a time (default
        :data:`engine.data.blocks.BLOCK_BYTES`); ``math.inf`` reads the whole period as one block
    patches_per_block : random patches drawn from a block before the next (patch mode); default: the
        epoch's samples spread over every block, at least :data:`PATCH_COVERAGE` of the block's patch
        areas and :data:`MIN_PATCHES_PER_BLOCK`
    """

    def __init__(
        self,
        pair,
        normaliser,
        period=None,
        patch_size: int | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        sample: str | None = None,
        time_window: int = 1,
        block_bytes: float | None = None,
        patches_per_block: int | None = None,
    ) -> None:
        if sample is None:  # callers that pass only time_window (as the configuration allows)
            sample = "spatiotemporal" if int(time_window) > 1 else "spatial"
        if sample not in ("spatial", "spatiotemporal"):
            raise DataError(f"sample={sample!r} is not valid; accepted: spatial, spatiotemporal")
        if int(time_window) < 1 or (sample == "spatial" and time_window != 1):
            raise DataError(f"time_window={time_window!r} is not valid; spatial samples use 1, spatiotemporal >= 1")
        self.pair = pair
        self.normaliser = normaliser
        self.scale = s = int(pair.scale)
        self.sample = sample
        self.time_window = int(time_window)
        self.seed = int(seed)
        # The epoch lives in shared memory: persistent DataLoader workers see set_epoch() too.
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

        all_times = pair.times
        if period is None:
            sel = np.ones(all_times.size, dtype=bool)
        elif isinstance(period, (tuple, list)) and len(period) == 2 and all(isinstance(p, str) for p in period):
            sel = period_mask(all_times, period, "period")
        else:
            sel = np.isin(time_keys(all_times), time_keys(period))  # any calendar
            if not sel.any():
                raise DataError(f"none of the requested times is in the data ({fmt_times(all_times)})")
        self._t_index = np.flatnonzero(sel)  # positions in pair.times
        self.times = all_times[sel]

        H, W = (pair.hr.sizes[d] for d in spatial_dims(pair.hr))  # (lat, lon) or (y, x): engine.data.grid
        h, w = (pair.lr.sizes[d] for d in spatial_dims(pair.lr))
        if (h * s, w * s) != (H, W):
            raise DataError(f"LR grid {h} x {w} times scale {s} does not match the HR grid {H} x {W}")
        self.hr_shape, self.lr_shape = (H, W), (h, w)
        if patch_size is not None:
            patch_size = int(patch_size)
            if patch_size % s or patch_size < s:
                raise DataError(f"patch_size={patch_size} is not a multiple of scale={s}; accepted: multiples of {s}")
            if patch_size > min(H, W):
                raise DataError(
                    f"patch_size={patch_size} is larger than the HR domain {H} x {W}; "
                    f"accepted: multiples of {s} up to {min(H, W) - min(H, W) % s}, or None for the full domain"
                )
        self.patch_size = patch_size
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch else len(self.times)

        self.static_channels = list(pair.static.data_vars)
        self.input_channels = list(pair.lr_channels) + self.static_channels
        st = [_fill(pair.static[n].values / STATIC_SCALE.get(n, 1.0)) for n in self.static_channels]
        static_hr = np.stack(st) if st else np.zeros((0, H, W), np.float32)
        static_lr = static_hr.reshape(len(st), h, s, w, s).mean(axis=(2, 4)) if st else np.zeros((0, h, w), np.float32)
        self._static_hr = torch.from_numpy(np.ascontiguousarray(static_hr, dtype=np.float32))
        self._static_lr = torch.from_numpy(np.ascontiguousarray(static_lr, dtype=np.float32))
        self._valid = np.asarray(pair.mask.values, dtype=bool)  # (H, W), in memory (pairing computed it)

        # Blocks of the period's time steps, aligned to the target's storage chunks.
        self.block_bytes = blocks.BLOCK_BYTES if block_bytes is None else block_bytes
        budget = int(min(self.block_bytes, 2**62))
        per_step = blocks.step_bytes(pair, pair.lr_channels)
        self.blocks = blocks.plan(self._t_index, blocks.time_chunk(pair.hr), per_step, budget)
        self._block_start = np.cumsum([0] + [b.size for b in self.blocks])  # dataset index of each block
        if patches_per_block is not None and int(patches_per_block) < 1:
            raise DataError(f"patches_per_block={patches_per_block!r} is not valid; accepted: an integer >= 1 or None")
        self.patches_per_block = int(patches_per_block) if patches_per_block else None
        self._cached: _Block | None = None
        self.loads = 0  #: blocks read so far by this process (tests and benchmarks look)

    # -- epochs and the chunk-aware order ------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (but reproducible) set of patches and block order for ``epoch``."""
        self._epoch.fill_(int(epoch))

    def _per_block(self) -> int:
        """Items drawn from one visited block (full domain: each of its time steps once)."""
        if self.patch_size is None:
            return max(b.size for b in self.blocks)
        if self.patches_per_block:
            return self.patches_per_block
        (H, W), p = self.hr_shape, self.patch_size
        areas = max(b.size for b in self.blocks) * (H // p) * (W // p)
        return max(math.ceil(self.samples_per_epoch / len(self.blocks)), math.ceil(PATCH_COVERAGE * areas),
                   MIN_PATCHES_PER_BLOCK)

    def shard_blocks(self, epoch: int, shard: int, shards: int, items: int) -> np.ndarray:
        """The blocks shard ``shard`` of ``shards`` visits in ``epoch`` to draw ``items`` items, in order.

        Each epoch takes the next slice of a seeded random permutation of all blocks (a new
        permutation once every block has been visited), and deals it round-robin to the shards:
        within an epoch shards get disjoint blocks (while there are at least as many blocks as
        shards), and over consecutive epochs every block is visited. When the epoch needs more block
        visits than there are blocks, each shard keeps its blocks and draws more items from each.
        """
        nb = len(self.blocks)
        m = max(1, math.ceil(items / self._per_block()))
        need = shards * m
        if need <= nb:
            per_cycle = nb // need
            cycle, slot = divmod(int(epoch), per_cycle)
            perm = np.random.default_rng((self.seed, 1, cycle)).permutation(nb)
            return perm[slot * need : (slot + 1) * need][shard::shards]
        perm = np.random.default_rng((self.seed, 2, int(epoch))).permutation(nb)
        return perm[shard::shards] if nb >= shards else perm[[shard % nb]]

    # -- reading blocks ---------------------------------------------------------------------
    def _block(self, b: int) -> "_Block":
        """Block ``b`` read, normalised and held (the previous one is released first)."""
        if self._cached is not None and self._cached.index == b:
            return self._cached
        self._cached = None  # never two blocks at once
        pos = self.blocks[b]
        # LR steps the block's windows need (spatiotemporal windows reach before the block)
        back = np.arange(self.time_window - 1, -1, -1)
        lr_pos = np.unique(np.clip(pos[:, None] - back[None, :], 0, None))
        pair, norm = self.pair, self.normaliser
        # In DataLoader workers: one thread each (workers are the parallelism; a forked thread pool
        # would not be there).
        scheduler = "synchronous" if get_worker_info() is not None else None
        # PerfectProg: the LR target channel is the block mean of the target block just read (numpy, in
        # memory) rather than a second coarsening of the same chunks through dask (measured: as costly
        # as reading them); only when the LR rows are the block's own steps (spatial samples)
        derived = pair.attrs.get("lr_block_mean_of_hr")
        if derived not in pair.lr_channels or not np.array_equal(lr_pos, pos):
            derived = None
        read = [c for c in pair.lr_channels if c != derived]
        *lr_part, hr_raw = blocks.compute(
            *([blocks.take(pair.lr[read], lr_pos)] if read else []), blocks.take(pair.hr, pos), scheduler=scheduler
        )
        lr_raw = lr_part[0] if read else xr.Dataset(coords={"time": hr_raw["time"]})
        if derived is not None:
            ly, lx = spatial_dims(pair.lr)
            values = hr_raw.transpose("time", *spatial_dims(hr_raw)).values
            lr_raw = lr_raw.assign({derived: (("time", ly, lx), block_mean(values, self.scale))})
        lr_norm = norm.lr(lr_raw)  # before hr(): instance normalisation needs the LR statistics first
        x = np.stack([_fill(lr_norm[v].values) for v in pair.lr_channels], axis=1)  # (T_lr, C, h, w)
        del lr_raw, lr_norm
        y = np.asarray(norm.hr(hr_raw).values)
        valid = np.isfinite(y) & self._valid[None]
        self._cached = _Block(
            index=b,
            lr_pos=lr_pos,
            x=torch.from_numpy(x),
            y=torch.from_numpy(_fill(y)[:, None]),
            mask=torch.from_numpy(valid[:, None]),  # bool; converted per item
        )
        self.loads += 1
        return self._cached

    def _window(self, blk: "_Block", t_all: int) -> torch.Tensor:
        """LR input (C_in, h, w) or (T, C_in, h, w) ending at pair position ``t_all``."""
        if self.sample == "spatial":
            rows = np.searchsorted(blk.lr_pos, [t_all])
        else:
            want = np.clip(np.arange(t_all - self.time_window + 1, t_all + 1), 0, None)
            rows = np.searchsorted(blk.lr_pos, want)
        lr = blk.x[torch.from_numpy(rows)]  # (T, C, h, w)
        st = self._static_lr.expand(lr.shape[0], *self._static_lr.shape)
        x = torch.cat([lr, st], dim=1)
        return x[0] if self.sample == "spatial" else x

    # -- items --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.samples_per_epoch if self.patch_size is not None else len(self.times)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        if self.patch_size is None:  # full domain, time order (validation, inference)
            b = int(np.searchsorted(self._block_start, i, side="right") - 1)
            return self._full(b, i - int(self._block_start[b]))
        return self.draw(self.epoch, 0, 1, i, len(self))

    def draw(self, epoch: int, shard: int, shards: int, q: int, items: int) -> dict:
        """Item ``q`` of the ``items`` that shard ``shard`` of ``shards`` draws in ``epoch``."""
        order = self._order(epoch, shard, shards, items)
        j = q * order.size // items  # which of the shard's blocks
        b = int(order[j])
        if self.patch_size is None:  # full-domain training: the block's steps in a seeded order
            first = -(-j * items // order.size)  # first q of this block
            steps = np.random.default_rng((self.seed, 3, int(epoch), b)).permutation(self.blocks[b].size)
            return self._full(b, int(steps[(q - first) % steps.size]))
        return self._patch(b, np.random.default_rng((self.seed, int(epoch), shard, shards, q)))

    def _order(self, epoch, shard, shards, items) -> np.ndarray:
        key = (int(epoch), shard, shards, items)
        if getattr(self, "_order_key", None) != key:
            self._order_key, self._order_val = key, self.shard_blocks(epoch, shard, shards, items)
        return self._order_val

    def _full(self, b: int, r: int) -> dict:
        """The full domain at row ``r`` of block ``b``."""
        blk = self._block(b)
        t_all = int(self.blocks[b][r])
        return {
            "x": self._window(blk, t_all),
            "static_hr": self._static_hr,
            "y": blk.y[r],
            "mask": blk.mask[r].float(),
            "time": int(self._block_start[b]) + r,
            "offset": torch.zeros(2, dtype=torch.long),
        }

    def _patch(self, b: int, rng: np.random.Generator) -> dict:
        """A random aligned patch from block ``b``."""
        blk = self._block(b)
        s, p = self.scale, self.patch_size
        q = p // s
        h, w = self.lr_shape
        for _ in range(10):  # avoid patches with no valid target (e.g. all sea), within reason
            r = int(rng.integers(blk.y.shape[0]))
            ly, lx = int(rng.integers(h - q + 1)), int(rng.integers(w - q + 1))
            m = blk.mask[r, :, ly * s : ly * s + p, lx * s : lx * s + p]
            if bool(m.any()):
                break
        x = self._window(blk, int(self.blocks[b][r]))[..., ly : ly + q, lx : lx + q]
        hy, hx = ly * s, lx * s
        return {
            "x": x,
            "static_hr": self._static_hr[:, hy : hy + p, hx : hx + p],
            "y": blk.y[r, :, hy : hy + p, hx : hx + p],
            "mask": m.float(),
            "time": int(self._block_start[b]) + r,
            # Where the patch sits in the HR grid: location-specific layers (LCB) need it.
            "offset": torch.tensor([hy, hx], dtype=torch.long),
        }

    def stream(self, batch_size: int = 1, rank: int | None = None, world: int | None = None) -> "BlockStream":
        """This dataset as a :class:`BlockStream` (what the trainers' DataLoader iterates)."""
        return BlockStream(self, batch_size=batch_size, rank=rank, world=world)

    # -- coordinates for building outputs ----------------------------------------------------------
    @property
    def lat(self) -> np.ndarray:
        """HR latitudes of every cell (H, W)."""
        return latlon(self.pair.hr)[0]

    @property
    def lon(self) -> np.ndarray:
        """HR longitudes of every cell (H, W)."""
        return latlon(self.pair.hr)[1]

    def __repr__(self) -> str:
        mode = f"patches {self.patch_size}" if self.patch_size else "full domain"
        return (
            f"DownscalingDataset({len(self)} items, {mode}, x{self.scale}, inputs {self.input_channels}, "
            f"static {self.static_channels}, {stamp(self.times[0])[:10]}..{stamp(self.times[-1])[:10]})"
        )


class _Block(NamedTuple):
    """One block held in memory: normalised, NaN-filled float32 tensors."""

    index: int
    lr_pos: np.ndarray  # pair positions of the LR rows of x (sorted)
    x: torch.Tensor  # (T_lr, C, h, w)
    y: torch.Tensor  # (T, 1, H, W)
    mask: torch.Tensor  # (T, 1, H, W) bool


class BlockStream(IterableDataset):
    """The training items of a :class:`DownscalingDataset` as an iterable, sharded by blocks.

    Shards are (rank, DataLoader worker) pairs: shard ``rank * workers + worker`` of
    ``world * workers``. Each shard visits only its own blocks (:meth:`DownscalingDataset.shard_blocks`),
    so a worker reads a block once and draws all its items from it, and under DDP each rank reads only
    its share of the store. Every rank yields the same number of whole batches (DDP needs equal step
    counts): ``samples_per_epoch // world`` items rounded down to ``batch_size``, dealt to the
    workers in whole batches (no partial batch is dropped per worker).

    Parameters
    ----------
    dataset : DownscalingDataset
    batch_size : the DataLoader's batch size
    rank, world : this process's rank and the number of ranks; default from ``torch.distributed``
        when it is initialised, else 0 and 1
    """

    def __init__(self, dataset: DownscalingDataset, batch_size: int = 1, rank: int | None = None,
                 world: int | None = None) -> None:
        if rank is None or world is None:
            dist = torch.distributed
            on = dist.is_available() and dist.is_initialized()
            rank = (dist.get_rank() if on else 0) if rank is None else rank
            world = (dist.get_world_size() if on else 1) if world is None else world
        if not 0 <= int(rank) < int(world):
            raise DataError(f"rank={rank!r} is not valid for world={world!r}; accepted: 0 <= rank < world")
        self.dataset, self.batch_size = dataset, max(1, int(batch_size))
        self.rank, self.world = int(rank), int(world)
        self.batches = (len(dataset) // self.world) // self.batch_size
        if self.batches == 0:
            raise DataError(
                f"{len(dataset)} samples per epoch over {self.world} rank(s) make no whole batch of "
                f"{self.batch_size}; raise training.samples_per_epoch to at least {self.world * self.batch_size}"
            )

    def __len__(self) -> int:
        return self.batches * self.batch_size

    def shard(self) -> tuple[int, int, int]:
        """(shard, shards, items) of the calling process (a DataLoader worker or the main process)."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = self.batches // workers + (worker < self.batches % workers)
        return self.rank * workers + worker, self.world * workers, mine * self.batch_size

    def __iter__(self):
        shard, shards, items = self.shard()
        epoch = self.dataset.epoch
        for q in range(items):
            yield self.dataset.draw(epoch, shard, shards, q, items)


class Datasets(NamedTuple):
    """What :func:`build_datasets` returns."""

    pair: object
    normaliser: object
    train: DownscalingDataset
    val: DownscalingDataset
    test: DownscalingDataset


def build_datasets(
    data_cfg,
    samples_per_epoch: int | None = None,
    seed: int = 0,
    pair=None,
    normaliser=None,
    periods: Sequence[str] = ("train", "val", "test"),
) -> Datasets:
    """Pair, fit the normaliser on the training period, and build the three datasets.

    ``train`` draws random patches of ``data_cfg.patch_size`` (full domain if None); ``val`` and
    ``test`` give full domains in time order. A fitted ``normaliser`` (e.g. from a run's
    ``normalisation.json``) is used as is.
    """
    from engine.data.normalise import create
    from engine.data.pairing import make_pair

    pair = make_pair(data_cfg) if pair is None else pair
    train_period = config_period(data_cfg, "train")
    if normaliser is None:
        normaliser = create(data_cfg.normalisation).fit(pair, train_period)
    common = dict(sample=data_cfg.sample, time_window=data_cfg.time_window)
    train = DownscalingDataset(
        pair, normaliser, train_period, data_cfg.patch_size, samples_per_epoch, seed, **common
    )
    val = DownscalingDataset(pair, normaliser, config_period(data_cfg, "val"), None, None, seed, **common)
    test = DownscalingDataset(pair, normaliser, config_period(data_cfg, "test"), None, None, seed, **common)
    return Datasets(pair, normaliser, train, val, test)
