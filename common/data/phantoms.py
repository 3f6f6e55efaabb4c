"""Synthetic, learnable stand-ins for the papers' datasets, written as dataset folders (README.md).

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

Each flavour is one function ``(rng, number, shape, with_label) -> list[PhantomVolume]`` registered in
``FLAVOURS`` with its metadata; a new dataset is one more such entry. Files and items follow the real
prepare commands (``common/data/prepare.py``), with case ids ``<Dataset>:phantomNNN``.
Generation uses NumPy only and one random generator per subject seeded by (seed, flavour, split,
index), so the same arguments give byte-identical folders and the first N training subjects do not
change when more are requested.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .prepare import (
    ACDC_LABELS,
    BRATS_LABELS,
    BRATS_SPACING,
    ISLES_LABELS,
    LA_LABELS,
    LA_SPACING,
    PANCREAS_LABELS,
    PANCREAS_SPACING,
    acdc_item,
    brats_item,
    isles_item,
    la_item,
    spacing_affine,
    volume_item,
    write_dataset_json,
    write_nifti,
)

# Bump when the generated images change, so cached demo datasets are regenerated.
GENERATOR_VERSION = 2  # 2: brats, pancreas and isles flavours (caches made while they were drafted are stale)

SPLIT_CODES = {"training": 0, "validation": 1, "test": 2, "unlabeled": 3}


@dataclass
class PhantomVolume:
    """One generated image/label pair and where it goes in the dataset folder."""

    item: dict[str, str]  # dataset.json item (paths relative to the folder, case, optional patient)
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class Flavour:
    """A phantom family: its generator, default split sizes and dataset.json metadata."""

    make_subject: Callable[[np.random.Generator, int, tuple[int, ...] | None, bool], list[PhantomVolume]]
    default_counts: tuple[int, int, int]  # train, validation, test subjects
    metadata: dict[str, Any]
    shape_lengths: tuple[int, ...]  # accepted lengths of the ``shape`` argument
    min_shape: tuple[int, ...]  # smallest accepted size per axis


# --------------------------------------------------------------------------------------------
# Geometry and MRI-like image formation helpers
# --------------------------------------------------------------------------------------------


def _rotation_2d(angle: float) -> np.ndarray:
    """Return the 2x2 rotation matrix of ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _rotation_3d(angles: Sequence[float]) -> np.ndarray:
    """Return the rotation matrix of Euler angles (about x, then y, then z)."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _frame_towards(direction: np.ndarray) -> np.ndarray:
    """Return a rotation whose last row is ``direction``: an ellipsoid's third radius then lies along it."""
    d = direction / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(d, u), d])


def ellipsoid_rho(
    coords: Sequence[np.ndarray], center: Sequence[float], radii: Sequence[float], rotation: np.ndarray | None = None
) -> np.ndarray:
    """Normalised radius of an (optionally rotated) ellipse/ellipsoid: < 1 inside, 1 on the surface."""
    offsets = [c - float(m) for c, m in zip(coords, center, strict=True)]
    if rotation is not None:
        offsets = [sum(rotation[i, j] * offsets[j] for j in range(len(offsets))) for i in range(len(offsets))]
    return np.sqrt(sum((o / float(r)) ** 2 for o, r in zip(offsets, radii, strict=True)))


def smooth_field(rng: np.random.Generator, shape: Sequence[int], num_waves: int = 4, max_cycles: float = 1.2):
    """Random low-frequency field in about [-1, 1]: a sum of a few plane cosine waves.

    Frequencies are at most ``max_cycles`` periods across the volume, which gives the slowly varying
    look of an MRI coil bias field without any filtering.
    """
    coords = np.meshgrid(*[np.arange(n, dtype=np.float64) / max(n, 1) for n in shape], indexing="ij")
    field = np.zeros(tuple(shape))
    for _ in range(num_waves):
        freqs = rng.uniform(-max_cycles, max_cycles, size=len(shape))
        phase = rng.uniform(0.0, 2.0 * np.pi)
        field += np.cos(2.0 * np.pi * sum(f * c for f, c in zip(freqs, coords, strict=True)) + phase)
    return field / num_waves


