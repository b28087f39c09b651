"""The runtime stands on its own: no torch on import, CLI verbs present in a built wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_runtime_does_not_import_torch():
    code = ("import sys, motivnet_edge, motivnet_edge.cli, motivnet_edge.recognizer; "
            "bad = [m for m in ('torch', 'nncf', 'onnx', 'openvino') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_wheel_carries_all_packages_and_default_model(tmp_path):
    # A real, isolated build as `pip install .` does it (fetches the build backend).
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(tmp_path), "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("motivnet_edge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for must in ("motivnet_edge/cli.py", "motivnet_distill/students/model.py", "motivnet_export/exporter.py",
                 "motivnet_edge/models/default/manifest.json", "motivnet_edge/models/default/model.onnx"):
        assert must in names, f"{must} missing from the wheel"
    assert not any(n.startswith(("distill/", "export/")) for n in names), "generic top-level names leaked"
    # Every file each embedded manifest lists must be in the wheel, within that model's budget
    # (make_default.py's BUDGET_BYTES: every embedded binary stays in git history).
    import json
    from conftest import load_benchmark
    from motivnet_edge.package import embedded_models
    budgets = load_benchmark("make_default").BUDGET_BYTES
    assert embedded_models() and set(embedded_models()) <= set(budgets)
    for name in embedded_models():
        folder = f"motivnet_edge/models/{name}/"
        manifest = json.loads(zipfile.ZipFile(wheel).read(folder + "manifest.json"))
        listed = [f["path"] for f in manifest["files"]] + [p for f in manifest["files"] for p in f["extra_files"]]
        listed += list(manifest["assets"])
        assert all(folder + p in names for p in listed), name
        size = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist() if i.filename.startswith(folder))
        assert size <= budgets[name], (name, size)


def _imported_packages(folder: Path) -> dict[str, set[str]]:
    """{module file: top-level packages it imports}, read from the source (every import, lazy ones too)."""
    import ast

    out = {}
    for path in sorted(folder.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize("folder, forbidden", [
    ("motivnet_edge", {"motivnet_distill", "motivnet_export", "torch", "nncf", "onnx"}),
    ("distill", {"motivnet_export", "nncf"}),
])
def test_one_dependency_order_runtime_then_distill_then_export(folder, forbidden):
    """runtime <- distill <- export: no module imports a package above it, not even lazily."""
    bad = {f: sorted(names & forbidden) for f, names in _imported_packages(ROOT / folder).items()
           if names & forbidden}
    assert not bad, bad


def _module_graph() -> dict[str, set[str]]:
    """{module: modules of this project it imports}, from the source, lazy imports included."""
    import ast

    roots = {"motivnet_edge": ROOT / "motivnet_edge", "motivnet_distill": ROOT / "distill",
             "motivnet_export": ROOT / "export"}
    graph = {}
    for pkg, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [pkg, *path.relative_to(folder).with_suffix("").parts]
            is_init = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_init else parts)
            here = parts[:-1]  # the package the module sits in
            deps = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    base = here[:len(here) - node.level + 1] if node.level else []
                    mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
                    deps.add(mod)
                    deps |= {f"{mod}.{a.name}" for a in node.names}
                elif isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names}
            graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_cycle_anywhere():
    """No chain of imports (lazy ones too) leads a module back to itself: e.g. building a
    recognizer must not be able to reach the benchmark workers through the backend registry."""
    graph = _module_graph()
    assert "motivnet_edge.backends" in graph and graph["motivnet_edge.recognizer"]
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph[m]):
            if d.startswith(m + ".") or m.startswith(d + "."):
                continue  # a package importing its own submodule (or the reverse) is not a cycle
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles
