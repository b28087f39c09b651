"""The face domains of ../shared as train / validation / test parts, through the runtime's face pipeline.

MotivNet's claim is an expression model that holds across datasets, so the students train on
every domain ../shared holds and are selected on the mean of the domains' validation parts.
Each domain declares its folder, how it is split (by its own prefixes, or by person) and
which classes it drops; nothing here picks a part by looking at a model's score.

Every training face comes in the *variants* a device can produce from it:
  whole    the stored crop is the face (``--detector none`` on a cropped photo);
  aligned  YuNet's 5 landmarks aligned onto the template (``predict`` on a photo).
Aligned variants are cut by ``face_crop`` with the model's own template at twice the model's
input size, so downsizing them in training is the same area resize the runtime does. A face
the detector misses keeps only its whole variant, and the count is logged per domain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..labels import MOTIVNET_LABELS
from ..preprocess import Preprocessing, face_crop

from .readers import DataError, FaceSet, concat, read_image_folder, split_by_person
from .fer import read_fer2013_labels, read_ferplus

log = logging.getLogger(__name__)

#: KDEF people 01-07 of each sex are the test part (../shared/README.md); validation people
#: are the next five numbers, chosen once by number, never by a score.
KDEF_TEST = range(1, 8)
KDEF_VAL = range(8, 13)
_KDEF_NAME = re.compile(r"^[AB]([FM])(\d\d)")


def kdef_part(file: str) -> str:
    """"test", "val" or "train" for a KDEF file name such as ``anger/AF01ANS.jpg``."""
    m = _KDEF_NAME.match(Path(file).name)
    if not m:
        raise DataError(f"{file} is not a KDEF file name ([AB][FM]NN...): is this the kdef folder?")
    person = int(m.group(2))
    return "test" if person in KDEF_TEST else "val" if person in KDEF_VAL else "train"


#: KDEF's camera angles, the last letters of a file name (AF01ANFL.JPG: full left).
KDEF_POSES = {"FL": "full left", "HL": "half left", "S": "straight", "HR": "half right", "FR": "full right"}
_KDEF_POSE = re.compile(r"^[AB][FM]\d\d[A-Z]{2}(FL|HL|S|HR|FR)\.", re.IGNORECASE)


def kdef_pose(file: str) -> str | None:
    """The camera angle code (FL, HL, S, HR, FR) of a KDEF file name, None if it has none."""
    m = _KDEF_POSE.match(Path(file.split("#")[0]).name)
    return m.group(1).upper() if m else None


def prefix_part(file: str) -> str:
    """AffectNet96 / SFEW: the split is the file name's prefix (``train_``, ``valid_``/``val_``, ``test_``)."""
    name = Path(file).name
    for prefix, part in (("train_", "train"), ("valid_", "val"), ("val_", "val"), ("test_", "test")):
        if name.startswith(prefix):
            return part
    raise DataError(f"{file} has no train_/valid_/val_/test_ prefix")


@dataclass(frozen=True)
class Domain:
    """One source of faces: where it lives, how it is split, what it drops, what it may be used for."""

    name: str
    folder: str                      # under shared/data
    parts: tuple[str, ...]           # which of train/val/test exist
    kind: str = "folders"            # "folders" (one per class) or "ferplus"
    splitter: Callable[[str], str] | None = None  # file -> part; None: by-person hash (val/train)
    test_as: str | None = None       # the part a test report uses when "test" is not separate
    aligned: bool = True             # detector-aligned variants (FER+'s 48 px crops are the template itself)
    eval_crop: str = "whole"         # how its validation/test faces reach the model (as users measured them)
    licence: str = "unknown"         # the faces' terms (shared/README.md): weights trained on them may carry them


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("ferplus", "ferplus", ("train", "val", "test"), kind="ferplus", aligned=False,
           licence="FER2013 images: research use only; FER+ labels: MIT"),
    Domain("facial_expressions", "facial_expressions", ("train", "val"),
           licence="facial_expressions: LFW/IMFDB images, research use only"),
    Domain("kdef", "kdef", ("train", "val", "test"), splitter=kdef_part, eval_crop="aligned",
           licence="KDEF: non-commercial research use only"),
    Domain("affectnet96", "affectnet96", ("train", "val", "test"), splitter=prefix_part,
           licence="AffectNet: academic research use only"),
    Domain("sfew", "sfew", ("train", "test"), splitter=prefix_part, licence="SFEW 2.0: academic research use only"),
    # ExpW: web faces of many origins; noisy labels; its test part is kept out of shared/.
    Domain("expw", "expw", ("train", "val"), splitter=prefix_part, eval_crop="aligned",
           licence="ExpW: non-commercial research use only"),
)}
_FERPLUS_SPLIT = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}


