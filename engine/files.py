"""Atomic file writes, used wherever finescale writes a file that another process may read
(run store, data cache): write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block ends
    without error, delete it otherwise. Readers see the old file or the new, never half of one
    (``os.replace`` is atomic on POSIX within a file system)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # durable before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except Exception as exc:
        # Writers such as torch.save report a full disk without errno ("unexpected pos 64 vs 0"):
        # while the half-written file still holds its space, a full disk is recognisable.
        if not (isinstance(exc, OSError) and exc.errno is not None) and _nearly_full(path.parent):
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path} "
                                        f"({type(exc).__name__}: {exc})") from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _nearly_full(folder: Path, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
