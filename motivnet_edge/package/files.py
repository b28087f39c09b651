"""Package files read safely: paths that cannot leave the folder, and sha256 checked on read.

A manifest names files by relative path; ``inside`` refuses absolute paths, '..', NUL bytes and
symlinks out, and ``read_verified`` hands a runtime the very bytes it hashed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from ..errors import PackageError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inside(root: Path, rel: str) -> Path:
    """Resolves ``rel`` under ``root``; refuses absolute paths, '..' and symlinks out."""
    if not isinstance(rel, str) or "\0" in rel or len(rel) > 1024 or any(len(part) > 255 for part in rel.split("/")):
        shown = rel[:60] + "..." if isinstance(rel, str) and len(rel) > 60 else rel
        raise PackageError(f"manifest path {shown!r} is not a file name (NUL byte, or longer than a path can be); "
                           "re-export the package")
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or ":" in rel:
        raise PackageError(f"manifest path {rel!r} leaves the package folder; paths must be "
                           "relative and stay inside it")
    full = (root / p).resolve()
    if not full.is_relative_to(root.resolve()):
        raise PackageError(f"manifest path {rel!r} resolves outside the package folder (symlink?)")
    return full


def _mismatch(rel: str, expected: str, actual: str) -> PackageError:
    return PackageError(f"package file {rel} does not match its sha256 (expected {expected[:12]}..., "
                        f"got {actual[:12]}...): it was modified or truncated; re-export the package")


def read_verified(root: Path, rel: str, expected: str) -> bytes:
    """The bytes of a package file, read once and checked against ``expected``: what the caller
    hands to a runtime is exactly what was verified (the path is never opened again).

    Raises:
        PackageError: the path leaves the package, the file is missing, or its sha256 differs.
    """
    full = inside(root, rel)
    if not full.is_file():
        raise PackageError(f"package file {rel} is missing from {root}")
    try:
        with open(full, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise PackageError(f"package file {rel} cannot be read from {root}: {exc.strerror}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise _mismatch(rel, expected, actual)
    return data


def copy_verified(root: Path, rel: str, expected: str, dest: Path) -> Path:
    """Copies a package file into ``dest`` (a private folder), hashing what is written; the copy
    is what a runtime that needs paths (ONNX external data) then loads.

    Raises:
        PackageError: as ``read_verified``.
    """
    full = inside(root, rel)
    out = dest / PurePosixPath(rel)
    out.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    try:
        with open(full, "rb") as src, open(out, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                dst.write(chunk)
    except OSError as exc:
        raise PackageError(f"package file {rel} cannot be read from {root}: {exc.strerror}") from None
    if h.hexdigest() != expected:
        raise _mismatch(rel, expected, h.hexdigest())
    return out


def verify(root: Path, rel: str, expected: str) -> None:
    full = inside(root, rel)
    if not full.is_file():
        raise PackageError(f"package file {rel} is missing from {root}")
    actual = sha256_file(full)
    if actual != expected:
        raise _mismatch(rel, expected, actual)