def faces_licence(domains: Sequence[str]) -> str:
    """The terms of the faces a model was trained on, for its package's licence, e.g. "trained on
    research-use faces: KDEF: non-commercial research use only; ...". Names not in ``DOMAINS`` (a
    user's own folder) are named as unknown terms: a licence the user must check, never silence.

    A model's weights are a product of its training faces, so a package says which terms may reach it.
    """
    terms = [DOMAINS[d].licence if d in DOMAINS else f"{d}: unknown terms (check them)"
             for d in dict.fromkeys(domains)]
    return "trained on faces under these terms, which the weights may carry: " + "; ".join(terms) if terms else "unknown"


def domain_of(path: str | Path) -> str | None:
    """The domain a --data folder belongs to, by its shared/data folder or FER+ split name; None if none."""
    folders = {d.folder: d.name for d in DOMAINS.values()}
    for part in reversed(Path(path).parts):
        if part in folders:
            return folders[part]
        if part in _FERPLUS_SPLIT.values():
            return "ferplus"
    return None


def shared_yunet(shared: str | Path) -> Path:
    """The YuNet detector that shared/ ships (models/yunet), which cuts every aligned crop."""
    return Path(shared) / "models" / "yunet" / "face_detection_yunet_2023mar.onnx"


def read_part(shared: str | Path, domain: str, part: str, *, labels=MOTIVNET_LABELS) -> FaceSet:
    """The ``part`` ("train", "val", "test") of a domain as stored (whole crops), contempt dropped.

    Raises:
        DataError: unknown domain or part, or the folder is missing.
    """
    if domain not in DOMAINS:
        raise DataError(f"unknown domain {domain!r}; domains: {', '.join(DOMAINS)}")
    d = DOMAINS[domain]
    if part not in d.parts:
        raise DataError(f"{domain} has no {part} part (it has {', '.join(d.parts)})")
    root = Path(shared) / "data" / d.folder
    if d.kind == "ferplus":
        return read_ferplus(root / _FERPLUS_SPLIT[part], labels=labels)
    if not root.is_dir():
        raise DataError(f"{root} not found: the {domain} domain lives in shared/data/{d.folder}")
    faces = read_image_folder(root, labels=labels, mapping={"contempt": None})
    if d.splitter is None:
        return split_by_person(faces, part=part)
    # SFEW's own "val_" part is its test set: it has no labelled test split of its own.
    wanted = "val" if (domain == "sfew" and part == "test") else part
    idx = [i for i, f in enumerate(faces.files) if d.splitter(f) == wanted]
    if not idx:
        raise DataError(f"{root} holds no {part} faces")
    return faces.subset(idx)


def read_meta(shared: str | Path, domain: str) -> dict[str, dict[str, float]]:
    """A domain's ``meta.csv`` (ExpW: each face's box side in its photo and its detector's
    confidence) as {file as FaceSet names it: {column: number}}; {} when the domain has none.

    Raises:
        DataError: the file is there but is not a CSV with a ``file`` column and numbers.
    """
    import csv

    path = Path(shared) / "data" / DOMAINS[domain].folder / "meta.csv"
    if not path.is_file():
        return {}
    out = {}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                name = row.pop("file")
                out[name] = {k: float(v) for k, v in row.items()}
    except (KeyError, ValueError, TypeError, csv.Error) as exc:
        raise DataError(f"{path} is not a meta.csv (file, then numeric columns): {exc}") from None
    return out


def aligned_variants(faces: FaceSet, detector, pp: Preprocessing, *, cache_dir: str | Path | None = None,
                     name: str = "") -> tuple[FaceSet, int]:
    """The faces the detector finds, aligned as the runtime aligns them; returns (set, misses).

    Crops are cached in ``cache_dir`` under a key of the file names, detector file and template.
    """
    big = replace(pp, input_size=(2 * pp.input_size[0], 2 * pp.input_size[1]))
    key = hashlib.sha256(json.dumps([faces.files, str(getattr(detector, "model_path", detector.name)),
                                     big.to_dict()]).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"aligned-{name}-{key}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            found, crops = z["found"], list(z["crops"])
    else:
        found, crops = [], []
        for i, im in enumerate(faces.images):
            dets = detector.detect(im)
            if dets:
                found.append(i)
                crops.append(face_crop(im, big, box=dets[0].box, landmarks=dets[0].landmarks))
        found = np.asarray(found, np.int64)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, found=found, crops=np.stack(crops) if crops else np.zeros((0, *big.input_size), np.uint8))
    misses = len(faces) - len(found)
    if misses:
        log.info("%s: the detector found no face in %d of %d images (profiles and cut-off faces); "
                 "they keep only their whole crop", name, misses, len(faces))
    sub = faces.subset(found)
    return FaceSet(crops, sub.soft, sub.hard, sub.labels, [f"{f}#aligned" for f in sub.files]), misses


