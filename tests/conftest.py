"""Shared fixtures: tiny NIfTI dataset folders written to disk in the real contract format."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def write_dataset(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], labels: dict, patients=None, **extra):
    """Write a dataset folder with every case in ``training``; ``extra`` adds top-level keys."""
    training = []
    for case, (image, label) in cases.items():
        write_nifti(root / f"{case}.nii.gz", image.astype(np.float32))
        write_nifti(root / f"{case}_gt.nii.gz", label.astype(np.uint8))
        item = {"image": f"{case}.nii.gz", "label": f"{case}_gt.nii.gz", "case": case}
        if patients:
            item["patient"] = patients[case]
        training.append(item)
    meta = {"name": "tiny", "labels": labels, "training": training, **extra}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


@pytest.fixture
def tiny_dataset(tmp_path):
    rng = np.random.default_rng(0)
    cases = {}
    for i in range(4):
        image = rng.normal(size=(8, 8, 3))
        label = np.zeros((8, 8, 3))
        label[2:6, 2:6, :] = 1 + (i % 2)
        cases[f"case{i}"] = (image, label)
    patients = {"case0": "p0", "case1": "p0", "case2": "p1", "case3": "p2"}
    return write_dataset(tmp_path / "data", cases, {"0": "background", "1": "a", "2": "b"}, patients=patients)


@pytest.fixture(scope="session")
def phantom_datasets(tmp_path_factory):
    """Small phantom dataset folders, one per flavour, written once per test session."""
    from common.datasets.phantoms import make_phantom_dataset

    root = tmp_path_factory.mktemp("phantoms")
    return {
        "acdc": make_phantom_dataset(root / "acdc", "acdc", num_train=4, num_val=1, num_test=1, seed=1, shape=(40, 40)),
        "la": make_phantom_dataset(root / "la", "la", num_train=4, num_val=0, num_test=1, seed=1, shape=(40, 40, 32)),
        "pancreas": make_phantom_dataset(
            root / "pancreas", "pancreas", num_train=4, num_val=0, num_test=1, seed=1, shape=(40, 40, 32)
        ),
        "brats": make_phantom_dataset(
            root / "brats", "brats", num_train=4, num_val=1, num_test=1, seed=1, shape=(40, 40, 32)
        ),
        "isles": make_phantom_dataset(
            root / "isles", "isles", num_train=4, num_val=1, num_test=1, seed=1, shape=(40, 40, 32)
        ),
        "abdomenct1k": make_phantom_dataset(
            root / "abdomenct1k", "abdomenct1k", num_train=4, num_val=0, num_test=1, seed=1, shape=(40, 40, 20)
        ),
        "york": make_phantom_dataset(root / "york", "york", num_train=4, num_val=1, num_test=1, seed=1, shape=(40, 40)),
    }
