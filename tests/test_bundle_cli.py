"""The design-card command line, bad dataset folders, and any dataset folder that follows the contract."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.bundle_utils import config_files, make_workflow
from tests.conftest import REPO_ROOT, write_dataset


def run_cli(name: str, *args: str) -> subprocess.CompletedProcess:
    configs = "[" + ",".join(f"'{c}'" for c in config_files(name, "train", "demo")) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "name, size_args",
    [
        ("mean_teacher_acdc", ["--spatial_size", "[32,32]"]),
        ("mean_teacher_la", ["--patch_size", "[32,32,32]", "--sw_stride", "[16,16,16]"]),
    ],
)
def test_cli_demo_trains_and_logs_components(name, size_args, phantom_datasets, tmp_path):
    flavour = "acdc" if name.endswith("acdc") else "la"
    result = run_cli(
        name,
        "--dataset_dir", str(phantom_datasets[flavour]),
        "--max_iterations", "4", "--val_interval", "2", "--log_interval", "1",
        "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"),
        *size_args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    for component in ("loss_sup", "loss_cons", "cons_weight"):
        assert component in log
    assert (tmp_path / "models" / "model.pt").is_file()
    assert list((tmp_path / "eval" / "tensorboard").iterdir()), "no TensorBoard events"


def test_cli_missing_dataset_folder_fails_naming_it(tmp_path):
    missing = tmp_path / "no_such_dataset"
    result = run_cli("supervised_acdc", "--dataset_dir", str(missing), "--ckpt_dir", str(tmp_path / "m"))
    assert result.returncode != 0
    assert f"Dataset folder {missing} does not exist" in result.stderr
    assert not (tmp_path / "m").exists()


def three_class_cases(shape, n=4, seed=0):
    rng = np.random.default_rng(seed)
    cases = {}
    for i in range(n):
        image = rng.normal(size=shape).astype(np.float32)
        label = np.zeros(shape)
        label[2:8, 2:8] = 1
        label[10:14, 4:12] = 2
        image[label == 1] += 2.0
        image[label == 2] -= 2.0
        cases[f"case{i}"] = (image, label)
    return cases


@pytest.mark.parametrize(
    "name, shape, sizes",
    [
        ("mean_teacher_acdc", (24, 20, 5), {"spatial_size": [32, 32]}),
        ("mean_teacher_la", (20, 24, 18), {"patch_size": [16, 16, 16], "sw_stride": [8, 8, 8]}),
    ],
)
def test_demo_trains_on_any_contract_folder(name, shape, sizes, tmp_path):
    labels = {"0": "background", "1": "bright", "2": "dark"}
    root = write_dataset(tmp_path / "data", three_class_cases(shape), labels, validation=[], test=[])
    workflow = make_workflow(
        name,
        dataset_dir=str(root),
        num_classes=3,
        num_labeled=2,
        max_iterations=3,
        val_interval=3,
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
        **sizes,
    )
    workflow.run()
    workflow.finalize()
    weights = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    out_conv = [v for k, v in weights.items() if k.endswith("weight")][-1]
    assert out_conv.shape[0] == 3  # the head follows --num_classes
