"""LA 2018 (left atrium, LGE-MRI, 3D, binary): labels, split lists, the preparer and the phantom.

Preparer: ``la_h5`` (UA-MT's cropped, z-scored ``mri_norm2.h5`` volumes) with the UA-MT lists (``splits/la/``:
80 training, 20 test, no validation).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .folder import dataset_metadata, volume_item
from .phantom_parts import (
    Flavour,
    PhantomVolume,
    ellipsoid_rho,
    frame_towards,
    jitter,
    jittered,
    mri_corrupt,
    phantom_metadata,
    rotation_3d,
    smooth_field,
    voxel_grid,
)
from .preparer import Conversion, Preparer, first_file, prepare_folder, read_h5, read_splits

LA_LABELS = {"0": "background", "1": "left atrium"}
LA_SPACING = (0.625, 0.625, 0.625)
LA_SPLITS = {"training": "la/train.list", "test": "la/test.list"}
LA_SOURCE_SPLIT = "yulequan/UA-MT: data/train.list, data/test.list (copies in splits/la/)"
LA_FOLDER = "2018LA_Seg_Training Set"


def la_item(case_id: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of LA case ``case_id`` (``LA:<id>``, files under images/ and labels/)."""
    return volume_item("LA", case_id, with_label)


def la_metadata(description: str, preprocessing: str) -> dict[str, Any]:
    """Return the descriptive dataset.json keys of an LA dataset folder."""
    return dataset_metadata("LA2018", description, LA_SOURCE_SPLIT, LA_LABELS, "MRI", 3, preprocessing)


