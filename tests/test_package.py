"""Package loading: sha256, containment, schema and labels, ONNX metadata, external data, describe."""

import json
import os
import shutil

import pytest

from conftest import cli, edit_manifest, relabel_onnx
from motivnet_edge.errors import PackageError
from motivnet_edge.package import load_package


def test_loads_and_describes(tiny_package):
    pkg = load_package(tiny_package)
    assert pkg.labels[0] == "neutral" and len(pkg.labels) == 7
    assert {(f.backend, f.precision) for f in pkg.files} == {("onnxruntime", "fp32"), ("openvino", "fp32")}
    assert pkg.manifest["provenance"]["export"]["onnx_max_abs_diff_vs_torch"] < 1e-4
    assert pkg.metrics["file_sizes"]["model.onnx"] > 0


def test_onnx_metadata_carries_labels_and_preprocessing(tiny_package):
    onnx = pytest.importorskip("onnx")
    meta = {p.key: p.value for p in onnx.load(str(tiny_package / "model.onnx")).metadata_props}
    assert json.loads(meta["labels"]) == list(load_package(tiny_package).labels)
    assert json.loads(meta["preprocessing"])["input_size"] == [48, 48]


def test_changed_model_bytes_are_refused(package_copy):
    with open(package_copy / "model.onnx", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(PackageError, match="model.onnx does not match its sha256"):
        load_package(package_copy)


def test_changed_openvino_weights_are_refused(package_copy):
    with open(package_copy / "openvino" / "model.bin", "ab") as f:
        f.write(b"x")
    with pytest.raises(PackageError, match="model.bin does not match"):
        load_package(package_copy)


@pytest.mark.parametrize("bad", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx", "C:\\x.onnx"])
def test_paths_leaving_the_folder_are_refused(package_copy, bad):
    edit_manifest(package_copy, lambda m: m["files"][0].update(path=bad))
    with pytest.raises(PackageError, match="leaves the package folder"):
        load_package(package_copy)


def test_symlink_out_of_the_folder_is_refused(package_copy, tmp_path):
    outside = tmp_path / "secret.onnx"
    shutil.copy(package_copy / "model.onnx", outside)
    (package_copy / "model.onnx").unlink()
    os.symlink(outside, package_copy / "model.onnx")
    with pytest.raises(PackageError, match="outside the package folder"):
        load_package(package_copy)


def test_missing_and_malformed_manifests(tmp_path, package_copy):
    with pytest.raises(PackageError, match="no manifest.json"):
        load_package(tmp_path)
    (package_copy / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        load_package(package_copy)


def test_schema_and_labels_are_checked(package_copy):
    edit_manifest(package_copy, lambda m: m.update(schema_version=99))
    with pytest.raises(PackageError, match="schema_version 99"):
        load_package(package_copy)
    edit_manifest(package_copy, lambda m: m.update(schema_version=1, labels=["a", "a"]))
    with pytest.raises(PackageError, match="distinct"):
        load_package(package_copy)


def test_missing_model_file_is_named(package_copy):
    (package_copy / "model.onnx").unlink()
    with pytest.raises(PackageError, match="model.onnx is missing"):
        load_package(package_copy)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.__setitem__("files", None), "'files' must be a JSON list"),
    (lambda m: m["files"][0].__setitem__("extra_files", ["a"]), "extra_files object"),
    (lambda m: m.__setitem__("assets", ["a"]), "'assets' must be a JSON object"),
    (lambda m: m["preprocessing"].__setitem__("input_size", [48, 48, 1]), "input_size"),
    (lambda m: m["preprocessing"].__setitem__("mean", [float("nan")]), "finite values"),
    (lambda m: m["preprocessing"].__setitem__("std", [float("inf")]), "finite values"),
    (lambda m: m["preprocessing"].__setitem__("mean", [1e308]), "not pixel statistics"),
    (lambda m: m["preprocessing"].__setitem__("std", [1e-300]), "not pixel statistics"),
    (lambda m: m["preprocessing"]["template"][0].__setitem__(0, float("nan")), "finite fractions"),
    (lambda m: m["preprocessing"].__setitem__("template", [[0.3, 0.4]] * 4 + [[0.5]]), "template needs 5"),
    (lambda m: m.setdefault("provenance", {}).__setitem__("x", "\0" + "a" * 5000), None),
])
def test_malformed_manifest_values_are_package_errors(package_copy, edit, match):
    edit_manifest(package_copy, edit)
    if match is None:  # free-text fields may hold anything: they are data, never paths
        load_package(package_copy)
        return
    with pytest.raises(PackageError, match=match):
        load_package(package_copy)


