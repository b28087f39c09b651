"""Writes docs/RESULTS.md's generated section and README.md's headline from benchmarks/results/*.json.

    python benchmarks/report.py

Nothing in either part is typed by hand: rerun the benchmarks, then this script.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from motivnet_edge.atomic import write_bytes
from common import CPU_CLASSES, ROOT, per_cpu_result, results_dir, pct as _pct  # noqa: E402  (benchmarks/ is the script folder)
from report_domains import (DOMAIN_COLUMNS, IMG, domains_section, pareto_section, prior_section,  # noqa: E402
                            robustness_section)
from report_training import (ablation_section, distill_section, ensemble_teacher_section,  # noqa: E402
                             fit_gap_section, selection_section, teacher_candidates_section,
                             test_time_views_section)
from report_runtime import (arm64_section, class_weight_section, export_time_section, first_load_section,  # noqa: E402
                            frame_section, int8_section, int8_sources_section, isa_section, mirror_section,
                            profile_section, ratio_section)

#: Results whose figures depend on the kind of CPU: each kind's file is rendered (common.per_cpu_result).
PER_CPU = ("latency_ratio.json", "classify_profile.json", "isa_agreement.json", "frame_pipeline.json",
           "frame_pipeline_accurate.json",
           "int8_agreement.json", "export_time.json", "first_load.json", "int8_error_sources.json")
CPU_WORDS = {"avx512": "AVX-512 CPU", "avx2": "AVX2-only CPU", "baseline": "CPU without AVX2"}
#: The models the wheel embeds (default first), each described and put first on the headline.
MODELS = ROOT / "motivnet_edge" / "models"
EMBEDDED = tuple(sorted((m.parent.name for m in MODELS.glob("*/manifest.json")), key=lambda n: (n != "default", n)))

START, END = "<!-- results:start -->", "<!-- results:end -->"
HEAD_START, HEAD_END = "<!-- headline:start -->", "<!-- headline:end -->"
RESULTS = ROOT / "docs" / "RESULTS.md"
PROTOCOLS = ("ferplus_majority", "fer2013", "ckplus", "facial_expressions")


def accuracy_table(res: dict) -> list[str]:
    rows = ["| model | precision | " + " | ".join(f"{p} acc / UAR" for p in PROTOCOLS)
            + " | agreement with teacher (FER2013Test) |", "|---|---|" + "---|" * (len(PROTOCOLS) + 1)]
    by = {}
    for r in res["accuracy"]:
        by.setdefault((r["model"], r["precision"]), {})[r["protocol"]] = r
    for (model, prec), protos in by.items():
        cells = [f"{_pct(protos[p]['accuracy'])} / {_pct(protos[p]['uar'])}" if p in protos else "" for p in PROTOCOLS]
        agree = protos.get("fer2013", {}).get("agreement")
        rows.append(f"| {model} | {prec} | " + " | ".join(cells) + f" | {_pct(agree)} |")
    n = {r["protocol"]: r["n"] for r in res["accuracy"]}
    rows.append("")
    rows.append(f"Faces: FER+ majority n={n.get('ferplus_majority')}, FER2013 labels n={n.get('fer2013')} "
                "(the 16 private-test images FER+ dropped are missing), CK+48 n=" + str(n.get("ckplus"))
                + " (contempt dropped: no MotivNet class)"
                + (f", facial_expressions validation part n={n['facial_expressions']} (split by person)"
                   if "facial_expressions" in n else "") + ". Teacher = the Xception mini+big ensemble.")
    low = [f"{r['model']} {r['precision']} on {r['protocol']}: " + ", ".join(
        f"{k} {_pct(v)}" for k, v in r["per_class_recall"].items() if v < 0.3)
        for r in res["accuracy"] if any(v < 0.3 for v in r.get("per_class_recall", {}).values())]
    rows.append("")
    rows.append("Classes with recall under 30 %: " + ("; ".join(low) if low else "none") + ".")
    return rows


def latency_table(res: dict) -> list[str]:
    rows = ["| model | backend | precision | batch | threads | p50 ms (spread) | p90 | p99 | faces/s | size MB "
            "| peak RSS MB | GFLOPs | % of GEMM peak |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["latency"]:
        lo, hi = r["p50_spread_ms"]
        rows.append(
            f"| {r['model']} | {r['backend']} | {r['precision']} | {r['batch']} | {r['threads']} | "
            f"{r['p50_ms']:.3f} ({lo:.3f}-{hi:.3f}) | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['throughput_fps']:.0f} | {(r.get('size_bytes') or 0) / 1e6:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r.get('gflops') or 0:.3f} | "
            + (f"{100 * r['fraction_of_gemm_peak']:.1f} |" if "fraction_of_gemm_peak" in r else "- |"))
    return rows


def section(path: Path) -> list[str]:
    res = json.loads(path.read_text())
    m = res["machine"]
    out = [f"### {path.relative_to(results_dir('avx512')).as_posix()}: {m['cpu']}, {m['cores']} cores, flags {', '.join(m['flags'])}",
           "", f"Commit {m['commit']}, {m['date']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
           + ". GEMM peak (fp32 MatMul 1024): " + ", ".join(
               f"{t} thread(s) {g:.0f} GFLOP/s" for t, g in res["gemm_peak_gflops"].items())
           + ("; int8 (MatMulInteger u8 x s8 1024): " + ", ".join(
               f"{t} thread(s) {g:.0f} GOP/s" for t, g in res["gemm_peak_int8_gops"].items())
              if "gemm_peak_int8_gops" in res else "")
           + ". Each row's % of peak is against its own precision's peak (bf16: none measured)"
           + f". Suite run: {res['seconds']} s, {res['settings']['rounds']} interleaved rounds, each in its own process.", ""]
    if res["accuracy"]:
        out += ["**Accuracy** (%, FER2013Test; CK+48 cross-dataset)", ""] + accuracy_table(res) + [""]
    out += ["**Classify latency** (face crop in, scores out; medians over rounds)", ""] + latency_table(res) + [""]
    if res.get("pipeline"):
        out += ["**Full frame** (640x480, detect + align + classify, default model, ONNX Runtime fp32)", "",
                "| detector | faces | p50 ms | fps |", "|---|---|---|---|"]
        out += [f"| {p['detector']} | {p['faces']} | {p['p50_ms']:.1f} | {p['fps']:.1f} |" for p in res["pipeline"]]
        out.append("")
    for t in res.get("teacher", []):
        if "note" in t:
            out.append(f"MotivNet-1B teacher: {t['note']}.")
        else:
            mem = f", peak GPU memory {t['peak_mem_mb']:.0f} MB" if t.get("peak_mem_mb") else ""
            slow = " (one forward: the full teacher is this slow on a CPU)" if t["device"] == "cpu" else ""
            out.append(f"MotivNet-1B teacher, random weights, torch ({t['device']}, {t['dtype']}, batch {t['batch']}, "
                       f"{t.get('threads', '')} threads): {t['p50_ms'] / 1e3:.1f} s per call{slow}{mem}.")
    if not any(t.get("device", "cpu") != "cpu" for t in res.get("teacher", [])):
        out.append("MotivNet-1B GPU rows (fp32/bf16, batch 1/8/32): not measured, this machine has no GPU "
                   "(the suite adds them where torch sees one).")
        out.append("Student on ONNX Runtime's CUDA and TensorRT providers (fp32, fp16, INT8 with the shipped "
                   "calibration table and QDQ file): not measured, no GPU was lent to this project's sessions; "
                   "`motivnet-edge benchmark` and `--provider tensorrt` run them unchanged on a Jetson.")
    for n in res.get("notes", []):
        out.append(f"Note: {n}.")
    for png in ("pareto.png", "confusion_default_fer2013.png", "confusion_default_ferplus_majority.png"):
        if (path.parent / png).is_file():
            out += ["", f"![{png}]({IMG}{(path.parent / png).relative_to(results_dir('avx512')).as_posix()})"]
    return out


def render() -> str:
    """The README's results section, from the committed results files only."""
    files = [f for kind in CPU_CLASSES for f in sorted(results_dir(kind).glob("suite-*.json"))]
    body = ["_Generated by `python benchmarks/report.py` from `benchmarks/results/*.json` (made by "
            "`python benchmarks/run_suite.py`); not typed by hand._", ""]
    for name in EMBEDDED:
        prov = json.loads((MODELS / name / "manifest.json").read_text())["provenance"]
        body += [f"**Embedded {name} model:** {prov.get('description', '')}", ""]
    for f in files:
        body += section(f) + [""]
    board, ratio = ROOT / "benchmarks" / "results" / "domains.json", ROOT / "benchmarks" / "results" / "latency_ratio.json"
    if board.is_file() and ratio.is_file():
        body += pareto_section(json.loads(board.read_text()), json.loads(ratio.read_text()))
    for name, render in (("domains.json", domains_section), ("prior_tradeoff.json", prior_section),
                         ("domain_ablations.json", domains_section), ("fer_share.json", domains_section),
                         ("selection.json", selection_section), ("soup_selection.json", selection_section),
                         ("lite_selection.json", selection_section), ("expw_noise.json", selection_section),
                         ("redistil_selection.json", selection_section),
                         ("teacher_candidates.json", teacher_candidates_section),
                         ("ensemble_teacher.json", ensemble_teacher_section), ("fit_gap.json", fit_gap_section),
                         ("test_time_views_accurate.json", test_time_views_section),
                         ("ablations.json", ablation_section), ("robustness.json", robustness_section),
                         ("latency_ratio.json", ratio_section), ("classify_profile.json", profile_section),
                         ("isa_agreement.json", isa_section), ("frame_pipeline.json", frame_section),
                         ("frame_pipeline_accurate.json", frame_section),
                         ("first_load.json", first_load_section), ("export_time.json", export_time_section),
                         ("int8_agreement.json", int8_section), ("int8_error_sources.json", int8_sources_section),
                         ("class_weights.json", class_weight_section), ("mirror.json", mirror_section),
                         ("arm64.json", arm64_section)):
        kinds = CPU_CLASSES if name in PER_CPU else ("avx512",)  # avx512: benchmarks/results/ itself
        for kind in kinds:
            path = per_cpu_result(name, kind)
            if path.is_file():
                lines = render(path)
                tag = f"_{CPU_WORDS[kind]}:_ " if name in PER_CPU else ""
                body += [tag + lines[0], *lines[1:]]
    distilled = ROOT / "benchmarks" / "results" / "distill.json"
    if distilled.is_file():
        body += distill_section(distilled)
    t1b = ROOT / "benchmarks" / "results" / "teacher_1b_export.json"
    if t1b.is_file():
        r = json.loads(t1b.read_text())
        body += [f"**MotivNet-1B export** (`python benchmarks/export_teacher_1b.py`, random weights, "
                 f"{r['machine']['cpu']}, commit {r['machine']['commit']}, {r['machine']['date']}): "
                 f"{r['params'] / 1e9:.3f} B parameters exported to ONNX with external data in "
                 f"{r['export_seconds']:.0f} s (" + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in r["file_bytes"].items()
                                                        if v > 1e6)
                 + f"); one ONNX Runtime forward at batch 1 on this CPU took {r['ort_cpu_batch1_ms'] / 1e3:.0f} s.", ""]
    return START + "\n" + "\n".join(body) + "\n" + END


