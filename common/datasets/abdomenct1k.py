"""AbdomenCT-1K (abdominal CT, 3D, liver / kidney / spleen / pancreas): labels, split lists, the preparer, the phantom.

ALHVR (ICCV 2025) reports AbdomenCT-1K with 30 training and 11 test scans but published neither the case ids nor
its preprocessing. This project fixes a seeded choice of 41 case ids (:func:`abdomenct1k_case_choice`), shipped as
``splits/abdomenct1k/train.list`` and ``test.list``; see ``bundles/alhvr_abdomenct1k/docs/README.md``.

Release layout assumed (JunMa11/AbdomenCT-1K, nnU-Net naming): images ``Case_NNNNN_0000.nii.gz`` (spread over
several image-part archives), masks ``Case_NNNNN.nii.gz`` (0 background, 1 liver, 2 kidney, 3 spleen,
4 pancreas), case numbers 1 to 1000 (:data:`ABDOMENCT1K_ID_RANGE`; an assumption, the release was not
inspected here).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .folder import dataset_metadata, volume_item
from .phantom_parts import Flavour, PhantomVolume, blur, ellipsoid_rho, phantom_metadata, smooth_field, voxel_grid
from .preparer import Conversion, Preparer, prepare_folder, read_splits

ABDOMENCT1K_LABELS = {"0": "background", "1": "liver", "2": "kidney", "3": "spleen", "4": "pancreas"}
ABDOMENCT1K_SPLITS = {"training": "abdomenct1k/train.list", "test": "abdomenct1k/test.list"}
ABDOMENCT1K_SOURCE_SPLIT = (
    "project-defined: seeded choice of 41 AbdomenCT-1K case ids, 30 training + 11 test "
    "(common/datasets/abdomenct1k.py abdomenct1k_case_choice; copies in splits/abdomenct1k/)"
)
ABDOMENCT1K_ID_RANGE = (1, 1000)  # Case_00001 .. Case_01000, both ends included (assumed, see module docstring)
ABDOMENCT1K_SEED = 20251019
ABDOMENCT1K_COUNTS = (30, 11)  # training, test (ALHVR paper)
_IMAGE = re.compile(r"^(Case_\d{5})_0000\.nii(\.gz)?$")
_MASK = re.compile(r"^(Case_\d{5})\.nii(\.gz)?$")


def abdomenct1k_case_choice(
    seed: int = ABDOMENCT1K_SEED, id_range: tuple[int, int] = ABDOMENCT1K_ID_RANGE, counts=ABDOMENCT1K_COUNTS
) -> tuple[list[str], list[str]]:
    """The project's seeded choice of case ids: ``(training, test)`` in draw order.

    ``numpy.random.default_rng(seed).choice`` of ``sum(counts)`` distinct numbers in ``id_range``; the first
    ``counts[0]`` are the training list (its head is the labeled subset), the rest the test list.
    """
    numbers = np.arange(id_range[0], id_range[1] + 1)
    drawn = np.random.default_rng(seed).choice(numbers, size=sum(counts), replace=False)
    ids = [f"Case_{int(n):05d}" for n in drawn]
    return ids[: counts[0]], ids[counts[0] :]


def abdomenct1k_item(case_id: str, with_label: bool = True) -> dict[str, str]:
    """The dataset.json item of case ``Case_NNNNN``: ``images/``, ``labels/``, ``case`` = ``AbdomenCT-1K:<id>``."""
    return volume_item("AbdomenCT-1K", case_id, with_label)


def find_abdomenct1k_files(source: Path) -> dict[str, dict[str, Path]]:
    """Index the release below ``source`` (searched recursively): case id -> {"image": path, "label": path}."""
    files: dict[str, dict[str, Path]] = {}
    for path in sorted(source.rglob("Case_*.nii*")):
        for key, pattern in (("image", _IMAGE), ("label", _MASK)):
            match = pattern.match(path.name)
            if match and path.is_file():
                files.setdefault(match.group(1), {}).setdefault(key, path)
    return files


def _locate_case(files: dict[str, dict[str, Path]], case: str) -> tuple[Path, Path] | None:
    """Image and mask of ``case``; a case without both counts as missing."""
    found = files.get(case, {})
    return (found["image"], found["label"]) if {"image", "label"} <= set(found) else None


def prepare_abdomenct1k(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert the AbdomenCT-1K NIfTI release into a dataset folder with the project's 30 / 11 split.

    Images (``Case_NNNNN_0000.nii.gz``) and masks (``Case_NNNNN.nii.gz``) are found anywhere below ``source``
    (the release ships images in several part folders). Hounsfield units, orientation and spacing are kept:
    reorientation, resampling, the HU window and the crop are the bundle's transforms. Mask values must be 0-4.
    """
    conversion = Conversion(
        splits=read_splits(ABDOMENCT1K_SPLITS),
        scan=find_abdomenct1k_files,
        locate=_locate_case,
        item=abdomenct1k_item,
        metadata=dataset_metadata(
            "AbdomenCT-1K",
            "AbdomenCT-1K CT scans (Hounsfield units, original orientation and spacing) with the 4-organ masks "
            "(1 liver, 2 kidney, 3 spleen, 4 pancreas); 30 training + 11 test cases, a seeded project choice.",
            ABDOMENCT1K_SOURCE_SPLIT,
            ABDOMENCT1K_LABELS,
            "CT",
            3,
            "abdomenct1k-raw-hu",
        ),
    )
    return prepare_folder(source, out, allow_missing, conversion)


