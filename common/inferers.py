"""Reference-style sliding-window inference and its MONAI equivalent.

All 3D test scripts of the reference lines (UA-MT ``test_util.py`` and descendants, CoraNet, DyCON, ALHVR, STLU)
use the same scheme, implemented by :func:`sliding_window_predict`:

1. zero-pad every axis shorter than the patch to the patch size, ``deficit // 2`` before and the rest after;
2. per axis ``n = ceil((size - patch) / stride) + 1`` windows starting at ``min(i * stride, size - patch)``
   (:func:`window_starts`; only the last window can be clamped);
3. average the SOFTMAX probabilities of all windows covering a voxel with equal weights;
4. argmax over classes (ties → the lower class), then crop the padding away.

MONAI's ``SlidingWindowInferer(roi_size=patch, overlap=sliding_window_overlap(patch, stride), mode="constant",
padding_mode="constant", cval=0)`` visits the same windows with the same padding, provided the predictor returns
softmax probabilities. Its scan interval is ``int(patch * (1 - overlap))``, so the naive ``1 - stride / patch``
can truncate one voxel below the stride (96, 16 → 15); :func:`sliding_window_overlap` adds half a voxel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.inferers import Inferer
from scipy import ndimage
from torch import nn

__all__ = [
    "window_starts",
    "sliding_window_starts",
    "sliding_window_overlap",
    "stride_to_overlap",
    "sliding_window_predict",
    "ProbabilityInferer",
    "alhvr_acdc_predict_volume",
    "alhvr_sliding_window_3d",
]


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Reference window start positions along one axis (the test scripts' ``ceil((size - patch) / stride) + 1``).

    ``size`` is the axis length; an axis shorter than the patch is padded to the patch first, so it has the single
    start 0 (in padded coordinates).
    """
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be positive, got patch={patch}, stride={stride}.")
    size = max(int(size), int(patch))
    count = math.ceil((size - patch) / stride) + 1
    return [min(i * stride, size - patch) for i in range(count)]


def sliding_window_overlap(patch_size: int | Sequence[int], stride: int | Sequence[int]) -> tuple[float, ...]:
    """Per-axis overlap making MONAI's scan interval equal the reference stride: ``o = 1 - (stride + 0.5) / patch``.

    MONAI computes the interval as ``int(patch * (1 - o))``; the half voxel keeps float rounding from truncating it
    to ``stride - 1`` (e.g. LA patch (112, 112, 80), stride (18, 18, 4) → (0.8348, 0.8348, 0.9438)).
    ``stride == patch`` gives 0.0 (non-overlapping tiles). A stride larger than the patch leaves gaps, which MONAI
    cannot reproduce, so it raises. A scalar argument is broadcast to the other's length.
    """
    patches = (patch_size,) if isinstance(patch_size, int) else tuple(patch_size)
    strides = (stride,) if isinstance(stride, int) else tuple(stride)
    ndim = max(len(patches), len(strides))
    if len(patches) == 1:
        patches = patches * ndim
    if len(strides) == 1:
        strides = strides * ndim
    if len(patches) != len(strides):
        raise ValueError(f"patch_size {patches} and stride {strides} have different lengths.")
    overlaps = []
    for p, s in zip(patches, strides, strict=True):
        if p < 1 or s < 1:
            raise ValueError(f"patch and stride must be positive, got patch={p}, stride={s}.")
        if s > p:
            raise ValueError(f"stride {s} > patch {p} leaves gaps; MONAI's sliding window cannot reproduce it.")
        overlaps.append(0.0 if s == p else 1.0 - (s + 0.5) / p)
    return tuple(overlaps)


