"""Which preprocessing recipe a folder of images went through, so a bundle knows which steps remain, and the
sizes a user may set as options (MONAI Label's ``displayable_configs``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

__all__ = ["dataset_recipe", "size_option"]


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


def size_option(value: str | int | Sequence[int], dims: int) -> list[int]:
    """A patch or slice size given as a user option: ``"112,112,80"`` (or ``"112x112x80"``), a list, or one number
    for every axis. MONAI Label shows such options as text fields (a list would be offered as a choice of values).
    """
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").replace(" ", ",").split(",") if p]
    elif isinstance(value, (int, float)):
        parts = [value] * dims
    else:
        parts = list(value)
    try:
        size = [int(p) for p in parts]
    except (TypeError, ValueError) as err:
        raise ValueError(f"size option {value!r} is not {dims} integers such as '96,96,96'.") from err
    if len(size) != dims or min(size) < 1:
        raise ValueError(f"size option {value!r} must give {dims} positive integers, e.g. '{','.join(['96'] * dims)}'.")
    return size
