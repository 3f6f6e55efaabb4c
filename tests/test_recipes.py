"""Data and evaluation recipes against the official code, on synthetic volumes (issue 21)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
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


# --- CoraNet Pancreas recipe (koncle/CoraNet preprocess/pancreas_preprocess.py) ---------------------------------


def _ct_phantom(shape=(160, 150, 40), box=(slice(60, 70), slice(50, 58), slice(10, 14))):
    """Air-filled volume with a bone block, fat, and a pancreas-like box of 75 HU (the window's centre) labelled 1."""
    image = np.full(shape, -1000.0, np.float32)
    image[10:20, 10:20, :] = 1200.0  # bone: the window reaches both limits, so min-max is (HU + 125) / 400
    image[30:40, 30:40, :] = -100.0
    image[box] = 75.0
    label = np.zeros(shape, np.uint8)
    label[box] = 1
    return image, label


def test_coranet_window_and_crop_on_a_phantom_with_a_known_box():
    from common.datasets.pancreas import coranet_crop_box, coranet_volumes

    image, label = _ct_phantom()
    # x: 60-25 .. 69+2+25 = 35..96 (61 < 96: grown symmetrically to 18..114); y: 25..84 grown to 7..103;
    # z: the 40 slices stay 0..40 (shorter than 96)
    assert coranet_crop_box(label, image.shape) == [(18, 114), (7, 103), (0, 40)]
    out_image, out_label = coranet_volumes(image, label, in_plane_spacing=1.0)
    assert out_image.shape == out_label.shape == (96, 96, 96)  # z zero-padded at the high end
    assert out_image.min() == 0.0 and out_image.max() == 1.0
    np.testing.assert_allclose(out_image[:, :, :40][label[18:114, 7:103, :40] > 0], 0.5)  # 75 HU -> (75 + 125) / 400
    np.testing.assert_allclose(out_image[30 - 18 : 40 - 18, 30 - 7 : 40 - 7, :40], 25 / 400)  # -100 HU
    assert np.array_equal(np.argwhere(out_label).min(0), [42, 43, 10]) and out_label.sum() == label.sum()
    assert not out_image[:, :, 40:].any() and not out_label[:, :, 40:].any()
    big = np.zeros((300, 300, 300), np.uint8)
    big[100:200, 120:121, 5:6] = 1
    assert coranet_crop_box(big, big.shape) == [(75, 226), (73, 169), (0, 96)]  # margin clipped at the border


def test_coranet_resampling_takes_the_in_plane_spacing_for_every_axis():
    from common.datasets.pancreas import coranet_resample

    volume = np.zeros((50, 40, 20), np.float32)
    volume[20:30, 10:20, 5:10] = 1.0
    resampled = coranet_resample(volume, 0.8, order=0)
    assert resampled.shape == (40, 32, 16)  # z scaled by 0.8 too: the 2.5 mm slice spacing is ignored
    np.testing.assert_array_equal(np.argwhere(resampled > 0).min(0), [16, 8, 4])


def _write_dicom_series(folder, volume_xyz, spacing):
    """A DICOM series of 2D slices (TCIA layout ``<case>/<study>/<series>/1-NNN.dcm``) written with ITK."""
    import itk

    folder.mkdir(parents=True)
    image = itk.image_from_array(np.ascontiguousarray(volume_xyz.transpose(2, 1, 0)).astype(np.int16))
    image.SetSpacing([spacing, spacing, 2.5])
    writer = itk.ImageSeriesWriter[type(image), itk.Image[itk.SS, 2]].New()
    writer.SetInput(image)
    writer.SetImageIO(itk.GDCMImageIO.New())
    writer.SetFileNames([str(folder / f"1-{i + 1:03d}.dcm") for i in range(volume_xyz.shape[2])])
    writer.Update()


def test_prepare_pancreas_coranet_recipe_from_the_official_nih_layout(tmp_path):
    import json

    from common.datasets.prepare import main

    image, label = _ct_phantom()
    for number in (1, 64):  # a labeled training case and a test case of the CoraNet lists
        case = tmp_path / "Pancreas-CT" / f"PANCREAS_{number:04d}"
        _write_dicom_series(case / "1.2.3-study" / "1.2.3-series", image, spacing=1.0)
        labels = tmp_path / "TCIA_pancreas_labels-02-05-2017"
        labels.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(label, np.diag([1.0, 1.0, 2.5, 1.0])), str(labels / f"label{number:04d}.nii.gz"))
    out = tmp_path / "out"
    args = ["pancreas", "--source", str(tmp_path), "--out", str(out), "--split", "coranet", "--recipe", "coranet"]
    with pytest.warns(UserWarning, match="78 listed case"):
        assert main([*args, "--allow-missing"]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["preprocessing"] == "coranet-pancreas"
    assert [i["case"] for i in meta["training"] + meta["test"]] == ["Pancreas:PANCREAS_0001", "Pancreas:PANCREAS_0064"]
    expected_image, expected_label = _coranet_expected(image, label)
    for item in meta["training"] + meta["test"]:  # train and test cases are cropped alike
        np.testing.assert_allclose(nib.load(str(out / item["image"])).get_fdata(), expected_image, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(nib.load(str(out / item["label"])).dataobj), expected_label)


def _coranet_expected(image, label):
    from common.datasets.pancreas import coranet_volumes

    return coranet_volumes(image.astype(np.int16).astype(np.float32), label, 1.0)


def _write_h5(path, image, label):
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["image"], f["label"] = image, label


def test_pancreas_h5_coranet_lists_refuse_mcnet_files_naming_the_recipe(tmp_path):
    from common.datasets.pancreas import PancreasRecipeError, prepare_pancreas_h5

    label = np.zeros((4, 4, 4), np.uint8)
    label[1, 1, 1] = 1
    zscored = np.linspace(-1.5, 2.0, 64, dtype=np.float32).reshape(4, 4, 4)
    _write_h5(tmp_path / "mcnet" / "Pancreas_h5" / "image0001_norm.h5", zscored, label)
    with pytest.raises(PancreasRecipeError, match="image0001_norm.h5: prepared by the mcnet-pancreas recipe"):
        prepare_pancreas_h5(tmp_path / "mcnet", tmp_path / "out", allow_missing=True, split="coranet")
    with pytest.warns(UserWarning, match="not found"):  # the named switch keeps the former behaviour
        prepare_pancreas_h5(tmp_path / "mcnet", tmp_path / "any", allow_missing=True, split="coranet", recipe="any")
    _write_h5(tmp_path / "renamed" / "0001.h5", zscored, label)  # CoraNet naming, MC-Net values
    with pytest.warns(UserWarning), pytest.raises(PancreasRecipeError, match="intensities are z-scored"):
        prepare_pancreas_h5(tmp_path / "renamed", tmp_path / "out2", allow_missing=True, split="coranet")


def test_label_box_crop_transform_matches_the_preparer_and_is_idempotent():
    from common.data import LabelBoxCropd
    from common.datasets.pancreas import coranet_volumes

    image, label = _ct_phantom()
    crop = LabelBoxCropd(keys=["image", "label"])
    out = crop({"image": image[None], "label": label[None]})
    assert tuple(out["image"].shape) == (1, 96, 96, 96)
    np.testing.assert_array_equal(np.asarray(out["label"])[0], coranet_volumes(image, label, 1.0)[1])
    again = crop({"image": out["image"], "label": out["label"]})  # volumes prepared by the recipe stay as they are
    np.testing.assert_array_equal(np.asarray(again["image"]), np.asarray(out["image"]))


def _coranet_validation_transforms(tmp_path, **overrides):
    image, label = _ct_phantom(shape=(120, 110, 30))
    item = {"image": _write_nifti(tmp_path / "ct.nii.gz", image), "label": _write_nifti(tmp_path / "gt.nii.gz", label)}
    parser = ConfigParser()
    parser.read_config(config_files("coranet_pancreas", "train", *overrides.pop("configs", ())))
    parser.update({"intensity_in_hu": True, **overrides})
    return parser, parser.get_parsed_content("recipe#validate#preprocessing")(item)


def test_coranet_pancreas_scores_on_the_ground_truth_box_only_when_asked(tmp_path):
    parser, whole = _coranet_validation_transforms(tmp_path)
    assert parser.get_parsed_content("eval_crop_to_label_box") is False  # clean protocol: the whole volume
    assert tuple(whole["image"].shape) == (1, 120, 110, 30)
    _, cropped = _coranet_validation_transforms(tmp_path, eval_crop_to_label_box=True)
    assert tuple(cropped["image"].shape) == (1, 96, 96, 96)
    paper, _ = _coranet_validation_transforms(tmp_path, configs=("paper_protocol",))
    assert paper.get_parsed_content("eval_crop_to_label_box") is True
