"""Time blocks: reading a lazily paired dataset a bounded number of bytes at a time.

A *block* is a run of time steps of the paired data whose float32 arrays (LR channels, HR target)
fit in a byte budget. Blocks follow the storage: when the target is chunked along time, a block is
a whole number of time chunks (or an even part of one), so no chunk is read for two blocks. The
normalisation statistics (one streaming pass) and the training sampler (load a block, draw many
patches from it, move on) both read the data this way, so memory is bounded by the block size,
never by the number of time steps.

Example
-------
>>> plan(np.arange(10), chunk=4, per_step=100, budget=450)   # 4 steps a block, aligned to chunks
[array([0, 1, 2, 3]), array([4, 5, 6, 7]), array([8, 9])]
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import dask
import numpy as np


def _budget_from_environment() -> int:
    """64 MiB, or ``$FINESCALE_BLOCK_BYTES`` where set (smaller blocks on a small machine, or many
    blocks from a small store, as the DDP test uses to show ranks read disjoint blocks)."""
    raw = os.environ.get("FINESCALE_BLOCK_BYTES")
    if raw is None:
        return 64 * 2**20
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"FINESCALE_BLOCK_BYTES={raw!r} is not a positive whole number of bytes "
                         f"(e.g. 67108864 for 64 MiB, the default)")
    return value


#: Default byte budget of one block (float32 LR channels + HR target of its time steps).
BLOCK_BYTES = _budget_from_environment()


def time_chunk(da) -> int | None:
    """Length of ``da``'s first time chunk (None when it is not dask-backed)."""
    if getattr(da, "chunks", None) is None:
        return None
    return int(da.chunks[da.get_axis_num("time")][0])


def step_bytes(pair, channels=None) -> int:
    """Bytes of one time step of the pair read as float32: LR channels, HR target and its mask."""
    names = list(channels if channels is not None else pair.lr.data_vars)
    lr = sum(int(np.prod([pair.lr[n].sizes[d] for d in pair.lr[n].dims if d != "time"])) for n in names)
    hr = int(np.prod([pair.hr.sizes[d] for d in pair.hr.dims if d != "time"]))
    return 4 * lr + 5 * hr  # float32 values + bool mask of the target


def steps_per_block(chunk: int | None, per_step: int, budget: int) -> int:
    """Time steps in a block: as many as ``budget`` allows (at least one), rounded to a multiple
    of the storage ``chunk`` when a chunk fits, else to an even part of a chunk."""
    steps = max(1, int(min(budget, 2**62)) // max(1, int(per_step)))  # math.inf: everything in one block
    if not chunk or chunk <= 1:
        return steps
    if steps >= chunk:
        return (steps // chunk) * chunk
    return max(d for d in range(1, steps + 1) if chunk % d == 0)


def plan(positions, chunk: int | None, per_step: int, budget: int | None = None) -> list[np.ndarray]:
    """Group sorted time ``positions`` (indices into the paired data) into blocks of at most
    ``budget`` bytes (default :data:`BLOCK_BYTES`, read at call time).

    Blocks are aligned to multiples of :func:`steps_per_block` in position space, so with storage
    chunks of ``chunk`` steps a block never straddles a chunk it shares with another block.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        return []
    steps = steps_per_block(chunk, per_step, BLOCK_BYTES if budget is None else budget)
    keys = positions // steps
    cuts = np.flatnonzero(np.diff(keys)) + 1
    return list(np.split(positions, cuts))


def take(obj, positions):
    """``obj`` (xarray, lazy) at time ``positions``: a slice when they are contiguous (cheap
    chunk-aligned reads), fancy indexing otherwise."""
    positions = np.asarray(positions)
    if positions.size and np.all(np.diff(positions) == 1):
        return obj.isel(time=slice(int(positions[0]), int(positions[-1]) + 1))
    return obj.isel(time=positions)


def compute(*objs, scheduler: str | None = None):
    """Compute xarray/dask objects together, so chunks they share (e.g. a PerfectProg target and
    its block mean) are read once. ``scheduler="synchronous"`` in DataLoader workers: one thread
    each, so workers never compete with the training threads or multiply their memory."""
    with dask.config.set(scheduler=scheduler) if scheduler else nullcontext():
        return dask.compute(*objs)

