"""Per-case evaluation report: paper-compatible (voxel) and MONAI-native (mm) metrics, written as CSV + JSON."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..metrics import multiclass_case_metrics, native_case_metrics, summarise

__all__ = ["SegmentationReport"]

logger = logging.getLogger(__name__)

PAPER_KEYS = ("dice", "jaccard", "hd95", "asd")
NATIVE_KEYS = ("dice", "iou", "hd95_mm", "assd_mm")


def _label_map(tensor: Any) -> np.ndarray:
    """``(C, *S)`` one-hot/probabilities or ``(1, *S)`` indices -> ``(*S)`` integer label map."""
    array = tensor.detach().cpu() if isinstance(tensor, torch.Tensor) else torch.as_tensor(tensor)
    array = array.argmax(0) if array.shape[0] > 1 else array[0]
    return array.numpy().astype(np.int64)


def _spacing(tensor: Any) -> tuple[float, ...] | None:
    affine = getattr(tensor, "affine", None)
    if affine is None:
        return None
    affine = torch.as_tensor(affine, dtype=torch.float64)
    ndim = affine.shape[0] - 1
    return tuple(float(v) for v in torch.linalg.norm(affine[:ndim, :ndim], dim=0))


def _case_name(tensor: Any, index: int) -> str:
    meta = getattr(tensor, "meta", {}) or {}
    name = meta.get("filename_or_obj", f"case_{index:04d}")
    return Path(str(name)).name


class SegmentationReport:
    """Collect per-case, per-class metrics from an evaluator and write ``metrics.csv`` and ``summary.json``.

    Two families (README.md, "Evaluate"): the papers' medpy semantics on the evaluation grid in voxel units (Dice,
    Jaccard, HD95 pooled over both directions, ASD prediction -> ground truth; an empty prediction scores 0 on
    all four, and the count of such cases is reported), and MONAI's native metrics with the image spacing in mm
    (``DiceMetric``, ``MeanIoU``, ``HausdorffDistanceMetric(percentile=95)``,
    ``SurfaceDistanceMetric(symmetric=True)``).

    Attach to an evaluator whose decollated output items hold ``pred`` and ``label`` (one-hot or index maps).

    Args:
        output_dir: where ``metrics.csv`` and ``summary.json`` go.
        num_classes: number of classes including background.
        class_names: optional index -> name mapping for the report.
        paper_spacing: spacing for the paper family (``None``: voxel units, as every paper here).
        empty_gt: paper-family rule for a class absent from a case's ground truth: ``"skip"`` (NaN, left out of the
            means) or ``"zero"`` (scored (0, 0, 0, 0) and averaged, DyCON's rule); the recipe's ``evaluate`` section
            chooses it.
    """

    def __init__(
        self,
        output_dir: str,
        num_classes: int,
        class_names: Mapping[str, str] | None = None,
        paper_spacing: Sequence[float] | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        empty_gt: str = "skip",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.num_classes = num_classes
        self.class_names = {str(k): v for k, v in (class_names or {}).items()}
        self.paper_spacing = paper_spacing
        self.pred_key = pred_key
        self.label_key = label_key
        self.empty_gt = empty_gt
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, lambda _: self.write())

    def _collect(self, engine: Engine) -> None:
        for item in engine.state.output:
            pred, label = item[self.pred_key], item[self.label_key]
            case = _case_name(pred if getattr(pred, "meta", None) else label, len(self.rows))
            self.add_case(case, _label_map(pred), _label_map(label), _spacing(label))

    def add_case(self, case: str, pred: np.ndarray, label: np.ndarray, spacing: Sequence[float] | None) -> None:
        class_ids = list(range(1, self.num_classes))
        paper = multiclass_case_metrics(pred, label, class_ids, spacing=self.paper_spacing, empty_gt=self.empty_gt)
        native = native_case_metrics(pred, label, self.num_classes, spacing)
        for p_row, n_row in zip(paper, native, strict=True):
            class_id = p_row["class_id"]
            self.rows.append(
                {
                    "case": case,
                    "class_id": class_id,
                    "class_name": self.class_names.get(str(class_id), str(class_id)),
                    **{f"paper_{k}": p_row[k] for k in PAPER_KEYS},
                    "paper_empty_pred": bool(p_row["empty_pred"]),
                    **{f"monai_{k}": n_row[k] for k in NATIVE_KEYS},
                    "empty_gt": bool(p_row["empty_gt"]),
                }
            )

    def summary(self) -> dict[str, Any]:
        paper = summarise(self._per_case("paper_", PAPER_KEYS), PAPER_KEYS)
        native = summarise(self._per_case("monai_", NATIVE_KEYS), NATIVE_KEYS)
        return {
            "num_cases": len({r["case"] for r in self.rows}),
            "class_names": self.class_names,
            "paper_voxel_units": paper,
            "empty_predictions": sum(r["paper_empty_pred"] for r in self.rows),
            "monai_mm": native,
        }

    def _per_case(self, prefix: str, keys: Sequence[str]) -> list[list[dict[str, Any]]]:
        cases: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows:
            cases.setdefault(row["case"], []).append(self._family(row, prefix, keys))
        return list(cases.values())

    @staticmethod
    def _family(row: Mapping[str, Any], prefix: str, keys: Sequence[str]) -> dict[str, Any]:
        out = {"case": row["case"], "class_id": row["class_id"], "empty_gt": row["empty_gt"]}
        out.update({k: row[prefix + k] for k in keys})
        out["empty_pred"] = row["paper_empty_pred"]
        return out

    def write(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.rows:
            with open(self.output_dir / "metrics.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)
        summary = self.summary()
        (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
        overall = summary["paper_voxel_units"].get("overall", {}).get("dice", {})
        logger.info(
            "Evaluation of %d cases written to %s (mean paper Dice %s)",
            summary["num_cases"],
            self.output_dir,
            overall.get("mean"),
        )
