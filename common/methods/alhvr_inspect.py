"""ALHVR inspection and evaluation helpers, free of ignite (alhvr.md §2, §8, §12).

Region maps
-----------
:func:`alhvr_region_map` folds the four region masks of one step into one ``uint8`` label map (codes
:data:`REGION_CODES`: 0 = Ω1 reliable/stable, no loss; 1 = Ω2_a, A learns from B; 2 = Ω2_b, B learns from A;
3 = Ω3, DTCT). :class:`~.alhvr.ALHVR` keeps the last batch's map in ``last_regions`` when built with
``keep_regions=True``; :func:`save_region_maps` writes such a map to NIfTI. A bundle handler calls it after an
iteration, e.g. (what a ``common.engines.region_maps.RegionMapSaver(output_dir, interval)`` would do)::

    @trainer.on(Events.ITERATION_COMPLETED(every=interval))
    def _save(engine):
        regions = engine.method.last_regions          # None until the first step with unlabeled data
        if regions is not None:
            save_region_maps(regions, output_dir + "/regions", "regions", engine.state.iteration)

Evaluation (official ``val_2d.py``, ``test_acdc.py``, ``test_bra_util.py``, ``val_bra.py``)
-----------------------------------------------------------------------------------------
:func:`alhvr_acdc_predict_volume`, :func:`alhvr_acdc_class_metrics`, :func:`alhvr_sliding_window_3d` and
:func:`alhvr_val_metric` reproduce the reference evaluation loops, for evaluation scripts and parity checks; the
bundles' validators use MONAI's inferers (see their README for the differences).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from ..inferers import sliding_window_predict
from ..metrics.paper import alhvr_case_metrics, dice_coefficient, hd95_medpy
from .inspect_maps import write_sample_maps

__all__ = [
    "REGION_CODES",
    "alhvr_acdc_class_metrics",
    "alhvr_acdc_predict_volume",
    "alhvr_region_map",
    "alhvr_sliding_window_3d",
    "alhvr_val_metric",
    "save_region_maps",
]

REGION_CODES = {"omega1": 0, "omega2_a": 1, "omega2_b": 2, "omega3": 3}


def alhvr_region_map(omega1: Tensor, omega2_a: Tensor, omega2_b: Tensor, omega3: Tensor) -> Tensor:
    """One ``uint8`` map ``[U, *S]`` of the region partition (codes :data:`REGION_CODES`), detached, on the CPU.

    Raises ``ValueError`` if the masks do not partition the pixels (each pixel in exactly one region).
    """
    masks = [m.detach().to("cpu", torch.bool) for m in (omega1, omega2_a, omega2_b, omega3)]
    counts = sum(m.to(torch.uint8) for m in masks)
    if not bool((counts == 1).all()):
        raise ValueError("the region masks must partition the pixels (each pixel in exactly one region)")
    out = torch.zeros(masks[0].shape, dtype=torch.uint8)
    for mask, code in zip(masks, REGION_CODES.values(), strict=True):
        out[mask] = code
    return out


def save_region_maps(
    regions: Tensor, out_dir: str | os.PathLike, prefix: str, iteration: int, spacing: Sequence[float] | None = None
) -> list[Path]:
    """Write each sample of a region map ``[U, *S]`` (2D or 3D) as ``<prefix>_iter<iteration>_<u>.nii.gz``.

    ``uint8`` NIfTI, identity affine (or diagonal ``spacing``); ``out_dir`` is created. Returns the paths written.
    """
    array = np.asarray(regions.detach().cpu().numpy() if isinstance(regions, Tensor) else regions)
    if array.ndim not in (3, 4):
        raise ValueError(f"expected regions of shape (U, H, W) or (U, D, H, W), got {array.shape}")
    return write_sample_maps(array, out_dir, prefix, iteration, spacing)


def _clean_logits(net: nn.Module, x: Tensor) -> Tensor:
    """Clean logits of an ALHVR network (``forward`` -> one tensor) or of a tuple-returning official-style net."""
    out = net(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def alhvr_acdc_predict_volume(net: nn.Module, image: np.ndarray, patch: Sequence[int] = (256, 256)) -> np.ndarray:
    """Slice-wise ACDC prediction (§8.1): per slice ``scipy.ndimage.zoom(order=0)`` to ``patch``, clean logits in
    eval mode, softmax + argmax, zoom back to the slice's H x W with ``order=0``. ``image`` is ``[S, H, W]``.

    The network's train/eval mode is restored afterwards.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"expected an (S, H, W) volume, got shape {image.shape}")
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    prediction = np.zeros(image.shape, dtype=np.int64)
    try:
        with torch.no_grad():
            for ind in range(image.shape[0]):
                x, y = image[ind].shape
                slice_ = ndimage.zoom(image[ind], (patch[0] / x, patch[1] / y), order=0)
                batch = torch.from_numpy(np.ascontiguousarray(slice_)).float()[None, None].to(device)
                out = torch.argmax(torch.softmax(_clean_logits(net, batch), dim=1), dim=1)[0]
                prediction[ind] = ndimage.zoom(out.cpu().numpy(), (x / patch[0], y / patch[1]), order=0)
    finally:
        net.train(was_training)
    return prediction


def alhvr_acdc_class_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int = 4) -> np.ndarray:
    """Per-class ``(dice, jaccard, hd95, asd)`` of one ACDC volume (§8.1), shape ``[K-1, 4]`` float64.

    A class the prediction does not contain scores ``(0, 0, 0, 0)``; otherwise medpy semantics in unit spacing
    (:func:`~..metrics.paper.alhvr_case_metrics`, which raises when the ground truth lacks the class, like medpy).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    rows = np.zeros((num_classes - 1, 4), dtype=np.float64)
    for c in range(1, num_classes):
        p = pred == c
        if p.any():
            rows[c - 1] = alhvr_case_metrics(p, gt == c)
    return rows


def alhvr_sliding_window_3d(
    net: nn.Module,
    image: np.ndarray,
    patch: Sequence[int] = (96, 96, 96),
    stride_xy: int = 64,
    stride_z: int = 64,
    num_classes: int = 2,
) -> np.ndarray:
    """BraTS sliding-window label map ``[D, H, W]`` (§8.2): zero-pad to the patch, windows at
    ``min(stride·i, s - patch)``, mean softmax of the clean logits, argmax, padding cropped (eval mode, restored)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        label, _ = sliding_window_predict(
            lambda x: _clean_logits(net, x.to(device)), image, patch, stride_xy, stride_z, num_classes
        )
    finally:
        net.train(was_training)
    return label


def alhvr_val_metric(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """BraTS validation ``(dice, hd95)`` (§8.2, ``val_bra.py``): ``(0, 0)`` when the prediction or the ground truth is
    empty, else medpy ``dc`` and ``hd95`` in unit spacing. Note the argument order ``(gt, pred)``."""
    g, p = np.asarray(gt).astype(bool), np.asarray(pred).astype(bool)
    if not p.any() or not g.any():
        return 0.0, 0.0
    return dice_coefficient(p, g), hd95_medpy(p, g)
