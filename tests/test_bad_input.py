"""Bad input is refused before training, with the file and the problem named; the checker lists all problems."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from common.data.check import check_dataset, main
from tests.bundle_utils import make_workflow
from tests.conftest import REPO_ROOT, write_dataset, write_nifti

SHAPE = (20, 24, 18)
SIZES_2D = {"spatial_size": [32, 32]}
SIZES_3D = {"patch_size": [16, 16, 16], "sw_stride": [8, 8, 8]}


def good_cases(n: int = 4, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(n):
        label = np.zeros(SHAPE)
        label[4:12, 6:14, 4:10] = 1
        cases[f"case{i}"] = (rng.normal(size=SHAPE) + 2.0 * label, label)
    return cases


def dataset(root: Path) -> Path:
    return write_dataset(root, good_cases(), {"0": "background", "1": "target"}, validation=[], test=[])


def error_text(error: BaseException) -> str:
    """Messages of an exception and of every exception it was raised from (the bundle wraps the cause)."""
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def edit_json(root: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    change(meta)
    (root / "dataset.json").write_text(json.dumps(meta))


# ---- the defects, each applied to a good dataset folder; returns the expected message ---------------------------


def corrupt_nifti(root: Path) -> str:
    (root / "case1.nii.gz").write_bytes(b"this is not a NIfTI file")
    return f"File {root / 'case1.nii.gz'} is not a gzip file"


def shape_mismatch(root: Path) -> str:
    write_nifti(root / "case0_gt.nii.gz", np.zeros((20, 24, 17), np.uint8))
    return f"{root / 'case0_gt.nii.gz'}: label shape (20, 24, 17) differs from the image shape (20, 24, 18)"


def affine_mismatch(root: Path) -> str:
    label = nib.load(str(root / "case0_gt.nii.gz")).get_fdata().astype(np.uint8)
    write_nifti(root / "case0_gt.nii.gz", label, spacing=(1.0, 1.0, 2.5))
    return f"{root / 'case0_gt.nii.gz'}: label affine differs from the affine of {root / 'case0.nii.gz'}"


def label_out_of_range(root: Path) -> str:
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0] = 7
    write_nifti(root / "case1_gt.nii.gz", label)
    return f"{root / 'case1_gt.nii.gz'}: label values [7] are outside the classes 0..1"


def nan_intensities(root: Path) -> str:
    image = np.ones(SHAPE, np.float32)
    image[3, 3, 3] = np.nan
    write_nifti(root / "case0.nii.gz", image)
    return f"{root / 'case0.nii.gz'}: image contains NaN or infinite intensities"


def two_channels(root: Path) -> str:
    write_nifti(root / "case0.nii.gz", np.ones((*SHAPE, 2), np.float32))
    return f"{root / 'case0.nii.gz'}: image has 2 channel(s), the network takes 1"


def listed_file_missing(root: Path) -> str:
    (root / "case1_gt.nii.gz").unlink()
    return f"training[1] label file {root / 'case1_gt.nii.gz'} does not exist"


def dataset_json_missing(root: Path) -> str:
    (root / "dataset.json").unlink()
    return f"{root / 'dataset.json'} is missing"


DEFECTS = [
    corrupt_nifti,
    shape_mismatch,
    affine_mismatch,
    label_out_of_range,
    nan_intensities,
    two_channels,
    listed_file_missing,
    dataset_json_missing,
]


def run_bundle(name: str, root: Path, tmp_path: Path, **overrides) -> ConfigWorkflow:
    sizes = SIZES_2D if name.endswith("_acdc") else SIZES_3D
    settings = {"num_classes": 2, "num_labeled": 2, "max_iterations": 2, "val_interval": 2, **sizes, **overrides}
    workflow = make_workflow(
        name, dataset_dir=str(root), ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"), **settings
    )
    workflow.run()
    return workflow


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", ["mean_teacher_la", "mean_teacher_acdc"])
def test_bundle_refuses_bad_input_before_training(name, defect, tmp_path):
    root = dataset(tmp_path / "data")
    expected = defect(root)
    with pytest.raises(Exception) as caught:
        run_bundle(name, root, tmp_path)
    assert expected in error_text(caught.value)
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir()), "a checkpoint was written"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"num_labeled": 0}, "num_labeled is 0: a run needs at least one labeled case"),
        ({"num_labeled": 9}, "num_labeled=9 exceeds the 4 cases of the training list"),
        ({"num_labeled": 4}, "num_labeled=4 leaves no unlabeled images for a semi-supervised method"),
    ],
)
def test_bundle_refuses_bad_labeled_budget(overrides, expected, tmp_path):
    root = dataset(tmp_path / "data")
    with pytest.raises(Exception) as caught:
        run_bundle("mean_teacher_la", root, tmp_path, **overrides)
    assert expected in error_text(caught.value)


@pytest.mark.parametrize("name", ["mean_teacher_acdc", "cps_la"])
def test_allow_supervised_only_trains_a_semi_supervised_bundle_on_labeled_cases_only(name, tmp_path, capsys):
    # MONAI Label hands a bundle labeled studies only (api.md 5); the switch is off by default (refusal above)
    root = dataset(tmp_path / "data")
    workflow = run_bundle(name, root, tmp_path, num_labeled=4, allow_supervised_only=True)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert trainer.unlabeled_data_loader is None and trainer.state.iteration == 2
    assert "trains its supervised part only" in capsys.readouterr().out  # the bundle's logging.conf: stdout
    assert (tmp_path / "models" / "model.pt").is_file()


def test_supervised_bundle_trains_with_every_case_labeled(tmp_path):
    root = dataset(tmp_path / "data")
    run_bundle("supervised_la", root, tmp_path, num_labeled=4)
    assert (tmp_path / "models" / "model.pt").is_file()


def test_cli_exits_nonzero_naming_a_corrupt_file(tmp_path):
    root = dataset(tmp_path / "data")
    expected = corrupt_nifti(root)
    bundle = REPO_ROOT / "bundles" / "supervised_la" / "configs"
    configs = f"['{bundle / 'train.json'}','{bundle / 'demo.json'}']"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(root)]
    command += ["--num_labeled", "2", "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert expected in result.stderr
    assert not (tmp_path / "models").exists()


# ---- the checker ---------------------------------------------------------------------------------------------


def test_checker_passes_a_good_folder(tmp_path, capsys):
    root = dataset(tmp_path / "data")
    assert check_dataset(root, num_classes=2, num_labeled=2, channels=1) == []
    assert main([str(root), "--num-classes", "2"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_checker_reports_every_problem_at_once(tmp_path):
    root = dataset(tmp_path / "data")
    defects = [corrupt_nifti, shape_mismatch, label_out_of_range, two_channels]
    expected = [defect(root) for defect in defects]
    edit_json(root, lambda meta: meta["training"].append({"image": "case9.nii.gz", "label": "case9_gt.nii.gz"}))
    problems = check_dataset(root, num_classes=2, num_labeled=9, channels=1)
    text = "\n".join(problems)
    for message in expected:
        assert message in text
    assert f"{root / 'case9.nii.gz'}: training[4] image file does not exist" in text
    assert f"{root / 'case9_gt.nii.gz'}: training[4] label file does not exist" in text
    assert "num_labeled=9 exceeds the 5 cases of the training list" in text
    assert len(problems) == 7, problems


def test_checker_reports_affine_nan_and_class_count(tmp_path):
    root = dataset(tmp_path / "data")
    expected = [affine_mismatch(root), nan_intensities(root)]
    text = "\n".join(check_dataset(root, num_classes=3))
    assert expected[0] in text and expected[1] in text
    assert "'labels' names 2 classes, not 3" in text


def test_checker_command_exits_1_and_names_the_folder(tmp_path):
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        [sys.executable, "-m", "common.data.check", str(missing), "--num-classes", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"Dataset folder {missing} does not exist" in result.stderr
