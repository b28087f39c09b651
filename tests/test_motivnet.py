"""The MotivNet teacher: architecture, every checkpoint format, safe loading, export, head training."""

import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the teacher needs the distill extra")

from motivnet_distill.teachers.checkpoints import CheckpointError, load_motivnet  # noqa: E402
from motivnet_distill.teachers.motivnet import MotivNet, MotivNetConfig, count_parameters  # noqa: E402

HEADS = dict(num_heads=4, decoder_heads=4)
SMALL = dict(embed_dim=64, depth=2, num_heads=4, img_size=(64, 48), decoder_dim=48, decoder_heads=4,
             decoder_ffn=64)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return MotivNet(MotivNetConfig(**SMALL)).eval()


def _same(a, b, x):
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-5)


X = torch.randn(2, 3, 64, 48)


def test_full_size_parameter_count_matches_the_doc():
    n = count_parameters(MotivNetConfig())
    assert 1.13e9 < n["backbone"] < 1.15e9 and 21e6 < n["head"] < 23e6
    assert abs(n["total"] - 1.16e9) < 0.01e9
    assert MotivNetConfig().grid == (64, 48)


def test_query_embeddings_are_frozen_but_saved(small):
    assert not small.decoder.decoder.query_embed.weight.requires_grad
    assert "decoder.decoder.query_embed.weight" in small.state_dict()


def test_motivnet_pth_both_key_variants(small, tmp_path):
    sd = small.state_dict()
    torch.save(sd, tmp_path / "new.pth")
    old = {k.replace("pose_encoder.patch_embed.projection.", "pose_encoder.projection."): v for k, v in sd.items()}
    torch.save(old, tmp_path / "old.pth")
    for name in ("new.pth", "old.pth"):
        m, info = load_motivnet(tmp_path / name, img_size=(64, 48), **HEADS)
        assert info["head_loaded"] and _same(m, small, X)


def test_lightning_ckpt(small, tmp_path):
    torch.save({"state_dict": small.state_dict(), "hyper_parameters": {"lr": 1e-5}, "epoch": 3},
               tmp_path / "m.ckpt")
    m, info = load_motivnet(tmp_path / "m.ckpt", img_size=(64, 48), **HEADS)
    assert info["format"] == "lightning" and _same(m, small, X)


def test_sapiens_pretrain_clean_drops_cls_and_resizes_grid(small, tmp_path):
    bb = {k[len("pose_encoder."):]: v for k, v in small.state_dict().items() if k.startswith("pose_encoder.")}
    bb["cls_token"] = torch.zeros(1, 1, 64)
    bb["pos_embed"] = torch.randn(1, 1 + 4 * 4, 64)  # pretrained square: 4x4 grid + class token
    torch.save(bb, tmp_path / "sapiens_clean.pth")
    with pytest.raises(CheckpointError, match="backbone only"):
        load_motivnet(tmp_path / "sapiens_clean.pth", img_size=(64, 48), **HEADS)
    m, info = load_motivnet(tmp_path / "sapiens_clean.pth", img_size=(64, 48), **HEADS, require_head=False)
    assert not info["head_loaded"] and m.pose_encoder.pos_embed.shape == (1, 4 * 3, 64)
    grid = bb["pos_embed"][:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=(4, 3), mode="bicubic", align_corners=False)
    assert torch.allclose(m.pose_encoder.pos_embed, ref.permute(0, 2, 3, 1).reshape(1, 12, 64), atol=1e-6)


def test_mmengine_task_checkpoint_without_mmengine(small, tmp_path, monkeypatch):
    # Build a file whose pickle names mmengine's ConfigDict, as a real Sapiens task .pth does.
    mod = types.ModuleType("mmengine.config.config")

    class ConfigDict(dict):
        pass
    ConfigDict.__module__, ConfigDict.__qualname__ = "mmengine.config.config", "ConfigDict"
    mod.ConfigDict = ConfigDict
    for name in ("mmengine", "mmengine.config"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mmengine.config.config", mod)
    sd = {"backbone." + k[len("pose_encoder."):]: v for k, v in small.state_dict().items()
          if k.startswith("pose_encoder.")}
    sd["head.final_layer.weight"] = torch.zeros(3, 3)
    torch.save({"meta": {"cfg": ConfigDict(model="sapiens_1b", lr=0.1)}, "state_dict": sd}, tmp_path / "task.pth")
    monkeypatch.delitem(sys.modules, "mmengine.config.config")  # reading must not need mmengine
    m, info = load_motivnet(tmp_path / "task.pth", img_size=(64, 48), **HEADS, require_head=False)
    assert info["format"] == "mmengine"
    assert torch.equal(m.pose_encoder.layers[1].attn.qkv.weight, small.pose_encoder.layers[1].attn.qkv.weight)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="never executed"):
        load_motivnet(tmp_path / "evil.pth")


def test_torchscript_and_torch_export(small, tmp_path):
    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = small.pose_encoder

        def forward(self, x):
            return self.backbone(x)
    torch.jit.script(Wrap()).save(str(tmp_path / "sapiens_torchscript.pt2"))
    m, info = load_motivnet(tmp_path / "sapiens_torchscript.pt2", img_size=(64, 48), **HEADS, require_head=False,
                            trust_code=True)
    assert info["format"] == "torchscript"
    with torch.no_grad():
        assert torch.allclose(m.pose_encoder(X), small.pose_encoder(X), atol=1e-5)
    torch.export.save(torch.export.export(small, (X,)), str(tmp_path / "motivnet_bfloat16.pt2"))
    m2, info2 = load_motivnet(tmp_path / "motivnet_bfloat16.pt2", img_size=(64, 48), **HEADS, trust_code=True)
    assert info2["format"] == "torch.export" and _same(m2, small, X)