PREPARERS = (
    Preparer(
        "abdomenct1k",
        "AbdomenCT-1K NIfTI release (Case_NNNNN_0000.nii.gz images, Case_NNNNN.nii.gz 4-organ masks)",
        prepare_abdomenct1k,
    ),
)


# --------------------------------------------------------------------------------------------
# Phantom: abdominal CT in HU with liver, kidneys, spleen and pancreas, anisotropic spacing
# --------------------------------------------------------------------------------------------

PHANTOM_DESCRIPTION = (
    "Synthetic abdominal CT volumes standing in for AbdomenCT-1K: body with fat, muscle wall, spine, aorta and "
    "IVC, stomach and bowel loops, and four labelled organs (1 liver, 2 both kidneys, 3 spleen, 4 pancreas) of "
    "overlapping density, CT noise, Hounsfield units (not windowed), anisotropic spacing (thin pixels, thick "
    "slices). For demos and tests only."
)

ABDOMENCT1K_DEFAULT_SHAPE = (80, 80, 32)
ABDOMENCT1K_PHANTOM_SPACING = (1.2, 1.2, 2.5)
# Portal-venous phase Hounsfield units: the organs overlap each other and the bowel wall in density.
ABDOMENCT1K_HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 45.0,
    "liver": 105.0,
    "spleen": 118.0,
    "kidney": 165.0,
    "kidney_inner": 30.0,
    "pancreas": 95.0,
    "aorta": 180.0,
    "ivc": 130.0,
    "bowel_wall": 90.0,
    "fluid": 15.0,
    "bone": 700.0,
}


def _abdomen_background(rng: np.random.Generator, coords, dims: np.ndarray, hu: dict[str, float]) -> np.ndarray:
    """Body outline, fat, muscle wall, spine, great vessels, stomach and bowel loops (unlabelled), in HU."""
    image = np.full(tuple(dims), hu["air"])
    body = ellipsoid_rho(coords[:2], dims[:2] * [0.5, 0.52], dims[:2] * [0.46, 0.38] * rng.uniform(0.92, 1.0, 2))
    image[body < 1] = hu["fat"]
    image[body < 0.9] = hu["muscle"]
    image[body < 0.84] = hu["fat"] + rng.normal(0.0, 5.0)  # visceral fat
    s = float(min(dims[0], dims[1]))
    image[ellipsoid_rho(coords[:2], dims[:2] * [0.5, 0.78], (0.075 * s, 0.065 * s)) < 1] = hu["bone"]
    image[ellipsoid_rho(coords[:2], dims[:2] * [0.54, 0.66], (0.045 * s, 0.045 * s)) < 1] = hu["aorta"]
    image[ellipsoid_rho(coords[:2], dims[:2] * [0.42, 0.65], (0.05 * s, 0.035 * s)) < 1] = hu["ivc"]
    for _ in range(int(rng.integers(5, 9))):  # bowel loops in front, wall density close to the organs
        center = dims * [rng.uniform(0.3, 0.7), rng.uniform(0.22, 0.45), rng.uniform(0.05, 0.5)]
        loop = ellipsoid_rho(coords, center, dims * 0.06) < 1
        image[loop & (body < 0.84)] = hu["bowel_wall"]
        image[(ellipsoid_rho(coords, center, dims * 0.03) < 1) & (body < 0.84)] = hu["fluid"]
    return image


