"""Save a method's inspection maps (e.g. ALHVR region maps, CoraNet uncertainty masks) during training."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import ignite.distributed as idist
import nibabel as nib
import numpy as np
import torch
from ignite.engine import Engine, Events

from ..methods.inspect_maps import write_sample_maps

__all__ = ["InspectionSaver"]

logger = logging.getLogger(__name__)


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