def prepare_la_h5(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert UA-MT's cropped, z-scored LA h5 volumes (stored x, y, z) into a dataset folder.

    Spacing 0.625 mm isotropic (the challenge's voxel size); no validation split (UA-MT has none).
    ``source`` may be the ``2018LA_Seg_Training Set`` folder or its parent ``data/``.
    """
    conversion = Conversion(
        splits=read_splits(LA_SPLITS),
        locate=lambda source, case: first_file(root / case / "mri_norm2.h5" for root in (source, source / LA_FOLDER)),
        read=lambda path: read_h5(path, LA_SPACING),
        item=la_item,
        metadata=la_metadata(
            "LA 2018 LGE-MRI from UA-MT's mri_norm2.h5 (z-scored, cropped around the atrium), spacing 0.625 mm.",
            "uamt-la-h5",
        ),
    )
    return prepare_folder(source, out, allow_missing, conversion)


PREPARERS = (
    Preparer("la_h5", "UA-MT processed LA volumes (2018LA_Seg_Training Set/<ID>/mri_norm2.h5)", prepare_la_h5),
)


# --------------------------------------------------------------------------------------------
# Phantom: 3D LGE-MRI of the left atrium, z-scored like UA-MT's mri_norm2.h5
# --------------------------------------------------------------------------------------------

PHANTOM_DESCRIPTION = (
    "Synthetic LGE-MRI-like volumes standing in for LA 2018 (UA-MT h5): one irregular bright atrium with a "
    "dark wall among other structures, bias field, Rician noise, whole-volume z-score, spacing 0.625 mm. For "
    "demos and tests only."
)

LA_TISSUES = {"body": 0.32, "lung": 0.05, "spine": 0.5, "aorta": 0.85, "lv_myo": 0.15, "lv": 0.75, "wall": 0.12}
LA_DEFAULT_SHAPE = (64, 64, 48)


def _la_atrium(rng: np.random.Generator, coords: Sequence[np.ndarray], dims: np.ndarray):
    """Irregular atrium: a main ellipsoid plus vein stubs and an appendage, smoothly deformed.

    Returns (inside mask, wall-shell mask, centre of the main body).
    """
    center = dims * (0.5 + rng.uniform(-0.07, 0.07, size=3))
    main_radii = dims * np.array([0.26, 0.22, 0.26]) * rng.uniform(0.85, 1.1, size=3)
    parts = [(center, main_radii, rotation_3d(rng.uniform(-0.4, 0.4, size=3)))]
    for _ in range(int(rng.integers(3, 6))):  # pulmonary-vein stubs, mostly posterior
        direction = np.array([rng.normal(0, 0.6), 1.0, rng.normal(0, 0.7)])
        direction /= np.linalg.norm(direction)
        start = center + main_radii * direction
        radii = np.array([0.085, 0.085, 0.24]) * dims.min() * rng.uniform(0.8, 1.2)
        parts.append((start, radii, frame_towards(direction)))
    direction = np.array([rng.normal(0, 0.3), -1.0, rng.normal(0.5, 0.3)])  # appendage, anterior
    direction /= np.linalg.norm(direction)
    radii = np.array([0.06, 0.07, 0.12]) * dims.min() * rng.uniform(0.8, 1.2)
    parts.append((center + 0.85 * main_radii * direction, radii, frame_towards(direction)))

    amplitude = 0.08 * dims.min()  # smooth random deformation of the whole organ
    warped = [c + amplitude * smooth_field(rng, dims.astype(int), max_cycles=1.5) for c in coords]
    rho = np.min([ellipsoid_rho(warped, c, r, rot) for c, r, rot in parts], axis=0)
    inside = rho < 1
    shell = (rho < 1 + 1.8 / main_radii.mean()) & ~inside
    return inside, shell, center


def la_subject(
    rng: np.random.Generator, number: int, shape: tuple[int, ...] | None, with_label: bool = True
) -> list[PhantomVolume]:
    """One LA-like case: a z-scored LGE-MRI-like volume with its atrium mask (default 64 x 64 x 48)."""
    dims = np.array(shape or LA_DEFAULT_SHAPE)
    t = jittered(rng, LA_TISSUES)
    t["la"] = jitter(rng, 0.9, 0.05)
    coords = voxel_grid(dims)
    tissue = np.full(tuple(dims), t["body"])
    for side in (0.0, 1.0):  # lungs at both lateral edges
        lung = ellipsoid_rho(coords, dims * (side, 0.55, 0.5), dims * (0.18, 0.45, 0.7)) < 1
        tissue[lung] = t["lung"]
    spine = ellipsoid_rho(coords[:2], dims[:2] * (0.5 + rng.normal(0, 0.03), 1.02), dims[:2] * (0.12, 0.12)) < 1
    tissue[spine] = t["spine"]

    inside, shell, center = _la_atrium(rng, coords, dims)
    aorta_xy = center[:2] + dims[:2] * (rng.choice([-1, 1]) * 0.3, 0.22)
    tissue[ellipsoid_rho(coords[:2], aorta_xy, dims[:2] * (0.1, 0.1)) < 1] = t["aorta"]
    lv_center = center + dims * (rng.uniform(-0.1, 0.1), -0.45, -0.35)
    lv_radii = dims * (0.3, 0.25, 0.3) * rng.uniform(0.9, 1.1)
    lv = ellipsoid_rho(coords, lv_center, lv_radii)
    tissue[lv < 1 + 3.0 / lv_radii.mean()] = t["lv_myo"]
    tissue[lv < 1] = t["lv"]
    tissue[shell] = t["wall"]
    tissue[inside] = t["la"]

    image = mri_corrupt(rng, tissue, blur_axes=(0, 1, 2), bias=0.3, noise=rng.uniform(0.04, 0.06))
    image = (image - image.mean()) / image.std()  # whole-volume z-score, as UA-MT's preprocessing
    item = la_item(f"phantom{number:03d}", with_label=with_label)
    return [PhantomVolume(item=item, image=image, label=inside.astype(np.uint8), spacing=LA_SPACING)]


PHANTOM = Flavour(
    make_subject=la_subject,
    default_counts=(8, 0, 2),
    metadata=phantom_metadata("LA-phantom", PHANTOM_DESCRIPTION, LA_LABELS, "MRI", 3, "phantom-la"),
)
