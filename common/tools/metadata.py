"""Read a repository bundle's ``configs/metadata.json`` with its shared entries filled in.

A bundle's metadata.json takes what several bundles share (version pins, ``network_data_format``, ...) from
``bundles/shared/metadata.json`` with MONAI macros (``"%bundles/shared/metadata.json#monai_version"``), written
relative to the repository root. ``monai.bundle run`` resolves them when it reads ``--meta_file`` from the repository
root; :func:`read_metadata` does the same from any current directory. An exported bundle's metadata.json is plain
JSON (the export inlines the macros) and reads the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["read_metadata"]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata in ``path`` with each ``%file#id`` macro replaced by that entry (files from the repository root)."""
    from .export import resolve_file_macros  # deferred: the export imports this module

    return resolve_file_macros(json.loads(Path(path).read_text(encoding="utf-8")))
