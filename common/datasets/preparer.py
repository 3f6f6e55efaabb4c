"""The one skeleton every preparer runs: check the download, find each listed case, convert it, write dataset.json.

A dataset module describes one download with a :class:`Conversion` (its split lists, where a case's files are,
how to read them, the items and descriptive keys to write) and calls :func:`prepare_folder`. Errors name the
source folder, every missing case at once, or the file at fault.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .folder import SECTIONS, as_label_map, spacing_affine, write_dataset_json, write_nifti

# The papers' split lists, copied verbatim from their repositories (see the README.md there).
SPLITS_DIR = Path(__file__).resolve().parents[1] / "data" / "splits"

Found = dict[str, list[tuple[str, Any]]]  # section -> [(case id, what locate returned)] in list order


class MissingCasesError(FileNotFoundError):
    """Raised when cases named in a split list are absent from the source folder."""


@dataclass(frozen=True)
class Preparer:
    """One prepare command: its CLI name, help text, the function doing the work and its extra options."""

    name: str
    help: str
    run: Callable[..., Path]  # (source, out, allow_missing=False, **options) -> dataset folder
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # keyword -> argparse.add_argument kwargs


@dataclass(frozen=True)
class Volumes:
    """One case as read from a download, already in NIfTI axis order (x, y, z)."""

    image: np.ndarray
    label: np.ndarray
    image_affine: np.ndarray
    label_affine: np.ndarray
    name: str  # the file that errors about this case name


def read_split(relative_path: str) -> list[str]:
    """Read a split list shipped in ``splits/`` (one case id per line, blank lines ignored)."""
    path = SPLITS_DIR / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_splits(lists: Mapping[str, str]) -> dict[str, list[str]]:
    """Read ``{section: list file}`` into ``{section: case ids}``."""
    return {section: read_split(relative_path) for section, relative_path in lists.items()}


def check_source(source: str | os.PathLike) -> Path:
    """Return ``source`` as a Path, or raise naming it when it is not a folder."""
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"source folder not found: {path}")
    return path


def first_file(candidates: Iterable[Path]) -> Path | None:
    """Return the first existing file among ``candidates`` (None when there is none)."""
    return next((path for path in candidates if path.is_file()), None)


def nifti_names(stem: str) -> tuple[str, str]:
    """Both spellings of a NIfTI file name: compressed first."""
    return f"{stem}.nii.gz", f"{stem}.nii"


def case_folders(source: Path, pattern: str) -> dict[str, Path]:
    """Map each folder name matching ``pattern`` below ``source`` (searched recursively) to its first path."""
    folders: dict[str, Path] = {}
    for path in sorted(source.rglob(pattern)):
        if path.is_dir():
            folders.setdefault(path.name, path)
    return folders


def locate_cases(
    splits: Mapping[str, Sequence[str]], locate: Callable[[str], Any], source: Path, allow_missing: bool
) -> Found:
    """Find every case of every split with ``locate(case) -> handle | None``.

    Returns ``{split: [(case, handle), ...]}`` in list order. Missing cases are collected over all
    splits and reported in ONE message: an error, or a warning when ``allow_missing`` is set.
    """
    found: Found = {}
    missing: list[str] = []
    for split, cases in splits.items():
        found[split] = []
        for case in cases:
            handle = locate(case)
            if handle is None:
                missing.append(case)
            else:
                found[split].append((case, handle))
    if missing:
        message = f"{len(missing)} listed case(s) not found under {source}: {', '.join(missing)}"
        if not allow_missing:
            raise MissingCasesError(message + " (use --allow-missing to skip them)")
        warnings.warn(message + "; skipped (--allow-missing)", stacklevel=3)
    if not found.get("training"):
        raise MissingCasesError(f"no training case found under {source}; is it the right folder?")
    return found


def _load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI file as (float32 array without trailing singleton axes, affine)."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except (ImageFileError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable NIfTI file ({err})") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, img.affine


def read_nifti_pair(files: Sequence[Any]) -> Volumes:
    """Read a case stored as two NIfTI files ``(image, label, ...)``, each with its own affine (geometry kept)."""
    image_path, label_path = files[0], files[1]
    image, image_affine = _load_nifti(image_path)
    label, label_affine = _load_nifti(label_path)
    return Volumes(image, label, image_affine, label_affine, name=str(label_path))


def read_h5(path: Path, spacing: Sequence[float], zyx: bool = False) -> Volumes:
    """Read the ``image`` and ``label`` arrays of a processed h5 volume, which carries no geometry of its own.

    ``zyx``: the arrays are stored z first (SimpleITK order) and are transposed to (x, y, z).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            image, label = np.asarray(f["image"][()]), np.asarray(f["label"][()])
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: not an h5 volume with 'image' and 'label' ({err})") from err
    if zyx:
        image, label = image.transpose(2, 1, 0), label.transpose(2, 1, 0)
    affine = spacing_affine(spacing)
    return Volumes(image, label, affine, affine, name=str(path))


