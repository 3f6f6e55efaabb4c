"""What every phantom generator is made of: the volume and flavour types, geometry and image-formation helpers.

Geometry (rotations, ellipsoids), smooth random fields, partial-volume blur and MRI-like corruption exist once
here, as does the brain that the BraTS (FLAIR) and ISLES (DWI) phantoms share. NumPy only; every random draw
comes from the generator passed in, so a subject is a function of its seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .folder import dataset_metadata

# recorded in every phantom dataset.json as it always was (generated folders stay byte-identical)
PHANTOM_SOURCE_SPLIT = "none: synthetic phantom (common/data/phantoms.py), subjects in generation order"


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
    metadata: dict[str, Any]  # descriptive dataset.json keys (phantom_metadata)
    shape_lengths: tuple[int, ...] = (3,)  # accepted lengths of the ``shape`` argument
    min_shape: tuple[int, ...] = (16, 16, 16)  # smallest accepted size per axis


def phantom_metadata(
    name: str, description: str, labels: Mapping[str, str], modality: str, dims: int, preprocessing: str
) -> dict[str, Any]:
    """Return the descriptive dataset.json keys of a phantom flavour's folders."""
    return dataset_metadata(name, description, PHANTOM_SOURCE_SPLIT, labels, modality, dims, preprocessing)


# --------------------------------------------------------------------------------------------
# Geometry and MRI-like image formation helpers
# --------------------------------------------------------------------------------------------


def rotation_2d(angle: float) -> np.ndarray:
    """Return the 2x2 rotation matrix of ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def rotation_3d(angles: Sequence[float]) -> np.ndarray:
    """Return the rotation matrix of Euler angles (about x, then y, then z)."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def frame_towards(direction: np.ndarray) -> np.ndarray:
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


def jitter(rng: np.random.Generator, value: float, rel: float = 0.1) -> float:
    """Return ``value`` scaled by a random factor in [1 - rel, 1 + rel]."""
    return float(value * rng.uniform(1.0 - rel, 1.0 + rel))


def voxel_grid(dims: Sequence[int]) -> list[np.ndarray]:
    """Voxel index coordinates (float64), one array per axis, of a grid of size ``dims``."""
    return np.meshgrid(*[np.arange(n, dtype=np.float64) for n in dims], indexing="ij")


def jittered(rng: np.random.Generator, values: Mapping[str, float], rel: float = 0.1) -> dict[str, float]:
    """Each of ``values`` scaled by its own random factor in [1 - rel, 1 + rel] (drawn in order)."""
    return {name: jitter(rng, value, rel) for name, value in values.items()}


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


def brain_anatomy(
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


def point_in(rng: np.random.Generator, mask: np.ndarray, around: np.ndarray, spread: float) -> np.ndarray:
    """Return a voxel of ``mask`` drawn with Gaussian weight ``exp(-d^2 / 2 spread^2)`` around ``around``."""
    candidates = np.argwhere(mask)
    weights = np.exp(-np.sum((candidates - around) ** 2, axis=1) / (2.0 * spread**2)) + 1e-12
    return candidates[rng.choice(len(candidates), p=weights / weights.sum())].astype(np.float64)
