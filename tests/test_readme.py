"""README.md's Python snippets run verbatim, as a new user would paste them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("i", range(len(_python_blocks())))
def test_readme_python_snippet_runs_verbatim(i, tmp_path, astronaut):
    """Run where a user's photo.jpg is (the astronaut), by this Python: on the device job's
    runtime-only install too, so the snippet may import nothing the device lacks."""
    import cv2

    cv2.imwrite(str(tmp_path / "photo.jpg"), astronaut)
    r = subprocess.run([sys.executable, "-c", _python_blocks()[i]], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip(), "the snippet printed nothing"
    if "torch" not in _python_blocks()[i]:
        probe = subprocess.run([sys.executable, "-X", "importtime", "-c", _python_blocks()[i]], capture_output=True,
                               text=True, timeout=300, cwd=tmp_path)
        imported = {ln.split("|")[-1].strip().split(".")[0] for ln in probe.stderr.splitlines() if "|" in ln}
        assert not imported & {"torch", "skimage", "onnx", "nncf"}, imported & {"torch", "skimage", "onnx", "nncf"}


def test_results_and_headline_are_the_rendering_of_the_committed_results_files():
    """Every figure in docs/RESULTS.md and README's headline comes from benchmarks/results/*.json, unedited."""
    from conftest import load_benchmark

    report = load_benchmark("report")
    assert report.readme_section(report.RESULTS.read_text()) == report.render(), \
        "docs/RESULTS.md differs from the results files: run `python benchmarks/report.py`"
    assert report.section_of(README.read_text(), report.HEAD_START, report.HEAD_END, "README") == report.headline(), \
        "README.md's headline differs from the results files: run `python benchmarks/report.py`"


def test_readme_is_one_short_page_with_no_machine_paths():
    text = README.read_text()
    assert len(text.splitlines()) <= 150 and len(text) <= 12_000
    committed = [README, *README.parent.glob("docs/*.md"), *README.parent.glob("benchmarks/results/*.json"),
                 *README.parent.glob("motivnet_edge/models/*/manifest.json")]
    for path in committed:
        body = path.read_text()
        assert "/work/" not in body and "/home/" not in body and "/root/" not in body, path


def test_suite_rows_of_the_default_are_the_accuracy_its_manifest_claims():
    """The committed suite and scoreboard measured the default that ships (the slow test re-measures the manifest)."""
    import json

    root = README.parent
    claimed = json.loads((root / "motivnet_edge" / "models" / "default" / "manifest.json").read_text())["metrics"]["test"]
    rows = {(r["protocol"], r["precision"]): r for r in
            json.loads((root / "benchmarks" / "results" / "suite-cpu.json").read_text())["accuracy"]
            if r["model"] == "default"}
    board = json.loads((root / "benchmarks" / "results" / "domains.json").read_text())["models"]["default"]
    for protocol, by_precision in claimed.items():
        for precision, m in by_precision.items():
            if (protocol, precision) in rows:  # the suite scores the four FER-style protocols
                row = rows[(protocol, precision)]
                assert row["n"] == m["n"] and abs(row["accuracy"] - m["accuracy"]) < 6e-4, (protocol, precision)
        # the cross-domain scoreboard scores every test set (ONNX Runtime fp32)
        assert board[protocol]["n"] == by_precision["fp32"]["n"], protocol
        assert abs(board[protocol]["accuracy"] - by_precision["fp32"]["accuracy"]) < 6e-4, protocol


def test_every_embedded_model_has_the_scoreboard_row_its_manifest_claims():
    """Each embedded model (default, accurate) is on the committed scoreboard under its own name,
    measured on the same faces to the same accuracy its manifest claims (ONNX Runtime fp32)."""
    import json

    from motivnet_edge.package import MODELS_DIR, embedded_models

    board = json.loads((README.parent / "benchmarks" / "results" / "domains.json").read_text())["models"]
    assert "default" in embedded_models()
    for name in embedded_models():
        path = MODELS_DIR / name / "manifest.json"
        assert name in board, f"{name} has no scoreboard row: python benchmarks/domains.py --model {name} --keep"
        for protocol, by_precision in json.loads(path.read_text())["metrics"]["test"].items():
            assert board[name][protocol]["n"] == by_precision["fp32"]["n"], (name, protocol)
            assert abs(board[name][protocol]["accuracy"] - by_precision["fp32"]["accuracy"]) < 6e-4, (name, protocol)


def test_committed_models_carry_no_machine_paths():
    """The dynamo exporter writes per-node stack traces with absolute paths; packages strip them."""
    root = README.parent
    models = [*(root / "motivnet_edge" / "models").rglob("*.onnx"), *(root / "tests" / "data").rglob("*.onnx")]
    assert models
    for path in models:
        data = path.read_bytes()
        assert b"/work/" not in data and b"/home/" not in data and b"/root/" not in data and b"site-packages" not in data, path
