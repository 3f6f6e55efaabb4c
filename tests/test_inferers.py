"""Reference sliding window vs hand-computed coverage and vs MONAI's SlidingWindowInferer (protocol.md §4)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import SlidingWindowInferer
from monai.inferers.utils import _get_scan_interval

from common.inferers import sliding_window_overlap, sliding_window_predict, window_starts

# (patch, stride per axis, volume shapes) of protocol.md §4; shapes mix typical preprocessed sizes with axes shorter
# than the patch (padded) and equal to it
PAPER_CONFIGS = {
    "la": ((112, 112, 80), (18, 18, 4), [(183, 140, 88), (112, 112, 80), (100, 150, 75)]),
    "pancreas_mcnet": ((96, 96, 96), (16, 16, 16), [(147, 131, 112), (96, 90, 150)]),
    "pancreas_coranet_dycon": ((96, 96, 96), (16, 16, 4), [(147, 131, 112), (120, 100, 96)]),
    "brats_ssl4mis": ((96, 96, 96), (64, 64, 64), [(160, 190, 150), (96, 97, 95)]),
    "brats_dycon": ((96, 96, 96), (16, 16, 4), [(160, 190, 150)]),
    "isles_dycon": ((96, 96, 64), (16, 16, 4), [(112, 112, 73), (90, 130, 64)]),
}


def _monai_starts(shape, patch, overlap) -> set[tuple[int, ...]]:
    """Window starts MONAI's sliding_window_inference visits on a volume (after its own symmetric padding)."""
    padded = tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
    interval = _get_scan_interval(padded, patch, len(patch), overlap)
    return {tuple(sl.start for sl in slices) for slices in dense_patch_slices(padded, patch, interval)}


def _reference_starts(shape, patch, stride) -> set[tuple[int, ...]]:
    axes = [window_starts(s, p, st) for s, p, st in zip(shape, patch, stride, strict=True)]
    return set(itertools.product(*axes))


# --------------------------------------------------------------------------------------------------------------------
# window positions and overlaps
# --------------------------------------------------------------------------------------------------------------------


def test_window_starts_hand_values():
    # LA (183, 140, 88), patch (112, 112, 80), strides (18, 18, 4):
    # x: ceil(71/18)+1 = 5 windows, last clamped to 71; y: ceil(28/18)+1 = 3, last 28; z: ceil(8/4)+1 = 3
    assert window_starts(183, 112, 18) == [0, 18, 36, 54, 71]
    assert window_starts(140, 112, 18) == [0, 18, 28]
    assert window_starts(88, 80, 4) == [0, 4, 8]
    assert window_starts(96, 96, 16) == [0]  # axis equal to the patch
    assert window_starts(70, 96, 16) == [0]  # shorter axis: padded to the patch first
    assert window_starts(10, 8, 3) == [0, 2]  # ceil(2/3)+1 = 2, second clamped from 3 to 2
    with pytest.raises(ValueError):
        window_starts(10, 8, 0)


def test_overlap_values_of_protocol():
    assert sliding_window_overlap((112, 112, 80), (18, 18, 4)) == pytest.approx((0.8348, 0.8348, 0.9438), abs=1e-4)
    assert sliding_window_overlap(96, 16) == pytest.approx((0.8281,), abs=1e-4)
    assert sliding_window_overlap((96, 96, 96), 16) == pytest.approx((0.8281,) * 3, abs=1e-4)
    assert sliding_window_overlap((96, 96, 96), (16, 16, 4)) == pytest.approx((0.8281, 0.8281, 0.9531), abs=1e-4)
    assert sliding_window_overlap((96, 96, 96), 64) == pytest.approx((0.3281,) * 3, abs=1e-4)
    assert sliding_window_overlap((96, 96, 64), (16, 16, 4)) == pytest.approx((0.8281, 0.8281, 0.9297), abs=1e-4)
    assert sliding_window_overlap(96, 96) == (0.0,)  # non-overlapping tiles
    with pytest.raises(ValueError, match="gaps"):
        sliding_window_overlap(96, 97)
    with pytest.raises(ValueError, match="lengths"):
        sliding_window_overlap((96, 96), (16, 16, 4))


