"""How much of a missed test target is the class prior, and how much the model.

    python benchmarks/prior_tradeoff.py [--model default]

The embedded default carries one prior for every domain: per-class logit offsets fitted on the
mean of the selection domains' validation accuracy (the exporter's ``fit_domain_prior``). The
test sets do not share one class mix: FER2013Test under FER+ majority is a third neutral and a
quarter happiness, AffectNet96 ``test_`` is nearly balanced. So a target on one set may be out
of reach of the model, or only of its prior. This script tells the two apart:

- ``domain_priors``: for each selection domain, offsets fitted on that domain's validation part
  alone (same greedy fit, no recall floor), added to the package's log-probabilities, and every
  test set scored, so "FER+'s own prior" shows what FER2013Test would give and what the other
  sets would pay;
- ``curve``: the offsets moved from the shipped ones (t = 0) to FER+'s (t = 1), FER2013Test
  and AffectNet96 accuracy at each step (plotted against the two targets);
- ``test_set_bound``: offsets fitted on each test set itself (greedy from each prior above and
  from the maximum-likelihood offsets, the best kept). Not a model and nothing is chosen with
  it: it estimates the most any prior gives that set, so a target well above it needs a better
  model, not another prior.

Test faces are cut as ``domains.py`` cuts them (KDEF through YuNet + alignment, a photo without a
face scored wrong). Writes benchmarks/results/prior_tradeoff.json and prior_tradeoff.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from motivnet_edge.labels import softmax
from common import ROOT, SHARED, write_result  # noqa: E402  (benchmarks/ is the script folder)

#: Test sets shown on the curve, with the issue's targets (accuracy).
CURVE_SETS = {"ferplus_majority": 0.82, "affectnet96": 0.57}


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, 1e-12, None))


def _scores(bias: np.ndarray, scored: dict, labels) -> dict:
    """Accuracy and UAR of every test set with ``bias`` added to the log-probabilities."""
    from motivnet_distill.evaluate import evaluate_probs

    out = {}
    for name, (faces, logp, missed) in scored.items():
        # Back to probabilities before the remapping: a class a set lacks is filled with 0, which must
        # lose to every real score (a log-probability of 0 would win).
        m = evaluate_probs(labels, softmax(logp + bias), faces, unanswered=missed)
        out[name] = {"accuracy": round(m.accuracy, 4), "uar": round(m.uar, 4)}
    return out


def _ml_offsets(logp: np.ndarray, hard: np.ndarray, k: int, iters: int = 100) -> np.ndarray:
    """Offsets under which the mean predicted distribution equals the label frequencies (the
    maximum-likelihood prior shift, Saerens et al. 2002, with the labels known)."""
    freq = np.maximum(np.bincount(hard, minlength=k) / len(hard), 1e-6)
    bias = np.zeros(k)
    for _ in range(iters):
        bias += np.log(freq) - np.log(softmax(logp + bias).mean(0))
    return bias


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="a package ('default': the embedded model)")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prior_tradeoff.json")
    args = ap.parse_args()

    from motivnet_edge.datasets.domains import crops_for, shared_yunet, test_sets
    from motivnet_distill.evaluate import model_preprocessing, model_probs
    from motivnet_distill.mixture import validation_sets
    from motivnet_distill.prior_correction import fit_domain_prior
    from motivnet_edge.detectors import YuNetDetector
    from motivnet_edge.recognizer import DEFAULT_MODEL
    from motivnet_edge.machine import machine_info

    model = str(DEFAULT_MODEL if args.model == "default" else args.model)
    yunet = shared_yunet(args.shared)
    if not yunet.is_file():
        raise SystemExit(f"{yunet} not found: the test and validation faces are read from ../shared")
    t0 = time.time()
    detector, pp = YuNetDetector(yunet), model_preprocessing(model)

    val = {}
    for name, faces in validation_sets(args.shared, pp, detector).items():
        labels, probs = model_probs(model, faces, backend="onnxruntime", precision="fp32")
        if tuple(faces.labels) != tuple(labels):
            raise SystemExit(f"{name}: validation labels {faces.labels} are not the model's {labels}")
        val[name] = (_log(probs), faces.hard)
    scored = {}
    for name, ts in test_sets(args.shared, detector).items():
        faces = crops_for(ts, pp)
        labels, probs = model_probs(model, faces, backend="onnxruntime", precision="fp32")
        if tuple(faces.labels) != tuple(labels):
            raise SystemExit(f"{name}: test labels {faces.labels} are not the model's {labels}")
        missed = np.array([d is None for d in ts.detections]) if ts.detections is not None else None
        scored[name] = (faces, _log(probs), missed)

    zero = np.zeros(len(labels))
    domain_priors = {"shipped": {"bias": zero.tolist(), "test": _scores(zero, scored, labels)}}
    for name, sets in val.items():
        fit = fit_domain_prior({name: sets}, labels, floor=0.0)
        bias = np.array(fit["bias"])
        domain_priors[name] = {"bias": fit["bias"], "validation": fit["validation"]["corrected"]["accuracy"],
                               "test": _scores(bias, scored, labels)}
    fer = np.array(domain_priors["ferplus"]["bias"])
    curve = []
    for t in np.linspace(0, 1, 11):
        test = _scores(t * fer, scored, labels)
        curve.append({"t": round(t, 2), **{s: test[s]["accuracy"] for s in CURVE_SETS}})
    bound = {}
    for name, (faces, logp, missed) in scored.items():
        keep = faces.hard >= 0 if missed is None else (faces.hard >= 0) & ~missed
        data = {name: (logp[keep], faces.hard[keep])}
        # Accuracy is a step function of the offsets: the greedy walk starts from every prior above
        # and from the maximum-likelihood offsets, and the best end point is kept.
        starts = [np.array(row["bias"]) for row in domain_priors.values()] + [_ml_offsets(*data[name], len(labels))]
        best = max(fit_domain_prior(data, labels, floor=0.0, start=b)["validation"]["corrected"]["accuracy"][name]
                   for b in starts)
        bound[name] = round(best * keep.sum() / max(1, (faces.hard >= 0).sum()), 4)  # misses stay wrong

    _plot(curve, domain_priors, bound, args.out.with_suffix(".png"))
    write_result(args.out, {
        "machine": machine_info(), "seconds": round(time.time() - t0, 1), "model": args.model, "labels": list(labels),
        "method": "per-class offsets on the package's log-probabilities, fitted greedily (fit_domain_prior, "
                  "steps of 0.05, no recall floor) on one validation part at a time",
        "domain_priors": domain_priors, "curve": curve, "targets": CURVE_SETS, "test_set_bound": bound})
    for name, row in domain_priors.items():
        print(f"{name:18s} " + "  ".join(f"{s} {v['accuracy']:.1%}" for s, v in row["test"].items()))
    print("bound (prior fitted on the test set itself): "
          + "  ".join(f"{s} {v:.1%}" for s, v in bound.items()))
    print(f"wrote {args.out}")


def _plot(curve: list[dict], priors: dict, bound: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (xs, x_target), (ys, y_target) = ((s, CURVE_SETS[s]) for s in ("affectnet96", "ferplus_majority"))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([100 * c[xs] for c in curve], [100 * c[ys] for c in curve], "o-", ms=3,
            label="shipped prior (t=0) to FER+'s (t=1)")
    for name, row in priors.items():
        ax.annotate(name, (100 * row["test"][xs]["accuracy"], 100 * row["test"][ys]["accuracy"]), fontsize=7)
        ax.plot(100 * row["test"][xs]["accuracy"], 100 * row["test"][ys]["accuracy"], "k.", ms=4)
    ax.axvline(100 * x_target, color="gray", ls="--", lw=0.8)
    ax.axhline(100 * y_target, color="gray", ls="--", lw=0.8)
    if ys in bound:
        ax.axhline(100 * bound[ys], color="tab:red", ls=":", lw=1, label="FER2013Test, prior fitted on itself")
    ax.set_xlabel("AffectNet96 test_ accuracy, %")
    ax.set_ylabel("FER2013Test (FER+ majority) accuracy, %")
    ax.set_title("Class priors against the two targets (dashed)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


if __name__ == "__main__":
    main()
