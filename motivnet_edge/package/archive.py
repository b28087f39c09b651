"""Zip packages: unpacked once per process into a private folder, with limits checked first.

A zip bomb is refused from its directory (entry count and total size), every entry name goes
through the same path guard as a manifest path, and a zip without manifest.json is not a package.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import zipfile
from pathlib import Path

from ..errors import PackageError
from .files import inside

#: A zip package may unpack to at most this many bytes and entries (a package is ~10 files
#: of a few MB); a zip bomb is refused from its directory, before anything is written.
MAX_ZIP_BYTES = 512 * 2**20
MAX_ZIP_ENTRIES = 256
#: Zips this process unpacked: (path, size, mtime) -> package root.
_UNPACKED: dict[tuple, Path] = {}


def _zip_entry_count(path: Path) -> int | None:
    """The entry count the zip's end record declares, read from its last 64 KB before zipfile
    parses a central directory of any size; None when no end record is found there."""
    import struct

    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 65557))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    count = struct.unpack_from("<H", tail, at + 10)[0]
    if count != 0xFFFF:
        return count
    # Zip64: the locator just before the end record points at the zip64 end record and its count.
    loc = tail.rfind(b"PK\x06\x07", 0, at)
    if loc < 0 or loc + 20 > len(tail):
        return None
    (record,) = struct.unpack_from("<Q", tail, loc + 8)
    with open(path, "rb") as fh:
        fh.seek(record)
        head = fh.read(56)
    if len(head) < 40 or head[:4] != b"PK\x06\x06":
        return None
    return struct.unpack_from("<Q", head, 32)[0]


def extract_zip(path: Path) -> Path:
    """Unpacks a zip package into a private folder of this process (mode 0700, removed at exit).

    Nothing unpacked is trusted across processes: a shared or edited cache cannot make an
    unchanged zip run another model, concurrent first loads cannot race, and nothing is left
    in the user's cache. Within one process a zip is unpacked once.
    """
    import atexit

    from ..cache import user_cache

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _UNPACKED and _UNPACKED[key].is_dir():
        return _UNPACKED[key]
    declared = _zip_entry_count(path)
    if declared is not None and declared > MAX_ZIP_ENTRIES:
        raise PackageError(f"{path} declares {declared} entries, above the limit of {MAX_ZIP_ENTRIES} for a model "
                           "package; is it the right file?")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if len(infos) > MAX_ZIP_ENTRIES or total > MAX_ZIP_BYTES:
                raise PackageError(f"{path} would unpack to {len(infos)} entries / {total / 2**20:,.0f} MB, above "
                                   f"the limit of {MAX_ZIP_ENTRIES} / {MAX_ZIP_BYTES >> 20} MB for a model package; "
                                   "is it the right file?")
            parent = user_cache("packages")
            for info in infos:
                inside(parent, info.filename.rstrip("/") or ".")  # zip-slip guard
            names = [i.filename for i in infos]
            normal = [posixpath.normpath(n.rstrip("/")) for n in names]
            twice = sorted({n for n in normal if normal.count(n) > 1})
            if twice:
                # zipfile would silently unpack the later entry over the earlier one.
                raise PackageError(f"{path} holds {twice[0]!r} more than once; a package zip has one entry per "
                                   "file: zip the package folder again")
            if not any(n == "manifest.json" or (n.count("/") == 1 and n.endswith("/manifest.json")) for n in names):
                # A torch .pt/.pt2, an .npz or any other zip: not a package, and nothing is unpacked.
                raise PackageError(f"{path} is a zip archive without manifest.json: not a model package "
                                   "(export one with `motivnet-edge export`)")
            parent.mkdir(parents=True, exist_ok=True)
            dest = Path(tempfile.mkdtemp(prefix=f"unpacked-{os.getpid()}-", dir=parent))
            atexit.register(shutil.rmtree, dest, True)
            try:
                zf.extractall(dest)  # zipfile stops each entry at its declared size
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise PackageError(f"{path} is not a valid zip archive ({exc})") from None
    except OSError as exc:
        raise PackageError(f"cannot unpack {path} into {user_cache('packages')}: {exc.strerror}; "
                           "set MOTIVNET_CACHE to a writable folder") from None
    inner = list(dest.iterdir())
    # Accept a zip of the folder itself or of its contents.
    root = inner[0] if len(inner) == 1 and inner[0].is_dir() else dest
    _UNPACKED[key] = root
    return root
