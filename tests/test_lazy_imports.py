"""Every `from earshot.… import name` in the package, the scripts and the benchmarks resolves.

Many imports sit inside functions (to keep `earshot --help` fast, or a script's light path
light), so a module move breaks them only when that function runs: the experiment script's
`run` once broke this way and nothing noticed. This reads every such import statically and
resolves it, without running the code around it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("src/earshot", "scripts", "bench")


def _earshot_imports() -> list[tuple[str, int, str, str | None]]:
    """(file, line, module, name or None) of every import of an earshot module."""
    found = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    if node.module == "earshot" or node.module.startswith("earshot."):
                        for alias in node.names:
                            found.append((rel, node.lineno, node.module, alias.name))
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith("earshot."):
                            found.append((rel, node.lineno, alias.name, None))
    return found


def _resolve(module: str, name: str | None) -> str | None:
    """None where `from module import name` works; else why not. A module that needs an
    optional extra not installed here is taken as resolving (its own tests cover it)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and not e.name.startswith("earshot"):
            return None  # an optional dependency (ray, boto3...) absent from this venv
        return f"no module {e.name}"
    if name is None or name == "*" or hasattr(mod, name):
        return None
    try:
        importlib.import_module(f"{module}.{name}")  # a submodule
        return None
    except ModuleNotFoundError as e:
        if e.name and not e.name.startswith("earshot"):
            return None
        return f"{module} has no {name}"


def test_the_scan_finds_the_lazy_imports():
    found = _earshot_imports()
    files = {f for f, *_ in found}
    assert "scripts/pool_experiment.py" in files and any(f.startswith("bench/") for f in files)
    assert len(found) > 200


def test_every_earshot_import_resolves():
    broken = []
    for file, line, module, name in _earshot_imports():
        why = _resolve(module, name)
        if why:
            broken.append(f"{file}:{line}: from {module} import {name}: {why}")
    assert not broken, "\n".join(broken)


def test_a_moved_name_is_caught():
    assert _resolve("earshot.train.heads", "_Split") is None
    assert "has no" in _resolve("earshot.train.heads", "no_such_name")
    assert "no module" in _resolve("earshot.no_such_module", "x")
