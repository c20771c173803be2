"""Full-domain prediction of trained runs -> xarray in physical units (and CF NetCDF)."""

from engine.inference.predict import LoadedRun, PredictionError, load_run, predict, predict_run, write_predictions

__all__ = ["LoadedRun", "PredictionError", "load_run", "predict", "predict_run", "write_predictions"]
