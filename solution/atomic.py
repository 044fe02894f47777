"""Atomic writes: a file is written under a temporary sibling name and renamed over its target, so a
reader, or a run resumed after a kill, never sees half a file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` when the block ends, and is removed if it fails.

    The temporary name (``x.npy`` -> ``x.npy.tmp``) never ends in the real suffix, so a leftover from a
    killed process is never taken for data by a ``*.jpg`` or ``part-*.npy`` glob. Writers that pick a
    format by extension (PIL, matplotlib, np.save) must be given the format or a file handle.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
