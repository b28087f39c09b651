"""RESULTS.md sections about training: students against teachers, the ablations, the default's selection.

Called by ``report.py``; each function turns one committed results file into Markdown lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from common import ROOT, pct as _pct, stamp as _stamp  # noqa: E402  (benchmarks/ is the script folder)
from report_domains import IMG  # noqa: E402


def distill_section(path: Path) -> list[str]:
    """Students vs teachers (benchmarks/distill_results.py)."""
    r = json.loads(path.read_text())
    m, models = r["machine"], r["models"]
    out = [f"**Distillation: students vs teachers** (`python benchmarks/distill_results.py`, {m['cpu']}, "
           f"commit {m['commit']}, {m['date']}; torch CPU forward; FER2013Test and CK+48; agreement = top-1 "
           "agreement with the Xception ensemble on FER2013Test; a student's teacher is the one of its "
           "own run, and *taught by* lists the teachers of the runs it was initialised from)", "",
           "| model | role | params | GFLOPs | FER2013 labels | FER+ majority | CK+48 | agreement | "
           "teacher: FER2013 gap, agreement | taught by (labels) | epochs (best) | training |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in models.items():
        t = v["test"]
        tr = v.get("training")
        cells = "| | |"
        if tr:
            own = models.get(tr["teacher"] or "", {}).get("test")
            gap = (f"{tr['teacher']}: {(t['fer2013']['accuracy'] - own['fer2013']['accuracy']) * 100:+.1f} pt, "
                   f"{_pct(t['fer2013']['agreement_with_teacher'])}") if own else "labels only"
            chain = " <- ".join(f"{s['teacher'] or 'none'} ({s['label_source']})" for s in tr.get("lineage", []))
            cells = (f"{gap} | {chain} | {tr['epochs']} ({tr['best_epoch']}) | "
                     f"{tr['train_seconds'] / 60:.0f} min, {tr['device']}")
        out.append(f"| {name} | {v['role']} | {v['params']:,} | {v['gflops']:.3f} | "
                   f"{_pct(t['fer2013']['accuracy'])} | {_pct(t['ferplus_majority']['accuracy'])} | "
                   f"{_pct(t['ckplus']['accuracy'])} | {_pct(t['fer2013']['agreement'])} | {cells} |")
    return out + [""]


def _teacher(row: dict) -> str:
    weight = row["train"].get("kd_weight", 0) if isinstance(row.get("train"), dict) else 0
    if not weight or not row.get("teacher"):
        return "none: FER+ votes only"
    return f"{' + '.join(row.get('teacher_files') or [row['teacher']])} ({weight:g})"


def ablation_section(path: Path) -> list[str]:
    """What each lever gave (benchmarks/ablations.py)."""
    r = json.loads(path.read_text())
    sets = [k for k in r["rows"][0] if isinstance(r["rows"][0][k], dict) and "accuracy" in r["rows"][0][k]]
    out = [f"**Ablations** (`python benchmarks/ablations.py`, {_stamp(r['machine'])}; accuracy / lowest class "
           "recall, %; FER2013Valid selects each run's epoch, FER2013Valid + facial_expressions val choose the "
           "default among runs (`select_default.py`), FER2013Test and CK+48 are only reported)", "",
           "| row | " + " | ".join(sets) + " | KD teacher (weight) | epochs (best) | training |",
           "|---|" + "---|" * (len(sets) + 3)]
    for row in r["rows"]:
        cells = " | ".join(f"{_pct(row[s]['accuracy'])} / {_pct(row[s]['min_recall'])}" for s in sets)
        train = (f"{_teacher(row)} | {row['epochs_run']} ({row['best_epoch']}) | {row['train_minutes']:.0f} min, "
                 f"{row['device']}" if row["kind"] == "run" else "see its manifest | | ")
        out.append(f"| {row['name']} | {cells} | {train} |")
    out.append("")
    if (path.parent / "ablation_curves.png").is_file():
        out += [f"![ablation_curves.png]({IMG}ablation_curves.png)", ""]
    for row in r["rows"]:
        if row.get("command"):
            cmds = " then `".join(c.split(" ", 1)[1] + "`" for c in row["command"])
            out.append(f"- `{row['name']}`: `{cmds}"
                       + (f" (prior correction, offsets {row['prior_correction']['bias']})" if "prior_correction" in row
                          else ""))
    return out + [""]


#: Selections other than the default's own (selection.json): their title, before the command.
SELECTION_TITLES = {
    "redistil_selection.json": "**The default re-distilled beside the long teacher run, on validation data** (issue 41 "
                               "step 4; `bash benchmarks/redistil_default.sh`: 6 epochs continuing the default with "
                               "its own recipe, AffectNet96, KDEF and ExpW rows taught by the mean of the default and "
                               "the teacher run, FER+ rows by the FER-era default; both rows are packages with their "
                               "prior correction; ",
    "soup_selection.json": "**Domain shares and soups on validation data** (the default's run; one more round of its "
                           "recipe (rd2); that round with FER+ (fer2) or AffectNet96 (aff2) drawn twice as often "
                           "(`distill --domain-scale`); weight means of rd2 + fer2 (soup), fer2 + aff2 (soup_fa) "
                           "and all three (soup3) by `python -m motivnet_distill.students.soup`; ",
    "lite_selection.json": "**The lite stem from the default's weights, on validation data** (`vit_hybrid_pico_lite_relu`: "
                           "the pico without its stride-1 stem convolutions, ReLU fused into each; started from the "
                           "default's run and distilled with its recipe, `runs/md_lite_relu_rd_kd`; ",
    "expw_noise.json": "**ExpW's noisy labels, on validation data** (issue 45: each run a 4-epoch continuation of the "
                       "embedded default, its own package as the mirrored teacher, `--degrade 0.5`; expw_base draws "
                       "no ExpW face (`--domain-scale expw=0`: same rows, same teacher cache), expw_plain draws ExpW "
                       "as stored, expw_filtered never draws the faces under `--meta-min expw.detector_confidence=30 "
                       "--meta-min expw.box_side_px=64` (30 % of its rows, runs/expw_filtered/config.json), expw_down draws those 0.3 times as often "
                       "(`--meta-weight 0.3`), where run; expw_labels draws ExpW as stored and learns its rows from "
                       "their labels alone (`--domain-teacher expw=none`: no KD term there); expw_specialist draws "
                       "nothing but ExpW, from its labels alone, 6 epochs of 8,000 faces: how far the pico follows "
                       "ExpW's own labelling when nothing else pulls (a probe, not a candidate; its row is the epoch "
                       "the pooled score picks, its whole ExpW curve is in benchmarks/results/expw_specialists/), "
                       "expw_specialist_resnet the same from the teacher run's resnet_s (best.pt of epoch 31); "
                       "`bash benchmarks/expw_noise.sh`; ",
}


def selection_section(path: Path) -> list[str]:
    r = json.loads(path.read_text())
    sets = [k for k, v in r["rows"][0].items() if isinstance(v, dict) and "accuracy" in v]
    rows = "; ".join(f"{x['run']} " + " / ".join(_pct(x[s]["accuracy"]) for s in sets)
                     + f" (score {_pct(x['score'])}" + (f", lowest recall {_pct(x['lowest_recall'])}"
                                                      if "lowest_recall" in x else "")
                     + (f", as stored {_pct(x['clean_score'])}, poorer captures {_pct(x['degraded']['mean'])}"
                        if "degraded" in x else "") + ")"
                     for x in r["rows"])
    embedded = embedded_run()
    if embedded == r["chosen"]:
        verdict = f"chosen and embedded: **{r['chosen']}**."
    else:
        verdict = (f"chosen on validation: **{r['chosen']}**; the embedded default stays **{embedded}**: a candidate "
                   "is embedded only when it also beats the default's cross-domain mean on the scoreboard, or stays "
                   "within half a point of it and scores 5 points higher under poorer captures (README, "
                   "\"When a new default is committed\").")
    title = SELECTION_TITLES.get(path.name, "**Default candidates on validation data** (")
    return [f"{title}`python benchmarks/select_default.py`, {_stamp(r['machine'])}; {r['rule']}; "
            f"{' / '.join(sets)}, %): {rows}; {verdict}", ""]


def embedded_run() -> str:
    """The run the embedded default was exported from: the run folder make_default records, or (packages
    made before it recorded one) the last ``--out`` of the training command."""
    manifest = json.loads((ROOT / "motivnet_edge" / "models" / "default" / "manifest.json").read_text())
    training = manifest.get("provenance", {}).get("training", {})
    if isinstance(training.get("run"), str) and training["run"]:
        return training["run"]
    command = training.get("command", "")
    outs = re.findall(r"--out\s+\S*?([^/\s]+)/?(?:\s|$)", command)
    return outs[-1] if outs else "unknown"


def teacher_candidates_section(path: Path) -> list[str]:
    """Issue 41 step 1: candidate teachers per CPU-minute (benchmarks/teacher_candidates.py)."""
    r = json.loads(path.read_text())
    cands = r["candidates"]
    # The CPU time every side-by-side candidate had (a continuation starts where its parent ended).
    budget = min(c["curve"][-1]["cpu_minutes"] for c in cands if not c.get("continues"))
    domains = list(cands[0]["curve"][-1]["domains"])
    out = ["**Candidate teachers per CPU-minute** (issue 41; `bash benchmarks/teacher_candidates.sh`, then "
           "`python benchmarks/teacher_candidates.py " + " ".join(f"--run runs/{c['run']}" for c in cands)
           + f"`; {_stamp(r['machine'])}; the same data, recipe and 40-epoch "
           "schedule, each trained for a bounded sitting; validation parts only, %; *at the common budget*: the "
           f"last epoch within {budget:.0f} CPU-minutes, the least any candidate had; the winner goes on as the long "
           "teacher run, resumed with `--epochs 80`; a continuation (started from another run's best epoch, "
           "with its own recipe: its commands are in its log folder) counts from where that run's CPU time ended; "
           "logs: " + ", ".join(f"`benchmarks/results/{d.name}/`" for d in sorted(path.parent.glob("teacher_run*"))
                                 if d.is_dir()) + ")", "",
           "| run | student | input | params | GFLOPs | epochs | CPU-min | pooled | " + " | ".join(domains)
           + f" | best (epoch) | pooled at {budget:.0f} CPU-min |",
           "|---|---|---|---|---|---|---|---|" + "---|" * len(domains) + "---|---|"]
    for c in cands:
        last = c["curve"][-1]
        best = max(c["curve"], key=lambda p: p["val_acc"])
        within = [p for p in c["curve"] if p["cpu_minutes"] <= budget + 1e-6]
        at = (f"continues {c['continues']}" if c.get("continues") else
              f"{_pct(within[-1]['val_acc'])} (epoch {within[-1]['epoch']})" if within else "")
        est = " (first epochs estimated)" if any(p["estimated"] for p in c["curve"]) else ""
        out.append(f"| {c['run']} | {c['student']} | {c['input_px']} px | {c['params'] / 1e6:.2f} M | "
                   f"{c['gflops']:.2f} | {last['epoch']} of {c['epochs_of_schedule']} | {last['cpu_minutes']:.0f}{est} | "
                   f"{_pct(last['val_acc'])} | " + " | ".join(_pct(last["domains"].get(d)) for d in domains)
                   + f" | {_pct(best['val_acc'])} ({best['epoch']}) | {at} |")
    out += ["", f"![teacher_candidates.png]({IMG}teacher_candidates.png)", ""]
    return out


def ensemble_teacher_section(path: Path) -> list[str]:
    """Issue 41: candidate teachers and their mean read as distill reads them (benchmarks/ensemble_teacher.py)."""
    r = json.loads(path.read_text())
    domains = list(r["rows"][0]["domains"])
    out = ["**Teachers and their ensemble, on validation data** (issue 41; `python benchmarks/ensemble_teacher.py "
           + " ".join(f"--member {m}" for m in r["members"]) + f"`; {_stamp(r['machine'])}; {r['score']}; "
           "mirrored: each face and its mirror image read and averaged, as `distill --mirror-teacher` does; "
           + "; ".join(f"{m}: epoch {v['epoch']} of its run" for m, v in r["members"].items() if v.get("epoch") is not None)
           + "; %)", "",
           "| teacher | mirrored | pooled | " + " | ".join(domains) + " |",
           "|---|---|---|" + "---|" * len(domains)]
    for row in r["rows"]:
        out.append(f"| {row['teacher']} | {'yes' if row['mirrored'] else 'no'} | {_pct(row['pooled'])} | "
                   + " | ".join(_pct(row["domains"][d]) for d in domains) + " |")
    return out + [""]


def fit_gap_section(path: Path) -> list[str]:
    """Issue 41: each model on its own training faces against validation (benchmarks/fit_gap.py)."""
    r = json.loads(path.read_text())
    domains = list(r["sets"])
    out = ["**Underfit or memorised: training faces against validation** (issue 41; `python benchmarks/fit_gap.py "
           + " ".join(f"--model {n}={m['path']}" if n != m["path"] else f"--model {n}" for n, m in r["models"].items())
           + f"`; {_stamp(r['machine'])}; {r['protocol']}; {r['train_faces']} train faces a domain; "
           "train / validation accuracy, %; a small gap is a model short of capacity, a large one a model "
           "that has memorised its faces)", "",
           "| model | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
    for name, m in r["models"].items():
        cells = []
        for d in domains:
            v = m["domains"][d]
            cells.append(_pct(v["train"]) + ("" if v["val"] is None else f" / {_pct(v['val'])}"))
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out + [""]


def test_time_views_section(path: Path) -> list[str]:
    """Issue 41: more test-time views than the mirror, on validation (benchmarks/test_time_views.py)."""
    r = json.loads(path.read_text())
    domains = list(r["rows"][0]["domains"])
    views = ", ".join(f"{k} ({v['dx']:+.2f}, {v['dy']:+.2f}, x{v['scale']:.2f})" for k, v in r["views"].items())
    out = [f"**More test-time views, on validation data** (issue 41; `python benchmarks/test_time_views.py "
           f"--model {r['model']}`; {_stamp(r['machine'])}; {r['score']}; each view moves the face in the source "
           f"image before the model's own preprocessing, as (horizontal, vertical shift as a fraction of the side, "
           f"scale): {views}; %)", "",
           "| views | passes | pooled | " + " | ".join(domains) + " |", "|---|---|---|" + "---|" * len(domains)]
    for row in r["rows"]:
        out.append(f"| {row['views']} | {row['passes']} | {_pct(row['pooled'])} | "
                   + " | ".join(_pct(row["domains"][d]) for d in domains) + " |")
    return out + [""]
