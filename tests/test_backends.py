"""Every installed backend runs the same tiny model and agrees; auto rules; missing backends."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from motivnet_edge.backends import BackendOptions, create_backend, installed_backends
from motivnet_edge.errors import BackendUnavailableError, OptionError, PackageError
from motivnet_edge.package import load_package
from motivnet_edge.preprocess import to_tensor


def _batch(pkg, n=5):
    crops = np.random.default_rng(1).integers(0, 255, (n, *pkg.preprocessing.input_size), dtype=np.uint8)
    return to_tensor(crops, pkg.preprocessing)


@pytest.mark.parametrize("backend", installed_backends())
def test_backends_agree_with_torch(tiny_package, tiny_checkpoint, backend):
    torch = pytest.importorskip("torch")
    from motivnet_export.sources import load_source

    pkg = load_package(tiny_package)  # committed; the checkpoint is rebuilt from the same seed
    x = _batch(pkg)
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
    x = _batch(pkg)
    ref = create_backend(pkg, backend="onnxruntime", precision="fp32", options=BackendOptions(threads=2)).run(x)
    b = create_backend(pkg, backend="onnxruntime", precision="fp32", options=BackendOptions(threads=2, spin=spin))
    entry = b.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert entry == ("0" if spin is False else "1")  # None: a bare backend keeps ORT's default
    np.testing.assert_allclose(b.run(x), ref, atol=1e-6)


def _tuned(pkg, options):
    """What a recognizer does: resolve "auto" (timing only when autotune is on), then open the backend."""
    from motivnet_edge.autotune import tuned_choice

    backend, precision = tuned_choice(pkg, "auto", "auto", options)
    return create_backend(pkg, backend=backend, precision=precision, options=options)


def test_auto_is_measured_here_once_then_read_from_the_cache(tiny_package, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("MOTIVNET_CACHE", str(tmp_path / "cache"))
    pkg = load_package(tiny_package)
    b = _tuned(pkg, BackendOptions(threads=1, autotune=True))
    files = list((tmp_path / "cache" / "autotune").glob("*.json"))
    if len(installed_backends()) == 1:  # a device with one runtime: one candidate, nothing to time
        assert files == [] and b.name == installed_backends()[0] and b.precision == "fp32"
        return
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert set(record["p50_ms"]) == {f"{name} fp32" for name in installed_backends()}
    assert [b.name, b.precision] == record["choice"]
    # the cache decides from now on: no second measurement, whatever it says
    other = next((n for n in installed_backends() if n != b.name), b.name)
    record["choice"] = [other, "fp32"]
    files[0].write_text(json.dumps(record))
    assert _tuned(pkg, BackendOptions(threads=1, autotune=True)).name == other
    assert len(list((tmp_path / "cache" / "autotune").glob("*.json"))) == 1


def test_nothing_is_timed_unless_asked_and_gpu_providers_measure_nothing(tiny_package, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIVNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MOTIVNET_AUTOTUNE", raising=False)
    pkg = load_package(tiny_package)
    assert _tuned(pkg, BackendOptions(providers=("cpu",), autotune=True)).name == "onnxruntime"
    assert _tuned(pkg, BackendOptions(autotune=False)).precision == "fp32"
    _tuned(pkg, BackendOptions())  # the default: the manifest decides, nothing is timed
    monkeypatch.setenv("MOTIVNET_AUTOTUNE", "0")
    _tuned(pkg, BackendOptions())
    assert not (tmp_path / "cache" / "autotune").exists()
    monkeypatch.setenv("MOTIVNET_AUTOTUNE", "1")
    _tuned(pkg, BackendOptions())
    assert len(list((tmp_path / "cache" / "autotune").glob("*.json"))) == 1


@pytest.mark.parametrize("p50, expected", [
    ({("onnxruntime", "fp32"): 1.0, ("onnxruntime", "int8"): 0.95}, ("onnxruntime", "fp32")),  # within noise
    ({("onnxruntime", "fp32"): 1.0, ("onnxruntime", "int8"): 0.5}, ("onnxruntime", "int8")),
    ({("onnxruntime", "fp32"): 1.0, ("onnxruntime", "int8"): 3.0,
      ("openvino", "fp32"): 1.2, ("openvino", "int8"): 0.7}, ("openvino", "int8")),
    ({("onnxruntime", "fp32"): 2.0, ("openvino", "fp32"): 1.0}, ("openvino", "fp32")),
])
def test_autotune_rule_needs_int8_to_clearly_win(p50, expected):
    from motivnet_edge.autotune import pick

    assert pick(p50) == expected


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


def _fake_package(latency: dict, agreement: float | None = 0.999):
    """What choose_precision reads: the package's files, its recorded latency and INT8 agreement."""
    from types import SimpleNamespace

    files = [SimpleNamespace(backend="onnxruntime", precision=p) for p in ("fp32", "int8")]
    int8 = {"onnxruntime": {"test_agreement": agreement}} if agreement is not None else {}
    return SimpleNamespace(files=files, metrics={"latency": {"onnxruntime": latency}, "int8": int8})


