"""How a package's backend and precision are chosen: "auto" rules, INT8 agreement, bf16, autotune's cache."""

import json

import numpy as np
import pytest

from motivnet_edge.backends import BackendOptions, create_backend, installed_backends
from motivnet_edge.errors import BackendUnavailableError, OptionError
from motivnet_edge.package import load_package

from conftest import random_batch


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
    from motivnet_edge.backends import auto_candidates

    # Timed (and cached) only where there is a choice: with ONNX Runtime alone (the plainest
    # device install) the tiny package offers one candidate, and nothing is measured.
    choices = len(auto_candidates(pkg, "auto", "auto", BackendOptions(autotune=True)))
    assert len(list((tmp_path / "cache" / "autotune").glob("*.json"))) == (1 if choices > 1 else 0)


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
    x = random_batch(pkg, 16)
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
    x = random_batch(pkg, 16)
    b = create_backend(pkg, backend="openvino", precision="bf16")
    ref = create_backend(pkg, backend="openvino", precision="fp32").run(x)
    out = b.run(x)
    assert b.precision == "bf16"
    # bf16 keeps 8 mantissa bits: close to fp32, but not equal to it (or the hint did nothing)
    assert 1e-4 < np.abs(out - ref).max() < 0.5


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


def test_an_arm_cpuinfo_names_its_core_and_int8_dot_products():
    """Issue 44: ARM's /proc/cpuinfo has Features and CPU part, no flags or model name."""
    from motivnet_edge.cpu import INT8_FLAGS, parse_cpuinfo

    block = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid{extra}\n"
             "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: {part}\n\n")
    pi4 = "".join(block.format(n=n, extra="", part="0xd08") for n in range(4))
    name, flags = parse_cpuinfo(pi4)
    assert "Cortex-A72" in name and "asimd" in flags and not flags & INT8_FLAGS
    orin = block.format(n=0, extra=" asimddp i8mm", part="0xd42")
    name, flags = parse_cpuinfo(orin)
    assert "Cortex-A78AE" in name and {"asimddp", "i8mm"} <= flags & INT8_FLAGS
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 fma avx512_vnni\n\n"
    assert parse_cpuinfo(x86) == ("AMD EPYC", frozenset({"fpu", "avx2", "fma", "avx512_vnni"}))
