"""Evaluation on the standard protocols: accuracy, UAR, macro-F1, per-class recall, confusion.

Works for model packages (no torch: the runtime's own backend runs them), student
checkpoints and teachers. Every model's scores are remapped by label *name* onto the
dataset's labels; classes the dataset does not have are dropped explicitly.

Protocols (../shared layout):
  ferplus_majority  FER2013Test, FER+ majority vote (no-majority, unknown, contempt dropped)
  fer2013           the same test images with their original FER2013 labels
  ckplus            CK+48, cross-dataset (contempt has no MotivNet class: dropped)
  facial_expressions  the in-the-wild faces' validation part (split by person; contempt dropped)

Any class whose recall falls under ``RECALL_FLOOR`` is flagged: a model that folds an
expression into "neutral" can still score a high accuracy on a neutral-heavy set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from motivnet_edge.labels import apply_class_weights, remap_scores
from motivnet_edge.preprocess import face_crop

from motivnet_edge.datasets.readers import FaceSet
from motivnet_edge.datasets.domains import standard_protocols  # noqa: F401  (re-exported: the FER-style protocols)

#: Recall under this is flagged by ``summary`` (and by ``motivnet-edge eval``).
RECALL_FLOOR = 0.30


@dataclass
class Metrics:
    """Scores of one model on one labelled set (labels in the set's order)."""

    n: int
    accuracy: float
    uar: float
    macro_f1: float
    per_class_recall: dict[str, float]
    confusion: list[list[int]]
    labels: list[str]
    agreement: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def compute_metrics(pred: np.ndarray, target: np.ndarray, labels, *, reference: np.ndarray | None = None) -> Metrics:
    """Metrics over rows with a target >= 0; ``reference`` (e.g. teacher predictions) adds agreement.

    A prediction of -1 is "no answer" (e.g. the detector found no face): it counts as wrong and
    in the class's support, but in no confusion cell."""
    keep = target >= 0
    p, t = pred[keep], target[keep]
    k = len(labels)
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (t[p >= 0], p[p >= 0]), 1)
    support, predicted, tp = np.bincount(t, minlength=k), conf.sum(0), np.diag(conf)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    agree = float((pred == reference).mean()) if reference is not None else None
    return Metrics(int(keep.sum()), float((p == t).mean()), float(recall[present].mean()),
                   float(f1[present].mean()), {lab: float(r) for lab, r, s in zip(labels, recall, present) if s},
                   conf.tolist(), list(labels), agree)


def package_probs(package: str | Path, faces: FaceSet, *, backend: str = "auto", precision: str = "auto",
                  threads: int = 0, batch: int = 256, mirror: bool = False) -> tuple[tuple[str, ...], np.ndarray]:
    """Runs a model package on dataset faces through the runtime (face = whole image)."""
    from motivnet_edge.recognizer import EmotionRecognizer

    with EmotionRecognizer.from_pretrained(package, backend=backend, precision=precision, detector="none",
                                           threads=threads, mirror=mirror) as rec:
        pp = rec.package.preprocessing
        crops = np.stack([face_crop(im, pp) for im in faces.images])
        probs = np.concatenate([rec.classify(crops[i:i + batch]) for i in range(0, len(crops), batch)])
        return rec.labels, probs


def evaluate_probs(model_labels, probs: np.ndarray, faces: FaceSet, *, reference=None,
                   unanswered: np.ndarray | None = None) -> Metrics:
    """Metrics of scores in the model's label order on ``faces``; ``unanswered`` marks rows the
    model gave no answer for (no face detected): wrong whatever their label."""
    s = remap_scores(probs, model_labels, faces.labels, on_missing="drop")
    # A row the model cannot express (all its mass on dropped classes) still counts as wrong.
    pred = s.argmax(1)
    if unanswered is not None:
        pred = np.where(unanswered, -1, pred)
    return compute_metrics(pred, faces.hard, faces.labels, reference=reference)


