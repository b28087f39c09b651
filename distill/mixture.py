"""A multi-domain training mix: every domain's train part in its device variants, and a sampler.

The sampler decides what an epoch is: ``samples_per_epoch`` draws (with replacement, seeded by
the epoch) where a domain's share grows with the square root of its size (FER+'s 28k faces do
not drown SFEW's 859) and, inside a domain, a class's share with the square root of its count
(AffectNet's fear is seen as often as it deserves, FER+'s 31 disgust faces are not repeated
until memorised). Validation is the mean over domains of each validation part's accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from motivnet_edge.labels import MOTIVNET_LABELS
from motivnet_edge.preprocess import Preprocessing

from motivnet_edge.datasets.readers import DataError, FaceSet, concat
from motivnet_edge.datasets.domains import DOMAINS, aligned_variants, read_meta, read_part

log = logging.getLogger(__name__)

#: The domains whose validation parts select a model (SFEW has none: its val_ part is its test set).
SELECTION_DOMAINS = ("ferplus", "affectnet96", "kdef", "facial_expressions", "expw")


@dataclass(frozen=True)
class MixRecipe:
    """How the domains are mixed; saved in the run's config.json.

    Attributes:
        domains: the domains whose train parts are used.
        domain_power: a domain's share of an epoch grows as (its faces) ** domain_power.
        class_power: inside a domain, a class's share grows as (its faces) ** class_power
            (1: as stored, 0: every class equally often).
        domain_scale: extra factors on a domain's share (facial_expressions is 91 % neutral or happy).
        domain_class_power: ``class_power`` for named domains (FER+ at 1 draws its faces as stored,
            so the model can learn FER's neutral-heavy prior for faces that look like FER's).
        samples_per_epoch: draws per epoch.
        meta_min: per domain, bars on its meta.csv columns (ExpW: {"detector_confidence": 30,
            "box_side_px": 64}); a face under any bar is a *noisy* row.
        meta_weight: how often a noisy row is drawn next to a clean one of its class (0: never,
            i.e. filtered out; 0.3: down-weighted). Rows stay in the mix either way, so every
            variant shares one teacher cache.
    """

    domains: tuple[str, ...] = tuple(DOMAINS)
    domain_power: float = 0.5
    class_power: float = 0.5
    domain_scale: Mapping[str, float] = field(default_factory=lambda: {"facial_expressions": 0.5})
    samples_per_epoch: int = 30000
    domain_class_power: Mapping[str, float] = field(default_factory=dict)
    meta_min: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    meta_weight: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["domains"], d["domain_scale"] = list(self.domains), dict(self.domain_scale)
        d["domain_class_power"] = dict(self.domain_class_power)
        if self.meta_min:
            d["meta_min"] = {k: dict(v) for k, v in self.meta_min.items()}
        else:  # recipes from before these fields compare equal on --resume
            del d["meta_min"], d["meta_weight"]
        return d


def sample_weights(domain: Sequence[str], hard: np.ndarray, recipe: MixRecipe,
                   row_factor: np.ndarray | None = None) -> np.ndarray:
    """Per-row draw probabilities (sum 1) for rows tagged with their domain and class;
    ``row_factor`` scales single rows inside their class (noisy rows: ``MixRecipe.meta_weight``)."""
    domain, hard = np.asarray(domain), np.asarray(hard)
    names = [d for d in recipe.domains if (domain == d).any()]
    share = np.array([(domain == d).sum() ** recipe.domain_power * recipe.domain_scale.get(d, 1.0) for d in names])
    share = share / share.sum()
    w = np.zeros(len(domain))
    for d, s in zip(names, share):
        rows = domain == d
        classes, counts = np.unique(hard[rows], return_counts=True)
        mass = counts.astype(float) ** recipe.domain_class_power.get(d, recipe.class_power)
        mass /= mass.sum()
        for c, n, m in zip(classes, counts, mass):
            # the class keeps its share; its clean rows take what its noisy rows give up
            members = rows & (hard == c)
            f = row_factor[members] if row_factor is not None else np.ones(n)
            w[members] = s * m * f / max(f.sum(), 1e-12)
    if not w.sum() > 0:
        raise ValueError("no training row can be drawn: every domain's scale or every row's weight is 0")
    return w / w.sum()


def training_mix(shared: str | Path, pp: Preprocessing, detector, *, recipe: MixRecipe = MixRecipe(),
                 labels=MOTIVNET_LABELS, cache_dir: str | Path | None = None) -> tuple[FaceSet, np.ndarray, dict]:
    """Every domain's train part (whole + aligned variants); returns (faces, weights, report).

    The report says per domain how many faces, variants and detector misses went in.
    """
    sets, tags, report, factors = [], [], {}, []
    for name in recipe.domains:
        whole = read_part(shared, name, "train", labels=labels)
        parts = [whole]
        misses = None
        if DOMAINS[name].aligned:
            aligned, misses = aligned_variants(whole, detector, pp, cache_dir=cache_dir, name=name)
            parts.append(aligned)
        joined = concat(parts)
        sets.append(joined)
        tags += [name] * len(joined)
        report[name] = {"faces": len(whole), "rows": len(joined), "detector_misses": misses}
        noisy = noisy_rows(shared, name, joined.files, recipe)
        factors.append(np.where(noisy, recipe.meta_weight, 1.0))
        if noisy.any():
            report[name]["noisy_rows"] = int(noisy.sum())
        log.info("%s train part: %d faces, %d rows with variants, detector misses %s, noisy rows %d", name,
                 len(whole), len(joined), misses, int(noisy.sum()))
    faces = concat(sets)
    factor = np.concatenate(factors) if factors else None
    return faces, mix_weights(faces, tags, recipe, row_factor=factor if recipe.meta_min else None), report


def noisy_rows(shared: str | Path, domain: str, files: Sequence[str], recipe: MixRecipe) -> np.ndarray:
    """Which rows of a domain fall under one of ``recipe.meta_min``'s bars (a file meta.csv does not
    list is clean). Raises DataError for a bar on a column meta.csv does not have."""
    bars = recipe.meta_min.get(domain, {})
    if not bars:
        return np.zeros(len(files), bool)
    meta = read_meta(shared, domain)
    columns = set(next(iter(meta.values()), {}))
    unknown = [c for c in bars if c not in columns]
    if unknown:
        raise DataError(f"{domain}'s meta.csv has no column {unknown[0]!r} (it has {', '.join(sorted(columns)) or 'none'})")
    out = np.zeros(len(files), bool)
    for i, f in enumerate(files):
        row = meta.get(f.split("#")[0])
        out[i] = row is not None and any(row[c] < v for c, v in bars.items())
    return out


def mix_weights(faces: FaceSet, domain: Sequence[str], recipe: MixRecipe,
                row_factor: np.ndarray | None = None) -> np.ndarray:
    """``sample_weights`` for a mix's rows; FER+ rows carry vote distributions and are balanced by
    their majority (or top) vote. Rows of domains outside ``recipe.domains`` are never drawn."""
    hard = np.where(faces.hard >= 0, faces.hard, faces.soft.argmax(1))
    return sample_weights(domain, hard, recipe, row_factor)


def domain_slices(report: Mapping[str, Mapping]) -> dict[str, slice]:
    """Each domain's rows in the ``training_mix`` set, from its report (domains are joined in order)."""
    out, start = {}, 0
    for name, entry in report.items():
        out[name] = slice(start, start + int(entry["rows"]))
        start += int(entry["rows"])
    return out


