"""Shared fixtures. Data-layer fixtures are named ``data_*`` and kept small (seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Real data samples for tests (see ../shared/data/README.md); absent in a user's fresh clone.
DATA_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_small_demo():
    """A small demo pair (hr 16 x 32 at 1/12 degree, gcm at 0.3 degree), 2001-01-01..2001-12-31."""
    from engine.data.demo import make_demo

    return make_demo(n_lat=16, n_lon=32, start="2001-01-01", end="2001-12-31", seed=3)


@pytest.fixture
def data_shared_dir() -> Path:
    """``../shared/data`` or skip with the reason."""
    if not DATA_SHARED.is_dir():
        pytest.skip(f"real test data folder {DATA_SHARED} is absent (it is outside the repository)")
    return DATA_SHARED
