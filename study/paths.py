"""Where caches and runs live, and a cross-process lock for building shared artifacts."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def cache_dir() -> Path:
    """Built artifacts shared by runs (tokenizers, training sets, pretrained tiny LMs).

    Set STUDY_CACHE to move it (tests point it at a temporary folder)."""
    path = Path(os.environ.get("STUDY_CACHE") or Path.home() / ".cache" / "study")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(path: Path):
    """Exclusive lock, so concurrent sweep workers build a cached artifact once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
