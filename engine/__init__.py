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

try:
    # pyproj (pulled in by regionmask, datashader, geopandas) crashes the interpreter at exit
    # ("double free or corruption") when it is first imported *after* netCDF4 has opened a file
    # in the same process (their bundled native libraries clash; pyproj 3.7 + netCDF4 1.7.5
    # wheels). Every netCDF read in finescale happens after `import engine`, so importing pyproj
    # here (~70 ms) protects all of them at once.
    import pyproj  # noqa: F401
except ImportError:  # not installed: nothing to protect against
    pass
