"""Turn users' downloads into dataset folders (README.md) ordered by the papers' split lists.

Every command reads the reference split lists shipped in ``splits/`` next to this file, finds each
listed case in the user's download, converts it to NIfTI and writes ``dataset.json`` with
``training`` / ``validation`` / ``test`` in list-file order, so "the first N training items" is the
papers' labeled subset.

Usage::

    python -m common.data.prepare acdc        --source <ACDC download>             --out <dataset folder>
    python -m common.data.prepare acdc_h5     --source <SSL4MIS data/ACDC>         --out <dataset folder>
    python -m common.data.prepare la_h5       --source <UA-MT data/2018LA_Seg_Training Set> --out <folder>
    python -m common.data.prepare brats_h5    --source <SSL4MIS data/BraTS2019>    --out <dataset folder>
    python -m common.data.prepare brats       --source <MICCAI_BraTS_2019_Data_Training> --out <folder>
    python -m common.data.prepare pancreas_h5 --source <MC-Net data/Pancreas>      --out <folder> [--split mcnet]
    python -m common.data.prepare pancreas    --source <folder with images/ labels/> --out <folder> [--split ...]
    python -m common.data.prepare isles       --source <ISLES-2022 BIDS folder>    --out <dataset folder>

``--split`` (Pancreas only) picks one of the three published list families: ``mcnet`` (default,
ycwu1997/MC-Net), ``dycon_mcf`` (CVML-KU/DyCON = WYC-321/MCF fold 0) or ``coranet`` (koncle/CoraNet).
Missing cases are an error listing all of them; ``--allow-missing`` skips them with a warning.
A new dataset is one more function decorated with :func:`register` (see :func:`prepare_la_h5`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLITS_DIR = Path(__file__).parent / "splits"

ACDC_LABELS = {"0": "background", "1": "right ventricle", "2": "myocardium", "3": "left ventricle"}
LA_LABELS = {"0": "background", "1": "left atrium"}
LA_SPACING = (0.625, 0.625, 0.625)


class MissingCasesError(FileNotFoundError):
    """Raised when cases named in a split list are absent from the source folder."""


# --------------------------------------------------------------------------------------------
# Writers shared by the prepare commands and the phantom generator (the folder contract).
# --------------------------------------------------------------------------------------------


def spacing_affine(spacing: Iterable[float]) -> np.ndarray:
    """Return a 4x4 affine with ``spacing`` on the diagonal and the origin at zero."""
    return np.diag([*(float(s) for s in spacing), 1.0])


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, is_label: bool = False) -> None:
    """Write ``array`` as NIfTI: float32 for images, uint8 for label maps (creating parent folders).

    qform and sform both carry ``affine`` (code 1) so nibabel and ITK read the same geometry.
    """
    import nibabel as nib

    data = np.asarray(array, dtype=np.uint8 if is_label else np.float32)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def write_dataset_json(out_dir: str | os.PathLike, content: dict[str, Any]) -> Path:
    """Write ``dataset.json`` atomically (temp file + rename), so a killed run never leaves half a file."""
    path = Path(out_dir) / "dataset.json"
    tmp = path.with_name(f".dataset.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_split(relative_path: str) -> list[str]:
    """Read a split list shipped in ``splits/`` (one case id per line, blank lines ignored)."""
    path = SPLITS_DIR / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def as_label_map(array: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    """Check that ``array`` holds integers in ``[0, num_classes)`` and return it as uint8."""
    values = np.unique(np.asarray(array))
    bad = [v for v in values.tolist() if v != int(v) or not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"{name}: label values {bad[:10]} outside 0..{num_classes - 1}")
    return np.asarray(array).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Generic driver: locate every listed case, report the missing ones, convert the rest.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preparer:
    """One prepare command: its CLI name, help text, the function doing the work and its extra options."""

    name: str
    help: str
    run: Callable[..., Path]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # keyword -> argparse.add_argument kwargs


PREPARERS: dict[str, Preparer] = {}


def register(
    name: str, help: str, options: dict[str, dict[str, Any]] | None = None
) -> Callable[[Callable[..., Path]], Callable[..., Path]]:
    """Decorator adding a ``prepare_<dataset>(source, out, allow_missing=False, **options) -> Path`` to the CLI.

    ``options`` maps extra keyword arguments of the function to ``argparse`` settings; each becomes the
    flag ``--<keyword with dashes>`` of the sub-command and is passed through by keyword.
    """

    def decorate(func: Callable[..., Path]) -> Callable[..., Path]:
        PREPARERS[name] = Preparer(name=name, help=help, run=func, options=dict(options or {}))
        return func

    return decorate


def _check_source(source: str | os.PathLike) -> Path:
    """Return ``source`` as a Path, or raise naming it when it is not a folder."""
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"source folder not found: {path}")
    return path


def locate_cases(
    splits: dict[str, list[str]], locate: Callable[[str], Any], source: Path, allow_missing: bool
) -> dict[str, list[tuple[str, Any]]]:
    """Find every case of every split with ``locate(case) -> handle | None``.

    Returns ``{split: [(case, handle), ...]}`` in list order. Missing cases are collected over all
    splits and reported in ONE message: an error, or a warning when ``allow_missing`` is set.
    """
    found: dict[str, list[tuple[str, Any]]] = {}
    missing: list[str] = []
    for split, cases in splits.items():
        found[split] = []
        for case in cases:
            handle = locate(case)
            if handle is None:
                missing.append(case)
            else:
                found[split].append((case, handle))
    if missing:
        message = f"{len(missing)} listed case(s) not found under {source}: {', '.join(missing)}"
        if not allow_missing:
            raise MissingCasesError(message + " (use --allow-missing to skip them)")
        warnings.warn(message + "; skipped (--allow-missing)", stacklevel=3)
    if not found.get("training"):
        raise MissingCasesError(f"no training case found under {source}; is it the right folder?")
    return found


def _report(out: Path, content: dict[str, Any]) -> None:
    """Print a one-line summary of a written dataset folder."""
    counts = ", ".join(f"{key} {len(content.get(key, []))}" for key in ("training", "validation", "test"))
    print(f"wrote {out / 'dataset.json'} ({counts})")


# --------------------------------------------------------------------------------------------
# ACDC
# --------------------------------------------------------------------------------------------

ACDC_SPLITS = {"training": "acdc/train.list", "validation": "acdc/val.list", "test": "acdc/test.list"}
_ACDC_CASE = re.compile(r"^(patient\d{3})_frame(0[12])$")
_ACDC_GT = re.compile(r"^(patient\d{3})_frame(\d+)_gt\.nii(\.gz)?$")


def acdc_patient_id(patient: str) -> str:
    """Return the ``patient`` value stored in dataset.json.

    Prefixed because MONAI's ``load_decathlon_datalist`` turns a bare ``patient001`` into a path
    (the case folder of that name exists); the prefix keeps it an identifier.
    """
    return f"ACDC:{patient}"


def acdc_item(case: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of an ACDC frame volume ``patientXXX_frameYY`` (official layout)."""
    patient = case.split("_")[0]
    item = {"image": f"{patient}/{case}.nii.gz"}
    if with_label:
        item["label"] = f"{patient}/{case}_gt.nii.gz"
    item["case"] = case
    if with_label:
        item["patient"] = acdc_patient_id(patient)
    return item


