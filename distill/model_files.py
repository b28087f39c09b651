"""What a model file is: the one table the tooling's verbs (eval, export, distill --teacher) read.

Kinds: a model *package* (folder with manifest.json, a .zip of one, or "default"), a *student*
(a distill run folder or its checkpoint), a *keras* HDF5 classifier, an *onnx* classifier, or a
*motivnet* teacher checkpoint (any format ``motivnet_distill.teachers.checkpoints`` reads). A ``.pt`` is a
student when its pickle names a student's entries, else a teacher checkpoint; nothing is
unpickled to tell (the zip's data.pkl is read as bytes).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from motivnet_edge.errors import MotivnetError

#: File suffix -> kind (".pt" is not here: its content decides, see ``model_kind``).
SUFFIX_KINDS = {".hdf5": "keras", ".h5": "keras", ".onnx": "onnx", ".pth": "motivnet", ".ckpt": "motivnet",
                ".pt2": "motivnet", ".bin": "motivnet"}
KINDS = ("package", "student", "keras", "onnx", "motivnet")


class ModelFileError(MotivnetError, ValueError):
    """The path is none of the model kinds the tooling reads."""


def _names_a_student(path: Path) -> bool:
    """Whether a torch zip checkpoint's pickle mentions a student checkpoint's entries."""
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = next((i for i in zf.infolist() if i.filename.endswith("/data.pkl")), None)
            if pkl is None or pkl.file_size > 16 * 2**20:
                return False
            data = zf.read(pkl)
    except (OSError, zipfile.BadZipFile):
        return False
    return b"preprocessing" in data and b"student" in data


def model_kind(path: str | Path) -> str:
    """The kind of model ``path`` is (one of ``KINDS``).

    Raises:
        ModelFileError: the path does not exist or has no known kind (the message lists them).
    """
    from motivnet_edge.package import resolve_model

    p = resolve_model(path)
    if p.is_dir():
        if (p / "manifest.json").is_file():
            return "package"
        if (p / "best.pt").is_file():
            return "student"
        raise ModelFileError(f"{p} is a folder with neither manifest.json (a package) nor best.pt (a run)")
    if not p.is_file():
        raise ModelFileError(f"{p} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".zip":
        return "package"
    if suffix == ".pt":
        return "student" if _names_a_student(p) else "motivnet"
    if suffix in SUFFIX_KINDS:
        return SUFFIX_KINDS[suffix]
    raise ModelFileError(f"{p.name}: unknown model format {suffix!r}; use a package (folder or .zip), a run folder "
                         "or student .pt, a Keras .hdf5/.h5, an .onnx classifier, or a MotivNet checkpoint "
                         "(.pth, .ckpt, .pt2, .bin)")
