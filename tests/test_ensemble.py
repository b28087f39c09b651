"""Ensembles: students of any shape as one graph, the mean of their probabilities by label name."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="ensembles need the distill extra")

from motivnet_distill.students.ensemble import combine, write_ensemble  # noqa: E402
from motivnet_distill.students.io import load_student, save_student  # noqa: E402
from motivnet_distill.students.model import create_student  # noqa: E402
from motivnet_edge.errors import MotivnetError  # noqa: E402
from motivnet_edge.preprocess import Preprocessing  # noqa: E402

LABELS = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
TINY_RESNET = dict(arch="resnet", widths=(8, 16), stage_blocks=(1, 1), stem_stride=2)


def _run(folder, seed, labels=LABELS, pp=None, config=True, **shape):
    torch.manual_seed(seed)
    model = create_student("vit_hybrid_femto", labels=labels, **shape).eval()
    folder.mkdir(parents=True)
    save_student(folder / "best.pt", model, model.cfg, pp or Preprocessing(), provenance={"teacher": f"t{seed}"},
                 license={"faces": "test"})
    if config:
        (folder / "config.json").write_text('{"train": {"epochs": 3}, "provenance": {"domains": {}}}')
    return folder, model


def test_an_ensemble_is_the_mean_probability_by_label_name_and_loads_as_a_run(tmp_path):
    a, ma = _run(tmp_path / "a", 0)
    # The second member is another family and declares its labels in reverse order.
    b, mb = _run(tmp_path / "b", 1, labels=LABELS[::-1], **TINY_RESNET)
    out = write_ensemble([a, b], tmp_path / "ens", command="python -m motivnet_distill.students.ensemble ...")
    ens = load_student(out)
    assert ens.labels == LABELS and ens.model.cfg.arch == "ensemble"
    x = torch.randn(5, 1, 48, 48)
    with torch.no_grad():
        pa = torch.softmax(ma(x), -1)
        pb = torch.softmax(mb(x), -1).flip(-1)  # reversed labels back into LABELS' order
        got = ens.model(x)
    assert torch.allclose(got.exp(), (pa + pb) / 2, atol=1e-5)
    assert not torch.allclose(got.exp(), pa, atol=1e-3)
    assert [m["run"] for m in ens.provenance["ensemble"]["members"]] == ["a", "b"]
    assert ens.provenance["teacher"] == "t0 + t1" and ens.license == {"faces": "test"}
    assert "ensemble of 2 students" in ens.provenance["description"]
    assert "members a (distilled from t0); b (distilled from t1), trained on" in ens.provenance["description"]
    assert (out / "log.jsonl").read_text() == "" and "ensemble" in (out / "commands.txt").read_text()


def test_an_ensemble_exports_to_one_onnx_graph_that_onnx_runtime_agrees_with(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from motivnet_export.exporter import export

    a, _ = _run(tmp_path / "a", 0)
    b, _ = _run(tmp_path / "b", 1, **TINY_RESNET)
    model, _, _ = combine([a, b])
    pkg = export(write_ensemble([a, b], tmp_path / "ens"), tmp_path / "pkg", formats=("onnx",), latency=False)
    x = np.random.default_rng(0).normal(size=(3, 1, 48, 48)).astype(np.float32)
    session = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.isfinite(got).all()


def test_a_mirrored_ensemble_averages_both_views_and_exports_as_one_graph(tmp_path):
    """--mirror: the mean over every member and both views; a face and its mirror image then
    score alike, the setting survives the run folder, and the ONNX graph computes the same."""
    ort = pytest.importorskip("onnxruntime")
    from motivnet_export.exporter import export

    a, ma = _run(tmp_path / "a", 0)
    b, mb = _run(tmp_path / "b", 1, **TINY_RESNET)
    out = write_ensemble([a, b], tmp_path / "ens", mirror=True)
    ens = load_student(out)
    assert ens.model.cfg.mirror and "mirror image" in ens.provenance["description"]
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        views = [torch.softmax(m(v), -1) for m in (ma, mb) for v in (x, x.flip(-1))]
        got = ens.model(x)
        assert torch.allclose(got.exp(), torch.stack(views).mean(0), atol=1e-5)
        assert torch.allclose(got, ens.model(x.flip(-1)), atol=1e-5)  # a view-symmetric model
        plain = combine([a, b])[0](x)
    assert not torch.allclose(got, plain, atol=1e-3)
    pkg = export(out, tmp_path / "pkg", formats=("onnx",), latency=False)
    session = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, ens.model(x).numpy(), atol=1e-4)
    # The package says so, and the runtime then never reads the mirror image a second time.
    from motivnet_edge.package import load_package

    assert load_package(pkg).reads_mirror
    assert not load_package(export(write_ensemble([a, b], tmp_path / "ens_plain"), tmp_path / "pkg_plain",
                                   formats=("onnx",), latency=False)).reads_mirror


def test_int8_rungs_that_leave_a_resnet_member_fp32_are_not_tried(tmp_path):
    """An ensemble with a resnet member: a rung keeping most of the weights fp32 (here: every
    convolution) would write an fp32 graph under an INT8 name, so the ladder skips it, in ONNX
    and OpenVINO alike."""
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    from motivnet_export.exporter import export
    from motivnet_export.nncf_ptq import MAX_FP32_WEIGHTS, _convs, _rungs, _weights

    a, _ = _run(tmp_path / "a", 0)
    b, _ = _run(tmp_path / "b", 1, arch="resnet", widths=(32, 64, 128), stage_blocks=(1, 1, 1), stem_stride=2)
    pkg = export(write_ensemble([a, b], tmp_path / "ens"), tmp_path / "pkg", formats=("onnx",), latency=False)
    for model in (onnx.load(str(pkg / "model.onnx")), ov.Core().read_model(str(pkg / "model.onnx"))):
        convs = _convs(model)
        sizes, total = _weights(model)
        assert set(sizes) == set(convs) and sum(sizes.values()) > MAX_FP32_WEIGHTS * total
        rungs = _rungs(model, convs)
        assert rungs and all(sum(sizes[c] for c in s.kept(convs)) <= MAX_FP32_WEIGHTS * total for s in rungs)
        assert all(s.fp32_convs is not None for s in rungs), [s.describe(convs) for s in rungs]


@pytest.mark.parametrize("case, match", [
    ("one run", "at least two members"),
    ("preprocessing", "other preprocessing"),
    ("labels", "has no output for"),
    ("no labels", "label order"),
    ("nested", "an ensemble already"),
    ("no run folder", "no member is a distill run folder"),
    ("missing", "does not exist"),
])
def test_ensemble_misuse_is_refused_with_the_fix(tmp_path, case, match):
    a, _ = _run(tmp_path / "a", 0)
    runs = [a, _run(tmp_path / "b", 1)[0]]
    if case == "one run":
        runs = [a]
    elif case == "preprocessing":
        runs = [a, _run(tmp_path / "c", 2, pp=Preprocessing(input_size=(64, 64)), img_size=(64, 64))[0]]
    elif case == "labels":
        runs = [_run(tmp_path / "c", 2, labels=LABELS[:6] + ("contempt",))[0], a]
    elif case == "no labels":
        runs = [_run(tmp_path / "c", 2, labels=())[0], a]
    elif case == "nested":
        runs = [a, write_ensemble(runs, tmp_path / "ens")]
    elif case == "no run folder":
        runs = [_run(tmp_path / "c", 2, config=False)[0], _run(tmp_path / "d", 3, config=False)[0]]
    elif case == "missing":
        runs = [a, tmp_path / "nowhere"]
    with pytest.raises(MotivnetError, match=match):  # EnsembleError, or the checkpoint reader's error
        write_ensemble(runs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ensemble_cli_refuses_an_existing_run_with_exit_code_2(tmp_path):
    a, _ = _run(tmp_path / "a", 0)
    b, _ = _run(tmp_path / "b", 1)
    cmd = [sys.executable, "-m", "motivnet_distill.students.ensemble", "--run", str(a), "--run", str(b), "--out", str(a)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already holds a run" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(cmd[:-1] + [str(tmp_path / "ens")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert load_student(tmp_path / "ens").labels == LABELS


def test_a_prior_correction_folds_into_the_ensembles_logit_bias(tmp_path):
    from motivnet_distill.prior_correction import apply_bias

    a, _ = _run(tmp_path / "a", 0)
    b, _ = _run(tmp_path / "b", 1, **TINY_RESNET)
    model, _, _ = combine([a, b])
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        before = model(x)
        apply_bias(model, [0, 0, 0, 0, 1.5, 0.5, 0])
        after = model(x)
    assert torch.allclose(after - before, torch.tensor([0, 0, 0, 0, 1.5, 0.5, 0.0]).expand(2, 7), atol=1e-6)
