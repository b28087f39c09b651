"""RESULTS.md sections for accuracy across domains: the scoreboard, what a class prior buys, the
Pareto of accuracy against latency, and robustness to poorer captures.

Each renderer reads one results file of benchmarks/results/ and returns Markdown lines;
``report.py`` assembles them. Nothing here is typed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import pct as _pct, stamp as _stamp  # noqa: E402  (benchmarks/ is the script folder)
from motivnet_edge.datasets.domains import SCOREBOARD

#: Image links in RESULTS.md are relative to docs/.
IMG = "../benchmarks/results/"


#: Scoreboard columns: (key in domains.json, header).
DOMAIN_COLUMNS = tuple((s.key, s.title) for s in SCOREBOARD)


#: Scoreboards other than the main one (domains.py --out FILE), by file name: what their rows compare.
TITLES = {
    "domain_ablations.json": "**Ablations across domains** (run folders scored as trained: torch forward, no prior "
                             "correction; each row a 4-epoch continuation of the FER-era default unless named otherwise; ",
    "fer_share.json": "**FER+'s share of training** (the default, one more round of its own recipe (rd2), the same "
                      "round with FER+ drawn twice as often (`distill --domain-scale ferplus=2`: 50 instead of 33.5 % "
                      "of each epoch) and the mean of those two rounds' weights (`python -m motivnet_distill.students.soup`), "
                      "each packaged with its prior correction fitted on validation; ",
}


def domains_section(path: Path) -> list[str]:
    """The cross-domain scoreboard (benchmarks/domains.py): every test set, every model."""
    r = json.loads(path.read_text())
    cols = [(k, h) for k, h in DOMAIN_COLUMNS if k in r["sets"]]
    title = TITLES.get(path.name, "**Cross-domain scoreboard** (")
    out = [f"{title}`python benchmarks/domains.py`, {_stamp(r['machine'])}; accuracy / "
           "mean per-class recall (UAR), %; " + r["protocol"] + "; cross-domain = mean accuracy over "
           + ", ".join(r["cross_domain_sets"]) + ")", "",
           "| model | " + " | ".join(f"{h} (n={r['sets'][k]['n']})" for k, h in cols) + " | cross-domain |",
           "|---|" + "---|" * (len(cols) + 1)]
    for name, m in r["models"].items():
        out.append(f"| {name}{' (row of ' + m['kept_from'] + ')' if m.get('kept_from') else ''} | "
                   + " | ".join(f"{_pct(m[k]['accuracy'])} / {_pct(m[k]['uar'])}" if k in m else "" for k, _ in cols)
                   + f" | {_pct(m['cross_domain_mean'])} |")
    first = next(iter(r["models"]))
    out += ["", f"Per-class recall of {first} (%):", ""]
    for k, h in cols:
        rec = r["models"][first][k]["per_class_recall"]
        out.append(f"- {h}: " + ", ".join(f"{c} {_pct(v)}" for c, v in rec.items()))
    misses = {k: r["sets"][k]["misses"] for k, _ in cols if r["sets"][k].get("misses")}
    if misses:
        out.append("- YuNet found no face in " + ", ".join(f"{v} {k} photos" for k, v in misses.items())
                   + " (scored wrong for every model)")
    poses = {n: m["kdef"]["per_pose_accuracy"] for n, m in r["models"].items() if m.get("kdef", {}).get("per_pose_accuracy")}
    if poses:
        out += ["", "KDEF people 01-07 accuracy by camera angle (%):", ""]
        out += [f"- {n}: " + ", ".join(f"{p} {_pct(v)}" for p, v in acc.items()) for n, acc in poses.items()]
    trained = [(n, m["training"]) for n, m in r["models"].items() if m.get("training")]
    if trained:
        out += ["", "How each run was trained (its run folder's commands.txt and log.jsonl):", ""]
        for n, t in trained:
            out.append(f"- {n}: `" + "` then `".join(t["commands"]) + f"`; {t['device']}, {t['epochs']} epochs "
                       f"(best {t['best_epoch']}), {t['minutes']:.0f} min; validation mean "
                       f"{_pct(t['validation'].get('val_acc'))} %")
    plots = sorted((path.parent / "domains").glob(f"confusion_{first}_*.png")) if (path.parent / "domains").is_dir() else []
    if plots:
        out += ["", "Confusion matrices of " + first + ": " + ", ".join(
            f"[{p.stem.removeprefix(f'confusion_{first}_')}]({IMG}domains/{p.name})" for p in plots)]
    return out + [""]


def prior_section(path: Path) -> list[str]:
    """One model under each domain's class prior (benchmarks/prior_tradeoff.py): prior or model?"""
    r = json.loads(path.read_text())
    names = dict(DOMAIN_COLUMNS)
    sets = [k for k, _ in DOMAIN_COLUMNS if k in r["domain_priors"]["shipped"]["test"]]
    out = [f"**What a class prior can buy** (`python benchmarks/prior_tradeoff.py`, model {r['model']}, "
           f"{_stamp(r['machine'])}; {r['method']}; test accuracy, %; the last row fits the offsets on each test "
           "set itself: not a model and nothing is chosen with it, an estimate of the most any prior gives that "
           f"set; [curve]({IMG}{path.with_suffix('.png').name}))", "",
           "| prior | " + " | ".join(names[k] for k in sets) + " |", "|---|" + "---|" * len(sets)]
    for name, row in r["domain_priors"].items():
        label = "shipped (all validation domains)" if name == "shipped" else f"fitted on {name} validation only"
        out.append(f"| {label} | " + " | ".join(_pct(row["test"][k]["accuracy"]) for k in sets) + " |")
    out.append("| fitted on the test set itself | " + " | ".join(_pct(r["test_set_bound"].get(k)) for k in sets) + " |")
    return out + [""]