def blur(image: np.ndarray, axes: Sequence[int], passes: int = 1) -> np.ndarray:
    """Separable [1, 2, 1] / 4 smoothing along ``axes`` (edge-replicated): a cheap partial-volume effect."""
    out = image
    for _ in range(passes):
        for axis in axes:
            padded = np.concatenate(
                [np.take(out, [0], axis=axis), out, np.take(out, [out.shape[axis] - 1], axis=axis)], axis=axis
            )
            n = out.shape[axis]
            lo = np.take(padded, np.arange(0, n), axis=axis)
            hi = np.take(padded, np.arange(2, n + 2), axis=axis)
            out = 0.25 * lo + 0.5 * out + 0.25 * hi
    return out


def mri_corrupt(
    rng: np.random.Generator, tissue: np.ndarray, blur_axes: Sequence[int], bias: float, noise: float
) -> np.ndarray:
    """Turn a piecewise-constant tissue map into an MRI-like magnitude image.

    Partial-volume blur, a smooth multiplicative bias field ``exp(bias * field)`` and Rician noise
    (magnitude of a complex signal with Gaussian noise of std ``noise`` per channel).
    """
    image = blur(tissue, blur_axes)
    image = image * np.exp(bias * smooth_field(rng, image.shape))
    real = image + rng.normal(0.0, noise, size=image.shape)
    imag = rng.normal(0.0, noise, size=image.shape)
    return np.sqrt(real**2 + imag**2)


def _jitter(rng: np.random.Generator, value: float, rel: float = 0.1) -> float:
    """Return ``value`` scaled by a random factor in [1 - rel, 1 + rel]."""
    return float(value * rng.uniform(1.0 - rel, 1.0 + rel))


# --------------------------------------------------------------------------------------------
# ACDC: cardiac short-axis cine-MRI (2D network, 4 classes)
# --------------------------------------------------------------------------------------------

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
        "tissue": {name: _jitter(rng, value) for name, value in ACDC_TISSUES.items()},
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
    rot = _rotation_2d(p["angle"])
    d = ellipsoid_rho(coords, center, (e, 1 / e), rot)  # d < r: inside the scaled LV ellipse
    epi = d < r_epi

    rv_scale = p["rv_size"] * np.sqrt(max(0.0, 1 - (u / p["rv_end"]) ** 2)) * (p["es_rv"] if systole else 1.0)
    if rv_scale > 0.05:
        direction = np.array([np.cos(p["rv_angle"]), np.sin(p["rv_angle"])])
        rv_center = center + 0.7 * r_epi * direction
        rv_rot = _rotation_2d(-p["rv_angle"])
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
    coords = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
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


# --------------------------------------------------------------------------------------------
# LA: 3D LGE-MRI of the left atrium (3D network, binary), z-scored like UA-MT's mri_norm2.h5
# --------------------------------------------------------------------------------------------

LA_TISSUES = {"body": 0.32, "lung": 0.05, "spine": 0.5, "aorta": 0.85, "lv_myo": 0.15, "lv": 0.75, "wall": 0.12}
LA_DEFAULT_SHAPE = (64, 64, 48)


