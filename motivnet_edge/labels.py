"""Label sets as names, in each source's own order, and explicit remapping between them.

A model's output order is a property of the model (its manifest says it); a dataset's
order is a property of the dataset. Nothing here assumes two orders agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import LabelError, OptionError

#: MotivNet / AffectNet order without contempt (see the teacher's docs).
MOTIVNET_LABELS: tuple[str, ...] = (
    "neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
#: FER2013's original integer order (0 = angry ... 6 = neutral), in canonical names.
FER2013_LABELS: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
#: FER+ vote columns; the last two are not emotions.
FERPLUS_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
    "contempt", "unknown", "not_a_face")

# Spellings that datasets use for the same emotion.
_SYNONYMS = {
    "angry": "anger", "happy": "happiness", "sad": "sadness", "surprised": "surprise",
    "disgusted": "disgust", "fearful": "fear", "scared": "fear", "calm": "neutral",
}


def canonical(name: str) -> str:
    """Returns the canonical spelling of an emotion name ("happy" -> "happiness")."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _SYNONYMS.get(key, key)


def remap_indices(source: Sequence[str], target: Sequence[str], *,
                  mapping: Mapping[str, str | None] | None = None,
                  on_missing: str = "error") -> np.ndarray:
    """Maps each source label to its index in ``target``.

    Args:
        source: label names in the source's order.
        target: label names in the target's order.
        mapping: explicit source -> target renames; a value of None drops that class.
        on_missing: "error" (default) or "drop" for source labels absent from target.

    Returns:
        int64 array, one entry per source label: target index, or -1 when dropped.

    Raises:
        LabelError: a source label has no target and neither mapping nor on_missing="drop"
            says what to do with it.
    """
    if on_missing not in ("error", "drop"):
        raise LabelError(f"on_missing must be 'error' or 'drop', not {on_missing!r}")
    mapping = {canonical(k): (None if v is None else canonical(v)) for k, v in (mapping or {}).items()}
    index = {canonical(t): i for i, t in enumerate(target)}
    out, missing = [], []
    for name in source:
        key = canonical(name)
        if key in mapping:
            dest = mapping[key]
            if dest is None:
                out.append(-1)
                continue
            key = dest
        if key in index:
            out.append(index[key])
        elif on_missing == "drop":
            out.append(-1)
        else:
            missing.append(name)
            out.append(-1)
    if missing:
        raise LabelError(
            f"labels {missing} have no counterpart in {list(target)}; pass a mapping "
            f"(e.g. {{'{missing[0]}': None}} to drop it) or on_missing='drop'", missing=tuple(missing))
    return np.asarray(out, dtype=np.int64)


def remap_scores(scores: np.ndarray, source: Sequence[str], target: Sequence[str], *,
                 on_missing: str = "raise") -> np.ndarray:
    """Moves the last axis of ``scores`` from ``source`` to ``target`` label order, by name.

    With ``on_missing="drop"`` the sets may differ: source classes the target lacks are
    dropped and target classes no source names get 0 (e.g. a FER2013 model's scores on
    a FER+ dataset's labels).

    Raises:
        LabelError: with "raise", the two label sets differ.
    """
    if on_missing == "raise" and sorted(map(canonical, source)) != sorted(map(canonical, target)):
        raise LabelError(f"cannot reorder scores: {list(source)} and {list(target)} "
                         "are different label sets; pass on_missing='drop' to drop and zero-fill classes")
    scores = np.asarray(scores)
    out = np.zeros((*scores.shape[:-1], len(target)), scores.dtype)
    for src, dst in enumerate(remap_indices(source, target, on_missing="drop")):
        if dst >= 0:
            out[..., dst] += scores[..., src]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed in float64 so large logits cannot overflow."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def class_log_weights(labels: Sequence[str], weights: Mapping[str, float] | None) -> np.ndarray:
    """Log of per-class weights in ``labels`` order, from ``{label name: weight}`` (others 1).

    Adding them to the logits multiplies each class's probability by its weight before the
    scores are normalised again: a prior shift. ``{"neutral": 0.5}`` makes a model half as
    ready to call a face neutral, for cameras pointed at posed or subtle expressions that a
    model trained on web faces reads as neutral.

    Raises:
        OptionError: a name the model does not have, or a weight that is not a finite number > 0.
    """
    out = np.zeros(len(labels), np.float64)
    if not weights:
        return out
    if not isinstance(weights, Mapping):
        raise OptionError(f"class_weights must map label names to weights, e.g. {{'neutral': 0.5}}, "
                          f"not {type(weights).__name__}")
    index = {canonical(name): i for i, name in enumerate(labels)}
    for name, weight in weights.items():
        i = index.get(canonical(str(name)))
        if i is None:
            raise OptionError(f"class weight for {name!r}: the model has no such class; its classes are {list(labels)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
            raise OptionError(f"class weight {name}={weight!r} must be a number > 0 (1 = unchanged, "
                              "0.5 = half as likely)")
        out[i] = np.log(weight)
    return out


def apply_class_weights(probs: np.ndarray, labels: Sequence[str], weights: Mapping[str, float] | None) -> np.ndarray:
    """Scores as ``EmotionRecognizer(class_weights=weights)`` gives them, from unweighted scores.

    Raises:
        OptionError: as ``class_log_weights``.
    """
    log_w = class_log_weights(labels, weights)
    if not log_w.any():
        return np.asarray(probs, np.float32)
    return softmax(np.log(np.clip(np.asarray(probs, np.float64), 1e-30, 1.0)) + log_w)