def standard_protocols(shared: str | Path, *, split: str = "FER2013Test") -> dict[str, FaceSet]:
    """The three protocols as FaceSets in MotivNet label order (those whose data exists)."""
    shared = Path(shared)
    fer = shared / "data" / "ferplus"
    out = {}
    if (fer / split / "label.csv").is_file():
        out["ferplus_majority"] = read_ferplus(fer / split)
        if (fer / "fer2013_labels.csv").is_file():
            out["fer2013"] = read_fer2013_labels(fer / "fer2013_labels.csv", fer / split)
    if (shared / "data" / "ckplus48").is_dir():
        out["ckplus"] = read_image_folder(shared / "data" / "ckplus48", mapping={"contempt": None})
    if (shared / "data" / "facial_expressions").is_dir():
        out["facial_expressions"] = split_by_person(
            read_image_folder(shared / "data" / "facial_expressions", mapping={"contempt": None}), part="val")
    return out



@dataclass
class TestSet:
    """A test set as its users measure it: ``crop`` "whole" (``--detector none``) or "detect"
    (``predict`` with YuNet: ``detections`` holds (box, landmarks) per image, None where it finds no face)."""

    faces: FaceSet
    crop: str = "whole"
    detections: list | None = None

    @property
    def misses(self) -> int:
        return sum(d is None for d in self.detections) if self.detections is not None else 0


@dataclass(frozen=True)
class ScoreSet:
    """A set on the scoreboard (``eval``, ``benchmarks/domains.py``, RESULTS.md): declared once, here.

    Attributes:
        key: its name in results files.
        title: its column title.
        domain: the DOMAINS entry whose ``part`` it is; None for a standard protocol
            (FER+ majority, FER2013 labels, CK+48, facial_expressions: ``standard_protocols``).
        part: "test", or "val" for a validation part shown for reference.
        cross_domain: counted in the headline cross-domain mean.
    """

    key: str
    title: str
    domain: str | None = None
    part: str = "test"
    cross_domain: bool = False


#: Adding a set to the scoreboard is one entry here (and its Domain above, if it is a new domain).
SCOREBOARD: tuple[ScoreSet, ...] = (
    ScoreSet("affectnet96", "AffectNet96 test_", "affectnet96", cross_domain=True),
    ScoreSet("sfew", "SFEW val_", "sfew", cross_domain=True),
    ScoreSet("kdef", "KDEF people 01-07", "kdef", cross_domain=True),
    ScoreSet("ckplus", "CK+48", cross_domain=True),
    ScoreSet("ferplus_majority", "FER2013Test FER+", cross_domain=True),
    ScoreSet("fer2013", "FER2013 labels"),
    ScoreSet("facial_expressions", "facial_expressions val"),
    # ExpW's test part is kept out of shared/: its validation part is shown, never chosen on here.
    ScoreSet("expw", "ExpW valid_ (validation part)", "expw", part="val"),
)
#: The scoreboard's sets read from a domain: name -> (domain, part).
DOMAIN_TESTS = {s.key: (s.domain, s.part) for s in SCOREBOARD if s.domain}
#: The sets whose mean is the headline cross-domain score.
CROSS_DOMAIN = tuple(s.key for s in SCOREBOARD if s.cross_domain)


def test_sets(shared: str | Path, detector, *, labels=MOTIVNET_LABELS) -> dict[str, TestSet]:
    """Every test set of ../shared that exists, each cut the way its users measure it.

    Raises:
        DataError: a domain folder exists but is malformed.
    """
    out = {name: TestSet(faces) for name, faces in standard_protocols(shared).items()}
    for name, (domain, part) in DOMAIN_TESTS.items():
        if not (Path(shared) / "data" / DOMAINS[domain].folder).is_dir():
            continue
        faces = read_part(shared, domain, part, labels=labels)
        if DOMAINS[domain].eval_crop != "aligned":
            out[name] = TestSet(faces)
            continue
        dets = []
        for im in faces.images:
            found = detector.detect(im)
            dets.append((found[0].box, found[0].landmarks) if found else None)
        out[name] = TestSet(faces, "detect", dets)
    return out


def crops_for(ts: TestSet, pp: Preprocessing) -> FaceSet:
    """The test faces cut for a model with preprocessing ``pp``, as the runtime cuts them.

    Detected faces are aligned at the model's own input size; an image without a detection is
    kept as a gray square (its prediction is scored wrong by ``score_misses``)."""
    if ts.crop == "whole":
        return ts.faces
    blank = np.full(pp.input_size, 128, np.uint8)
    crops = [face_crop(im, pp, box=d[0], landmarks=d[1]) if d is not None else blank
             for im, d in zip(ts.faces.images, ts.detections)]
    return FaceSet(crops, ts.faces.soft, ts.faces.hard, ts.faces.labels, ts.faces.files)


__all__ = ["DOMAINS", "domain_of", "faces_licence", "shared_yunet", "DOMAIN_TESTS", "SCOREBOARD", "CROSS_DOMAIN", "ScoreSet", "Domain", "TestSet", "read_part", "aligned_variants", "crops_for",
           "kdef_part", "prefix_part", "read_meta", "test_sets", "concat"]
