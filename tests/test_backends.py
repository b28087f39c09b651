"""Every installed backend runs the same tiny model and agrees; auto rules; missing backends."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from motivnet_edge.backends import BackendOptions, create_backend, installed_backends
from motivnet_edge.errors import BackendUnavailableError, PackageError
from motivnet_edge.package import load_package
from motivnet_edge.preprocess import to_tensor


def _batch(pkg, n=5):
    crops = np.random.default_rng(1).integers(0, 255, (n, *pkg.preprocessing.input_size), dtype=np.uint8)
    return to_tensor(crops, pkg.preprocessing)


@pytest.mark.parametrize("backend", installed_backends())
def test_backends_agree_with_torch(tiny_package, tiny_checkpoint, backend):
    torch = pytest.importorskip("torch")
    from motivnet_export.sources import load_source

    pkg = load_package(tiny_package)
    x = _batch(pkg)
    with torch.no_grad():
        ref = load_source(tiny_checkpoint).model(torch.from_numpy(x)).numpy()
    b = create_backend(pkg, backend=backend, precision="fp32", options=BackendOptions(threads=1))
    out = b.run(x)
    assert out.shape == (5, 7)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert np.allclose(b.run(x[:1]), out[:1], atol=1e-5)  # dynamic batch


def test_auto_picks_the_measured_fastest_backend_and_fp32_here(tiny_package):
    pkg = load_package(tiny_package)
    lat = pkg.metrics["latency"]
    b = create_backend(pkg)
    assert b.name == min(installed_backends(), key=lambda k: lat[k]["fp32_ms"]) and b.precision == "fp32"
    assert create_backend(pkg, options=BackendOptions(providers=("cpu",))).name == "onnxruntime"


def test_precision_that_the_package_lacks(tiny_package):
    with pytest.raises(PackageError, match="no int8 model"):
        create_backend(load_package(tiny_package), precision="int8")
    with pytest.raises(PackageError, match="precision 'int4'"):
        create_backend(load_package(tiny_package), precision="int4")


def test_unknown_backend_and_provider(tiny_package):
    pkg = load_package(tiny_package)
    with pytest.raises(PackageError, match="unknown backend"):
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
    assert "motivnet-edge[openvino]" in r.stdout


def test_package_trt_table_is_required_and_copied(tiny_package, tmp_path):
    # The TensorRT provider is not available here; the table handling before it is checked.
    from motivnet_edge.backends import _package_trt_table
    with pytest.raises(PackageError, match="no TensorRT calibration table"):
        _package_trt_table(load_package(tiny_package), BackendOptions(trt_cache_dir=str(tmp_path)))


def test_isolated_worker_reports_its_own_peak_memory(tiny_package):
    """The worker's peak RSS is its own, not the parent's high-water mark inherited across exec."""
    from motivnet_edge.benchmark import BenchConfig, peak_rss_mb, run_isolated

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB touched in this (parent) process
    parent = peak_rss_mb()
    out = run_isolated(tiny_package, BenchConfig("onnxruntime", "fp32", 1, 1), iters=5, seconds=0.1)
    assert parent > 400 and 0 < out["peak_rss_mb"] < parent - 300, (parent, out["peak_rss_mb"])
    del ballast
