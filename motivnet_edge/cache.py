"""The user cache folder: extracted zip packages, TensorRT engines, on-device measurements.

``$MOTIVNET_CACHE`` overrides it; otherwise ``$XDG_CACHE_HOME/motivnet-edge`` (``~/.cache``).
Entries are keyed by content (sha256), so the cache holds one copy per distinct input and a
second load reuses the first's work instead of leaving another copy behind.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def user_cache(*parts: str) -> Path:
    """The cache folder joined with ``parts`` (not created)."""
    base = os.environ.get("MOTIVNET_CACHE")
    if base:
        return Path(base).joinpath(*parts)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg, "motivnet-edge").joinpath(*parts)


def read_entry(path: Path, *, limit: int = 1 << 16) -> bytes:
    """A cache entry's bytes: a regular file of at most ``limit`` bytes, opened without following
    a link and without blocking (a shared cache may hold a planted link to /dev/zero, or a FIFO).

    Raises:
        FileNotFoundError: there is no entry.
        OSError: the entry is a link, not a regular file, or larger than ``limit``.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise OSError(f"{path} is not a regular file of at most {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit + 1)[:limit]
    finally:
        os.close(fd)
