"""ACDC (cardiac cine-MRI, 2D networks, 4 classes): labels, split lists, the two preparers and the phantom.

Preparers: ``acdc`` (the official NIfTI release) and ``acdc_h5`` (SSL4MIS's processed h5 frame volumes), both
with the SSL4MIS lists (``splits/acdc/``: 70 training patients = 140 frame volumes, 10 validation, 20 test).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .folder import dataset_metadata, frame_item
from .phantom_parts import (
    Flavour,
    PhantomVolume,
    ellipsoid_rho,
    jittered,
    mri_corrupt,
    phantom_metadata,
    rotation_2d,
    voxel_grid,
)
from .preparer import (
    Conversion,
    Found,
    Preparer,
    case_folders,
    first_file,
    prepare_folder,
    read_h5,
    read_splits,
)

ACDC_LABELS = {"0": "background", "1": "right ventricle", "2": "myocardium", "3": "left ventricle"}
ACDC_SPLITS = {"training": "acdc/train.list", "validation": "acdc/val.list", "test": "acdc/test.list"}
ACDC_SOURCE_SPLIT = "HiLab-git/SSL4MIS: data/ACDC/train.list, val.list, test.list (copies in splits/acdc/)"
_ACDC_CASE = re.compile(r"^(patient\d{3})_frame(0[12])$")
_ACDC_GT = re.compile(r"^(patient\d{3})_frame(\d+)_gt\.nii(\.gz)?$")


def acdc_patient_id(patient: str) -> str:
    """Return the ``patient`` value stored in dataset.json.

    Prefixed because MONAI's ``load_decathlon_datalist`` turns a bare ``patient001`` into a path
    (the case folder of that name exists); the prefix keeps it an identifier.
    """
    return f"ACDC:{patient}"


def acdc_item(case: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of an ACDC frame volume ``patientXXX_frameYY`` (official layout)."""
    return frame_item(case, acdc_patient_id(case.split("_")[0]), with_label)


def acdc_metadata(description: str, source_format: str) -> dict[str, Any]:
    """Return the descriptive dataset.json keys shared by both ACDC commands."""
    return dataset_metadata(
        "ACDC", description, ACDC_SOURCE_SPLIT, ACDC_LABELS, "MRI", 2, "ssl4mis-acdc", source_format=source_format
    )


# --------------------------------------------------------------------------------------------
# Preparers
# --------------------------------------------------------------------------------------------


def find_acdc_patients(source: Path) -> dict[str, Path]:
    """Map ``patientXXX`` to its folder, searching recursively (the release has training/ and testing/)."""
    return case_folders(source, "patient[0-9][0-9][0-9]")


def acdc_annotated_frames(folder: Path) -> list[tuple[int, Path, Path]]:
    """Return ``(frame number, image, label)`` of a patient's annotated frames, sorted by frame number."""
    frames = []
    for gt in folder.iterdir():
        match = _ACDC_GT.match(gt.name)
        if match and match.group(1) == folder.name:
            image = gt.with_name(gt.name.replace("_gt.nii", ".nii"))
            frames.append((int(match.group(2)), image, gt))
    return sorted(frames)


def _locate_frame(patients: dict[str, Path], case: str) -> tuple[Path, Path, int] | None:
    """Image, label and true frame number of ``patientXXX_frame01`` (lower annotated frame) or ``frame02``."""
    match = _ACDC_CASE.match(case)
    folder = patients.get(match.group(1)) if match else None
    if folder is None:
        return None
    frames = acdc_annotated_frames(folder)
    slot = int(match.group(2)) - 1
    if len(frames) != 2 or not frames[slot][1].is_file():
        return None
    number, image, label = frames[slot]
    return image, label, number


def _source_frames(found: Found) -> dict[str, Any]:
    """``source_frames``: the official frame each written ``frame01``/``frame02`` volume comes from."""
    frames = {
        case: f"{case.split('_')[0]}_frame{number:02d}" for cases in found.values() for case, (*_, number) in cases
    }
    return {"source_frames": frames}