def _acdc_splits() -> dict[str, list[str]]:
    """Read the SSL4MIS ACDC lists (frame volumes ``patientXXX_frame01/02``)."""
    return {split: read_split(rel) for split, rel in ACDC_SPLITS.items()}


def _acdc_metadata(description: str, source_format: str) -> dict[str, Any]:
    """Return the descriptive dataset.json keys shared by both ACDC commands."""
    return {
        "name": "ACDC",
        "description": description,
        "source_split": "HiLab-git/SSL4MIS: data/ACDC/train.list, val.list, test.list (copies in splits/acdc/)",
        "source_format": source_format,
        "labels": dict(ACDC_LABELS),
        "modality": {"0": "MRI"},
        "dims": 2,
        "metric_spacing": None,
        "preprocessing": "ssl4mis-acdc",
    }


def find_acdc_patients(source: Path) -> dict[str, Path]:
    """Map ``patientXXX`` to its folder, searching recursively (the release has training/ and testing/)."""
    folders: dict[str, Path] = {}
    for path in sorted(source.rglob("patient[0-9][0-9][0-9]")):
        if path.is_dir():
            folders.setdefault(path.name, path)
    return folders


def acdc_annotated_frames(folder: Path) -> list[tuple[int, Path, Path]]:
    """Return ``(frame number, image, label)`` of a patient's annotated frames, sorted by frame number."""
    frames = []
    for gt in folder.iterdir():
        match = _ACDC_GT.match(gt.name)
        if match and match.group(1) == folder.name:
            image = gt.with_name(gt.name.replace("_gt.nii", ".nii"))
            frames.append((int(match.group(2)), image, gt))
    return sorted(frames)


def _load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI file as (float32 array without trailing singleton axes, affine)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.get_fdata(dtype=np.float32))
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, img.affine


@register("acdc", "official ACDC release (patientXXX/ folders with _frameYY.nii.gz and _gt.nii.gz)")
def prepare_acdc(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert the official ACDC NIfTI release into a dataset folder with the SSL4MIS split.

    SSL4MIS names the two annotated frames ``frame01``/``frame02`` whatever their true number
    (SSL4MIS ACDC convention): the lower frame number becomes frame01 (ED), the higher frame02 (ES).
    Images are written as float32 and labels as uint8 with the original affine (no resampling).
    """
    source = _check_source(source)
    out = Path(out)
    patients = find_acdc_patients(source)

    def locate(case: str) -> tuple[Path, Path, int] | None:
        match = _ACDC_CASE.match(case)
        folder = patients.get(match.group(1)) if match else None
        if folder is None:
            return None
        frames = acdc_annotated_frames(folder)
        slot = int(match.group(2)) - 1
        if len(frames) != 2 or not frames[slot][1].is_file():
            return None
        number, image, label = frames[slot]
        return image, label, number

    found = locate_cases(_acdc_splits(), locate, source, allow_missing)
    content = _acdc_metadata(
        "ACDC cine-MRI frame volumes from the official release; annotated frames renamed frame01 (lower "
        "frame number, ED) and frame02 (higher, ES) as in SSL4MIS; original spacing, no resampling.",
        "acdc-official-nifti",
    )
    source_frames: dict[str, str] = {}
    for split, cases in found.items():
        content[split] = []
        for case, (image_path, label_path, number) in cases:
            item = acdc_item(case)
            image, affine = _load_nifti(image_path)
            label, label_affine = _load_nifti(label_path)
            write_nifti(out / item["image"], image, affine)
            write_nifti(out / item["label"], as_label_map(label, 4, str(label_path)), label_affine, is_label=True)
            content[split].append(item)
            source_frames[case] = f"{case.split('_')[0]}_frame{number:02d}"
    content["source_frames"] = source_frames
    write_dataset_json(out, content)
    _report(out, content)
    return out


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the ``image`` and ``label`` arrays of a processed h5 volume."""
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f["image"][()]), np.asarray(f["label"][()])