def _la_atrium(rng: np.random.Generator, coords: Sequence[np.ndarray], dims: np.ndarray):
    """Irregular atrium: a main ellipsoid plus vein stubs and an appendage, smoothly deformed.

    Returns (inside mask, wall-shell mask, centre of the main body).
    """
    center = dims * (0.5 + rng.uniform(-0.07, 0.07, size=3))
    main_radii = dims * np.array([0.26, 0.22, 0.26]) * rng.uniform(0.85, 1.1, size=3)
    parts = [(center, main_radii, _rotation_3d(rng.uniform(-0.4, 0.4, size=3)))]
    for _ in range(int(rng.integers(3, 6))):  # pulmonary-vein stubs, mostly posterior
        direction = np.array([rng.normal(0, 0.6), 1.0, rng.normal(0, 0.7)])
        direction /= np.linalg.norm(direction)
        start = center + main_radii * direction
        radii = np.array([0.085, 0.085, 0.24]) * dims.min() * rng.uniform(0.8, 1.2)
        parts.append((start, radii, _frame_towards(direction)))
    direction = np.array([rng.normal(0, 0.3), -1.0, rng.normal(0.5, 0.3)])  # appendage, anterior
    direction /= np.linalg.norm(direction)
    radii = np.array([0.06, 0.07, 0.12]) * dims.min() * rng.uniform(0.8, 1.2)
    parts.append((center + 0.85 * main_radii * direction, radii, _frame_towards(direction)))

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
    t = {name: _jitter(rng, value) for name, value in LA_TISSUES.items()}
    t["la"] = _jitter(rng, 0.9, 0.05)
    coords = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in dims], indexing="ij")
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


# --------------------------------------------------------------------------------------------
# Brain anatomy shared by the BraTS (FLAIR) and ISLES (DWI) flavours
# --------------------------------------------------------------------------------------------


@dataclass
class BrainAnatomy:
    """Tissue masks of one synthetic brain on the voxel grid (all boolean arrays of the grid's shape)."""

    brain: np.ndarray  # parenchyma + CSF inside the brain outline (what skull stripping keeps)
    grey: np.ndarray
    white: np.ndarray
    csf: np.ndarray  # ventricles, sulci and the interhemispheric fissure
    center: np.ndarray
    radii: np.ndarray


def _brain_anatomy(
    rng: np.random.Generator, coords: Sequence[np.ndarray], dims: np.ndarray, size: float = 1.0
) -> BrainAnatomy:
    """Draw a brain: deformed ellipsoid, folded cortical ribbon, deep grey nuclei, ventricles and sulci.

    Axes: x left-right, y anterior-posterior, z inferior-superior. Radii are ``size`` times about
    (0.40, 0.45, 0.42) of the grid, so the brain fills a fixed part of the field of view.
    """
    center = dims * (0.5 + rng.uniform(-0.02, 0.02, size=3))
    radii = size * dims * np.array([0.40, 0.45, 0.42]) * rng.uniform(0.92, 1.02, size=3)
    amplitude = 0.03 * dims.min()
    warped = [c + amplitude * smooth_field(rng, dims.astype(int), max_cycles=1.5) for c in coords]
    rho = ellipsoid_rho(warped, center, radii)
    brain = rho < 1

    # Cortical ribbon of varying depth: a higher-frequency field folds the grey/white boundary (gyri).
    folds = smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=4.0)
    depth = rng.uniform(0.16, 0.22) * (1.0 + 0.6 * folds)
    grey = brain & (rho > 1.0 - depth)
    sulci = grey & (folds > 0.55) & (rho > 0.9)  # CSF filling the deepest folds near the surface
    fissure = brain & (np.abs(coords[0] - center[0]) < 0.6) & (coords[2] > center[2] - 0.1 * radii[2])

    csf = sulci | fissure
    for side in (-1.0, 1.0):  # lateral ventricles: curved, elongated front to back, either side of the midline
        bend = 0.25 * radii[2] * ((coords[1] - center[1]) / radii[1]) ** 2
        ventricle_center = center + radii * np.array([side * 0.15, 0.0, 0.08])
        shifted = [coords[0], coords[1], coords[2] + bend]
        size = radii * np.array([0.12, 0.45, 0.16]) * rng.uniform(0.8, 1.25)
        csf |= ellipsoid_rho(shifted, ventricle_center, np.maximum(size, 0.8)) < 1
        nucleus = center + radii * np.array([side * 0.32, 0.05, -0.05])  # basal ganglia / thalamus
        grey |= ellipsoid_rho(coords, nucleus, radii * np.array([0.13, 0.2, 0.15])) < 1
    csf &= brain
    grey &= ~csf
    white = brain & ~grey & ~csf
    return BrainAnatomy(brain=brain, grey=grey, white=white, csf=csf, center=center, radii=radii)


