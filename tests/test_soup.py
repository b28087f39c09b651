"""Model soups: the weighted mean of students fine-tuned from one start, written as a run folder."""

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="soups need the distill extra")

from motivnet_distill.students.soup import average, write_soup  # noqa: E402
from motivnet_distill.students.model import create_student  # noqa: E402
from motivnet_distill.students.io import load_student, save_student  # noqa: E402
from motivnet_edge.errors import MotivnetError  # noqa: E402
from motivnet_edge.preprocess import Preprocessing  # noqa: E402


def _run(folder, seed, preset="vit_hybrid_femto", teacher="onnx:t.onnx:ab12", steps=0):
    torch.manual_seed(seed)
    model = create_student(preset)
    for name, buf in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.fill_(steps)
    folder.mkdir(parents=True)
    save_student(folder / "best.pt", model, model.cfg, Preprocessing(), provenance={"teacher": teacher})
    (folder / "config.json").write_text('{"train": {"epochs": 3}, "provenance": {"student_preset": "%s"}}' % preset)
    return folder, model.state_dict()


def test_a_soup_is_the_weighted_mean_and_loads_as_a_run(tmp_path):
    (a, wa), (b, wb) = _run(tmp_path / "a", 0), _run(tmp_path / "b", 1, teacher="onnx:u.onnx:cd34", steps=7)
    out = write_soup([a, b], tmp_path / "soup", weights=[3, 1], command="python -m motivnet_distill.students.soup ...")
    soup = load_student(out)
    got = soup.model.state_dict()
    name = "blocks.0.attn.qkv.weight"
    assert torch.allclose(got[name], 0.75 * wa[name] + 0.25 * wb[name], atol=1e-6)
    assert not torch.allclose(got[name], wa[name])
    counters = [k for k in got if k.endswith("num_batches_tracked")]
    assert counters and all(int(got[k]) == 7 for k in counters)  # BatchNorm step counters: the longest, not a mean
    members = soup.provenance["soup"]["members"]
    assert [(m["run"], m["weight"]) for m in members] == [("a", 0.75), ("b", 0.25)]
    assert soup.provenance["teacher"] == "onnx:t.onnx:ab12 + onnx:u.onnx:cd34"
    assert (out / "log.jsonl").read_text() == "" and "soup" in (out / "commands.txt").read_text()
    ck, _ = average([a, b])  # equal weights by default
    assert torch.allclose(ck["model"][name], (wa[name] + wb[name]) / 2, atol=1e-6)


@pytest.mark.parametrize("case, match", [
    ("one run", "at least two runs"),
    ("weights", "one positive finite weight per --run"),
    ("negative", "one positive finite weight per --run"),
    ("shape", "another student"),
    ("missing", "does not exist"),
])
def test_soup_misuse_is_refused_with_the_fix(tmp_path, case, match):
    (a, _), (b, _) = _run(tmp_path / "a", 0), _run(tmp_path / "b", 1)
    runs, weights = [a, b], None
    if case == "one run":
        runs = [a]
    elif case == "weights":
        weights = [1.0]
    elif case == "negative":
        weights = [1.0, -1.0]
    elif case == "shape":
        runs = [a, _run(tmp_path / "c", 2, preset="vit_hybrid_pico")[0]]
    elif case == "missing":
        runs = [a, tmp_path / "nowhere"]
    with pytest.raises(MotivnetError, match=match):  # SoupError, or the checkpoint reader's error
        write_soup(runs, tmp_path / "soup", weights)
    assert not (tmp_path / "soup" / "best.pt").exists()


def test_soup_cli_refuses_an_existing_run_with_exit_code_2(tmp_path):
    (a, _), (b, _) = _run(tmp_path / "a", 0), _run(tmp_path / "b", 1)
    cmd = [sys.executable, "-m", "motivnet_distill.students.soup", "--run", str(a), "--run", str(b), "--out", str(a)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already holds a run" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(cmd[:-1] + [str(tmp_path / "soup")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert load_student(tmp_path / "soup").labels == load_student(a).labels


def test_an_interrupted_soup_leaves_no_folder_and_an_empty_one_is_filled(tmp_path, monkeypatch):
    import motivnet_distill.students.io as io_module  # where run folders (soups, ensembles) are written

    (a, _), (b, _) = _run(tmp_path / "a", 0), _run(tmp_path / "b", 1)
    real_save = io_module.save_student

    def save_then_interrupt(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C after the weights, before the config

    monkeypatch.setattr(io_module, "save_student", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_soup([a, b], tmp_path / "soup")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no half soup, no hidden temp folder
    monkeypatch.setattr(io_module, "save_student", real_save)
    (tmp_path / "soup").mkdir()  # an empty folder made beforehand is fine
    write_soup([a, b], tmp_path / "soup")
    assert sorted(p.name for p in (tmp_path / "soup").iterdir()) == ["best.pt", "config.json", "log.jsonl"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(MotivnetError, match="not an empty folder"):
        write_soup([a, b], tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