def plot_confusion(m: Metrics, path: str | Path, title: str) -> None:
    """Row-normalised confusion matrix as a PNG (matplotlib, headless)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(m.confusion, float)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(m.labels)), m.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(m.labels)), m.labels)
    for i in range(len(m.labels)):
        for j in range(len(m.labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {m.accuracy:.1%}, UAR {m.uar:.1%} (n={m.n})")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def low_recall(m: Metrics, floor: float = RECALL_FLOOR) -> dict[str, float]:
    """Classes of ``m`` whose recall is under ``floor``."""
    return {k: v for k, v in m.per_class_recall.items() if v < floor}


def summary(results: dict[str, Metrics], *, runs_on: str | None = None) -> str:
    """One line of scores per set, a line of per-class recall, and a flag for every class under the
    floor; then the cross-domain mean when every set of it was scored. ``runs_on``: the backend and
    precision that answered (``auto`` picks INT8 on some CPUs, which moves figures by tenths)."""
    from motivnet_edge.datasets.domains import CROSS_DOMAIN, SCOREBOARD

    validation = {s.key for s in SCOREBOARD if s.part == "val"}
    rows = [f"ran on {runs_on}"] if runs_on else []
    for name, m in results.items():
        rows.append(f"{name:18s} n={m.n:5d} acc={m.accuracy:.4f} uar={m.uar:.4f} f1={m.macro_f1:.4f}"
                    + (f" agree={m.agreement:.4f}" if m.agreement is not None else "")
                    + ("  (a validation part, not a test set)" if name in validation else ""))
        rows.append("  recall: " + ", ".join(f"{k} {v:.1%}" + (" (!)" if v < RECALL_FLOOR else "")
                                             for k, v in m.per_class_recall.items()))
        low = low_recall(m)
        if low:
            rows.append(f"  WARNING: recall under {RECALL_FLOOR:.0%} for {', '.join(low)}: the model folds these "
                        "into other classes on this set")
    if all(k in results for k in CROSS_DOMAIN):
        mean = float(np.mean([results[k].accuracy for k in CROSS_DOMAIN]))
        rows.append(f"cross-domain mean {mean:.4f} (accuracy over {', '.join(CROSS_DOMAIN)}; README's headline)")
    return "\n".join(rows)


def runs_on(model, *, backend: str = "auto", precision: str = "auto") -> str | None:
    """What answers for a package under these choices, e.g. "onnxruntime CPUExecutionProvider fp32";
    None for checkpoints and teachers (torch runs those)."""
    path = _package_path(model)
    if path is None:
        return None
    from motivnet_edge.backends import create_backend
    from motivnet_edge.package import load_package

    b = create_backend(load_package(path), backend=backend, precision=precision)
    try:
        return f"{b.describe()} {b.precision}"
    finally:
        b.close()


__all__ = ["Metrics", "RECALL_FLOOR", "low_recall", "compute_metrics", "standard_protocols", "package_probs", "evaluate_probs",
           "plot_confusion", "summary", "model_probs", "evaluate_model", "model_preprocessing"]


def _package_path(model: str | Path) -> Path | None:
    """The model package ``model`` names ("default": the embedded one); None for any other model file."""
    from motivnet_edge.package import resolve_model

    model = resolve_model(model)
    return model if (model / "manifest.json").is_file() or model.suffix == ".zip" else None


def _check_mirror(model, mirror: bool) -> None:
    from motivnet_edge.errors import MotivnetError

    if mirror and _package_path(model) is None:
        raise MotivnetError(f"{model}: mirror averaging is a runtime option, scored on model packages; export it "
                            f"first (motivnet-edge export {model} --out PKG) and evaluate PKG")


def model_probs(model: str | Path, faces: FaceSet, *, backend: str = "auto", precision: str = "auto",
                trust_code: bool = False, mirror: bool = False):
    """(labels, probs) of a package folder/zip, a student checkpoint/run, or a teacher file.

    ``trust_code`` admits TorchScript / torch.export teachers (their loading runs code from the file).
    ``mirror`` (packages only) scores as ``EmotionRecognizer(mirror=True)`` answers.
    """
    from motivnet_edge.errors import MotivnetError

    from .model_files import ModelFileError, model_kind

    package = _package_path(model)
    if package is not None:
        return package_probs(package, faces, backend=backend, precision=precision, mirror=mirror)
    _check_mirror(model, mirror)
    try:
        kind = model_kind(model)
    except ModelFileError as exc:
        raise MotivnetError(str(exc)) from None
    if kind == "student":
        import torch

        from .students.io import load_student
        from .train import predict_logits

        ck = load_student(model)
        return ck.labels, torch.softmax(predict_logits(ck.model, faces, ck.preprocessing), 1).numpy()
    from .teachers.load import load_teacher

    t = load_teacher(model, trust_code=trust_code)
    return t.labels, t.probs(faces.images)


def model_preprocessing(model: str | Path, *, trust_code: bool = False):
    """The preprocessing a model declares (package manifest, student checkpoint, or teacher file)."""
    from .model_files import model_kind

    kind = model_kind(model)
    if kind == "package":
        from motivnet_edge.package import load_package

        return load_package(model).preprocessing
    if kind == "student":
        from .students.io import load_student

        return load_student(model).preprocessing
    from .teachers.load import load_teacher

    return load_teacher(model, trust_code=trust_code).preprocessing


def _sets_of(data: Path, model, mapping, trust_code: bool) -> dict:
    """{name: (faces cut for the model, unanswered mask or None)}: every test set of shared/, each cut
    as its users measure it (KDEF through YuNet), or one dataset's faces as stored."""
    from motivnet_edge.datasets.readers import read_dataset

    if not (data / "data").is_dir():
        return {data.name: (read_dataset(data, mapping=mapping), None)}
    from motivnet_edge.detectors import YuNetDetector

    from motivnet_edge.datasets.domains import crops_for, shared_yunet, test_sets

    yunet = shared_yunet(data)
    if not yunet.is_file():
        return {name: (faces, None) for name, faces in standard_protocols(data).items()}
    pp = model_preprocessing(model, trust_code=trust_code)
    return {name: (crops_for(ts, pp), np.array([d is None for d in ts.detections]) if ts.detections else None)
            for name, ts in test_sets(data, YuNetDetector(yunet)).items()}


