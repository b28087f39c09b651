"""Every installed backend runs the same tiny model and agrees; bad options and missing backends; files checked before they run."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from motivnet_edge.backends import BackendOptions, create_backend, installed_backends
from motivnet_edge.errors import BackendUnavailableError, OptionError, PackageError
from motivnet_edge.package import load_package

from conftest import random_batch


@pytest.mark.parametrize("backend", installed_backends())
def test_backends_agree_with_torch(tiny_package, tiny_checkpoint, backend):
    torch = pytest.importorskip("torch")
    from motivnet_export.sources import load_source

    pkg = load_package(tiny_package)  # committed; the checkpoint is rebuilt from the same seed
    x = random_batch(pkg)
    with torch.no_grad():
        ref = load_source(tiny_checkpoint).model(torch.from_numpy(x)).numpy()
    b = create_backend(pkg, backend=backend, precision="fp32", options=BackendOptions(threads=1))
    out = b.run(x)
    assert out.shape == (5, 7)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert np.allclose(b.run(x[:1]), out[:1], atol=1e-5)  # dynamic batch


@pytest.mark.parametrize("spin", [True, False, None])
def test_onnxruntime_spinning_is_an_option_and_does_not_change_scores(tiny_package, spin):
    pkg = load_package(tiny_package)
    x = random_batch(pkg)
    ref = create_backend(pkg, backend="onnxruntime", precision="fp32", options=BackendOptions(threads=2)).run(x)
    b = create_backend(pkg, backend="onnxruntime", precision="fp32", options=BackendOptions(threads=2, spin=spin))
    entry = b.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert entry == ("0" if spin is False else "1")  # None: a bare backend keeps ORT's default
    np.testing.assert_allclose(b.run(x), ref, atol=1e-6)


def test_precision_that_the_package_lacks(tiny_package):
    with pytest.raises(PackageError, match="no int8 model"):
        create_backend(load_package(tiny_package), precision="int8")
    with pytest.raises(OptionError, match="precision 'int4'"):
        create_backend(load_package(tiny_package), precision="int4")


def test_unknown_backend_and_provider(tiny_package):
    pkg = load_package(tiny_package)
    with pytest.raises(OptionError, match="unknown backend 'tflite'; choose auto, onnxruntime, openvino"):
        create_backend(pkg, backend="tflite")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        create_backend(pkg, backend="onnxruntime", options=BackendOptions(providers=("cuda",)))


def test_openvino_bad_device(tiny_package):
    if "openvino" not in installed_backends():
        pytest.skip("OpenVINO is not installed")
    with pytest.raises(BackendUnavailableError, match="NPU"):
        create_backend(load_package(tiny_package), backend="openvino", options=BackendOptions(device="NPU"))


def test_missing_backend_names_the_pip_extra(tiny_package):
    # A real interpreter in which openvino cannot be imported, as on a device without it.
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split('.')[0] == 'openvino':
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Block())
        from motivnet_edge.backends import create_backend
        from motivnet_edge.package import load_package
        from motivnet_edge.errors import BackendUnavailableError
        try:
            create_backend(load_package({str(tiny_package)!r}), backend='openvino')
        except BackendUnavailableError as e:
            print(e); sys.exit(0)
        sys.exit(1)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "pip install openvino" in r.stdout


def test_package_trt_table_is_required_and_copied(tiny_package, tmp_path):
    # The TensorRT provider is not available here; the table handling before it is checked.
    from motivnet_edge.backends import _package_trt_table
    with pytest.raises(PackageError, match="no TensorRT calibration table"):
        _package_trt_table(load_package(tiny_package), BackendOptions(trt_cache_dir=str(tmp_path)))


def test_isolated_worker_reports_its_own_peak_memory(tiny_package):
    """The worker's peak RSS is its own, not the parent's high-water mark inherited across exec."""
    from motivnet_edge.timing import BenchConfig, peak_rss_mb, run_isolated

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB touched in this (parent) process
    parent = peak_rss_mb()
    out = run_isolated(tiny_package, BenchConfig("onnxruntime", "fp32", 1, 1), iters=5, seconds=0.1)
    assert parent > 400 and 0 < out["peak_rss_mb"] < parent - 300, (parent, out["peak_rss_mb"])
    del ballast


def _workers_of(marker: str) -> list[int]:
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "motivnet_edge.timing" in cmd and marker in cmd:
            pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_benchmark_workers_die_with_a_killed_parent(package_copy):
    import signal
    import time

    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from motivnet_edge.timing import BenchConfig, run_isolated
        run_isolated({str(package_copy)!r}, BenchConfig(), iters=10**9, seconds=120)
    """)])
    deadline = time.time() + 60
    while time.time() < deadline and not _workers_of(str(package_copy)):
        time.sleep(0.1)
    assert _workers_of(str(package_copy)), "the worker never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _workers_of(str(package_copy)):
        time.sleep(0.1)
    assert not _workers_of(str(package_copy))


