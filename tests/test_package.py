"""Package loading: sha256, containment, schema, zip, atomic writes, ONNX metadata."""

import json
import os
import shutil
import zipfile

import pytest

from motivnet_edge.errors import PackageError
from motivnet_edge.package import load_package
from motivnet_edge.package_write import write_package


def _edit(pkg, fn):
    m = json.loads((pkg / "manifest.json").read_text())
    fn(m)
    (pkg / "manifest.json").write_text(json.dumps(m))


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
    _edit(package_copy, lambda m: m["files"][0].update(path=bad))
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
    _edit(package_copy, lambda m: m.update(schema_version=99))
    with pytest.raises(PackageError, match="schema_version 99"):
        load_package(package_copy)
    _edit(package_copy, lambda m: m.update(schema_version=1, labels=["a", "a"]))
    with pytest.raises(PackageError, match="distinct"):
        load_package(package_copy)


def test_missing_model_file_is_named(package_copy):
    (package_copy / "model.onnx").unlink()
    with pytest.raises(PackageError, match="model.onnx is missing"):
        load_package(package_copy)


def test_zip_package_and_zip_slip(tiny_package, tmp_path):
    z = tmp_path / "pkg.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in tiny_package.rglob("*"):
            zf.write(p, "tiny/" + str(p.relative_to(tiny_package)))
    assert load_package(z).labels == load_package(tiny_package).labels
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escaped.txt", "x")
    with pytest.raises(PackageError, match="leaves the package folder"):
        load_package(evil)
    (tmp_path / "fake.zip").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(PackageError):
        load_package(tmp_path / "fake.zip")


def _zip_of(folder, z):
    with zipfile.ZipFile(z, "w") as zf:
        for p in folder.rglob("*"):
            zf.write(p, "tiny/" + str(p.relative_to(folder)))
    return z


def test_zip_unpacks_once_per_process_privately(tiny_package, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIVNET_CACHE", str(tmp_path / "cache"))
    z = _zip_of(tiny_package, tmp_path / "pkg.zip")
    first, second = load_package(z), load_package(z)
    assert first.root == second.root and first.root.is_relative_to(tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "packages").iterdir())) == 1  # no copy per load
    assert (first.root.parent.stat().st_mode & 0o077) == 0  # other users cannot write (or read) it


_LOAD = """
import sys, numpy as np
from motivnet_edge import EmotionRecognizer
with EmotionRecognizer.from_pretrained(sys.argv[1], detector="none", backend="onnxruntime", precision="fp32") as r:
    print(np.round(r.classify(np.full((1, *r.package.preprocessing.input_size), 90, np.uint8))[0], 5).tolist())
"""


def test_an_edited_or_planted_cache_never_runs_and_nothing_stays_behind(tiny_package, tmp_path):
    """A zip's unpacked copy is private to the process that made it: editing what one process
    unpacked (or planting files in a shared cache) cannot change what the unchanged zip runs."""
    import subprocess
    import sys

    env = {**os.environ, "MOTIVNET_CACHE": str(tmp_path / "cache")}
    z = _zip_of(tiny_package, tmp_path / "pkg.zip")
    run = lambda: subprocess.run([sys.executable, "-c", _LOAD, str(z)], capture_output=True, text=True,  # noqa: E731
                                 env=env, timeout=120)
    first = run()
    assert first.returncode == 0, first.stderr
    packages = tmp_path / "cache" / "packages"
    assert not packages.exists() or not any(packages.iterdir())  # removed at exit
    # Plant a "complete" unpacked copy with another model under every name an older runtime used.
    planted = packages / "planted" / "tiny"
    shutil.copytree(tiny_package, planted)
    (planted / ".complete").touch()
    _edit_manifest(planted, lambda m: m.__setitem__("labels", list(reversed(m["labels"]))))
    again = run()
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr


def test_concurrent_first_loads_of_one_zip_all_succeed(tiny_package, tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "MOTIVNET_CACHE": str(tmp_path / "cache")}
    z = _zip_of(tiny_package, tmp_path / "pkg.zip")
    procs = [subprocess.Popen([sys.executable, "-c", _LOAD, str(z)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(6)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-300:] for o in outs]
    assert len({o[0] for o in outs}) == 1


def test_huge_manifest_and_huge_entry_count_refused_cheaply(tiny_package, tmp_path, monkeypatch):
    import resource

    monkeypatch.setenv("MOTIVNET_CACHE", str(tmp_path / "cache"))
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/manifest.json", b'{"schema_version": 1, "x": "' + b" " * (60 * 2**20) + b'"}')
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PackageError, match="a manifest is a few KB"):
        load_package(big)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KB: never read
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(300):
            zf.writestr(f"pkg/{i}", b"")
    with pytest.raises(PackageError, match="declares 300 entries"):
        load_package(many)


