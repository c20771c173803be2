"""The DDP weight-synchronisation check (engine.training.ddp_sync): checksums of identical and
perturbed weights, and a real 2-process gloo run through the local launcher that records the
check in its status."""

from __future__ import annotations

import math

import pytest
import torch

from engine.launch import submit
from engine.runs import RunStore
from engine.training.ddp_sync import compare_checksums, weight_checksum


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))


def test_checksum_by_hand():
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
        lin.bias.fill_(3.0)
    # weight: sum -1, squares 5, weighted by linspace(1, 2) = 1*1 + 2*(-2) = -3; bias: 3, 9, 3*1
    assert weight_checksum([lin]).tolist() == [-1.0, 5.0, -3.0, 3.0, 9.0, 3.0]
    assert weight_checksum([lin]).dtype == torch.float64


def test_identical_weights_are_in_sync():
    a, b = _net(0), _net(0)
    gathered = torch.stack([weight_checksum([a]), weight_checksum([b])])
    assert compare_checksums(gathered) == (True, 0.0)


def test_one_perturbed_weight_is_caught_with_its_size():
    a, b = _net(0), _net(0)
    d = 2.0**-20  # ~1e-6, exact in float32, far below the old SLURM test's atol of 1e-4
    with torch.no_grad():
        a[2].bias.fill_(0.25)
        b[2].bias.fill_(0.25 + d)  # the one-element bias of the last layer
    in_sync, diff = compare_checksums(torch.stack([weight_checksum([a]), weight_checksum([b]), weight_checksum([a])]))
    assert not in_sync
    # sum and weighted sum move by d, the sum of squares by 2 * 0.25 * d + d**2 < d
    assert diff == d


def test_permuted_weights_are_caught():
    """Sum and sum of squares cannot see two swapped values; the position-weighted sum does."""
    a, b = _net(0), _net(0)
    with torch.no_grad():
        w = b[0].weight.view(-1)
        w[[0, 1]] = w[[1, 0]].clone()
    assert not compare_checksums(torch.stack([weight_checksum([a]), weight_checksum([b])]))[0]


def test_nan_weights_are_not_in_sync():
    a, b = _net(0), _net(0)
    with torch.no_grad():
        b[0].bias[0] = float("nan")
    in_sync, diff = compare_checksums(torch.stack([weight_checksum([a]), weight_checksum([b])]))
    assert not in_sync and math.isinf(diff)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one module with parameters"):
        weight_checksum([torch.nn.ReLU()])
    with pytest.raises(ValueError, match=r"must be \(ranks, n\); got shape \(3,\)"):
        compare_checksums(torch.zeros(3))


@pytest.mark.slow
def test_two_process_gloo_run_records_weights_in_sync(tmp_path, tiny_config, monkeypatch):
    """Two local ranks (gloo on CPU) train the tiny configuration; the run's status says the ranks
    ended with identical weights, and that they read disjoint time blocks."""
    # Small blocks (the worker inherits the environment): the demo's training period then has many
    # blocks, so sharing one would be a sharding bug, not a period too short to shard.
    monkeypatch.setenv("FINESCALE_BLOCK_BYTES", str(256 * 2**10))
    cfg = tiny_config.replace(training={"epochs": 1, "samples_per_epoch": 32, "batch_size": 8,
                                        "channels_last": False, "precision": "32-true"},
                              launch={"tasks_per_node": 2})
    handle = submit(cfg, RunStore(tmp_path), launcher="local")
    assert handle.wait(timeout=300) == "completed", handle.status().get("error")
    status = handle.run.status()
    assert status["world_size"] == 2
    assert status["ddp_weights_in_sync"] is True and status["ddp_weights_max_diff"] == 0.0
    blocks = status["ddp_blocks_per_rank"]
    assert len(blocks) == 2 and all(blocks)
    assert not set(blocks[0]) & set(blocks[1]), blocks


def test_block_budget_from_the_environment(monkeypatch):
    from engine.data import blocks

    monkeypatch.setenv("FINESCALE_BLOCK_BYTES", "1048576")
    assert blocks._budget_from_environment() == 2**20
    monkeypatch.delenv("FINESCALE_BLOCK_BYTES")
    assert blocks._budget_from_environment() == 64 * 2**20
    for bad in ("64MiB", "0", "-5"):
        monkeypatch.setenv("FINESCALE_BLOCK_BYTES", bad)
        with pytest.raises(ValueError, match=f"FINESCALE_BLOCK_BYTES='{bad}' is not a positive whole number"):
            blocks._budget_from_environment()
