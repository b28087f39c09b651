"""RESULTS.md sections for what the runtime measures on a device: classify latency against the
mini-Xception, labels across kernels and ISAs, full frames, class weights, mirror averaging, INT8.

Each renderer reads one results file of benchmarks/results/ and returns Markdown lines;
``report.py`` assembles them. Nothing here is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import pct as _pct, stamp as _stamp  # noqa: E402  (benchmarks/ is the script folder)


def ratio_section(path: Path) -> list[str]:
    r = json.loads(path.read_text())
    modes = []
    for spin, words in ((True, "worker threads spinning (ONNX Runtime's default)"),
                        (False, "spinning off (`BackendOptions(spin=False)`)")):
        rows = [x for x in r["rows"] if x.get("spin", True) is spin]
        if rows:
            modes.append(f"{words}: " + ", ".join(f"{x['model']} {x['p50_ms']:.3f} ms "
                                                  f"({x['ratio_to_xception_mini']:.2f}x)" for x in rows))
    return [f"**Classify latency against the mini Xception, interleaved in one process** "
            f"(`python benchmarks/latency_ratio.py`, {r['settings']['runtime']}, {r['settings']['threads']} threads, "
            f"batch 1; {_stamp(r['machine'])}): " + "; ".join(modes) + ". Interleaved, a spinning worker of "
            "the model just timed takes a core from the next one; with spinning off every model is timed "
            "on the cores alone.", ""]


def profile_section(path: Path) -> list[str]:
    """Kernel time by op type, per model and thread count (benchmarks/classify_profile.py)."""
    r = json.loads(path.read_text())
    ops = []
    for row in r["rows"]:
        ops += [op for op in row["by_op_ms"] if op not in ops]
    ops = ops[:8]
    out = [f"**Where classify time goes** (`python benchmarks/classify_profile.py`, {r['settings']['runtime']}; "
           f"{_stamp(r['machine'])}): wall-clock p50 without profiling, then the profiled median kernel time per "
           "op type, ms (profiling adds its own microseconds to every kernel)", "",
           "| model | threads | wall p50 | nodes | " + " | ".join(ops) + " | other |", "|---|---|---|---|" + "---|" * (len(ops) + 1)]
    for row in r["rows"]:
        other = sum(v for op, v in row["by_op_ms"].items() if op not in ops)
        out.append(f"| {row['model']} | {row['threads']} | {row['wall_p50_ms']:.3f} | {row['nodes']} | "
                   + " | ".join(f"{row['by_op_ms'][op]:.3f}" if op in row["by_op_ms"] else "" for op in ops)
                   + f" | {other:.3f} |")
    return out + [""]


def isa_section(path: Path) -> list[str]:
    r = json.loads(path.read_text())
    runs = ", ".join(f"{k} ({v['backend']}" + (f", {' '.join(f'{a}={b}' for a, b in v['env'].items())}" if v["env"] else "")
                     + (f"; kernels {', '.join(sorted(v['kernels']))}" if v.get("kernels") else "") + ")"
                     for k, v in r["runs"].items())
    rows = ["| test set | n | " + " | ".join(f"agree {k}" for k in next(iter(r["sets"].values()))["agreement_with_onnxruntime"])
            + " | largest log-prob difference | faces with margin < 10x it |", "|---|---|" + "---|" * (
                len(next(iter(r["sets"].values()))["agreement_with_onnxruntime"]) + 2)]
    for s, v in r["sets"].items():
        rows.append(f"| {s} | {v['n']} | " + " | ".join(f"{a:.2%}" for a in v["agreement_with_onnxruntime"].values())
                    + f" | {v['max_abs_logprob_diff']:.1e} | {v['faces_with_margin_under_10x_diff']} |")
    out = [f"**Same label on every machine** (`python benchmarks/isa_agreement.py`, {r['package']} through "
           f"`EmotionRecognizer.classify`, each run in its own process: {runs}; {_stamp(r['machine'])}). A label "
           "can differ between two CPUs only where the top-1 margin is below the kernels' rounding difference:", "",
           *rows, ""]
    for kind, x in r.get("across_cpus", {}).items():
        out += [f"Face by face against the labels the same model gave with default options on the {kind} CPU "
                f"({x['cpu']}, {', '.join(x['flags'])}, {x['date'][:10]}; it ran {x['ran']}): "
                + ", ".join(f"{s} {a:.2%}" for s, a in x["agreement"].items()) + ".", ""]
    return out


def frame_section(path: Path) -> list[str]:
    r = json.loads(path.read_text())
    package = r.get("package")
    command = "python benchmarks/frame_pipeline.py" + (f" --package {package}" if package and Path(package).name != "default" else "")
    out = [f"**Full frames with labelled faces** (`{command}`, {r['frame']}, "
           f"{r['faces']['n']} faces from {' and '.join(r['faces']['sets'])}, {r['settings']['threads']} threads; "
           f"{_stamp(r['machine'])})", "",
           "| mode | min_face | p50 ms per frame | fps | accuracy | vs detecting every frame at full size |",
           "|---|---|---|---|---|---|"]
    for x in r["rows"]:
        mode = "every frame" if x["detect_every"] is None else f"stream, detect every {x['detect_every']}"
        mode += ", ORT workers spinning (`spin=True`)" if x.get("spin") else ""
        out.append(f"| {mode} | {x['min_face']} | {x['p50_ms_per_frame']:.2f} | {x['fps']:.0f} | "
                   f"{_pct(x['accuracy'])} | {100 * x['accuracy_vs_full_every_frame']:+.1f} pt |")
    for p in r.get("peers", []):
        ran = p["ran"].split(",")[0].split()  # recognizer.describe(): "BACKEND ... PRECISION, detector ..."
        out.append(f"| peer **{p['name']}** ({ran[0]} {ran[-1]}), every frame | {p['min_face']} | {p['p50_ms_per_frame']:.2f} | "
                   f"{p['fps']:.0f} | {_pct(p['accuracy'])} | |")
    if r.get("crops"):
        out += ["", "Face crops alone (`detector=\"none\"`), p50 per crop: " + "; ".join(
            f"{'default settings (workers spin)' if c['spin'] is None else '`spin=False`'} "
            f"{c['p50_ms_per_crop']:.3f} ms" for c in r["crops"]) + "."]
    return out + [""]


def first_load_section(path: Path) -> list[str]:
    """Import, first from_pretrained() and first predict in fresh processes (benchmarks/first_load.py)."""
    r = json.loads(path.read_text())
    t = r["seconds"]
    return [f"**Before the first answer** (`python benchmarks/first_load.py`, {r['runs']} fresh processes, every "
            f"option at its default, it ran {r['ran']}; {_stamp(r['machine'])}): `import motivnet_edge` "
            f"{t['import_s']['median']:.2f} s, first `from_pretrained()` {t['from_pretrained_s']['median']:.2f} s "
            f"(slowest {t['from_pretrained_s']['max']:.2f} s; bar {r['bar_from_pretrained_s']:g} s), first `predict` "
            f"of a 640x480 photo {t['first_predict_s']['median']:.3f} s (median of the runs).", ""]


def export_time_section(path: Path) -> list[str]:
    """Wall time of an INT8 export with accuracy control (benchmarks/export_time.py)."""
    r = json.loads(path.read_text())
    shipped = ", ".join(f"{k} {'shipped' if v.get('shipped') else 'not shipped'}"
                        + (f" ({100 * v['agreement_int8_vs_fp32']:.2f} % agreement)" if v.get("agreement_int8_vs_fp32") else "")
                        for k, v in r["int8"].items())
    return [f"**INT8 export time** (`python benchmarks/export_time.py`, `{r['command']}` on the {r['package']} "
            f"package's student; {_stamp(r['machine'])}): {r['seconds']:.0f} s (bar {r['bar_seconds']} s); "
            f"{shipped}.", ""]


def class_weight_section(path: Path) -> list[str]:
    r = json.loads(path.read_text())
    sets = [k for k in r["rows"][0] if isinstance(r["rows"][0][k], dict)]
    out = [f"**Neutral class weight** (`python benchmarks/class_weights.py`, `class_weights={{\"neutral\": w}}` / "
           f"`--class-weight neutral=w` on {r['model']}, {r['settings']['runtime']}; {_stamp(r['machine'])}; "
           "accuracy / neutral recall / lowest class recall, %; CK+48 has no neutral class)", "",
           "| neutral weight | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for row in r["rows"]:
        cells = " | ".join(f"{_pct(row[s]['accuracy'])} / {_pct(row[s]['neutral_recall']) if row[s]['neutral_recall'] is not None else '-'}"
                           f" / {_pct(row[s]['min_recall'])}" for s in sets)
        out.append(f"| {row['neutral_weight']:g} | {cells} |")
    return out + [""]


def mirror_section(path: Path) -> list[str]:
    r = json.loads(path.read_text())
    sets = [k for k in r["rows"][0] if isinstance(r["rows"][0][k], dict)]
    p50 = {x["model"]: x for x in r["latency"]}
    out = [f"**Mirror averaging** (`python benchmarks/mirror.py`, `mirror=True` / `--mirror`: each face scored "
           f"with its mirror image, {r['settings']['runtime']}; classify p50 {r['settings']['latency']}, "
           f"{r['settings']['threads']} threads, batch 1; {_stamp(r['machine'])}; accuracy / lowest class recall, %)",
           "", "| model | mirror | " + " | ".join(sets) + " | classify p50 ms (x mini-Xception) |",
           "|---|---|" + "---|" * (len(sets) + 1)]
    for row in r["rows"]:
        t = p50.get(row["model"] + ("+mirror" if row["mirror"] else ""))
        cells = " | ".join(f"{_pct(row[s]['accuracy'])} / {_pct(row[s]['min_recall'])}" for s in sets)
        timing = f"{t['p50_ms']:.3f} ({t['ratio_to_xception_mini']:.2f}x)" if t else "-"
        out.append(f"| {row['model']} | {'on' if row['mirror'] else 'off'} | {cells} | {timing} |")
    return out + [""]


def int8_section(path: Path) -> list[str]:
    """INT8 against fp32 per package and runtime (benchmarks/int8_agreement.py)."""
    r = json.loads(path.read_text())
    if "rows" not in r:  # the older, FER2013Test-only format
        return [f"**INT8 vs FP32** (`python benchmarks/int8_agreement.py`, {r['machine']['cpu']}, commit "
                f"{r['machine']['commit']}, {r['machine']['date']}): top-1 agreement on {r['faces']} FER2013Test faces: "
                + ", ".join(f"{b} {100 * v['agreement_int8_vs_fp32']:.1f} %" for b, v in r["backends"].items()) + ".", ""]
    sets = list(r["sets"])
    out = [f"**INT8 vs FP32** (`python benchmarks/int8_agreement.py`, {_stamp(r['machine'])}; accuracy fp32 -> int8 "
           f"and top-1 agreement, %; bar: {r['bar']})", "",
           "| package | runtime | INT8 file | " + " | ".join(f"{s} (n={r['sets'][s]})" for s in sets)
           + " | validation drop |", "|---|---|---|" + "---|" * (len(sets) + 1)]
    for x in r["rows"]:
        if x.get("int8_file") is None:
            out.append(f"| {x['package']} | {x['runtime']} | not shipped: {x['not_shipped']} |" + " |" * (len(sets) + 1))
            continue
        drop = x.get("validation_drop")
        out.append(f"| {x['package']} | {x['runtime']} | {x['int8_file']} | " + " | ".join(
            f"{_pct(x[s]['fp32'])} -> {_pct(x[s]['int8'])}, agree {_pct(x[s]['agreement'])}" for s in sets)
            + f" | {'' if drop is None else f'{100 * drop:.2f} pt'} |")
    return out + [""]


def int8_sources_section(path: Path) -> list[str]:
    """Where the peers' INT8 agreement goes (benchmarks/int8_error_sources.py)."""
    r = json.loads(path.read_text())
    peers = list(r["peers"])
    out = [f"**Where the peers' INT8 agreement goes** (`python benchmarks/int8_error_sources.py`, {_stamp(r['machine'])}; "
           f"top-1 agreement with fp32 on {r['faces_set']}, %; INT8 rounding inserted into the fp32 graph one source "
           "at a time and evaluated as float arithmetic (ONNX Runtime, optimisations off), activation ranges from "
           f"{r['calibration']})", "",
           "| rounding | " + " | ".join(f"{p} (n={r['peers'][p]['faces']})" for p in peers) + " |",
           "|---|" + "---|" * len(peers)]
    sources = [row["source"] for row in r["peers"][peers[0]]["rows"]]
    for i, source in enumerate(sources):
        out.append(f"| {source} | " + " | ".join(_pct(r["peers"][p]["rows"][i]["agreement"]) for p in peers) + " |")
    out.append("")
    for p in peers:
        worst = r["peers"][p]["worst_single_activations"]
        out.append(f"- {p}: the convolution inputs whose 8-bit rounding alone flips the most faces (of "
                   f"{r['peers'][p]['convolutions']}): " + ", ".join(
                       f"#{w['convolution']} {_pct(w['agreement'])}" for w in worst))
    for name, rows in r.get("packages", {}).items():
        out.append(f"- package {name}, its shipped QDQ files: " + "; ".join(
            f"{x['file']} {_pct(x['arithmetic'])} as arithmetic, {_pct(x['kernels'])} on this CPU's INT8 kernels"
            for x in rows))
    return out + [""]


