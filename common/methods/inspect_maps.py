"""Inspection support: per-sample integer maps (region maps, uncertainty masks) as NIfTI, RNG-neutral passes."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import torch


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


@contextmanager
def preserved_rng_states() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global generators on exit (CPU; CUDA devices too when present).

    An inspection pass that draws random perturbations inside this block leaves the training run's random
    stream exactly as it was, so saving maps never changes the trained weights.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
