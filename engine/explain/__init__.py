"""Captum attributions of downscaling networks -> xarray (see :mod:`engine.explain.attribution`)."""

from engine.explain.attribution import (
    METHODS,
    ExplainError,
    RegionOutput,
    attribute,
    conv_layers,
    explain_run,
    region_mask,
    to_dataset,
    write_attributions,
)

__all__ = [
    "METHODS", "ExplainError", "RegionOutput", "attribute", "conv_layers", "explain_run", "region_mask",
    "to_dataset", "write_attributions",
]