def _pad_to_patch(image: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Symmetric zero padding up to the patch size, ``deficit // 2`` before (the reference's ``wl_pad``)."""
    pads = []
    for size, p in zip(image.shape, patch, strict=True):
        deficit = max(p - size, 0)
        pads.append((deficit // 2, deficit - deficit // 2))
    if any(before or after for before, after in pads):
        image = np.pad(image, pads, mode="constant", constant_values=0)
    return image, pads


def _window_probabilities(predict_fn: Callable, patch: np.ndarray, num_classes: int) -> np.ndarray:
    """Softmax of ``predict_fn``'s logits for one window, as float32 ``(C, *patch)``."""
    batch = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))[None, None]
    logits = predict_fn(batch)
    if tuple(logits.shape) != (1, num_classes, *patch.shape):
        raise ValueError(f"predict_fn returned {tuple(logits.shape)}, expected {(1, num_classes, *patch.shape)}.")
    return torch.softmax(logits.detach().float(), dim=1)[0].cpu().numpy()


def sliding_window_predict(
    predict_fn: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    patch_size: Sequence[int] = (96, 96, 96),
    stride_xy: int = 16,
    stride_z: int = 4,
    num_classes: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference sliding-window prediction of a 3D volume (the official ``test_util.py`` scheme, module docstring).

    ``predict_fn(tensor float32 (1, 1, *patch)) -> logits (1, C, *patch)`` (a CPU tensor is passed; move it to the
    model's device inside ``predict_fn`` if needed). Strides are ``(stride_xy, stride_xy, stride_z)``.
    Returns ``(label_map int64 (X, Y, Z), score_map float32 (C, X, Y, Z))`` on the input grid; ``score_map`` is the
    mean softmax probability over the covering windows and ``label_map`` its argmax (ties → lower class, which for
    C = 2 equals DyCON's strict ``score_map[1] > 0.5``).
    """
    image = np.asarray(image, dtype=np.float32)
    patch = tuple(int(p) for p in patch_size)
    if image.ndim != 3 or len(patch) != 3:
        raise ValueError(f"expected a 3D image and a 3D patch, got image {image.shape} and patch {patch}.")
    strides = (stride_xy, stride_xy, stride_z)
    padded, pads = _pad_to_patch(image, patch)

    # float32 accumulators in the reference loop order (x outer, z inner) so sums round the same way
    score = np.zeros((num_classes, *padded.shape), dtype=np.float32)
    count = np.zeros(padded.shape, dtype=np.float32)
    starts = [window_starts(size, p, s) for size, p, s in zip(padded.shape, patch, strides, strict=True)]
    with torch.no_grad():
        for x in starts[0]:
            for y in starts[1]:
                for z in starts[2]:
                    window = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
                    score[(slice(None), *window)] += _window_probabilities(predict_fn, padded[window], num_classes)
                    count[window] += 1.0
    score /= count[None]

    crop = tuple(slice(before, before + size) for (before, _), size in zip(pads, image.shape, strict=True))
    score = np.ascontiguousarray(score[(slice(None), *crop)])
    label = np.argmax(score, axis=0).astype(np.int64)
    return label, score


class ProbabilityInferer(Inferer):
    """Wrap a MONAI inferer so that every window's logits become softmax probabilities before aggregation.

    The reference test scripts average probabilities over overlapping windows; MONAI averages whatever the
    network returns, and averaging logits moves the argmax near boundaries. The output is a
    probability map, so postprocessing takes its argmax as usual.
    """

    def __init__(self, inferer: Inferer, dim: int = 1) -> None:
        super().__init__()
        self.inferer = inferer
        self.dim = dim

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs):
        def predictor(x: torch.Tensor, *p_args, **p_kwargs) -> torch.Tensor:
            return torch.softmax(network(x, *p_args, **p_kwargs).float(), dim=self.dim)

        return self.inferer(inputs, predictor, *args, **kwargs)


def sliding_window_starts(image_size: int, patch_size: int, stride: int) -> list[int]:
    """Window starts along one axis after zero padding to the patch (STLU's name for :func:`window_starts`)."""
    return window_starts(image_size, patch_size, stride)


def stride_to_overlap(patch_size: int, stride: int) -> float:
    """Scalar ``1 - (stride + 0.5) / patch_size`` (STLU's name); see :func:`sliding_window_overlap`."""
    return sliding_window_overlap(patch_size, stride)[0]


# --------------------------------------------------------------------------------------------------------------------
# ALHVR's official test loops (``test_acdc.py``, ``test_bra_util.py``), for evaluation scripts and parity checks; the
# bundles' validators use MONAI's inferers (bundles/alhvr_acdc/docs/README.md and alhvr_brats/docs/README.md)
# --------------------------------------------------------------------------------------------------------------------


def _clean_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Clean logits of an ALHVR network (``forward`` -> one tensor) or of a tuple-returning official-style net."""
    out = net(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def alhvr_acdc_predict_volume(net: nn.Module, image: np.ndarray, patch: Sequence[int] = (256, 256)) -> np.ndarray:
    """Slice-wise ACDC prediction of ALHVR's ``test_acdc.py``: per slice ``scipy.ndimage.zoom(order=0)`` to
    ``patch``, clean logits in eval mode, softmax + argmax, zoom back to the slice's H x W with ``order=0``.
    ``image`` is ``[S, H, W]``.

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


def alhvr_sliding_window_3d(
    net: nn.Module,
    image: np.ndarray,
    patch: Sequence[int] = (96, 96, 96),
    stride_xy: int = 64,
    stride_z: int = 64,
    num_classes: int = 2,
) -> np.ndarray:
    """BraTS sliding-window label map ``[D, H, W]`` of ALHVR's ``test_bra_util.py``: :func:`sliding_window_predict`
    on the clean logits (zero padding to the patch, windows at ``min(stride·i, s - patch)``, mean softmax, argmax,
    padding cropped), in eval mode (restored afterwards)."""
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