def test_overlap_gives_monai_interval_equal_to_stride_for_every_pair():
    # MONAI: interval = int(patch * (1 - overlap)); the half voxel must survive float rounding for every pair
    for patch in range(1, 161):
        for stride in range(1, patch + 1):
            (overlap,) = sliding_window_overlap(patch, stride)
            assert 0.0 <= overlap < 1.0
            assert int(patch * (1 - overlap)) == stride, (patch, stride)


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_monai_visits_reference_windows(name):
    patch, stride, shapes = PAPER_CONFIGS[name]
    overlap = sliding_window_overlap(patch, stride)
    for shape in shapes:
        assert _monai_starts(shape, patch, overlap) == _reference_starts(shape, patch, stride), shape


def test_naive_overlap_falls_into_the_rounding_trap():
    # 1 - 16/96 → interval int(15.999999999999996) = 15 (and 4 → 3): different windows on the 96-patch configs
    for name in ("pancreas_mcnet", "pancreas_coranet_dycon", "brats_dycon", "isles_dycon"):
        patch, stride, shapes = PAPER_CONFIGS[name]
        naive = tuple(1 - s / p for p, s in zip(patch, stride, strict=True))
        assert _monai_starts(shapes[0], patch, naive) != _reference_starts(shapes[0], patch, stride), name
    # LA happens to be safe: 112·(18/112) and 80·(4/80) round up to the stride (documented, not relied upon)
    patch, stride, shapes = PAPER_CONFIGS["la"]
    naive = tuple(1 - s / p for p, s in zip(patch, stride, strict=True))
    assert _monai_starts(shapes[0], patch, naive) == _reference_starts(shapes[0], patch, stride)


def test_monai_inferer_records_reference_windows_on_la_volume():
    """Run the real SlidingWindowInferer (no network) on LA's (183, 140, 88): the image holds its own coordinates,
    so the corner voxel of each window it hands to the predictor is that window's start."""
    shape, patch, stride = (183, 140, 88), (112, 112, 80), (18, 18, 4)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    visited: list[tuple[int, ...]] = []

    def recorder(window: torch.Tensor) -> torch.Tensor:
        for item in window:
            visited.append(tuple(int(v) for v in item[:, 0, 0, 0]))
        return window[:, :1]

    inferer = SlidingWindowInferer(roi_size=patch, overlap=sliding_window_overlap(patch, stride), mode="constant")
    with torch.no_grad():
        inferer(torch.from_numpy(grid)[None], recorder)
    assert len(visited) == 5 * 3 * 3
    assert set(visited) == _reference_starts(shape, patch, stride)


# --------------------------------------------------------------------------------------------------------------------
# sliding_window_predict
# --------------------------------------------------------------------------------------------------------------------


def _logits_from_probability(fg: float, shape) -> torch.Tensor:
    """Two-class logits whose softmax is exactly (1 - fg, fg) everywhere."""
    logits = torch.empty((1, 2, *shape))
    logits[:, 0], logits[:, 1] = float(np.log(1 - fg)), float(np.log(fg))
    return logits


