"""Prepare commands on tiny fake downloads: list order, ED/ES frame mapping, axes, spacing, label mapping,
naming schemes, missing cases."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from common.datasets.abdomenct1k import abdomenct1k_case_choice, prepare_abdomenct1k
from common.datasets.acdc import prepare_acdc, prepare_acdc_h5
from common.datasets.brats import prepare_brats, prepare_brats_h5
from common.datasets.isles import prepare_isles
from common.datasets.la import prepare_la_h5
from common.datasets.pancreas import (
    DicomSourceError,
    pancreas_case_number,
    pancreas_splits,
    prepare_pancreas,
    prepare_pancreas_h5,
)
from common.datasets.prepare import PREPARERS, build_parser, main
from common.datasets.preparer import SPLITS_DIR, MissingCasesError, read_split
from common.datasets.york import ENDOCARDIUM_POINTS, york_subject_split

ACDC_TRAIN = read_split("acdc/train.list")
ACDC_VAL = read_split("acdc/val.list")
ACDC_TEST = read_split("acdc/test.list")
LA_TRAIN = read_split("la/train.list")
LA_TEST = read_split("la/test.list")
BRATS_TRAIN = read_split("brats2019/train.txt")
BRATS_VAL = read_split("brats2019/val.txt")
BRATS_TEST = read_split("brats2019/test.txt")
ISLES_TRAIN = read_split("isles2022/train.list")
ISLES_VAL = read_split("isles2022/val.list")
ISLES_TEST = read_split("isles2022/test.list")


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
    expected = {"acdc", "acdc_h5", "la_h5", "brats_h5", "brats", "pancreas_h5", "pancreas", "isles"}
    assert expected | {"abdomenct1k", "york"} <= set(PREPARERS)
    with pytest.raises(SystemExit):
        main(["acdc"])  # --source and --out are required


def test_new_split_lists_have_the_protocol_sizes():
    assert [len(BRATS_TRAIN), len(BRATS_VAL), len(BRATS_TEST)] == [250, 25, 60]
    assert BRATS_TRAIN[0] == "BraTS19_TCIA02_370_1"
    assert [len(ISLES_TRAIN), len(ISLES_VAL), len(ISLES_TEST)] == [200, 25, 25]
    sizes = {name: [len(v) for v in pancreas_splits(name).values()] for name in ("mcnet", "dycon_mcf", "coranet")}
    assert sizes == {"mcnet": [62, 20], "dycon_mcf": [62, 20], "coranet": [62, 18]}


# ------------------------------------------------------------------------------------------------
# BraTS 2019
# ------------------------------------------------------------------------------------------------


def test_brats_h5_order_transposition_and_spacing(tmp_path):
    data = tmp_path / "BraTS2019" / "data"
    rng = np.random.default_rng(2)
    zyx = (4, 5, 6)
    arrays = {}
    for case in [BRATS_TRAIN[3], BRATS_TRAIN[0], BRATS_VAL[1], BRATS_TEST[0]]:  # written out of list order
        arrays[case] = rng.normal(size=zyx).astype(np.float32), (rng.random(zyx) > 0.6).astype(np.uint8)
        _write_h5(data / f"{case}.h5", *arrays[case])
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="331 listed case"):
        prepare_brats_h5(tmp_path / "BraTS2019", out, allow_missing=True)  # the data/ sub-folder is found
    meta = _meta(out)
    assert _cases(meta, "training") == [f"BraTS:{BRATS_TRAIN[0]}", f"BraTS:{BRATS_TRAIN[3]}"]
    assert _cases(meta, "validation") == [f"BraTS:{BRATS_VAL[1]}"] and _cases(meta, "test") == [
        f"BraTS:{BRATS_TEST[0]}"
    ]
    assert meta["labels"] == {"0": "background", "1": "whole tumour"} and meta["modality"] == {"0": "MRI"}
    assert meta["preprocessing"] == "ssl4mis-brats" and "SSL4MIS" in meta["source_split"] and meta["dims"] == 3
    assert meta["training"][0] == {
        "image": f"images/{BRATS_TRAIN[0]}.nii.gz",
        "label": f"labels/{BRATS_TRAIN[0]}.nii.gz",
        "case": f"BraTS:{BRATS_TRAIN[0]}",
    }
    image, label = arrays[BRATS_TRAIN[0]]
    loaded = nib.load(str(out / meta["training"][0]["image"]))
    assert loaded.shape == (6, 5, 4)  # (z, y, x) -> (x, y, z)
    np.testing.assert_array_equal(loaded.get_fdata()[5, 1, 2], image[2, 1, 5])
    np.testing.assert_array_equal(loaded.get_fdata(), image.transpose(2, 1, 0))
    np.testing.assert_allclose(loaded.header.get_zooms(), (1.0, 1.0, 1.0))
    gt = nib.load(str(out / meta["training"][0]["label"]))
    assert gt.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(gt.dataobj), label.transpose(2, 1, 0))


def test_brats_h5_missing_cases_error_names_them(tmp_path):
    _write_h5(tmp_path / f"{BRATS_TRAIN[0]}.h5", np.zeros((2, 2, 2), np.float32), np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(MissingCasesError) as info:
        prepare_brats_h5(tmp_path, tmp_path / "out")
    message = str(info.value)
    assert "334 listed case" in message and BRATS_TEST[-1] in message and BRATS_VAL[0] in message
    assert not (tmp_path / "out" / "dataset.json").exists()


def _fake_brats_case(root: Path, case: str, seg: np.ndarray, affine: np.ndarray, with_seg: bool = True) -> None:
    """Official release layout: five modalities + seg; the FLAIR is filled with 7, the T1 with 1."""
    folder = root / case
    folder.mkdir(parents=True)
    for modality, value in (("flair", 7), ("t1", 1), ("t1ce", 2), ("t2", 3)):
        nib.save(
            nib.Nifti1Image(np.full(seg.shape, value, np.int16), affine), str(folder / f"{case}_{modality}.nii.gz")
        )
    if with_seg:
        nib.save(nib.Nifti1Image(seg, affine), str(folder / f"{case}_seg.nii.gz"))


def test_brats_official_release_whole_tumour_and_geometry(tmp_path):
    release = tmp_path / "MICCAI_BraTS_2019_Data_Training"
    affine = np.array([[-1.0, 0, 0, 239], [0, -1.0, 0, 239], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    seg = np.zeros((6, 5, 4), np.uint8)
    seg[1, 1, 1], seg[2, 2, 2], seg[3, 3, 3] = 1, 2, 4  # necrotic core, oedema, enhancing tumour
    _fake_brats_case(release / "HGG", BRATS_TRAIN[1], seg, affine)
    _fake_brats_case(release / "LGG", BRATS_TRAIN[0], seg, affine)
    _fake_brats_case(release / "HGG", BRATS_TEST[2], seg, affine)
    _fake_brats_case(release / "LGG", BRATS_VAL[0], seg, affine, with_seg=False)  # incomplete: counts as missing
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=BRATS_VAL[0]):
        assert main(["brats", "--source", str(tmp_path), "--out", str(out), "--allow-missing"]) == 0
    meta = _meta(out)
    assert _cases(meta, "training") == [f"BraTS:{BRATS_TRAIN[0]}", f"BraTS:{BRATS_TRAIN[1]}"]
    assert meta["validation"] == [] and _cases(meta, "test") == [f"BraTS:{BRATS_TEST[2]}"]
    assert meta["preprocessing"] == "brats-raw-flair"
    image = nib.load(str(out / meta["training"][0]["image"]))
    assert np.all(image.get_fdata() == 7)  # the FLAIR file, no other modality
    np.testing.assert_allclose(image.affine, affine)  # original geometry kept
    label = np.asarray(nib.load(str(out / meta["training"][0]["label"])).dataobj)
    np.testing.assert_array_equal(label, (seg > 0).astype(np.uint8))  # {1, 2, 4} -> 1
    assert label.sum() == 3


# ------------------------------------------------------------------------------------------------
# Pancreas-CT
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, number",
    [("image0057", 57), ("PANCREAS_0001.h5", 1), ("0013.h5", 13), ("image0082_norm.h5", 82), ("label0070.nii.gz", 70)],
)
def test_pancreas_case_number_maps_every_scheme(name, number):
    assert pancreas_case_number(name) == number


def test_pancreas_case_number_rejects_other_names():
    with pytest.raises(ValueError, match="not a Pancreas-CT case"):
        pancreas_case_number("BraTS19_TCIA02_370_1")


def test_pancreas_split_families_keep_list_order():
    mcnet = pancreas_splits("mcnet")
    assert mcnet["training"][:3] == [57, 18, 62]  # image0057, image0018, image0062 (shuffled MC-Net order)
    dycon = pancreas_splits("dycon_mcf")
    assert dycon["training"] == list(range(1, 63)) and dycon["test"] == list(range(63, 83))
    coranet = pancreas_splits("coranet")
    assert coranet["training"][:12] == list(range(1, 13)) and coranet["training"][12] == 13  # labeled list first
    assert 25 not in coranet["training"] and 70 not in coranet["test"]  # the 80-scan variant
    assert set(mcnet["training"]) != set(dycon["training"])  # a different 62/20 partition
    with pytest.raises(ValueError, match="unknown Pancreas split"):
        pancreas_splits("mcf")


def _pancreas_volume(number: int, shape=(5, 4, 3)) -> tuple[np.ndarray, np.ndarray]:
    """Image filled with the case number (to check the mapping) and a label with one voxel per case number."""
    label = np.zeros(shape, np.float32)  # MC-Net stores its labels as float32
    label.flat[number % label.size] = 1
    return np.full(shape, float(number), np.float32), label


@pytest.mark.parametrize(
    "split, pattern, folder, first_two, preprocessing",
    [
        ("mcnet", "image{n}_norm.h5", "Pancreas_h5", [57, 18], "mcnet-pancreas"),
        ("dycon_mcf", "PANCREAS_{n}.h5", "Pancreas_data", [1, 2], "dycon-mcf-pancreas-h5"),
        ("coranet", "{n}.h5", "pancreas_pad25", [1, 2], "coranet-pancreas"),
        ("dycon_mcf", "image{n}_norm.h5", "Pancreas_h5", [1, 2], "mcnet-pancreas"),  # MC-Net files, DyCON lists
    ],
)
def test_pancreas_h5_split_families_and_naming(tmp_path, split, pattern, folder, first_two, preprocessing):
    numbers = pancreas_splits(split)
    wanted = [numbers["training"][1], numbers["training"][0], numbers["test"][0]]  # written out of order
    for number in wanted:
        _write_h5(tmp_path / folder / pattern.format(n=f"{number:04d}"), *_pancreas_volume(number))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="not found"):
        assert (
            main(["pancreas_h5", "--source", str(tmp_path), "--out", str(out), "--split", split, "--allow-missing"])
            == 0
        )
    meta = _meta(out)
    assert _cases(meta, "training") == [f"Pancreas:PANCREAS_{n:04d}" for n in first_two]
    assert _cases(meta, "test") == [f"Pancreas:PANCREAS_{numbers['test'][0]:04d}"] and meta["validation"] == []
    assert meta["preprocessing"] == preprocessing and meta["split_family"] == split
    assert meta["labels"] == {"0": "background", "1": "pancreas"} and meta["modality"] == {"0": "CT"}
    assert "imageNNNN" in meta["case_mapping"] and "PANCREAS_NNNN" in meta["case_mapping"]
    for item in meta["training"] + meta["test"]:
        number = int(item["case"][-4:])
        image = nib.load(str(out / item["image"]))
        assert image.shape == (5, 4, 3) and np.all(image.get_fdata() == number)  # (x, y, z) kept, right case
        np.testing.assert_allclose(image.header.get_zooms(), (1.0, 1.0, 1.0))
        label = nib.load(str(out / item["label"]))
        assert label.get_data_dtype() == np.uint8 and np.asarray(label.dataobj).flat[number % 60] == 1


def test_pancreas_h5_refuses_mixed_recipes(tmp_path):
    _write_h5(tmp_path / "image0057_norm.h5", *_pancreas_volume(57))
    _write_h5(tmp_path / "PANCREAS_0018.h5", *_pancreas_volume(18))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="mixes h5 files"):
        prepare_pancreas_h5(tmp_path, tmp_path / "out", allow_missing=True)


def test_pancreas_h5_missing_cases_use_canonical_ids(tmp_path):
    _write_h5(tmp_path / "image0057_norm.h5", *_pancreas_volume(57))
    with pytest.raises(MissingCasesError) as info:
        prepare_pancreas_h5(tmp_path, tmp_path / "out")
    assert "81 listed case" in str(info.value) and "PANCREAS_0018" in str(info.value)
    assert "PANCREAS_0057" not in str(info.value)


def _save_ct(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def test_pancreas_nifti_keeps_hounsfield_units_and_geometry(tmp_path):
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    affine[:3, 3] = (-180.0, -170.0, -300.0)
    hu = np.array([-1000, -100, 40, 150, 800, -1000], np.int16).reshape(1, 2, 3).repeat(4, axis=0)
    label = np.zeros(hu.shape, np.uint8)
    label[1, 1, 1] = 1
    # CoraNet lists: training = train_lab (0001...) then train_unlab (0013...); both image spellings accepted
    _save_ct(tmp_path / "images" / "PANCREAS_0013.nii.gz", hu, affine)
    _save_ct(tmp_path / "images" / "image0001.nii.gz", hu + 1, affine)
    _save_ct(tmp_path / "images" / "PANCREAS_0064.nii.gz", hu, affine)
    for number in (1, 13, 64):
        _save_ct(tmp_path / "labels" / f"label{number:04d}.nii.gz", label, affine)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="77 listed case"):
        prepare_pancreas(tmp_path, out, allow_missing=True, split="coranet")
    meta = _meta(out)
    assert _cases(meta, "training") == ["Pancreas:PANCREAS_0001", "Pancreas:PANCREAS_0013"]
    assert _cases(meta, "test") == ["Pancreas:PANCREAS_0064"] and meta["validation"] == []
    assert meta["preprocessing"] == "pancreas-raw-hu" and "CoraNet" in meta["source_split"]
    image = nib.load(str(out / meta["training"][1]["image"]))
    np.testing.assert_array_equal(image.get_fdata(), hu)  # HU unchanged, not windowed
    np.testing.assert_allclose(image.affine, affine)
    assert np.all(nib.load(str(out / meta["training"][0]["image"])).get_fdata() == hu + 1)  # image0001 found


def test_pancreas_dicom_source_says_conversion_is_out_of_scope(tmp_path, capsys):
    series = tmp_path / "Pancreas-CT" / "PANCREAS_0057" / "11-24-2015-PANCREAS0057" / "Pancreas-99667"
    series.mkdir(parents=True)
    (series / "1-001.dcm").write_bytes(b"\0" * 132 + b"DICM")
    with pytest.raises(DicomSourceError, match="DICOM conversion is out of scope") as info:
        prepare_pancreas(tmp_path, tmp_path / "out")
    assert "PANCREAS_0057" in str(info.value) and "images/PANCREAS_NNNN.nii.gz" in str(info.value)
    assert main(["pancreas", "--source", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "DICOM" in capsys.readouterr().err


def test_pancreas_split_option_is_validated_by_the_cli():
    assert build_parser().parse_args(["pancreas", "--source", "s", "--out", "o"]).split == "mcnet"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pancreas_h5", "--source", "s", "--out", "o", "--split", "fold1"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["isles", "--source", "s", "--out", "o", "--split", "mcnet"])  # Pancreas only


# ------------------------------------------------------------------------------------------------
# ISLES 2022
# ------------------------------------------------------------------------------------------------


def _fake_isles_case(root: Path, case: str, affine: np.ndarray, value: float) -> np.ndarray:
    """BIDS layout under rawdata/ with DWI (filled with ``value``), ADC and FLAIR, mask under derivatives/."""
    shape = (6, 5, 4)
    session = root / "rawdata" / case / "ses-0001"
    _save_ct(session / "dwi" / f"{case}_ses-0001_dwi.nii.gz", np.full(shape, value, np.float32), affine)
    _save_ct(session / "dwi" / f"{case}_ses-0001_adc.nii.gz", np.full(shape, -1.0, np.float32), affine)
    _save_ct(session / "anat" / f"{case}_ses-0001_FLAIR.nii.gz", np.full(shape, -2.0, np.float32), affine)
    mask = np.zeros(shape, np.float32)
    mask[1:3, 1:3, 1], mask[4, 4, 3] = 1.0, 1.0  # two lesions
    _save_ct(root / "derivatives" / case / "ses-0001" / f"{case}_ses-0001_msk.nii.gz", mask, affine)
    return mask


def test_isles_bids_dwi_only_fold0_order(tmp_path):
    root = tmp_path / "ISLES-2022"
    affine = np.diag([1.6, 1.6, 3.0, 1.0])
    mask = _fake_isles_case(root, ISLES_TRAIN[5], affine, 5.0)
    _fake_isles_case(root, ISLES_TRAIN[0], affine, 0.5)
    _fake_isles_case(root, ISLES_VAL[2], affine, 2.0)
    _fake_isles_case(root, ISLES_TEST[0], affine, 3.0)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="246 listed case"):
        prepare_isles(tmp_path, out, allow_missing=True)  # parent of ISLES-2022/
    meta = _meta(out)
    assert _cases(meta, "training") == [f"ISLES:{ISLES_TRAIN[0]}", f"ISLES:{ISLES_TRAIN[5]}"]
    assert _cases(meta, "validation") == [f"ISLES:{ISLES_VAL[2]}"] and _cases(meta, "test") == [
        f"ISLES:{ISLES_TEST[0]}"
    ]
    assert meta["preprocessing"] == "isles-raw-dwi" and "DyCON" in meta["source_split"]
    assert meta["labels"] == {"0": "background", "1": "ischemic stroke lesion"} and meta["modality"] == {"0": "MRI"}
    assert meta["training"][1] == {
        "image": f"images/{ISLES_TRAIN[5]}.nii.gz",
        "label": f"labels/{ISLES_TRAIN[5]}.nii.gz",
        "case": f"ISLES:{ISLES_TRAIN[5]}",
    }
    image = nib.load(str(out / meta["training"][1]["image"]))
    assert np.all(image.get_fdata() == 5.0)  # the DWI, not ADC or FLAIR
    np.testing.assert_allclose(image.header.get_zooms(), (1.6, 1.6, 3.0))
    label = nib.load(str(out / meta["training"][1]["label"]))
    assert label.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(label.dataobj), mask.astype(np.uint8))


def test_isles_mask_on_another_grid_is_rejected(tmp_path):
    affine = np.eye(4)
    _fake_isles_case(tmp_path, ISLES_TRAIN[0], affine, 1.0)
    case = ISLES_TRAIN[0]
    _save_ct(tmp_path / "derivatives" / case / "ses-0001" / f"{case}_ses-0001_msk.nii.gz", np.zeros((3, 3, 3)), affine)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="differs from label shape"):
        prepare_isles(tmp_path, tmp_path / "out", allow_missing=True)


def test_brats_case_without_seg_is_reported_missing(tmp_path):
    seg = np.zeros((3, 3, 3), np.uint8)
    _fake_brats_case(tmp_path / "HGG", BRATS_TRAIN[0], seg, np.eye(4))
    _fake_brats_case(tmp_path / "LGG", BRATS_TRAIN[1], seg, np.eye(4), with_seg=False)
    with pytest.raises(MissingCasesError) as info:
        prepare_brats(tmp_path, tmp_path / "out")
    assert "334 listed case" in str(info.value) and BRATS_TRAIN[1] in str(info.value)  # 335 - 1 complete case
    assert BRATS_TRAIN[0] not in str(info.value)


# ------------------------------------------------------------------------------------------------
# AbdomenCT-1K (project-defined seeded 30 / 11 choice) and York cardiac MRI (MATLAB files)
# ------------------------------------------------------------------------------------------------

ABDOMENCT1K_TRAIN = read_split("abdomenct1k/train.list")
ABDOMENCT1K_TEST = read_split("abdomenct1k/test.list")
YORK_SPLIT = {name: read_split(f"york/{name}.list") for name in ("train", "val", "test")}


def test_abdomenct1k_shipped_lists_are_the_seeded_choice():
    train, test = abdomenct1k_case_choice()
    assert (ABDOMENCT1K_TRAIN, ABDOMENCT1K_TEST) == (train, test)
    assert len(train) == 30 and len(test) == 11 and not set(train) & set(test)
    assert all(1 <= int(case.split("_")[1]) <= 1000 for case in train + test)
    assert abdomenct1k_case_choice(seed=1) != (train, test)  # the seed matters


def _fake_abdomenct1k_case(root: Path, case: str, organs: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Release naming: Case_NNNNN_0000.nii.gz image (HU) and Case_NNNNN.nii.gz mask, given folders."""
    image = np.full((6, 5, 4), -1000.0, np.float32)
    image[1:5, 1:4, :] = 40.0
    mask = np.zeros((6, 5, 4), np.uint8)
    for value in organs:
        mask[value, 1:3, 1:3] = value
    _save_ct(root / "images" / f"{case}_0000.nii.gz", image, affine)
    _save_ct(root / "masks" / f"{case}.nii.gz", mask, affine)
    return mask


