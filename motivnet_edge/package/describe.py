"""A model package described in plain lines: what it is, its files, how it was measured, where it
came from. ``motivnet-edge info`` prints them; metrics and provenance are free-form records, so a
malformed one becomes a note instead of an error.
"""

from __future__ import annotations

from pathlib import Path

from .manifest import ModelPackage, licence_terms


def describe_package(pkg: ModelPackage) -> list[str]:
    """The lines ``motivnet-edge info`` prints for ``pkg``, one fact per line, never raising on a
    malformed metrics or provenance record (it is named in a note instead)."""
    lines = [f"package:       {pkg.root}"]
    for part in (_info_what, _info_files, _info_metrics, _info_provenance):
        try:
            lines += part(pkg)
        except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
            lines.append(f"note:          the manifest's {part.__name__[6:]} record is malformed "
                         f"({type(exc).__name__}); re-export the package to refresh it")
    return lines


def _info_what(pkg) -> list[str]:
    pp, prov = pkg.preprocessing, pkg.provenance
    return [f"what:          {prov.get('description', 'n/a')}", f"labels:        {', '.join(pkg.labels)}",
            f"input:         {pp.input_size[0]}x{pp.input_size[1]} {pp.color}, crop {pp.crop}"]


def _info_files(pkg) -> list[str]:
    out = []
    for f in pkg.files:
        size = (pkg.root / f.path).stat().st_size + sum((pkg.root / p).stat().st_size for p in f.extra_files)
        out.append(f"file:          {f.backend} {f.precision} {f.path} ({size / 1e6:.2f} MB, sha256 {f.sha256[:12]})")
    return out


def _info_metrics(pkg) -> list[str]:
    out, m = [], pkg.metrics
    if "gflops" in m:
        out.append(f"compute:       {float(m['gflops']):.3f} GFLOPs per face")
    for name, by_precision in m.get("test", {}).items():
        for precision, t in by_precision.items():
            low = [f"{k} {v:.0%}" for k, v in t.get("per_class_recall", {}).items() if v < 0.3]
            out.append(f"accuracy:      {name} {precision}: {t['accuracy']:.2%} (UAR {t['uar']:.2%}, n={t['n']})"
                       + (f"; recall under 30 %: {', '.join(low)}" if low else ""))
    for runtime, q in m.get("int8", {}).items():
        if "error" in q:
            out.append(f"int8:          {runtime}: not shipped ({q['error']}); {q.get('fallback', '')}")
        elif "val_accuracy_drop" in q:
            agree = f", agreement with fp32 {q['test_agreement']:.2%} on the test sets" if "test_agreement" in q else ""
            out.append(f"int8:          {runtime}: {q.get('file', '')} validation accuracy drop {q['val_accuracy_drop']:.2%}"
                       f"{agree}" + "".join(f"; {q[k]}" for k in ("method", "scheme", "weights") if k in q)
                       + ("" if q.get("shipped", True) else " (not shipped)"))
    for backend, lat in m.get("latency", {}).items():
        out.append(f"latency:       {backend}: " + ", ".join(f"{k[:-3]} {v:.3f} ms" for k, v in lat.items()
                                                            if k.endswith("_ms") and isinstance(v, (int, float)))
                   + f" (batch 1, {lat.get('threads')} thread(s), {lat.get('cpu')}, measured at export)")
    return out


def _info_provenance(pkg) -> list[str]:
    out = []
    pc = pkg.provenance.get("prior_correction")
    if pc:
        v = pc["validation"]
        key = "mean_accuracy" if "mean_accuracy" in v["uncorrected"] else "accuracy"
        where = str(pc.get("fitted_on", "?"))
        out.append(f"prior correction: per-class logit offsets {pc['bias']} fitted on "
                   f"{where if key == 'mean_accuracy' else Path(where).name} "
                   f"(lowest class recall {v['uncorrected']['min_recall']:.0%} -> {v['corrected']['min_recall']:.0%}, "
                   f"{key.replace('_', ' ')} {v['uncorrected'][key]:.2%} -> {v['corrected'][key]:.2%})")
    for role, rel in pkg.manifest.get("assets_roles", {}).items():
        out.append(f"asset:         {role}: {rel}")
    for key, val in pkg.license.items():
        if key == "teacher" and isinstance(val, str):
            val = licence_terms([val])  # packages made before distill flattened them nest one "teacher: " per round
        out.append(f"licence:       {key}: {val}")
    return out