def _point_in(rng: np.random.Generator, mask: np.ndarray, around: np.ndarray, spread: float) -> np.ndarray:
    """Return a voxel of ``mask`` drawn with Gaussian weight ``exp(-d^2 / 2 spread^2)`` around ``around``."""
    candidates = np.argwhere(mask)
    weights = np.exp(-np.sum((candidates - around) ** 2, axis=1) / (2.0 * spread**2)) + 1e-12
    return candidates[rng.choice(len(candidates), p=weights / weights.sum())].astype(np.float64)


# --------------------------------------------------------------------------------------------
# BraTS 2019: skull-stripped FLAIR with one glioma (whole tumour = core + oedema), 1 mm
# --------------------------------------------------------------------------------------------

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
    center = _point_in(rng, parenchyma, target, 0.15 * dims.min())
    r_core = max(1.5, rng.uniform(0.06, 0.11) * dims.min())
    amplitude = 0.3 * r_core
    warped = [c + amplitude * smooth_field(rng, dims.astype(int), max_cycles=2.5) for c in coords]
    blobs = []
    for _ in range(int(rng.integers(2, 5))):
        offset = rng.normal(0.0, 0.45 * r_core, size=3)
        radii = r_core * rng.uniform(0.6, 1.0, size=3)
        blobs.append(ellipsoid_rho(warped, center + offset, radii, _rotation_3d(rng.uniform(0, np.pi, size=3))))
    rho_core = np.min(blobs, axis=0)
    core = rho_core < 1
    necrosis = rho_core < rng.uniform(0.4, 0.6)

    reach = r_core * rng.uniform(1.8, 3.0, size=3)
    amplitude = 0.5 * reach.mean()  # strong, higher-frequency warp: finger-like spread
    warped = [c + amplitude * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=4.0) for c in coords]
    rho_oedema = ellipsoid_rho(warped, center, reach, _rotation_3d(rng.uniform(0, np.pi, size=3)))
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
    t = {name: _jitter(rng, value) for name, value in BRATS_TISSUES.items()}
    coords = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in dims], indexing="ij")
    anatomy = _brain_anatomy(rng, coords, dims, size=0.9)
    tissue = np.zeros(tuple(dims))
    tissue[anatomy.white] = t["white"]
    tissue[anatomy.grey] = t["grey"]
    tissue[anatomy.csf] = t["csf"]
    tissue *= 1.0 + 0.06 * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=5.0)  # tissue texture

    for _ in range(int(rng.integers(1, 5))):  # small periventricular / deep white-matter hyperintensities
        spot = _point_in(rng, anatomy.white, anatomy.center, 0.3 * dims.min())
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


# --------------------------------------------------------------------------------------------
# ISLES 2022: DWI (b = 1000) head with several small ischaemic lesions, anisotropic spacing
# --------------------------------------------------------------------------------------------

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
    centers = [_point_in(rng, parenchyma, territory, spread) for _ in range(int(rng.integers(2, 8)))]
    if rng.random() < 0.5:  # embolic showers often hit more than one territory
        elsewhere = anatomy.center + anatomy.radii * rng.uniform(-0.6, 0.6, size=3)
        centers += [_point_in(rng, parenchyma, elsewhere, spread) for _ in range(int(rng.integers(1, 3)))]
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
        rho = ellipsoid_rho(warped, center, radii, _rotation_3d(rng.uniform(0, np.pi, size=3)))
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
    t = {name: _jitter(rng, value) for name, value in ISLES_TISSUES.items()}
    coords = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in dims], indexing="ij")
    anatomy = _brain_anatomy(rng, coords, dims, size=0.85)  # leave room for the scalp
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


