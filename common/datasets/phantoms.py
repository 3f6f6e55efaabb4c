"""Synthetic, learnable stand-ins for the papers' datasets, written as dataset folders.

Bundles' demo configs and the tests train on these instead of the (registration-only) real data:

    python -m common.data.phantoms /tmp/acdc_demo --flavour acdc --num-train 8

Flavours (default shape; train/validation/test subjects; spacing):

- ``acdc``: cardiac cine-MRI stacks, ED + ES frame per patient, 4 classes (96-128 x 96-128 x 8-12; 8/2/2;
  about 1.5 x 1.5 x 5-10 mm).
- ``la``: z-scored LGE-MRI left atrium, 2 classes (64 x 64 x 48; 8/0/2; 0.625 mm).
- ``brats``: skull-stripped FLAIR brain with one glioma, whole tumour = 1 (64 x 64 x 48; 8/2/2; 1 mm).
- ``pancreas``: abdominal CT in Hounsfield units, pancreas = 1 (64 x 64 x 48; 8/0/2; 1 mm).
- ``isles``: DWI head with several small stroke lesions, lesion = 1 (64 x 64 x 32; 8/2/2; 1.6-2.2 mm in
  plane, 2-4 mm slices, varying per case).
- ``abdomenct1k``: abdominal CT in HU, liver / kidney / spleen / pancreas = 1-4 (80 x 80 x 32; 8/0/2;
  1.2 x 1.2 x 2.5 mm).
- ``york``: short-axis cine-MRI stacks, two frames per subject, LV endocardium = 1 (96 x 96 x 6; 8/2/2; 1 mm).

Each flavour is the ``PHANTOM`` of its dataset module (a function ``(rng, number, shape, with_label) ->
list[PhantomVolume]`` with its metadata); a new dataset is one more entry in :data:`FLAVOURS`. Files and items
follow the real preparers, with case ids ``<Dataset>:phantomNNN``. Generation uses NumPy only and one random
generator per subject seeded by (seed, flavour, split, index), so the same arguments give byte-identical folders
and the first N training subjects do not change when more are requested.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import abdomenct1k, acdc, brats, isles, la, pancreas, york
from .folder import spacing_affine, write_dataset_json, write_nifti
from .phantom_parts import Flavour, PhantomVolume

# Bump when the generated images change, so cached demo datasets are regenerated.
GENERATOR_VERSION = 2  # 2: brats, pancreas and isles flavours (caches made while they were drafted are stale)

SPLIT_CODES = {"training": 0, "validation": 1, "test": 2, "unlabeled": 3}

# one per dataset module, in the order messages list them
FLAVOURS: dict[str, Flavour] = {
    "acdc": acdc.PHANTOM,
    "la": la.PHANTOM,
    "brats": brats.PHANTOM,
    "pancreas": pancreas.PHANTOM,
    "isles": isles.PHANTOM,
    "abdomenct1k": abdomenct1k.PHANTOM,
    "york": york.PHANTOM,
}


def phantom_parameters(
    flavour: str,
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    num_unlabeled: int = 0,
    seed: int = 0,
    shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Validate the generator arguments and return them resolved (stored in dataset.json ``phantom``)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown phantom flavour {flavour!r}; available: {', '.join(FLAVOURS)}")
    spec = FLAVOURS[flavour]
    given = (num_train, num_val, num_test)
    counts = [c if c is not None else d for c, d in zip(given, spec.default_counts, strict=True)]
    if counts[0] < 1 or min(*counts, num_unlabeled) < 0:
        raise ValueError(f"need num_train >= 1 and non-negative counts, got {counts} and {num_unlabeled}")
    if shape is not None:
        shape = [int(n) for n in shape]
        too_small = any(n < m for n, m in zip(shape, spec.min_shape, strict=False))
        if len(shape) not in spec.shape_lengths or too_small:
            raise ValueError(
                f"{flavour} phantom shape needs {spec.shape_lengths} sides of at least {spec.min_shape}, got {shape}"
            )
    return {
        "flavour": flavour,
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_train": int(counts[0]),
        "num_val": int(counts[1]),
        "num_test": int(counts[2]),
        "num_unlabeled": int(num_unlabeled),
        "shape": shape,
    }


def _subject_rng(seed: int, flavour: str, split: str, index: int) -> np.random.Generator:
    """Independent generator per subject, so subjects do not depend on how many others are made."""
    return np.random.default_rng([seed, zlib.crc32(flavour.encode()), SPLIT_CODES[split], index])


def _write_volume(out: Path, volume: PhantomVolume) -> dict[str, str]:
    """Write a volume's image (and label when its item has one); return its dataset.json item."""
    affine = spacing_affine(volume.spacing)
    write_nifti(out / volume.item["image"], volume.image, affine)
    if "label" in volume.item:
        write_nifti(out / volume.item["label"], volume.label, affine, is_label=True)
    return volume.item


