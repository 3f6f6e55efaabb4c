"""Write per-sample integer maps (region maps, uncertainty masks) of one training batch as NIfTI for inspection."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np


def write_sample_maps(
    array: np.ndarray, out_dir: str | Path, prefix: str, iteration: int, spacing: Sequence[float] | None = None
) -> list[Path]:
    """One ``<prefix>_iter<iteration>_<n>.nii.gz`` (uint8) per sample of an ``(N, *S)`` array; returns the paths."""
    ndim = array.ndim - 1
    if spacing is not None and len(spacing) != ndim:
        raise ValueError(f"spacing needs {ndim} values, got {list(spacing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4)
    if spacing is not None:
        affine[:ndim, :ndim] = np.diag([float(s) for s in spacing])
    paths = []
    for n, sample in enumerate(array):
        path = out / f"{prefix}_iter{int(iteration):06d}_{n}.nii.gz"
        nib.save(nib.Nifti1Image(sample.astype(np.uint8), affine), str(path))
        paths.append(path)
    return paths
