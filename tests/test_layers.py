"""The package's layers only look down (docs/ARCHITECTURE.md, "Layers").

Static: every import in the source tree (lazy ones inside functions included, `if TYPE_CHECKING:`
blocks excluded) goes to the same or a lower layer, and the module graph has no circle.
Dynamic: importing a layer in a fresh interpreter loads nothing above it (and the runtime loads
no torch: a phone app ships without it).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"bua": ROOT / "python" / "bua", "bua.training": ROOT / "training", "bua.export": ROOT / "export"}
EXTENSIONS = ("bua._native",)  # compiled, no source to parse

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS = (
    ("base", ("bua.fsio", "bua.events", "bua.vocab", "bua.textformat", "bua.loaders", "bua.samples",
              "bua.metrics", "bua.scenes", "bua.simulate", "bua.chat", "bua.backbones")),
    ("dialogue", ("bua.dialogue",)),
    ("labels", ("bua.labels",)),
    ("models", ("bua.models",)),
    ("runtime", ("bua.runtime", "bua._native")),
    ("training", ("bua.training",)),
    ("export", ("bua.export",)),
    ("app", ("bua.app", "bua")),  # `bua` itself: the public facade (`from bua import OnDevicePredictor`)
)


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    if rank is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/ARCHITECTURE.md")
    return rank


def source_modules() -> dict[str, Path]:
    out = {}
    for package, root in SOURCES.items():
        for path in root.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The bua modules `module` imports anywhere in its source (a `from pkg import sub` counts as
    an import of `pkg.sub` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "bua")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "bua":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            if len(subs) < len(node.names):
                out.add(target)
            out.update(subs)
    return out - {module}


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules) | set(EXTENSIONS)
    return {m: imports_of(m, p, known) for m, p in modules.items()}


def test_every_module_has_a_layer():
    for module in source_modules():
        layer_of(module)


def test_imports_only_look_down():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in import_graph().items() for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_circle():
    graph = import_graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The static check is only as good as its parser: a function-level import and a relative
    import are both edges; an import under TYPE_CHECKING is not."""
    path = tmp_path / "mod.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bua.app import demo\n"
                    "def f():\n    from bua.training import data\n    from . import vocab\n")
    known = {"bua.training.data", "bua.vocab", "bua.app.demo"}
    assert imports_of("bua.events", path, known) == {"bua.training.data", "bua.vocab"}


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS[:-1]])
def test_a_layer_imports_nothing_above_it_at_run_time(layer):
    rank = [name for name, _ in LAYERS].index(layer)
    modules = sorted(m for m in source_modules() if layer_of(m) == rank)
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('bua'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                       cwd=ROOT).stdout)
    # `bua` itself is always loaded (every submodule's parent); it imports nothing eagerly, so
    # anything it would pull in shows up as its own module here.
    above = [m for m in loaded if m not in ("torch", "bua") and layer_of(m) > rank]
    assert not above, f"importing the {layer} layer loaded {above}"
    if layer in ("base", "dialogue", "runtime"):
        assert "torch" not in loaded, f"the {layer} layer must import without torch"

