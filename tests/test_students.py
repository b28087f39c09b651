"""Students: presets, FLOP counts, settings checks, and initialisation from timm files, runs and packages."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="distillation needs the distill extra")

from motivnet_distill.students.model import PRESETS, StudentConfig, count_flops, create_student  # noqa: E402
from motivnet_distill.students.init_weights import load_timm_weights  # noqa: E402
from motivnet_edge.labels import MOTIVNET_LABELS  # noqa: E402


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_count(name):
    cfg = StudentConfig(**{**PRESETS[name], "img_size": (48, 48) if name != "vit_tiny" and name != "vit_small"
                           else (224, 224)})
    m = create_student(name, img_size=cfg.img_size)
    x = torch.zeros(2, 1, *cfg.img_size)
    assert m(x).shape == (2, 7)


def test_flop_count_of_a_plain_vit_is_its_matmuls_and_patch_conv():
    cfg = StudentConfig(**PRESETS["vit_nano"], img_size=(48, 48))
    n, d, h = cfg.grid[0] * cfg.grid[1] + (cfg.pool == "cls"), cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
    macs = cfg.grid[0] * cfg.grid[1] * cfg.patch_size ** 2 * d  # patch conv, one channel
    macs += cfg.depth * (n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * h) + d * 7
    assert count_flops(create_student("vit_nano"), (1, 1, 48, 48)) == 2 * macs
    # the shipped default's manifest figure comes from the same counter
    from motivnet_edge import load_package
    from motivnet_edge.recognizer import DEFAULT_MODEL
    gflops = load_package(DEFAULT_MODEL).metrics["gflops"]
    assert round(count_flops(create_student("vit_hybrid_pico"), (1, 1, 48, 48)) / 1e9, 5) == gflops


def test_bad_student_configs():
    with pytest.raises(ValueError, match="divisible"):
        create_student("vit_nano", embed_dim=130)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_student("vit_nano", img_size=(50, 50))
    with pytest.raises(ValueError, match="unknown student"):
        create_student("resnet50")
    with pytest.raises(ValueError, match="stem_act must be one of gelu, relu"):
        create_student("vit_hybrid_pico", stem_act="swish")
    with pytest.raises(ValueError, match="one width and one block count"):
        create_student("resnet_s", stage_blocks=(2, 2))
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        create_student("resnet_s", stem_stride=4)
    with pytest.raises(ValueError, match="arch must be one of vit, resnet"):
        create_student("resnet_s", arch="mlp")


def test_a_resnet_config_round_trips_and_old_configs_read_as_vits():
    cnn = create_student("resnet_s64", labels=MOTIVNET_LABELS)
    again = create_student(StudentConfig.from_dict(__import__("json").loads(cnn.cfg.to_json())))
    assert again.cfg == cnn.cfg and type(again) is type(cnn)
    old = {k: v for k, v in dataclasses.asdict(create_student("vit_hybrid_pico").cfg).items()
           if k not in ("arch", "widths", "stage_blocks", "stem_stride")}
    assert StudentConfig.from_dict(old).arch == "vit"
    # A package's description names the shape it ships, whichever family it is.
    assert cnn.cfg.describe().startswith("ResNet student") and "64x64 gray" in cnn.cfg.describe()
    assert create_student("vit_hybrid_pico").cfg.describe().startswith("ViT student (conv stem")


def test_a_students_description_comes_from_its_shape_and_its_runs_record():
    """The package's first line in `info`: a resnet says so, names its teacher and the domains it
    drew (a share of 0 draws none), and a checkpoint without a record claims nothing."""
    from motivnet_distill.students.io import description

    cfg = create_student("resnet_s").cfg
    prov = {"teacher": "mirror(onnx:default/model.onnx:ab12)", "student_preset": "resnet_s",
            "domains": {"mix": {"domains": ["ferplus", "expw", "kdef"], "domain_scale": {"kdef": 0}},
                        "sources": {"ferplus": {}, "expw": {}, "kdef": {}}, "selection": {"ferplus": 9, "expw": 9}}}
    text = description(cfg, prov)
    assert text.startswith("ResNet student") and "'resnet_s'" in text and "mirror(onnx:default" in text
    assert "2 domains (ferplus, expw train parts" in text and "mean of ferplus, expw validation" in text
    assert description(cfg, {}).endswith("not recorded in its checkpoint")


def test_a_run_recorded_before_faces_terms_gets_them_from_its_domains(tmp_path):
    """Checkpoints written before distill recorded the faces' terms still export with them."""
    import json

    from motivnet_distill.distill_options import STUDENT_PREPROCESSING
    from motivnet_distill.students.io import load_student

    net = create_student("vit_hybrid_pico", labels=MOTIVNET_LABELS)
    report = {"mix": {"domains": ["kdef", "expw"], "domain_scale": {}}, "sources": {"kdef": {}, "expw": {}},
              "selection": {"kdef": 9}}
    torch.save({"model": net.state_dict(), "student": json.loads(net.cfg.to_json()),
                "preprocessing": STUDENT_PREPROCESSING.to_dict(), "provenance": {"domains": report},
                "license": {"teacher": "MIT"}}, tmp_path / "best.pt")
    terms = load_student(tmp_path / "best.pt").license
    assert terms["teacher"] == "MIT" and "KDEF: non-commercial" in terms["faces"] and "ExpW" in terms["faces"]


