"""Check a dataset folder against the contract and report every problem at once.

    python -m common.data.check <dataset_dir> --num-classes N [--num-labeled K] [--channels C]

Training refuses the first bad case it meets (``CheckDatad`` while the cache fills); this command reads every
listed NIfTI file and prints all problems, one line each with the file named, so a dataset can be repaired in
one pass. Exit status 0: the folder is usable; 1: problems were found.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .contract import SECTIONS, DatasetError, load_dataset_json, split_labeled
from .transforms import AFFINE_TOLERANCE

__all__ = ["check_dataset", "check_case", "main"]


def _load(path: Path) -> tuple[np.ndarray, np.ndarray] | str:
    """``(voxels, affine)`` of a NIfTI file, or the reason it cannot be read."""
    try:
        image = nib.load(str(path))
        return np.asanyarray(image.dataobj), image.affine
    except Exception as error:  # nibabel raises several types for truncated or foreign files
        return f"{path}: unreadable NIfTI ({type(error).__name__}: {error})"


def _channels(voxels: np.ndarray) -> int:
    # NIfTI keeps channels (modalities, time) in the 4th dimension; a 3D volume has one channel
    return int(voxels.shape[3]) if voxels.ndim == 4 else 1


def check_case(item: Mapping[str, Any], num_classes: int, channels: int | None = None) -> list[str]:
    """Problems of one case: unreadable files, NaN/infinite intensities, channel count, label/image mismatch."""
    problems: list[str] = []
    image_path = Path(item["image"])
    image = _load(image_path)
    if isinstance(image, str):
        problems.append(image)
    else:
        voxels, _ = image
        if not np.isfinite(voxels).all():
            problems.append(f"{image_path}: image contains NaN or infinite intensities")
        if channels is not None and _channels(voxels) != channels:
            problems.append(f"{image_path}: image has {_channels(voxels)} channel(s), the network takes {channels}")
    if "label" in item:
        problems += _label_problems(
            Path(item["label"]), num_classes, image_path, None if isinstance(image, str) else image
        )
    return problems


def _label_problems(
    path: Path, num_classes: int, image_path: Path, image: tuple[np.ndarray, np.ndarray] | None
) -> list[str]:
    label = _load(path)
    if isinstance(label, str):
        return [label]
    voxels, affine = label
    problems = []
    if image is not None:
        image_voxels, image_affine = image
        if voxels.shape[:3] != image_voxels.shape[:3]:
            problems.append(
                f"{path}: label shape {voxels.shape[:3]} differs from the image shape {image_voxels.shape[:3]}"
            )
        elif not np.allclose(affine, image_affine, atol=AFFINE_TOLERANCE):
            problems.append(f"{path}: label affine differs from the affine of {image_path}")
    values = np.unique(voxels)
    bad = [v for v in values.tolist() if not float(v).is_integer() or not 0 <= v < num_classes]
    if bad:
        shown = [int(v) if float(v).is_integer() else v for v in bad[:10]]
        problems.append(f"{path}: label values {shown} are outside the classes 0..{num_classes - 1}")
    return problems


def _section_items(folder: Path, meta: Mapping[str, Any], section: str) -> tuple[list[dict], list[str]]:
    """Items of one section with absolute paths, and the problems of entries that name no usable file."""
    items, problems = [], []
    for index, entry in enumerate(meta.get(section, [])):
        if not isinstance(entry, Mapping) or "image" not in entry:
            problems.append(f"{folder / 'dataset.json'}: {section}[{index}] has no 'image' entry")
            continue
        if section != "unlabeled" and "label" not in entry:
            problems.append(f"{folder / 'dataset.json'}: {section}[{index}] ({entry['image']}) has no 'label' entry")
            continue
        item = dict(entry)
        missing = False
        for key in ("image", "label"):
            if key in item:
                item[key] = str(folder / str(item[key]))
                if not Path(item[key]).is_file():
                    problems.append(f"{item[key]}: {section}[{index}] {key} file does not exist")
                    missing = True
        if not missing:
            items.append(item)
    return items, problems


def check_dataset(
    dataset_dir: str | Path, num_classes: int, num_labeled: int | None = None, channels: int | None = None
) -> list[str]:
    """Every problem of a dataset folder: ``dataset.json``, the labeled split and each listed case.

    Args:
        dataset_dir: folder holding ``dataset.json``.
        num_classes: classes of the bundle (labels must lie in ``0..num_classes-1``).
        num_labeled: the bundle's labeled budget; checked against the training list when given.
        channels: image channels the bundle's network takes; checked when given.
    """
    folder = Path(dataset_dir)
    try:
        meta = load_dataset_json(folder)
    except DatasetError as error:
        return [str(error)]
    problems: list[str] = []
    if len(meta["labels"]) != num_classes:
        problems.append(f"{folder / 'dataset.json'}: 'labels' names {len(meta['labels'])} classes, not {num_classes}")
    if num_labeled is not None:
        try:
            split_labeled(meta["training"], num_labeled)
        except DatasetError as error:
            problems.append(f"{folder / 'dataset.json'}: {error}")
    for section in SECTIONS:
        items, listing_problems = _section_items(folder.resolve(), meta, section)
        problems += listing_problems
        for item in items:
            problems += check_case(item, num_classes, channels)
    return problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m common.data.check", description=__doc__.splitlines()[0])
    parser.add_argument("dataset_dir", help="folder holding dataset.json")
    parser.add_argument("--num-classes", type=int, required=True, help="classes of the bundle, background included")
    parser.add_argument("--num-labeled", type=int, default=None, help="labeled budget to check against the list")
    parser.add_argument("--channels", type=int, default=None, help="image channels the bundle's network takes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problems = check_dataset(args.dataset_dir, args.num_classes, args.num_labeled, args.channels)
    if problems:
        print(f"{len(problems)} problem(s) in {args.dataset_dir}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{args.dataset_dir}: no problems found.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
