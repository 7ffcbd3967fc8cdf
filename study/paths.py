"""Where caches and runs live, and a cross-process lock for building shared artifacts."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
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


def writable_dir(path: Path) -> bool:
    """Whether `path` (a folder, made on demand) could be created and written: its nearest existing ancestor
    must be a writable folder (so a file in the way is False)."""
    path = path.expanduser().absolute()
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    if not (path.is_dir() and os.access(path, os.W_OK | os.X_OK)):
        return False
    try:  # root passes os.access everywhere: try for real (read-only mounts, /proc), leaving nothing behind
        fd, probe = tempfile.mkstemp(dir=path, prefix=".study-write-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True
