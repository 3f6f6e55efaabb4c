"""Save a method's inspection maps (e.g. ALHVR region maps, CoraNet uncertainty masks) during training.

:class:`InspectionSaver` is the ignite handler; :func:`write_sample_maps` writes any ``(N, *S)`` integer map as one
NIfTI per sample. :func:`save_region_maps` and :func:`save_uncertainty_masks` write what ALHVR (``keep_regions``)
and CoraNet (``keep_masks``) keep of their last training batch (``last_regions`` / ``last_uncertain``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import ignite.distributed as idist
import nibabel as nib
import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import Tensor

__all__ = ["InspectionSaver", "save_region_maps", "save_uncertainty_masks", "write_sample_maps"]

logger = logging.getLogger(__name__)


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


def _as_array(maps: Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(maps.detach().cpu().numpy() if isinstance(maps, Tensor) else maps)


def save_region_maps(
    regions: Tensor | np.ndarray,
    out_dir: str | os.PathLike,
    prefix: str,
    iteration: int,
    spacing: Sequence[float] | None = None,
) -> list[Path]:
    """Write each sample of an ALHVR region map ``[U, *S]`` (2D or 3D) as ``<prefix>_iter<iteration>_<u>.nii.gz``.

    ``uint8`` NIfTI, identity affine (or diagonal ``spacing``); ``out_dir`` is created. Returns the paths written.
    """
    array = _as_array(regions)
    if array.ndim not in (3, 4):
        raise ValueError(f"expected regions of shape (U, H, W) or (U, D, H, W), got {array.shape}")
    return write_sample_maps(array, out_dir, prefix, iteration, spacing)


def save_uncertainty_masks(
    mask: Tensor | np.ndarray,
    out_dir: str | os.PathLike,
    prefix: str,
    iteration: int,
    spacing: Sequence[float] | None = None,
) -> list[Path]:
    """Write each sample of a CoraNet mask ``(N, H, W)`` or ``(N, X, Y, Z)`` as ``<prefix>_iter<iteration>_<n>.nii.gz``.

    ``uint8`` NIfTI (1 = uncertain), identity affine or a diagonal one from ``spacing``; a ``(N, 1, *S)`` mask
    loses its channel; ``out_dir`` is created. Returns the paths written, in sample order.
    """
    array = _as_array(mask)
    if array.ndim in (4, 5) and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a mask of shape (N, H, W) or (N, X, Y, Z), got {array.shape}")
    return write_sample_maps(array, out_dir, prefix, iteration, spacing)


class InspectionSaver:
    """Every ``interval`` iterations, write ``engine.method.inspection_maps(images)`` of one fixed batch as NIfTI.

    The batch is the first one of ``data_loader`` (e.g. a few held-out cases through the unlabeled training
    preprocessing), drawn once, so maps of different iterations show the same images. Files in ``output_dir``:
    ``image_<n>.nii.gz`` (first channel, float32) once, then ``<map>_iter<iteration>_<n>.nii.gz`` (uint8) per map.
    The method decides what its maps are and guarantees that computing them leaves training unchanged. Under
    DDP every rank computes the maps (they run the wrapped networks, whose forward synchronises the ranks) and
    rank 0 alone writes them.

    Args:
        data_loader: source of the inspection batch (only ``image_key`` is used).
        output_dir: folder of the NIfTI files (created).
        interval: iterations between two saves.
        num_samples: at most this many samples of the batch are inspected.
        image_key: key of the images in the batch.
    """

    def __init__(
        self,
        data_loader: Iterable,
        output_dir: str | Path,
        interval: int,
        num_samples: int = 4,
        image_key: str = "image",
    ) -> None:
        if interval < 1 or num_samples < 1:
            raise ValueError(f"interval and num_samples must be >= 1, got {interval} and {num_samples}")
        self.data_loader = data_loader
        self.output_dir = Path(output_dir)
        self.interval = int(interval)
        self.num_samples = int(num_samples)
        self.image_key = image_key
        self._images: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        method = getattr(engine, "method", None)
        if not callable(getattr(method, "inspection_maps", None)):
            raise TypeError(
                f"{type(method).__name__} has no inspection_maps(images); InspectionSaver needs a method that "
                "defines its maps (e.g. ALHVR region maps, CoraNet uncertainty masks)."
            )
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def _fixed_images(self) -> torch.Tensor:
        if self._images is None:
            batch = next(iter(self.data_loader), None)
            if batch is None:
                raise ValueError("InspectionSaver: the inspection data loader is empty (no held-out cases?).")
            images = batch[self.image_key]
            images = images.as_tensor() if hasattr(images, "as_tensor") else torch.as_tensor(images)
            self._images = images[: self.num_samples]
            self._write_images(self._images)
        return self._images

    def _write_images(self, images: torch.Tensor) -> None:
        if idist.get_rank() != 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for n, image in enumerate(images[:, 0].float().numpy()):
            nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), str(self.output_dir / f"image_{n}.nii.gz"))

    def __call__(self, engine: Engine) -> None:
        images = self._fixed_images().to(engine.state.device)
        maps = engine.method.inspection_maps(images)
        if idist.get_rank() != 0:
            return
        for name, value in maps.items():
            write_sample_maps(value.cpu().numpy(), self.output_dir, name, engine.state.iteration)
        logger.info("inspection maps %s of iteration %d -> %s", sorted(maps), engine.state.iteration, self.output_dir)