def test_abdomenct1k_release_order_labels_and_geometry(tmp_path):
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-100.0, 20.0, 5.0)
    mask = _fake_abdomenct1k_case(tmp_path / "part2", ABDOMENCT1K_TRAIN[1], (1, 2, 3, 4), affine)
    _fake_abdomenct1k_case(tmp_path / "part1", ABDOMENCT1K_TRAIN[0], (1, 3), affine)
    _fake_abdomenct1k_case(tmp_path / "part1", ABDOMENCT1K_TEST[0], (2, 4), affine)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="38 listed case"):
        main(["abdomenct1k", "--source", str(tmp_path), "--out", str(out), "--allow-missing"])
    meta = _meta(out)
    assert _cases(meta, "training") == [f"AbdomenCT-1K:{ABDOMENCT1K_TRAIN[0]}", f"AbdomenCT-1K:{ABDOMENCT1K_TRAIN[1]}"]
    assert _cases(meta, "test") == [f"AbdomenCT-1K:{ABDOMENCT1K_TEST[0]}"] and meta["validation"] == []
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "kidney", "3": "spleen", "4": "pancreas"}
    assert meta["preprocessing"] == "abdomenct1k-raw-hu" and meta["modality"] == {"0": "CT"} and meta["dims"] == 3
    image = nib.load(str(out / meta["training"][1]["image"]))
    np.testing.assert_allclose(image.affine, affine)  # orientation and spacing kept for the bundle's transforms
    assert image.get_fdata().min() == -1000.0  # Hounsfield units, not windowed
    label = nib.load(str(out / meta["training"][1]["label"]))
    np.testing.assert_array_equal(np.asarray(label.dataobj), mask)