@dataclass(frozen=True)
class Conversion:
    """What one preparer says about its download; :func:`prepare_folder` does the rest."""

    splits: Mapping[str, Sequence[str]]  # section -> case ids in list order
    locate: Callable[[Any, str], Any]  # (scan result, case id) -> handle of the case's files, None when absent
    item: Callable[[str], dict[str, str]]  # case id -> dataset.json item
    # descriptive keys written before the sections (their "labels" name the classes); a function of what was
    # found when they depend on the files
    metadata: Mapping[str, Any] | Callable[[Found], Mapping[str, Any]]
    read: Callable[[Any], Volumes] = read_nifti_pair  # handle -> the case's arrays; default (image, label, ...)
    scan: Callable[[Path], Any] = lambda source: source  # what locate searches; ACDC, BraTS index their folders
    merge_foreground: bool = False  # every positive label value is class 1 (BraTS whole tumour)
    trailer: Callable[[Found], Mapping[str, Any]] = lambda found: {}  # keys after the sections
    # listed case -> the volumes written for it (York: one subject -> its annotated frames); default one each
    expand: Callable[[Found], Found] = lambda found: found


def _write_case(out: Path, item: dict[str, str], volumes: Volumes, num_classes: int, merge_foreground: bool) -> None:
    label = as_label_map(volumes.label, num_classes, volumes.name, volumes.image.shape, merge_foreground)
    write_nifti(out / item["image"], volumes.image, volumes.image_affine)
    write_nifti(out / item["label"], label, volumes.label_affine, is_label=True)


def _report(out: Path, content: Mapping[str, Any]) -> None:
    """Print a one-line summary of a written dataset folder."""
    counts = ", ".join(f"{key} {len(content.get(key, []))}" for key in SECTIONS)
    print(f"wrote {out / 'dataset.json'} ({counts})")


def prepare_folder(
    source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool, conversion: Conversion
) -> Path:
    """Write the dataset folder ``out`` from the download in ``source``; return ``out``.

    Cases go into ``training`` / ``validation`` / ``test`` in split-list order, so "the first N training items"
    is the papers' labeled subset. Every label passes through :func:`~.folder.as_label_map`.
    """
    source = check_source(source)
    out = Path(out)
    scanned = conversion.scan(source)
    found = locate_cases(conversion.splits, lambda case: conversion.locate(scanned, case), source, allow_missing)
    found = conversion.expand(found)
    metadata = conversion.metadata(found) if callable(conversion.metadata) else conversion.metadata
    content: dict[str, Any] = {**metadata, **{section: [] for section in SECTIONS}}
    for section, cases in found.items():
        for case, handle in cases:
            item = conversion.item(case)
            _write_case(out, item, conversion.read(handle), len(metadata["labels"]), conversion.merge_foreground)
            content[section].append(item)
    content.update(conversion.trailer(found))
    write_dataset_json(out, content)
    _report(out, content)
    return out