def _abdomen_organs(rng: np.random.Generator, coords, dims: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(label, mask) of liver, both kidneys, spleen and pancreas, in painting order (later ones win)."""

    def blob(center, radii, warp=0.0) -> np.ndarray:
        center = dims * (np.asarray(center) + rng.uniform(-0.02, 0.02, size=3))
        radii = np.maximum(dims * np.asarray(radii) * rng.uniform(0.9, 1.1, size=3), 1.0)
        warped = [c + warp * float(dims.min()) * smooth_field(rng, dims.astype(int), max_cycles=2.0) for c in coords]
        return ellipsoid_rho(warped, center, radii) < 1

    liver = blob((0.28, 0.42, 0.68), (0.2, 0.24, 0.34), warp=0.04)
    kidneys = blob((0.31, 0.7, 0.38), (0.07, 0.09, 0.22)) | blob((0.69, 0.7, 0.42), (0.07, 0.09, 0.22))
    spleen = blob((0.77, 0.63, 0.66), (0.08, 0.12, 0.22), warp=0.03)
    pancreas = np.zeros(tuple(dims), dtype=bool)  # head right of the midline, tail towards the spleen
    for u in np.linspace(0.0, 1.0, 6):
        center = (0.4 + 0.32 * u, 0.52 - 0.06 * np.sin(np.pi * u), 0.46 + 0.1 * u)
        pancreas |= blob(center, (0.055, 0.04 - 0.015 * u, 0.07))
    return [(1, liver), (2, kidneys), (3, spleen), (4, pancreas & ~kidneys)]


def abdomenct1k_subject(
    rng: np.random.Generator, number: int, shape: tuple[int, ...] | None, with_label: bool = True
) -> list[PhantomVolume]:
    """One AbdomenCT-1K-like case: HU volume with the four labelled organs (default 80 x 80 x 32).

    Spacing 1.2 x 1.2 x 2.5 mm (thin pixels, thick slices, as in clinical abdominal CT), so the bundle's
    resampling has work to do. Blur and Gaussian noise (8-15 HU), values rounded to integer HU.
    """
    dims = np.array(shape or ABDOMENCT1K_DEFAULT_SHAPE)
    hu = {name: value + rng.normal(0.0, 6.0) for name, value in ABDOMENCT1K_HU.items()}
    hu["air"] = -1000.0
    coords = voxel_grid(dims)
    image = _abdomen_background(rng, coords, dims, hu)
    label = np.zeros(tuple(dims), dtype=np.uint8)
    names = {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}
    for value, mask in _abdomen_organs(rng, coords, dims):
        image[mask] = hu[names[value]]
        label[mask] = value
    inner = (label == 2) & (ellipsoid_rho(coords[:2], dims[:2] * [0.5, 0.72], dims[:2] * [0.16, 0.04]) > 1)
    image[(label == 2) & ~inner] = hu["kidney_inner"]  # renal sinus towards the hilum, still labelled kidney
    texture = 1.0 + 0.05 * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=6.0)
    image = np.where(label > 0, image * texture, image)
    image = blur(image, axes=(0, 1, 2)) + rng.normal(0.0, rng.uniform(8.0, 15.0), size=image.shape)
    image = np.round(np.clip(image, -1024.0, 3071.0))
    item = abdomenct1k_item(f"phantom{number:03d}", with_label)
    return [PhantomVolume(item=item, image=image, label=label, spacing=ABDOMENCT1K_PHANTOM_SPACING)]


PHANTOM = Flavour(
    make_subject=abdomenct1k_subject,
    default_counts=(8, 0, 2),
    metadata=phantom_metadata(
        "AbdomenCT-1K-phantom", PHANTOM_DESCRIPTION, ABDOMENCT1K_LABELS, "CT", 3, "phantom-abdomenct1k"
    ),
)
