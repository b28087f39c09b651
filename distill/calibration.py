"""Prior correction: a per-class logit offset, learnt on validation faces, folded into the head.

FER+ training faces are a third neutral and a quarter happiness; a student trained on them
learns that prior along with the expressions and answers "neutral" whenever a face is
ambiguous, which hides sadness, anger or fear on sets with another mix of classes (posed
photos, CK+). Logit adjustment (Menon et al., 2021) subtracts tau * log(prior) from the
logits; tau is chosen on validation data only, to maximise accuracy + UAR there, so the
correction never pays for balance with more accuracy than it wins in recall. The offset is
added to the classifier's bias, so every exported format carries it and inference costs
nothing extra.
"""

from __future__ import annotations

import numpy as np
import torch

from motivnet_edge.errors import MotivnetError

from .data import FaceSet

TAUS = tuple(round(t, 2) for t in np.arange(0.0, 1.51, 0.05))


def _scores(pred: np.ndarray, hard: np.ndarray, k: int) -> tuple[float, float]:
    keep = hard >= 0
    p, t = pred[keep], hard[keep]
    recalls = [float((p[t == c] == c).mean()) for c in range(k) if (t == c).any()]
    return float((p == t).mean()), float(np.mean(recalls))


def fit_prior_correction(logits: np.ndarray, faces: FaceSet, *, taus=TAUS) -> dict:
    """The offset -tau * log(prior) that maximises accuracy + UAR on ``faces`` (validation).

    The prior is the mean of the faces' soft labels (for FER+, the vote distribution).

    Raises:
        MotivnetError: the faces carry no labels.
    """
    keep = faces.hard >= 0
    if not keep.any():
        raise MotivnetError("prior correction needs labelled validation faces (--val)")
    prior = faces.soft[keep].mean(0)
    prior = np.clip(prior / prior.sum(), 1e-4, None)
    k = len(faces.labels)
    rows = []
    for tau in taus:
        acc, uar = _scores((logits - tau * np.log(prior)).argmax(1), faces.hard, k)
        rows.append({"tau": float(tau), "accuracy": round(acc, 4), "uar": round(uar, 4)})
    best = max(rows, key=lambda r: (r["accuracy"] + r["uar"], -r["tau"]))
    return {"method": "logit adjustment: logits - tau * log(prior), tau = argmax(accuracy + UAR) on validation",
            "labels": list(faces.labels), "prior": [round(float(p), 5) for p in prior], "tau": best["tau"],
            "bias": [round(float(-best["tau"] * np.log(p)), 5) for p in prior],
            "validation": {"n": int(keep.sum()), "uncorrected": rows[0], "corrected": best, "curve": rows}}


def apply_bias(model: torch.nn.Module, bias) -> None:
    """Adds ``bias`` to the classifier head's bias in place (the head must be a Linear named ``head``).

    Raises:
        MotivnetError: the model has no such head, or the sizes differ.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, torch.nn.Linear) or head.bias is None or head.bias.numel() != len(bias):
        raise MotivnetError("prior correction needs a student whose classifier is a Linear 'head' with one "
                            f"bias per class ({len(bias)}); teachers and other models are exported as they are")
    with torch.no_grad():
        head.bias.add_(torch.as_tensor(bias, dtype=head.bias.dtype))
