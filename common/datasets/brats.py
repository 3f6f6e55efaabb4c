"""BraTS 2019 (whole tumour from FLAIR, 3D, binary): labels, split lists, the two preparers and the phantom.

Preparers: ``brats_h5`` (SSL4MIS's processed h5 volumes) and ``brats`` (the official training release), both with
the SSL4MIS lists (``splits/brats2019/``: 250 training, 25 validation, 60 test).
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
from .preparer import (
    Conversion,
    Preparer,
    case_folders,
    first_file,
    nifti_names,
    prepare_folder,
    read_h5,
    read_split,
)

BRATS_LABELS = {"0": "background", "1": "whole tumour"}
BRATS_SPACING = (1.0, 1.0, 1.0)
BRATS_SPLITS = {"training": "brats2019/train.txt", "validation": "brats2019/val.txt", "test": "brats2019/test.txt"}
BRATS_SOURCE_SPLIT = "HiLab-git/SSL4MIS: data/BraTS2019/train.txt, val.txt, test.txt (copies in splits/brats2019/)"


def brats_item(case_id: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of BraTS case ``case_id``: the FLAIR image only, ``case`` = ``BraTS:<id>``."""
    return volume_item("BraTS", case_id, with_label)


def brats_splits() -> dict[str, list[str]]:
    """Read the SSL4MIS BraTS 2019 lists; DyCON's copies may carry ``,``-separated extras, so keep the id only."""
    return {split: [line.split(",")[0].strip() for line in read_split(rel)] for split, rel in BRATS_SPLITS.items()}


def brats_metadata(description: str, preprocessing: str) -> dict[str, Any]:
    """Return the descriptive dataset.json keys of a BraTS 2019 dataset folder."""
    return dataset_metadata("BraTS2019", description, BRATS_SOURCE_SPLIT, BRATS_LABELS, "MRI", 3, preprocessing)


# --------------------------------------------------------------------------------------------
# Preparers
# --------------------------------------------------------------------------------------------


def prepare_brats_h5(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert SSL4MIS's BraTS 2019 h5 volumes into a dataset folder with the SSL4MIS 250/25/60 split.

    The h5 files hold the FLAIR image already cropped to the brain box, clipped at the 99.9 % point and
    z-scored, and the whole-tumour label (0/1), both stored z-first (SimpleITK order); they are transposed
    to NIfTI order (x, y, z), as DyCON does. Spacing is 1 mm (the challenge grid; the files carry none).
    ``source`` may be ``data/BraTS2019`` or its ``data/``.
    """
    conversion = Conversion(
        splits=brats_splits(),
        locate=lambda source, case: first_file(root / f"{case}.h5" for root in (source, source / "data")),
        read=lambda path: read_h5(path, BRATS_SPACING, zyx=True),
        item=brats_item,
        metadata=brats_metadata(
            "BraTS 2019 FLAIR volumes from SSL4MIS's processed h5 files (brain box, 99.9 % clip, z-score), "
            "whole tumour (original labels 1, 2, 4) = 1, transposed from (z, y, x) to (x, y, z), spacing 1 mm.",
            "ssl4mis-brats",
        ),
    )
    return prepare_folder(source, out, allow_missing, conversion)


def find_brats_cases(source: Path) -> dict[str, Path]:
    """Map each ``BraTS19_*`` case id to its folder, searching recursively (the release has HGG/ and LGG/)."""
    return case_folders(source, "BraTS19_*")


def _locate_flair_and_seg(folders: dict[str, Path], case: str) -> tuple[Path, Path] | None:
    """The FLAIR image and segmentation of a release case (a case without both counts as missing)."""
    folder = folders.get(case)
    if folder is None:
        return None
    image = first_file(folder / name for name in nifti_names(f"{case}_flair"))
    label = first_file(folder / name for name in nifti_names(f"{case}_seg"))
    return (image, label) if image and label else None


def prepare_brats(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert the official BraTS 2019 training release into a dataset folder with the SSL4MIS split.

    Per case the FLAIR file is the image and ``seg > 0`` (labels 1, 2, 4) the whole-tumour label.
    The original 240 x 240 x 155 1 mm geometry is kept: the brain-box crop, 99.9 % clip and z-score of
    the SSL4MIS recipe are the bundle's transforms (dataset.json ``preprocessing`` "brats-raw-flair").
    ``source`` may be the release folder or any parent of its HGG/ and LGG/ folders.
    """
    conversion = Conversion(
        splits=brats_splits(),
        scan=find_brats_cases,
        locate=_locate_flair_and_seg,
        item=brats_item,
        merge_foreground=True,
        metadata=brats_metadata(
            "BraTS 2019 FLAIR volumes from the official release in their original geometry (240 x 240 x 155, "
            "1 mm, skull-stripped, raw intensities); whole tumour = seg > 0. Cropping to the brain box, the "
            "99.9 % clip and the z-score (SSL4MIS BraTS recipe) are done by the bundle's transforms.",
            "brats-raw-flair",
        ),
    )
    return prepare_folder(source, out, allow_missing, conversion)


PREPARERS = (
    Preparer(
        "brats_h5",
        "SSL4MIS processed BraTS 2019 volumes (data/BraTS2019/data/<ID>.h5, FLAIR, stored z, y, x)",
        prepare_brats_h5,
    ),
    Preparer(
        "brats",
        "official BraTS 2019 training release ({HGG,LGG}/<ID>/<ID>_flair.nii.gz and _seg.nii.gz)",
        prepare_brats,
    ),
)


# --------------------------------------------------------------------------------------------
# Phantom: skull-stripped FLAIR with one glioma (whole tumour = core + oedema), 1 mm
# --------------------------------------------------------------------------------------------

PHANTOM_DESCRIPTION = (
    "Synthetic skull-stripped FLAIR-like brain volumes standing in for BraTS 2019 (whole tumour from FLAIR): "
    "folded grey/white matter, dark CSF and ventricles, one glioma with an irregular core and finger-like "
    "hyperintense oedema (both labelled 1), unlabelled white-matter hyperintensities, bias field, Rician noise, "
    "zero background, raw intensities, spacing 1 mm. For demos and tests only."
)

BRATS_DEFAULT_SHAPE = (64, 64, 48)
# Relative FLAIR intensities: CSF suppressed, grey matter a little brighter than white matter, oedema bright.
BRATS_TISSUES = {"white": 0.46, "grey": 0.66, "csf": 0.10, "oedema": 1.0, "rim": 0.85, "necrosis": 0.6, "wmh": 0.9}


def _brats_tumour(rng: np.random.Generator, coords: Sequence[np.ndarray], dims: np.ndarray, anatomy: BrainAnatomy):
    """Irregular tumour core (a few merged blobs, necrotic centre) inside finger-like oedema.

    Returns (core, necrosis, oedema, rho of the oedema envelope); oedema is clipped to the brain and
    reaches less far into grey matter, as vasogenic oedema follows the white matter.
    """
    parenchyma = anatomy.brain & ~anatomy.csf
    target = anatomy.center + anatomy.radii * rng.uniform(-0.45, 0.45, size=3)
    center = point_in(rng, parenchyma, target, 0.15 * dims.min())
    r_core = max(1.5, rng.uniform(0.06, 0.11) * dims.min())
    amplitude = 0.3 * r_core
    warped = [c + amplitude * smooth_field(rng, dims.astype(int), max_cycles=2.5) for c in coords]
    blobs = []
    for _ in range(int(rng.integers(2, 5))):
        offset = rng.normal(0.0, 0.45 * r_core, size=3)
        radii = r_core * rng.uniform(0.6, 1.0, size=3)
        blobs.append(ellipsoid_rho(warped, center + offset, radii, rotation_3d(rng.uniform(0, np.pi, size=3))))
    rho_core = np.min(blobs, axis=0)
    core = rho_core < 1
    necrosis = rho_core < rng.uniform(0.4, 0.6)

    reach = r_core * rng.uniform(1.8, 3.0, size=3)
    amplitude = 0.5 * reach.mean()  # strong, higher-frequency warp: finger-like spread
    warped = [c + amplitude * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=4.0) for c in coords]
    rho_oedema = ellipsoid_rho(warped, center, reach, rotation_3d(rng.uniform(0, np.pi, size=3)))
    oedema = ((rho_oedema < 1) & anatomy.white) | ((rho_oedema < 0.7) & anatomy.grey)
    core &= anatomy.brain
    return core, necrosis & core, oedema & ~core, rho_oedema


