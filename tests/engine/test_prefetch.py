"""In-process batches prefetched in a thread (engine.training.loop.prefetched): same items, same
order, errors where they happen, a producer released when the consumer stops early."""

import threading

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from engine.training.loop import prefetched


def test_same_batches_in_the_same_order_with_a_shuffling_loader():
    data = TensorDataset(torch.arange(40.0))
    torch.manual_seed(3)
    plain = [b[0].tolist() for b in DataLoader(data, batch_size=4, shuffle=True)]
    torch.manual_seed(3)
    ahead = [b[0].tolist() for b in prefetched(DataLoader(data, batch_size=4, shuffle=True))]
    assert ahead == plain and sorted(sum(plain, [])) == list(range(40))
    assert list(prefetched([])) == []


def test_errors_arrive_at_their_item():
    def items():
        yield 1
        yield 2
        raise ValueError("broken sample 3")

    got = []
    with pytest.raises(ValueError, match="broken sample 3"):
        for x in prefetched(items()):
            got.append(x)
    assert got == [1, 2]


def test_producer_released_when_the_consumer_stops():
    before = threading.active_count()
    gen = prefetched(iter(range(10_000)))
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # early stopping
    assert not any(t.name == "finescale-prefetch" for t in threading.enumerate())
    assert threading.active_count() == before
