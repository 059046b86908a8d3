"""The layers of ARCHITECTURE.md, enforced by reading every import (module level and inside functions) of the package
and of the dashboard: each part imports only its own layer or lower ones, no cycles between parts, nothing below
``methods`` imports a method, no method imports another, the layers above reach methods only through the registry,
and the results read model imports no torch and no model code."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "platform" / "meddiff"

# part -> layer (ARCHITECTURE.md, "Layers"); a part is a top-level module or a package, and each method package
LAYERS: dict[str, int] = {
    **dict.fromkeys(["meddiff", "errors", "config", "rules", "provenance", "device", "progress", "bundle", "durable",
                     "method_registry", "raycluster", "tracking"], 0),
    **dict.fromkeys(["data", "results", "metrics"], 1),
    **dict.fromkeys(["models", "diffusion"], 2),
    "train": 3,
    "methods": 4,  # the interfaces (predictor, explainer) and the package that discovers the method packages
    "methods.*": 4,
    **dict.fromkeys(["scoring", "explain", "serving", "report", "bench", "cv", "sizing"], 5),
    **dict.fromkeys(["cli", "demo", "submit", "dashboard_server", "__main__"], 6),
}
METHODS_LAYER = 4
HEAVY = ("torch", "torchvision", "timm", "diffusers", "transformers")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str, package: Path = PACKAGE) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "meddiff"
    if parts[1] == "methods" and len(parts) > 2 and (package / "methods" / parts[2]).is_dir():
        return "methods." + parts[2]
    return parts[1]


def layer(part: str) -> int:
    key = "methods.*" if part.startswith("methods.") else part
    if key not in LAYERS:
        pytest.fail(f"{part} is in no layer: add it to the layer table of ARCHITECTURE.md and of this test")
    return LAYERS[key]


def imports(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every import in a file (``from a import b``: a.b when that is a module, else a)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found = [n for n in names if _exists(n, package)]
            out += [(node.lineno, n) for n in (found[1:] or found[:1])] if found else [(node.lineno, node.module)]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def _exists(module: str, package: Path) -> bool:
    if not module.startswith("meddiff"):
        return True
    p = package.parent.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def package_edges(package: Path = PACKAGE) -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> where, for every import between two parts of the package."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(package.rglob("*.py")):
        src = module_name(path, package)
        for line, target in imports(path, package):
            if target.split(".")[0] != "meddiff":
                continue
            a, b = part_of(src, package), part_of(target, package)
            if a != b:
                edges[(a, b)].append(f"{path.relative_to(package.parent)}:{line} imports {target}")
    return edges


def upward_imports(package: Path = PACKAGE) -> list[str]:
    return [f"{where[0]} ({a}, layer {layer(a)} -> {b}, layer {layer(b)})"
            for (a, b), where in package_edges(package).items() if layer(b) > layer(a)]


def test_every_part_imports_only_its_layer_or_lower():
    bad = upward_imports()
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles_between_parts():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in package_edges():
        if b != "meddiff":  # the root package holds only the version
            graph[a].add(b)
    cycles = []

    def visit(node, stack, seen):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)

    for start in sorted(graph):
        visit(start, [start], {start})
    assert not cycles, "import cycles between parts:\n" + "\n".join(sorted(set(cycles)))


def test_methods_are_reached_only_through_the_registry():
    bad = []
    for (a, b), where in package_edges().items():
        if not b.startswith("methods."):
            continue
        if a.startswith("methods."):
            bad.append(f"{where[0]} (a method imports another method)")
        elif layer(a) < METHODS_LAYER or layer(a) > METHODS_LAYER:
            bad.append(f"{where[0]} (a method imported by {a}: go through meddiff.methods / the registry)")
    assert not bad, "\n".join(bad)


def test_results_import_no_torch_and_no_model_code():
    bad = []
    for path in sorted((PACKAGE / "results").rglob("*.py")):
        for line, target in imports(path):
            top = target.split(".")[0]
            if top in HEAVY or (top == "meddiff" and part_of(target) in ("models", "diffusion", "train", "methods")
                                 or part_of(target).startswith("methods.")):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_dashboard_reads_results_only():
    allowed = {"results", "errors", "config", "meddiff"}
    bad = []
    for path in sorted((REPO / "dashboard").rglob("*.py")):
        for line, target in imports(path):
            if target.split(".")[0] == "meddiff" and part_of(target) not in allowed:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
            if target.split(".")[0] in HEAVY:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_only_tracking_imports_mlflow():
    bad = [f"{path.relative_to(REPO)}:{line} imports {target}"
           for root in (PACKAGE, REPO / "dashboard") for path in sorted(root.rglob("*.py"))
           for line, target in imports(path) if target.split(".")[0] == "mlflow" and path != PACKAGE / "tracking.py"]
    assert not bad, "\n".join(bad)
    assert any(t.startswith("mlflow") for _, t in imports(PACKAGE / "tracking.py"))


def test_reading_a_config_and_the_registries_imports_no_torch():
    code = ("import sys, meddiff.config as c, meddiff.methods as m, meddiff.rules as r, meddiff.results.runs, meddiff.results.summary; "
            "[c.load_config(p) for p in c.preset_names()]; assert len(m.METHODS) >= 6, m.METHODS; "
            "heavy = [k for k in sys.modules if k.split('.')[0] in %r]; assert not heavy, heavy[:5]" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_checker_sees_a_violation(tmp_path):
    """The checks can fail: in a copy of the package, a lazy import of a method from a ground-floor module is an
    upward import."""
    copy = tmp_path / "meddiff"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert upward_imports(copy) == upward_imports()
    errors = copy / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _late():\n    from meddiff.methods.diffusion import predictor\n")
    found = set(upward_imports(copy)) - set(upward_imports())
    assert len(found) == 1 and "errors.py" in next(iter(found)) and "methods.diffusion" in next(iter(found))
