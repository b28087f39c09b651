"""A training pack: the multi-domain mix and its selection sets in one portable file.

``--domains`` training reads shared/ (six datasets, YuNet alignment) on the machine that trains.
A GPU host often has neither the data folder nor room for it: a device call carries at most
64 MiB with the repository. A pack holds what training actually reads, already cut by the
runtime's face pipeline: every train row of the mix (stored crop and YuNet-aligned variant),
each row's labels and domain, and every selection domain's validation part, as gray WebP images whose longer
side is at most ``size`` pixels (students read 48x48 gray; 56 px leaves room for the views'
rotations and shifts). ``distill(pack=...)`` trains from it exactly as from ``domains``: the
same sampler over the stored domain tags, the same selection, the same teacher routing.

A pack trades resolution for size: at 56 px, shared/'s 96 px crops lose detail that a model
trained on them may lean on (the default before ``--degrade`` read AffectNet96 test crops at 58 px
18 points worse than at 96 px: ``benchmarks/robustness.py``, "smaller"). Train from a pack with
``--degrade`` and score on shared/.

The file is an ``.npz`` read without pickle; its manifest (labels, recipe, per-domain report,
encoding) is JSON inside it, and every array is checked before use.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from motivnet_edge.atomic import atomic_path
from motivnet_edge.errors import MotivnetError

from motivnet_edge.datasets.readers import FaceSet

log = logging.getLogger(__name__)

PACK_FORMAT = "motivnet-edge training pack"
PACK_VERSION = 1


class PackError(MotivnetError):
    """A file that is not a readable training pack."""


def _encode(image: np.ndarray, size: int, quality: int) -> bytes:
    """Gray WebP, the longer side brought down to ``size`` (never up)."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    if max(h, w) > size:
        s = size / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".webp", gray, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise PackError(f"OpenCV could not encode a {gray.shape} face as WebP")
    return buf.tobytes()


def _put(arrays: dict, key: str, faces: FaceSet, size: int, quality: int) -> None:
    blobs = [_encode(im, size, quality) for im in faces.images]
    arrays[f"{key}.offsets"] = np.cumsum([0, *map(len, blobs)]).astype(np.int64)
    arrays[f"{key}.bytes"] = np.frombuffer(b"".join(blobs), np.uint8)
    arrays[f"{key}.soft"] = faces.soft.astype(np.float16)
    arrays[f"{key}.hard"] = faces.hard.astype(np.int16)
    # NUL-joined UTF-8: a fixed-width string array would cost 4 bytes a character of the longest name.
    arrays[f"{key}.files"] = np.frombuffer("\0".join(faces.files).encode(), np.uint8)


def write_pack(shared: str | Path, out: str | Path, *, preprocessing, detector, recipe=None,
               cache_dir: str | Path | None = None, size: int = 56, quality: int = 75) -> dict:
    """Writes the pack of ``shared``'s training mix and selection sets to ``out`` (atomically).

    Args:
        shared: the shared/ folder ``distill --domains`` reads.
        preprocessing: the students' preprocessing (its alignment cuts the aligned variants).
        detector: the runtime's YuNet detector.
        recipe: the ``MixRecipe`` whose domains go in (default: every domain).
        cache_dir: where aligned crops are cached (shared with ``distill --cache-dir``).
        size: longest image side kept, in pixels (8-512).
        quality: WebP quality (1-100).

    Returns:
        The pack's manifest.

    Raises:
        PackError: size or quality out of range.
        DataError: a missing or unreadable domain.
    """
    from .mixture import MixRecipe, training_mix, validation_sets

    if not 8 <= size <= 512 or not 1 <= quality <= 100:
        raise PackError(f"pack size {size} / quality {quality}: use a size from 8 to 512 px and a quality from 1 to 100")
    recipe = recipe or MixRecipe()
    t0 = time.time()
    train, _, report = training_mix(shared, preprocessing, detector, recipe=recipe, cache_dir=cache_dir)
    val = validation_sets(shared, preprocessing, detector, cache_dir=cache_dir)
    return save_pack(out, train, val, report=report, recipe=recipe.to_dict(), preprocessing=preprocessing,
                     size=size, quality=quality, started=t0)


