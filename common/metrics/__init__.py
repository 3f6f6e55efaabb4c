"""Evaluation metrics (the two families of README.md, "Evaluate").

Two families, never mixed in one table:

* :mod:`.paper` — the papers' numbers: medpy ``dc``/``jc``/``hd95``/``asd`` semantics, voxel units by default,
  empty prediction → zeros (plus precision/recall and CoraNet's ``dice_ratio``).
* :mod:`.native` — MONAI's own metrics with the image spacing (mm), NaN for undefined cases, and ``summarise``.
"""

from .native import NATIVE_KEYS, native_case_metrics, summarise
from .paper import (
    EmptyMaskError,
    alhvr_case_metrics,
    asd_medpy,
    case_metrics,
    dice_coefficient,
    dice_ratio,
    hd95_medpy,
    jaccard_index,
    multiclass_case_metrics,
    precision_recall,
)

__all__ = [
    "EmptyMaskError",
    "dice_coefficient",
    "jaccard_index",
    "hd95_medpy",
    "asd_medpy",
    "case_metrics",
    "alhvr_case_metrics",
    "precision_recall",
    "dice_ratio",
    "multiclass_case_metrics",
    "NATIVE_KEYS",
    "native_case_metrics",
    "summarise",
]