def test_zip_bomb_refused_from_its_directory(tmp_path, monkeypatch):
    import motivnet_edge.package_zip as package_zip

    monkeypatch.setenv("MOTIVNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(package_zip, "MAX_ZIP_BYTES", 2**20)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/model.onnx", b"\0" * (3 * 2**20))  # 3 MB of zeros: a few KB zipped
    assert bomb.stat().st_size < 20_000
    with pytest.raises(PackageError, match="above the limit"):
        load_package(bomb)
    assert not (tmp_path / "cache" / "packages").exists() or not any((tmp_path / "cache" / "packages").iterdir())


def test_failed_write_keeps_the_previous_package(package_copy):
    before = (package_copy / "manifest.json").read_text()

    def broken(folder):
        (folder / "model.onnx").write_bytes(b"half a file")
        raise KeyboardInterrupt  # as if killed mid-export

    with pytest.raises(KeyboardInterrupt):
        write_package(package_copy, broken)
    assert (package_copy / "manifest.json").read_text() == before
    assert not [p for p in package_copy.parent.iterdir() if p.name.endswith(".tmp")]
    load_package(package_copy)


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_replacing_a_package_is_one_step_with_ordinary_permissions(package_copy):
    before = (package_copy / "manifest.json").read_text()
    m = json.loads(before)
    m["provenance"] = {"description": "second"}

    def rebuild(folder):
        for p in package_copy.iterdir():
            if p.is_file() and p.name != "manifest.json":
                shutil.copy(p, folder / p.name)
            elif p.is_dir():
                shutil.copytree(p, folder / p.name)
        return m

    write_package(package_copy, rebuild)
    assert load_package(package_copy).provenance == {"description": "second"}
    assert [p.name for p in package_copy.parent.iterdir() if p.name.startswith(".")] == []
    umask = os.umask(0)
    os.umask(umask)
    assert package_copy.stat().st_mode & 0o777 == 0o777 & ~umask


def test_next_export_cleans_what_a_killed_one_left(package_copy):
    dead = _dead_pid()
    stale = package_copy.parent / f".{package_copy.name}.abcd1234-{dead}.tmp"
    shutil.copytree(package_copy, stale)  # a loadable manifest inside a leftover
    (stale / ".motivnet-export-build").touch()  # what every build folder holds until it is renamed
    aside = package_copy.parent / f".{package_copy.name}.old-{dead}"
    os.replace(package_copy, aside)  # killed between the two renames: no package at dest
    with pytest.raises(KeyboardInterrupt):
        write_package(package_copy, lambda folder: (_ for _ in ()).throw(KeyboardInterrupt))
    assert not stale.exists() and not aside.exists()
    load_package(package_copy)  # the package that was set aside is back


def test_export_never_touches_the_users_files_beside_out(tiny_package, tmp_path):
    """Only what an export itself made is cleaned: a user's .pkg.bak, .pkg.old-keep, or a
    folder that a glob of a name with brackets would match, stay as they were."""
    dead = _dead_pid()
    for name in ("p[1]", "pkg"):
        dest = tmp_path / name
        mine = [tmp_path / f".{name}.bak", tmp_path / f".{name}.old-keep", tmp_path / f".{name}.abcd1234-{dead}.tmp",
                tmp_path / f".{name}.old-{dead}x"]
        if name == "p[1]":
            mine.append(tmp_path / ".p1.data")
        for folder in mine:
            folder.mkdir()
            (folder / "manifest.json").write_text("{}")  # a user's own folder, not an export's build
        shutil.copytree(tiny_package, dest)
        with pytest.raises(KeyboardInterrupt):
            write_package(dest, lambda folder: (_ for _ in ()).throw(KeyboardInterrupt))
        assert all((f / "manifest.json").read_text() == "{}" for f in mine), name
        assert load_package(dest).labels  # the package at dest is still the old one
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")) == sorted(
            f.name for f in mine if f.name.startswith(f".{name}."))


def test_unwritable_destination(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PackageError, match="cannot write"):
        write_package(blocker / "pkg", lambda f: {})