@register("acdc_h5", "SSL4MIS processed ACDC volumes (data/ACDC/data/patientXXX_frameYY.h5)")
def prepare_acdc_h5(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert SSL4MIS's ACDC h5 frame volumes (``image``/``label`` stored z, y, x) into a dataset folder.

    Axes are transposed to NIfTI order (x, y, z). The h5 files carry no spacing, so unit spacing is
    written (metrics in the papers are in voxel units anyway). ``source`` may be ``data/ACDC`` or
    its ``data/`` sub-folder.
    """
    source = _check_source(source)
    out = Path(out)
    roots = [source, source / "data"]

    def locate(case: str) -> Path | None:
        return next((root / f"{case}.h5" for root in roots if (root / f"{case}.h5").is_file()), None)

    found = locate_cases(_acdc_splits(), locate, source, allow_missing)
    content = _acdc_metadata(
        "ACDC frame volumes from SSL4MIS's processed h5 files (already min-max normalised per volume), "
        "transposed from (z, y, x) to (x, y, z). The h5 files have no spacing: UNIT spacing is written, "
        "so physical-mm metrics are not available for this folder.",
        "ssl4mis-h5",
    )
    affine = spacing_affine((1.0, 1.0, 1.0))
    for split, cases in found.items():
        content[split] = []
        for case, path in cases:
            item = acdc_item(case)
            image, label = _read_h5(path)
            write_nifti(out / item["image"], image.transpose(2, 1, 0), affine)
            label = as_label_map(label, 4, str(path)).transpose(2, 1, 0)
            write_nifti(out / item["label"], label, affine, is_label=True)
            content[split].append(item)
    write_dataset_json(out, content)
    _report(out, content)
    return out


# --------------------------------------------------------------------------------------------
# LA 2018
# --------------------------------------------------------------------------------------------

LA_SPLITS = {"training": "la/train.list", "test": "la/test.list"}
LA_FOLDER = "2018LA_Seg_Training Set"


def volume_item(prefix: str, case_id: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of a 3D case: ``images/<id>.nii.gz``, ``labels/<id>.nii.gz``, ``<prefix>:<id>``.

    The prefix keeps ``case`` an identifier: MONAI's ``load_decathlon_datalist`` turns any string naming
    an existing path into that path (a path that exists is never taken as a relative name).
    """
    item = {"image": f"images/{case_id}.nii.gz"}
    if with_label:
        item["label"] = f"labels/{case_id}.nii.gz"
    item["case"] = f"{prefix}:{case_id}"
    return item


def la_item(case_id: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of LA case ``case_id`` (``LA:<id>``, files under images/ and labels/)."""
    return volume_item("LA", case_id, with_label)


def la_metadata(description: str, preprocessing: str) -> dict[str, Any]:
    """Return the descriptive dataset.json keys of an LA dataset folder."""
    return {
        "name": "LA2018",
        "description": description,
        "source_split": "yulequan/UA-MT: data/train.list, data/test.list (copies in splits/la/)",
        "labels": dict(LA_LABELS),
        "modality": {"0": "MRI"},
        "dims": 3,
        "metric_spacing": None,
        "preprocessing": preprocessing,
    }


@register("la_h5", "UA-MT processed LA volumes (2018LA_Seg_Training Set/<ID>/mri_norm2.h5)")
def prepare_la_h5(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert UA-MT's cropped, z-scored LA h5 volumes (stored x, y, z) into a dataset folder.

    Spacing 0.625 mm isotropic (the challenge's voxel size); no validation split (UA-MT has none).
    ``source`` may be the ``2018LA_Seg_Training Set`` folder or its parent ``data/``.
    """
    source = _check_source(source)
    out = Path(out)
    roots = [source, source / LA_FOLDER]

    def locate(case: str) -> Path | None:
        candidates = (root / case / "mri_norm2.h5" for root in roots)
        return next((path for path in candidates if path.is_file()), None)

    found = locate_cases({split: read_split(rel) for split, rel in LA_SPLITS.items()}, locate, source, allow_missing)
    content = la_metadata(
        "LA 2018 LGE-MRI from UA-MT's mri_norm2.h5 (z-scored, cropped around the atrium), spacing 0.625 mm.",
        "uamt-la-h5",
    )
    content.update(training=[], validation=[], test=[])
    affine = spacing_affine(LA_SPACING)
    for split, cases in found.items():
        for case, path in cases:
            item = la_item(case)
            image, label = _read_h5(path)
            write_nifti(out / item["image"], image, affine)
            write_nifti(out / item["label"], as_label_map(label, 2, str(path)), affine, is_label=True)
            content[split].append(item)
    write_dataset_json(out, content)
    _report(out, content)
    return out


# --------------------------------------------------------------------------------------------
# Shared by the 3D commands below
# --------------------------------------------------------------------------------------------


def _first_file(candidates: Iterable[Path]) -> Path | None:
    """Return the first existing file among ``candidates`` (None when there is none)."""
    return next((path for path in candidates if path.is_file()), None)


def _nifti_names(stem: str) -> tuple[str, str]:
    """Both spellings of a NIfTI file name: compressed first."""
    return f"{stem}.nii.gz", f"{stem}.nii"


def _matching_pair(image: np.ndarray, label: np.ndarray, case: str) -> None:
    """Raise ValueError naming ``case`` when image and label grids differ."""
    if image.shape != label.shape:
        raise ValueError(f"{case}: image shape {image.shape} differs from label shape {label.shape}")


def _empty_sections(content: dict[str, Any]) -> dict[str, Any]:
    """Add empty ``training``/``validation``/``test`` lists (a split without list stays present and empty)."""
    content.update(training=[], validation=[], test=[])
    return content


# --------------------------------------------------------------------------------------------
# BraTS 2019 (whole tumour from FLAIR, SSL4MIS split 250 / 25 / 60)
# --------------------------------------------------------------------------------------------

BRATS_LABELS = {"0": "background", "1": "whole tumour"}
BRATS_SPACING = (1.0, 1.0, 1.0)
BRATS_SPLITS = {"training": "brats2019/train.txt", "validation": "brats2019/val.txt", "test": "brats2019/test.txt"}


def brats_item(case_id: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of BraTS case ``case_id``: the FLAIR image only, ``case`` = ``BraTS:<id>``."""
    return volume_item("BraTS", case_id, with_label)


def _brats_splits() -> dict[str, list[str]]:
    """Read the SSL4MIS BraTS 2019 lists; DyCON's copies may carry ``,``-separated extras, so keep the id only."""
    return {split: [line.split(",")[0].strip() for line in read_split(rel)] for split, rel in BRATS_SPLITS.items()}


def brats_metadata(description: str, preprocessing: str) -> dict[str, Any]:
    """Return the descriptive dataset.json keys of a BraTS 2019 dataset folder (the SSL4MIS BraTS recipe)."""
    return {
        "name": "BraTS2019",
        "description": description,
        "source_split": "HiLab-git/SSL4MIS: data/BraTS2019/train.txt, val.txt, test.txt (copies in splits/brats2019/)",
        "labels": dict(BRATS_LABELS),
        "modality": {"0": "MRI"},
        "dims": 3,
        "metric_spacing": None,
        "preprocessing": preprocessing,
    }


@register("brats_h5", "SSL4MIS processed BraTS 2019 volumes (data/BraTS2019/data/<ID>.h5, FLAIR, stored z, y, x)")
def prepare_brats_h5(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert SSL4MIS's BraTS 2019 h5 volumes into a dataset folder with the SSL4MIS 250/25/60 split.

    The h5 files hold the FLAIR image already cropped to the brain box, clipped at the 99.9 % point and
    z-scored (SSL4MIS BraTS recipe steps 1-3) and the whole-tumour label (0/1), both stored z-first
    (SimpleITK order); they are transposed to NIfTI order (x, y, z), as DyCON does. Spacing is 1 mm
    (the challenge grid; the files carry none). ``source`` may be ``data/BraTS2019`` or its ``data/``.
    """
    source = _check_source(source)
    out = Path(out)
    roots = [source, source / "data"]

    def locate(case: str) -> Path | None:
        return _first_file(root / f"{case}.h5" for root in roots)

    found = locate_cases(_brats_splits(), locate, source, allow_missing)
    content = _empty_sections(
        brats_metadata(
            "BraTS 2019 FLAIR volumes from SSL4MIS's processed h5 files (brain box, 99.9 % clip, z-score), "
            "whole tumour (original labels 1, 2, 4) = 1, transposed from (z, y, x) to (x, y, z), spacing 1 mm.",
            "ssl4mis-brats",
        )
    )
    affine = spacing_affine(BRATS_SPACING)
    for split, cases in found.items():
        for case, path in cases:
            item = brats_item(case)
            image, label = _read_h5(path)
            _matching_pair(image, label, str(path))
            write_nifti(out / item["image"], image.transpose(2, 1, 0), affine)
            label = as_label_map(label, 2, str(path)).transpose(2, 1, 0)
            write_nifti(out / item["label"], label, affine, is_label=True)
            content[split].append(item)
    write_dataset_json(out, content)
    _report(out, content)
    return out


def find_brats_cases(source: Path) -> dict[str, Path]:
    """Map each ``BraTS19_*`` case id to its folder, searching recursively (the release has HGG/ and LGG/)."""
    folders: dict[str, Path] = {}
    for path in sorted(source.rglob("BraTS19_*")):
        if path.is_dir():
            folders.setdefault(path.name, path)
    return folders


@register("brats", "official BraTS 2019 training release ({HGG,LGG}/<ID>/<ID>_flair.nii.gz and _seg.nii.gz)")
def prepare_brats(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert the official BraTS 2019 training release into a dataset folder with the SSL4MIS split.

    Per case the FLAIR file is the image and ``seg > 0`` (labels 1, 2, 4) the whole-tumour label.
    The original 240 x 240 x 155 1 mm geometry is kept: the brain-box crop, 99.9 % clip and z-score of
    the SSL4MIS recipe are the bundle's transforms (dataset.json ``preprocessing`` "brats-raw-flair").
    ``source`` may be the release folder or any parent of its HGG/ and LGG/ folders.
    """
    source = _check_source(source)
    out = Path(out)
    folders = find_brats_cases(source)

    def locate(case: str) -> tuple[Path, Path] | None:
        folder = folders.get(case)
        if folder is None:
            return None
        image = _first_file(folder / name for name in _nifti_names(f"{case}_flair"))
        label = _first_file(folder / name for name in _nifti_names(f"{case}_seg"))
        return (image, label) if image and label else None

    found = locate_cases(_brats_splits(), locate, source, allow_missing)
    content = _empty_sections(
        brats_metadata(
            "BraTS 2019 FLAIR volumes from the official release in their original geometry (240 x 240 x 155, "
            "1 mm, skull-stripped, raw intensities); whole tumour = seg > 0. Cropping to the brain box, the "
            "99.9 % clip and the z-score (the SSL4MIS BraTS recipe) are done by the bundle's transforms.",
            "brats-raw-flair",
        )
    )
    for split, cases in found.items():
        for case, (image_path, label_path) in cases:
            item = brats_item(case)
            image, affine = _load_nifti(image_path)
            seg, label_affine = _load_nifti(label_path)
            _matching_pair(image, seg, case)
            write_nifti(out / item["image"], image, affine)
            write_nifti(out / item["label"], seg > 0, label_affine, is_label=True)
            content[split].append(item)
    write_dataset_json(out, content)
    _report(out, content)
    return out


# --------------------------------------------------------------------------------------------
# Pancreas-CT (NIH): three list families, one case numbering
# --------------------------------------------------------------------------------------------

PANCREAS_LABELS = {"0": "background", "1": "pancreas"}
PANCREAS_SPACING = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class PancreasSplit:
    """One published list family: training lists (concatenated in order) and test list."""

    training: tuple[str, ...]
    test: str
    source: str


PANCREAS_SPLITS = {
    "mcnet": PancreasSplit(
        ("pancreas_mcnet/train.list",),
        "pancreas_mcnet/test.list",
        "ycwu1997/MC-Net: data/Pancreas/train.list, test.list (copies in splits/pancreas_mcnet/)",
    ),
    "dycon_mcf": PancreasSplit(
        ("pancreas_dycon_mcf/train.list",),
        "pancreas_dycon_mcf/test.list",
        "CVML-KU/DyCON: data/Pancreas/train.list, test.list = WYC-321/MCF fold 0 "
        "(copies in splits/pancreas_dycon_mcf/)",
    ),
    "coranet": PancreasSplit(
        ("pancreas_coranet/train_lab.txt", "pancreas_coranet/train_unlab.txt"),
        "pancreas_coranet/test.txt",
        "koncle/CoraNet: data_lists/pancreas/train_lab.txt + train_unlab.txt, test.txt (copies in "
        "splits/pancreas_coranet/); training = the 12 labeled then the 50 unlabeled cases",
    ),
}
PANCREAS_CASE_MAPPING = (
    "All list families number the 82 NIH Pancreas-CT scans alike: MC-Net imageNNNN (file imageNNNN_norm.h5) "
    "= DyCON/MCF PANCREAS_NNNN.h5 = CoraNet NNNN.h5 = TCIA series PANCREAS_NNNN with label labelNNNN.nii.gz. "
    "Items are stored as case 'Pancreas:PANCREAS_NNNN' with files images/PANCREAS_NNNN.nii.gz."
)
_PANCREAS_NAME = re.compile(r"^(?:image|label|PANCREAS_)?(\d{4})(?:_norm)?(?:\.h5|\.nii|\.nii\.gz)?$", re.IGNORECASE)
# h5 naming of each group's processed release and the recipe it implies (MC-Net, DyCON/MCF, CoraNet).
_PANCREAS_H5_NAMES = {
    "mcnet-pancreas": "image{n}_norm.h5",
    "dycon-mcf-pancreas-h5": "PANCREAS_{n}.h5",
    "coranet-pancreas": "{n}.h5",
}


def pancreas_case_number(name: str) -> int:
    """Return the NIH case number of a list entry or file name of any scheme (``image0057``, ``PANCREAS_0001.h5``,
    ``0013.h5``, ``image0057_norm.h5``, ``label0057.nii.gz``); raise ValueError otherwise."""
    match = _PANCREAS_NAME.match(name.strip())
    if match is None:
        raise ValueError(f"{name!r} is not a Pancreas-CT case name (imageNNNN, PANCREAS_NNNN[.h5] or NNNN[.h5])")
    return int(match.group(1))


def pancreas_case_id(number: int) -> str:
    """Return the canonical case id ``PANCREAS_NNNN`` (the TCIA series name) of case ``number``."""
    return f"PANCREAS_{number:04d}"


def pancreas_item(number: int, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of Pancreas-CT case ``number`` (``case`` = ``Pancreas:PANCREAS_NNNN``)."""
    return volume_item("Pancreas", pancreas_case_id(number), with_label)


def pancreas_splits(split: str = "mcnet") -> dict[str, list[int]]:
    """Case numbers of the ``training`` and ``test`` lists of list family ``split`` in file order."""
    if split not in PANCREAS_SPLITS:
        raise ValueError(f"unknown Pancreas split {split!r}; choose one of {', '.join(PANCREAS_SPLITS)}")
    family = PANCREAS_SPLITS[split]
    training = [pancreas_case_number(name) for rel in family.training for name in read_split(rel)]
    return {"training": training, "test": [pancreas_case_number(name) for name in read_split(family.test)]}


def pancreas_metadata(description: str, preprocessing: str, split: str) -> dict[str, Any]:
    """Return the descriptive dataset.json keys of a Pancreas-CT dataset folder (MC-Net, DyCON/MCF, CoraNet)."""
    return {
        "name": "Pancreas-CT",
        "description": description,
        "source_split": PANCREAS_SPLITS[split].source,
        "split_family": split,
        "case_mapping": PANCREAS_CASE_MAPPING,
        "labels": dict(PANCREAS_LABELS),
        "modality": {"0": "CT"},
        "dims": 3,
        "metric_spacing": None,
        "preprocessing": preprocessing,
    }


def _locate_numbered(
    split: str, locate: Callable[[int], Any], source: Path, allow_missing: bool
) -> dict[str, list[tuple[int, Any]]]:
    """Run :func:`locate_cases` over case numbers, reporting missing cases by their canonical id."""
    numbers = pancreas_splits(split)
    by_id = {pancreas_case_id(n): n for names in numbers.values() for n in names}
    ids = {section: [pancreas_case_id(n) for n in names] for section, names in numbers.items()}
    found = locate_cases(ids, lambda case: locate(by_id[case]), source, allow_missing)
    return {section: [(by_id[case], handle) for case, handle in cases] for section, cases in found.items()}


_SPLIT_OPTION = {
    "split": {
        "choices": sorted(PANCREAS_SPLITS),
        "default": "mcnet",
        "help": "list family: mcnet (default), dycon_mcf (fold 0) or coranet (80 scans)",
    }
}


@register(
    "pancreas_h5",
    "processed Pancreas-CT h5 (MC-Net Pancreas_h5/imageNNNN_norm.h5; also DyCON PANCREAS_NNNN.h5, CoraNet NNNN.h5)",
    options=_SPLIT_OPTION,
)
def prepare_pancreas_h5(
    source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False, split: str = "mcnet"
) -> Path:
    """Convert processed Pancreas-CT h5 volumes (``image``, ``label``, stored x, y, z) into a dataset folder.

    ``split`` chooses the list family: ``mcnet`` (default; MC-Net train.list 62 in its
    shuffled order / test.list 20), ``dycon_mcf`` (PANCREAS_0001-0062 / 0063-0082) or ``coranet``
    (train_lab 12 then train_unlab 50 / test 18, 80 scans). Case names are mapped through the NIH case
    number (``image0057`` = ``PANCREAS_0057.h5`` = ``0057.h5``). Files are looked up under ``source`` and
    its ``Pancreas_h5/``, ``Pancreas_data/`` and ``pancreas_pad25/`` folders as ``imageNNNN_norm.h5``
    (MC-Net), ``PANCREAS_NNNN.h5`` (DyCON/MCF) or ``NNNN.h5`` (CoraNet); the recipe recorded in
    ``preprocessing`` follows the naming found, and mixing two groups' files is an error. The volumes
    are written as they are (windowed, cropped, normalised), spacing 1 mm, no validation split.
    """
    source = _check_source(source)
    out = Path(out)
    roots = [source, source / "Pancreas_h5", source / "Pancreas_data", source / "pancreas_pad25"]

    def locate(number: int) -> tuple[Path, str] | None:
        for recipe, pattern in _PANCREAS_H5_NAMES.items():
            path = _first_file(root / pattern.format(n=f"{number:04d}") for root in roots)
            if path is not None:
                return path, recipe
        return None

    found = _locate_numbered(split, locate, source, allow_missing)
    recipes = sorted({recipe for cases in found.values() for _, (_, recipe) in cases})
    if len(recipes) > 1:
        raise ValueError(
            f"{source} mixes h5 files of different preprocessing recipes {recipes}; keep one group's files"
        )
    content = _empty_sections(
        pancreas_metadata(
            f"Pancreas-CT from processed h5 files ({recipes[0]} naming: resampled to 1 mm, windowed, cropped "
            "around the pancreas and normalised by that group's recipe), written as stored (x, y, z), spacing "
            "1 mm. No validation split in the reference line.",
            recipes[0],
            split,
        )
    )
    affine = spacing_affine(PANCREAS_SPACING)
    for section, cases in found.items():
        for number, (path, _) in cases:
            item = pancreas_item(number)
            image, label = _read_h5(path)
            _matching_pair(image, label, str(path))
            write_nifti(out / item["image"], image, affine)
            write_nifti(out / item["label"], as_label_map(label, 2, str(path)), affine, is_label=True)
            content[section].append(item)
    write_dataset_json(out, content)
    _report(out, content)
    return out


class DicomSourceError(ValueError):
    """Raised when listed Pancreas-CT cases exist only as DICOM series (conversion is out of scope)."""


def _dicom_case_folders(source: Path) -> dict[int, Path]:
    """Map case numbers to TCIA-style folders (``PANCREAS_NNNN`` / ``Pancreas-NNNN``) holding DICOM files."""
    folders: dict[int, Path] = {}
    for path in sorted(source.rglob("*")):
        match = re.fullmatch(r"pancreas[_-](\d{4})", path.name, re.IGNORECASE)
        if match and path.is_dir() and int(match.group(1)) not in folders:
            if next((f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in ("", ".dcm")), None):
                folders[int(match.group(1))] = path
    return folders


@register(
    "pancreas",
    "NIH Pancreas-CT as NIfTI (images/PANCREAS_NNNN.nii.gz or imageNNNN.nii.gz, labels/labelNNNN.nii.gz)",
    options=_SPLIT_OPTION,
)
def prepare_pancreas(
    source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False, split: str = "mcnet"
) -> Path:
    """Convert NIH Pancreas-CT NIfTI pairs into a dataset folder ordered by the chosen list family.

    Images are ``<source>/images/PANCREAS_NNNN.nii.gz`` or ``imageNNNN.nii.gz`` (``.nii`` accepted, also
    directly in ``source``), labels ``<source>/labels/labelNNNN.nii.gz`` (the TCIA label files; also
    ``labels/PANCREAS_NNNN.nii.gz``). Intensities stay in Hounsfield units and the original geometry is
    kept: the 1 mm resampling, window and crop of the recipe (MC-Net, DyCON/MCF, CoraNet) are the bundle's
    transforms (``preprocessing`` "pancreas-raw-hu"). ``split`` as for ``pancreas_h5``.
    The TCIA images are DICOM series: converting them is out of scope here (convert each series to
    ``images/PANCREAS_NNNN.nii.gz`` first, e.g. with dcm2niix or SimpleITK); listed cases found only as
    DICOM folders raise :class:`DicomSourceError` saying so.
    """
    source = _check_source(source)
    out = Path(out)

    def locate(number: int) -> tuple[Path, Path] | None:
        n = f"{number:04d}"
        image_names = [*_nifti_names(f"PANCREAS_{n}"), *_nifti_names(f"image{n}")]
        image = _first_file(root / name for root in (source / "images", source) for name in image_names)
        # labelNNNN anywhere; PANCREAS_NNNN only inside labels/, where it cannot be the image
        label_paths = [
            source / "labels" / name for name in (*_nifti_names(f"label{n}"), *_nifti_names(f"PANCREAS_{n}"))
        ]
        label = _first_file([*label_paths, *(source / name for name in _nifti_names(f"label{n}"))])
        return (image, label) if image and label else None

    numbers = pancreas_splits(split)
    without_nifti = [n for names in numbers.values() for n in names if locate(n) is None]
    if without_nifti:
        dicom = _dicom_case_folders(source)
        as_dicom = [f"{pancreas_case_id(n)} ({dicom[n]})" for n in without_nifti if n in dicom]
        if as_dicom:
            raise DicomSourceError(
                f"{len(as_dicom)} listed case(s) under {source} are DICOM series, not NIfTI: {', '.join(as_dicom)}. "
                "DICOM conversion is out of scope for this command: convert each series to "
                f"{source / 'images'}/PANCREAS_NNNN.nii.gz (e.g. dcm2niix or SimpleITK) and rerun."
            )
    found = _locate_numbered(split, locate, source, allow_missing)
    content = _empty_sections(
        pancreas_metadata(
            "NIH Pancreas-CT in Hounsfield units and original geometry (512 x 512, 1.5-2.5 mm slices). The "
            "recipe's resampling to 1 mm, window [-125, 275] and crop are done by the bundle's transforms. "
            "No validation split in the reference line.",
            "pancreas-raw-hu",
            split,
        )
    )
    for section, cases in found.items():
        for number, (image_path, label_path) in cases:
            item = pancreas_item(number)
            image, affine = _load_nifti(image_path)
            label, label_affine = _load_nifti(label_path)
            _matching_pair(image, label, pancreas_case_id(number))
            write_nifti(out / item["image"], image, affine)
            write_nifti(out / item["label"], as_label_map(label, 2, str(label_path)), label_affine, is_label=True)
            content[section].append(item)
    write_dataset_json(out, content)
    _report(out, content)
    return out


# --------------------------------------------------------------------------------------------
# ISLES 2022 (ischaemic lesion from DWI, DyCON fold 0: 200 / 25 / 25)
# --------------------------------------------------------------------------------------------

ISLES_LABELS = {"0": "background", "1": "ischemic stroke lesion"}
ISLES_SPLITS = {"training": "isles2022/train.list", "validation": "isles2022/val.list", "test": "isles2022/test.list"}
ISLES_SESSION = "ses-0001"


def isles_item(case_id: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of ISLES case ``case_id``: the DWI image only, ``case`` = ``ISLES:<id>``."""
    return volume_item("ISLES", case_id, with_label)


def isles_metadata(description: str, preprocessing: str) -> dict[str, Any]:
    """Return the descriptive dataset.json keys of an ISLES 2022 dataset folder (dycon_isles README)."""
    return {
        "name": "ISLES2022",
        "description": description,
        "source_split": "CVML-KU/DyCON: data/ISLES2022/train.list, val.list, test.list = fold 0 of "
        "splits_fold0.json (copies in splits/isles2022/)",
        "labels": dict(ISLES_LABELS),
        "modality": {"0": "MRI"},
        "dims": 3,
        "metric_spacing": None,
        "preprocessing": preprocessing,
    }


@register("isles", "ISLES 2022 BIDS release (sub-strokecaseNNNN/ses-0001/dwi/..._dwi.nii.gz, derivatives/..._msk)")
def prepare_isles(source: str | os.PathLike, out: str | os.PathLike, allow_missing: bool = False) -> Path:
    """Convert the ISLES 2022 BIDS release into a dataset folder with DyCON's fold-0 split (200/25/25).

    Image = the DWI (b = 1000) ``sub-strokecaseNNNN/ses-0001/dwi/sub-strokecaseNNNN_ses-0001_dwi.nii.gz``
    (under ``source`` or ``source/rawdata``), label = ``derivatives/sub-strokecaseNNNN/ses-0001/
    sub-strokecaseNNNN_ses-0001_msk.nii.gz`` (binary, DWI space). ADC and FLAIR are not used. The original,
    variable geometry is kept; orientation, normalisation and resizing (dycon_isles README) are the
    bundle's transforms (``preprocessing`` "isles-raw-dwi"). ``source`` may also be the parent of ``ISLES-2022/``.
    """
    source = _check_source(source)
    out = Path(out)
    bases = [source, source / "ISLES-2022"]

    def locate(case: str) -> tuple[Path, Path] | None:
        stem = f"{case}_{ISLES_SESSION}"
        image = _first_file(
            base / raw / case / ISLES_SESSION / "dwi" / name
            for base in bases
            for raw in ("", "rawdata")
            for name in _nifti_names(f"{stem}_dwi")
        )
        label = _first_file(
            base / "derivatives" / case / ISLES_SESSION / name for base in bases for name in _nifti_names(f"{stem}_msk")
        )
        return (image, label) if image and label else None

    splits = {split: read_split(rel) for split, rel in ISLES_SPLITS.items()}
    found = locate_cases(splits, locate, source, allow_missing)
    content = _empty_sections(
        isles_metadata(
            "ISLES 2022 DWI (b = 1000) volumes with their lesion masks, original multi-centre geometry and "
            "intensities. DyCON's preprocessing is unreleased: the dycon_isles README recipe (RAS, non-zero "
            "z-score, resize) is done by the bundle's transforms.",
            "isles-raw-dwi",
        )
    )
    for split, cases in found.items():
        for case, (image_path, label_path) in cases:
            item = isles_item(case)
            image, affine = _load_nifti(image_path)
            label, label_affine = _load_nifti(label_path)
            _matching_pair(image, label, case)
            write_nifti(out / item["image"], image, affine)
            write_nifti(out / item["label"], as_label_map(label, 2, str(label_path)), label_affine, is_label=True)
            content[split].append(item)
    write_dataset_json(out, content)
    _report(out, content)
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI parser with one sub-command per registered preparer."""
    parser = argparse.ArgumentParser(prog="python -m common.data.prepare", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for preparer in PREPARERS.values():
        sub = commands.add_parser(
            preparer.name,
            help=preparer.help,
            description=inspect.cleandoc(preparer.run.__doc__ or ""),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--source", required=True, help="folder of the downloaded data")
        sub.add_argument("--out", required=True, help="dataset folder to write (dataset.json + NIfTI)")
        sub.add_argument("--allow-missing", action="store_true", help="skip listed cases that are absent")
        for keyword, settings in preparer.options.items():
            sub.add_argument("--" + keyword.replace("_", "-"), dest=keyword, **settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 with a one-line message on a data error)."""
    args = build_parser().parse_args(argv)
    preparer = PREPARERS[args.command]
    extra = {keyword: getattr(args, keyword) for keyword in preparer.options}
    try:
        preparer.run(args.source, args.out, allow_missing=args.allow_missing, **extra)
    except (FileNotFoundError, ValueError) as exc:
        print(f"prepare {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
