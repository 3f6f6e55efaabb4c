"""York cardiac MRI (short-axis cine, 2D, left-ventricle endocardium, binary): labels, split, preparer, phantom.

The release (Andreopoulos & Tsotsos, York University) has 33 subjects, each as two MATLAB files:
``sol_yxzt_patN.mat`` (variable ``sol_yxzt``, the image volume over time, axes y, x, z, t) and
``manual_seg_32points_patN.mat`` (variable ``manual_seg_32points``, a z x t cell array; each cell holds the
manual contour points (x, y) in 1-based pixel coordinates: the endocardium is the first 32 points, the epicardium
the next 32; cells of unannotated slices/frames are empty). CoraNet's "MR endocardium" experiment (7,980 images of
256 x 256, binary) matches it; neither its split nor its code was published, so the subject-level split is the
project's (``splits/york/``, :func:`york_subject_split`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .folder import dataset_metadata, frame_item
from .phantom_parts import Flavour, PhantomVolume, ellipsoid_rho, jittered, mri_corrupt, phantom_metadata, voxel_grid
from .preparer import Conversion, Found, Preparer, Volumes, prepare_folder, read_splits

YORK_LABELS = {"0": "background", "1": "left ventricle endocardium"}
YORK_SPLITS = {"training": "york/train.list", "validation": "york/val.list", "test": "york/test.list"}
YORK_SOURCE_SPLIT = (
    "project-defined: seeded subject-level split of the 33 York subjects, 23 training / 3 validation / 7 test "
    "(common/datasets/york.py york_subject_split; copies in splits/york/)"
)
YORK_NUM_SUBJECTS = 33
YORK_SEED = 20211021
YORK_COUNTS = (23, 3, 7)  # training, validation, test subjects (the ACDC 70/10/20 proportions)
ENDOCARDIUM_POINTS = 32  # first 32 points of a contour cell; the next 32 are the epicardium


def york_subject_split(seed: int = YORK_SEED, counts: Sequence[int] = YORK_COUNTS) -> dict[str, list[str]]:
    """The project's seeded subject split: ``numpy.random.default_rng(seed).permutation`` of pat1..pat33, cut by
    ``counts`` into training / validation / test (training's head is the labeled subset)."""
    order = np.random.default_rng(seed).permutation(np.arange(1, YORK_NUM_SUBJECTS + 1))
    names = [f"pat{int(n)}" for n in order]
    bounds = np.cumsum([0, *counts])
    return {section: names[bounds[i] : bounds[i + 1]] for i, section in enumerate(YORK_SPLITS)}


def york_patient_id(subject: str) -> str:
    """The ``patient`` value stored in dataset.json (prefixed: a bare ``pat1`` names the case folder)."""
    return f"York:{subject}"


def york_item(case: str, with_label: bool = True) -> dict[str, str]:
    """The dataset.json item of frame volume ``patN_frameFF``: ``patN/patN_frameFF.nii.gz`` (+ ``_gt``)."""
    return frame_item(case, york_patient_id(case.split("_")[0]), with_label)


# --------------------------------------------------------------------------------------------
# Preparer: MATLAB files -> one NIfTI volume per annotated frame (its annotated slices only)
# --------------------------------------------------------------------------------------------


def _load_mat_variable(path: Path, name: str) -> np.ndarray:
    """Variable ``name`` of MATLAB file ``path``; errors name the file."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        content = loadmat(str(path))
    except (MatReadError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable MATLAB file ({err})") from err
    if name not in content:
        found = sorted(key for key in content if not key.startswith("__"))
        raise ValueError(f"{path}: no variable {name!r} (found {found})")
    return content[name]


def _contour_points(cell: Any, path: Path, slice_index: int, frame: int) -> np.ndarray | None:
    """Endocardium points (x, y), 1-based, of one contour cell; None for an unannotated cell (empty or negative)."""
    points = np.asarray(cell, dtype=np.float64) if np.size(cell) else np.zeros((0, 2))
    if points.size == 0 or (points < 0).all():
        return None
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < ENDOCARDIUM_POINTS:
        raise ValueError(
            f"{path}: cell (slice {slice_index + 1}, frame {frame + 1}) holds points of shape {points.shape}, "
            f"expected at least {ENDOCARDIUM_POINTS} rows of (x, y)"
        )
    return points[:ENDOCARDIUM_POINTS]


def rasterise_endocardium(points: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Filled endocardium polygon of 1-based (x, y) contour points on a (y, x) grid (uint8 0/1)."""
    from skimage.draw import polygon

    rows, cols = polygon(points[:, 1] - 1.0, points[:, 0] - 1.0, shape=shape_yx)
    mask = np.zeros(shape_yx, dtype=np.uint8)
    mask[rows, cols] = 1
    return mask


@dataclass(frozen=True)
class YorkFrame:
    """One annotated frame of a subject: its files, frame index (0-based), contour grid and slice contours."""

    image_path: Path
    contour_path: Path
    frame: int
    grid: tuple[int, int]  # (slices, frames) of the contour cell array, which the image volume must match
    contours: tuple[tuple[int, np.ndarray], ...]  # (slice index, endocardium points) of the annotated slices


def annotated_frames(image_path: Path, contour_path: Path) -> list[YorkFrame]:
    """The annotated frames of a subject, read from its contour file (the image file is read later, per frame)."""
    cells = _load_mat_variable(contour_path, "manual_seg_32points")
    if cells.dtype != object or cells.ndim != 2:
        raise ValueError(
            f"{contour_path}: manual_seg_32points should be a (slices, frames) cell array, got {cells.dtype} "
            f"{cells.shape}"
        )
    frames = []
    for frame in range(cells.shape[1]):
        contours = []
        for index in range(cells.shape[0]):
            points = _contour_points(cells[index, frame], contour_path, index, frame)
            if points is not None:
                contours.append((index, points))
        if contours:
            frames.append(YorkFrame(image_path, contour_path, frame, cells.shape, tuple(contours)))
    if not frames:
        raise ValueError(f"{contour_path}: no annotated contour in any slice or frame")
    return frames


@lru_cache(maxsize=1)  # the frames of one subject are written one after another: read its volume once
def _image_volume(path: Path) -> np.ndarray:
    volume = _load_mat_variable(path, "sol_yxzt")
    if volume.ndim != 4:
        raise ValueError(f"{path}: sol_yxzt has shape {volume.shape}, expected (y, x, z, t)")
    return volume


def read_york_frame(frame: YorkFrame) -> Volumes:
    """Image and endocardium label of the annotated slices of one frame, axes (x, y, slice), unit spacing.

    Only annotated slices are kept (an unannotated slice is not background); axes go from (y, x) to (x, y).
    """
    volume = _image_volume(frame.image_path)
    if volume.shape[2:] != frame.grid:
        raise ValueError(
            f"{frame.contour_path}: contour cells of (slices, frames) = {frame.grid} do not match the image "
            f"volume {frame.image_path.name} of shape {volume.shape} (y, x, z, t)"
        )
    image = np.stack([volume[:, :, index, frame.frame].T for index, _ in frame.contours], axis=-1)
    label = np.stack([rasterise_endocardium(points, volume.shape[:2]).T for _, points in frame.contours], axis=-1)
    affine = np.eye(4)  # the MATLAB files carry no spacing: unit pixels (metrics in pixel units anyway)
    return Volumes(image.astype(np.float32), label, affine, affine, name=str(frame.contour_path))


def _locate_subject(source: Path, subject: str) -> tuple[Path, Path] | None:
    """Image and contour files of ``subject`` anywhere below ``source`` (None when either is absent)."""
    found = [
        next(iter(sorted(source.rglob(f"{stem}_{subject}.mat"))), None) for stem in ("sol_yxzt", "manual_seg_32points")
    ]
    return (found[0], found[1]) if all(found) else None


def _frame_cases(found: Found) -> Found:
    """Listed subjects -> their annotated frames ``patN_frameFF``, in subject list order then frame order."""
    return {
        section: [
            (f"{subject}_frame{frame.frame + 1:02d}", frame)
            for subject, files in subjects
            for frame in annotated_frames(*files)
        ]
        for section, subjects in found.items()
    }


def _source_slices(found: Found) -> dict[str, Any]:
    """``source_slices``: the 1-based slice numbers of the release that each written frame volume holds."""
    slices = {case: [index + 1 for index, _ in frame.contours] for cases in found.values() for case, frame in cases}
    return {"source_slices": slices}


def prepare_york(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert the York cardiac MRI MATLAB files into a dataset folder with the project's subject split.

    Per subject and annotated frame one image + label volume of its annotated slices only (``source_slices``
    in dataset.json lists them): the image from ``sol_yxzt`` (y, x, z, t), the label the filled endocardium
    polygon (first 32 contour points) rasterised with ``skimage.draw.polygon``. Unit spacing (the files carry
    none). A file without the expected variable or layout is refused with a message naming it.
    """
    conversion = Conversion(
        splits=read_splits(YORK_SPLITS),
        locate=_locate_subject,
        expand=_frame_cases,
        item=york_item,
        read=read_york_frame,
        metadata=dataset_metadata(
            "York-cardiac-MRI",
            "York University cardiac MRI (short-axis cine, 33 subjects x 20 frames): one volume per subject and "
            "annotated frame holding its annotated slices, left-ventricle endocardium (filled manual contour) = 1; "
            "raw intensities, unit spacing (the MATLAB files carry no geometry).",
            YORK_SOURCE_SPLIT,
            YORK_LABELS,
            "MRI",
            2,
            "york-mat",
        ),
        trailer=_source_slices,
    )
    return prepare_folder(source, out, allow_missing, conversion)


PREPARERS = (
    Preparer(
        "york",
        "York cardiac MRI MATLAB files (sol_yxzt_patN.mat, manual_seg_32points_patN.mat per subject)",
        prepare_york,
    ),
)


# --------------------------------------------------------------------------------------------
# Phantom: short-axis cine slices, bright LV cavity inside a darker myocardial ring
# --------------------------------------------------------------------------------------------

PHANTOM_DESCRIPTION = (
    "Synthetic short-axis cine-MRI-like stacks standing in for the York cardiac MRI release: bright left-ventricle "
    "cavity (with darker papillary muscles, labelled) inside a darker myocardial ring, bright right-ventricle "
    "crescent and thorax background, bias field, Rician noise; label 1 = the cavity up to the endocardial border. "
    "Two frames (end-diastole-like, end-systole-like) per subject. For demos and tests only."
)

YORK_TISSUES = {"air": 0.03, "body": 0.32, "lung": 0.08, "rv": 0.8, "myo": 0.22, "lv": 0.9, "papillary": 0.3}


def _york_slice(p: dict[str, Any], coords, u: float, systole: bool) -> tuple[np.ndarray, np.ndarray]:
    """Tissue map and endocardium label of one short-axis slice at base-apex position ``u`` (0 base, 1 apex)."""
    t, s = p["tissue"], p["s"]
    img = np.full(coords[0].shape, t["air"])
    body = ellipsoid_rho(coords, p["body_center"], p["body_radii"])
    img[body < 1] = t["body"]
    for side in (-1, 1):
        lung = ellipsoid_rho(coords, (p["body_center"][0], p["body_center"][1] + side * 0.25 * s), (0.3 * s, 0.14 * s))
        img[(body < 1) & (lung < 1)] = t["lung"]
    r_lv = p["r_lv"] * (1 - 0.6 * u**1.5) * (p["es_cavity"] if systole else 1.0)
    r_epi = r_lv + p["thickness"] * (1.3 if systole else 1.0)
    d = ellipsoid_rho(coords, p["lv_center"], (p["elongation"], 1 / p["elongation"]))
    rv = ellipsoid_rho(coords, np.asarray(p["lv_center"]) + p["rv_offset"] * r_epi, (0.9 * r_epi, 1.4 * r_epi))
    img[(rv < 1) & (d >= r_epi)] = t["rv"]
    img[d < r_epi] = t["myo"]
    cavity = d < r_lv
    img[cavity] = t["lv"]
    for angle in p["papillary_angles"]:  # dark spots inside the cavity, labelled: the label stops at the endocardium
        spot = np.asarray(p["lv_center"]) + 0.6 * r_lv * np.array([np.cos(angle), np.sin(angle)])
        img[(ellipsoid_rho(coords, spot, (0.18 * r_lv, 0.18 * r_lv)) < 1) & cavity] = t["papillary"]
    return img, cavity.astype(np.uint8)


def york_subject(
    rng: np.random.Generator, number: int, shape: tuple[int, ...] | None, with_label: bool = True
) -> list[PhantomVolume]:
    """One York-like subject: two frame volumes (frame01 diastole-like, frame02 systole-like), ``patN`` naming.

    ``shape`` is ``(x, y)`` or ``(x, y, slices)``; default 96 x 96 x 6. Unit spacing, as the prepared release.
    """
    height, width = (int(shape[0]), int(shape[1])) if shape else (96, 96)
    num_slices = int(shape[2]) if shape and len(shape) > 2 else 6
    s = min(height, width)
    p = {
        "s": s,
        "tissue": jittered(rng, YORK_TISSUES),
        "body_center": (height / 2, width / 2),
        "body_radii": (0.46 * height, 0.44 * width),
        "lv_center": (height / 2 + rng.uniform(-0.06, 0.06) * s, width / 2 + rng.uniform(-0.06, 0.06) * s),
        "r_lv": rng.uniform(0.11, 0.15) * s,
        "thickness": rng.uniform(0.05, 0.07) * s,
        "elongation": np.sqrt(rng.uniform(0.85, 1.15)),
        "es_cavity": rng.uniform(0.55, 0.75),
        "rv_offset": np.array([np.cos(0.75 * np.pi), np.sin(0.75 * np.pi)]) * 0.8,
        "papillary_angles": rng.uniform(0, 2 * np.pi, size=2),
    }
    coords = voxel_grid((height, width))
    gain = rng.uniform(100.0, 400.0)
    volumes = []
    for frame in (1, 2):
        tissue = np.zeros((height, width, num_slices))
        label = np.zeros((height, width, num_slices), dtype=np.uint8)
        for k in range(num_slices):
            tissue[..., k], label[..., k] = _york_slice(p, coords, k / max(num_slices - 1, 1), systole=frame == 2)
        image = gain * mri_corrupt(rng, tissue, blur_axes=(0, 1), bias=0.25, noise=rng.uniform(0.02, 0.04))
        item = york_item(f"pat{number}_frame{frame:02d}", with_label=with_label)
        volumes.append(PhantomVolume(item=item, image=image, label=label, spacing=(1.0, 1.0, 1.0)))
    return volumes


PHANTOM = Flavour(
    make_subject=york_subject,
    default_counts=(8, 2, 2),
    shape_lengths=(2, 3),
    min_shape=(32, 32, 1),
    metadata=phantom_metadata("York-cardiac-MRI-phantom", PHANTOM_DESCRIPTION, YORK_LABELS, "MRI", 2, "phantom-york"),
)
