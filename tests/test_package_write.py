"""Writing packages: atomic replacement, what a killed export leaves, and never touching what is not a package."""

import json
import os
import shutil

import pytest

from motivnet_edge.errors import PackageError
from motivnet_edge.package import load_package
from motivnet_edge.package.write import write_package


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



def test_a_package_holding_the_users_files_is_not_replaced(package_copy):
    """Issue 42 (1): a package folder that also holds a user's document or folder is refused,
    not replaced wholesale; the message names what is in the way."""
    (package_copy / "thesis.docx").write_text("years of work")
    (package_copy / "photos").mkdir()
    (package_copy / "photos" / "kid.jpg").write_bytes(b"\xff\xd8")
    before = sorted(str(p.relative_to(package_copy)) for p in package_copy.rglob("*"))
    with pytest.raises(PackageError, match=r"photos.*thesis\.docx|does not list"):
        write_package(package_copy, lambda folder: (_ for _ in ()).throw(AssertionError("must not build")))
    assert sorted(str(p.relative_to(package_copy)) for p in package_copy.rglob("*")) == before


def test_a_users_old_named_folder_with_a_package_and_more_is_kept(package_copy):
    """Issue 42 (1): ``.NAME.old-<digits>`` is removed only when it holds nothing but a package."""
    dead = _dead_pid()
    aside = package_copy.parent / f".{package_copy.name}.old-{dead}"
    shutil.copytree(package_copy, aside)
    (aside / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):
        write_package(package_copy, lambda folder: (_ for _ in ()).throw(KeyboardInterrupt))
    assert (aside / "notes.txt").read_text() == "mine"
