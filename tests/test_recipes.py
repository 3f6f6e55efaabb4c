"""Data and evaluation recipes against the official code, on synthetic volumes (issue 21)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from tests.bundle_utils import config_files


def _write_nifti(path, array):
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.eye(4)), str(path))
    return str(path)


def test_alhvr_brats_rotates_and_flips_in_the_official_zy_plane(tmp_path):
    """SSL4MIS/ALHVR rotate and flip h5 axes 0, 1 = (z, y); after the transpose to (x, y, z) that is axes (1, 2)."""
    x_ramp = np.broadcast_to(np.arange(1, 9, dtype=np.float32)[:, None, None], (8, 8, 8))
    yz = np.arange(64, dtype=np.float32).reshape(1, 8, 8)  # tells whether the (y, z) plane moved
    item = {"image": _write_nifti(tmp_path / "image.nii.gz", x_ramp * 100 + yz), "label": None}
    item["label"] = _write_nifti(tmp_path / "label.nii.gz", np.zeros((8, 8, 8)))
    parser = ConfigParser()
    parser.read_config(config_files("alhvr_brats", "train"))
    parser.update({"patch_size": [8, 8, 8], "raw_intensities": False})
    assert parser.get_parsed_content("rotflip_axes") == [1, 2]
    transform = parser.get_parsed_content("recipe#train#preprocessing")
    moved = 0
    for seed in range(8):
        transform.set_random_state(seed)
        image = torch.as_tensor(transform(dict(item))["image"])[0].numpy()
        np.testing.assert_array_equal(image // 100, x_ramp)  # the x axis is never rotated or flipped
        moved += not np.array_equal(image % 100, np.broadcast_to(yz, (8, 8, 8)))
    assert moved == 8  # every draw flips (and maybe rotates) the (y, z) plane


def _report_of_two_cases(tmp_path, empty_gt):
    from common.engines import SegmentationReport

    report = SegmentationReport(str(tmp_path / empty_gt), num_classes=2, empty_gt=empty_gt)
    gt = np.zeros((8, 8, 8), dtype=np.int64)
    gt[2:6, 2:6, 2:6] = 1
    report.add_case("hit", gt.copy(), gt, None)  # perfect: Dice 1
    pred = np.zeros_like(gt)
    pred[0, 0, 0] = 1
    report.add_case("empty_gt", pred, np.zeros_like(gt), None)  # a false positive on an empty ground truth
    return report.summary()["paper_voxel_units"]["overall"]["dice"]


def test_empty_ground_truth_scores_zero_under_dycon_rule_and_is_skipped_otherwise(tmp_path):
    assert _report_of_two_cases(tmp_path, "zero")["mean"] == 0.5  # (1 + 0) / 2: the empty case is scored
    assert _report_of_two_cases(tmp_path, "skip")["mean"] == 1.0  # the empty case is left out


def _empty_gt_rule(name):
    parser = ConfigParser()
    parser.read_config(config_files(name, "train", "evaluate"))
    parser.resolve_macro_and_relative_ids()
    handlers = parser.get("validate#handlers")
    (index,) = [i for i, h in enumerate(handlers) if "SegmentationReport" in str(h.get("_target_"))]
    return parser.get_parsed_content(f"validate#handlers#{index}#empty_gt")


def test_dycon_evaluation_scores_empty_ground_truth_others_skip_it():
    for name in ("dycon_la", "dycon_pancreas", "dycon_brats", "dycon_isles"):
        assert _empty_gt_rule(name) == "zero", name
    assert _empty_gt_rule("stlu_la") == "skip"
