"""DeepESD, the CORDEX ML-Bench reference model, in the zoo (the generic zoo tests in
test_models.py cover it too, since it is registered)."""

from __future__ import annotations

import io

import pytest
import torch

from engine.config import ModelConfig
from engine.models import build_model, count_parameters

CFG = ModelConfig(backbone="deepesd", upsampling="pin")


def test_benchmark_shapes_and_reference_size():
    net = build_model(CFG, 15, 1, 8, grid_shape=(128, 128))
    out = net(torch.randn(2, 15, 16, 16), torch.randn(2, 1, 128, 128))
    assert out.shape == (2, 1, 128, 128)
    # the benchmark's DeepESD: conv 15->50, 50->25, 25->1 (3x3, biases), dense 256 -> 16384, plus our
    # one static conv 1->1 (3x3)
    convs = (15 * 50 * 9 + 50) + (50 * 25 * 9 + 25) + (25 * 1 * 9 + 1)
    dense = 16 * 16 * 16384 + 16384
    assert count_parameters(net) == convs + dense + (9 + 1)
    assert count_parameters(build_model(CFG, 15, 0, 8, grid_shape=(128, 128))) == convs + dense


def test_every_hr_cell_has_its_own_weights():
    torch.manual_seed(0)
    net = build_model(CFG, 2, 0, 4, grid_shape=(16, 16))
    x = torch.randn(1, 2, 4, 4)
    out = net(x)
    out[0, 0, 3, 5].backward()
    g = net.dense.weight.grad.reshape(16, 16, -1).abs().sum(-1)
    assert g[3, 5] > 0 and g.sum() == g[3, 5]  # only that cell's row of the dense layer


def test_lazy_size_checkpoint_and_refusals():
    torch.manual_seed(0)
    net = build_model(CFG, 3, 0, 2)  # no grid_shape: sized by the first input
    x = torch.randn(2, 3, 6, 6)
    out = net(x)
    assert out.shape == (2, 1, 12, 12)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    fresh = build_model(CFG, 3, 0, 2)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))  # before any forward pass
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), net.eval()(x))
    with pytest.raises(ValueError, match="built for 36 LR cells .* got an input of 8x8"):
        net(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="offsets"):
        net(x, None, offset=torch.tensor([[0, 4], [0, 0]]))
    with pytest.raises(ValueError, match="accepted: pin"):
        build_model(ModelConfig(backbone="deepesd", upsampling="spc"), 3, 0, 2)
    with pytest.raises(ValueError, match="not divisible by scale 8"):
        build_model(CFG, 3, 0, 8, grid_shape=(100, 128))
    with pytest.raises(ValueError, match="spatio-temporal"):
        build_model(CFG, 3, 0, 2, time_window=3)