def brats_subject(
    rng: np.random.Generator, number: int, shape: tuple[int, ...] | None, with_label: bool = True
) -> list[PhantomVolume]:
    """One BraTS-like case: skull-stripped FLAIR with a glioma, whole-tumour label (default 64 x 64 x 48, 1 mm).

    Background outside the brain is exactly 0, as in the BraTS release; intensities are raw scanner-like
    units (the bundle crops, clips and z-scores them). The oedema fades towards its border and some
    unlabelled white-matter hyperintensities and grey matter reach similar values, so a global threshold
    does not segment the tumour.
    """
    dims = np.array(shape or BRATS_DEFAULT_SHAPE)
    t = jittered(rng, BRATS_TISSUES)
    coords = voxel_grid(dims)
    anatomy = brain_anatomy(rng, coords, dims, size=0.9)
    tissue = np.zeros(tuple(dims))
    tissue[anatomy.white] = t["white"]
    tissue[anatomy.grey] = t["grey"]
    tissue[anatomy.csf] = t["csf"]
    tissue *= 1.0 + 0.06 * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=5.0)  # tissue texture

    for _ in range(int(rng.integers(1, 5))):  # small periventricular / deep white-matter hyperintensities
        spot = point_in(rng, anatomy.white, anatomy.center, 0.3 * dims.min())
        blob = ellipsoid_rho(coords, spot, np.maximum(rng.uniform(0.02, 0.05, size=3) * dims.min(), 0.8)) < 1
        tissue[blob & anatomy.white] = t["wmh"]

    core, necrosis, oedema, rho_oedema = _brats_tumour(rng, coords, dims, anatomy)
    fade = np.clip((1.0 - rho_oedema) / 0.4, 0.35, 1.0)  # oedema brightness falls off towards its border
    tissue[oedema] = (tissue + fade * (t["oedema"] - tissue))[oedema]
    tissue[core] = t["rim"]
    tissue[necrosis] = t["necrosis"]

    image = mri_corrupt(rng, tissue, blur_axes=(0, 1, 2), bias=0.2, noise=rng.uniform(0.025, 0.04))
    image = rng.uniform(300.0, 700.0) * image
    image[~anatomy.brain] = 0.0  # skull-stripped
    label = ((core | oedema) & anatomy.brain).astype(np.uint8)
    return [
        PhantomVolume(
            item=brats_item(f"phantom{number:03d}", with_label), image=image, label=label, spacing=BRATS_SPACING
        )
    ]


PHANTOM = Flavour(
    make_subject=brats_subject,
    default_counts=(8, 2, 2),
    metadata=phantom_metadata("BraTS2019-phantom", PHANTOM_DESCRIPTION, BRATS_LABELS, "MRI", 3, "phantom-brats"),
)
