"""Prior correction: per-class logit offsets, learnt on validation faces, folded into the head.

FER+ training faces are a third neutral and a quarter happiness, and disgust, fear and contempt
are rare; a student trained on them learns that prior with the expressions and folds the rare
ones into their frequent neighbours (disgust into anger, fear into surprise or sadness). A
single logit-adjustment temperature (Menon et al., 2021) fixes that only by moving every
class, which on FER2013Valid cost about five points of accuracy for the rare classes' sake.
So the offset here is per class and minimal: starting from zero, the class with the lowest
validation recall below ``floor`` is raised in small steps until every class with enough
validation faces reaches the floor. Frequent classes keep their offset of 0 unless a raise
pushes them under the floor. The offsets are added to the classifier's bias, so every
exported format carries them and inference costs nothing extra.
"""

from __future__ import annotations

import numpy as np
import torch

from motivnet_edge.errors import MotivnetError

from motivnet_edge.datasets.readers import FaceSet

#: Validation recall every class should reach (above the 30 % the issue sets for test sets,
#: to leave room for the validation/test gap).
FLOOR = 0.40
STEP = 0.05
#: Classes with fewer validation faces are not targeted: their recall is too noisy to fit to.
MIN_SUPPORT = 10


def _scores(pred: np.ndarray, hard: np.ndarray, k: int) -> dict:
    keep = hard >= 0
    p, t = pred[keep], hard[keep]
    recall = {c: float((p[t == c] == c).mean()) for c in range(k) if (t == c).any()}
    return {"accuracy": round(float((p == t).mean()), 4), "uar": round(float(np.mean(list(recall.values()))), 4),
            "min_recall": round(min(recall.values()), 4), "per_class_recall": recall}


def fit_prior_correction(logits: np.ndarray, faces: FaceSet, *, floor: float = FLOOR, step: float = STEP,
                         max_steps: int = 1000) -> dict:
    """Per-class offsets that lift every class's recall on ``faces`` (validation) to ``floor``.

    Raises:
        MotivnetError: the faces carry no labels.
    """
    keep = faces.hard >= 0
    if not keep.any():
        raise MotivnetError("prior correction needs labelled validation faces (--val)")
    k = len(faces.labels)
    support = np.bincount(faces.hard[keep], minlength=k)
    bias = np.zeros(k)
    for _ in range(max_steps):
        rec = _scores((logits + bias).argmax(1), faces.hard, k)["per_class_recall"]
        low = [c for c, r in rec.items() if r < floor and support[c] >= MIN_SUPPORT]
        if not low:
            break
        bias[min(low, key=rec.get)] += step
    name = list(faces.labels)
    before, after = (_scores((logits + b).argmax(1), faces.hard, k) for b in (np.zeros(k), bias))
    for s in (before, after):
        s["per_class_recall"] = {name[c]: round(v, 4) for c, v in s["per_class_recall"].items()}
    return {"method": f"per-class logit offsets: the lowest validation recall under {floor:.0%} is raised in "
                      f"steps of {step} until every class with >= {MIN_SUPPORT} faces reaches it",
            "labels": name, "floor": floor, "bias": [round(float(b), 4) for b in bias],
            "validation": {"n": int(keep.sum()), "support": {name[c]: int(s) for c, s in enumerate(support)},
                           "uncorrected": before, "corrected": after}}


def apply_bias(model: torch.nn.Module, bias) -> None:
    """Adds ``bias`` to the classifier head's bias in place (the head must be a Linear named
    ``head``), or to an ensemble's ``logit_bias`` (students.ensemble), which has no head of its own.

    Raises:
        MotivnetError: the model has no such head, or the sizes differ.
    """
    offset = getattr(model, "logit_bias", None)
    if isinstance(offset, torch.Tensor) and offset.numel() == len(bias):
        with torch.no_grad():
            offset.add_(torch.as_tensor(bias, dtype=offset.dtype))
        return
    head = getattr(model, "head", None)
    if not isinstance(head, torch.nn.Linear) or head.bias is None or head.bias.numel() != len(bias):
        raise MotivnetError("prior correction needs a student whose classifier is a Linear 'head' with one "
                            f"bias per class ({len(bias)}); teachers and other models are exported as they are")
    with torch.no_grad():
        head.bias.add_(torch.as_tensor(bias, dtype=head.bias.dtype))


def _domain_score(bias: np.ndarray, sets: dict, floor: float, min_support: int) -> tuple[float, float, dict]:
    """(objective, lowest recall, accuracy per domain) of logit offsets ``bias`` on labelled sets."""
    accs, lowest = {}, 1.0
    for name, (logits, hard) in sets.items():
        keep = hard >= 0
        pred, t = (logits[keep] + bias).argmax(1), hard[keep]
        accs[name] = float((pred == t).mean())
        for c in np.unique(t):
            if (t == c).sum() >= min_support:
                lowest = min(lowest, float((pred[t == c] == c).mean()))
    mean = float(np.mean(list(accs.values())))
    return mean - 10.0 * max(0.0, floor - lowest), lowest, accs


def fit_domain_prior(sets: dict, labels, *, floor: float = FLOOR, step: float = STEP, min_support: int = 40,
                     max_steps: int = 400, start=None) -> dict:
    """Per-class logit offsets that maximise the mean over domains of validation accuracy, with
    every class of at least ``min_support`` faces in a domain kept at ``floor`` recall there.

    One set of offsets serves every domain (the model cannot know where a face comes from), so
    it is the prior that does best on average, not FER+'s or AffectNet's. Greedy: from zero (or
    ``start``), the single +/-``step`` move that raises the objective most is taken until none does.

    Args:
        sets: domain name -> (logits (N, K) in ``labels`` order, hard labels (N,), -1 = none).
        start: offsets to begin from (K values); accuracy is a step function of the offsets, so
            the greedy walk can stop at a local optimum that another start passes.

    Raises:
        MotivnetError: no set holds a labelled face.
    """
    if not any((hard >= 0).any() for _, hard in sets.values()):
        raise MotivnetError("the domain prior needs labelled validation faces")
    k = len(labels)
    bias = np.zeros(k) if start is None else np.asarray(start, dtype=float).copy()
    if bias.shape != (k,):
        raise MotivnetError(f"start holds {bias.size} offsets for {k} labels")
    best, _, _ = _domain_score(bias, sets, floor, min_support)
    for _ in range(max_steps):
        moves = []
        for c in range(k):
            for d in (step, -step):
                trial = bias.copy()
                trial[c] += d
                moves.append((_domain_score(trial, sets, floor, min_support)[0], c, d))
        score, c, d = max(moves)
        if score <= best + 1e-9:
            break
        bias[c] += d
        best = score
    before, after = (_domain_score(b, sets, floor, min_support) for b in (np.zeros(k), bias))
    return {"method": ("" if start is None else "from given offsets, ") + "per-class logit offsets maximising the "
                      f"mean over domains of validation accuracy, every class with >= {min_support} faces in a "
                      f"domain held at {floor:.0%} recall (greedy steps of {step})",
            "labels": list(labels), "floor": floor, "bias": [round(float(b), 4) for b in bias],
            "validation": {"domains": {n: int((h >= 0).sum()) for n, (_, h) in sets.items()},
                           "uncorrected": {"mean_accuracy": round(float(np.mean(list(before[2].values()))), 4),
                                           "min_recall": round(before[1], 4), "accuracy": before[2]},
                           "corrected": {"mean_accuracy": round(float(np.mean(list(after[2].values()))), 4),
                                         "min_recall": round(after[1], 4), "accuracy": after[2]}}}