def test_sliding_window_averages_softmax_of_each_window():
    """X = 10, patch 8, stride_xy 2 → windows at x = 0 and 2 (Y, Z equal to the patch → one window each).

    The image stores x, so a window's first voxel tells its start. Window 0 predicts fg 0.2, window 2 fg 0.6.
    Averaged probability: x ∈ {0, 1} only window 0 → 0.2; x ∈ 2..7 both → 0.4; x ∈ {8, 9} only window 2 → 0.6.
    Labels: fg > bg only for x ≥ 8.
    """
    image = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None], (10, 8, 4)).copy()
    calls: list[int] = []

    def predict_fn(window: torch.Tensor) -> torch.Tensor:
        assert window.shape == (1, 1, 8, 8, 4) and window.dtype == torch.float32
        start = int(window[0, 0, 0, 0, 0])
        calls.append(start)
        return _logits_from_probability({0: 0.2, 2: 0.6}[start], window.shape[2:])

    label, score = sliding_window_predict(predict_fn, image, (8, 8, 4), stride_xy=2, stride_z=4)
    assert calls == [0, 2]
    assert label.dtype == np.int64 and label.shape == (10, 8, 4)
    assert score.dtype == np.float32 and score.shape == (2, 10, 8, 4)
    expected_fg = np.array([0.2, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.6, 0.6])
    np.testing.assert_allclose(score[1], np.broadcast_to(expected_fg[:, None, None], (10, 8, 4)), atol=1e-6)
    np.testing.assert_allclose(score.sum(0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(label[:, 0, 0], (expected_fg > 0.5).astype(np.int64))


def test_sliding_window_counts_and_covers_every_voxel():
    # (13, 11, 9) with patch (8, 8, 4), strides 3 / 2: x ceil(5/3)+1 = 3, y ceil(3/3)+1 = 2, z ceil(5/2)+1 = 4
    image = np.random.default_rng(0).random((13, 11, 9)).astype(np.float32)
    seen = np.zeros(image.shape, dtype=np.int64)
    calls = []

    def predict_fn(window: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.zeros((1, 3, *window.shape[2:]))  # uniform 1/3 per class

    label, score = sliding_window_predict(predict_fn, image, (8, 8, 4), stride_xy=3, stride_z=2, num_classes=3)
    for x, y, z in _reference_starts(image.shape, (8, 8, 4), (3, 3, 2)):
        seen[x : x + 8, y : y + 8, z : z + 4] += 1
    assert len(calls) == 3 * 2 * 4 and seen.min() >= 1
    np.testing.assert_allclose(score, 1 / 3, atol=1e-6)
    assert not label.any()  # exact ties → class 0


def test_sliding_window_pads_short_axes_symmetrically():
    # X = 5 < patch 8: deficit 3 → 1 zero before, 2 after; the image stores x + 1 so padding shows as 0
    image = np.broadcast_to(np.arange(1, 6, dtype=np.float32)[:, None, None], (5, 8, 4)).copy()
    profiles = []

    def predict_fn(window: torch.Tensor) -> torch.Tensor:
        profiles.append(window[0, 0, :, 0, 0].tolist())
        # fg probability rises with the window coordinate, so cropping errors would show in the output
        ramp = torch.linspace(0.15, 0.85, 8)[:, None, None].expand(8, 8, 4)
        return torch.stack([torch.log(1 - ramp), torch.log(ramp)])[None]

    label, score = sliding_window_predict(predict_fn, image, (8, 8, 4), stride_xy=4, stride_z=4)
    assert profiles == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0]]
    assert score.shape == (2, 5, 8, 4) and label.shape == (5, 8, 4)
    np.testing.assert_allclose(score[1, :, 0, 0], np.linspace(0.15, 0.85, 8)[1:6], atol=1e-6)
    np.testing.assert_array_equal(label[:, 0, 0], [0, 0, 0, 1, 1])  # fg 0.25, 0.35, 0.45, 0.55, 0.65


def test_predict_fn_output_shape_is_checked():
    with pytest.raises(ValueError, match="predict_fn returned"):
        sliding_window_predict(lambda w: torch.zeros((1, 3, *w.shape[2:])), np.zeros((8, 8, 4)), (8, 8, 4), 4, 4)
    with pytest.raises(ValueError, match="3D"):
        sliding_window_predict(lambda w: w, np.zeros((8, 8)), (8, 8), 4, 4)


def _position_dependent_logits(window: torch.Tensor) -> torch.Tensor:
    """A cheap 'network' whose logits depend on intensity AND position inside the window, so overlapping windows
    disagree and only correct placement + probability averaging reproduce the reference."""
    patch = window.shape[2:]
    ramp = sum(
        torch.linspace(-1.0, 1.0, n).reshape([n if d == i else 1 for d in range(3)]) * (i + 1)
        for i, n in enumerate(patch)
    )
    intensity = window[:, 0]
    return torch.stack([torch.zeros_like(intensity), 3.0 * intensity - 1.5 + ramp, 0.5 * ramp - intensity], dim=1)


@pytest.mark.parametrize("shape", [(21, 13, 9), (5, 13, 3), (8, 19, 4)])
def test_matches_monai_inferer_with_softmax_predictor(shape):
    patch, stride_xy, stride_z = (8, 8, 4), 3, 2
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    label, score = sliding_window_predict(_position_dependent_logits, image, patch, stride_xy, stride_z, num_classes=3)

    overlap = sliding_window_overlap(patch, (stride_xy, stride_xy, stride_z))
    inferer = SlidingWindowInferer(roi_size=patch, overlap=overlap, mode="constant", padding_mode="constant", cval=0)
    with torch.no_grad():
        monai_score = inferer(
            torch.from_numpy(image)[None, None], lambda w: torch.softmax(_position_dependent_logits(w), dim=1)
        )[0].numpy()
    np.testing.assert_allclose(score, monai_score, atol=1e-6)
    top2 = np.sort(score, axis=0)[-2:]
    decided = (top2[1] - top2[0]) > 1e-5  # ignore float-order near-ties
    np.testing.assert_array_equal(label[decided], monai_score.argmax(0)[decided])