def headline() -> str:
    """README's headline: the embedded models against the peers on every test set, and their speed."""
    out = [HEAD_START, "_Generated by `python benchmarks/report.py` from the committed results files._", ""]
    board = ROOT / "benchmarks" / "results" / "domains.json"
    if board.is_file():
        r = json.loads(board.read_text())
        cols = [(k, h) for k, h in DOMAIN_COLUMNS if k in r["sets"]]
        out += [f"Accuracy, % (`python benchmarks/domains.py`, {r['machine']['date'][:10]}); each set cut as its users "
                "measure it (KDEF photos through YuNet + alignment, the others as stored crops):", "",
                "| model | " + " | ".join(h for _, h in cols) + " | cross-domain mean |", "|---|" + "---|" * (len(cols) + 1)]
        shown = [n for n in r["models"] if n in (*EMBEDDED, "fer_era_default", "opencv_zoo") or n.startswith("xception")]
        for name in sorted(shown, key=lambda n: n not in EMBEDDED):  # the embedded models first
            m = r["models"][name]
            out.append(f"| {name} | " + " | ".join(_pct(m[k]["accuracy"]) if k in m else "" for k, _ in cols)
                       + f" | {_pct(m['cross_domain_mean'])} |")
        out.append("")
    for kind in CPU_CLASSES:  # each kind of CPU the latency was measured on
        ratio = per_cpu_result("latency_ratio.json", kind)
        if not ratio.is_file():
            continue
        r = json.loads(ratio.read_text())
        rows = [x for x in r["rows"] if x.get("spin", True) is False and x["model"] in (*EMBEDDED, "xception_mini")]
        if rows:
            out.append("Classify latency, batch 1, " + f"{r['settings']['threads']} threads, ONNX Runtime workers not spinning, "
                       f"interleaved in one process (`python benchmarks/latency_ratio.py`, {r['machine']['cpu']}, {CPU_WORDS[kind]}): "
                       + ", ".join(f"{x['model']} {x['p50_ms']:.2f} ms ({x['ratio_to_xception_mini']:.2f}x)" for x in rows)
                       + ".")
            out.append("")
    return "\n".join(out + [HEAD_END])


def section_of(text: str, start: str, end: str, where: str) -> str:
    """The generated part of a text, markers included."""
    found = re.search(re.escape(start) + ".*?" + re.escape(end), text, flags=re.S)
    if found is None:
        raise SystemExit(f"{where} has no {start} ... {end} section")
    return found.group(0)


def readme_section(text: str) -> str:
    """RESULTS.md's generated part (kept under this name for the tests)."""
    return section_of(text, START, END, "docs/RESULTS.md")


def main() -> None:
    results = RESULTS.read_text()
    write_bytes(RESULTS, results.replace(readme_section(results), render()).encode())
    readme = ROOT / "README.md"
    text = readme.read_text()
    write_bytes(readme, text.replace(section_of(text, HEAD_START, HEAD_END, "README.md"), headline()).encode())
    print("docs/RESULTS.md and README.md's headline regenerated")


if __name__ == "__main__":
    main()
