"""``distill(DistillOptions)``: teacher(s) + data -> cached teacher outputs -> trained student run folder.

The Python API behind ``motivnet-edge distill``; also runs unchanged under torchrun.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from motivnet_edge.errors import MotivnetError
from motivnet_edge.package import licence_terms
from motivnet_edge.preprocess import Preprocessing

from motivnet_edge.datasets.domains import domain_of, faces_licence
from motivnet_edge.datasets.readers import concat, read_dataset, split_by_person
from .distill_options import DistillOptions, STUDENT_PREPROCESSING
from .students.model import PRESETS
from .targets import teacher_targets
from .train import TrainConfig, train

log = logging.getLogger(__name__)



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
            "init": prov.get("init"), "license": ck.get("license") if isinstance(ck, dict) else None}


def _domain_data(shared: Path, preprocessing: Preprocessing, labels, yunet: str | Path | None, cache: Path,
                 recipe) -> tuple:
    """The multi-domain train mix, its sample weights and the per-domain selection sets."""
    from motivnet_edge.detectors import YuNetDetector

    from motivnet_edge.datasets.domains import shared_yunet
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


def _trained_domains(mix_report: dict | None, data: Path, extra_data) -> list[str]:
    """The domains whose faces this run draws (a share of 0 draws none), or --data's and --extra-data's
    folders (by domain where one is known, else by path: terms the user must check)."""
    if mix_report is not None:
        from .mixture import trained_domains

        return trained_domains(mix_report)
    return [domain_of(p) or str(p) for p in (data, *extra_data)]


def distill(o: DistillOptions) -> dict:
    """Distils ``o.teachers`` (none: labels only) into the ``o.student`` preset; see DistillOptions.

    Returns:
        The best epoch's metrics, with the student's GFLOPs and parameter count.

    Raises:
        MotivnetError: bad data, teacher or option (messages name the fix).
    """
    o.check()
    preprocessing = student_preprocessing(o.student, o.preprocessing)
    overrides = dict(o.train)
    weights, mix_report = None, None
    if o.domains is not None or o.pack is not None:
        if o.pack is not None:
            train_set, weights, val_set, mix_report = _pack_data(Path(o.pack), preprocessing, o.labels, o.mix)
        else:
            train_set, weights, val_set, mix_report = _domain_data(
                Path(o.domains), preprocessing, o.labels, o.yunet, o.cache, o.mix)
        data, val = Path(o.domains or o.pack), "validation parts of " + ", ".join(val_set)
        overrides.setdefault("samples_per_epoch", mix_report["mix"]["samples_per_epoch"])
    else:
        data = Path(o.data)
        train_set, val_set, val = _one_set_data(data, o.val, o.extra_data, o.labels, o.mapping, o.label_source)
    has_labels = (train_set.soft.sum(1) > 0).any()
    if not o.teachers and not has_labels:
        raise MotivnetError(f"{data} has no labels and no --teacher was given: nothing to learn from")
    kd = (1.0 if o.teachers else 0.0) if o.kd_weight is None else o.kd_weight
    cfg = TrainConfig(student={k: v for k, v in PRESETS[o.student].items() if k != "img_size"}, epochs=o.epochs,
                      kd_weight=kd, label_weight=o.label_weight if has_labels else 0.0,
                      temperature=o.temperature, views=o.views, online_teacher=o.online_teacher, mixup=o.mixup)
    cfg = replace(cfg, **overrides)
    logits, extra = None, {"provenance": {"student_preset": o.student, "training_data": str(data),
                                          "extra_training_data": [f"{p} (train part, split by person)"
                                                                  for p in o.extra_data],
                                          "selection_data": str(val),
                                          "label_source": o.label_source}}
    if mix_report is not None:
        extra["provenance"]["domains"] = mix_report
    extra["license"] = {"faces": faces_licence(_trained_domains(mix_report, data, o.extra_data))}
    if o.command:
        extra["command"] = o.command
    if o.init is not None:
        extra["provenance"]["init"] = _init_provenance(o.init)
        inherited = extra["provenance"]["init"].pop("license") or {}
        if inherited:  # weights started from carry the terms of what made them
            extra["license"]["init"] = licence_terms([f"{k}: {v}" for k, v in inherited.items()])
    online = None
    if o.teachers:
        routed = {}
        if o.domain_teachers:
            from .mixture import domain_slices

            slices = domain_slices(mix_report["sources"])
            missing = sorted(set(o.domain_teachers) - set(slices))
            if missing:
                raise MotivnetError(f"a domain teacher is given for {', '.join(missing)}, which this run does not train "
                                    "on (--without?): drop its --domain-teacher")
            routed = {d: (slices[d], list(files)) for d, files in o.domain_teachers.items()}
        logits, online = teacher_targets(list(o.teachers), train_set, o.labels, o.cache, o.views,
                                          cfg.seed, o.trust_code, o.progress, extra, mirror=o.mirror_teacher,
                                          online=o.online_teacher, routed=routed)
    return train(o.out, train_set, val_set, preprocessing, cfg, teacher_logits=logits, resume=o.resume,
                 progress=o.progress, extra=extra, init=o.init, sample_weights=weights, online_teacher=online,
                 stop_after=o.stop_after)