# --------------------------------------------------------------------------------------------
# Pancreas-CT: contrast-enhanced abdominal CT in Hounsfield units with the pancreas labelled, 1 mm
# --------------------------------------------------------------------------------------------

PANCREAS_DEFAULT_SHAPE = (64, 64, 48)
# Hounsfield units of a portal-venous phase CT. The pancreas (~100) sits among organs and vessels of
# similar density (liver, spleen, bowel wall, duodenum, splenic vein), so HU alone cannot find it.
PANCREAS_HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 45.0,
    "liver": 105.0,
    "spleen": 115.0,
    "kidney": 170.0,
    "kidney_inner": 35.0,
    "aorta": 180.0,
    "ivc": 130.0,
    "portal_vein": 160.0,
    "bowel_wall": 95.0,
    "fluid": 15.0,
    "oral_contrast": 260.0,
    "duodenum": 80.0,
    "pancreas": 100.0,
    "cancellous": 720.0,
    "cortical_bone": 1100.0,
    "canal": 25.0,
}


def _pancreas_curve(rng: np.random.Generator, dims: np.ndarray):
    """Centre line of the pancreas from head (u = 0, right of the midline) to tail (u = 1, spleen hilum).

    Returns a function u -> (x, y, z); a quadratic Bezier curve that bows anteriorly over the spine,
    with the tail higher than the head as in real anatomy.
    """
    jitter = rng.uniform(-0.03, 0.03, size=(3, 3))
    head = dims * (np.array([0.38, 0.50, 0.46]) + jitter[0])
    apex = dims * (np.array([0.54, 0.40, 0.50]) + jitter[1])
    tail = dims * (np.array([0.74, 0.60, 0.58]) + jitter[2])

    def point(u: float) -> np.ndarray:
        return (1 - u) ** 2 * head + 2 * u * (1 - u) * apex + u**2 * tail

    return point


def _pancreas_organ(rng: np.random.Generator, coords: Sequence[np.ndarray], dims: np.ndarray):
    """Lobulated pancreas: a chain of overlapping ellipsoids along the curve, thick head, thin tail.

    Returns (normalised radius rho, < 1 inside; curve function; list of (centre, in-plane radius)).
    """
    curve = _pancreas_curve(rng, dims)
    s = float(min(dims[0], dims[1]))
    warp = 0.025 * s  # small, high-frequency warp: lobulated outline
    warped = [c + warp * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=4.0) for c in coords]
    rhos, parts = [], []
    steps = np.linspace(0.0, 1.0, 9)
    for u in steps:
        center = curve(u) + rng.normal(0.0, 0.01 * s, size=3)
        tangent = curve(min(u + 0.05, 1.0)) - curve(max(u - 0.05, 0.0))
        width = (0.085 - 0.045 * u) * s * rng.uniform(0.85, 1.15)  # head about twice as thick as the tail
        height = max((0.14 - 0.07 * u) * dims[2] * rng.uniform(0.85, 1.15), 1.2)
        along = max(0.9 * np.linalg.norm(curve(1.0) - curve(0.0)) / (len(steps) - 1), 1.5)
        radii = (height, max(width, 1.2), along)  # rows of _frame_towards: ~z, in-plane normal, tangent
        rhos.append(ellipsoid_rho(warped, center, radii, _frame_towards(tangent)))
        parts.append((center, max(width, 1.2)))
    return np.min(rhos, axis=0), curve, parts


