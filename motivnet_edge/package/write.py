"""Writing packages: the manifest in schema order, and a folder swapped into place atomically.

An export assembles its package beside the destination and renames it into place, so a killed
export leaves the previous package intact; the next export removes what a killed one left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import PackageError
from ..preprocess import Preprocessing
from .manifest import SCHEMA_VERSION, ModelFile, _read_manifest, load_package


def build_manifest(*, labels, preprocessing: Preprocessing, files: list[ModelFile],
                   provenance: dict | None = None, license: dict | None = None,
                   metrics: dict | None = None, assets: dict[str, str] | None = None,
                   roles: dict[str, str] | None = None) -> dict:
    """The manifest dict in schema order (see README's "Package format").

    ``assets`` are other verified files ({path: sha256}); ``roles`` names what some are for
    (e.g. {"yunet": "detector/yunet.onnx"}).
    """
    return {"schema_version": SCHEMA_VERSION, "labels": list(labels),
            "preprocessing": preprocessing.to_dict(), "files": [f.to_dict() for f in files],
            "assets": dict(assets or {}), "assets_roles": dict(roles or {}), "provenance": provenance or {},
            "license": license or {}, "metrics": metrics or {}}


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: What an export writes beside ``dest`` and nothing else: its build folder (mkdtemp's 8 random
#: characters, the writer's pid, a marker file inside) and a previous package moved aside.
_MARKER = ".motivnet-export-build"


def _leftovers(dest: Path) -> list[tuple[Path, int, str]]:
    """(path, pid, "tmp" | "old") of the folders killed exports into ``dest`` left; a user's own
    files beside it (``.pkg.bak``, ``.pkg.old-keep``, names with glob characters) never match."""
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.(?:(?P<tmp>[a-z0-9_]{{8}})-(?P<pid>\d+)\.tmp|old-(?P<old>\d+))$")
    out = []
    for p in dest.parent.iterdir():
        m = pattern.match(p.name)
        if not m or p.is_symlink() or not p.is_dir():
            continue
        if m["tmp"] and (p / _MARKER).is_file():
            out.append((p, int(m["pid"]), "tmp"))
        elif m["old"] and (manifest := _read_own_manifest(p)) is not None and not _foreign_entries(p, manifest):
            out.append((p, int(m["old"]), "old"))
    return out


def _clean_leftovers(dest: Path) -> None:
    """Removes what killed exports into ``dest`` left beside it; puts back a package a kill left aside."""
    for p, pid, kind in _leftovers(dest):
        if _pid_alive(pid) and pid != os.getpid():
            continue  # another export is writing it right now
        if kind == "old" and not dest.exists():
            os.replace(p, dest)  # killed between the two renames of an older version: restore
        else:
            shutil.rmtree(p, ignore_errors=True)


def _foreign_entries(folder: Path, manifest: dict) -> list[str]:
    """What ``folder`` holds beyond its manifest and the files it lists (relative paths, sorted).

    A folder is ours only if it leads to a listed file; links are never ours."""
    listed = {"manifest.json"}
    for entry in manifest.get("files", []) if isinstance(manifest.get("files"), list) else []:
        if isinstance(entry, dict):
            listed.add(str(entry.get("path")))
            extra = entry.get("extra_files")
            listed.update(str(k) for k in (extra if isinstance(extra, dict) else {}))
    assets = manifest.get("assets")
    listed.update(str(k) for k in (assets if isinstance(assets, dict) else {}))
    folders = {str(q) for p in listed for q in Path(p).parents}
    foreign = []
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            rel = (Path(root) / name).relative_to(folder).as_posix()
            full = Path(root) / name
            if full.is_symlink() or (name in dirs and rel not in folders) or (name in names and rel not in listed):
                foreign.append(rel)
        dirs[:] = [d for d in dirs if (Path(root) / d).relative_to(folder).as_posix() in folders
                   and not (Path(root) / d).is_symlink()]
    return sorted(foreign)


def _read_own_manifest(folder: Path) -> dict | None:
    """The folder's manifest if it is one of ours (a package's keys), else None."""
    try:
        manifest = _read_manifest(folder / "manifest.json")
    except (PackageError, OSError):
        return None
    if isinstance(manifest, dict) and {"schema_version", "labels", "files"} <= manifest.keys():
        return manifest
    return None


def check_replaceable(dest: Path) -> None:
    """An export replaces the whole folder at ``dest``: only an empty folder or a package holding
    nothing but its manifest and the files it lists may be there, never a user's files.

    Raises:
        PackageError: ``dest`` is a file, a link, a folder that is not a package, or a package
            with other files beside its own (they are named).
    """
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_symlink() or not dest.is_dir():
        raise PackageError(f"--out {dest} exists and is not a folder; choose a new folder for the package")
    try:
        if not any(dest.iterdir()):
            return
    except OSError as exc:
        raise PackageError(f"--out {dest} cannot be read ({exc.strerror}); choose another --out") from None
    manifest = _read_own_manifest(dest)
    if manifest is None:
        raise PackageError(f"--out {dest} holds files but no model package (manifest.json); an export "
                           "replaces the whole folder, so it writes only into a new folder, an empty one or "
                           "an earlier package: choose another --out")
    foreign = _foreign_entries(dest, manifest)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise PackageError(f"--out {dest} is a package but also holds files its manifest does not list "
                           f"({shown}); an export replaces the whole folder: move them out or choose another --out")


def write_package(dest: str | Path, build) -> Path:
    """Builds a package atomically: ``build(tmp_folder)`` writes files and returns the manifest.

    The folder is assembled beside ``dest`` and swapped into place in one step (Linux:
    renameat2 RENAME_EXCHANGE); on any error or kill the previous package at ``dest``
    (if any) stays as it was, and the next export removes what the killed one left.
    The package gets ordinary folder permissions (0777 less the umask), not mkdtemp's 0700.

    Raises:
        PackageError: ``dest``'s parent is not writable, or ``dest`` holds something other
            than a package (see ``check_replaceable``).
    """
    dest = Path(dest).absolute()
    check_replaceable(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=f"-{os.getpid()}.tmp", dir=dest.parent))
        (tmp / _MARKER).touch()
    except OSError as exc:
        raise PackageError(f"cannot write to {dest.parent}: {exc.strerror}; choose another --out") from None
    try:
        manifest = build(tmp)
        (tmp / _MARKER).unlink()
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        load_package(tmp)  # what we ship must load
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        if dest.exists() and _exchange(tmp, dest):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous package
            return dest
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
