"""Export misuse: too few or broken calibration faces, bad labels, files that are no model or carry code,
unwritable or foreign output folders, and a kill mid-export: a clear error, the previous package intact."""

import json
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch", reason="export needs the export extra")
pytest.importorskip("nncf", reason="INT8 needs the export extra")

from motivnet_edge.errors import MotivnetError  # noqa: E402
from motivnet_edge.package import load_package  # noqa: E402
from motivnet_export.exporter import export  # noqa: E402
from motivnet_export.int8 import QuantizationError  # noqa: E402
from motivnet_export.sources import SourceError  # noqa: E402

from conftest import face_crops  # noqa: E402


def test_too_few_calibration_faces_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(QuantizationError, match="at least 300"):
        export(tiny_checkpoint, tmp_path / "p", int8=True, calib=face_crops(tmp_path / "c", 299), latency=False)
    assert not (tmp_path / "p").exists()
    with pytest.raises(SourceError, match="needs --calib"):
        export(tiny_checkpoint, tmp_path / "p", int8=True, latency=False)


def test_corrupted_calibration_folder(tiny_checkpoint, tmp_path):
    calib = face_crops(tmp_path / "c", 300)
    (calib / "f0007.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(MotivnetError, match="f0007.png is not a JPEG, PNG"):
        export(tiny_checkpoint, tmp_path / "p", int8=True, calib=calib, latency=False)


def test_mislabelled_validation_set(tiny_checkpoint, tmp_path):
    calib = face_crops(tmp_path / "c", 300)
    for cls in ("cat", "dog"):
        face_crops(tmp_path / "v" / cls, 3)
    with pytest.raises(MotivnetError, match="'cat'"):
        export(tiny_checkpoint, tmp_path / "p", int8=True, calib=calib, val=tmp_path / "v", latency=False)
    with pytest.raises(SourceError, match="--max-drop needs"):
        export(tiny_checkpoint, tmp_path / "p", max_drop=0.01, latency=False)


def test_source_that_is_not_a_model(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    with pytest.raises(SourceError, match="not a motivnet-edge student checkpoint"):
        export(bad, tmp_path / "p", latency=False)
    import torch
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SourceError, match="not a motivnet-edge student checkpoint"):
        export(tmp_path / "other.pt", tmp_path / "p", latency=False)
    with pytest.raises(SourceError, match="does not exist"):
        export(tmp_path / "nothing", tmp_path / "p", latency=False)


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    import torch

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(SourceError, match="pickled code, which is never executed"):
        export(tmp_path / "evil.pt", tmp_path / "p", latency=False)


def test_unwritable_output_cli(tiny_checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "export", str(tiny_checkpoint), "--out",
                        str(blocker / "pkg"), "--no-latency"], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot write" in r.stderr and "Traceback" not in r.stderr


def test_export_cli_refuses_a_users_folder_before_any_work(tiny_checkpoint, tmp_path):
    home = tmp_path / "Documents"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    r = subprocess.run([sys.executable, "-m", "motivnet_edge.cli", "export", str(tiny_checkpoint), "--out",
                        str(home), "--no-latency"], capture_output=True, text=True)
    assert r.returncode == 2 and "holds files but no model package" in r.stderr and "Traceback" not in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["Documents"] and [p.name for p in home.iterdir()] == ["thesis.tex"]


def test_kill_mid_export_leaves_previous_package(tiny_checkpoint, tiny_package, tmp_path):
    import shutil
    dest = tmp_path / "pkg"
    shutil.copytree(tiny_package, dest)
    before = (dest / "manifest.json").read_text()
    proc = subprocess.Popen([sys.executable, "-m", "motivnet_edge.cli", "export", str(tiny_checkpoint),
                             "--out", str(dest)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".pkg.*.tmp/model.onnx")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (dest / "manifest.json").read_text() == before
    load_package(dest)
    assert json.loads(before)["schema_version"] == 1


def test_export_prints_its_own_stage_lines_and_third_parties_only_with_v(tiny_checkpoint, tmp_path):
    """Issue 43 (14): one line per stage with its time; NNCF's INFO lines and progress bars,
    torch's exporter notes, deprecation warnings and ONNX Runtime's quantizer advice only with
    -v, and then on stderr: stdout is the result alone."""
    from conftest import cli, face_crops

    calib = face_crops(tmp_path / "calib", 300)
    quiet = cli("export", tiny_checkpoint, "--out", tmp_path / "a", "--int8", "--calib", calib, "--no-latency")
    assert quiet.returncode == 0, quiet.stderr
    lines = [line for line in quiet.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith("export [") for line in lines), lines
    assert any("quantizing onnx to INT8" in line for line in lines)
    # the result alone on stdout: NNCF's progress bars wrote there before
    assert quiet.stdout.startswith(f"wrote {tmp_path / 'a'}\n") and "Statistics collection" not in quiet.stdout
    loud = cli("-v", "export", tiny_checkpoint, "--out", tmp_path / "b", "--int8", "--calib", calib, "--no-latency")
    assert loud.returncode == 0 and loud.stdout.startswith(f"wrote {tmp_path / 'b'}\n"), loud.stdout[-2000:]
    assert "INFO:nncf" not in loud.stdout and "Statistics collection" not in loud.stdout
    assert "INFO:nncf" in loud.stderr and "torchvision" in loud.stderr and "Statistics collection" in loud.stderr
