"""``distill()``: teacher(s) + data -> cached teacher outputs -> trained student run folder.

The Python API behind ``motivnet-edge distill``; also runs unchanged under torchrun.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from motivnet_edge.errors import MotivnetError
from motivnet_edge.labels import MOTIVNET_LABELS
from motivnet_edge.preprocess import Preprocessing

from .data import concat, read_dataset, split_by_person
from .student import PRESETS
from .targets import check_domain_teachers, teacher_targets
from .train import TrainConfig, train

log = logging.getLogger(__name__)

#: A cached teacher runs once per view of every image before training starts.
MAX_CACHED_VIEWS = 64

#: The students' input: 48x48 gray, the resolution of FER-style face crops.
STUDENT_PREPROCESSING = Preprocessing(input_size=(48, 48), color="gray", mean=(127.5,), std=(64.0,))


def student_preprocessing(student: str, preprocessing: Preprocessing = STUDENT_PREPROCESSING) -> Preprocessing:
    """The preprocessing a preset trains with: its own input size where it declares one
    (DeiT's vit_tiny/vit_small: 224x224, the size their timm weights were trained at),
    else ``preprocessing``'s. The train loop reads the student's size from this, so the two
    cannot disagree."""
    size = PRESETS[student].get("img_size")
    if size is None or tuple(size) == tuple(preprocessing.input_size):
        return preprocessing
    log.info("%s is a %dx%d model: faces are preprocessed at that size", student, *size)
    return replace(preprocessing, input_size=tuple(size))


def _init_provenance(init: str | Path) -> dict:
    """What a student started from: the file, and the teacher behind it when it is a run's best.pt."""
    import torch

    try:
        ck = torch.load(init, map_location="cpu", weights_only=True)  # a run's best.pt, or a timm/DeiT file
    except Exception as exc:  # missing, unreadable, truncated, pickled code
        raise MotivnetError(f"--init {init} cannot be read as weights ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}); pass a run's best.pt "
                            "or a timm/DeiT checkpoint") from None
    prov = ck.get("provenance", {}) if isinstance(ck, dict) else {}
    return {"path": str(init), "teacher": prov.get("teacher"), "label_source": prov.get("label_source"),
            "init": prov.get("init")}


def _domain_data(shared: Path, preprocessing: Preprocessing, labels, yunet: str | Path | None, cache: Path,
                 recipe) -> tuple:
    """The multi-domain train mix, its sample weights and the per-domain selection sets."""
    from motivnet_edge.detectors import YuNetDetector

    from .domains import shared_yunet
    from .mixture import MixRecipe, training_mix, validation_sets

    yunet = Path(yunet) if yunet else shared_yunet(shared)
    detector = YuNetDetector(yunet)  # the runtime's own detector: training crops are a device's crops
    recipe = recipe or MixRecipe()
    train_set, weights, report = training_mix(shared, preprocessing, detector, recipe=recipe, labels=labels,
                                              cache_dir=cache)
    val_sets = validation_sets(shared, preprocessing, detector, labels=labels, cache_dir=cache)
    return train_set, weights, val_sets, {"mix": recipe.to_dict(), "sources": report,
                                          "selection": {k: len(v) for k, v in val_sets.items()}}


def _pack_data(pack: Path, preprocessing: Preprocessing, labels, recipe) -> tuple:
    """The train mix, its sample weights and the selection sets of a training pack (``pack.py``)."""
    from .mixture import MixRecipe, domain_slices, mix_weights
    from .pack import PackError, read_pack

    train_set, val_sets, manifest = read_pack(pack)
    if tuple(labels) != train_set.labels:
        raise PackError(f"{pack} holds labels {', '.join(train_set.labels)}, not {', '.join(labels)}: write a pack "
                        "for this label order")
    ours = {k: v for k, v in json.loads(json.dumps(preprocessing.to_dict())).items() if k != "input_size"}
    theirs = {k: v for k, v in manifest["preprocessing"].items() if k != "input_size"}
    if ours != theirs:
        raise PackError(f"{pack} was cut with other preprocessing ({theirs}) than this student's ({ours}): write the "
                        "pack again for it")
    recipe = recipe or MixRecipe()
    slices = domain_slices(manifest["sources"])
    tags = np.empty(len(train_set), dtype=object)
    for name, rows in slices.items():
        tags[rows] = name
    unknown = sorted(set(recipe.domains) - set(slices))
    if unknown and len(unknown) == len(recipe.domains):
        raise PackError(f"{pack} holds none of the domains asked for ({', '.join(unknown)})")
    report = {"mix": recipe.to_dict(), "sources": manifest["sources"], "selection": manifest["selection"],
              "pack": {"path": str(pack), "encoding": manifest["encoding"], "created": manifest["created"]}}
    return train_set, mix_weights(train_set, tags, recipe), val_sets, report


def _one_set_data(data: Path, val, extra_data, labels, mapping, label_source: str) -> tuple:
    """(train set, selection set, selection path) for --data training: the set, the train parts of
    --extra-data (split by person), and --val (FER2013Valid beside a FER2013Train by default)."""
    if val is None and data.name == "FER2013Train" and (data.parent / "FER2013Valid").is_dir():
        val = data.parent / "FER2013Valid"
    if val is None:
        raise MotivnetError("pass --val: a labelled set to select the best epoch on (never the test set)")
    train_set = read_dataset(data, labels=labels, mapping=mapping, label_source=label_source)
    extras = [split_by_person(read_dataset(p, labels=labels, mapping=mapping), part="train") for p in extra_data]
    for p, s in zip(extra_data, extras):
        log.info("extra training faces: %d from the train part of %s", len(s), p)
    return (concat([train_set, *extras]), read_dataset(val, labels=labels, mapping=mapping, label_source=label_source),
            val)


def distill(*, data: str | Path | None = None, out: str | Path, domains: str | Path | None = None,
            pack: str | Path | None = None,
            mix=None, yunet: str | Path | None = None, val: str | Path | None = None,
            teachers: list[str | Path] = (), student: str = "vit_hybrid_pico", epochs: int = 10,
            kd_weight: float | None = None, label_weight: float = 1.0, temperature: float = 2.0,
            views: int = 8, cache_dir: str | Path | None = None, resume: bool = False,
            preprocessing: Preprocessing = STUDENT_PREPROCESSING, labels=MOTIVNET_LABELS,
            init: str | Path | None = None, label_source: str = "ferplus", progress: bool = True,
            extra_data: Sequence[str | Path] = (), mapping: Mapping[str, str | None] | None = None,
            trust_code: bool = False, mirror_teacher: bool = False, online_teacher: bool = False,
            mixup: float = 0.0, domain_teachers: Mapping[str, Sequence[str | Path]] | None = None,
            command: str | None = None, stop_after: int | None = None, **overrides) -> dict:
    """Distils ``teachers`` (none: labels only) into a ``student`` preset on ``data``.

    Args:
        data: training set (FER+ split folder, FER2013 CSV, class folders, unlabelled folder).
        domains: instead of ``data``, the shared/ folder: train on every domain's train part
            (whole crops and YuNet-aligned crops, drawn by a domain- and class-balancing sampler,
            see ``mixture.MixRecipe``) and select on the mean of the domains' validation parts.
        pack: instead of ``data`` or ``domains``, a training pack (``motivnet-edge pack``): the same
            mix and selection sets, read from one file (a GPU host without shared/).
        mix: the ``MixRecipe`` for ``domains`` or ``pack`` (default: ``MixRecipe()``).
        yunet: the YuNet model that aligns ``domains`` faces (default: shared/models/yunet).
        out: run folder (config, best.pt, last.pt, log.jsonl).
        val: selection set (default: a FER+ "FER2013Valid" beside a "FER2013Train").
        teachers: teacher files; several are averaged as an ensemble.
        kd_weight: weight of the distillation term (default 1 with a teacher, else 0).
        views: seeded augmented views per image, each cached once per teacher.
        cache_dir: where teacher outputs are cached (share it between runs to reuse them).
        init: a timm/DeiT checkpoint (or a run's best.pt) to initialise the student from.
        label_source: which labels of a FER+ split train and select: "ferplus" votes or "fer2013".
        extra_data: more labelled sets (class folders, FER+ splits); only the "train" part of each
            set's by-person split is used, so the part ``eval`` validates on stays unseen.
        mapping: explicit renames/drops (None) of dataset classes, e.g. {"contempt": None}; applies to
            ``data``, ``val`` and every ``extra_data`` set alike.
        trust_code: admit TorchScript / torch.export teachers (loading them runs code from the file).
        mirror_teacher: the teacher's target for a view is the mean of its readings of the view and
            of its mirror image (``MirroredTeacher``): symmetric targets, a second cache.
        online_teacher: the teacher reads every training batch as the student sees it instead of a
            cache of ``views`` views per image: any number of views costs nothing up front, and
            ``mixup`` becomes possible (the teacher pass is paid every epoch).
        mixup: Beta(mixup, mixup) weights for mixing pairs of training faces and their labels
            (``views.mix_faces``); 0 is off. With a teacher it needs ``online_teacher``.
        domain_teachers: with ``domains``, a domain's train rows learn from these teacher files
            (an ensemble when several) instead of ``teachers``, e.g. {"ferplus": [a FER+ specialist]}:
            each domain keeps the teacher that reads it best. Cached only (not with ``online_teacher``).
        command: the command line that started this, recorded in the run folder's commands.txt.

    Raises:
        MotivnetError: bad data, teacher or option (messages name the fix).
    """
    if student not in PRESETS:
        raise MotivnetError(f"unknown student {student!r}; presets: {', '.join(sorted(PRESETS))}")
    if mirror_teacher and not teachers:
        raise MotivnetError("--mirror-teacher averages a teacher's readings of a face and its mirror: add --teacher FILE")
    if online_teacher and not teachers:
        raise MotivnetError("--online-teacher runs a teacher on every training batch: add --teacher FILE")
    if teachers and not online_teacher and views > MAX_CACHED_VIEWS:
        raise MotivnetError(f"--views {views} would cache the teacher's outputs for {views} views of every image: "
                            f"use at most {MAX_CACHED_VIEWS}, or add --online-teacher (no cache)")
    if mixup and teachers and not online_teacher:
        raise MotivnetError("--mixup makes new faces that cached teacher outputs never saw: add --online-teacher so "
                            "the teacher reads the mixed faces")
    if sum(x is not None for x in (data, domains, pack)) != 1:
        raise MotivnetError("pass one of --data (one training set), --domains SHARED (every domain of shared/) or "
                            "--pack FILE (those domains, packed by motivnet-edge pack)")
    if domain_teachers:
        check_domain_teachers(domain_teachers, teachers, domains or pack, online_teacher)
    preprocessing = student_preprocessing(student, preprocessing)
    weights, mix_report = None, None
    if domains is not None or pack is not None:
        if val is not None or extra_data:
            raise MotivnetError("--domains and --pack select on the domains' validation parts and train on their "
                                "train parts: drop --val and --extra-data")
        if pack is not None:
            train_set, weights, val_set, mix_report = _pack_data(Path(pack), preprocessing, labels, mix)
        else:
            train_set, weights, val_set, mix_report = _domain_data(
                Path(domains), preprocessing, labels, yunet, Path(cache_dir or Path(out) / "cache"), mix)
        data, val = Path(domains or pack), "validation parts of " + ", ".join(val_set)
        overrides.setdefault("samples_per_epoch", mix_report["mix"]["samples_per_epoch"])
    else:
        data = Path(data)
        train_set, val_set, val = _one_set_data(data, val, extra_data, labels, mapping, label_source)
    has_labels = (train_set.soft.sum(1) > 0).any()
    if not teachers and not has_labels:
        raise MotivnetError(f"{data} has no labels and no --teacher was given: nothing to learn from")
    kd = (1.0 if teachers else 0.0) if kd_weight is None else kd_weight
    cfg = TrainConfig(student={k: v for k, v in PRESETS[student].items() if k != "img_size"}, epochs=epochs,
                      kd_weight=kd, label_weight=label_weight if has_labels else 0.0,
                      temperature=temperature, views=views, online_teacher=online_teacher, mixup=mixup)
    cfg = replace(cfg, **overrides)
    logits, extra = None, {"provenance": {"student_preset": student, "training_data": str(data),
                                          "extra_training_data": [f"{p} (train part, split by person)"
                                                                  for p in extra_data],
                                          "selection_data": str(val),
                                          "label_source": label_source}}
    if mix_report is not None:
        extra["provenance"]["domains"] = mix_report
    if command:
        extra["command"] = command
    if init is not None:
        extra["provenance"]["init"] = _init_provenance(init)
    online = None
    if teachers:
        routed = {}
        if domain_teachers:
            from .mixture import domain_slices

            slices = domain_slices(mix_report["sources"])
            missing = sorted(set(domain_teachers) - set(slices))
            if missing:
                raise MotivnetError(f"a domain teacher is given for {', '.join(missing)}, which this run does not train "
                                    "on (--without?): drop its --domain-teacher")
            routed = {d: (slices[d], list(files)) for d, files in domain_teachers.items()}
        logits, online = teacher_targets(teachers, train_set, labels, cache_dir or Path(out) / "cache", views,
                                          cfg.seed, trust_code, progress, extra, mirror=mirror_teacher,
                                          online=online_teacher, routed=routed)
    return train(out, train_set, val_set, preprocessing, cfg, teacher_logits=logits, resume=resume,
                 progress=progress, extra=extra, init=init, sample_weights=weights, online_teacher=online,
                 stop_after=stop_after)