def pancreas_subject(
    rng: np.random.Generator, number: int, shape: tuple[int, ...] | None, with_label: bool = True
) -> list[PhantomVolume]:
    """One Pancreas-CT-like case in Hounsfield units with the pancreas labelled (default 64 x 64 x 48, 1 mm).

    An abdomen cross-section scaled into the grid: air, subcutaneous and visceral fat, muscle wall,
    spine, aorta/IVC, liver, spleen, kidneys, stomach, bowel loops, duodenum wrapping the pancreas head
    and the splenic vein along its back. Blur and Gaussian noise (8-15 HU) as in CT; values rounded to
    integers. Images stay in HU: the bundle windows them ([-125, 275]).
    """
    dims = np.array(shape or PANCREAS_DEFAULT_SHAPE)
    hu = {name: value + rng.normal(0.0, 8.0) for name, value in PANCREAS_HU.items()}
    hu["air"], hu["fat"] = -1000.0, -100.0 + rng.normal(0.0, 10.0)
    coords = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in dims], indexing="ij")
    x, y, z = coords
    s = float(min(dims[0], dims[1]))
    image = np.full(tuple(dims), hu["air"])

    def paint(mask: np.ndarray, value: float) -> None:
        image[mask] = value

    def blob(center_frac, radii_frac, jitter: float = 0.02) -> np.ndarray:
        center = dims * (np.asarray(center_frac) + rng.uniform(-jitter, jitter, size=3))
        radii = np.maximum(dims * np.asarray(radii_frac) * rng.uniform(0.9, 1.1, size=3), 0.8)
        return ellipsoid_rho(coords, center, radii) < 1

    body_radii = dims[:2] * np.array([0.46, 0.38]) * rng.uniform(0.92, 1.0, size=2)
    body_center = dims[:2] * np.array([0.5, 0.53])
    body = ellipsoid_rho(coords[:2], body_center, body_radii)
    fat_width = rng.uniform(0.06, 0.12)
    paint(body < 1, hu["fat"])
    paint(body < 1 - fat_width, hu["muscle"])
    paint(body < 1 - fat_width - 0.06, hu["fat"] + rng.normal(0.0, 5.0))  # visceral fat

    spine_center = dims[:2] * np.array([0.5, 0.79])
    spine_r = 0.075 * s
    for side in (-1.0, 1.0):  # paraspinal muscles
        paint(
            ellipsoid_rho(
                coords[:2],
                spine_center + np.array([side * 1.6 * spine_r, 0.9 * spine_r]),
                (1.1 * spine_r, 1.2 * spine_r),
            )
            < 1,
            hu["muscle"],
        )
    vertebra = ellipsoid_rho(coords[:2], spine_center, (spine_r, 0.85 * spine_r))
    paint(vertebra < 1, hu["cortical_bone"])
    paint(vertebra < 0.75, hu["cancellous"])
    canal = ellipsoid_rho(coords[:2], spine_center + np.array([0.0, 1.35 * spine_r]), (0.45 * spine_r, 0.4 * spine_r))
    paint(
        ellipsoid_rho(coords[:2], spine_center + np.array([0.0, 1.4 * spine_r]), (0.8 * spine_r, 0.7 * spine_r)) < 1,
        hu["cortical_bone"],
    )
    paint(canal < 1, hu["canal"])

    liver = blob((0.25, 0.43, 0.74), (0.19, 0.25, 0.38)) & (body < 1 - fat_width - 0.06)
    paint(liver, hu["liver"])
    paint(blob((0.30, 0.36, 0.55), (0.05, 0.05, 0.08)) & liver, hu["fluid"])  # gallbladder
    paint(blob((0.78, 0.64, 0.68), (0.09, 0.12, 0.24)), hu["spleen"])
    for cx in (0.31, 0.69):
        kidney_center, kidney_radii = (cx, 0.73, 0.38), (0.07, 0.09, 0.2)
        paint(blob(kidney_center, kidney_radii, jitter=0.01), hu["kidney"])
        paint(blob(kidney_center, np.array(kidney_radii) * 0.45, jitter=0.005), hu["kidney_inner"])
    stomach = blob((0.64, 0.33, 0.74), (0.14, 0.11, 0.2))
    paint(stomach, hu["bowel_wall"] - 30.0)
    lumen = stomach & blob((0.64, 0.33, 0.74), (0.11, 0.08, 0.17), jitter=0.0)
    paint(lumen, hu["fluid"])
    paint(lumen & (y < dims[1] * 0.3), hu["air"])  # gas above the fluid level (patient supine)
    for _ in range(int(rng.integers(6, 11))):  # bowel loops below and in front of the pancreas
        center = (rng.uniform(0.25, 0.75), rng.uniform(0.2, 0.55), rng.uniform(0.05, 0.5))
        loop = blob(center, (0.06, 0.06, 0.1), jitter=0.0) & (body < 1 - fat_width - 0.06)
        paint(loop, hu["bowel_wall"])
        content = rng.choice(["fluid", "air", "oral_contrast"], p=[0.5, 0.25, 0.25])
        paint(loop & blob(center, (0.03, 0.03, 0.06), jitter=0.0), hu[str(content)])

    rho_organ, curve, parts = _pancreas_organ(rng, coords, dims)
    organ = rho_organ < 1
    # Peripancreatic fat: a thin, patchy fat plane around the gland; the duodenum and vessels painted
    # next touch the gland directly, as in real scans.
    patches = smooth_field(rng, dims.astype(int), num_waves=5, max_cycles=3.0)
    paint((rho_organ < 1.3) & ~organ & (patches > -0.2) & (body < 1 - fat_width - 0.06), hu["fat"])
    head_center, head_width = parts[0]
    # Duodenum: a C-shaped tube hugging the head on its right side, same height as the head.
    ring = np.hypot(x - head_center[0], y - head_center[1])
    duodenum = (np.abs(ring - 1.6 * head_width) < max(0.035 * s, 0.8)) & (x < head_center[0] + 0.3 * head_width)
    duodenum &= np.abs(z - head_center[2]) < max(0.18 * dims[2], 1.5)
    paint(duodenum, hu["duodenum"])
    # Splenic vein along the back of body and tail; superior mesenteric vessels below the neck.
    vein_r = max(0.022 * s, 0.7)
    for u in np.linspace(0.35, 1.0, 12):
        center = curve(u) + np.array([0.0, parts[int(round(u * 8))][1] + vein_r, 0.0])
        paint(ellipsoid_rho(coords, center, (vein_r, vein_r, vein_r)) < 1, hu["portal_vein"])
    neck = curve(0.3)
    for dx, key in ((-0.02, "portal_vein"), (0.03, "aorta")):
        vessel = ellipsoid_rho(coords[:2], (neck[0] + dx * s, neck[1] + 0.12 * s), (vein_r, vein_r)) < 1
        paint(vessel & (z < neck[2]), hu[key])
    paint(ellipsoid_rho(coords[:2], dims[:2] * (0.54, 0.66), (0.045 * s, 0.045 * s)) < 1, hu["aorta"])
    paint(ellipsoid_rho(coords[:2], dims[:2] * (0.41, 0.65), (0.05 * s, 0.035 * s)) < 1, hu["ivc"])

    texture = 1.0 + 0.06 * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=6.0)  # lobular texture
    image[organ] = hu["pancreas"] * texture[organ]
    image = blur(image, axes=(0, 1, 2)) + rng.normal(0.0, rng.uniform(8.0, 15.0), size=image.shape)
    image = np.round(np.clip(image, -1024.0, 3071.0))
    item = volume_item("Pancreas", f"phantom{number:03d}", with_label)
    return [PhantomVolume(item=item, image=image, label=organ.astype(np.uint8), spacing=PANCREAS_SPACING)]