@pytest.mark.parametrize("edit", [lambda pp: pp.__setitem__("input_size", [64, 64]),
                                  lambda pp: pp.update(color="rgb", mean=[127.5] * 3, std=[127.5] * 3)])
def test_preprocessing_that_does_not_fit_the_model_is_refused_at_load(package_copy, edit):
    """Caught when the model opens, not at the first predict (which would abort a batch)."""
    from motivnet_edge.backends import create_backend, installed_backends

    edit_manifest(package_copy, lambda m: edit(m["preprocessing"]))
    for backend in installed_backends():
        with pytest.raises(PackageError, match="takes input .* but the manifest's preprocessing gives"):
            create_backend(load_package(package_copy), backend=backend, precision="fp32")


@pytest.mark.parametrize("name", ["\0bad", "x" * 5000, "a/" * 300 + "m.onnx"])
def test_odd_manifest_paths_are_one_package_error(package_copy, name):
    edit_manifest(package_copy, lambda m: m["files"][0].__setitem__("path", name))
    with pytest.raises(PackageError):
        load_package(package_copy)


def test_deeply_nested_manifest_json_is_one_package_error(package_copy):
    (package_copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PackageError, match="not valid JSON"):
        load_package(package_copy)


@pytest.mark.parametrize("labels", [["a", "b", "c", "d", "e", "f"], [f"l{i}" for i in range(8)], ["x"]])
def test_labels_must_name_every_output(package_copy, labels):
    """The manifest's labels must be those the hashed model declares (issue 42, 3); a model that
    declares a wrong count of its own is caught by the backend's output check."""
    from motivnet_edge.backends import create_backend, installed_backends

    edit_manifest(package_copy, lambda m: m.__setitem__("labels", labels))
    with pytest.raises(PackageError, match="are not those model.onnx declares"):
        load_package(package_copy)
    relabel_onnx(package_copy, labels)
    for backend in [b for b in installed_backends() if b == "onnxruntime"]:
        with pytest.raises(PackageError, match=f"outputs 7 scores but the manifest lists {len(labels)} labels"):
            create_backend(load_package(package_copy), backend=backend, precision="fp32")


def test_wrong_output_name_is_a_package_error(package_copy):
    from motivnet_edge.backends import create_backend, installed_backends

    edit_manifest(package_copy, lambda m: [f.__setitem__("output_name", "probs") for f in m["files"]])
    for backend in installed_backends():
        with pytest.raises(PackageError, match="the manifest says 'probs'"):
            create_backend(load_package(package_copy), backend=backend, precision="fp32")


