"""Prior correction: fitted on validation logits, folded into the head, never worse on its own objective."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="prior correction runs on torch students (distill extra)")

from motivnet_distill.prior_correction import apply_bias, fit_prior_correction  # noqa: E402
from motivnet_edge.datasets.readers import FaceSet  # noqa: E402
from motivnet_distill.students.model import create_student  # noqa: E402
from motivnet_edge.errors import MotivnetError  # noqa: E402
from motivnet_edge.labels import MOTIVNET_LABELS  # noqa: E402


def _neutral_heavy(n=2000, seed=0):
    """Validation faces, half neutral, whose logits carry the training prior on top of the evidence."""
    r = np.random.default_rng(seed)
    prior = np.array([0.5, 0.25, 0.1, 0.06, 0.04, 0.03, 0.02])
    hard = r.choice(7, n, p=prior)
    evidence = np.eye(7)[hard] * 1.2 + r.normal(0, 1.0, (n, 7))
    logits = evidence + 1.5 * np.log(prior)  # an over-confident prior, as a short schedule learns it
    faces = FaceSet([np.zeros((4, 4), np.uint8)] * n, np.eye(7, dtype=np.float32)[hard], hard, MOTIVNET_LABELS,
                    [f"{i}.png" for i in range(n)])
    return logits, faces


def test_fit_lifts_every_class_to_the_floor_at_little_accuracy_cost():
    logits, faces = _neutral_heavy()
    fit = fit_prior_correction(logits, faces, floor=0.4)
    before, after = fit["validation"]["uncorrected"], fit["validation"]["corrected"]
    assert before["min_recall"] < 0.4 <= after["min_recall"]
    assert after["accuracy"] > before["accuracy"] - 0.1 and after["uar"] > before["uar"] + 0.1
    # the rare classes are raised; the frequent one keeps its logit
    assert fit["bias"][0] == 0.0 and max(fit["bias"]) > 0
    # on fresh faces from the same mix the correction still lifts the weakest class
    logits2, faces2 = _neutral_heavy(seed=1)
    pred, raw = (logits2 + np.asarray(fit["bias"])).argmax(1), logits2.argmax(1)
    worst = lambda p: min(np.mean(p[faces2.hard == c] == c) for c in range(7))  # noqa: E731
    assert worst(pred) > worst(raw) + 0.1


def test_rare_classes_without_enough_validation_faces_are_not_fitted():
    logits, faces = _neutral_heavy(300)
    fit = fit_prior_correction(logits, faces)
    for label, n in fit["validation"]["support"].items():
        if n < 10:
            assert fit["bias"][list(faces.labels).index(label)] == 0.0


def test_bias_is_folded_into_the_head():
    model = create_student("vit_pico", embed_dim=32, depth=1, num_heads=2, labels=MOTIVNET_LABELS).eval()
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        before = model(x)
        bias = np.linspace(-1, 1, 7)
        apply_bias(model, bias)
        after = model(x)
    assert torch.allclose(after - before, torch.as_tensor(bias, dtype=after.dtype).expand_as(after), atol=1e-5)
    with pytest.raises(MotivnetError, match="one bias per class"):
        apply_bias(model, [0.0] * 3)


def test_unlabelled_validation_is_refused():
    logits, faces = _neutral_heavy(50)
    faces.hard[:] = -1
    with pytest.raises(MotivnetError, match="labelled validation faces"):
        fit_prior_correction(logits, faces)


def test_domain_prior_raises_the_mean_over_domains_and_keeps_the_floor():
    """Two domains with opposite priors: one offset vector, the best mean, no class under the floor."""
    from motivnet_distill.prior_correction import fit_domain_prior

    rng = np.random.default_rng(0)

    def domain(n, prior):
        hard = rng.choice(3, n, p=prior)
        logits = rng.normal(0, 1.0, (n, 3))
        logits[np.arange(n), hard] += 1.2
        logits[:, 0] -= 0.8  # the model under-calls class 0 everywhere
        return logits, hard

    sets = {"a": domain(3000, [0.6, 0.2, 0.2]), "b": domain(3000, [0.2, 0.4, 0.4])}
    fit = fit_domain_prior(sets, ("x", "y", "z"), floor=0.4)
    v = fit["validation"]
    assert v["corrected"]["mean_accuracy"] > v["uncorrected"]["mean_accuracy"] + 0.02
    assert v["corrected"]["min_recall"] >= 0.4
    assert fit["bias"][0] > 0  # the under-called class is raised


def test_domain_prior_walks_on_from_a_given_start_and_refuses_a_wrong_size():
    """A start is where the greedy walk begins: it never ends below the start's own score."""
    from motivnet_distill.prior_correction import fit_domain_prior

    rng = np.random.default_rng(1)
    hard = rng.choice(3, 2000, p=[0.6, 0.2, 0.2])
    logits = rng.normal(0, 1.0, (2000, 3))
    logits[np.arange(2000), hard] += 1.0
    sets = {"a": (logits, hard)}
    start = np.array([0.0, 1.5, 0.0])  # a poor start: class 1 over-called
    start_acc = float(((logits + start).argmax(1) == hard).mean())
    fit = fit_domain_prior(sets, ("x", "y", "z"), floor=0.0, start=start)
    assert fit["validation"]["corrected"]["mean_accuracy"] > start_acc + 0.05
    assert fit["method"].startswith("from given offsets")
    with pytest.raises(MotivnetError, match="start holds 2 offsets for 3 labels"):
        fit_domain_prior(sets, ("x", "y", "z"), start=[0.0, 1.0])