def test_time_interleaved_times_each_call_in_turn():
    import time

    from motivnet_edge.timing import time_interleaved

    counts = {"slow": 0, "fast": 0}

    def call(name, pause):
        counts[name] += 1
        time.sleep(pause)

    times = time_interleaved({"slow": lambda: call("slow", 0.002), "fast": lambda: call("fast", 0)},
                             seconds=0.05, warmup=3)
    assert len(times["slow"]) == len(times["fast"]) >= 1  # one call each per round
    assert counts["slow"] == counts["fast"] == len(times["slow"]) + 3  # warm-up calls are not timed
    assert min(times["slow"]) >= 2.0 > float(np.median(times["fast"]))


def _other_model_bytes(package_copy, rel):
    """A different but valid model of the same shape: the same file with its logits sign-flipped
    is not needed; any byte change is a different file for the check."""
    data = bytearray((package_copy / rel).read_bytes())
    data[-1] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("backend, rel", [("onnxruntime", "model.onnx"), ("openvino", "openvino/model.xml"),
                                          ("openvino", "openvino/model.bin")])
def test_a_file_swapped_after_verification_is_never_run(package_copy, backend, rel):
    """load_package verified the files; a swap before the runtime opens them is caught, because
    the runtime gets the bytes that were hashed, not the path."""
    if backend not in installed_backends():
        pytest.skip(f"{backend} is not installed")
    pkg = load_package(package_copy)
    (package_copy / rel).write_bytes(_other_model_bytes(package_copy, rel))
    with pytest.raises(PackageError, match=f"{rel} does not match its sha256"):
        create_backend(pkg, backend=backend, precision="fp32", options=BackendOptions(autotune=False))


def test_openvino_weights_outside_the_package_or_unlisted_are_refused(package_copy, tmp_path):
    import json
    import shutil

    if "openvino" not in installed_backends():
        pytest.skip("openvino is not installed")
    outside = tmp_path / "elsewhere.bin"
    shutil.copy(package_copy / "openvino" / "model.bin", outside)
    (package_copy / "openvino" / "model.bin").unlink()
    (package_copy / "openvino" / "model.bin").symlink_to(outside)
    with pytest.raises(PackageError, match="resolves outside the package"):
        load_package(package_copy)
    (package_copy / "openvino" / "model.bin").unlink()
    shutil.copy(outside, package_copy / "openvino" / "model.bin")
    m = json.loads((package_copy / "manifest.json").read_text())
    for f in m["files"]:
        f["extra_files"] = {}
    (package_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="exactly one .bin listed"):
        create_backend(load_package(package_copy), backend="openvino", precision="fp32",
                       options=BackendOptions(autotune=False))


def test_onnx_with_unlisted_external_data_is_refused(package_copy, tmp_path):
    """An ONNX file that points its weights at a file the manifest does not list is refused
    before a runtime sees it (tests/test_external_data.py: the working directory case)."""
    onnx = pytest.importorskip("onnx", reason="crafting the model needs the export extra")
    import json

    from motivnet_edge.package import sha256_file

    model = onnx.load(package_copy / "model.onnx")
    onnx.save_model(model, package_copy / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.data", size_threshold=0)
    m = json.loads((package_copy / "manifest.json").read_text())
    m["files"][0]["sha256"] = sha256_file(package_copy / "model.onnx")
    (package_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="reads external data from 'weights.data', which its manifest does not list"):
        create_backend(load_package(package_copy), backend="onnxruntime", precision="fp32",
                       options=BackendOptions(autotune=False))


@pytest.mark.slow
def test_gemm_peaks_are_probed_per_precision():
    from conftest import load_benchmark

    gemm_peak_gflops = load_benchmark("gemm_peak").gemm_peak_gflops

    fp32, int8 = gemm_peak_gflops(1, n=256, seconds=0.3), gemm_peak_gflops(1, n=256, seconds=0.3, precision="int8")
    assert fp32 > 0 and int8 > 0
    with pytest.raises(Exception, match="fp32 or int8"):
        gemm_peak_gflops(1, precision="bf16")


def test_one_backend_table_serves_the_reader_the_options_and_the_exporter():
    """Issue 43 (1): a backend is one BackendSpec; the package reader, --backend / --precision and
    the exporter's format table all read it."""
    from motivnet_edge import cli_options
    from motivnet_edge.backends import registry

    assert registry.BACKENDS == ("auto", *(s.name for s in registry.BACKEND_SPECS))
    assert set(registry.PRECISIONS) == {"auto", "fp32", "fp16", "int8", "bf16"}
    choices = {o.name: o.type.choices for o in
               (opt(lambda: None).__click_params__[0] for opt in cli_options.BACKEND_OPTIONS)}
    assert tuple(choices["backend"]) == registry.BACKENDS and tuple(choices["precision"]) == registry.PRECISIONS
    from motivnet_edge.backends import Backend

    for name in installed_backends():
        assert issubclass(registry.SPECS[name].backend_class(), Backend)
    formats = pytest.importorskip("motivnet_export.formats", reason="the format table needs the export extra")
    assert {f.backend for f in formats.FORMATS.values()} == set(registry.SPECS)