def make_phantom_dataset(
    out_dir: str | os.PathLike,
    flavour: str = "acdc",
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    num_unlabeled: int = 0,
    seed: int = 0,
    shape: Sequence[int] | None = None,
) -> Path:
    """Generate a phantom dataset folder (dataset.json + NIfTI files) and return its path.

    Counts are subjects: ACDC patients (two frame volumes each) or 3D cases; ``None`` takes the
    flavour's default (acdc, brats, isles 8/2/2; la, pancreas 8/0/2: no validation split, as in the
    reference line). ``shape`` is the volume size (acdc: in-plane, optionally with the slice count);
    3D flavours need at least 16 per side. ``num_unlabeled`` extra subjects are written as image-only
    ``unlabeled`` items. Same arguments give byte-identical files.
    """
    params = phantom_parameters(flavour, num_train, num_val, num_test, num_unlabeled, seed, shape)
    spec = FLAVOURS[flavour]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {
        "training": params["num_train"],
        "validation": params["num_val"],
        "test": params["num_test"],
        "unlabeled": params["num_unlabeled"],
    }
    content: dict[str, Any] = {**spec.metadata, "phantom": params}
    number = 1
    for split, count in counts.items():
        if split == "unlabeled" and count == 0:
            continue
        items = []
        for index in range(count):
            rng = _subject_rng(params["seed"], flavour, split, index)
            subject_shape = tuple(params["shape"]) if params["shape"] else None
            for volume in spec.make_subject(rng, number, subject_shape, split != "unlabeled"):
                items.append(_write_volume(out, volume))
            number += 1
        content[split] = items
    write_dataset_json(out, content)
    return out


def _read_phantom_parameters(folder: Path) -> dict[str, Any] | None:
    """Return the ``phantom`` entry of ``folder/dataset.json``, or None if absent or unreadable."""
    try:
        return json.loads((folder / "dataset.json").read_text()).get("phantom")
    except (OSError, ValueError, AttributeError):
        return None


def ensure_phantom_dataset(cache_dir: str | os.PathLike, flavour: str = "acdc", **kwargs: Any) -> str:
    """Return ``cache_dir`` holding the requested phantom dataset, generating it only when needed.

    Reuses the folder when its dataset.json records the same generator parameters. Otherwise the
    dataset is generated in a temporary sibling folder and renamed into place, so an interrupted run
    never leaves half a dataset, and concurrent callers (e.g. two torchrun ranks) both end up with a
    complete one. An existing folder is only replaced if it is a phantom dataset or empty.
    Keyword arguments are those of :func:`make_phantom_dataset`.
    """
    target = Path(cache_dir)
    wanted = json.loads(json.dumps(phantom_parameters(flavour, **kwargs)))
    if _read_phantom_parameters(target) == wanted:
        return str(target)
    if target.exists() and any(target.iterdir()) and _read_phantom_parameters(target) is None:
        raise FileExistsError(f"{target} exists and is not a phantom dataset folder; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        make_phantom_dataset(tmp, flavour, **kwargs)
        if target.exists() and _read_phantom_parameters(target) != wanted:
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:  # another process renamed its copy in first
            if _read_phantom_parameters(target) != wanted:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m common.data.phantoms <out_dir> --flavour acdc --num-train 8 ...``."""
    parser = argparse.ArgumentParser(prog="python -m common.data.phantoms", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="dataset folder to write")
    parser.add_argument("--flavour", default="acdc", choices=sorted(FLAVOURS))
    parser.add_argument("--num-train", type=int, default=None, help="training subjects (flavour default)")
    parser.add_argument("--num-val", type=int, default=None, help="validation subjects (flavour default)")
    parser.add_argument("--num-test", type=int, default=None, help="test subjects (flavour default)")
    parser.add_argument("--num-unlabeled", type=int, default=0, help="extra image-only subjects")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shape",
        type=int,
        nargs="+",
        default=None,
        help="acdc, york: X Y [Z]; la, brats, pancreas, isles, abdomenct1k: X Y Z (each >= 16)",
    )
    args = parser.parse_args(argv)
    try:
        out = make_phantom_dataset(
            args.out_dir,
            args.flavour,
            args.num_train,
            args.num_val,
            args.num_test,
            args.num_unlabeled,
            args.seed,
            args.shape,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(out / "dataset.json")
    return 0