def prepare_acdc(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert the official ACDC NIfTI release into a dataset folder with the SSL4MIS split.

    SSL4MIS names the two annotated frames ``frame01``/``frame02`` whatever their true number: the lower
    frame number becomes frame01 (ED), the higher frame02 (ES); ``source_frames`` records the mapping.
    Images are written as float32 and labels as uint8 with the original affine (no resampling).
    """
    conversion = Conversion(
        splits=read_splits(ACDC_SPLITS),
        scan=find_acdc_patients,
        locate=_locate_frame,
        item=acdc_item,
        metadata=acdc_metadata(
            "ACDC cine-MRI frame volumes from the official release; annotated frames renamed frame01 (lower "
            "frame number, ED) and frame02 (higher, ES) as in SSL4MIS; original spacing, no resampling.",
            "acdc-official-nifti",
        ),
        trailer=_source_frames,
    )
    return prepare_folder(source, out, allow_missing, conversion)


def prepare_acdc_h5(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert SSL4MIS's ACDC h5 frame volumes (``image``/``label`` stored z, y, x) into a dataset folder.

    Axes are transposed to NIfTI order (x, y, z). The h5 files carry no spacing, so unit spacing is
    written (metrics in the papers are in voxel units anyway). ``source`` may be ``data/ACDC`` or
    its ``data/`` sub-folder.
    """
    conversion = Conversion(
        splits=read_splits(ACDC_SPLITS),
        locate=lambda source, case: first_file(root / f"{case}.h5" for root in (source, source / "data")),
        read=lambda path: read_h5(path, (1.0, 1.0, 1.0), zyx=True),
        item=acdc_item,
        metadata=acdc_metadata(
            "ACDC frame volumes from SSL4MIS's processed h5 files (already min-max normalised per volume), "
            "transposed from (z, y, x) to (x, y, z). The h5 files have no spacing: UNIT spacing is written, "
            "so physical-mm metrics are not available for this folder.",
            "ssl4mis-h5",
        ),
    )
    return prepare_folder(source, out, allow_missing, conversion)


PREPARERS = (
    Preparer("acdc", "official ACDC release (patientXXX/ folders with _frameYY.nii.gz and _gt.nii.gz)", prepare_acdc),
    Preparer("acdc_h5", "SSL4MIS processed ACDC volumes (data/ACDC/data/patientXXX_frameYY.h5)", prepare_acdc_h5),
)


# --------------------------------------------------------------------------------------------
# Phantom: cardiac short-axis cine-MRI stacks, ED + ES frame per patient
# --------------------------------------------------------------------------------------------

PHANTOM_DESCRIPTION = (
    "Synthetic cardiac short-axis cine-MRI-like stacks (ED frame01, ES frame02 per patient) standing in for "
    "ACDC: LV blood pool ringed by myocardium, RV crescent, thorax background, bias field, Rician noise. For "
    "demos and tests only."
)

# Relative bSSFP-like intensities: blood and fat bright, myocardium and lung dark.
ACDC_TISSUES = {
    "air": 0.02,
    "body": 0.30,
    "fat": 0.75,
    "lung": 0.07,
    "liver": 0.40,
    "spine": 0.50,
    "aorta": 0.85,
    "rv_wall": 0.26,
    "rv": 0.82,
    "myo": 0.20,
    "lv": 0.90,
    "papillary": 0.28,
}


def _acdc_patient_params(rng: np.random.Generator, height: int, width: int, num_slices: int) -> dict[str, Any]:
    """Draw one patient's anatomy (sizes in pixels relative to the smaller in-plane side)."""
    s = min(height, width)
    return {
        "s": s,
        "tissue": jittered(rng, ACDC_TISSUES),
        "body_center": (height / 2 + rng.normal(0, 0.02) * s, width / 2 + rng.normal(0, 0.02) * s),
        "body_radii": (0.47 * height * rng.uniform(0.92, 1.02), 0.45 * width * rng.uniform(0.9, 1.0)),
        "fat_width": rng.uniform(0.05, 0.09),
        "lv_center": (height / 2 + rng.uniform(-0.06, 0.06) * s, width / 2 + rng.uniform(-0.06, 0.06) * s),
        "drift": rng.uniform(-0.05, 0.05, size=2) * s,  # centre shift from base to apex
        "r_lv": rng.uniform(0.10, 0.14) * s,
        "thickness": rng.uniform(0.045, 0.065) * s,
        "elongation": rng.uniform(0.85, 1.15),
        "angle": rng.uniform(0, np.pi),
        "rv_angle": 0.75 * np.pi + rng.normal(0, 0.2),  # RV on a consistent side, as in real scans
        "rv_size": rng.uniform(0.85, 1.05),
        "rv_end": rng.uniform(0.65, 0.9),  # fraction of the base-apex axis covered by the RV
        "es_cavity": rng.uniform(0.55, 0.75),  # ES / ED cavity radius
        "es_rv": rng.uniform(0.6, 0.8),
        "num_slices": num_slices,
    }


def _acdc_background(p: dict[str, Any], coords: Sequence[np.ndarray], u: float) -> np.ndarray:
    """Thorax-like background of one slice (``u`` = 0 at the base, 1 at the apex): body, fat, lungs, organs."""
    t, s = p["tissue"], p["s"]
    (cx, cy), (rx, ry) = p["body_center"], p["body_radii"]
    body = ellipsoid_rho(coords, (cx, cy), (rx, ry))
    img = np.full(coords[0].shape, t["air"])
    img[body < 1] = t["fat"]
    inner = body < 1 - p["fat_width"]
    img[inner] = t["body"]
    for side in (-1, 1):
        lung = ellipsoid_rho(coords, (cx + 0.05 * rx, cy + side * 0.6 * ry), (0.55 * rx, 0.3 * ry))
        img[inner & (lung < 1)] = t["lung"]
    grow = float(np.clip((u - 0.3) / 0.7, 0, 1))  # liver appears towards the apex
    if grow > 0:
        liver = ellipsoid_rho(coords, (cx - 0.1 * rx, cy + 0.55 * ry), (0.5 * rx * grow, 0.45 * ry * grow))
        img[inner & (liver < 1)] = t["liver"]
    spine = (cx + 0.72 * rx, cy)
    img[ellipsoid_rho(coords, spine, (0.065 * s, 0.065 * s)) < 1] = t["spine"]
    aorta = (spine[0] - 0.12 * s, spine[1] + 0.1 * s)
    img[ellipsoid_rho(coords, aorta, (0.045 * s, 0.045 * s)) < 1] = t["aorta"]
    return img


def _acdc_slice(
    p: dict[str, Any], coords: Sequence[np.ndarray], u: float, systole: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue map and label of one short-axis slice at base-apex position ``u`` (0 base, 1 apex)."""
    t = p["tissue"]
    img = _acdc_background(p, coords, u)
    label = np.zeros(img.shape, dtype=np.uint8)

    center = np.asarray(p["lv_center"]) + u * p["drift"]
    r_lv = p["r_lv"] * (1 - 0.7 * u**1.6)
    r_epi = r_lv + p["thickness"] * (1 - 0.25 * u)
    if systole:  # the cavity shrinks and the myocardium thickens (its area is kept)
        r_lv_es = r_lv * p["es_cavity"]
        r_epi = float(np.sqrt(r_epi**2 - r_lv**2 + r_lv_es**2))
        r_lv = r_lv_es
    e = np.sqrt(p["elongation"])
    rot = rotation_2d(p["angle"])
    d = ellipsoid_rho(coords, center, (e, 1 / e), rot)  # d < r: inside the scaled LV ellipse
    epi = d < r_epi

    rv_scale = p["rv_size"] * np.sqrt(max(0.0, 1 - (u / p["rv_end"]) ** 2)) * (p["es_rv"] if systole else 1.0)
    if rv_scale > 0.05:
        direction = np.array([np.cos(p["rv_angle"]), np.sin(p["rv_angle"])])
        rv_center = center + 0.7 * r_epi * direction
        rv_rot = rotation_2d(-p["rv_angle"])
        radii = (0.95 * r_epi * rv_scale, 1.4 * r_epi * rv_scale)
        rv = ellipsoid_rho(coords, rv_center, radii, rv_rot)
        wall = 1 + 0.035 * p["s"] / radii[0]  # thin unlabelled free wall
        img[(rv < wall) & ~epi] = t["rv_wall"]
        img[(rv < 1) & ~epi] = t["rv"]
        label[(rv < 1) & ~epi] = 1
    img[epi] = t["myo"]
    label[epi] = 2
    cavity = d < r_lv
    img[cavity] = t["lv"]
    label[cavity] = 3
    if u < 0.7:  # papillary muscles: dark but labelled LV, as in the ACDC masks
        for side in (-0.6, 0.6):
            angle = p["rv_angle"] + np.pi + side
            spot = center + 0.55 * r_lv * np.array([np.cos(angle), np.sin(angle)])
            pap = ellipsoid_rho(coords, spot, (0.2 * r_lv, 0.2 * r_lv)) < 1
            img[pap & cavity] = t["papillary"]
    return img, label


def acdc_subject(
    rng: np.random.Generator, number: int, shape: tuple[int, ...] | None, with_label: bool = True
) -> list[PhantomVolume]:
    """One ACDC-like patient: ED (frame01) and ES (frame02) short-axis stacks, official file naming.

    ``shape`` is ``(x, y)`` or ``(x, y, slices)``; by default the in-plane size is drawn in
    [96, 128] and the slice count in [8, 12] per patient. Spacing is anisotropic (thick slices).
    """
    height = int(shape[0]) if shape else int(rng.integers(96, 129))
    width = int(shape[1]) if shape else int(rng.integers(96, 129))
    num_slices = int(shape[2]) if shape and len(shape) > 2 else int(rng.integers(8, 13))
    in_plane = round(float(rng.uniform(1.35, 1.75)), 3)
    spacing = (in_plane, in_plane, float(rng.choice([5.0, 6.5, 8.0, 10.0])))
    p = _acdc_patient_params(rng, height, width, num_slices)
    coords = voxel_grid((height, width))
    gain = rng.uniform(200.0, 600.0)  # arbitrary scanner units, as in the raw ACDC files
    noise = rng.uniform(0.02, 0.04)
    volumes = []
    for frame in (1, 2):
        tissue = np.zeros((height, width, num_slices))
        label = np.zeros((height, width, num_slices), dtype=np.uint8)
        for k in range(num_slices):
            u = k / max(num_slices - 1, 1)
            tissue[..., k], label[..., k] = _acdc_slice(p, coords, u, systole=frame == 2)
        image = gain * mri_corrupt(rng, tissue, blur_axes=(0, 1), bias=0.25, noise=noise)
        item = acdc_item(f"patient{number:03d}_frame{frame:02d}", with_label=with_label)
        volumes.append(PhantomVolume(item=item, image=image, label=label, spacing=spacing))
    return volumes


PHANTOM = Flavour(
    make_subject=acdc_subject,
    default_counts=(8, 2, 2),
    shape_lengths=(2, 3),
    min_shape=(32, 32, 1),  # smaller in-plane sizes can lose the ES cavity
    metadata=phantom_metadata("ACDC-phantom", PHANTOM_DESCRIPTION, ACDC_LABELS, "MRI", 2, "phantom-acdc"),
)
