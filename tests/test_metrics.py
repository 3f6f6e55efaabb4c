"""Paper (medpy-semantics) and MONAI-native metrics on tiny masks with hand-computed values (protocol.md §3)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric
from monai.metrics.utils import get_edge_surface_distance
from monai.networks.utils import one_hot
from scipy import ndimage

from common.metrics import (
    NATIVE_KEYS,
    EmptyMaskError,
    alhvr_case_metrics,
    asd_medpy,
    case_metrics,
    dice_coefficient,
    dice_ratio,
    hd95_medpy,
    jaccard_index,
    multiclass_case_metrics,
    native_case_metrics,
    precision_recall,
    summarise,
)

# --------------------------------------------------------------------------------------------------------------------
# fixtures: masks whose metrics are computable by hand
# --------------------------------------------------------------------------------------------------------------------


def squares_offset_by_one() -> tuple[np.ndarray, np.ndarray]:
    """gt = 4×4 square rows 2..5, pred = the same square one row lower (rows 3..6), cols 2..5 for both.

    Overlap rows 3..5 = 12 px; |P| = |G| = 16 → Dice 24/32 = 0.75, Jaccard 12/20 = 0.6.
    Surface (cross erosion) of a 4×4 square = its 12-px ring (interior 2×2 survives).
    pred ring → gt ring: row 3 gives 0,1,1,0 (cols 3,4 lie inside gt, 1 px from gt's row 2 / col 2 ring);
    (4,2),(4,5),(5,2),(5,5) lie on the gt ring → 0; row 6 → 1 px below gt row 5 → 1,1,1,1.
    So d(P→G) = six 0s + six 1s; by symmetry d(G→P) is the same.
    HD95 = p95 of 24 pooled values (12 zeros, 12 ones): index 0.95·23 = 21.85 → 1.
    ASD = 6/12 = 0.5.
    """
    gt = np.zeros((9, 8), dtype=bool)
    gt[2:6, 2:6] = True
    pred = np.zeros_like(gt)
    pred[3:7, 2:6] = True
    return pred, gt


def slabs_shifted_through_plane() -> tuple[np.ndarray, np.ndarray]:
    """gt = 4×4×2 slab at z ∈ {1, 2}, pred = same slab at z ∈ {2, 3}.

    Dice = 2·16/64 = 0.5, Jaccard = 16/48 = 1/3. A 2-voxel-thick slab is all surface (every voxel misses a
    z-neighbour of the 6-neighbourhood). d(P→G): z=2 voxels lie on gt → 16 zeros; z=3 voxels are one slice above
    gt's z=2 → 16 × (1 slice). d(G→P) is the mirror image. With spacing (1, 1, 5) a slice is 5 mm (an in-plane
    detour costs sqrt(1 + 25) > 5), so HD95 = p95 of 32 zeros + 32 fives (index 0.95·63 = 59.85) = 5 and
    ASD = 2.5; in voxels: 1 and 0.5.
    """
    gt = np.zeros((6, 6, 5), dtype=bool)
    gt[1:5, 1:5, 1:3] = True
    pred = np.zeros_like(gt)
    pred[1:5, 1:5, 2:4] = True
    return pred, gt


def square_plus_far_pixels() -> tuple[np.ndarray, np.ndarray]:
    """gt = 10×10 square (rows/cols 2..11, 36-px ring); pred = the same square + 3 isolated pixels at column 20.

    The pixels (2,20), (6,20), (11,20) are each 9 px from the nearest gt ring pixel ((r, 11)).
    d(P→G) = 36 zeros + three 9s (39 values); d(G→P) = 36 zeros (pred's square ring coincides with gt's).
    medpy HD95 = p95 of the 75 pooled values (72 zeros, 3 nines): index 0.95·74 = 70.3 → 0.
    MONAI HD95 = max(p95 d(P→G), p95 d(G→P)); p95 of 39 values: index 0.95·38 = 36.1 → 9, so max(9, 0) = 9.
    asd(pred, gt) = 27/39; asd(gt, pred) = 0 (direction matters).
    """
    gt = np.zeros((14, 24), dtype=bool)
    gt[2:12, 2:12] = True
    pred = gt.copy()
    pred[[2, 6, 11], 20] = True
    return pred, gt


def _onehot(mask: np.ndarray) -> torch.Tensor:
    return one_hot(torch.as_tensor(mask.astype(np.int64))[None, None], num_classes=2, dim=1)


def _random_blobs(seed: int, shape=(24, 22, 18)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = [ndimage.binary_opening(rng.random(shape) > 0.55) for _ in range(2)]
    return masks[0], masks[1]


# --------------------------------------------------------------------------------------------------------------------
# overlap metrics
# --------------------------------------------------------------------------------------------------------------------


def test_one_dimensional_runs():
    # gt = run 2..5 (surface {2, 5}), pred = run 3..6 (surface {3, 6}); every surface voxel is 1 from the other's
    # surface → HD95 = ASD = 1. Overlap 3..5 = 3 of 4 + 4 → Dice 0.75, Jaccard 3/5.
    gt = np.zeros(10, dtype=bool)
    gt[2:6] = True
    pred = np.zeros(10, dtype=bool)
    pred[3:7] = True
    assert case_metrics(pred, gt) == pytest.approx((0.75, 0.6, 1.0, 1.0))


def test_squares_offset_by_one_voxel():
    pred, gt = squares_offset_by_one()
    assert dice_coefficient(pred, gt) == pytest.approx(0.75)
    assert jaccard_index(pred, gt) == pytest.approx(0.6)
    assert hd95_medpy(pred, gt) == pytest.approx(1.0)
    assert asd_medpy(pred, gt) == pytest.approx(0.5)
    assert case_metrics(pred, gt) == pytest.approx((0.75, 0.6, 1.0, 0.5))
    assert alhvr_case_metrics(pred, gt) == pytest.approx((0.75, 0.6, 1.0, 0.5))


def test_overlap_metrics_accept_labels_and_tensors():
    pred, gt = squares_offset_by_one()
    # any non-zero value is object (medpy casts to bool); torch tensors are accepted
    assert dice_coefficient(pred.astype(np.int64) * 3, torch.as_tensor(gt)) == pytest.approx(0.75)
    assert dice_coefficient(np.zeros(4), np.zeros(4)) == 0.0  # medpy's ZeroDivisionError guard
    assert jaccard_index(np.zeros(4), np.zeros(4)) == 0.0  # documented choice (medpy would raise)
    with pytest.raises(ValueError, match="same shape"):
        dice_coefficient(np.zeros((3, 3)), np.zeros((3, 4)))


def test_precision_recall_and_dice_ratio():
    # |P| = 4, |G| = 6, |P∩G| = 3 → precision 3/(4+eps), recall 3/(6+eps), dice_ratio 6/(10+eps)
    pred = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    gt = np.array([0, 1, 1, 1, 1, 1, 1, 0])
    precision, recall = precision_recall(pred, gt)
    assert precision == pytest.approx(3 / (4 + 1e-6), rel=1e-12)
    assert recall == pytest.approx(3 / (6 + 1e-6), rel=1e-12)
    assert dice_ratio(pred, gt) == pytest.approx(6 / (10 + 1e-6), rel=1e-12)
    assert dice_ratio(pred, gt, eps=0.0) == pytest.approx(0.6)
    assert precision_recall(np.zeros(3), np.zeros(3)) == (0.0, 0.0)
    assert dice_ratio(np.zeros(3), np.zeros(3)) == 0.0


# --------------------------------------------------------------------------------------------------------------------
# surface distances
# --------------------------------------------------------------------------------------------------------------------


def test_anisotropic_spacing_slab_shift():
    pred, gt = slabs_shifted_through_plane()
    assert case_metrics(pred, gt) == pytest.approx((0.5, 1 / 3, 1.0, 0.5))
    assert hd95_medpy(pred, gt, spacing=(1, 1, 5)) == pytest.approx(5.0)
    assert asd_medpy(pred, gt, spacing=(1, 1, 5)) == pytest.approx(2.5)
    assert case_metrics(pred, gt, spacing=(1.0, 1.0, 5.0)) == pytest.approx((0.5, 1 / 3, 5.0, 2.5))
    # a scalar spacing is isotropic
    assert hd95_medpy(pred, gt, spacing=2.0) == pytest.approx(2.0)


def test_single_slice_slabs_are_one_slice_apart_in_mm():
    # disjoint one-voxel-thick slabs at z=2 and z=3: every surface voxel is exactly one slice (5 mm) from the other
    gt = np.zeros((6, 6, 6), dtype=bool)
    gt[1:5, 1:5, 2] = True
    pred = np.roll(gt, 1, axis=2)
    assert case_metrics(pred, gt, spacing=(1, 1, 5)) == pytest.approx((0.0, 0.0, 5.0, 5.0))
    row = native_case_metrics(pred.astype(np.int64), gt.astype(np.int64), 2, (1.0, 1.0, 5.0))[0]
    assert (row["dice"], row["iou"], row["hd95_mm"], row["assd_mm"]) == pytest.approx((0.0, 0.0, 5.0, 5.0))


def test_asd_is_directed_and_hd95_pools_both_directions():
    pred, gt = square_plus_far_pixels()
    assert asd_medpy(pred, gt) == pytest.approx(27 / 39)
    assert asd_medpy(gt, pred) == 0.0
    assert hd95_medpy(pred, gt) == 0.0
    assert hd95_medpy(gt, pred) == 0.0  # the pooled set is symmetric in its arguments


def test_monai_hausdorff95_differs_from_medpy_on_asymmetric_errors():
    """Why the paper numbers do not use HausdorffDistanceMetric(percentile=95): it takes max(p95(P→G), p95(G→P))."""
    pred, gt = square_plus_far_pixels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_hd95 = HausdorffDistanceMetric(include_background=False, percentile=95)(_onehot(pred), _onehot(gt))
    assert float(monai_hd95) == pytest.approx(9.0)
    assert hd95_medpy(pred, gt) == 0.0


def test_matches_monai_edge_distances_and_directed_surface_metric():
    """protocol.md §3: pooled get_edge_surface_distance(symmetric=True) = medpy hd95; SurfaceDistance(symmetric=False)
    = medpy asd. MONAI returns float32 distances, hence the 1e-5 tolerance (ours are float64, medpy's dtype)."""
    spacing = (0.7, 1.0, 2.5)
    for seed in range(3):
        pred, gt = _random_blobs(seed)
        _, (d_pg, d_gp), _ = get_edge_surface_distance(
            torch.as_tensor(pred), torch.as_tensor(gt), symmetric=True, spacing=spacing
        )
        pooled = float(np.percentile(np.hstack((d_pg.numpy(), d_gp.numpy())), 95))
        assert hd95_medpy(pred, gt, spacing=spacing) == pytest.approx(pooled, rel=1e-5)
        directed = SurfaceDistanceMetric(include_background=False, symmetric=False)(_onehot(pred), _onehot(gt))
        assert asd_medpy(pred, gt) == pytest.approx(float(directed), rel=1e-5)


def test_masks_touching_the_border_use_a_zero_border():
    # medpy erodes with a zero border, so the outer layer of a mask touching the image edge is surface: padding the
    # volume with background must not change any value (this also checks the internal bounding-box crop)
    pred, gt = _random_blobs(7, shape=(12, 10, 8))
    pred[0], gt[:, -1] = True, True
    padded = [np.pad(m, 3) for m in (pred, gt)]
    assert case_metrics(pred, gt) == pytest.approx(case_metrics(*padded), rel=1e-12)
    # a completely full volume is all surface on its outer layer: hd95 to itself is 0
    full = np.ones((4, 4, 4), dtype=bool)
    assert hd95_medpy(full, full) == 0.0


def test_surface_distances_raise_on_empty_input():
    pred, gt = squares_offset_by_one()
    empty = np.zeros_like(gt)
    for fn in (hd95_medpy, asd_medpy):
        with pytest.raises(ValueError, match="first"):
            fn(empty, gt)
        with pytest.raises(RuntimeError, match="second"):  # medpy raises RuntimeError; EmptyMaskError is both
            fn(pred, empty)
    with pytest.raises(EmptyMaskError):
        alhvr_case_metrics(empty, gt)
    with pytest.raises(EmptyMaskError):
        alhvr_case_metrics(pred, empty)


def test_spacing_validation():
    pred, gt = squares_offset_by_one()
    with pytest.raises(ValueError, match="spacing"):
        hd95_medpy(pred, gt, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        asd_medpy(pred, gt, spacing=(1.0, 0.0))


# --------------------------------------------------------------------------------------------------------------------
# empty-mask conventions of case_metrics
# --------------------------------------------------------------------------------------------------------------------


def test_empty_prediction_scores_zeros():
    _, gt = squares_offset_by_one()
    assert case_metrics(np.zeros_like(gt), gt) == (0.0, 0.0, 0.0, 0.0)


def test_empty_ground_truth_raises_unless_dycon_rule():
    pred, gt = squares_offset_by_one()
    empty = np.zeros_like(gt)
    with pytest.raises(ValueError, match="empty_gt"):
        case_metrics(pred, empty)
    assert case_metrics(pred, empty, empty_gt="zero") == (0.0, 0.0, 0.0, 0.0)
    # both empty: the empty-prediction rule fires first, as in the reference scripts (pred.sum() == 0 check)
    assert case_metrics(empty, empty) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="empty_gt must be"):
        case_metrics(pred, gt, empty_gt="nan")


def test_multiclass_flags_empty_prediction_and_absent_class():
    gt = np.zeros((9, 8), dtype=np.int64)
    gt[2:6, 2:6] = 1
    gt[7, 1:4] = 2
    pred = np.zeros_like(gt)
    pred[3:7, 2:6] = 1
    pred[0, 0] = 3  # class 3 predicted but absent from the ground truth
    rows = multiclass_case_metrics(pred, gt, [1, 2, 3])
    assert [r["class_id"] for r in rows] == [1, 2, 3]
    assert (rows[0]["dice"], rows[0]["jaccard"], rows[0]["hd95"], rows[0]["asd"]) == pytest.approx(
        (0.75, 0.6, 1.0, 0.5)
    )
    assert rows[0]["empty_pred"] is False and rows[0]["empty_gt"] is False
    assert (rows[1]["dice"], rows[1]["jaccard"], rows[1]["hd95"], rows[1]["asd"]) == (0.0, 0.0, 0.0, 0.0)
    assert rows[1]["empty_pred"] is True and rows[1]["empty_gt"] is False
    assert all(math.isnan(rows[2][k]) for k in ("dice", "jaccard", "hd95", "asd"))
    assert rows[2]["empty_gt"] is True and rows[2]["empty_pred"] is False


# --------------------------------------------------------------------------------------------------------------------
# MONAI-native family and the summary
# --------------------------------------------------------------------------------------------------------------------


def test_native_metrics_on_anisotropic_slabs():
    # same slabs as the paper test: MONAI HD95 = max of the two directed p95 (each 16 zeros + 16 fives → 5);
    # symmetric SurfaceDistance = mean over both directed sets = 2.5 mm; Dice 0.5, IoU 1/3
    pred, gt = slabs_shifted_through_plane()
    rows = native_case_metrics(pred.astype(np.int64), gt.astype(np.int64), 2, (1.0, 1.0, 5.0))
    assert len(rows) == 1 and rows[0]["class_id"] == 1
    assert tuple(rows[0][k] for k in NATIVE_KEYS) == pytest.approx((0.5, 1 / 3, 5.0, 2.5), rel=1e-6)
    unit = native_case_metrics(pred.astype(np.int64), gt.astype(np.int64), 2, None)[0]
    assert (unit["hd95_mm"], unit["assd_mm"]) == pytest.approx((1.0, 0.5))


def test_native_metrics_keep_nan_and_flag_empty_masks():
    gt = np.zeros((9, 8), dtype=np.int64)
    gt[2:6, 2:6] = 1
    gt[7, 1:4] = 2
    pred = np.zeros_like(gt)
    pred[3:7, 2:6] = 1
    pred[0, 0] = 3
    rows = native_case_metrics(pred, gt, 4, (1.0, 1.0))
    assert [r["class_id"] for r in rows] == [1, 2, 3]
    assert tuple(rows[0][k] for k in NATIVE_KEYS) == pytest.approx((0.75, 0.6, 1.0, 0.5), rel=1e-6)
    # empty prediction: overlap 0 (well defined), distances inf in MONAI → NaN, flagged
    assert rows[1]["dice"] == 0.0 and rows[1]["iou"] == 0.0
    assert math.isnan(rows[1]["hd95_mm"]) and math.isnan(rows[1]["assd_mm"]) and rows[1]["empty_pred"]
    # empty ground truth: everything undefined → NaN, flagged
    assert all(math.isnan(rows[2][k]) for k in NATIVE_KEYS) and rows[2]["empty_gt"] and not rows[2]["empty_pred"]
    with pytest.raises(ValueError, match="labels must lie"):
        native_case_metrics(pred, gt, 3, None)


def test_summarise_per_class_and_over_classes():
    nan = math.nan
    cases = [
        [{"class_id": 1, "dice": 0.8, "empty_pred": False}, {"class_id": 2, "dice": 0.4, "empty_pred": False}],
        [{"class_id": 1, "dice": 0.6, "empty_pred": False}, {"class_id": 2, "dice": 0.0, "empty_pred": True}],
        [{"class_id": 1, "dice": 1.0}, {"class_id": 2, "dice": nan, "empty_gt": True}],
    ]
    summary = summarise(cases, ["dice"])
    assert summary["n_cases"] == 3
    c1, c2 = summary["per_class"][1], summary["per_class"][2]
    # class 1: mean(0.8, 0.6, 1.0) = 0.8, population std sqrt((0 + 0.04 + 0.04)/3)
    assert c1["dice"]["mean"] == pytest.approx(0.8) and c1["dice"]["std"] == pytest.approx(math.sqrt(0.08 / 3))
    assert (c1["dice"]["n"], c1["dice"]["n_nan"], c1["n_empty_pred"]) == (3, 0, 0)
    # class 2: NaN ignored → mean(0.4, 0.0) = 0.2, std 0.2; one empty prediction, one absent class
    assert c2["dice"]["mean"] == pytest.approx(0.2) and c2["dice"]["std"] == pytest.approx(0.2)
    assert (c2["dice"]["n"], c2["dice"]["n_nan"], c2["n_empty_pred"], c2["n_empty_gt"]) == (2, 1, 1, 1)
    # over classes: mean of class means (0.8 + 0.2)/2; std over per-case class means (0.6, 0.3, 1.0)
    overall = summary["overall"]["dice"]
    assert overall["mean"] == pytest.approx(0.5)
    assert overall["std"] == pytest.approx(float(np.std([0.6, 0.3, 1.0])))
    assert overall["n"] == 3
    # a flat list of class dicts is accepted too (each dict = one case)
    flat = summarise([{"dice": 0.5}, {"dice": 0.7}], ["dice"])
    assert flat["per_class"][1]["dice"]["mean"] == pytest.approx(0.6) and flat["n_cases"] == 2


def test_summarise_integrates_with_metric_rows():
    pred, gt = squares_offset_by_one()
    rows = [multiclass_case_metrics(pred.astype(np.int64), gt.astype(np.int64), [1])] * 2
    summary = summarise(rows, ["dice", "hd95"])
    assert summary["per_class"][1]["dice"]["mean"] == pytest.approx(0.75)
    assert summary["overall"]["hd95"]["mean"] == pytest.approx(1.0)
