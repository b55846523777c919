"""Making a rename durable: a file written aside and renamed into place is only there after a power
cut once its directory entry is on disk too, so the directory itself is fsynced."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