def test_abdomenct1k_refuses_a_mask_with_other_labels(tmp_path, capsys):
    _fake_abdomenct1k_case(tmp_path, ABDOMENCT1K_TRAIN[0], (1,), np.eye(4))
    bad = np.zeros((6, 5, 4), np.uint8)
    bad[0, 0, 0] = 13  # e.g. a 13-organ FLARE mask in place of the 4-organ one
    _save_ct(tmp_path / "masks" / f"{ABDOMENCT1K_TRAIN[0]}.nii.gz", bad, np.eye(4))
    with pytest.warns(UserWarning):
        code = main(["abdomenct1k", "--source", str(tmp_path), "--out", str(tmp_path / "out"), "--allow-missing"])
    error = capsys.readouterr().err
    assert code == 2 and f"{ABDOMENCT1K_TRAIN[0]}.nii.gz" in error and "[13" in error


def test_abdomenct1k_missing_image_part_is_reported(tmp_path):
    _fake_abdomenct1k_case(tmp_path, ABDOMENCT1K_TRAIN[0], (1,), np.eye(4))
    (tmp_path / "images" / f"{ABDOMENCT1K_TRAIN[0]}_0000.nii.gz").unlink()  # mask without its image
    _fake_abdomenct1k_case(tmp_path, ABDOMENCT1K_TRAIN[1], (1,), np.eye(4))
    with pytest.raises(MissingCasesError) as info:
        prepare_abdomenct1k(tmp_path, tmp_path / "out")
    assert "40 listed case" in str(info.value) and ABDOMENCT1K_TRAIN[0] in str(info.value)


