"""Phantom datasets: determinism, the dataset-folder contract, anatomy sanity, caching and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from common.datasets.phantoms import FLAVOURS, ensure_phantom_dataset, main, make_phantom_dataset

ACDC_SMALL = {"num_train": 2, "num_val": 1, "num_test": 1, "shape": (48, 48)}
LA_SMALL = {"num_train": 2, "num_test": 1, "shape": (32, 32, 24)}
CONTRACT_KEYS = {
    "name",
    "description",
    "source_split",
    "labels",
    "modality",
    "dims",
    "metric_spacing",
    "preprocessing",
    "training",
    "validation",
    "test",
}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _load(folder: Path, item: dict) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    return nib.load(str(folder / item["image"])), nib.load(str(folder / item["label"]))


@pytest.fixture(scope="module")
def acdc_dir(tmp_path_factory) -> Path:
    return make_phantom_dataset(tmp_path_factory.mktemp("acdc"), "acdc", **ACDC_SMALL)


@pytest.fixture(scope="module")
def la_dir(tmp_path_factory) -> Path:
    return make_phantom_dataset(tmp_path_factory.mktemp("la"), "la", **LA_SMALL)


@pytest.mark.parametrize("flavour, kwargs", [("acdc", ACDC_SMALL), ("la", LA_SMALL)])
def test_same_seed_gives_identical_bytes(tmp_path, flavour, kwargs):
    first = _files(make_phantom_dataset(tmp_path / "a", flavour, seed=3, **kwargs))
    second = _files(make_phantom_dataset(tmp_path / "b", flavour, seed=3, **kwargs))
    other = _files(make_phantom_dataset(tmp_path / "c", flavour, seed=4, **kwargs))
    assert first == second
    images = [name for name in first if name.endswith(".nii.gz")]
    assert images and all(first[name] != other[name] for name in images if "gt" not in name and "labels" not in name)


def test_first_subjects_do_not_depend_on_counts(tmp_path):
    small = make_phantom_dataset(tmp_path / "small", "la", num_train=1, num_test=1, shape=(24, 24, 16))
    large = make_phantom_dataset(tmp_path / "large", "la", num_train=3, num_test=1, shape=(24, 24, 16))
    item = json.loads((small / "dataset.json").read_text())["training"][0]
    assert (small / item["image"]).read_bytes() == (large / item["image"]).read_bytes()


def test_acdc_dataset_json(acdc_dir):
    meta = json.loads((acdc_dir / "dataset.json").read_text())
    assert CONTRACT_KEYS <= set(meta)
    assert meta["labels"] == {"0": "background", "1": "right ventricle", "2": "myocardium", "3": "left ventricle"}
    assert meta["dims"] == 2 and meta["metric_spacing"] is None and meta["preprocessing"] == "phantom-acdc"
    assert meta["modality"] == {"0": "MRI"}
    assert [len(meta[k]) for k in ("training", "validation", "test")] == [4, 2, 2]  # patients x 2 frames
    assert meta["phantom"]["flavour"] == "acdc" and meta["phantom"]["shape"] == [48, 48]
    assert "unlabeled" not in meta


def test_acdc_patient_frame_structure(acdc_dir):
    meta = json.loads((acdc_dir / "dataset.json").read_text())
    items = meta["training"] + meta["validation"] + meta["test"]
    for index, item in enumerate(items):
        patient = f"patient{index // 2 + 1:03d}"
        case = f"{patient}_frame{index % 2 + 1:02d}"
        assert item == {
            "image": f"{patient}/{case}.nii.gz",
            "label": f"{patient}/{case}_gt.nii.gz",
            "case": case,
            "patient": f"ACDC:{patient}",
        }


def test_acdc_volumes(acdc_dir):
    meta = json.loads((acdc_dir / "dataset.json").read_text())
    cavity = {}
    for item in meta["training"] + meta["validation"] + meta["test"]:
        image, label = _load(acdc_dir, item)
        assert image.shape == label.shape and image.shape[:2] == (48, 48) and 8 <= image.shape[2] <= 12
        assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
        zooms = image.header.get_zooms()
        assert zooms[2] > 2 * zooms[0] and zooms[0] == zooms[1]  # thick slices
        np.testing.assert_allclose(np.diag(image.affine)[:3], zooms)
        values = np.asarray(label.dataobj)
        assert set(np.unique(values)) == {0, 1, 2, 3}  # every class in every volume
        cavity[item["case"]] = int((values == 3).sum())
        data = image.get_fdata()
        assert np.isfinite(data).all() and data.min() >= 0  # magnitude image
    for case, count in cavity.items():
        if case.endswith("frame01"):
            assert cavity[case.replace("frame01", "frame02")] < count  # ES cavity smaller than ED


def test_acdc_blood_pools_bright_myocardium_dark(acdc_dir):
    meta = json.loads((acdc_dir / "dataset.json").read_text())
    image, label = _load(acdc_dir, meta["training"][0])
    data, values = image.get_fdata(), np.asarray(label.dataobj)
    means = {c: data[values == c].mean() for c in range(4)}
    assert means[3] > 2 * means[2] and means[1] > 2 * means[2]  # LV, RV bright; myocardium dark
    assert means[3] > means[0] and means[1] > means[0]


def test_acdc_default_shape_ranges(tmp_path):
    folder = make_phantom_dataset(tmp_path, "acdc", num_train=1, num_val=0, num_test=0)
    item = json.loads((folder / "dataset.json").read_text())["training"][0]
    shape = nib.load(str(folder / item["image"])).shape
    assert 96 <= shape[0] <= 128 and 96 <= shape[1] <= 128 and 8 <= shape[2] <= 12


def test_la_dataset(la_dir):
    meta = json.loads((la_dir / "dataset.json").read_text())
    assert CONTRACT_KEYS <= set(meta)
    assert meta["dims"] == 3 and meta["labels"] == {"0": "background", "1": "left atrium"}
    assert meta["validation"] == [] and len(meta["training"]) == 2 and len(meta["test"]) == 1
    assert meta["training"][0] == {
        "image": "images/phantom001.nii.gz",
        "label": "labels/phantom001.nii.gz",
        "case": "LA:phantom001",
    }
    for item in meta["training"] + meta["test"]:
        image, label = _load(la_dir, item)
        assert image.shape == label.shape == (32, 32, 24)
        np.testing.assert_allclose(image.header.get_zooms(), (0.625, 0.625, 0.625))
        data, values = image.get_fdata(), np.asarray(label.dataobj)
        assert abs(data.mean()) < 1e-3 and abs(data.std() - 1) < 1e-3  # z-scored like UA-MT's h5
        assert set(np.unique(values)) == {0, 1} and 0.01 < values.mean() < 0.5
        assert data[values == 1].mean() > data[values == 0].mean() + 1.0  # the atrium stands out


def test_ids_survive_monai_datalist_loading(acdc_dir, la_dir):
    from monai.data import load_decathlon_datalist

    for folder in (acdc_dir, la_dir):
        items = load_decathlon_datalist(str(folder / "dataset.json"), data_list_key="training", base_dir=str(folder))
        raw = json.loads((folder / "dataset.json").read_text())["training"]
        for loaded, stored in zip(items, raw, strict=True):
            assert Path(loaded["image"]).is_file()
            assert all(loaded[key] == stored[key] for key in ("case", "patient") if key in stored)


def test_contract_reader_counts_patients(acdc_dir):
    from common.data import semi_supervised_datalists

    lists = semi_supervised_datalists(acdc_dir, num_labeled=1)
    assert len(lists["labeled"]) == 2 and len(lists["unlabeled"]) == 2  # 1 patient = 2 frames
    assert all("label" not in item for item in lists["unlabeled"])


def test_unlabeled_items_have_no_label(tmp_path):
    folder = make_phantom_dataset(tmp_path, "acdc", num_train=1, num_val=0, num_test=0, num_unlabeled=1, shape=(32, 32))
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["unlabeled"] == [
        {"image": "patient002/patient002_frame01.nii.gz", "case": "patient002_frame01"},
        {"image": "patient002/patient002_frame02.nii.gz", "case": "patient002_frame02"},
    ]
    assert not list(folder.glob("patient002/*_gt.nii.gz"))


def test_ensure_reuses_and_regenerates(tmp_path):
    cache = tmp_path / "cache" / "la"
    kwargs = {"num_train": 1, "num_test": 1, "shape": (24, 24, 16)}
    assert ensure_phantom_dataset(cache, "la", **kwargs) == str(cache)
    stamp = (cache / "dataset.json").stat().st_mtime_ns
    assert ensure_phantom_dataset(str(cache), "la", **kwargs) == str(cache)
    assert (cache / "dataset.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    ensure_phantom_dataset(cache, "la", seed=1, **kwargs)
    assert json.loads((cache / "dataset.json").read_text())["phantom"]["seed"] == 1
    assert sorted(p.name for p in cache.parent.iterdir()) == ["la"]  # no temporary folder left behind


def test_ensure_refuses_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not a phantom"):
        ensure_phantom_dataset(tmp_path, "acdc", num_train=1, shape=(32, 32))
    assert (tmp_path / "mine.txt").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"flavour": "brats2019"}, "unknown phantom flavour"),
        ({"flavour": "isles", "shape": (32, 32, 15)}, "at least"),
        ({"flavour": "pancreas", "shape": (32, 32)}, "shape"),
        ({"flavour": "la", "shape": (32, 32)}, "shape"),
        ({"flavour": "acdc", "shape": (16, 16)}, "at least"),
        ({"flavour": "acdc", "num_train": 0}, "num_train"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom_dataset(tmp_path, **kwargs)


def test_registry_and_cli(tmp_path, capsys):
    assert {"acdc", "la", "brats", "pancreas", "isles"} <= set(FLAVOURS)
    out = tmp_path / "cli"
    code = main(
        [str(out), "--flavour", "acdc", "--num-train", "1", "--num-val", "0", "--num-test", "0"]
        + ["--shape", "32", "32", "8"]
    )
    assert code == 0 and str(out / "dataset.json") in capsys.readouterr().out
    meta = json.loads((out / "dataset.json").read_text())
    assert len(meta["training"]) == 2 and nib.load(str(out / meta["training"][0]["image"])).shape == (32, 32, 8)


# ------------------------------------------------------------------------------------------------
# 3D flavours standing in for BraTS 2019, Pancreas-CT and ISLES 2022
# ------------------------------------------------------------------------------------------------

SMALL_3D = {
    "brats": {"num_train": 2, "num_val": 1, "num_test": 1, "shape": (40, 40, 32)},
    "pancreas": {"num_train": 2, "num_test": 1, "shape": (40, 40, 32)},
    "isles": {"num_train": 3, "num_val": 1, "num_test": 1, "shape": (40, 40, 24)},
}
EXPECTED_3D = {  # flavour: (labels, modality, preprocessing, case prefix, items per split)
    "brats": ({"0": "background", "1": "whole tumour"}, "MRI", "phantom-brats", "BraTS", (2, 1, 1)),
    "pancreas": ({"0": "background", "1": "pancreas"}, "CT", "phantom-pancreas", "Pancreas", (2, 0, 1)),
    "isles": ({"0": "background", "1": "ischemic stroke lesion"}, "MRI", "phantom-isles", "ISLES", (3, 1, 1)),
}


@pytest.fixture(scope="module")
def folders_3d(tmp_path_factory) -> dict[str, Path]:
    return {
        flavour: make_phantom_dataset(tmp_path_factory.mktemp(flavour), flavour, **kwargs)
        for flavour, kwargs in SMALL_3D.items()
    }


def _volumes(folder: Path) -> list[tuple[dict, np.ndarray, np.ndarray, tuple]]:
    meta = json.loads((folder / "dataset.json").read_text())
    out = []
    for item in meta["training"] + meta["validation"] + meta["test"]:
        image, label = _load(folder, item)
        out.append((item, image.get_fdata(), np.asarray(label.dataobj), image.header.get_zooms()))
    return out


def _best_threshold_dice(image: np.ndarray, label: np.ndarray) -> float:
    """Best Dice of ``image > t`` over 200 quantile thresholds: how far plain thresholding gets."""
    target = label > 0
    best = 0.0
    for t in np.quantile(image, np.linspace(0.5, 0.9999, 200)):
        pred = image > t
        best = max(best, 2.0 * (pred & target).sum() / (pred.sum() + target.sum()))
    return best


@pytest.mark.parametrize("flavour", sorted(SMALL_3D))
def test_3d_flavour_dataset_json(folders_3d, flavour):
    meta = json.loads((folders_3d[flavour] / "dataset.json").read_text())
    labels, modality, preprocessing, prefix, counts = EXPECTED_3D[flavour]
    assert CONTRACT_KEYS <= set(meta)
    assert meta["labels"] == labels and meta["modality"] == {"0": modality} and meta["dims"] == 3
    assert meta["preprocessing"] == preprocessing and meta["metric_spacing"] is None
    assert tuple(len(meta[k]) for k in ("training", "validation", "test")) == counts
    assert meta["training"][0] == {
        "image": "images/phantom001.nii.gz",
        "label": "labels/phantom001.nii.gz",
        "case": f"{prefix}:phantom001",
    }
    assert meta["test"][-1]["case"] == f"{prefix}:phantom{sum(counts):03d}"  # numbered across the splits


@pytest.mark.parametrize("flavour", sorted(SMALL_3D))
def test_3d_flavour_same_seed_same_bytes(tmp_path, flavour):
    kwargs = {"num_train": 1, "num_val": 0, "num_test": 0, "shape": (24, 24, 16)}
    first = _files(make_phantom_dataset(tmp_path / "a", flavour, seed=5, **kwargs))
    second = _files(make_phantom_dataset(tmp_path / "b", flavour, seed=5, **kwargs))
    other = _files(make_phantom_dataset(tmp_path / "c", flavour, seed=6, **kwargs))
    assert first == second
    assert first["images/phantom001.nii.gz"] != other["images/phantom001.nii.gz"]


@pytest.mark.parametrize("flavour", sorted(SMALL_3D))
def test_3d_flavour_shapes_and_label_values(folders_3d, flavour):
    shape = SMALL_3D[flavour]["shape"]
    for item, image, label, _ in _volumes(folders_3d[flavour]):
        assert image.shape == label.shape == shape, item["case"]
        assert np.isfinite(image).all() and set(np.unique(label)) == {0, 1}
        assert 0.0002 < label.mean() < 0.05  # a small structure, never empty


def test_brats_phantom_flair_contrast(folders_3d):
    for item, image, label, zooms in _volumes(folders_3d["brats"]):
        np.testing.assert_allclose(zooms, (1.0, 1.0, 1.0))
        brain = image > 0
        assert image.min() == 0.0 and not brain[0].any() and not brain[:, :, -1].any()  # zero outside the brain
        assert 0.1 < brain.mean() < 0.5 and brain[label > 0].all()  # the tumour lies inside the brain
        healthy = image[brain & (label == 0)]
        assert image[label > 0].mean() > 1.2 * healthy.mean()  # FLAIR-hyperintense tumour and oedema
        assert (healthy > np.median(image[label > 0])).sum() > 0  # but healthy voxels reach tumour values
        assert _best_threshold_dice(image, label) < 0.9, item["case"]


def test_pancreas_phantom_hounsfield_units(folders_3d):
    for item, image, label, zooms in _volumes(folders_3d["pancreas"]):
        np.testing.assert_allclose(zooms, (1.0, 1.0, 1.0))
        assert image.min() <= -990 and image.max() >= 700  # air and bone, stored unwindowed in HU
        assert np.array_equal(image, np.round(image))  # integer HU as in CT files
        assert -150 < np.median(image[(image > -500) & (label == 0)]) < 60  # fat and muscle dominate the body
        pancreas = image[label > 0]
        assert 40 < np.median(pancreas) < 150
        similar = ((image > 50) & (image < 160) & (label == 0)).sum()
        assert similar > 3 * pancreas.size  # organs and vessels of similar density surround it
        assert _best_threshold_dice(image, label) < 0.3, item["case"]
        # elongated: the longest principal axis of the organ is more than twice its shortest
        points = np.argwhere(label > 0).astype(float)
        extents = np.sqrt(np.linalg.eigvalsh(np.cov(points.T)))
        assert extents[-1] > 2 * extents[0]


def test_isles_phantom_lesions_and_spacing(folders_3d):
    from scipy import ndimage

    components, spacings = [], set()
    for _item, image, label, zooms in _volumes(folders_3d["isles"]):
        assert zooms[0] == zooms[1] and zooms[2] >= 2.0 and 1.6 <= zooms[0] <= 2.2
        spacings.add(tuple(np.round(zooms, 3)))
        labelled, count = ndimage.label(label)
        components.append(count)
        sizes = np.bincount(labelled.ravel())[1:]
        assert sizes.max() < 1500
        assert image[label > 0].mean() > 1.5 * image[(label == 0) & (image > np.percentile(image, 60))].mean()
        assert image[0, 0, 0] > 0  # not skull-stripped: Rician noise floor in the background
    assert max(components) >= 2  # multi-focal
    assert len(spacings) >= 2  # variable spacing across cases


@pytest.mark.parametrize("flavour", sorted(SMALL_3D))
def test_3d_flavours_at_minimum_shape(tmp_path, flavour):
    folder = make_phantom_dataset(tmp_path, flavour, num_train=3, num_val=0, num_test=0, shape=(16, 16, 16), seed=2)
    for item, _, label, _ in _volumes(folder):
        assert label.shape == (16, 16, 16) and label.any(), item["case"]


@pytest.mark.parametrize(
    "flavour, shape", [("brats", (64, 64, 48)), ("pancreas", (64, 64, 48)), ("isles", (64, 64, 32))]
)
def test_3d_flavour_default_shape(tmp_path, flavour, shape):
    folder = make_phantom_dataset(tmp_path, flavour, num_train=1, num_val=0, num_test=0)
    item = json.loads((folder / "dataset.json").read_text())["training"][0]
    assert nib.load(str(folder / item["image"])).shape == shape
    assert FLAVOURS[flavour].default_counts[1] == (0 if flavour == "pancreas" else 2)  # no validation for Pancreas


def test_3d_ids_survive_monai_datalist_loading(folders_3d):
    from monai.data import load_decathlon_datalist

    for folder in folders_3d.values():
        items = load_decathlon_datalist(str(folder / "dataset.json"), data_list_key="training", base_dir=str(folder))
        raw = json.loads((folder / "dataset.json").read_text())["training"]
        assert [i["case"] for i in items] == [i["case"] for i in raw]
        assert all(Path(i["image"]).is_file() and Path(i["label"]).is_file() for i in items)


# ------------------------------------------------------------------------------------------------
# AbdomenCT-1K (3D CT, four organs) and York cardiac MRI (2D, LV endocardium) flavours
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def abdomenct1k_dir(tmp_path_factory) -> Path:
    return make_phantom_dataset(tmp_path_factory.mktemp("abdomenct1k"), "abdomenct1k", num_train=2, num_test=1)


@pytest.fixture(scope="module")
def york_dir(tmp_path_factory) -> Path:
    return make_phantom_dataset(tmp_path_factory.mktemp("york"), "york", num_train=2, num_val=1, num_test=1)


def test_abdomenct1k_phantom_dataset_json(abdomenct1k_dir):
    meta = json.loads((abdomenct1k_dir / "dataset.json").read_text())
    assert CONTRACT_KEYS <= set(meta) and meta["dims"] == 3 and meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "kidney", "3": "spleen", "4": "pancreas"}
    assert meta["preprocessing"] == "phantom-abdomenct1k"
    assert [len(meta[k]) for k in ("training", "validation", "test")] == [2, 0, 1]  # no validation, as the paper
    assert meta["training"][0]["case"] == "AbdomenCT-1K:phantom001"


def test_abdomenct1k_phantom_four_organs_in_hounsfield_units(abdomenct1k_dir):
    for item, image, label, zooms in _volumes(abdomenct1k_dir):
        assert image.shape == label.shape == (80, 80, 32)
        np.testing.assert_allclose(zooms, (1.2, 1.2, 2.5))  # thick slices: the bundle resamples
        assert set(np.unique(label)) == {0, 1, 2, 3, 4}, item["case"]
        sizes = np.bincount(label.ravel().astype(int), minlength=5)
        assert sizes[1] > sizes[3] and sizes[1] > sizes[4]  # the liver is the largest organ
        assert image.min() <= -990 and np.array_equal(image, np.round(image))  # raw integer HU, air outside
        medians = [np.median(image[label == k]) for k in range(1, 5)]
        assert all(20 < m < 250 for m in medians)  # soft-tissue densities inside the [-125, 275] window
        # organs overlap in density: no single HU threshold isolates the liver
        assert _best_threshold_dice(image, label == 1) < 0.9, item["case"]


def test_york_phantom_dataset_json_and_items(york_dir):
    meta = json.loads((york_dir / "dataset.json").read_text())
    assert CONTRACT_KEYS <= set(meta) and meta["dims"] == 2 and meta["preprocessing"] == "phantom-york"
    assert meta["labels"] == {"0": "background", "1": "left ventricle endocardium"}
    assert [len(meta[k]) for k in ("training", "validation", "test")] == [4, 2, 2]  # subjects x 2 frames
    assert meta["training"][1] == {
        "image": "pat1/pat1_frame02.nii.gz",
        "label": "pat1/pat1_frame02_gt.nii.gz",
        "case": "pat1_frame02",
        "patient": "York:pat1",
    }


def test_york_phantom_bright_cavity_inside_dark_ring(york_dir):
    from scipy import ndimage

    meta = json.loads((york_dir / "dataset.json").read_text())
    cavity = {}
    for item in meta["training"] + meta["test"]:
        image, label = _load(york_dir, item)
        data, values = image.get_fdata(), np.asarray(label.dataobj)
        assert data.shape == values.shape == (96, 96, 6) and set(np.unique(values)) == {0, 1}
        ring = ndimage.binary_dilation(values > 0, iterations=2) & ~(values > 0)  # just outside the endocardium
        assert data[values > 0].mean() > 1.8 * data[ring].mean(), item["case"]  # bright blood, dark myocardium
        cavity[item["case"]] = int(values.sum())
    assert cavity["pat1_frame02"] < cavity["pat1_frame01"]  # systole-like frame: smaller cavity


def test_new_flavours_registered_and_shape_checked(tmp_path):
    assert {"abdomenct1k", "york"} <= set(FLAVOURS)
    with pytest.raises(ValueError, match="at least"):
        make_phantom_dataset(tmp_path / "a", "york", shape=(16, 16))
    with pytest.raises(ValueError, match="shape"):
        make_phantom_dataset(tmp_path / "b", "abdomenct1k", shape=(32, 32))