def _pb(field: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (the wire format ONNX files are written in)."""
    def varint(n):
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def test_runtime_refuses_external_data_without_onnx_installed(package_copy, tmp_path, monkeypatch):
    """The device runtime (no onnx package) refuses a model naming a file of the working
    directory: a second graph field appended to the file merges into the first, as protobuf
    merges a repeated message field, so this adds one external initializer by bytes alone."""
    from motivnet_edge import EmotionRecognizer
    from motivnet_edge.package import sha256_file

    entries = b"".join(_pb(13, _pb(1, k) + _pb(2, v)) for k, v in ((b"location", b"secret.bin"), (b"length", b"16")))
    tensor = _pb(8, b"planted") + b"\x08\x04" + b"\x10\x01" + entries + b"\x70\x01"  # dims 4, FLOAT, EXTERNAL
    with open(package_copy / "model.onnx", "ab") as f:
        f.write(_pb(7, _pb(5, tensor)))
    m = json.loads((package_copy / "manifest.json").read_text())
    m["files"][0]["sha256"] = sha256_file(package_copy / "model.onnx")
    (package_copy / "manifest.json").write_text(json.dumps(m))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(bytes(16))
    with pytest.raises(PackageError, match="reads external data from 'secret.bin'"):
        EmotionRecognizer.from_pretrained(package_copy, backend="onnxruntime", precision="fp32", detector="none")


def test_describe_names_every_file_and_what_an_unshipped_int8_file_lacks(package_copy):
    from motivnet_edge.package.describe import describe_package

    edit_manifest(package_copy, lambda m: m.setdefault("metrics", {}).setdefault("int8", {}).update(
        openvino={"error": "drop 2.0 % above --max-drop", "fallback": "fp32 IR"}))
    pkg = load_package(package_copy)
    lines = describe_package(pkg)
    assert lines[0] == f"package:       {pkg.root}"
    files = [line for line in lines if line.startswith("file:")]
    assert len(files) == len(pkg.files) and all(f.sha256[:12] in line for f, line in zip(pkg.files, files))
    assert "int8:          openvino: not shipped (drop 2.0 % above --max-drop); fp32 IR" in lines


def test_licence_terms_do_not_nest_across_generations():
    from motivnet_edge.package import licence_terms

    student_of_student = ("teacher: teacher: unknown; note: students distilled from a teacher may carry its licence "
                          "terms; note: students distilled from a teacher may carry its licence terms")
    assert licence_terms([student_of_student, "unknown"]) == "unknown"
    assert licence_terms(["teacher: CC BY-NC 4.0 (Sapiens weights); note: x", "MIT (FER2013 Xception)"]) == \
        "CC BY-NC 4.0 (Sapiens weights); MIT (FER2013 Xception)"
    # and a package made before distill flattened them shows them flat: the embedded default is one
    lines = [x for x in cli("info").stdout.splitlines() if x.startswith("licence:")]
    assert "licence:       teacher: unknown" in lines and not any("teacher: teacher:" in x for x in lines), lines


def test_an_embedded_model_is_named_by_its_folder_and_an_unknown_name_lists_them(tmp_path, monkeypatch,
                                                                                   tiny_package, astronaut):
    """Issue 41 (3): a second embedded model (``accurate``) is one more folder of models/; every
    verb and from_pretrained take its name, and a name that is not embedded says which are."""
    import shutil
    from pathlib import Path

    import motivnet_edge.package.manifest as manifest
    from motivnet_edge import EmotionRecognizer
    from motivnet_edge.errors import PackageError
    from motivnet_edge.package import embedded_models, load_package, resolve_model

    assert embedded_models() == sorted(p.name for p in manifest.MODELS_DIR.iterdir()
                                       if (p / "manifest.json").is_file()) and "default" in embedded_models()
    models = tmp_path / "models"
    shutil.copytree(tiny_package, models / "accurate")
    (models / "notes").mkdir()  # a folder without a manifest is no model
    monkeypatch.setattr(manifest, "MODELS_DIR", models)
    monkeypatch.chdir(tmp_path)
    assert embedded_models() == ["accurate"] and resolve_model("accurate") == models / "accurate"
    assert load_package("accurate").labels == load_package(tiny_package).labels
    with EmotionRecognizer.from_pretrained("accurate", detector="haar") as rec:
        assert len(rec.predict(astronaut)) == 1
    with pytest.raises(PackageError, match="no model called 'fastest': embedded here are accurate"):
        load_package("fastest")
    (tmp_path / "accurate").mkdir()  # a folder of that name here wins, as for "default"
    assert resolve_model("accurate") == Path("accurate")
