"""The runtime package's layers import only what they may (README.md, "Layout").

Networks know no training scheme or loss; losses and metrics are pure functions of tensors; methods know no
evaluation code and no ignite; the engine knows no loss. A violation names the file and the import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "common"
# layer -> parts of the package it must not import (a part is a subpackage or a top-level module)
FORBIDDEN = {
    "networks": {"losses", "methods", "engines", "inferers", "metrics", "tools", "datasets"},
    "losses": {"networks", "methods", "engines", "inferers", "tools", "datasets"},
    "metrics": {"networks", "methods", "engines", "losses", "tools", "datasets"},
    "methods": {"engines", "inferers", "metrics", "tools", "datasets"},
    "engines": {"losses", "tools", "datasets"},
    "schedules": {"networks", "losses", "methods", "engines", "inferers", "metrics", "tools", "datasets"},
}
FORBIDDEN_THIRD_PARTY = {"methods": {"ignite"}, "losses": {"ignite"}, "networks": {"ignite"}}


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_parts(path: Path) -> set[str]:
    """Package parts (``losses``, ``inferers``, ...) a file imports relatively, and third-party top-level names."""
    module = path.relative_to(PACKAGE).with_suffix("").parts
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(module[: len(module) - node.level])
            target = base + (node.module.split(".") if node.module else [])
            parts |= {target[0]} if target else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            parts |= {alias.name.split(".")[0] for alias in node.names}
    return parts


def layered_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if layer_of(p) in FORBIDDEN)


@pytest.mark.parametrize("path", layered_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_layer_imports_only_what_it_may(path):
    layer = layer_of(path)
    wrong = imported_parts(path) & (FORBIDDEN[layer] | FORBIDDEN_THIRD_PARTY.get(layer, set()))
    assert not wrong, f"{path.relative_to(REPO_ROOT)} ({layer}) imports {sorted(wrong)}"


def test_import_reader_sees_relative_and_absolute_imports(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    source = tmp_path / "methods" / "x.py"
    source.parent.mkdir()
    source.write_text("from ..metrics import dice\nfrom . import base\nimport ignite.engine\n")
    assert imported_parts(source) == {"metrics", "methods", "ignite"}