def evaluate_model(model, data, *, teacher=None, backend: str = "auto", precision: str = "auto",
                   mapping: dict | None = None, trust_code: bool = False, class_weights: dict | None = None,
                   mirror: bool = False, progress: bool = False) -> dict[str, Metrics]:
    """Metrics of ``model`` on a dataset, or on every test set when ``data`` is shared/ (FER2013Test
    with FER+ and FER2013 labels, CK+48, facial_expressions val, AffectNet96 ``test_``, SFEW ``val_``,
    KDEF people 01-07 through YuNet as ``predict`` sees them: a photo without a face scores wrong).

    ``mapping`` renames or (None) drops dataset classes explicitly, e.g. {"contempt": None};
    ``class_weights`` and ``mirror`` score the model as ``EmotionRecognizer(class_weights=...,
    mirror=...)`` would answer.
    """
    from motivnet_edge.errors import MotivnetError

    _check_mirror(model, mirror)  # before reading any data
    data = Path(data)
    sets = _sets_of(data, model, mapping, trust_code)
    if not sets:
        raise MotivnetError(f"{data} holds none of the standard protocols' data")
    import sys

    from tqdm import tqdm

    out = {}
    for name, (faces, missed) in tqdm(sets.items(), desc="eval", unit="set", file=sys.stderr, leave=False,
                                      disable=not progress):
        labels, probs = model_probs(model, faces, backend=backend, precision=precision, trust_code=trust_code,
                                    mirror=mirror)
        probs = apply_class_weights(probs, labels, class_weights)
        ref = None
        if teacher is not None:
            tl, tp = model_probs(teacher, faces, trust_code=trust_code)
            ref = remap_scores(tp, tl, faces.labels, on_missing="drop").argmax(1)
        out[name] = evaluate_probs(labels, probs, faces, reference=ref, unanswered=missed)
    return out
