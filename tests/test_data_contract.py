import json

import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from common.data import (
    CheckDatad,
    DatasetError,
    ForegroundZScored,
    VolumeSliceDataset,
    semi_supervised_datalists,
    split_labeled,
)
from tests.conftest import write_dataset, write_nifti


def test_missing_folder_and_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        semi_supervised_datalists(tmp_path / "nowhere", 1)
    with pytest.raises(DatasetError, match="dataset.json is missing"):
        semi_supervised_datalists(tmp_path, 1)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        semi_supervised_datalists(tmp_path, 1)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg"}, "training": []}))
    with pytest.raises(DatasetError, match="non-empty 'training'"):
        semi_supervised_datalists(tmp_path, 1)


def test_missing_files_are_all_listed(tiny_dataset):
    (tiny_dataset / "case1.nii.gz").unlink()
    (tiny_dataset / "case3_gt.nii.gz").unlink()
    with pytest.raises(DatasetError) as err:
        semi_supervised_datalists(tiny_dataset, 1)
    assert "case1.nii.gz does not exist" in str(err.value) and "case3_gt.nii.gz does not exist" in str(err.value)


def test_num_labeled_counts_patients_and_unlabeled_has_no_label(tiny_dataset):
    lists = semi_supervised_datalists(tiny_dataset, 1)
    assert [i["case"] for i in lists["labeled"]] == ["case0", "case1"]  # both frames of patient p0
    assert [i["case"] for i in lists["unlabeled"]] == ["case2", "case3"]
    assert all("label" not in item for item in lists["unlabeled"])
    assert lists["validation"] == [] and lists["test"] == []
    with pytest.raises(DatasetError, match="exceeds the 3 patients"):
        semi_supervised_datalists(tiny_dataset, 4)
    assert len(semi_supervised_datalists(tiny_dataset, -1)["labeled"]) == 4


def test_split_labeled_without_patients_counts_cases():
    items = [{"image": f"{i}.nii.gz", "label": f"{i}_gt.nii.gz"} for i in range(5)]
    labeled, unlabeled = split_labeled(items, 2)
    assert len(labeled) == 2 and len(unlabeled) == 3 and "label" in labeled[0]
    with pytest.raises(DatasetError, match="num_labeled is 0"):
        split_labeled(items, 0)


def load_checked(dataset_dir, num_classes, case="case0"):
    chain = Compose(
        [
            LoadImaged(["image", "label"], image_only=True),
            EnsureChannelFirstd(["image", "label"]),
            CheckDatad(["image", "label"], num_classes=num_classes),
        ]
    )
    return chain({"image": str(dataset_dir / f"{case}.nii.gz"), "label": str(dataset_dir / f"{case}_gt.nii.gz")})


def test_check_rejects_label_values_outside_classes(tiny_dataset):
    load_checked(tiny_dataset, num_classes=3, case="case1")  # values {0, 2} are fine with 3 classes
    with pytest.raises(RuntimeError) as err:
        load_checked(tiny_dataset, num_classes=2, case="case1")
    cause = err.value.__cause__
    assert isinstance(cause, DatasetError) and "case1_gt.nii.gz" in str(cause) and "[2]" in str(cause)


def test_check_rejects_shape_mismatch_and_nan(tmp_path):
    image = np.zeros((8, 8, 3))
    image[0, 0, 0] = np.nan
    root = write_dataset(tmp_path, {"bad": (image, np.zeros((8, 8, 3)))}, {"0": "bg", "1": "fg"})
    with pytest.raises(RuntimeError) as err:
        load_checked(root, 2, "bad")
    assert "NaN" in str(err.value.__cause__) and "bad.nii.gz" in str(err.value.__cause__)
    write_nifti(root / "bad.nii.gz", np.zeros((8, 8, 3), np.float32))
    write_nifti(root / "bad_gt.nii.gz", np.zeros((8, 7, 3), np.uint8))
    with pytest.raises(RuntimeError) as err:
        load_checked(root, 2, "bad")
    assert "label shape (8, 7, 3) differs from the image shape (8, 8, 3)" in str(err.value.__cause__)


