"""Zipped packages: zip slip, bombs, huge directories, a private unpack cache shared safely by processes."""

import os
import shutil
import zipfile

import pytest

from conftest import edit_manifest
from motivnet_edge.errors import PackageError
from motivnet_edge.package import load_package


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
    edit_manifest(planted, lambda m: m.__setitem__("labels", list(reversed(m["labels"]))))
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
    import motivnet_edge.package.archive as package_zip

    monkeypatch.setenv("MOTIVNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(package_zip, "MAX_ZIP_BYTES", 2**20)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/model.onnx", b"\0" * (3 * 2**20))  # 3 MB of zeros: a few KB zipped
    assert bomb.stat().st_size < 20_000
    with pytest.raises(PackageError, match="above the limit"):
        load_package(bomb)
    assert not (tmp_path / "cache" / "packages").exists() or not any((tmp_path / "cache" / "packages").iterdir())


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

