"""House rules (issue 13) for cli/, train/, data/, zoo/ and eval/: layers, one entry point, small pieces.

* nothing outside ``ptalker_cli/cli`` (and the entry point ``__main__.py``) imports it, not even
  lazily inside a function;
* ``ptalker_cli/__main__.py`` (the Typer app) is the only command-line entry point, and
  ``--devices N`` hands torchrun ``-m ptalker_cli train``;
* no module of those packages over 600 lines, no function over 120;
* no import cycle between the package's modules at import time.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "ptalker_cli"
SIZED = ("cli", "train", "data", "zoo", "eval")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 120


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package)."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _imported(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, known) -> set[str]:
    """The package's modules an import statement loads (absolute names)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level else []
    target = ".".join(base + ([node.module] if node.module else []))
    return {target} | {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}


def _import_nodes(node: ast.AST, at_import_time: bool):
    """Import statements under ``node``; ``at_import_time``: not those in function bodies or under TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif not (at_import_time and _runs_later(child)):
            yield from _import_nodes(child, at_import_time)


def _runs_later(node: ast.AST) -> bool:
    """A function body (runs when called) or an ``if TYPE_CHECKING:`` block (never runs)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return True
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str, at_import_time: bool) -> set[str]:
    known = _modules()
    path, is_pkg = known[module]
    out = set()
    for n in _import_nodes(ast.parse(path.read_text()), at_import_time):
        out |= {t for t in _imported(module, is_pkg, n, known)
                if t in known and t != module and not module.startswith(t + ".")}  # parents load first anyway
    return out


def test_nothing_outside_cli_imports_cli():
    library = [m for m in sorted(_modules()) if not m.startswith(("ptalker_cli.cli", "ptalker_cli.__main__"))]
    offenders = [f"{m} imports {t}" for m in library
                 for t in sorted(_imports(m, at_import_time=False)) if t.startswith("ptalker_cli.cli")]
    assert offenders == [], "library code must not import the CLI; pass what it needs (e.g. ptalker_cli.console)"


def test_one_command_line_entry_point():
    mains = sorted(str(p.relative_to(PKG.parent)) for p in PKG.rglob("__main__.py"))
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


def test_modules_and_functions_stay_small():
    too_long = []
    for sub in SIZED:
        for path in sorted((PKG / sub).rglob("*.py")):
            text = path.read_text()
            rel = path.relative_to(PKG.parent)
            if len(text.splitlines()) > MAX_MODULE_LINES:
                too_long.append(f"{rel}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        too_long.append(f"{rel}:{node.lineno} {node.name}(): {n} lines")
    assert too_long == [], "split these along their seams"


def test_no_import_cycle_at_import_time():
    graph = {m: _imports(m, at_import_time=True) for m in _modules()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
