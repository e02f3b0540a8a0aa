"""The house rules (issue 13), read from the package's source (docs/architecture.md states them).

* the layering: each layer imports only the layers below it; nothing outside ``cli/`` (and the
  entry point ``__main__.py``) imports ``cli/``;
* no import cycle;
* ``ptalker_cli/__main__.py`` is the only command-line entry point, and ``--devices N`` hands
  torchrun ``-m ptalker_cli train``;
* no module over 600 lines, no function over 120, anywhere in the package;
* the model folder's file names are written once.

There is no exceptions list. Imports are collected with ``ast`` from every module of
``ptalker_cli``: module-level and function-level (lazy) imports alike; only imports under
``if TYPE_CHECKING:`` are left out (they never run). A cycle through lazy imports counts too,
so this is stricter than a check of what runs at import time.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ptalker_cli"

#: the bottom layer: core types and helpers every package may use
CORE = {"errors", "fileio", "resources", "config", "mesh", "motion", "audio"}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 120


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(modules: dict[str, tuple[Path, bool]] | None = None) -> dict[str, set[str]]:
    """``{module: the ptalker_cli modules it imports}`` (``from .x import name`` counts as ``x.name`` when
    that is a module, else as ``x``)."""
    modules = modules or _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in modules.items():
        deps: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "ptalker_cli"]
            elif node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{prefix}.{a.name}" for a in node.names]
            elif (node.module or "").split(".")[0] == "ptalker_cli":
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                targets = []
            deps.update(t for t in map(known, targets) if t and t != mod)
        graph[mod] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(graph: dict[str, set[str]], allowed) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps if not allowed(m, d))


def test_the_import_graph_is_read():
    graph = import_graph()
    assert "ptalker_cli.model.network" in graph["ptalker_cli.inference"]
    assert "ptalker_cli.kernels.build" in graph["ptalker_cli.model.native_decoder"]
    assert "ptalker_cli.model.decoding" not in graph["ptalker_cli.model.released"]  # TYPE_CHECKING only


def test_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_core_modules_import_only_core_modules():
    core = {f"ptalker_cli.{name}" for name in CORE}
    graph = {m: deps for m, deps in import_graph().items() if m in core}
    assert not _violations(graph, lambda m, d: d in core)


def test_kernels_import_nothing_of_the_package():
    graph = {m: deps for m, deps in import_graph().items() if _layer(m) == "kernels"}
    assert not _violations(graph, lambda m, d: _layer(d) == "kernels")


def test_model_layer_imports_only_core_and_kernels():
    """The model layer never downloads (zoo) nor prints (cli): loaders are passed in."""
    graph = {m: deps for m, deps in import_graph().items() if _layer(m) == "model"}
    assert not _violations(graph, lambda m, d: _layer(d) in CORE | {"model", "kernels"})


def test_nothing_outside_cli_imports_cli():
    """(``python -m ptalker_cli``, the package's ``__main__``, is the CLI's entry point.)"""
    graph = {m: deps for m, deps in import_graph().items() if _layer(m) != "cli" and m != "ptalker_cli.__main__"}
    offenders = _violations(graph, lambda m, d: _layer(d) != "cli")
    assert not offenders, f"library code must not import the CLI; pass what it needs: {offenders}"


def test_modules_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(PACKAGE)
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}(): {n} lines")
    assert not too_long, f"split these along their seams: {too_long}"


def test_one_command_line_entry_point():
    mains = sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("__main__.py"))
    assert mains == ["ptalker_cli/__main__.py"]


def test_devices_hands_torchrun_the_one_app(monkeypatch):
    from ptalker_cli.train import distributed

    seen = []

    def popen(cmd, **kwargs):
        seen.append(cmd)
        raise OSError("not started in this test")

    monkeypatch.setattr(subprocess, "Popen", popen)
    with pytest.raises(OSError, match="not started"):
        distributed.launch_torchrun(2, ["--config", "run.json"])
    cmd = seen[0]
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node=2" in cmd
    assert cmd[cmd.index("--nproc-per-node=2") + 1:] == ["-m", "ptalker_cli", "train", "--config", "run.json"]


def test_model_folder_file_names_are_written_once():
    """model/folder.py owns the model folder; elsewhere the names come from there. (zoo/ also fetches
    ``config.json`` / ``model.safetensors`` of *speech encoders*: transformers' own file names.)"""
    from ptalker_cli.model.folder import MODEL_FILES

    speech_files = {"zoo/hub.py", "zoo/released_config.py"}  # the released speech encoders' configs
    spelled = []
    for path in PACKAGE.rglob("*.py"):
        rel = str(path.relative_to(PACKAGE))
        if rel == "model/folder.py" or rel in speech_files:
            continue
        spelled += [f"{rel}:{node.lineno}" for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Constant) and node.value in MODEL_FILES]
    assert not spelled, f"write model.folder.CONFIG_FILE / WEIGHTS_FILE instead: {spelled}"