def arm64_section(path: Path) -> list[str]:
    """benchmarks/arm64_agreement.py: the device install on an emulated ARM64 CPU against x86-64."""
    r = json.loads(path.read_text())
    a, p = r["arm64"], r["photo"]
    rows = ["| backend / precision / set | faces | same label | labels that differ | max prob. difference | p99 |",
            "|---|---|---|---|---|---|"]
    for key, v in r["agreement"].items():
        rows.append(f"| {key} | {v['n']} | {v['label_agreement']:.2%} | {v['labels_differ']} | {v['max_prob_diff']:.2g} "
                    f"| {v['p99_prob_diff']:.2g} |")
    versions = ", ".join(f"{k} {v}" for k, v in a["versions"].items())
    return [f"**ARM64** (`python benchmarks/arm64_agreement.py`: Debian bookworm's aarch64 Python {a['python']} under "
            f"{a['emulator']}, {a['cpu']}, features {', '.join(a['flags']) or 'none of note'}; {versions}; "
            f"against {_stamp(r['machine'])}). The device install there imports no torch "
            f"({'torch importable!' if a['torch_importable'] else 'torch absent'}); `info default` exits "
            f"{a['info_default']['returncode']} ({a['info_default']['lines']} lines); the astronaut comes out "
            f"{', '.join(f['label'] for f in p['arm64'])} on ARM64 and {', '.join(f['label'] for f in p['x86_64'])} "
            f"here, boxes within {p['largest_box_difference_px']} px. `precision=\"auto\"` picks "
            f"{', '.join(f'{b} {v}' for b, v in a['auto_precision'].items())} there: the package's INT8 speed-up was "
            f"measured with {', '.join(sorted({f for v in a['int8_latency_recorded_on'].values() for f in (v or [])})) or 'no INT8 instructions'}, "
            f"which this CPU lacks (its INT8 dot-product features: {', '.join(a['int8_flags']) or 'none'}). Emulated: no "
            "timings. Test faces (CK+48, AffectNet96 `test_`, `predict_faces`) against this machine:", "", *rows, ""]
