"""What each training row learns from: the teacher's targets, cached per view or computed online.

One teacher (several files: their ensemble), optionally mirrored, reads every row; a domain
teacher replaces it on one domain's rows of a ``--domains`` mix, with its own cache over those
rows. The run records every teacher's name (a resume compares it) and their licence terms.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from motivnet_edge.errors import MotivnetError
from motivnet_edge.package import licence_terms

from .teachers.cache import build_cache, load_cached, teacher_logprobs
from .teachers.load import EnsembleTeacher, MirroredTeacher, load_teacher


#: ``--domain-teacher DOMAIN=none``: that domain's rows learn from their labels alone (no KD
#: term): for noisy-labelled domains the teacher reads poorly (ExpW: the pico default 35-37 %),
#: where its soft targets would cap what the labels can teach.
NO_TEACHER = "none"


def _target_teacher(files, labels, trust_code: bool, mirror: bool):
    """One teacher (several files: their ensemble), mirrored when asked."""
    members = [load_teacher(t, trust_code=trust_code) for t in files]
    teacher = members[0] if len(members) == 1 else EnsembleTeacher(members, labels=labels)
    return MirroredTeacher(teacher) if mirror else teacher


def teacher_targets(teachers, train_set, labels, cache_dir, views: int, seed: int, trust_code: bool,
                     progress: bool, extra: dict, mirror: bool = False, online: bool = False,
                     routed: Mapping[str, tuple] | None = None):
    """The teachers' (ensemble's) targets: (cached outputs for every view, None), or with ``online``
    (None, a function of face images run per batch). Records the teacher in ``extra``.

    ``routed`` maps a domain to (its rows' slice, its teacher files): those rows learn from that
    teacher instead (its own cache over the slice, the same views the student reads)."""
    teacher = _target_teacher(teachers, labels, trust_code, mirror)
    silent = {d: rows for d, (rows, files) in (routed or {}).items() if list(files) == [NO_TEACHER]}
    for d, (_, files) in (routed or {}).items():
        if NO_TEACHER in files and d not in silent:
            raise MotivnetError(f"--domain-teacher {d}={NO_TEACHER} trains {d} on its labels alone: do not also give "
                                f"{d} a teacher file")
    others = {d: (rows, _target_teacher(files, labels, trust_code, mirror))
              for d, (rows, files) in (routed or {}).items() if d not in silent}
    name = teacher.name + "".join(f"; {d}: {t.name}" for d, (_, t) in others.items()) \
        + "".join(f"; {d}: none (labels only)" for d in silent)
    extra["provenance"]["teacher"] = name
    if others or silent:
        extra["provenance"]["domain_teachers"] = {**{d: t.name for d, (_, t) in others.items()},
                                                  **{d: NO_TEACHER for d in silent}}
    terms = licence_terms([teacher.license, *(t.license for _, t in others.values())])
    extra.setdefault("license", {}).update(teacher=terms,
                                           note="students distilled from a teacher may carry its licence terms")
    if online:
        return None, lambda images: teacher_logprobs(teacher, images, labels)
    cache = build_cache(teacher, train_set, cache_dir, labels=labels, views=views, seed=seed, progress=progress)
    logits = load_cached(cache, len(train_set), views)
    for rows, t in others.values():
        part = train_set.subset(np.arange(rows.start, rows.stop))
        sub = build_cache(t, part, cache_dir, labels=labels, views=views, seed=seed, progress=progress,
                          index_offset=rows.start)
        logits[rows] = load_cached(sub, len(part), views)
    for rows in silent.values():
        logits[rows] = np.nan  # no target: distill_loss leaves these rows out of the KD term
    return logits, None


def check_domain_teachers(domain_teachers, teachers, domains, online: bool) -> None:
    """Per-domain teachers route the rows of a --domains mix; they replace the main teacher's targets there."""
    from motivnet_edge.datasets.domains import DOMAINS

    if domains is None:
        raise MotivnetError("a domain teacher routes one domain's rows of --domains training: add --domains SHARED "
                            "(or --pack FILE)")
    if not teachers:
        raise MotivnetError("a domain teacher replaces the main teacher on its domain's rows: add --teacher FILE "
                            "for the other domains")
    if online:
        raise MotivnetError("domain teachers are cached per domain: drop --online-teacher")
    unknown = [d for d in domain_teachers if d not in DOMAINS]
    if unknown:
        raise MotivnetError(f"unknown domain {unknown[0]!r} for a domain teacher; domains: {', '.join(DOMAINS)}")


__all__ = ["check_domain_teachers", "licence_terms", "teacher_targets"]
