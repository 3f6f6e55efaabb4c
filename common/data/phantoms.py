"""Synthetic, learnable stand-ins for the papers' datasets, written as dataset folders (protocol.md §5).

Bundles' demo configs and the tests train on these instead of the (registration-only) real data:

    python -m common.data.phantoms /tmp/acdc_demo --flavour acdc --num-train 8

Each flavour is one function ``(rng, number, shape, with_label) -> list[PhantomVolume]`` registered in
``FLAVOURS`` with its metadata; a new dataset (BraTS, Pancreas, ISLES) is one more such entry.
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
    LA_LABELS,
    LA_SPACING,
    acdc_item,
    la_item,
    spacing_affine,
    write_dataset_json,
    write_nifti,
)

# Bump when the generated images change, so cached demo datasets are regenerated.
GENERATOR_VERSION = 1

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

    Counts are subjects: ACDC patients (two frame volumes each) or LA cases; ``None`` takes the
    flavour's default (acdc 8/2/2, la 8/0/2). ``num_unlabeled`` extra subjects are written as
    image-only ``unlabeled`` items. Same arguments give byte-identical files.
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
    parser.add_argument("--shape", type=int, nargs="+", default=None, help="acdc: X Y [Z]; la: X Y Z")
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