def test_volume_slice_dataset_enumerates_every_slice(tiny_dataset):
    lists = semi_supervised_datalists(tiny_dataset, -1)
    keys = ["image", "label"]
    chain = Compose(
        [LoadImaged(keys, image_only=True, allow_missing_keys=True), EnsureChannelFirstd(keys, allow_missing_keys=True)]
    )
    dataset = VolumeSliceDataset(lists["labeled"], chain)
    assert len(dataset) == 4 * 3
    sample = dataset[4]  # second volume, first slice
    assert sample["image"].shape == (1, 8, 8) and sample["label"].shape == (1, 8, 8)
    assert isinstance(sample["image"], torch.Tensor) and sample["label"].max() == 2
    unlabeled = VolumeSliceDataset(semi_supervised_datalists(tiny_dataset, 1)["unlabeled"], chain, keys=["image"])
    assert set(unlabeled[0]) == {"image"}


def test_foreground_zscore_hand_values_and_refusals():
    from monai.data import MetaTensor

    image = MetaTensor(torch.tensor([[[0.0, 1.0, 3.0], [0.0, 2.0, 0.0]]]), meta={"filename_or_obj": "flair.nii.gz"})
    out = ForegroundZScored("image")({"image": image})["image"]
    # foreground 1, 2, 3: mean 2, population std sqrt(2/3); the background (0) becomes -2 / sqrt(2/3)
    std = (2.0 / 3.0) ** 0.5
    expected = torch.tensor([[[-2.0 / std, -1.0 / std, 1.0 / std], [-2.0 / std, 0.0, -2.0 / std]]])
    assert torch.allclose(out.as_tensor(), expected, atol=1e-6)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "flair.nii.gz"
    empty = MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "blank.nii.gz"})
    with pytest.raises(DatasetError, match=r"blank\.nii\.gz: no voxel above 0"):
        ForegroundZScored("image")({"image": empty})
    flat = MetaTensor(torch.tensor([[[0.0, 5.0], [5.0, 0.0]]]), meta={"filename_or_obj": "flat.nii.gz"})
    with pytest.raises(DatasetError, match=r"flat\.nii\.gz: .*constant"):
        ForegroundZScored("image")({"image": flat})


def test_num_classes_that_differs_from_the_labels_is_refused_with_both_numbers(tiny_dataset):
    from common.data import inference_datalist

    with pytest.raises(DatasetError, match="num_classes is 4 but the dataset's 'labels' name 3 classes"):
        semi_supervised_datalists(tiny_dataset, 1, num_classes=4)
    with pytest.raises(DatasetError, match="num_classes is 2 but the dataset's 'labels' name 3 classes"):
        inference_datalist(tiny_dataset, section="training", num_classes=2)
    assert len(semi_supervised_datalists(tiny_dataset, 1, num_classes=3)["labeled"]) == 2
    assert len(inference_datalist(tiny_dataset, section="training", num_classes=3)) == 4


@pytest.mark.parametrize("configs, entry", [(("train",), "datalists"), (("inference",), "datalist")])
def test_bundles_refuse_a_dataset_of_another_class_count_before_training_and_inference(tiny_dataset, configs, entry):
    from monai.bundle import ConfigParser

    from tests.bundle_utils import config_files

    parser = ConfigParser()
    parser.read_config(config_files("supervised_la", *configs))  # a 2-class bundle on a 3-class folder
    parser.update({"dataset_dir": str(tiny_dataset), "datalist_file": None})
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the error of the component it instantiates
        parser.get_parsed_content(entry)
    assert isinstance(err.value.__cause__, DatasetError)
    assert "num_classes is 2 but the dataset's 'labels' name 3 classes" in str(err.value.__cause__)
