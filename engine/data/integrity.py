"""File integrity: a truncated NetCDF file is refused by name before anything reads it.

A NetCDF-3 file cut short (an interrupted download or copy) still opens: its header is intact,
and the netCDF library returns fill values or zeros for the missing bytes, so a run silently
trains on garbage (daily means of 213 K). Its header says exactly how long it must be, so the
check is cheap: parse the header (a few kilobytes), compute where the last variable ends, and
compare with the size on disk. HDF5-based NetCDF-4 files record their end-of-file address in
the superblock; a file shorter than that is truncated too.

Packed data (``scale_factor`` / ``add_offset`` / ``_FillValue`` on int16) need nothing here:
xarray decodes them on opening (``mask_and_scale``), which the tests verify.

Example
-------
>>> check_file("data/tas.nc")            # doctest: +SKIP
>>> check_file("data/cut.nc")            # doctest: +SKIP
Traceback (most recent call last):
DataError: data/cut.nc is truncated: 81920 bytes on disk, its NetCDF-3 header needs at least 160064 ...
"""

from __future__ import annotations

import glob
import os
import struct
from pathlib import Path

from engine.data.errors import DataError

#: Bytes per value of each NetCDF-3/CDF-5 external type.
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_STREAMING = 0xFFFFFFFF


class _Reader:
    def __init__(self, fh, version: int) -> None:
        self.fh = fh
        self.cdf5 = version == 5
        self.offset_size = 4 if version == 1 else 8

    def _unpack(self, fmt: str, n: int):
        raw = self.fh.read(n)
        if len(raw) < n:
            raise EOFError
        return struct.unpack(fmt, raw)[0]

    def int32(self) -> int:
        return self._unpack(">I", 4)

    def nelems(self) -> int:
        return self._unpack(">Q", 8) if self.cdf5 else self.int32()

    def offset(self) -> int:
        return self._unpack(">Q", 8) if self.offset_size == 8 else self.int32()

    def name(self) -> str:
        n = self.nelems()
        raw = self.fh.read(n + (-n % 4))
        if len(raw) < n:
            raise EOFError
        return raw[:n].decode("utf-8", "replace")

    def skip_attributes(self) -> None:
        tag, count = self.int32(), self.nelems()
        if tag == 0 and count == 0:
            return
        for _ in range(count):
            self.name()
            nc_type = self.int32()
            n = self.nelems() * _TYPE_SIZE.get(nc_type, 1)
            if len(self.fh.read(n + (-n % 4))) < n:
                raise EOFError


def netcdf3_required_size(path) -> int | None:
    """Bytes a NetCDF-3 (classic, 64-bit offset or CDF-5) file needs according to its header, or
    None when ``path`` is not such a file (or streams its record count)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
        if len(magic) < 4 or magic[:3] != b"CDF" or magic[3] not in (1, 2, 5):
            return None
        r = _Reader(fh, magic[3])
        try:
            numrecs = r.nelems()
            dims: list[int] = []
            tag, count = r.int32(), r.nelems()
            for _ in range(count if tag else 0):
                r.name()
                dims.append(r.nelems())
            r.skip_attributes()
            tag, count = r.int32(), r.nelems()
            variables = []
            for _ in range(count if tag else 0):
                r.name()
                ndims = r.nelems()
                ids = [r.nelems() for _ in range(ndims)]
                r.skip_attributes()
                nc_type, _vsize, begin = r.int32(), r.nelems(), r.offset()
                is_record = bool(ids) and dims[ids[0]] == 0
                n = _TYPE_SIZE.get(nc_type, 1)
                for i in ids[1:] if is_record else ids:
                    n *= dims[i]
                variables.append((begin, n, is_record))
        except (EOFError, IndexError):
            return 2**63  # the header itself is cut short
    need = 0
    rec = [v for v in variables if v[2]]
    for begin, n, is_record in variables:
        if not is_record:
            need = max(need, begin + n)
    if rec and numrecs and numrecs != _STREAMING and not (r.cdf5 and numrecs == 2**64 - 1):
        # records interleave the record variables; each record is the sum of their padded sizes
        # (one record variable alone is not padded)
        recsize = rec[0][1] if len(rec) == 1 else sum(n + (-n % 4) for _, n, _ in rec)
        for begin, n, _ in rec:
            need = max(need, begin + (numrecs - 1) * recsize + n)
    return need


def hdf5_required_size(path) -> int | None:
    """Bytes an HDF5 file (NetCDF-4) needs by its superblock's end-of-file address, or None."""
    with open(path, "rb") as fh:
        for base in (0, 512, 1024, 2048, 4096):  # the superblock may follow a user block
            fh.seek(base)
            if fh.read(8) == _HDF5_SIGNATURE:
                break
        else:
            return None
        head = fh.read(8)
        if len(head) < 2:
            return 2**63
        version = head[0]
        if version in (0, 1):  # addresses after 16 bytes of versions, sizes, K values and flags
            size_off, start = head[5], base + 24 + (4 if version == 1 else 0)
        elif version in (2, 3):  # version, sizes, flags, then the addresses
            size_off, start = head[1], base + 12
        else:
            return None
        if size_off not in (2, 4, 8):
            return None
        fh.seek(start)
        raw = fh.read(3 * size_off)
        if len(raw) < 3 * size_off:
            return 2**63
    base_addr, eof = (int.from_bytes(raw[i * size_off:(i + 1) * size_off], "little") for i in (0, 2))
    if eof in (0, 2 ** (8 * size_off) - 1):  # undefined address
        return None
    return base_addr + eof


def check_file(path, entry: str | None = None) -> None:
    """Refuse ``path`` (a NetCDF-3 or HDF5/NetCDF-4 file) when it is shorter than its header says.

    Other files (GRIB, Zarr stores, remote URLs) are not looked at.

    Raises
    ------
    DataError
        naming the file, its size and the size its header needs.
    """
    p = Path(path)
    if not p.is_file():
        return
    size = p.stat().st_size
    for kind, need in (("NetCDF-3", netcdf3_required_size), ("HDF5/NetCDF-4", hdf5_required_size)):
        required = need(p)
        if required is None:
            continue
        if size < required:
            detail = ("its header is cut short" if required >= 2**63
                      else f"its {kind} header needs at least {required} bytes")
            where = f"could not open entry {entry!r} from {p}: the file" if entry else str(p)
            raise DataError(f"{where} is truncated: {size} bytes on disk, {detail} (the download or copy was "
                            "interrupted, or the file is truncated or corrupt); fetch the file again")
        return


def check_files(urlpath, entry: str | None = None, catalog_dir: str | None = None) -> None:
    """:func:`check_file` on every local file that ``urlpath`` (a path, glob or list; intake's
    ``{{ CATALOG_DIR }}`` replaced by ``catalog_dir``) names."""
    if urlpath is None:
        return
    paths = urlpath if isinstance(urlpath, (list, tuple)) else [urlpath]
    for item in paths:
        text = os.fspath(item) if isinstance(item, os.PathLike) else str(item)
        if catalog_dir:
            text = text.replace("{{ CATALOG_DIR }}", str(catalog_dir)).replace("{{CATALOG_DIR}}", str(catalog_dir))
        if "://" in text and not text.startswith("file://"):
            continue
        text = text.removeprefix("file://")
        for path in (sorted(glob.glob(text)) if glob.has_magic(text) else [text]):
            check_file(path, entry)
