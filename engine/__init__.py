"""finescale engine: deep-learning downscaling of gridded climate and weather data.

The public API (see README):

- :class:`engine.config.ExperimentConfig` — the experiment configuration
- :mod:`engine.data` — catalogue, demo data, static fields, pairing, normalisation, datasets
- :func:`engine.models.build_model`, :func:`engine.models.list_models` — the model zoo
- :func:`engine.training.trainer.train` — training into the run store
- :class:`engine.runs.RunStore` — the run store
- :func:`engine.launch.submit` — launchers (inline, local process, SLURM)
"""

__version__ = "0.1.0"
