"""finescale's Panel dashboard: ``panel serve app`` serves :mod:`app.main`.

Kept light on purpose: Panel imports this package before every session's ``main.py``.
"""

try:
    # pyproj (pulled in by datashader's rasterize and geopandas) crashes the interpreter at
    # exit ("double free or corruption") when it is first imported *after* netCDF4 has opened
    # a file in the same process (their bundled native libraries clash; seen with pyproj 3.7.2
    # and netCDF4 1.7.5 wheels). Importing it first, ~70 ms, avoids that.
    import pyproj  # noqa: F401
except ImportError:  # not installed: nothing to protect against
    pass