def _edit_manifest(root, edit):
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))


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
    _edit_manifest(package_copy, edit)
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

    _edit_manifest(package_copy, lambda m: edit(m["preprocessing"]))
    for backend in installed_backends():
        with pytest.raises(PackageError, match="takes input .* but the manifest's preprocessing gives"):
            create_backend(load_package(package_copy), backend=backend, precision="fp32")


@pytest.mark.parametrize("name", ["\0bad", "x" * 5000, "a/" * 300 + "m.onnx"])
def test_odd_manifest_paths_are_one_package_error(package_copy, name):
    _edit_manifest(package_copy, lambda m: m["files"][0].__setitem__("path", name))
    with pytest.raises(PackageError):
        load_package(package_copy)


def test_deeply_nested_manifest_json_is_one_package_error(package_copy):
    (package_copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PackageError, match="not valid JSON"):
        load_package(package_copy)


@pytest.mark.parametrize("labels", [["a", "b", "c", "d", "e", "f"], [f"l{i}" for i in range(8)], ["x"]])
def test_labels_must_name_every_output(package_copy, labels):
    from motivnet_edge.backends import create_backend, installed_backends

    _edit_manifest(package_copy, lambda m: m.__setitem__("labels", labels))
    for backend in installed_backends():
        with pytest.raises(PackageError, match=f"outputs 7 scores but the manifest lists {len(labels)} labels"):
            create_backend(load_package(package_copy), backend=backend, precision="fp32")


def test_wrong_output_name_is_a_package_error(package_copy):
    from motivnet_edge.backends import create_backend, installed_backends

    _edit_manifest(package_copy, lambda m: [f.__setitem__("output_name", "probs") for f in m["files"]])
    for backend in installed_backends():
        with pytest.raises(PackageError, match="the manifest says 'probs'"):
            create_backend(load_package(package_copy), backend=backend, precision="fp32")


def test_zip64_entry_count_is_read_before_the_directory(tmp_path, monkeypatch):
    """A zip64 archive declares its entry count in the zip64 end record; it is refused from there."""
    import time

    monkeypatch.setenv("MOTIVNET_CACHE", str(tmp_path / "cache"))
    many = tmp_path / "many64.zip"
    with zipfile.ZipFile(many, "w", allowZip64=True) as zf:
        for i in range(70_000):  # more than 0xFFFF entries: the classic end record cannot hold the count
            zf.writestr(zipfile.ZipInfo(f"p/{i}"), b"")
    t = time.perf_counter()
    with pytest.raises(PackageError, match="declares 70000 entries"):
        load_package(many)
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("kind", ["user_folder", "file", "link", "foreign_manifest"])
def test_export_never_replaces_what_is_not_a_package(tmp_path, package_copy, kind):
    """--out at a user's folder or file is refused before anything is written; nothing is deleted."""
    dest = tmp_path / "out"
    if kind == "file":
        dest.write_text("notes")
    elif kind == "link":
        dest.symlink_to(package_copy)
    else:
        dest.mkdir()
        (dest / "thesis.tex").write_text("years of work")
        if kind == "foreign_manifest":
            (dest / "manifest.json").write_text('{"name": "some web app"}')
    before = sorted((p.name, p.is_dir()) for p in tmp_path.rglob("*"))
    with pytest.raises(PackageError, match="choose a"):
        write_package(dest, lambda folder: {})
    assert sorted((p.name, p.is_dir()) for p in tmp_path.rglob("*")) == before


def test_export_writes_into_an_empty_folder_or_over_a_package(tiny_package, tmp_path):
    manifest = json.loads((tiny_package / "manifest.json").read_text())

    def build(folder):
        for f in ("model.onnx",):
            shutil.copy(tiny_package / f, folder / f)
        return {**manifest, "files": [f for f in manifest["files"] if f["path"] == "model.onnx"]}

    dest = tmp_path / "empty"
    dest.mkdir()
    assert load_package(write_package(dest, build)).labels
    assert load_package(write_package(dest, build)).labels  # over the package it wrote


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
    from motivnet_edge.package_describe import describe_package

    _edit(package_copy, lambda m: m.setdefault("metrics", {}).setdefault("int8", {}).update(
        openvino={"error": "drop 2.0 % above --max-drop", "fallback": "fp32 IR"}))
    pkg = load_package(package_copy)
    lines = describe_package(pkg)
    assert lines[0] == f"package:       {pkg.root}"
    files = [line for line in lines if line.startswith("file:")]
    assert len(files) == len(pkg.files) and all(f.sha256[:12] in line for f, line in zip(pkg.files, files))
    assert "int8:          openvino: not shipped (drop 2.0 % above --max-drop); fp32 IR" in lines
