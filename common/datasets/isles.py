"""ISLES 2022 (ischaemic stroke lesion from DWI, 3D, binary): labels, split lists, the preparer and the phantom.

Preparer: ``isles`` (the BIDS release) with DyCON's fold-0 lists (``splits/isles2022/``: 200 training,
25 validation, 25 test).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .folder import dataset_metadata, volume_item
from .phantom_parts import (
    BrainAnatomy,
    Flavour,
    PhantomVolume,
    brain_anatomy,
    ellipsoid_rho,
    jittered,
    mri_corrupt,
    phantom_metadata,
    point_in,
    rotation_3d,
    smooth_field,
    voxel_grid,
)
from .preparer import Conversion, Preparer, first_file, nifti_names, prepare_folder, read_splits

ISLES_LABELS = {"0": "background", "1": "ischemic stroke lesion"}
ISLES_SPLITS = {"training": "isles2022/train.list", "validation": "isles2022/val.list", "test": "isles2022/test.list"}
ISLES_SOURCE_SPLIT = (
    "CVML-KU/DyCON: data/ISLES2022/train.list, val.list, test.list = fold 0 of "
    "splits_fold0.json (copies in splits/isles2022/)"
)
ISLES_SESSION = "ses-0001"


def isles_item(case_id: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of ISLES case ``case_id``: the DWI image only, ``case`` = ``ISLES:<id>``."""
    return volume_item("ISLES", case_id, with_label)


def isles_metadata(description: str, preprocessing: str) -> dict[str, Any]:
    """Return the descriptive dataset.json keys of an ISLES 2022 dataset folder."""
    return dataset_metadata("ISLES2022", description, ISLES_SOURCE_SPLIT, ISLES_LABELS, "MRI", 3, preprocessing)


# --------------------------------------------------------------------------------------------
# Preparer
# --------------------------------------------------------------------------------------------


def _locate_dwi_and_mask(source: Path, case: str) -> tuple[Path, Path] | None:
    """The DWI of a case (under ``rawdata/`` or not) and its lesion mask under ``derivatives/``."""
    bases = [source, source / "ISLES-2022"]
    stem = f"{case}_{ISLES_SESSION}"
    image = first_file(
        base / raw / case / ISLES_SESSION / "dwi" / name
        for base in bases
        for raw in ("", "rawdata")
        for name in nifti_names(f"{stem}_dwi")
    )
    label = first_file(
        base / "derivatives" / case / ISLES_SESSION / name for base in bases for name in nifti_names(f"{stem}_msk")
    )
    return (image, label) if image and label else None


def prepare_isles(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert the ISLES 2022 BIDS release into a dataset folder with DyCON's fold-0 split (200/25/25).

    Image = the DWI (b = 1000) ``sub-strokecaseNNNN/ses-0001/dwi/sub-strokecaseNNNN_ses-0001_dwi.nii.gz``
    (under ``source`` or ``source/rawdata``), label = ``derivatives/sub-strokecaseNNNN/ses-0001/
    sub-strokecaseNNNN_ses-0001_msk.nii.gz`` (binary, DWI space). ADC and FLAIR are not used. The original,
    variable geometry is kept; orientation, normalisation and resizing are the bundle's transforms
    (``preprocessing`` "isles-raw-dwi"). ``source`` may also be the parent of ``ISLES-2022/``.
    """
    conversion = Conversion(
        splits=read_splits(ISLES_SPLITS),
        locate=_locate_dwi_and_mask,
        item=isles_item,
        metadata=isles_metadata(
            "ISLES 2022 DWI (b = 1000) volumes with their lesion masks, original multi-centre geometry and "
            "intensities. DyCON's preprocessing is unreleased: the dycon_isles README recipe (RAS, non-zero "
            "z-score, resize) is done by the bundle's transforms.",
            "isles-raw-dwi",
        ),
    )
    return prepare_folder(source, out, allow_missing, conversion)


PREPARERS = (
    Preparer(
        "isles",
        "ISLES 2022 BIDS release (sub-strokecaseNNNN/ses-0001/dwi/..._dwi.nii.gz, derivatives/..._msk)",
        prepare_isles,
    ),
)


# --------------------------------------------------------------------------------------------
# Phantom: DWI (b = 1000) head with several small ischaemic lesions, anisotropic spacing
# --------------------------------------------------------------------------------------------

PHANTOM_DESCRIPTION = (
    "Synthetic DWI-like (b = 1000) head volumes standing in for ISLES 2022: brain with dark CSF, faint scalp, "
    "several small scattered bright ischaemic lesions (label 1), an unlabelled susceptibility artefact, bias "
    "field, Rician noise, variable anisotropic spacing. For demos and tests only."
)

ISLES_DEFAULT_SHAPE = (64, 64, 32)
# Relative DWI b = 1000 intensities: CSF dark (free diffusion), acute lesions bright (restricted diffusion).
ISLES_TISSUES = {"white": 0.42, "grey": 0.52, "csf": 0.08, "scalp": 0.12, "lesion": 1.0, "artefact": 1.0}


def _isles_lesions(
    rng: np.random.Generator,
    coords: Sequence[np.ndarray],
    parenchyma: np.ndarray,
    anatomy: BrainAnatomy,
    spacing: tuple[float, float, float],
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Scattered lesions: a cluster in one vascular territory plus, sometimes, a few elsewhere.

    Radii are drawn in mm (main lesion 5-11 mm, others log-normal within 2-8 mm) and converted with
    ``spacing``, so thick slices cut lesions into fewer slices; a shared smooth warp makes outlines
    irregular. Centres sit on parenchyma voxels and every lesion labels at least its centre voxel.
    Returns (mask, normalised radius rho, relative brightness) per lesion.
    """
    territory = anatomy.center + anatomy.radii * np.array(
        [rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.6), rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.5)]
    )
    spread = 0.18 * float(anatomy.radii.mean())
    centers = [point_in(rng, parenchyma, territory, spread) for _ in range(int(rng.integers(2, 8)))]
    if rng.random() < 0.5:  # embolic showers often hit more than one territory
        elsewhere = anatomy.center + anatomy.radii * rng.uniform(-0.6, 0.6, size=3)
        centers += [point_in(rng, parenchyma, elsewhere, spread) for _ in range(int(rng.integers(1, 3)))]
    shape = coords[0].shape
    warp_mm = 2.0  # outline irregularity, in mm like the radii
    warped = [
        c + warp_mm * smooth_field(rng, shape, num_waves=6, max_cycles=4.0) / sp
        for c, sp in zip(coords, spacing, strict=True)
    ]
    lesions = []
    for index, center in enumerate(centers):
        # the first lesion is the main infarct core; the others are small satellite or embolic lesions
        main = index == 0
        radius_mm = rng.uniform(5.0, 11.0) if main else float(np.clip(rng.lognormal(np.log(3.5), 0.4), 2.0, 8.0))
        radii = np.maximum(radius_mm * rng.uniform(0.7, 1.3, size=3) / np.asarray(spacing), 0.5)
        rho = ellipsoid_rho(warped, center, radii, rotation_3d(rng.uniform(0, np.pi, size=3)))
        mask = (rho < 1) & parenchyma
        mask[tuple(center.astype(int))] = True
        lesions.append((mask, rho, rng.uniform(0.6, 1.25)))
    return lesions


