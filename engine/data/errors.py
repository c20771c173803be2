"""The one error type of the data layer.

Every problem with a dataset the user chose (an unknown catalogue entry or variable, grids that do
not overlap, no common time steps, a corrupt file, no network for a remote archive) raises
:class:`DataError` with a message that names the bad value and what would be accepted.
"""

from __future__ import annotations


class DataError(ValueError):
    """A dataset, variable, grid or period that cannot be used; the message says why and what
    would be accepted. Subclasses ``ValueError`` so that callers catching that see it."""