def test_mismatch_lists_every_problem_in_one_message(small, tmp_path):
    sd = dict(small.state_dict())
    sd.pop("pose_encoder.ln1.weight")
    sd["pose_encoder.extra.weight"] = torch.zeros(1)
    sd["decoder.decoder.duplicate_pooling_bias"] = torch.zeros(9)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as e:
        load_motivnet(tmp_path / "bad.pth", img_size=(64, 48), **HEADS)
    msg = str(e.value)
    assert "missing (1): pose_encoder.ln1.weight" in msg and "unexpected (1): pose_encoder.extra.weight" in msg
    assert "shape mismatch" in msg and "duplicate_pooling_bias" in msg


def test_unknown_width_needs_heads(tmp_path):
    m = MotivNet(MotivNetConfig(**{**SMALL, "embed_dim": 72, "num_heads": 6}))
    torch.save(m.state_dict(), tmp_path / "w72.pth")
    with pytest.raises(CheckpointError, match="num_heads"):
        load_motivnet(tmp_path / "w72.pth", img_size=(64, 48), decoder_heads=4)
    assert load_motivnet(tmp_path / "w72.pth", img_size=(64, 48), num_heads=6, decoder_heads=4)[1]["config"].num_heads == 6


def test_teacher_interface_and_onnx_parity(small, tmp_path):
    from motivnet_distill.teachers.load import load_teacher
    from motivnet_export.exporter import export
    from motivnet_edge.package import load_package

    torch.save(small.state_dict(), tmp_path / "MotivNet.pth")
    t = load_teacher(tmp_path / "MotivNet.pth", img_size=(64, 48), **HEADS)
    assert t.labels[0] == "neutral" and t.preprocessing.resize == "letterbox" and t.preprocessing.color == "rgb"
    faces = [np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8) for i in range(3)]
    logits = t.logits(faces)
    assert logits.shape == (3, 7)
    pkg = load_package(export(tmp_path / "MotivNet.pth", tmp_path / "pkg", formats=("onnx",), latency=False,
                                teacher_options=dict(img_size=(64, 48), **HEADS)))
    assert pkg.manifest["provenance"]["export"]["onnx_max_abs_diff_vs_torch"] < 1e-4
    assert "CC BY-NC" in pkg.license["weights"]
    # The exported file is itself a teacher: same labels, outputs and licence as the checkpoint.
    t2 = load_teacher(pkg.root / "model.onnx")
    assert t2.labels == t.labels and np.allclose(t2.logits(faces), logits, atol=1e-3)
    assert "CC BY-NC" in t2.license, t2.license
    assert t2.name.startswith("onnx:pkg/model.onnx:"), t2.name  # provenance says which package taught


def test_train_head_on_frozen_backbone_round_trips(small, tmp_path):
    from motivnet_edge.datasets.readers import FaceSet
    from motivnet_distill.teachers.head import HeadRecipe, train_head
    from motivnet_edge.labels import MOTIVNET_LABELS

    bb = {k: v for k, v in small.state_dict().items() if k.startswith("pose_encoder.")}
    torch.save(bb, tmp_path / "backbone.pth")
    r = np.random.default_rng(0)
    hard = r.integers(0, 7, 16)
    faces = FaceSet([r.integers(0, 255, (48, 48), dtype=np.uint8) for _ in hard], np.eye(7, dtype=np.float32)[hard],
                    hard, MOTIVNET_LABELS, [str(i) for i in range(16)])
    out = train_head(tmp_path / "backbone.pth", faces, tmp_path / "MotivNet.pth", img_size=(64, 48), **HEADS,
                     recipe=HeadRecipe(epochs=1, batch_size=8, lr=1e-3), progress=False, device="cpu")
    m, info = load_motivnet(out, img_size=(64, 48), **HEADS)
    assert info["head_loaded"]
    assert torch.equal(m.pose_encoder.layers[0].ffn.layers[1].weight, small.pose_encoder.layers[0].ffn.layers[1].weight)
    assert not torch.equal(m.decoder.decoder.duplicate_pooling, small.decoder.decoder.duplicate_pooling)


class _RunsOnLoad(torch.nn.Module):
    """A TorchScript module whose __setstate__ (code stored in the archive) runs inside torch.jit.load."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + self.w

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        self.w = state[0]
        self.training = state[1]
        print("CODE FROM THE FILE RAN")


@pytest.mark.parametrize("name", ["teacher.pth", "teacher.pt", "teacher.ckpt", "teacher.bin", "teacher.pt2"])
def test_torchscript_archive_runs_no_code_without_trust(tmp_path, capfd, name):
    from motivnet_distill.teachers.load import load_teacher

    torch.jit.script(_RunsOnLoad()).save(str(tmp_path / name))
    capfd.readouterr()
    with pytest.raises(CheckpointError, match="trust-code"):
        load_teacher(tmp_path / name)
    assert "CODE FROM THE FILE RAN" not in capfd.readouterr().out
    # the same archive, trusted explicitly, does run its code: the refusal above is what protects
    with pytest.raises(CheckpointError):
        load_motivnet(tmp_path / name, trust_code=True)
    assert "CODE FROM THE FILE RAN" in capfd.readouterr().out


def test_torch_export_archive_refused_without_trust(small, tmp_path):
    torch.export.save(torch.export.export(small, (X,)), str(tmp_path / "motivnet.pt2"))
    with pytest.raises(CheckpointError, match="torch.export archive"):
        load_motivnet(tmp_path / "motivnet.pt2", img_size=(64, 48), **HEADS)