@pytest.mark.parametrize("agreement, expected", [(None, "fp32"), (0.99, "fp32"), (0.995, "int8"), (1.0, "int8")])
def test_auto_precision_needs_int8_that_agrees_with_fp32_on_the_test_faces(monkeypatch, agreement, expected):
    """Auto may pick INT8 only where the same face would get the same label (>= 99.5 % agreement)."""
    import motivnet_edge.backends as backends

    monkeypatch.setattr(backends, "int8_flags", lambda: frozenset({"avx512_vnni"}))
    pkg = _fake_package({"fp32_ms": 2.0, "int8_ms": 1.0, "cpu_int8_flags": ["avx512_vnni"]}, agreement)
    assert backends.choose_precision(pkg, "onnxruntime", "auto", BackendOptions()) == expected


@pytest.mark.parametrize("recorded, here, expected", [
    ([], {"avx512_vnni"}, "fp32"),                 # measured on a CPU without VNNI: says nothing here
    (["avx512_vnni"], {"avx512_vnni"}, "int8"),    # measured faster with the instructions this CPU has
    (["amx_int8"], {"avx512_vnni"}, "fp32"),       # measured with AMX, which this CPU lacks
    (["avx512_vnni"], set(), "fp32"),              # this CPU has no INT8 dot product at all
])
def test_auto_precision_needs_a_figure_from_the_same_int8_instructions(monkeypatch, recorded, here, expected):
    import motivnet_edge.backends as backends

    monkeypatch.setattr(backends, "int8_flags", lambda: frozenset(here))
    pkg = _fake_package({"fp32_ms": 2.0, "int8_ms": 1.0, "cpu_int8_flags": recorded})
    assert backends.choose_precision(pkg, "onnxruntime", "auto", BackendOptions()) == expected


@pytest.mark.skipif("openvino" not in installed_backends(), reason="OpenVINO is not installed")
def test_openvino_fp32_is_fp32_even_on_bf16_cpus(tiny_package):
    """On AVX512_BF16/AMX CPUs OpenVINO defaults to bf16; fp32 must match ONNX Runtime's fp32 closely."""
    pkg = load_package(tiny_package)
    x = _batch(pkg, 16)
    ref = create_backend(pkg, backend="onnxruntime", precision="fp32").run(x)
    out = create_backend(pkg, backend="openvino", precision="fp32").run(x)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif("openvino" not in installed_backends(), reason="OpenVINO is not installed")
def test_bf16_is_explicit_and_only_where_the_cpu_has_it(tiny_package):
    from motivnet_edge.cpu import has_bf16

    pkg = load_package(tiny_package)
    with pytest.raises(OptionError, match="--backend openvino"):
        create_backend(pkg, backend="onnxruntime", precision="bf16")
    if not has_bf16():
        with pytest.raises(BackendUnavailableError, match="no bf16 instructions"):
            create_backend(pkg, backend="openvino", precision="bf16")
        return
    x = _batch(pkg, 16)
    b = create_backend(pkg, backend="openvino", precision="bf16")
    ref = create_backend(pkg, backend="openvino", precision="fp32").run(x)
    out = b.run(x)
    assert b.precision == "bf16"
    # bf16 keeps 8 mantissa bits: close to fp32, but not equal to it (or the hint did nothing)
    assert 1e-4 < np.abs(out - ref).max() < 0.5


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


def test_a_corrupt_autotune_cache_entry_is_measured_again(tiny_package, tmp_path, monkeypatch):
    if len(installed_backends()) < 2:
        pytest.skip("autotune needs two runtimes to choose between")
    from motivnet_edge import autotune

    monkeypatch.setenv("MOTIVNET_CACHE", str(tmp_path / "cache"))
    pkg = load_package(tiny_package)
    first = _tuned(pkg, BackendOptions(threads=1, autotune=True))
    (entry,) = (tmp_path / "cache" / "autotune").glob("*.json")
    for bad in ('{"choice": ["tensorflow", "fp64"]}', "{not json", "[" * 50000):
        entry.write_text(bad)
        b = _tuned(pkg, BackendOptions(threads=1, autotune=True))
        assert b.name in installed_backends() and (b.name, b.precision) != ("tensorflow", "fp64")
    assert json.loads(entry.read_text())["choice"] in ([first.name, first.precision], [b.name, b.precision])
    assert autotune.enabled(None) is False


@pytest.mark.slow
def test_gemm_peaks_are_probed_per_precision():
    from motivnet_edge.timing import gemm_peak_gflops

    fp32, int8 = gemm_peak_gflops(1, n=256, seconds=0.3), gemm_peak_gflops(1, n=256, seconds=0.3, precision="int8")
    assert fp32 > 0 and int8 > 0
    with pytest.raises(Exception, match="fp32 or int8"):
        gemm_peak_gflops(1, precision="bf16")
