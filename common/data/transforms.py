"""Dictionary transforms of the data contract, used inside the bundles' MONAI transform chains."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .contract import DatasetError

__all__ = ["CheckDatad", "ForegroundZScored", "LabelBoxCropd", "label_box"]

AFFINE_TOLERANCE = 1e-3  # mm; header round-off between an image and its label is not a mismatch


def _source(data: Mapping, key: Hashable) -> str:
    meta = getattr(data.get(key), "meta", None) or data.get(f"{key}_meta_dict", {})
    return str(meta.get("filename_or_obj", key)) if isinstance(meta, Mapping) else str(key)


class CheckDatad(MapTransform):
    """Refuse a loaded case that would train on garbage: non-finite intensities, an image with the wrong number
    of channels, a label whose spatial shape or affine differs from the image's, or label values that are not
    integers in ``0..num_classes-1``.

    Place it right after ``LoadImaged``/``EnsureChannelFirstd``; inside a ``CacheDataset`` every case is then
    checked while the cache fills, before the first iteration. Errors name the file.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        num_classes: int = 2,
        channels: int | None = None,
        image_key: str = "image",
        label_key: str = "label",
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.num_classes = num_classes
        self.channels = channels
        self.image_key = image_key
        self.label_key = label_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if self.image_key in d:
            image = torch.as_tensor(d[self.image_key])
            if not bool(torch.isfinite(image).all()):
                raise DatasetError(f"{_source(d, self.image_key)}: image contains NaN or infinite intensities.")
            if self.channels is not None and image.shape[0] != self.channels:
                raise DatasetError(
                    f"{_source(d, self.image_key)}: image has {image.shape[0]} channel(s), the network takes "
                    f"{self.channels} (channel-first shape {tuple(image.shape)})."
                )
        if self.label_key in d:
            self._check_label(d)
        return d

    def _check_label(self, d: dict) -> None:
        label = torch.as_tensor(d[self.label_key])
        source = _source(d, self.label_key)
        if self.image_key in d:
            image_shape = tuple(d[self.image_key].shape[1:])
            if tuple(label.shape[1:]) != image_shape:
                raise DatasetError(
                    f"{source}: label shape {tuple(label.shape[1:])} differs from the image shape {image_shape} "
                    f"of {_source(d, self.image_key)}."
                )
            self._check_affine(d, source)
        values = np.unique(label.detach().cpu().numpy())
        bad = [
            int(v) if float(v).is_integer() else v
            for v in values.tolist()
            if v != int(v) or not 0 <= v < self.num_classes
        ]
        if bad:
            raise DatasetError(
                f"{source}: label values {bad[:10]} are outside the classes 0..{self.num_classes - 1} "
                f"(num_classes={self.num_classes})."
            )

    def _check_affine(self, d: dict, source: str) -> None:
        image_affine = getattr(d[self.image_key], "affine", None)
        label_affine = getattr(d[self.label_key], "affine", None)
        if image_affine is None or label_affine is None:
            return
        if not torch.allclose(
            torch.as_tensor(image_affine).double(), torch.as_tensor(label_affine).double(), atol=AFFINE_TOLERANCE
        ):
            raise DatasetError(
                f"{source}: label affine differs from the affine of {_source(d, self.image_key)} "
                "(image and label must share one voxel grid)."
            )


class ForegroundZScored(MapTransform):
    """Z-score with the mean and standard deviation (ddof 0) of the voxels above ``threshold``, applied to ALL voxels
    (SSL4MIS BraTS recipe, step 3): the background becomes one negative constant.

    MONAI's ``NormalizeIntensityd(nonzero=True)`` differs: it leaves the background at 0. Statistics are taken over
    the whole array (all channels together, as the recipe's single-channel FLAIR). A volume with no voxel above the
    threshold, or a constant foreground, has no z-score; it is refused with the file named instead of becoming NaN.
    """

    def __init__(self, keys: KeysCollection = "image", threshold: float = 0.0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            foreground = image[image > self.threshold]
            if foreground.numel() == 0:
                raise DatasetError(f"{_source(d, key)}: no voxel above {self.threshold}, nothing to z-score against.")
            std = foreground.std(unbiased=False)
            if not bool(std > 0):
                raise DatasetError(f"{_source(d, key)}: the voxels above {self.threshold} are constant (std 0).")
            d[key] = (image - foreground.mean()) / std
        return d


def label_box(label: np.ndarray, margin: int = 25, min_size: int = 96) -> list[tuple[int, int]]:
    """Per spatial axis ``(start, stop)`` of CoraNet's ground-truth ROI (koncle/CoraNet preprocessing): the box of
    ``label > 0`` with its stop one voxel past the tight box (as the official ``get_bbox_3d``), widened by ``margin``
    voxels per side within the volume, and an axis shorter than ``min_size`` grown symmetrically to ``min_size``,
    shifted to stay inside the volume (a volume axis shorter than ``min_size`` keeps its size)."""
    where = np.argwhere(np.asarray(label) > 0)
    if where.size == 0:
        raise ValueError("the label is empty: a ground-truth box crop needs a foreground")
    box = []
    for axis, size in enumerate(np.asarray(label).shape):
        start = max(int(where[:, axis].min()) - margin, 0)
        stop = min(int(where[:, axis].max()) + 2 + margin, size)
        if stop - start < min_size:
            start = max(start - (min_size - (stop - start)) // 2, 0)
            stop = min(start + min_size, size)
            start = max(stop - min_size, 0)
        box.append((start, stop))
    return box


class LabelBoxCropd(MapTransform):
    """Crop ``keys`` to the ground-truth box + ``margin`` voxels (at least ``min_size`` per axis, zero-padded at the
    high end where the volume is shorter): the region CoraNet's official code trains and evaluates on.

    It reads the label, so at evaluation it scores on a ground-truth-centred crop: a reproduction of the paper's
    protocol, not a clean evaluation (``eval_crop_to_label_box`` of the CoraNet Pancreas bundle, off by default).
    Channel-first arrays ``(C, *S)``; metadata is not tracked (the evaluation scores on the cropped grid).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        source_key: str = "label",
        margin: int = 25,
        min_size: int = 96,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key, self.margin, self.min_size = source_key, int(margin), int(min_size)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        try:
            box = label_box(np.asarray(d[self.source_key])[0], self.margin, self.min_size)
        except ValueError as err:
            raise DatasetError(f"{_source(d, self.source_key)}: {err}") from err
        crop = (slice(None), *(slice(start, stop) for start, stop in box))
        pad = [(0, 0), *((0, max(self.min_size - (stop - start), 0)) for start, stop in box)]
        for key in self.key_iterator(d):
            value = d[key]
            cropped = value[crop]
            if any(after for _, after in pad):
                tensor = torch.as_tensor(cropped)
                widths = [w for _, after in reversed(pad[1:]) for w in (0, after)]
                cropped = torch.nn.functional.pad(tensor, widths)
            d[key] = cropped
        return d
