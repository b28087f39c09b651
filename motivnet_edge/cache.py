"""The user cache folder: extracted zip packages, TensorRT engines, on-device measurements.

``$MOTIVNET_CACHE`` overrides it; otherwise ``$XDG_CACHE_HOME/motivnet-edge`` (``~/.cache``).
Entries are keyed by content (sha256), so the cache holds one copy per distinct input and a
second load reuses the first's work instead of leaving another copy behind.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache(*parts: str) -> Path:
    """The cache folder joined with ``parts`` (not created)."""
    base = os.environ.get("MOTIVNET_CACHE")
    if base:
        return Path(base).joinpath(*parts)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg, "motivnet-edge").joinpath(*parts)
