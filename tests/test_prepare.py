"""Prepare commands on tiny fake downloads: list order, ED/ES frame mapping, axes, spacing, missing cases."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from common.data.prepare import (
    PREPARERS,
    SPLITS_DIR,
    MissingCasesError,
    main,
    prepare_acdc,
    prepare_acdc_h5,
    prepare_la_h5,
    read_split,
)

ACDC_TRAIN = read_split("acdc/train.list")
ACDC_VAL = read_split("acdc/val.list")
ACDC_TEST = read_split("acdc/test.list")
LA_TRAIN = read_split("la/train.list")
LA_TEST = read_split("la/test.list")


def _meta(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def _cases(meta: dict, split: str) -> list[str]:
    return [item["case"] for item in meta[split]]


def _save(path: Path, data: np.ndarray, spacing=(1.4, 1.4, 10.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))


def _fake_acdc_patient(root: Path, patient: str, frames: tuple[int, int], shape=(12, 10, 4)) -> None:
    """Official layout: 4D file, Info.cfg and two annotated frames whose image is filled with the frame number."""
    folder = root / patient
    _save(folder / f"{patient}_4d.nii.gz", np.zeros((*shape, 3), dtype=np.int16))
    (folder / "Info.cfg").write_text(f"ED: {frames[0]}\nES: {frames[1]}\n")
    for frame in frames:
        _save(folder / f"{patient}_frame{frame:02d}.nii.gz", np.full(shape, frame, dtype=np.int16))
        label = np.zeros(shape, dtype=np.uint8)
        label[2:5, 2:5], label[6:8, 6:8], label[9:, 8:] = 1, 2, 3
        _save(folder / f"{patient}_frame{frame:02d}_gt.nii.gz", label)


@pytest.fixture(scope="module")
def acdc_source(tmp_path_factory) -> Path:
    """Release-like tree (training/ and testing/ sub-folders) with 4 patients from the SSL4MIS lists."""
    root = tmp_path_factory.mktemp("acdc_release")
    _fake_acdc_patient(root / "training", "patient038", (1, 10))  # 2nd patient of train.list
    _fake_acdc_patient(root / "training", "patient099", (1, 12))  # 1st patient of train.list
    _fake_acdc_patient(root / "training", "patient028", (1, 9))  # val.list
    _fake_acdc_patient(root / "testing", "patient011", (2, 14))  # test.list, ED not frame 1
    return root


def test_split_lists_are_shipped():
    assert (SPLITS_DIR / "README.md").is_file()
    assert [len(ACDC_TRAIN), len(ACDC_VAL), len(ACDC_TEST), len(LA_TRAIN), len(LA_TEST)] == [140, 20, 40, 80, 20]
    assert ACDC_TRAIN[:3] == ["patient099_frame01", "patient099_frame02", "patient038_frame01"]
    assert LA_TRAIN[0] == "06SR5RBREL16DQ6M8LWS"
    for folder in ("brats2019", "isles2022", "pancreas_coranet", "pancreas_dycon_mcf", "pancreas_mcnet"):
        assert any((SPLITS_DIR / folder).iterdir())


def test_acdc_order_and_frame_mapping(acdc_source, tmp_path):
    out = tmp_path / "acdc"
    with pytest.warns(UserWarning, match="not found"):
        assert main(["acdc", "--source", str(acdc_source), "--out", str(out), "--allow-missing"]) == 0
    meta = _meta(out)
    assert _cases(meta, "training") == [
        "patient099_frame01",
        "patient099_frame02",
        "patient038_frame01",
        "patient038_frame02",
    ]
    assert _cases(meta, "validation") == ["patient028_frame01", "patient028_frame02"]
    assert _cases(meta, "test") == ["patient011_frame01", "patient011_frame02"]
    assert meta["training"][1] == {
        "image": "patient099/patient099_frame02.nii.gz",
        "label": "patient099/patient099_frame02_gt.nii.gz",
        "case": "patient099_frame02",
        "patient": "ACDC:patient099",
    }
    assert meta["source_frames"]["patient099_frame02"] == "patient099_frame12"
    assert meta["source_frames"]["patient011_frame01"] == "patient011_frame02"
    assert meta["dims"] == 2 and meta["preprocessing"] == "ssl4mis-acdc" and "SSL4MIS" in meta["source_split"]
    for case, frame in [("patient099_frame01", 1), ("patient099_frame02", 12), ("patient011_frame02", 14)]:
        image = nib.load(str(out / case.split("_")[0] / f"{case}.nii.gz"))
        assert image.get_data_dtype() == np.float32 and np.all(image.get_fdata() == frame)
        np.testing.assert_allclose(image.header.get_zooms(), (1.4, 1.4, 10.0), rtol=1e-6)
    label = nib.load(str(out / "patient099" / "patient099_frame02_gt.nii.gz"))
    assert label.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(label.dataobj))) == {0, 1, 2, 3}


def test_missing_cases_are_listed_in_one_error(acdc_source, tmp_path, capsys):
    with pytest.raises(MissingCasesError) as info:
        prepare_acdc(acdc_source, tmp_path / "out")
    message = str(info.value)
    missing = (set(ACDC_TRAIN) | set(ACDC_VAL) | set(ACDC_TEST)) - {
        f"{p}_frame0{f}" for p in ("patient099", "patient038", "patient028", "patient011") for f in (1, 2)
    }
    assert len(missing) == 192 and all(case in message for case in missing)
    assert str(acdc_source) in message and "192" in message and "--allow-missing" in message
    assert "patient099_frame01" not in message
    assert not (tmp_path / "out" / "dataset.json").exists()
    assert main(["acdc", "--source", str(acdc_source), "--out", str(tmp_path / "out")]) == 2
    assert "patient100_frame01" in capsys.readouterr().err


def test_missing_source_folder_is_named(tmp_path, capsys):
    absent = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_la_h5(absent, tmp_path / "out")
    assert main(["acdc_h5", "--source", str(absent), "--out", str(tmp_path / "out")]) == 2
    assert str(absent) in capsys.readouterr().err


def test_wrong_folder_with_allow_missing_still_fails(tmp_path):
    with pytest.warns(UserWarning), pytest.raises(MissingCasesError, match="no training case"):
        prepare_acdc_h5(tmp_path, tmp_path / "out", allow_missing=True)


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)


def test_acdc_h5_transposes_to_xyz(tmp_path):
    data = tmp_path / "ACDC" / "data"
    rng = np.random.default_rng(0)
    zyx = (3, 5, 7)
    arrays = {}
    for case in ["patient038_frame01", "patient099_frame02", "patient099_frame01", ACDC_TEST[0]]:
        arrays[case] = rng.random(zyx).astype(np.float32), rng.integers(0, 4, zyx).astype(np.uint8)
        _write_h5(data / f"{case}.h5", *arrays[case])
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="not found"):
        prepare_acdc_h5(tmp_path / "ACDC", out, allow_missing=True)  # the data/ sub-folder is found
    meta = _meta(out)
    assert _cases(meta, "training") == ["patient099_frame01", "patient099_frame02", "patient038_frame01"]
    assert meta["validation"] == [] and _cases(meta, "test") == [ACDC_TEST[0]]
    assert "unit spacing" in meta["description"].lower()
    image, label = arrays["patient099_frame02"]
    loaded = nib.load(str(out / meta["training"][1]["image"]))
    assert loaded.shape == (7, 5, 3)
    np.testing.assert_array_equal(loaded.get_fdata(), image.transpose(2, 1, 0))
    np.testing.assert_allclose(loaded.header.get_zooms(), (1.0, 1.0, 1.0))
    gt = nib.load(str(out / meta["training"][1]["label"]))
    assert gt.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(gt.dataobj)[4, 2, 1], label[1, 2, 4])


def test_la_h5_order_spacing_and_ids(tmp_path):
    training_set = tmp_path / "data" / "2018LA_Seg_Training Set"
    rng = np.random.default_rng(1)
    xyz = (9, 8, 6)
    ids = [LA_TRAIN[2], LA_TRAIN[0], LA_TEST[1]]  # created out of list order
    for case in ids:
        label = (rng.random(xyz) > 0.7).astype(np.uint8)
        _write_h5(training_set / case / "mri_norm2.h5", rng.normal(size=xyz).astype(np.float32), label)
    out = tmp_path / "la"
    with pytest.warns(UserWarning, match="97 listed case"):
        prepare_la_h5(tmp_path / "data", out, allow_missing=True)  # parent of the training-set folder
    meta = _meta(out)
    assert _cases(meta, "training") == [f"LA:{LA_TRAIN[0]}", f"LA:{LA_TRAIN[2]}"]
    assert _cases(meta, "test") == [f"LA:{LA_TEST[1]}"] and meta["validation"] == []
    assert meta["dims"] == 3 and meta["preprocessing"] == "uamt-la-h5"
    assert meta["training"][0]["image"] == f"images/{LA_TRAIN[0]}.nii.gz"
    with h5py.File(training_set / LA_TRAIN[0] / "mri_norm2.h5") as f:
        image = f["image"][()]
    loaded = nib.load(str(out / meta["training"][0]["image"]))
    np.testing.assert_array_equal(loaded.get_fdata(), image)  # already (x, y, z): no transposition
    np.testing.assert_allclose(loaded.header.get_zooms(), (0.625, 0.625, 0.625))
    np.testing.assert_allclose(np.diag(loaded.affine)[:3], (0.625, 0.625, 0.625))


def test_invalid_label_values_are_rejected(tmp_path):
    source = tmp_path / "set"
    _write_h5(source / LA_TRAIN[0] / "mri_norm2.h5", np.zeros((4, 4, 4), np.float32), np.full((4, 4, 4), 255, np.uint8))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="255"):
        prepare_la_h5(source, tmp_path / "out", allow_missing=True)


def test_registry_names_the_cli_commands():
    assert {"acdc", "acdc_h5", "la_h5"} <= set(PREPARERS)
    with pytest.raises(SystemExit):
        main(["acdc"])  # --source and --out are required