def isles_subject(
    rng: np.random.Generator, number: int, shape: tuple[int, ...] | None, with_label: bool = True
) -> list[PhantomVolume]:
    """One ISLES-like case: DWI head with several small bright lesions (default 64 x 64 x 32).

    Spacing varies per case (in-plane 1.6-2.2 mm, slices 2, 3 or 4 mm). Not skull-stripped: a faint
    scalp and Rician background noise surround the brain. Lesion brightness varies, grey matter is
    brighter than white matter and most cases carry an unlabelled bright susceptibility artefact at
    the frontal base, so thresholding alone does not find the lesions.
    """
    dims = np.array(shape or ISLES_DEFAULT_SHAPE)
    in_plane = round(float(rng.uniform(1.6, 2.2)), 3)
    spacing = (in_plane, in_plane, float(rng.choice([2.0, 3.0, 4.0])))
    t = jittered(rng, ISLES_TISSUES)
    coords = voxel_grid(dims)
    anatomy = brain_anatomy(rng, coords, dims, size=0.85)  # leave room for the scalp
    head = ellipsoid_rho(coords, anatomy.center, anatomy.radii * 1.12) < 1
    tissue = np.zeros(tuple(dims))
    tissue[head & ~anatomy.brain] = t["scalp"]
    tissue[anatomy.white] = t["white"]
    tissue[anatomy.grey] = t["grey"]
    tissue[anatomy.csf] = t["csf"]
    tissue *= 1.0 + 0.05 * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=5.0)

    if rng.random() < 0.8:  # susceptibility artefact next to the sinuses (frontal base), not a lesion
        spot = anatomy.center + anatomy.radii * np.array([rng.uniform(-0.3, 0.3), -0.8, -0.55])
        radii = np.maximum(anatomy.radii * rng.uniform(0.08, 0.15, size=3), 0.8)
        tissue[(ellipsoid_rho(coords, spot, radii) < 1) & anatomy.brain] = t["artefact"] * rng.uniform(0.7, 1.1)

    parenchyma = anatomy.brain & ~anatomy.csf
    label = np.zeros(tuple(dims), dtype=np.uint8)
    for mask, rho, brightness in _isles_lesions(rng, coords, parenchyma, anatomy, spacing):
        fade = np.clip((1.0 - rho) / 0.5, 0.3, 1.0)  # soft rim: the lesion edge is only slightly bright
        tissue[mask] = (tissue + fade * (t["lesion"] * brightness - tissue))[mask]
        label[mask] = 1
    image = rng.uniform(200.0, 500.0) * mri_corrupt(rng, tissue, blur_axes=(0, 1), bias=0.25, noise=0.03)
    return [
        PhantomVolume(item=isles_item(f"phantom{number:03d}", with_label), image=image, label=label, spacing=spacing)
    ]


PHANTOM = Flavour(
    make_subject=isles_subject,
    default_counts=(8, 2, 2),
    metadata=phantom_metadata("ISLES2022-phantom", PHANTOM_DESCRIPTION, ISLES_LABELS, "MRI", 3, "phantom-isles"),
)