def pareto_section(board: dict, ratio: dict) -> list[str]:
    """Cross-domain mean against classify latency (scoreboard x interleaved timing): the Pareto."""
    lat = {x["model"]: x for x in ratio["rows"] if x.get("spin", True) is False}
    rows = sorted(((lat[n]["p50_ms"], n, m["cross_domain_mean"]) for n, m in board["models"].items() if n in lat))
    if len(rows) < 2:
        return []
    out = ["**Pareto: cross-domain mean against classify latency** (`benchmarks/domains.py` x "
           f"`benchmarks/latency_ratio.py`, {ratio['settings']['threads']} threads, batch 1, ONNX Runtime fp32, "
           f"workers not spinning, {ratio['machine']['cpu']}; a model is on the front when no faster one scores "
           "higher)", "", "| model | classify p50 ms | x mini-Xception | cross-domain mean % | on the front |",
           "|---|---|---|---|---|"]
    best = -1.0
    for p50, name, score in rows:
        front = score > best
        best = max(best, score)
        out.append(f"| {name} | {p50:.3f} | {lat[name]['ratio_to_xception_mini']:.2f} | {_pct(score)} | "
                   f"{'yes' if front else ''} |")
    return out + [""]


def robustness_section(path: Path) -> list[str]:
    """Accuracy on test crops made smaller, blurred and JPEG-compressed (benchmarks/robustness.py)."""
    r = json.loads(path.read_text())
    conds = list(r["conditions"])
    names = dict(DOMAIN_COLUMNS)
    out = [f"**Poorer captures** (`python benchmarks/robustness.py`, {_stamp(r['machine'])}; {r['protocol']}; "
           + "; ".join(f"{c}: {d}" for c, d in r["conditions"].items()) + "; accuracy, %, mean over "
           + ", ".join(names[s] for s in r["mean_sets"]) + "; per set below)", "",
           "| model | " + " | ".join(conds) + " | worst drop, points |", "|---|" + "---|" * (len(conds) + 1)]
    for name, m in r["models"].items():
        out.append(f"| {name} | " + " | ".join(_pct(m[c]["mean"]) for c in conds)
                   + f" | {100 * m['worst_drop']:.1f} |")
    out += ["", "Per set (clean / " + " / ".join(conds[1:]) + ", %):", ""]
    for name, m in r["models"].items():
        out.append(f"- {name}: " + "; ".join(f"{names[s]} " + " / ".join(_pct(m[c][s]) for c in conds)
                                             for s in r["sets"]))
    return out + [""]
