"""finescale's Panel dashboard: ``panel serve app`` serves :mod:`app.main`.

Kept light on purpose: Panel imports this package before every session's ``main.py``.
"""

# engine's __init__ is light (no torch) and imports pyproj before any netCDF file is opened, which
# keeps the interpreter from crashing at exit (see engine/__init__.py).
import engine  # noqa: F401