def test_york_shipped_split_is_the_seeded_subject_split():
    split = york_subject_split()
    assert [split["training"], split["validation"], split["test"]] == list(YORK_SPLIT.values())
    subjects = sum(YORK_SPLIT.values(), [])
    assert sorted(subjects) == sorted(f"pat{n}" for n in range(1, 34))  # 33 subjects, each in one split
    assert [len(v) for v in YORK_SPLIT.values()] == [23, 3, 7]


def _square_contour(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """64 points (x, y), 1-based: a 32-point endocardium rectangle, then a larger 32-point epicardium."""
    t = np.linspace(0.0, 4.0, ENDOCARDIUM_POINTS, endpoint=False)
    side, f = np.floor(t), t - np.floor(t)
    xs = np.select([side == 0, side == 1, side == 2], [x0 + f * (x1 - x0), x1, x1 - f * (x1 - x0)], x0)
    ys = np.select([side == 0, side == 1, side == 2], [y0, y0 + f * (y1 - y0), y1], y1 - f * (y1 - y0))
    endo = np.stack([xs, ys], axis=1)
    epi = np.stack([xs * 1.2 - 1.0, ys * 1.2 - 1.0], axis=1)
    return np.concatenate([endo, epi])


def _fake_york_subject(root: Path, subject: str, shape=(12, 10, 3, 4), annotated=((0, 1), (2, 1), (1, 3))):
    """``sol_yxzt_<subject>.mat`` (image y, x, z, t; value = 10 z + t) and ``manual_seg_32points_<subject>.mat`` (a
    z x t cell array, object ndarray): a rectangle endocardium x 3..6, y 2..8 (1-based) in the ``annotated`` cells,
    empty cells elsewhere."""
    from scipy.io import savemat

    y, x, z, t = shape
    volume = np.zeros(shape, np.float64)
    for k in range(z):
        for f in range(t):
            volume[:, :, k, f] = 10 * k + f
    volume[0, 0] = -1.0  # one marked pixel at (y 0, x 0): checks the axis order
    cells = np.empty((z, t), dtype=object)
    for k in range(z):
        for f in range(t):
            cells[k, f] = np.zeros((0, 0))
    for k, f in annotated:
        cells[k, f] = _square_contour(3.0, 2.0, 6.0, 8.0)
    root.mkdir(parents=True, exist_ok=True)
    savemat(str(root / f"sol_yxzt_{subject}.mat"), {"sol_yxzt": volume})
    savemat(str(root / f"manual_seg_32points_{subject}.mat"), {"manual_seg_32points": cells})


def test_york_mat_files_to_frame_volumes_of_annotated_slices(tmp_path):
    first, second = YORK_SPLIT["train"][:2]
    _fake_york_subject(tmp_path / "a", second)
    _fake_york_subject(tmp_path / "b", first, annotated=((1, 0),))
    _fake_york_subject(tmp_path / "b", YORK_SPLIT["test"][0])
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="30 listed case"):
        main(["york", "--source", str(tmp_path), "--out", str(out), "--allow-missing"])
    meta = _meta(out)
    # subjects in list order, then their annotated frames in frame order (frames 1 and 3 of the second subject)
    assert _cases(meta, "training") == [f"{first}_frame01", f"{second}_frame02", f"{second}_frame04"]
    assert meta["training"][1] == {
        "image": f"{second}/{second}_frame02.nii.gz",
        "label": f"{second}/{second}_frame02_gt.nii.gz",
        "case": f"{second}_frame02",
        "patient": f"York:{second}",
    }
    assert meta["source_slices"][f"{second}_frame02"] == [1, 3] and meta["dims"] == 2
    assert meta["labels"] == {"0": "background", "1": "left ventricle endocardium"}
    image = np.asarray(nib.load(str(out / meta["training"][1]["image"])).dataobj)
    label = np.asarray(nib.load(str(out / meta["training"][1]["label"])).dataobj)
    assert image.shape == label.shape == (10, 12, 2)  # (x, y, annotated slices)
    assert image[0, 0, 0] == -1.0 and image[1, 0, 0] == 10 * 0 + 1 and image[1, 0, 1] == 10 * 2 + 1
    expected = np.zeros((10, 12), np.uint8)  # rows y 1..7 and columns x 2..5 (0-based) of the filled rectangle
    expected[2:6, 1:8] = 1
    np.testing.assert_array_equal(label[..., 0], expected)
    np.testing.assert_array_equal(label[..., 1], expected)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no_variable", "no variable 'manual_seg_32points'"),
        ("few_points", "expected at least 32 rows"),
        ("grid", "do not match the image volume"),
        ("not_mat", "not a readable MATLAB file"),
        ("no_contours", "no annotated contour"),
    ],
)
def test_york_malformed_download_names_the_file(tmp_path, capsys, damage, message):
    from scipy.io import savemat

    subject = YORK_SPLIT["train"][0]
    _fake_york_subject(tmp_path, subject)
    contour_file = tmp_path / f"manual_seg_32points_{subject}.mat"
    if damage == "no_variable":
        savemat(str(contour_file), {"contours": np.zeros((3, 4))})
    elif damage == "few_points":
        cells = np.empty((3, 4), dtype=object)
        cells.fill(np.zeros((0, 0)))
        cells[0, 0] = np.ones((10, 2))
        savemat(str(contour_file), {"manual_seg_32points": cells})
    elif damage == "grid":
        _fake_york_subject(tmp_path, subject, shape=(12, 10, 5, 4))
        savemat(str(tmp_path / f"sol_yxzt_{subject}.mat"), {"sol_yxzt": np.zeros((12, 10, 3, 2))})
    elif damage == "not_mat":
        contour_file.write_text("not a MATLAB file")
    else:
        _fake_york_subject(tmp_path, subject, annotated=())
    bad_file = contour_file
    with pytest.warns(UserWarning):
        code = main(["york", "--source", str(tmp_path), "--out", str(tmp_path / "out"), "--allow-missing"])
    error = capsys.readouterr().err
    assert code == 2 and str(bad_file) in error and message in error, error
