"""Which preprocessing recipe a folder of images went through, so a bundle knows which steps remain."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["dataset_recipe"]


def dataset_recipe(dataset_dir: str | Path, default: str) -> str:
    """The ``preprocessing`` recipe named in ``<dataset_dir>/dataset.json``, or ``default`` without one.

    Prepare commands and phantoms record the recipe they applied (e.g. ``"brats-raw-flair"``, ``"ssl4mis-brats"``).
    Images given for inference as a plain NIfTI folder or glob carry no such record: ``default`` says what they are
    assumed to be (a bundle's inference config uses its raw-scanner recipe, so new images get every step).
    """
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        return default
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}.") from err
    recipe = meta.get("preprocessing", default) if isinstance(meta, dict) else default
    return str(recipe)
