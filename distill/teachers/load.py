"""Teachers behind one interface: labels, preprocessing, logits for face images.

``load_teacher(path)`` detects the format: a Keras HDF5 classifier (the FER2013 Xception
pair, rebuilt in torch from the file), an ONNX classifier (labels and preprocessing from
its metadata or given by the user), or several of them as an ensemble whose
probabilities are averaged after explicit remapping onto one label order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from motivnet_edge.errors import MotivnetError
from motivnet_edge.labels import FER2013_LABELS, MOTIVNET_LABELS, remap_indices, remap_scores, softmax
from motivnet_edge.preprocess import Preprocessing, faces_to_tensor

# What the FER2013 Xception models were trained on (the `fer` package's convention).
XCEPTION_PREPROCESSING = Preprocessing(input_size=(64, 64), color="gray", mean=(127.5,), std=(127.5,),
                                       interpolation="linear")


class TeacherError(MotivnetError, ValueError):
    """The teacher file cannot be used (format, labels or preprocessing unknown)."""


@dataclass
class Teacher:
    """A model whose outputs a student learns from.

    Attributes:
        name: identity used to key cached outputs (includes the file's sha256).
        labels: output order.
        preprocessing: how its face crops are made (the runtime's definition).
        run: float32 NCHW batch -> logits (N, len(labels)).
        license: licence of the weights, carried into exported students.
    """

    name: str
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    run: object
    license: str = "unknown"
    module: object = None
    info: dict = field(default_factory=dict)

    def logits(self, images: Sequence[np.ndarray], *, batch: int = 256) -> np.ndarray:
        """Logits for whole-image face crops (uint8 gray or BGR), through this teacher's preprocessing."""
        out = [self.run(faces_to_tensor(images[i:i + batch], self.preprocessing))
               for i in range(0, len(images), batch)]
        return np.concatenate(out).astype(np.float32)

    def probs(self, images: Sequence[np.ndarray], *, labels: Sequence[str] | None = None) -> np.ndarray:
        """Softmax probabilities, optionally remapped (by name) onto ``labels``; absent classes get 0."""
        p = softmax(self.logits(images))
        return p if labels is None else remap_scores(p, self.labels, labels, on_missing="drop")


def _sha(path: Path) -> str:
    from motivnet_edge.package import sha256_file

    return sha256_file(path)[:16]  # chunked: teacher files reach gigabytes


def _torch_runner(module):
    """Batch runner on the GPU when there is one (bf16 autocast there), else the CPU."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    module.eval().to(device)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            return module(torch.from_numpy(x).to(device)).float().cpu().numpy()
    return run


def load_keras_teacher(path: Path, *, labels: Sequence[str] = FER2013_LABELS,
                       preprocessing: Preprocessing = XCEPTION_PREPROCESSING) -> Teacher:
    from .keras_graph import KerasGraph

    module = KerasGraph(path)
    return Teacher(f"keras:{path.name}:{_sha(path)}", tuple(labels), preprocessing, _torch_runner(module),
                   license="MIT (FER2013 Xception, oarriaga/face_classification)", module=module)


def load_onnx_teacher(path: Path, *, labels: Sequence[str] | None = None,
                      preprocessing: Preprocessing | None = None) -> Teacher:
    import onnxruntime as ort

    from motivnet_edge.onnx_refs import check_beside

    check_beside(path)  # its external data, if any, must be plain files beside it
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    if labels is None and "labels" in meta:
        labels = json.loads(meta["labels"])
    if preprocessing is None and "preprocessing" in meta:
        preprocessing = Preprocessing.from_dict(json.loads(meta["preprocessing"]))
    if labels is None or preprocessing is None:
        raise TeacherError(f"{path.name} does not declare its labels/preprocessing in ONNX metadata; "
                           "pass labels=[...] and preprocessing=Preprocessing(...)")
    name = sess.get_inputs()[0].name
    # A package's classifier is always model.onnx: its folder is what tells a student's provenance which it was.
    return Teacher(f"onnx:{path.parent.name}/{path.name}:{_sha(path)}", tuple(labels), preprocessing,
                   lambda x: sess.run(None, {name: x})[0], license=meta.get("license", "unknown"))


def load_teacher(path: str | Path, *, trust_code: bool = False, **kwargs) -> Teacher:
    """Loads a teacher by its format (.hdf5/.h5 Keras, .onnx, MotivNet/Sapiens checkpoints, or a
    model package folder, "default" for the embedded one).

    Args:
        trust_code: admit TorchScript / torch.export archives, whose loading runs code from the file.

    Raises:
        TeacherError: unknown format or missing file.
        CheckpointError: an unsafe checkpoint (pickled code, or a code archive without ``trust_code``).
    """
    from motivnet_edge.package import load_package, resolve_model

    from ..model_files import ModelFileError, model_kind

    path = resolve_model(path)  # "default": the embedded model
    if path.is_dir() and (path / "manifest.json").is_file():
        # A model package teaches through its fp32 ONNX file (verified as the package loads).
        pkg = load_package(path)
        f = pkg.file_for("onnxruntime", "fp32")
        if f is None:
            raise TeacherError(f"package {path} has no fp32 ONNX model to teach with; export it again")
        path = pkg.path_of(f)
    if not path.is_file():
        raise TeacherError(f"teacher {path} does not exist")
    try:
        kind = model_kind(path)
    except ModelFileError as exc:
        raise TeacherError(f"unknown teacher format: {exc}") from None
    if kind == "keras":
        return load_keras_teacher(path, **kwargs)
    if kind == "onnx":
        return load_onnx_teacher(path, **kwargs)
    if kind == "motivnet":
        return load_motivnet_teacher(path, trust_code=trust_code, **kwargs)
    raise TeacherError(f"{path.name} is a {kind}, not a teacher file: export it (motivnet-edge export) and pass the "
                       "package's model.onnx, or use a MotivNet checkpoint, a Keras .hdf5 or an .onnx classifier")


def load_motivnet_teacher(path: Path, *, mode: str = "letterbox", img_size=(1024, 768), **load_kw) -> Teacher:
    """MotivNet from any checkpoint format; ``mode`` "letterbox" (authors' inference, default) or "stretch"."""
    from .checkpoints import load_motivnet
    from .motivnet import MOTIVNET_PREPROCESSING

    if mode not in MOTIVNET_PREPROCESSING:
        raise TeacherError(f"mode must be one of {sorted(MOTIVNET_PREPROCESSING)}")
    model, info = load_motivnet(path, img_size=img_size, **load_kw)
    pp = MOTIVNET_PREPROCESSING[mode]
    if tuple(img_size) != tuple(pp.input_size):
        pp = Preprocessing.from_dict({**pp.to_dict(), "input_size": list(img_size)})
    return Teacher(f"motivnet:{path.name}:{_sha(path)}", model.labels, pp, _torch_runner(model),
                   license="CC BY-NC 4.0 (Sapiens weights); MotivNet code GPL-3.0", module=model,
                   info={"format": info["format"]})


class EnsembleTeacher(Teacher):
    """Averages member probabilities after remapping each onto ``labels``; logits = log(mean p)."""

    def __init__(self, members: Sequence[Teacher], *, labels: Sequence[str] = MOTIVNET_LABELS) -> None:
        if not members:
            raise TeacherError("an ensemble needs at least one teacher")
        for m in members:
            remap_indices(m.labels, labels, on_missing="drop")
        super().__init__("ensemble(" + ",".join(m.name for m in members) + ")", tuple(labels),
                         members[0].preprocessing, None,
                         license="; ".join(sorted({m.license for m in members})))
        self.members = list(members)

    def logits(self, images, *, batch: int = 256) -> np.ndarray:
        p = np.mean([m.probs(images, labels=self.labels) for m in self.members], axis=0)
        return np.log(np.clip(p, 1e-8, 1.0)).astype(np.float32)


class MirroredTeacher(Teacher):
    """A teacher that reads each face and its mirror image and averages the two probabilities.

    An expression reads the same in a mirror, but a small model's answers need not: a pico
    distilled without this read KDEF's full-left faces 7 points better than its full-right
    ones, and the same crops flipped swapped the gap. A student distilled from raw outputs inherits that bias
    through every flipped training view; from this teacher every target is symmetric.
    It costs the teacher two passes per view, once, in the cache (``teachers.cache``).
    """

    def __init__(self, inner: Teacher) -> None:
        super().__init__(f"mirror({inner.name})", inner.labels, inner.preprocessing, None,
                         license=inner.license, info={**inner.info, "mirror": True})
        self.inner = inner

    def logits(self, images, *, batch: int = 256) -> np.ndarray:
        import cv2

        flipped = [cv2.flip(np.ascontiguousarray(im), 1) for im in images]
        p = (self.inner.probs(images) + self.inner.probs(flipped)) / 2
        return np.log(np.clip(p, 1e-8, 1.0)).astype(np.float32)
