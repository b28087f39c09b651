"""Model packages: a folder (or a .zip of one) with ``manifest.json`` and model files.

Loading verifies every file's sha256 and refuses any path that leaves the folder, so a
package that was edited, truncated or crafted to read elsewhere fails with a message
that names the file (``package.files``; zips: ``package.archive``). ``package.write`` builds a
package beside its destination and renames it into place.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.registry import SPECS
from ..errors import PackageError
from ..preprocess import Preprocessing
from .archive import extract_zip
from .files import read_verified, verify
from .labels import check_labels

SCHEMA_VERSION = 1
#: The models embedded in the wheel, one folder each; a bare name (``"default"``, or None for it)
#: means one of them everywhere a package is asked for. Embedding another model is its folder
#: here plus its package-data lines in pyproject.toml.
MODELS_DIR = Path(__file__).parents[1] / "models"
DEFAULT_NAME = "default"
DEFAULT_MODEL = MODELS_DIR / DEFAULT_NAME


def embedded_models() -> list[str]:
    """Names of the models embedded in this install (folders of models/ holding a manifest)."""
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "manifest.json").is_file())


def resolve_model(path: str | Path | None) -> Path:
    """The package a user names: None is the default; an embedded model's name is that model
    (unless a file or folder of that name exists here, which then wins); anything else is a path."""
    if path is None:
        return DEFAULT_MODEL
    name = str(path)
    if not Path(path).exists() and name.isidentifier() and (MODELS_DIR / name / "manifest.json").is_file():
        return MODELS_DIR / name
    return Path(path)


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

    @property
    def reads_mirror(self) -> bool:
        """Whether the graph itself reads each face's mirror image and averages both views (a
        package made by ``ensemble --mirror``, such as ``accurate``): reading the mirror image
        again outside it changes nothing, since the graph gives a face and its mirror one answer."""
        student = self.provenance.get("student")
        return isinstance(student, dict) and student.get("mirror") is True




#: A manifest is a few KB; one larger than this is not read (a small zip can hold a huge one).
MAX_MANIFEST_BYTES = 4 * 2**20


def licence_terms(texts: Sequence[str]) -> str:
    """The teachers' licence terms as one flat list: a package's ONNX metadata carries its own teacher's
    terms as "teacher: ...; note: ..." and a student of a student would nest them once per generation."""
    terms = []
    for text in texts:
        for part in (text or "").split("; "):
            while part.startswith("teacher: "):
                part = part[len("teacher: "):]
            if part and not part.startswith("note: ") and part not in terms:
                terms.append(part)
    known = [t for t in terms if t != "unknown"]
    return "; ".join(known) if known else "unknown"


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
        unpacked = extract_zip(path)
        try:
            return _load_folder(unpacked)
        except PackageError as exc:  # name the user's zip, not the private folder it was unpacked to
            text = str(exc).replace(f"{unpacked}/", f"{path}:").replace(str(unpacked), str(path))
            raise PackageError(text if str(path) in text else f"{path}: {text}") from None
    return _load_folder(path)


def _load_folder(path: Path) -> ModelPackage:
    if path.is_file() and path.name == "manifest.json":
        path = path.parent
    manifest_path = path / "manifest.json"
    if not path.exists() and str(path).isidentifier():
        raise PackageError(f"no model called {str(path)!r}: embedded here are {', '.join(embedded_models())}; "
                           "or name a package folder or .zip")
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
        if f.backend not in SPECS or f.precision not in SPECS[f.backend].file_precisions:
            raise PackageError(f"{manifest_path}: file {f.path} has backend {f.backend!r} / precision "
                               f"{f.precision!r}; known: " + "; ".join(
                                   f"{s.name} {'/'.join(s.file_precisions)}" for s in SPECS.values()))
        check_labels(read_verified(path, f.path, f.sha256), f.path, labels)  # bound to the hashed bytes
        for rel, digest in f.extra_files.items():
            verify(path, rel, digest)
        files.append(f)
    if not files:
        raise PackageError(f"{manifest_path} lists no model files")
    for rel, digest in m.get("assets", {}).items():
        verify(path, rel, digest)
    for role, rel in m.get("assets_roles", {}).items():
        if rel not in m.get("assets", {}):
            raise PackageError(f"{manifest_path}: asset role {role!r} points to {rel!r}, which is not a "
                               "verified asset")
    return ModelPackage(path, tuple(labels), Preprocessing.from_dict(m["preprocessing"]), tuple(files),
                        m.get("provenance", {}), m.get("license", {}), m.get("metrics", {}), m)