def trained_domains(report: dict) -> list[str]:
    """The domains a run's mix report (``provenance.domains``) drew faces from: those in its recipe and
    its sources, less any whose share was scaled to 0 (its rows are there but never drawn)."""
    mix, sources = report["mix"], report["sources"]
    return [d for d in mix["domains"] if d in sources and mix.get("domain_scale", {}).get(d, 1) > 0]


def validation_sets(shared: str | Path, pp: Preprocessing, detector, *, labels=MOTIVNET_LABELS,
                    domains: Sequence[str] = SELECTION_DOMAINS, cache_dir: str | Path | None = None) -> dict[str, FaceSet]:
    """The selection sets, each cut as its users measure it (KDEF: detector-aligned)."""
    return {name: evaluation_cut(read_part(shared, name, "val", labels=labels), name, pp, detector,
                                 cache_dir=cache_dir, part="val") for name in domains}


def evaluation_cut(faces: FaceSet, domain: str, pp: Preprocessing, detector, *, cache_dir: str | Path | None = None,
                   part: str = "val") -> FaceSet:
    """``faces`` of ``domain`` as its validation and test faces reach a model: detector-aligned where the
    domain is measured so (KDEF, ExpW), whole crops otherwise. ``part`` names the crops' cache file."""
    if DOMAINS[domain].eval_crop != "aligned":
        return faces
    return aligned_variants(faces, detector, pp, cache_dir=cache_dir, name=f"{domain}-{part}")[0]


__all__ = ["MixRecipe", "SELECTION_DOMAINS", "domain_slices", "evaluation_cut", "mix_weights", "sample_weights", "trained_domains",
           "training_mix", "validation_sets"]