def test_relu_stem_has_the_lite_stems_weights_and_fusable_activations():
    """pico_lite_relu differs from pico_lite only in its stem's activations (ReLU: the runtimes fuse
    it into the convolution), so a pico_lite's weights start it; configs saved before the setting
    existed read as GELU."""
    lite, relu = create_student("vit_hybrid_pico_lite"), create_student("vit_hybrid_pico_lite_relu")
    assert {k: v.shape for k, v in lite.state_dict().items()} == {k: v.shape for k, v in relu.state_dict().items()}
    acts = [type(m) for m in relu.patch_embed.stem if not isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    assert acts and set(acts) == {torch.nn.ReLU}
    assert torch.nn.GELU in {type(m) for m in lite.patch_embed.stem}
    old = {k: v for k, v in dataclasses.asdict(lite.cfg).items() if k != "stem_act"}
    assert StudentConfig.from_dict(old).stem_act == "gelu"


def test_timm_checkpoint_initialises_a_student(tmp_path):
    # A file laid out like timm's vit_tiny (3-channel, 16 px patches, class token, 14x14 grid).
    src = create_student("vit_tiny", in_chans=3, pool="cls", num_classes=1000)
    path = tmp_path / "deit_tiny.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = create_student("vit_tiny", img_size=(64, 64), in_chans=1, pool="cls")
    missing = load_timm_weights(dst, path)
    assert missing == ["head.bias", "head.weight"]  # 1000 classes vs 7: head skipped
    assert torch.allclose(dst.blocks[3].attn.qkv.weight, src.blocks[3].attn.qkv.weight)
    assert torch.allclose(dst.patch_embed.proj.weight, src.patch_embed.proj.weight.sum(1, keepdim=True))
    assert dst.pos_embed.shape == (1, 1 + 16, 192)
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no timm ViT weights"):
        load_timm_weights(dst, tmp_path / "other.pth")


def test_a_hybrid_run_initialises_the_same_preset_completely(tmp_path):
    """--init from a run's best.pt: every tensor loads as it is (the hybrid's small patch kernel
    must not be resized to patch_size)."""
    src = create_student("vit_hybrid_pico", labels=MOTIVNET_LABELS)
    torch.save({"model": src.state_dict()}, tmp_path / "best.pt")
    dst = create_student("vit_hybrid_pico", labels=MOTIVNET_LABELS)
    assert load_timm_weights(dst, tmp_path / "best.pt") == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_a_resnet_run_starts_from_a_resnet_runs_weights(tmp_path):
    """--init of a resnet from a resnet run's best.pt (e.g. a specialist from the teacher run) loads
    every tensor; it once ended in a traceback looking for the ViT's transformer blocks."""
    from motivnet_distill.run_folder import load_models
    from motivnet_distill.train_config import TrainConfig

    src = create_student("resnet_s", labels=MOTIVNET_LABELS)
    torch.nn.init.normal_(src.head.weight)
    torch.save({"model": src.state_dict()}, tmp_path / "best.pt")
    model, *_ = load_models(tmp_path / "run", src.cfg, TrainConfig(), torch.device("cpu"), tmp_path / "best.pt", False)
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_a_deeper_student_from_a_shallower_one_starts_with_the_same_function(tmp_path):
    """pico -> pico8: the four new blocks begin as identities, so the outputs are the pico's."""
    from motivnet_distill.students.init_weights import identity_blocks

    pico = create_student("vit_hybrid_pico").eval()
    torch.nn.init.normal_(pico.head.weight)
    torch.save({"model": pico.state_dict()}, tmp_path / "pico.pt")
    deep = create_student("vit_hybrid_pico8").eval()
    skipped = load_timm_weights(deep, tmp_path / "pico.pt")
    assert identity_blocks(deep, skipped) == [4, 5, 6, 7]
    x = torch.randn(3, 1, 48, 48)
    torch.testing.assert_close(deep(x), pico(x), atol=1e-5, rtol=1e-5)
    assert identity_blocks(pico, []) == []  # a student whose blocks all loaded is left alone


def test_a_lite_stem_from_a_pico_keeps_every_strided_conv(tmp_path):
    """pico -> pico_lite: the stride-1 stem convs are dropped, the strided ones (and their norms)
    keep their weights at their new places, and nothing is left at its random init."""
    from motivnet_distill.students.model import count_flops

    pico = create_student("vit_hybrid_pico")
    torch.save({"model": pico.state_dict()}, tmp_path / "pico.pt")
    lite = create_student("vit_hybrid_pico_lite")
    assert load_timm_weights(lite, tmp_path / "pico.pt") == []
    src, dst = pico.state_dict(), lite.state_dict()
    for full, short in ((0, 0), (1, 1), (3, 3), (4, 4), (9, 6), (10, 7)):
        for part in ("weight",) + (("bias", "running_mean", "running_var") if full in (1, 4, 10) else ()):
            assert torch.equal(dst[f"patch_embed.stem.{short}.{part}"], src[f"patch_embed.stem.{full}.{part}"])
    assert torch.equal(dst["blocks.3.mlp.fc2.weight"], src["blocks.3.mlp.fc2.weight"])
    assert count_flops(lite, (1, 1, 48, 48)) < 0.6 * count_flops(pico, (1, 1, 48, 48))
    with pytest.raises(ValueError, match="stem must be one of"):
        create_student("vit_hybrid_pico", stem="conv_tiny")


def test_the_embedded_default_rebuilds_as_a_student_with_the_same_logits():
    """from_package reads the ONNX Runtime graph as shipped (each block's attention fused into one
    Attention node) and gives back a student computing the package's function."""
    import onnx
    import onnxruntime as ort

    from motivnet_distill.students.from_package import student_from_package
    from motivnet_edge.recognizer import DEFAULT_MODEL

    x = np.random.default_rng(0).normal(0, 1, (32, 1, 48, 48)).astype(np.float32)
    model, cfg, pkg = student_from_package(DEFAULT_MODEL, x)
    onnx_file = pkg.path_of(pkg.file_for("onnxruntime", "fp32"))
    assert "Attention" in {n.op_type for n in onnx.load(str(onnx_file)).graph.node}
    ref = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    bias = np.asarray(pkg.provenance.get("prior_correction", {}).get("bias", np.zeros(ref.shape[1])))
    with torch.no_grad():
        got = model.eval()(torch.from_numpy(x)).numpy() + bias
    assert np.abs(got - ref).max() < 1e-3


def test_init_from_timm_file_before_training(tmp_path):
    from distill_helpers import synthetic
    from motivnet_distill.train import TrainConfig, train
    from motivnet_edge.preprocess import Preprocessing

    src = create_student("vit_nano", in_chans=1, labels=MOTIVNET_LABELS)
    torch.save({"model": src.state_dict()}, tmp_path / "timm.pth")
    cfg = TrainConfig(student=dict(PRESETS["vit_nano"]), epochs=1, batch_size=32, views=1, lr=0.0,
                      warmup_epochs=0.0, ema_decay=0.0, erase_prob=0.0)
    train(tmp_path / "run", synthetic(32), synthetic(16, seed=1), Preprocessing(), cfg, progress=False,
          init=tmp_path / "timm.pth")
    got = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert torch.allclose(got["blocks.2.mlp.fc1.weight"], src.state_dict()["blocks.2.mlp.fc1.weight"])


def test_a_preset_with_its_own_input_size_trains_at_that_size(tmp_path):
    """vit_tiny is a 224x224 DeiT shape: it must not silently train on 48x48 faces (a 3x3 grid)."""
    import json

    from distill_helpers import class_folder
    from motivnet_distill.distill_options import STUDENT_PREPROCESSING, DistillOptions
    from motivnet_distill.pipeline import distill, student_preprocessing

    assert student_preprocessing("vit_hybrid_pico") == STUDENT_PREPROCESSING
    assert student_preprocessing("vit_tiny").input_size == (224, 224)
    classes, people = ("happiness", "sadness"), ["Person_A", "Person_B"]
    distill(DistillOptions(data=class_folder(tmp_path / "main", classes, people, seed=0),
                           val=class_folder(tmp_path / "val", classes, people, seed=1), out=tmp_path / "run",
                           student="vit_tiny", epochs=1, views=1, progress=False, train={"batch_size": 8}))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["student"]["img_size"] == [224, 224] and saved["preprocessing"]["input_size"] == [224, 224]