# --------------------------------------------------------------------------------------------
# Registry and dataset writer
# --------------------------------------------------------------------------------------------

FLAVOURS: dict[str, Flavour] = {
    "acdc": Flavour(
        make_subject=acdc_subject,
        default_counts=(8, 2, 2),
        shape_lengths=(2, 3),
        min_shape=(32, 32, 1),  # smaller in-plane sizes can lose the ES cavity
        metadata={
            "name": "ACDC-phantom",
            "description": "Synthetic cardiac short-axis cine-MRI-like stacks (ED frame01, ES frame02 per "
            "patient) standing in for ACDC: LV blood pool ringed by myocardium, RV crescent, thorax "
            "background, bias field, Rician noise. For demos and tests only.",
            "labels": dict(ACDC_LABELS),
            "modality": {"0": "MRI"},
            "dims": 2,
            "preprocessing": "phantom-acdc",
        },
    ),
    "la": Flavour(
        make_subject=la_subject,
        default_counts=(8, 0, 2),
        shape_lengths=(3,),
        min_shape=(16, 16, 16),
        metadata={
            "name": "LA-phantom",
            "description": "Synthetic LGE-MRI-like volumes standing in for LA 2018 (UA-MT h5): one irregular "
            "bright atrium with a dark wall among other structures, bias field, Rician noise, whole-volume "
            "z-score, spacing 0.625 mm. For demos and tests only.",
            "labels": dict(LA_LABELS),
            "modality": {"0": "MRI"},
            "dims": 3,
            "preprocessing": "phantom-la",
        },
    ),
    "brats": Flavour(
        make_subject=brats_subject,
        default_counts=(8, 2, 2),
        shape_lengths=(3,),
        min_shape=(16, 16, 16),
        metadata={
            "name": "BraTS2019-phantom",
            "description": "Synthetic skull-stripped FLAIR-like brain volumes standing in for BraTS 2019 (whole "
            "tumour from FLAIR): folded grey/white matter, dark CSF and ventricles, one glioma with an irregular "
            "core and finger-like hyperintense oedema (both labelled 1), unlabelled white-matter hyperintensities, "
            "bias field, Rician noise, zero background, raw intensities, spacing 1 mm. For demos and tests only.",
            "labels": dict(BRATS_LABELS),
            "modality": {"0": "MRI"},
            "dims": 3,
            "preprocessing": "phantom-brats",
        },
    ),
    "pancreas": Flavour(
        make_subject=pancreas_subject,
        default_counts=(8, 0, 2),
        shape_lengths=(3,),
        min_shape=(16, 16, 16),
        metadata={
            "name": "Pancreas-CT-phantom",
            "description": "Synthetic contrast-enhanced abdominal CT-like volumes in Hounsfield units standing in "
            "for NIH Pancreas-CT: fat, muscle, spine, aorta/IVC, liver, spleen, kidneys, stomach, bowel loops, "
            "duodenum and splenic vein around one small, elongated, lobulated pancreas (label 1) of similar "
            "density, CT noise, spacing 1 mm, not windowed. For demos and tests only.",
            "labels": dict(PANCREAS_LABELS),
            "modality": {"0": "CT"},
            "dims": 3,
            "preprocessing": "phantom-pancreas",
        },
    ),
    "isles": Flavour(
        make_subject=isles_subject,
        default_counts=(8, 2, 2),
        shape_lengths=(3,),
        min_shape=(16, 16, 16),
        metadata={
            "name": "ISLES2022-phantom",
            "description": "Synthetic DWI-like (b = 1000) head volumes standing in for ISLES 2022: brain with dark "
            "CSF, faint scalp, several small scattered bright ischaemic lesions (label 1), an unlabelled "
            "susceptibility artefact, bias field, Rician noise, variable anisotropic spacing. For demos and "
            "tests only.",
            "labels": dict(ISLES_LABELS),
            "modality": {"0": "MRI"},
            "dims": 3,
            "preprocessing": "phantom-isles",
        },
    ),
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
    meta = spec.metadata
    content: dict[str, Any] = {
        "name": meta["name"],
        "description": meta["description"],
        "source_split": "none: synthetic phantom (common/data/phantoms.py), subjects in generation order",
        "labels": meta["labels"],
        "modality": meta["modality"],
        "dims": meta["dims"],
        "metric_spacing": None,
        "preprocessing": meta["preprocessing"],
        "phantom": params,
    }
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
        help="acdc: X Y [Z]; la, brats, pancreas, isles: X Y Z (each >= 16)",
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


if __name__ == "__main__":
    raise SystemExit(main())
