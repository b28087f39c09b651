"""Model packages: a folder (or a .zip of one) with ``manifest.json`` and model files.

Loading verifies every file's sha256 and refuses any path that leaves the folder, so a
package that was edited, truncated or crafted to read elsewhere fails with a message
that names the file. ``write_package`` builds the folder beside its destination and
renames it into place: a killed export leaves the previous package intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import PackageError
from .preprocess import Preprocessing

SCHEMA_VERSION = 1
#: The model embedded in the wheel; the name "default" (or None) means it everywhere.
DEFAULT_MODEL = Path(__file__).parent / "models" / "default"
DEFAULT_NAME = "default"


def resolve_model(path: str | Path | None) -> Path:
    """The package a user names: None or "default" is the embedded model (unless a file or
    folder called "default" exists here, which then wins); anything else is a path."""
    if path is None or (str(path) == DEFAULT_NAME and not Path(path).exists()):
        return DEFAULT_MODEL
    return Path(path)
BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ModelFile:
    """One model file of a package (an OpenVINO IR lists its .xml; the .bin sits beside it)."""

    backend: str
    precision: str
    path: str
    sha256: str
    input_name: str = "input"
    output_name: str = "logits"
    extra_files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "path": self.path,
                "sha256": self.sha256, "input_name": self.input_name,
                "output_name": self.output_name, "extra_files": dict(self.extra_files)}


@dataclass(frozen=True)
class ModelPackage:
    """A loaded, verified package: labels, preprocessing, model files and their folder."""

    root: Path
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    files: tuple[ModelFile, ...]
    provenance: dict[str, Any]
    license: dict[str, Any]
    metrics: dict[str, Any]
    manifest: dict[str, Any]

    def file_for(self, backend: str, precision: str) -> ModelFile | None:
        for f in self.files:
            if f.backend == backend and f.precision == precision:
                return f
        return None

    def path_of(self, f: ModelFile) -> Path:
        return self.root / f.path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inside(root: Path, rel: str) -> Path:
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
    full = _inside(root, rel)
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
    full = _inside(root, rel)
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


def _verify(root: Path, rel: str, expected: str) -> None:
    full = _inside(root, rel)
    if not full.is_file():
        raise PackageError(f"package file {rel} is missing from {root}")
    actual = sha256_file(full)
    if actual != expected:
        raise _mismatch(rel, expected, actual)


#: A zip package may unpack to at most this many bytes and entries (a package is ~10 files
#: of a few MB); a zip bomb is refused from its directory, before anything is written.
MAX_ZIP_BYTES = 512 * 2**20
MAX_ZIP_ENTRIES = 256


#: A manifest is a few KB; one larger than this is not read (a small zip can hold a huge one).
MAX_MANIFEST_BYTES = 4 * 2**20
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


def _extract_zip(path: Path) -> Path:
    """Unpacks a zip package into a private folder of this process (mode 0700, removed at exit).

    Nothing unpacked is trusted across processes: a shared or edited cache cannot make an
    unchanged zip run another model, concurrent first loads cannot race, and nothing is left
    in the user's cache. Within one process a zip is unpacked once.
    """
    import atexit

    from .cache import user_cache

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
                _inside(parent, info.filename.rstrip("/") or ".")  # zip-slip guard
            names = [i.filename for i in infos]
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


def _read_manifest(manifest_path: Path) -> dict:
    try:
        size = manifest_path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise PackageError(f"{manifest_path} is {size / 2**20:,.1f} MB; a manifest is a few KB "
                               f"(limit {MAX_MANIFEST_BYTES >> 20} MB): is it the right file?")
        return json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PackageError(f"{manifest_path} is not valid JSON: {str(exc)[:200] or type(exc).__name__}") from None


def load_package(path: str | Path | None) -> ModelPackage:
    """Loads and verifies a package folder or .zip (None or "default": the embedded model).

    Raises:
        PackageError: missing or malformed manifest, unknown schema, a path leaving the
            folder, a missing file or a sha256 mismatch (the message names which).
    """
    path = resolve_model(path)
    if path.is_file() and zipfile.is_zipfile(path):
        path = _extract_zip(path)
    if path.is_file() and path.name == "manifest.json":
        path = path.parent
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise PackageError(f"{path} is not a model package: no manifest.json (export one with "
                           "`motivnet-edge export`)")
    m = _read_manifest(manifest_path)
    if not isinstance(m, dict) or m.get("schema_version") != SCHEMA_VERSION:
        raise PackageError(f"{manifest_path}: schema_version {m.get('schema_version') if isinstance(m, dict) else None}"
                           f" is not supported (this runtime reads {SCHEMA_VERSION}); upgrade motivnet-edge")
    missing = [k for k in ("labels", "preprocessing", "files") if k not in m]
    if missing:
        raise PackageError(f"{manifest_path} lacks {missing}")
    for key, kind in (("files", list), ("preprocessing", dict), ("assets", dict), ("assets_roles", dict),
                      ("provenance", dict), ("license", dict), ("metrics", dict)):
        if key in m and not isinstance(m[key], kind):
            raise PackageError(f"{manifest_path}: {key!r} must be a JSON {'list' if kind is list else 'object'}, "
                               f"not {type(m[key]).__name__}; re-export the package")
    if not all(isinstance(v, str) for v in (*m.get("assets", {}).values(), *m.get("assets_roles", {}).values())):
        raise PackageError(f"{manifest_path}: assets and assets_roles map names to strings")
    labels = m["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels) \
            or len(set(labels)) != len(labels):
        raise PackageError(f"{manifest_path}: labels must be a list of distinct names in output order")
    files = []
    for entry in m["files"]:
        if not isinstance(entry, dict):
            raise PackageError(f"{manifest_path}: each files entry must be an object, not {type(entry).__name__}")
        try:
            f = ModelFile(entry["backend"], entry["precision"], entry["path"], entry["sha256"],
                          entry.get("input_name", "input"), entry.get("output_name", "logits"),
                          entry.get("extra_files", {}))
        except KeyError as exc:
            raise PackageError(f"{manifest_path}: a files entry lacks {exc}") from None
        if not all(isinstance(v, str) for v in (f.path, f.sha256, f.input_name, f.output_name)) \
                or not isinstance(f.extra_files, dict) \
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in f.extra_files.items()):
            raise PackageError(f"{manifest_path}: files entry {entry.get('path')!r} needs string path, sha256, "
                               "input/output names and an extra_files object {path: sha256}")
        if f.backend not in BACKENDS or f.precision not in PRECISIONS:
            raise PackageError(f"{manifest_path}: file {f.path} has backend {f.backend!r} / precision "
                               f"{f.precision!r}; known: {BACKENDS} / {PRECISIONS}")
        _verify(path, f.path, f.sha256)
        for rel, digest in f.extra_files.items():
            _verify(path, rel, digest)
        files.append(f)
    if not files:
        raise PackageError(f"{manifest_path} lists no model files")
    for rel, digest in m.get("assets", {}).items():
        _verify(path, rel, digest)
    for role, rel in m.get("assets_roles", {}).items():
        if rel not in m.get("assets", {}):
            raise PackageError(f"{manifest_path}: asset role {role!r} points to {rel!r}, which is not a "
                               "verified asset")
    return ModelPackage(path, tuple(labels), Preprocessing.from_dict(m["preprocessing"]), tuple(files),
                        m.get("provenance", {}), m.get("license", {}), m.get("metrics", {}), m)


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
        elif m["old"] and (p / "manifest.json").is_file():
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


def write_package(dest: str | Path, build) -> Path:
    """Builds a package atomically: ``build(tmp_folder)`` writes files and returns the manifest.

    The folder is assembled beside ``dest`` and swapped into place in one step (Linux:
    renameat2 RENAME_EXCHANGE); on any error or kill the previous package at ``dest``
    (if any) stays as it was, and the next export removes what the killed one left.
    The package gets ordinary folder permissions (0777 less the umask), not mkdtemp's 0700.

    Raises:
        PackageError: ``dest``'s parent is not writable.
    """
    dest = Path(dest).absolute()
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
