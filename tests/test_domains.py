"""How the face domains are split and mixed: by file name and person, never by a score."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch", reason="the domain readers live in the distill extra")

from conftest import SHARED  # noqa: E402
from motivnet_edge.datasets.readers import DataError  # noqa: E402
from motivnet_edge.datasets.domains import DOMAINS, domain_of, faces_licence, kdef_part, kdef_pose, prefix_part  # noqa: E402
from motivnet_distill.mixture import MixRecipe, sample_weights  # noqa: E402


def test_kdef_people_01_07_are_test_08_12_validation_and_the_rest_train():
    assert kdef_part("anger/AF01ANS.JPG") == "test" and kdef_part("fear/BM07AFHL.JPG") == "test"
    assert kdef_part("anger/AM08ANFR.JPG") == "val" and kdef_part("anger/BF12ANS.JPG") == "val"
    assert kdef_part("sadness/AF13SAS.JPG") == "train" and kdef_part("sadness/BM35SAFL.JPG") == "train"
    with pytest.raises(DataError, match="not a KDEF file name"):
        kdef_part("anger/img_0001.jpg")


def test_kdef_pose_reads_the_camera_angle_and_ignores_variant_tags():
    assert [kdef_pose(f) for f in ("AF01ANFL.JPG", "x/BM20HAHR.jpg", "AF01AFS.JPG", "AF01DIFR.JPG#aligned")] == \
        ["FL", "HR", "S", "FR"]
    assert kdef_pose("AF01ANXX.JPG") is None and kdef_pose("face.png") is None


def test_every_domain_names_its_faces_terms_and_an_unknown_folder_is_named_as_unknown():
    assert all(d.licence != "unknown" for d in DOMAINS.values())
    terms = faces_licence(["ferplus", "expw", "ferplus"])
    assert "FER2013 images: research use only" in terms and "ExpW: non-commercial research use only" in terms
    assert terms.count("FER2013") == 1
    assert "/data/mine: unknown terms" in faces_licence(["/data/mine"])
    assert domain_of("../shared/data/kdef") == "kdef" and domain_of("/tmp/x/fer/FER2013Valid") == "ferplus"
    assert domain_of("/home/me/photos") is None


def test_prefix_parts_and_missing_prefix():
    assert [prefix_part(f) for f in ("anger/train_1.png", "anger/valid_2.png", "anger/val_3.png", "x/test_4.png")] == \
        ["train", "val", "val", "test"]
    with pytest.raises(DataError, match="no train_/valid_/val_/test_ prefix"):
        prefix_part("anger/0001.png")


def test_sampler_shares_follow_the_recipe():
    # Domain a: 900 faces (800 of class 0, 100 of class 1); domain b: 100 faces of class 0.
    domain = np.array(["a"] * 900 + ["b"] * 100)
    hard = np.array([0] * 800 + [1] * 100 + [0] * 100)
    w = sample_weights(domain, hard, MixRecipe(domains=("a", "b"), domain_power=0.5, class_power=0.0, domain_scale={}))
    assert w.sum() == pytest.approx(1.0)
    assert w[domain == "a"].sum() == pytest.approx(30 / 40) and w[domain == "b"].sum() == pytest.approx(10 / 40)
    # class_power 0: both classes of a equally often, however many faces each has.
    assert w[:800].sum() == pytest.approx(w[800:900].sum())
    natural = sample_weights(domain, hard, MixRecipe(domains=("a", "b"), domain_power=1.0, class_power=1.0, domain_scale={}))
    assert np.allclose(natural, 1 / 1000)  # as stored: every face equally often


def test_one_domain_can_keep_its_stored_class_mix():
    domain = np.array(["ferplus"] * 100 + ["kdef"] * 100)
    hard = np.array([0] * 90 + [1] * 10 + [0] * 50 + [1] * 50)
    recipe = MixRecipe(domains=("ferplus", "kdef"), class_power=0.0, domain_scale={},
                       domain_class_power={"ferplus": 1.0})
    w = sample_weights(domain, hard, recipe)
    fer = w[:100] / w[:100].sum()
    assert fer[:90].sum() == pytest.approx(0.9)  # FER+ as stored
    assert w[100:150].sum() == pytest.approx(w[150:].sum())  # KDEF still balanced
    assert recipe.to_dict()["domain_class_power"] == {"ferplus": 1.0}


@pytest.mark.parametrize("args, message", [
    (["--data", ".", "--domain-class-power", "ferplus=1"], "apply to --domains (or --pack) training"),
    (["--domains", ".", "--domain-class-power", "imagenet=1"], "DOMAIN=POWER"),
    (["--domains", ".", "--domain-class-power", "ferplus=2"], "DOMAIN=POWER"),
    (["--domains", ".", "--domain-class-power", "ferplus"], "DOMAIN=POWER"),
    (["--domains", ".", "--no-balance", "--domain-class-power", "ferplus=1"], "--no-balance draws"),
    (["--data", ".", "--domain-scale", "ferplus=2"], "apply to --domains (or --pack) training"),
    (["--domains", ".", "--domain-scale", "imagenet=2"], "DOMAIN=FACTOR"),
    (["--domains", ".", "--domain-scale", "ferplus=-1"], "DOMAIN=FACTOR"),
    (["--domains", ".", "--domain-scale", "ferplus=nan"], "DOMAIN=FACTOR"),
    (["--domains", ".", "--no-balance", "--domain-scale", "ferplus=2"], "--no-balance draws"),
    ([], "pass one of --data"),
    (["--data", ".", "--domains", "."], "pass one of --data"),
])
def test_domain_class_power_misuse_is_a_usage_error(tmp_path, args, message):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "distill", "--out", str(tmp_path / "run"), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--without", "ferplus,facial_expressions,kdef,affectnet96,sfew,expw"], "not all"),
    (["--without", "imagenet"], "name some of"),
    ([], "with the YuNet model in models/yunet"),
    (["--size", "4"], "Invalid value for '--size'"),
])
def test_pack_misuse_is_a_usage_error(tmp_path, args, message):
    import subprocess
    import sys

    out = tmp_path / "p.npz"
    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "pack", "--domains", str(tmp_path), "--out", str(out),
                        *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_robustness_conditions_are_fixed_and_keep_the_face_format():
    from conftest import load_benchmark

    rb = load_benchmark("robustness")
    face = np.zeros((96, 80, 3), np.uint8)
    face[20:60, 20:60] = 220
    assert rb.smaller(face).shape == (58, 48, 3)  # 60 % of each side
    for name, f in rb.CONDITIONS.items():
        if f is None:
            continue
        a, b = f(face), f(face)
        assert a.dtype == np.uint8 and a.ndim == 3 and np.array_equal(a, b), name  # no randomness
    blurred = rb.blur(face)
    assert blurred.shape == face.shape and 0 < blurred[40, 19, 0] < 220  # the edge is softened, not moved
    gray = np.full((48, 48), 128, np.uint8)
    assert rb.jpeg30(gray).shape == (48, 48)


def test_each_kind_of_cpu_keeps_its_own_timings():
    from conftest import load_benchmark

    common = load_benchmark("common")
    results = common.ROOT / "benchmarks" / "results"
    assert common.per_cpu_result("frame_pipeline.json", "avx512") == results / "frame_pipeline.json"
    assert common.per_cpu_result("frame_pipeline.json", "avx2") == results / "avx2" / "frame_pipeline.json"
    assert common.cpu_class() in common.CPU_CLASSES


def test_labels_are_compared_face_by_face_across_cpus(tmp_path):
    import json

    from conftest import load_benchmark

    isa = load_benchmark("isa_agreement")
    path_of = lambda name, kind: tmp_path / kind / name  # noqa: E731
    machine = {"cpu": "X", "flags": ["avx2"], "date": "2026-11-30T00:00:00"}
    for kind, sha, top1 in (("avx512", "a", "0123"), ("baseline", "b", "0123")):
        path_of("", kind).mkdir()
        path_of("isa_agreement.json", kind).write_text(json.dumps(
            {"model_sha256": sha, "machine": machine, "runs": {"as_shipped": {"ran": "onnxruntime int8"}},
             "as_shipped_top1": {"kdef": top1, "sfew": "01"}}))
    mine = {"kdef": "0153", "sfew": "012"}  # sfew's length differs: a different cut, not compared
    cross = isa.across_cpus("a", mine, tmp_path / "avx2" / "isa_agreement.json", path_of=path_of)
    assert list(cross) == ["avx512"]  # the baseline file holds another model
    assert cross["avx512"]["agreement"] == {"kdef": 0.75} and cross["avx512"]["ran"] == "onnxruntime int8"
    # a CPU's own file is never its comparison
    assert isa.across_cpus("a", mine, tmp_path / "avx512" / "isa_agreement.json", path_of=path_of) == {}


def test_domain_scale_multiplies_one_domains_share():
    domain = np.array(["ferplus"] * 400 + ["kdef"] * 100)
    hard = np.zeros(500, int)
    even = sample_weights(domain, hard, MixRecipe(domains=("ferplus", "kdef"), domain_scale={}))
    assert even[:400].sum() == pytest.approx(20 / 30)  # sqrt(400) : sqrt(100)
    doubled = sample_weights(domain, hard, MixRecipe(domains=("ferplus", "kdef"), domain_scale={"ferplus": 2.0}))
    assert doubled[:400].sum() == pytest.approx(40 / 50)


def test_a_resume_must_draw_the_same_domain_mix(tmp_path):
    from dataclasses import replace

    from distill_helpers import synthetic, tiny_cfg
    from motivnet_distill.train import TrainConfigError, train
    from motivnet_edge.preprocess import Preprocessing

    run, pp, cfg = tmp_path / "run", Preprocessing(), tiny_cfg()
    mix = MixRecipe(domain_scale={"facial_expressions": 0.5}).to_dict()

    def extra(m):
        return {"provenance": {"domains": {"mix": m}}}

    train(run, synthetic(32), synthetic(16, seed=1), pp, cfg, progress=False, extra=extra(mix))
    scaled = {**mix, "domain_scale": {"facial_expressions": 0.5, "ferplus": 2.0}}
    with pytest.raises(TrainConfigError, match=r"domain mix: domain_scale run .*'ferplus': 2.0.*--domain-scale"):
        train(run, synthetic(32), synthetic(16, seed=1), pp, replace(cfg, epochs=2), resume=True, progress=False,
              extra=extra(scaled))
    assert len((run / "log.jsonl").read_text().splitlines()) == 1
    train(run, synthetic(32), synthetic(16, seed=1), pp, replace(cfg, epochs=2), resume=True, progress=False,
          extra=extra(mix))
    assert len((run / "log.jsonl").read_text().splitlines()) == 2


def test_noisy_rows_give_up_their_draws_to_clean_rows_of_their_class():
    """Issue 45: a row under a meta.csv bar is drawn meta_weight times as often as a clean one;
    its class keeps its share, so filtering ExpW does not shift its class mix."""
    domain = np.array(["a"] * 6 + ["b"] * 4)
    hard = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 1])
    recipe = MixRecipe(domains=("a", "b"), domain_scale={})
    plain = sample_weights(domain, hard, recipe)
    noisy = np.array([True, False, False, False, False, False, False, False, False, False])
    for weight in (0.0, 0.3):
        w = sample_weights(domain, hard, recipe, np.where(noisy, weight, 1.0))
        assert w[0] == pytest.approx(weight * w[1])
        assert w[:3].sum() == pytest.approx(plain[:3].sum())  # class 0 of domain a keeps its share
        np.testing.assert_allclose(w[3:], plain[3:])
    with pytest.raises(ValueError, match="no training row"):
        sample_weights(domain, hard, MixRecipe(domains=("a", "b"), domain_scale={"a": 0, "b": 0}))


def test_expw_meta_bars_mark_small_or_unsure_faces(tmp_path):
    from motivnet_edge.datasets.domains import read_part
    from motivnet_distill.mixture import noisy_rows

    if not (SHARED / "data" / "expw" / "meta.csv").is_file():
        pytest.skip(f"ExpW is not in {SHARED}/data/expw (../shared)")
    faces = read_part(SHARED, "expw", "train")
    files = faces.files + [f + "#aligned" for f in faces.files]
    recipe = MixRecipe(meta_min={"expw": {"detector_confidence": 30, "box_side_px": 64}})
    noisy = noisy_rows(SHARED, "expw", files, recipe)
    assert 0.1 < noisy.mean() < 0.5 and (noisy[:len(faces)] == noisy[len(faces):]).all()

    with pytest.raises(DataError, match="no column 'sharpness'"):
        noisy_rows(SHARED, "expw", files, MixRecipe(meta_min={"expw": {"sharpness": 1}}))


@pytest.mark.parametrize("item", ["expw=30", "expw.detector_confidence", "nowhere.size=3", "expw.box_side_px=big"])
def test_meta_min_misuse_is_a_usage_error(tmp_path, item):
    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "distill", "--out", str(tmp_path / "run"),
                        "--domains", str(tmp_path), "--meta-min", item], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "DOMAIN.COLUMN=NUMBER" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()
