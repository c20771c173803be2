"""Attributions work for every registered deterministic model and for the regression part of a
residual-diffusion run, through the real run store."""

import numpy as np
import pytest
import torch

from engine.config import ModelConfig
from engine.explain import attribute, explain_run
from engine.models import build_model
from engine.registry import BACKBONES, UPSAMPLERS
from engine.runs import RunStore
from engine.training.trainer import train

SCALE = 4


def _backbone_upsampling():
    for backbone in BACKBONES.names():
        for upsampling in BACKBONES.info(backbone).get("upsampling") or UPSAMPLERS.names():
            yield pytest.param(backbone, upsampling, id=f"{backbone}-{upsampling}")


@pytest.mark.parametrize("backbone, upsampling", list(_backbone_upsampling()))
def test_every_registered_model_can_be_explained(backbone, upsampling):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, upsampling=upsampling, filters=4, blocks=1)
    model = build_model(cfg, in_channels=3, static_channels=2, scale=SCALE).eval()
    x, static = torch.randn(1, 3, 8, 8), torch.randn(1, 2, 32, 32)
    out = attribute(model, x, static, region=(10, 14, 10, 14), method="integrated_gradients", n_steps=8)
    assert out["x"].shape == (1, 3, 8, 8) and out["static_hr"].shape == (1, 2, 32, 32)
    assert np.isfinite(np.asarray(out["x"])).all()
    assert float(np.abs(np.asarray(out["x"])).sum()) > 0  # the output depends on the input


@pytest.mark.slow
def test_regression_part_of_residual_diffusion_is_explained(tmp_path, tiny_config):
    store = RunStore(tmp_path)
    regression = store.create(tiny_config.replace(name="mean", training={"epochs": 1}))
    train(regression)
    ds = explain_run(regression, 0, region=(45.5, 46.5, 8.0, 9.0), method="saliency", write=True)
    assert {"importance"} <= set(ds.data_vars) and any(name.startswith("input_") for name in ds.data_vars)
    assert list((regression.path / "attributions").glob("*.nc"))
