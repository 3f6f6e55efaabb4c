"""MONAI-native metrics in physical units, and the per-class summary used by the evaluation reports.

The second, clearly-labelled metric family of the evaluation reports (README.md, "Evaluate"): MONAI's own
``DiceMetric``, ``MeanIoU``, ``HausdorffDistanceMetric(percentile=95)`` (max of the two directed 95th percentiles) and
``SurfaceDistanceMetric(symmetric=True)`` (mean over the union of both directed sets), computed with the image
spacing so distances are in mm. These are NOT the papers' numbers (see :mod:`.paper` for those): the MONAI HD95
exceeds the pooled medpy HD95 on asymmetric errors, and the symmetric surface distance is neither medpy ``asd`` nor
``assd``.

Empty masks are kept visible rather than patched: MONAI returns NaN (Dice/IoU with an empty ground truth, any
distance with an empty ground truth) or inf (distances with an empty prediction); every such value is stored as NaN
and the row carries ``empty_pred`` / ``empty_gt`` flags. :func:`summarise` ignores NaN and reports the counts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDistanceMetric
from monai.networks.utils import one_hot

__all__ = ["NATIVE_KEYS", "native_case_metrics", "summarise"]

NATIVE_KEYS = ("dice", "iou", "hd95_mm", "assd_mm")


def _labels_to_onehot(labels: Any, num_classes: int) -> torch.Tensor:
    """Integer label map ``(*S)`` → one-hot float tensor ``(1, C, *S)`` as MONAI's metrics expect."""
    tensor = torch.as_tensor(np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels))
    tensor = tensor.long()
    if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(tensor.min())}, {int(tensor.max())}].")
    return one_hot(tensor[None, None], num_classes=num_classes, dim=1)


def _finite_or_nan(value: float) -> float:
    # MONAI signals an empty mask with inf (distances, empty prediction) or NaN; keep a single marker
    return value if math.isfinite(value) else math.nan


def native_case_metrics(
    pred_labels: Any, gt_labels: Any, num_classes: int, spacing: float | Sequence[float] | None
) -> list[dict[str, Any]]:
    """MONAI-native per-class metrics of one case (classes ``1 .. num_classes-1``, background excluded).

    ``pred_labels`` and ``gt_labels`` are integer label maps of the same spatial shape (no channel axis);
    ``spacing`` is the image spacing in mm (one value per axis or a scalar; ``None`` = unit voxels, then the
    ``*_mm`` keys are in voxels). Returns one dict per foreground class with keys
    ``class_id, dice, iou, hd95_mm, assd_mm, empty_pred, empty_gt``; NaN where MONAI gives NaN/inf (see module doc).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background + one class), got {num_classes}.")
    pred = _labels_to_onehot(pred_labels, num_classes)
    gt = _labels_to_onehot(gt_labels, num_classes)
    if pred.shape != gt.shape:
        raise ValueError(f"pred_labels and gt_labels must have the same shape, got {pred.shape[2:]}, {gt.shape[2:]}.")
    spatial = tuple(float(s) for s in np.broadcast_to(spacing, (pred.ndim - 2,))) if spacing is not None else None

    with warnings.catch_warnings():
        # MONAI warns once per empty class; the flags below carry that information
        warnings.simplefilter("ignore", UserWarning)
        values = {
            "dice": DiceMetric(include_background=False, reduction="none")(pred, gt),
            "iou": MeanIoU(include_background=False, reduction="none")(pred, gt),
            "hd95_mm": HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
                pred, gt, spacing=spatial
            ),
            "assd_mm": SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")(
                pred, gt, spacing=spatial
            ),
        }

    rows = []
    for index, class_id in enumerate(range(1, num_classes)):
        row: dict[str, Any] = {
            "class_id": class_id,
            "empty_pred": not bool(pred[0, class_id].any()),
            "empty_gt": not bool(gt[0, class_id].any()),
        }
        row.update({key: _finite_or_nan(float(tensor[0, index])) for key, tensor in values.items()})
        rows.append(row)
    return rows


def _flatten_rows(rows: Iterable[Any]) -> list[Mapping[str, Any]]:
    """Accept per-case lists of class dicts (what the metric functions return) or an already flat list."""
    flat: list[Mapping[str, Any]] = []
    for item in rows:
        if isinstance(item, Mapping):
            flat.append(item)
        else:
            flat.extend(item)
    return flat


def _case_groups(rows: Iterable[Any]) -> list[list[Mapping[str, Any]]]:
    return [[item] if isinstance(item, Mapping) else list(item) for item in rows]


def _as_float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and population std (np.std, as the reference scripts print) of the finite values, with counts."""
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    mean = float(finite.mean()) if finite.size else math.nan
    std = float(finite.std()) if finite.size else math.nan
    return {"mean": mean, "std": std, "n": int(finite.size), "n_nan": int(array.size - finite.size)}


def summarise(rows: Iterable[Any], keys: Sequence[str]) -> dict[str, Any]:
    """Mean ± std per class and over classes, ignoring NaN, with counts (the papers' aggregation).

    ``rows``: one entry per case, each the list of class dicts returned by :func:`native_case_metrics` or
    :func:`.paper.multiclass_case_metrics` (a flat list of class dicts is accepted too; a dict without
    ``class_id`` counts as class 1). Returns::

        {"n_cases": int,
         "per_class": {class_id: {key: {"mean", "std", "n", "n_nan"}, "n_empty_pred": int, "n_empty_gt": int}},
         "overall":   {key: {"mean", "std", "n"}}}

    ``overall.mean`` is the mean over classes of the per-class means (mean over cases per class first, as the
    papers aggregate); ``overall.std`` is the std over cases of each case's mean over its non-NaN classes;
    ``overall.n`` counts the cases with at least one finite value.
    """
    cases = _case_groups(rows)
    by_class: dict[int, list[Mapping[str, Any]]] = {}
    for row in _flatten_rows(cases):
        by_class.setdefault(int(row.get("class_id", 1)), []).append(row)

    per_class: dict[int, dict[str, Any]] = {}
    for class_id in sorted(by_class):
        class_rows = by_class[class_id]
        entry: dict[str, Any] = {key: _stats([_as_float(r.get(key)) for r in class_rows]) for key in keys}
        entry["n_empty_pred"] = sum(bool(r.get("empty_pred", False)) for r in class_rows)
        entry["n_empty_gt"] = sum(bool(r.get("empty_gt", False)) for r in class_rows)
        per_class[class_id] = entry

    overall: dict[str, Any] = {}
    for key in keys:
        class_means = [per_class[c][key]["mean"] for c in per_class]
        case_means = [_nanmean([_as_float(r.get(key)) for r in case]) for case in cases]
        case_stats = _stats(case_means)
        overall[key] = {"mean": _nanmean(class_means), "std": case_stats["std"], "n": case_stats["n"]}
    return {"n_cases": len(cases), "per_class": per_class, "overall": overall}


def _nanmean(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    return float(finite.mean()) if finite.size else math.nan
