"""Shared fixtures for engine tests: a tiny experiment on the demo data."""

import pytest

from engine.config import ExperimentConfig


@pytest.fixture
def tiny_config() -> ExperimentConfig:
    """A configuration that trains in a few seconds on this CPU (demo data, 8 filters, 1 block)."""
    return ExperimentConfig(name="tiny").replace(
        data={"patch_size": 32},
        model={"filters": 8, "blocks": 1},
        training={"epochs": 2, "samples_per_epoch": 64, "batch_size": 8, "patience": 5},
        launch={"launcher": "inline"},
    )
