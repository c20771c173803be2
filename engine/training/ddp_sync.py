"""A check that data-parallel ranks really ended with the same weights.

DDP averages gradients across ranks, so every rank's model must stay identical; a rank that
silently skipped a synchronisation (a mis-set strategy, an unused parameter, a rank that loaded
other weights) would still train, and rank 0's checkpoint would hide it. At the end of training
each rank reduces its parameters to a small float64 checksum vector, rank 0 gathers them all and
compares (:func:`compare_checksums`).

The same module says which time blocks each rank read (:func:`blocks_read`): under DDP every rank
reads only its own shard of the store (:meth:`DownscalingDataset.shard_blocks`).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

# Relative tolerance of "in sync": identical weights give identical checksums (the same kernels
# on the same values), so anything above float64 round-off means the ranks differ.
SYNC_RTOL = 1e-12


def weight_checksum(modules: Iterable[torch.nn.Module]) -> torch.Tensor:
    """Three float64 numbers per parameter tensor of ``modules``: the sum, the sum of squares and a
    position-weighted sum (which also tells apart permuted values), on CPU.

    Parameters
    ----------
    modules : the networks to summarise, in a fixed order (the same on every rank)
    """
    rows = []
    for module in modules:
        for p in module.parameters():
            # On CPU: once per run, and float64 is not available on every accelerator (MPS).
            v = p.detach().reshape(-1).to("cpu", torch.float64)
            w = torch.linspace(1.0, 2.0, v.numel(), dtype=torch.float64)
            rows.append(torch.stack([v.sum(), (v * v).sum(), (v * w).sum()]))
    if not rows:
        raise ValueError("weight_checksum needs at least one module with parameters; got none")
    return torch.cat(rows)


def compare_checksums(gathered: torch.Tensor, rtol: float = SYNC_RTOL) -> tuple[bool, float]:
    """(in sync, largest absolute difference from rank 0) for checksums stacked by rank.

    Parameters
    ----------
    gathered : (ranks, n) tensor, one :func:`weight_checksum` per rank
    rtol : tolerance relative to the largest checksum magnitude (at least 1)
    """
    if gathered.ndim != 2 or gathered.shape[0] < 1:
        raise ValueError(f"gathered checksums must be (ranks, n); got shape {tuple(gathered.shape)}")
    g = gathered.to(torch.float64)
    diff = float((g - g[:1]).abs().max())
    if not np.isfinite(diff):
        return False, float("inf")
    scale = max(1.0, float(g.abs().max()))
    return diff <= rtol * scale, diff


def blocks_read(loader: Any, epoch: int) -> list[int] | None:
    """The time blocks this rank's training loader reads in ``epoch`` (all its DataLoader
    workers, sorted), or None when the loader is not a :class:`BlockStream`'s."""
    stream = getattr(loader, "dataset", None)
    dataset = getattr(stream, "dataset", None)
    if not hasattr(stream, "batches") or not hasattr(dataset, "shard_blocks"):
        return None
    workers = max(1, int(getattr(loader, "num_workers", 0) or 0))
    out: set[int] = set()
    # The same shard arithmetic as BlockStream.shard(), for each worker of this rank.
    for worker in range(workers):
        mine = stream.batches // workers + (worker < stream.batches % workers)
        if mine:
            out.update(int(b) for b in dataset.shard_blocks(epoch, stream.rank * workers + worker,
                                                             stream.world * workers, mine * stream.batch_size))
    return sorted(out)


def gather_blocks(fabric, blocks: list[int]) -> list[list[int]]:
    """Every rank's ``blocks`` (lists of different lengths), gathered on every rank."""
    n = torch.tensor([len(blocks)], dtype=torch.long, device=fabric.device)
    lengths = fabric.all_gather(n).reshape(-1).tolist()
    padded = torch.full((max(lengths) or 1,), -1, dtype=torch.long, device=fabric.device)
    padded[: len(blocks)] = torch.tensor(blocks, dtype=torch.long)
    rows = fabric.all_gather(padded).reshape(len(lengths), -1).cpu().tolist()
    return [row[:k] for row, k in zip(rows, lengths)]
