"""The data layer: catalogue access, demo data, static fields, pairing, normalisation, splits and
PyTorch datasets.

Importing this package is light (xarray, no torch); :class:`DownscalingDataset` and
:func:`build_datasets` load torch on first access.

>>> from engine.config import DataConfig
>>> from engine.data import make_pair, build_datasets          # doctest: +SKIP
>>> pair = make_pair(DataConfig())                              # doctest: +SKIP
"""

from engine.data.catalog import entry_metadata, list_entries, open_dataset
from engine.data.check import check_config
from engine.data.demo import make_demo
from engine.data.errors import DataError
from engine.data.normalise import Normaliser, create as create_normaliser, from_dict as normaliser_from_dict
from engine.data.pairing import PairedData, make_pair
from engine.data.splits import period_times, select_period
from engine.data.static import STATIC_FIELDS, static_fields

__all__ = [
    "DataError",
    "check_config",
    "list_entries",
    "entry_metadata",
    "open_dataset",
    "make_demo",
    "STATIC_FIELDS",
    "static_fields",
    "PairedData",
    "make_pair",
    "Normaliser",
    "create_normaliser",
    "normaliser_from_dict",
    "period_times",
    "select_period",
    "DownscalingDataset",
    "build_datasets",
]


def __getattr__(name: str):
    if name in ("DownscalingDataset", "build_datasets", "Datasets"):
        from engine.data import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(f"module 'engine.data' has no attribute {name!r}")
