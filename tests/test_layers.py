"""The package's layering, checked so that a later change cannot quietly bring a cycle back.

The contracts live in pyproject.toml (``[tool.importlinter]``): CLI → process hosts
(engine | worker | web, independent of each other) → worker runtime → App → modules →
shared core, and no import cycle between the modules of any package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import iii_broker
from iii_broker.modules import all_trigger_types

ROOT = Path(iii_broker.__file__).parent
PROJECT = ROOT.parent
HOSTS = ("engine", "worker", "web", "runtime")


def _sources(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    return sorted(base.rglob("*.py")) if base.is_dir() else [base]


def test_the_import_contracts_hold():
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _own(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "iii_broker"
    return any(alias.name.split(".")[0] == "iii_broker" for alias in node.names)


def test_no_import_of_our_own_code_sits_inside_a_function():
    """Such an import hides a dependency, usually one dodging a cycle. (Optional third-party
    packages, e.g. the embedded server's, may still be imported where they are needed.)"""
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import | ast.ImportFrom) and _own(node):
                        found.append(f"{path.relative_to(PROJECT)}:{node.lineno}")
    assert found == []


def test_no_process_host_names_a_trigger_type():
    """Hosts call module hooks; a trigger type's name belongs to its module alone."""
    names = set(all_trigger_types())
    found = []
    for host in (*HOSTS, "app.py"):
        for path in _sources(host):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{path.relative_to(PROJECT)}:{node.lineno} {node.value!r}")
    assert found == []
