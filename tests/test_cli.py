"""The CLI as a user types it: real subprocesses, exit codes, stdout/stderr."""

import json

import cv2
import numpy as np
import pytest

from conftest import cli


@pytest.fixture(scope="module")
def photo(astronaut, tmp_path_factory):
    p = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    cv2.imwrite(str(p), astronaut)
    return p


def test_predict_default_model_prints_box_and_emotion(photo):
    r = cli("predict", photo)
    assert r.returncode == 0, r.stderr
    assert "face at x=" in r.stdout and "%" in r.stdout


def test_predict_json_one_object_per_image(photo, tiny_package, yunet_path, tmp_path):
    d = tmp_path / "imgs" / "sub"
    d.mkdir(parents=True)
    cv2.imwrite(str(d / "b.png"), cv2.imread(str(photo)))
    cv2.imwrite(str(d.parent / "a.png"), np.full((100, 100, 3), 80, np.uint8))
    r = cli("predict", d.parent, "--model", tiny_package, "--detector", "yunet", "--yunet", yunet_path, "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["input"].split("/")[-1] for row in rows] == ["a.png", "b.png"]  # sorted, recursive
    assert rows[0]["faces"] == []
    face = rows[1]["faces"][0]
    assert set(face) >= {"box", "score", "label", "confidence", "scores"} and len(face["box"]) == 4


def _clip(path, astronaut, n):
    """A short MJPG clip of the astronaut drifting 3 px a frame."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (512, 512))
    for i in range(n):
        w.write(np.roll(astronaut, 3 * i, axis=1))
    w.release()
    return path


def test_predict_video_tracks_and_saves(astronaut, tiny_package, yunet_path, tmp_path):
    video = _clip(tmp_path / "clip.avi", astronaut, 6)
    out = tmp_path / "out"
    r = cli("predict", video, "--model", tiny_package, "--detector", "yunet", "--yunet", yunet_path,
            "--json", "--save", out)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["frame"] for row in rows] == list(range(6))
    assert {row["faces"][0]["track_id"] for row in rows} == {0}
    saved = out / "clip.annotated.mp4"
    assert saved.is_file() and cv2.VideoCapture(str(saved)).get(cv2.CAP_PROP_FRAME_COUNT) == 6


def test_save_annotated_image(photo, tiny_package, tmp_path):
    r = cli("predict", photo, "--model", tiny_package, "--detector", "haar", "--save", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(tmp_path / "o" / "astronaut.annotated.png"))
    assert img is not None and img.shape[:2] == cv2.imread(str(photo)).shape[:2]


def test_info_text_and_json(tiny_package):
    r = cli("info", tiny_package)
    assert r.returncode == 0 and "neutral, happiness" in r.stdout and "onnxruntime fp32" in r.stdout
    m = json.loads(cli("info", tiny_package, "--json").stdout)
    assert m["schema_version"] == 1
    default = cli("info")
    assert default.returncode == 0 and "what:" in default.stdout


def test_benchmark_verb_times_every_backend(tiny_package):
    from motivnet_edge.timing import precisions_here
    from motivnet_edge.package import load_package

    # a comma list and a repeated option are the same list option
    r = cli("benchmark", tiny_package, "--threads", "1,2", "--batch", "1", "--batch", "2", "--rounds", "1",
            "--seconds", "0.1", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    want = {(b, p, t, n) for b, p in precisions_here(load_package(tiny_package)) for t in (1, 2) for n in (1, 2)}
    assert {(row["backend"], row["precision"], row["threads"], row["batch"]) for row in rows} == want
    for row in rows:
        lo, hi = row["p50_spread_ms"]
        assert lo <= row["p50_ms"] <= hi and row["p50_ms"] <= row["p99_ms"]
        assert row["throughput_fps"] == pytest.approx(1e3 * row["batch"] / row["p50_ms"], rel=0.05)
    # ONNX Runtime providers (a Jetson's tensorrt/cuda) are timed through the same verb
    cpu = cli("benchmark", tiny_package, "--provider", "cpu", "--threads", "1", "--batch", "1", "--rounds", "1",
              "--seconds", "0.1", "--json")
    assert cpu.returncode == 0, cpu.stderr
    rows = json.loads(cpu.stdout)["rows"]
    assert rows and all(r["backend"] == "onnxruntime" and r["providers"] == ["cpu"]
                        and r["runtime"] == "onnxruntime CPUExecutionProvider" for r in rows)
    cuda = cli("benchmark", tiny_package, "--provider", "cuda", "--rounds", "1", "--seconds", "0.1")
    assert cuda.returncode == 2 and "onnxruntime-gpu" in cuda.stderr and "Traceback" not in cuda.stderr
    bad = cli("benchmark", tiny_package, "--threads", "one")
    assert bad.returncode == 2 and "'one' is not a valid integer" in bad.stderr
    zero = cli("benchmark", tiny_package, "--batch", "0")
    assert zero.returncode == 2 and "0 is not in the range 1<=x<=256" in zero.stderr


def test_save_never_overwrites_when_two_inputs_share_a_name(tiny_package, tmp_path):
    for sub, value in (("a", 0), ("b", 255)):
        (tmp_path / "in" / sub).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "in" / sub / "face.png"), np.full((48, 48, 3), value, np.uint8))
    r = cli("predict", tmp_path / "in", "--model", tiny_package, "--detector", "none", "--save", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    saved = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert saved == ["face-2.annotated.png", "face.annotated.png"]
    assert cv2.imread(str(tmp_path / "o" / "face.annotated.png")).mean() < 100
    assert cv2.imread(str(tmp_path / "o" / "face-2.annotated.png")).mean() > 150


def test_eval_needs_and_takes_an_explicit_mapping(tiny_package, tmp_path):
    for cls in ("happy", "contempt"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "d" / cls / f"{i}.png"), np.full((48, 48), 40 * i, np.uint8))
    r = cli("eval", tiny_package, "--data", tmp_path / "d")
    assert r.returncode == 2 and "drop them with --map contempt=none" in r.stderr and "{" not in r.stderr
    r = cli("eval", tiny_package, "--data", tmp_path / "d", "--map", "contempt=none", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["d"]
    assert m["n"] == 3 and sum(map(sum, m["confusion"])) == 3


def test_video_cadence_frame_limit_and_fps(astronaut, tiny_package, yunet_path, tmp_path):
    video = _clip(tmp_path / "clip.avi", astronaut, 8)
    r = cli("predict", video, "--model", tiny_package, "--yunet", yunet_path, "--json", "--max-frames", "5",
            "--detect-every", "2", "--min-face", "60")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["frame"] for line in r.stdout.splitlines()] == list(range(5))
    assert "5 frames in" in r.stderr and "fps (detect every 2)" in r.stderr


def test_eval_reads_a_ferplus_split_and_names_the_embedded_model(tmp_path):
    """FER+'s contempt votes are dropped by the reader's documented default; 'default' is the embedded model."""
    import csv
    import shutil

    from conftest import FERPLUS

    src = FERPLUS / "FER2013Valid"
    if not (src / "label.csv").is_file():
        pytest.skip(f"FER+ not found at {src} (../shared is absent on this machine)")
    split = tmp_path / "FER2013Valid"
    split.mkdir()
    with open(src / "label.csv", newline="") as f:
        rows = list(csv.reader(f))[:40]
    with open(split / "label.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    for row in rows:
        if (src / row[0]).is_file():
            shutil.copy(src / row[0], split / row[0])
    r = cli("eval", "default", "--data", split)
    assert r.returncode == 0, r.stderr
    assert "FER2013Valid" in r.stdout and "recall:" in r.stdout
    # --class-weight scores the model as the recognizer with class_weights answers: no neutral at all here
    plain, weighted = (json.loads(cli("eval", "default", "--data", split, "--json", *w).stdout)["FER2013Valid"]
                       for w in ((), ("--class-weight", "neutral=1e-9")))
    neutral = plain["labels"].index("neutral")
    assert sum(row[neutral] for row in plain["confusion"]) > 0
    assert sum(row[neutral] for row in weighted["confusion"]) == 0 and weighted["n"] == plain["n"]
    r = cli("eval", "default", "--data", split, "--class-weight", "contempt=2")
    assert r.returncode == 2 and "no such class" in r.stderr and "Traceback" not in r.stderr


def test_mirror_in_predict_and_eval(photo, tiny_checkpoint):
    fp32 = ("--backend", "onnxruntime", "--precision", "fp32")
    plain, mirrored = (json.loads(cli("predict", photo, "--json", *fp32, *m).stdout)["faces"][0]["scores"]
                       for m in ((), ("--mirror",)))
    assert abs(sum(mirrored.values()) - 1) < 1e-3 and mirrored != plain
    r = cli("eval", tiny_checkpoint, "--data", photo, "--mirror")
    assert r.returncode == 2 and "export it first" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_predict_class_weight(photo):
    fp32 = ("--backend", "onnxruntime", "--precision", "fp32")  # auto may time int8 in one run, fp32 in the other
    plain = json.loads(cli("predict", photo, "--json", *fp32).stdout)["faces"][0]["scores"]
    r = cli("predict", photo, "--json", *fp32, "--class-weight", "happiness=0.5", "--class-weight", "neutral=3")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["faces"][0]["scores"]
    w = {"happiness": 0.5, "neutral": 3.0}
    total = sum(v * w.get(k, 1.0) for k, v in plain.items())
    assert all(abs(got[k] - plain[k] * w.get(k, 1.0) / total) < 1e-3 for k in plain), (plain, got)  # JSON: 4 decimals
    assert got["neutral"] > 4 * plain["neutral"]
    for bad, says in (("contempt=2", "no such class"), ("neutral=abc", "write LABEL=W"), ("=2", "write LABEL=W"),
                      ("neutral=0", "must be a number > 0")):
        r = cli("predict", photo, "--class-weight", bad)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


def test_default_names_the_embedded_model_in_every_verb(photo, tmp_path):
    from motivnet_edge import EmotionRecognizer
    from motivnet_edge.package import DEFAULT_MODEL

    r = cli("info", "default", cwd=tmp_path)
    # (the subprocess may import an installed copy, the test a checkout: compare the folder's tail)
    assert r.returncode == 0 and "motivnet_edge/models/default" in r.stdout, r.stderr
    r = cli("predict", photo, "--model", "default", cwd=tmp_path)
    assert r.returncode == 0 and "face at x=" in r.stdout, r.stderr
    r = cli("benchmark", "default", "--threads", "1", "--batch", "1", "--rounds", "1", "--seconds", "0.1", cwd=tmp_path)
    assert r.returncode == 0 and "fastest at batch 1" in r.stdout, r.stderr
    for name in ("default", None):
        with EmotionRecognizer.from_pretrained(name, detector="none") as rec:
            assert rec.package.root == DEFAULT_MODEL
    (tmp_path / "default").mkdir()  # a folder the user calls "default" is theirs, and is not a package
    r = cli("info", "default", cwd=tmp_path)
    assert r.returncode == 2 and "no manifest.json" in r.stderr
