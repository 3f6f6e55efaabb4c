"""Helpers for tests of exported bundles: export once, load with only the exported folder providing ``scripts``."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from common.tools.export import PACKAGE_NAME, export_bundle
from tests.conftest import REPO_ROOT

SCHEMA = REPO_ROOT / "tests" / "fixtures" / "meta_schema_20240725.json"
# a dotted or path reference to the repository package, or an import of it
COMMON_REFERENCE = re.compile(r"(?<![\w./-])common[./][A-Za-z_]|\bimport common\b|\bfrom common import\b")


def bundle_names() -> list[str]:
    """Every bundle folder of the repository (a folder of ``bundles/`` with ``configs/metadata.json``)."""
    return sorted(p.name for p in (REPO_ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def unload_scripts() -> None:
    """Forget every imported ``scripts`` module, as MONAI Label does between bundles."""
    for module in [m for m in sys.modules if m == PACKAGE_NAME or m.startswith(PACKAGE_NAME + ".")]:
        del sys.modules[module]


@contextmanager
def bundle_on_path(bundle: Path) -> Iterator[None]:
    """Make ``bundle`` the only provider of ``scripts`` while the block runs (MONAI Label / zoo test loading)."""
    unload_scripts()
    sys.path.insert(0, str(bundle))
    try:
        yield
    finally:
        while str(bundle) in sys.path:  # ConfigWorkflow.run inserts the bundle root as well
            sys.path.remove(str(bundle))
        unload_scripts()


def scripts_origin() -> Path:
    """Folder the currently imported ``scripts`` package was loaded from."""
    return Path(sys.modules[PACKAGE_NAME].__file__).resolve().parent


def initial_weights(name: str, path: Path) -> Path:
    """Save the freshly initialised ``network_def`` of repository bundle ``name`` as a plain state dict."""
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / name / "configs" / "inference.json"))
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), path)
    return path


def export(name: str, out_root: Path, **kwargs) -> Path:
    """Export repository bundle ``name`` to ``out_root/<name>``."""
    return export_bundle(REPO_ROOT / "bundles" / name, out_root / name, **kwargs)