def save_pack(out: str | Path, train: FaceSet, val: dict[str, FaceSet], *, report: dict, recipe: dict,
              preprocessing, size: int = 56, quality: int = 75, started: float | None = None) -> dict:
    """Writes a pack of ``train`` (rows in ``report``'s domain order) and the selection sets ``val``."""
    rows = sum(int(s["rows"]) for s in report.values())
    if rows != len(train):
        raise PackError(f"the report counts {rows} train rows, the set holds {len(train)}")
    arrays: dict[str, np.ndarray] = {}
    _put(arrays, "train", train, size, quality)
    for name, faces in val.items():
        _put(arrays, f"val.{name}", faces, size, quality)
    manifest = {"format": PACK_FORMAT, "version": PACK_VERSION, "labels": list(train.labels),
                "sources": report, "selection": {k: len(v) for k, v in val.items()},
                "recipe": recipe, "preprocessing": preprocessing.to_dict(),
                "encoding": {"codec": "webp", "color": "gray", "max_side": size, "quality": quality},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.time() - (started or time.time()), 1)}
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare path
            np.savez(f, **arrays)
    log.info("pack %s: %d train rows, %s selection faces, %.1f MB", out, len(train),
             manifest["selection"], Path(out).stat().st_size / 1e6)
    return manifest


def _take(z, key: str, labels: tuple[str, ...], path: Path) -> FaceSet:
    try:
        offsets, blob = z[f"{key}.offsets"], z[f"{key}.bytes"]
        soft, hard = z[f"{key}.soft"].astype(np.float32), z[f"{key}.hard"].astype(np.int64)
        names = bytes(z[f"{key}.files"]).decode()
    except KeyError as exc:
        raise PackError(f"{path} lacks {exc.args[0]}: write it again with motivnet-edge pack") from None
    except UnicodeDecodeError:
        raise PackError(f"{path}: the {key} file names are not UTF-8 (a damaged pack); write it again") from None
    n = len(offsets) - 1
    files = names.split("\0") if n > 0 else []
    if (n < 0 or offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) <= 0)
            or soft.shape != (n, len(labels)) or hard.shape != (n,) or len(files) != n):
        raise PackError(f"{path}: the {key} arrays disagree (a damaged pack); write it again with motivnet-edge pack")
    images = []
    for i in range(n):
        im = cv2.imdecode(blob[offsets[i]:offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise PackError(f"{path}: {key} image {i} ({files[i]}) does not decode; write the pack again")
        images.append(im)
    return FaceSet(images, soft, hard, labels, files)


def read_pack(path: str | Path) -> tuple[FaceSet, dict[str, FaceSet], dict]:
    """(train set, selection sets by domain, manifest) of a pack; train rows keep the mix's order.

    Raises:
        PackError: not a pack, another version, or damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise PackError(f"pack {path} does not exist: write one with motivnet-edge pack --domains SHARED --out {path}")
    try:
        z = np.load(path, allow_pickle=False)
        manifest = json.loads(bytes(z["manifest"]).decode())
    except Exception as exc:  # not a zip, no manifest, not JSON, pickled arrays refused
        raise PackError(f"{path} is not a training pack ({type(exc).__name__}); write one with motivnet-edge pack") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise PackError(f"{path} is not a training pack; write one with motivnet-edge pack")
    if manifest.get("version") != PACK_VERSION:
        raise PackError(f"{path} is pack version {manifest.get('version')}, this motivnet-edge reads version "
                        f"{PACK_VERSION}: write it again with this version")
    labels = tuple(manifest["labels"])
    with z:
        train = _take(z, "train", labels, path)
        rows = sum(int(s["rows"]) for s in manifest["sources"].values())
        if rows != len(train):
            raise PackError(f"{path}: its report counts {rows} train rows but it holds {len(train)}; write it again")
        val = {name: _take(z, f"val.{name}", labels, path) for name in manifest["selection"]}
    return train, val, manifest


__all__ = ["PACK_FORMAT", "PACK_VERSION", "PackError", "read_pack", "save_pack", "write_pack"]
