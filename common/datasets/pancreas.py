"""Pancreas-CT (NIH, 82 CT scans, 3D, binary): labels, the three list families, the two preparers and the phantom.

Preparers: ``pancreas_h5`` (a group's processed h5 volumes) and ``pancreas`` (NIfTI conversions of the TCIA
series). ``--split`` picks the list family (``splits/pancreas_*``): ``mcnet`` (default, ycwu1997/MC-Net),
``dycon_mcf`` (CVML-KU/DyCON = WYC-321/MCF fold 0) or ``coranet`` (koncle/CoraNet, 80 scans). All families
number the scans alike; every case is written as ``Pancreas:PANCREAS_NNNN``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.transforms import label_box
from .folder import dataset_metadata, spacing_affine, volume_item
from .phantom_parts import (
    Flavour,
    PhantomVolume,
    blur,
    ellipsoid_rho,
    frame_towards,
    phantom_metadata,
    smooth_field,
    voxel_grid,
)
from .preparer import (
    Conversion,
    Found,
    Preparer,
    Volumes,
    check_source,
    first_file,
    nifti_names,
    prepare_folder,
    read_h5,
    read_nifti_pair,
    read_split,
)

PANCREAS_LABELS = {"0": "background", "1": "pancreas"}
PANCREAS_SPACING = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class PancreasSplit:
    """One list family: training lists (concatenated in order) and test list."""

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
# h5 naming of each group's processed release and the recipe (dataset.json "preprocessing") it implies.
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
    """Return the descriptive dataset.json keys of a Pancreas-CT dataset folder."""
    return dataset_metadata(
        "Pancreas-CT",
        description,
        PANCREAS_SPLITS[split].source,
        PANCREAS_LABELS,
        "CT",
        3,
        preprocessing,
        split_family=split,
        case_mapping=PANCREAS_CASE_MAPPING,
    )


class DicomSourceError(ValueError):
    """Raised when listed Pancreas-CT cases exist only as DICOM series and the recipe keeps raw NIfTI."""


class PancreasRecipeError(ValueError):
    """Raised when processed h5 files were prepared by another recipe than the one asked for."""


# --------------------------------------------------------------------------------------------
# The CoraNet recipe (koncle/CoraNet preprocess/pancreas_preprocess.py), in NumPy/SciPy
# --------------------------------------------------------------------------------------------

CORANET_WINDOW = (-125.0, 275.0)
CORANET_MARGIN = 25
CORANET_MIN_SIZE = 96


def coranet_resample(volume: np.ndarray, in_plane_spacing: float, order: int) -> np.ndarray:
    """Resample to 1 mm taking ``in_plane_spacing`` for ALL three axes, as the official code (the slice spacing is
    discarded, so z is not 1 mm). Grid of dipy's ``reslice``: shape ``round(shape * spacing)``, output voxel ``i``
    samples input coordinate ``i / spacing``, zero outside; ``order`` 1 (image) or 0 (label)."""
    from scipy.ndimage import affine_transform

    scale = float(in_plane_spacing)
    shape = tuple(int(n) for n in np.round(np.asarray(volume.shape) * scale))
    matrix = np.full(3, 1.0 / scale)
    return affine_transform(volume.astype(np.float32), matrix, output_shape=shape, order=order, mode="constant")


def coranet_window(image: np.ndarray) -> np.ndarray:
    """Clip to [-125, 275] HU, then min-max normalise the clipped volume to [0, 1] (no z-score)."""
    clipped = np.clip(image, *CORANET_WINDOW)
    low, high = float(clipped.min()), float(clipped.max())
    return ((clipped - low) / max(high - low, 1e-12)).astype(np.float32)


def coranet_crop_box(label: np.ndarray, shape: Sequence[int]) -> list[tuple[int, int]]:
    """Per axis ``(start, stop)`` of the CoraNet ROI (:func:`common.data.label_box`: the label box + 25 voxels, at
    least 96 per axis, inside the volume); ``shape`` must be the label's."""
    if tuple(label.shape) != tuple(shape):
        raise ValueError(f"label shape {label.shape} differs from the volume's {tuple(shape)}")
    return label_box(label, CORANET_MARGIN, CORANET_MIN_SIZE)


def coranet_volumes(image_hu: np.ndarray, label: np.ndarray, in_plane_spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The official CoraNet volumes of one case (x, y, z): resample (:func:`coranet_resample`), window
    (:func:`coranet_window`), crop to the ground-truth box + 25 voxels, at least 96 per axis (zero-padded at the
    high end where the volume itself is shorter). Applied to training and test cases alike, as the official code."""
    image = coranet_window(coranet_resample(image_hu, in_plane_spacing, order=1))
    label = coranet_resample(label, in_plane_spacing, order=0).round().astype(np.uint8)
    box = coranet_crop_box(label, image.shape)
    crop = tuple(slice(start, stop) for start, stop in box)
    pad = [(0, max(CORANET_MIN_SIZE - (stop - start), 0)) for start, stop in box]
    return np.pad(image[crop], pad), np.pad(label[crop], pad)


def _h5_recipe_from_values(image: np.ndarray) -> str | None:
    """What the intensities say: CoraNet's min-max volumes lie in [0, 1]; negative values mean a z-score (MC-Net)."""
    return "z-scored (mcnet-pancreas or dycon-mcf-pancreas-h5)" if float(image.min()) < -1e-6 else None


# --------------------------------------------------------------------------------------------
# Preparers
# --------------------------------------------------------------------------------------------


def _case_ids(split: str) -> dict[str, list[str]]:
    """The lists of family ``split`` as canonical case ids (the preparers' case names)."""
    return {section: [pancreas_case_id(n) for n in numbers] for section, numbers in pancreas_splits(split).items()}


def _case_item(case_id: str) -> dict[str, str]:
    return pancreas_item(pancreas_case_number(case_id))


def _locate_h5(source: Path, case_id: str) -> tuple[Path, str] | None:
    """The processed h5 file of a case and the recipe its group's naming implies."""
    roots = [source, source / "Pancreas_h5", source / "Pancreas_data", source / "pancreas_pad25"]
    n = f"{pancreas_case_number(case_id):04d}"
    for recipe, pattern in _PANCREAS_H5_NAMES.items():
        path = first_file(root / pattern.format(n=n) for root in roots)
        if path is not None:
            return path, recipe
    return None


H5_RECIPES = {"any": "any", "coranet": "coranet-pancreas"}


def _locate_checked_h5(source: Path, case_id: str, wanted: str) -> tuple[Path, str] | None:
    found_file = _locate_h5(source, case_id)
    return None if found_file is None else _check_h5_recipe(found_file, wanted)


def _h5_metadata(source: Path, split: str, found: Found) -> dict[str, Any]:
    """The keys of a folder written from h5 files, named after the one recipe their naming implies."""
    recipes = sorted({recipe for cases in found.values() for _, (_, recipe) in cases})
    if len(recipes) > 1:
        raise ValueError(
            f"{source} mixes h5 files of different preprocessing recipes {recipes}; keep one group's files"
        )
    return pancreas_metadata(
        f"Pancreas-CT from processed h5 files ({recipes[0]} naming: resampled to 1 mm, windowed, cropped "
        "around the pancreas and normalised by that group's recipe), written as stored (x, y, z), spacing "
        "1 mm. No validation split in the reference line.",
        recipes[0],
        split,
    )


def _check_h5_recipe(found_file: tuple[Path, str], wanted: str) -> tuple[Path, str]:
    """Refuse a case file whose naming shows another recipe than ``wanted``, naming the recipe detected."""
    path, recipe = found_file
    if wanted != "any" and recipe != wanted:
        raise PancreasRecipeError(
            f"{path}: prepared by the {recipe} recipe (its file naming), not {wanted}; the CoraNet volumes are "
            "min-max windowed and cropped in 3D around the pancreas, not z-scored with full z. Prepare them with "
            "`prepare pancreas --recipe coranet` from the NIH download, or pass --recipe any to accept these files."
        )
    return found_file


def _read_checked_h5(found_file: tuple[Path, str], wanted: str) -> Volumes:
    """Read a case's h5 file, refusing intensities that contradict the recipe asked for."""
    path, recipe = _check_h5_recipe(found_file, wanted)
    volumes = read_h5(path, PANCREAS_SPACING)
    detected = _h5_recipe_from_values(volumes.image) if wanted == "coranet-pancreas" else None
    if detected is not None:
        raise PancreasRecipeError(
            f"{path}: named like {recipe} files but its intensities are {detected} (minimum "
            f"{float(volumes.image.min()):.3g}), not CoraNet's [0, 1] min-max window; use --recipe any to accept it."
        )
    return volumes


def prepare_pancreas_h5(
    source: str | os.PathLike,
    out: str | os.PathLike,
    allow_missing: bool = False,
    split: str = "mcnet",
    recipe: str | None = None,
) -> Path:
    """Convert processed Pancreas-CT h5 volumes (``image``, ``label``, stored x, y, z) into a dataset folder.

    ``split`` chooses the list family: ``mcnet`` (default; MC-Net train.list 62 in its shuffled order /
    test.list 20), ``dycon_mcf`` (PANCREAS_0001-0062 / 0063-0082) or ``coranet`` (train_lab 12 then train_unlab
    50 / test 18, 80 scans). Case names are mapped through the NIH case number (``image0057`` =
    ``PANCREAS_0057.h5`` = ``0057.h5``). Files are looked up under ``source`` and its ``Pancreas_h5/``,
    ``Pancreas_data/`` and ``pancreas_pad25/`` folders as ``imageNNNN_norm.h5`` (MC-Net), ``PANCREAS_NNNN.h5``
    (DyCON/MCF) or ``NNNN.h5`` (CoraNet); the recipe recorded in ``preprocessing`` follows the naming found,
    and mixing two groups' files is an error. The volumes are written as they are (windowed, cropped,
    normalised), spacing 1 mm, no validation split.

    ``recipe``: ``coranet`` (the default with ``split="coranet"``) accepts only CoraNet files (``NNNN.h5``, values
    in [0, 1]) and refuses others (e.g. MC-Net ``imageNNNN_norm.h5``: z-scored, full z) naming the recipe it
    detected; ``any`` (the default for the other families) accepts whichever group's files it finds.
    """
    source = check_source(source)
    recipe = recipe or ("coranet" if split == "coranet" else "any")
    if recipe not in H5_RECIPES:
        raise ValueError(f"unknown Pancreas h5 recipe {recipe!r}; choose one of {', '.join(H5_RECIPES)}")
    wanted = H5_RECIPES[recipe]
    conversion = Conversion(
        splits=_case_ids(split),
        locate=lambda root, case: _locate_checked_h5(root, case, wanted),
        read=lambda file_and_recipe: _read_checked_h5(file_and_recipe, wanted),
        item=_case_item,
        metadata=lambda found: _h5_metadata(source, split, found),
    )
    return prepare_folder(source, out, allow_missing, conversion)


def _locate_nifti(source: Path, case_id: str) -> tuple[Path, Path] | None:
    """The image and label files of a case converted to NIfTI (either image spelling, TCIA label names)."""
    n = f"{pancreas_case_number(case_id):04d}"
    image_names = [*nifti_names(f"PANCREAS_{n}"), *nifti_names(f"image{n}")]
    image = first_file(root / name for root in (source / "images", source) for name in image_names)
    # labelNNNN anywhere; PANCREAS_NNNN only inside labels/, where it cannot be the image
    label_paths = [source / "labels" / name for name in (*nifti_names(f"label{n}"), *nifti_names(f"PANCREAS_{n}"))]
    label = first_file([*label_paths, *(source / name for name in nifti_names(f"label{n}"))])
    return (image, label) if image and label else None


def _dicom_case_folders(source: Path) -> dict[int, Path]:
    """Map case numbers to TCIA-style folders (``PANCREAS_NNNN`` / ``Pancreas-NNNN``) holding DICOM files."""
    folders: dict[int, Path] = {}
    for path in sorted(source.rglob("*")):
        match = re.fullmatch(r"pancreas[_-](\d{4})", path.name, re.IGNORECASE)
        if match and path.is_dir() and int(match.group(1)) not in folders:
            if next((f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in ("", ".dcm")), None):
                folders[int(match.group(1))] = path
    return folders


def _refuse_dicom_only_cases(source: Path, splits: dict[str, list[str]]) -> None:
    """Raise :class:`DicomSourceError` naming every listed case that exists only as a DICOM series."""
    without_nifti = [case for cases in splits.values() for case in cases if _locate_nifti(source, case) is None]
    if not without_nifti:
        return
    dicom = _dicom_case_folders(source)
    as_dicom = [f"{case} ({dicom[n]})" for case in without_nifti if (n := pancreas_case_number(case)) in dicom]
    if as_dicom:
        raise DicomSourceError(
            f"{len(as_dicom)} listed case(s) under {source} are DICOM series, not NIfTI: {', '.join(as_dicom)}. "
            "DICOM conversion is out of scope for this command: convert each series to "
            f"{source / 'images'}/PANCREAS_NNNN.nii.gz (e.g. dcm2niix or SimpleITK) and rerun."
        )


def _dicom_series_folder(case_folder: Path) -> Path | None:
    """The folder holding the DICOM slices of a TCIA case (``PANCREAS_NNNN/<study>/<series>/*.dcm``)."""
    for folder in sorted([case_folder, *(p for p in case_folder.rglob("*") if p.is_dir())]):
        if any(f.is_file() and f.suffix.lower() == ".dcm" for f in folder.iterdir()):
            return folder
    return None


def _locate_official(scanned: tuple[Path, dict[int, Path], dict[int, Path]], case_id: str) -> Any:
    """A case as NIfTI pair (``_locate_nifti``) or as the official NIH download: the DICOM series of
    ``Pancreas-CT/PANCREAS_NNNN/`` and ``labelNNNN.nii.gz`` anywhere below the source (the TCIA label folder)."""
    source, dicom, labels = scanned
    pair = _locate_nifti(source, case_id)
    if pair is not None:
        return pair
    n = pancreas_case_number(case_id)
    series = _dicom_series_folder(dicom[n]) if n in dicom else None
    return (series, labels[n]) if series is not None and n in labels else None


def _scan_official(source: Path) -> tuple[Path, dict[int, Path], dict[int, Path]]:
    """The source, its TCIA DICOM case folders and its ``labelNNNN.nii.gz`` files, indexed by case number."""
    labels: dict[int, Path] = {}
    for path in sorted(source.rglob("label*.nii*")):
        match = re.fullmatch(r"label(\d{4})\.nii(\.gz)?", path.name)
        if match:
            labels.setdefault(int(match.group(1)), path)
    return source, _dicom_case_folders(source), labels


def _read_hu_case(files: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray, float]:
    """(image in HU (x, y, z), label (x, y, z), in-plane spacing) of a DICOM series folder or NIfTI image + label."""
    image_path, label_path = files
    label = read_nifti_pair((label_path, label_path)).label
    if image_path.is_dir():
        import itk

        series = itk.imread(str(image_path))
        image = np.asarray(itk.array_from_image(series), dtype=np.float32).transpose(2, 1, 0)  # (z, y, x) -> x, y, z
        in_plane = float(series.GetSpacing()[1])
    else:
        volumes = read_nifti_pair((image_path, label_path))
        image, in_plane = volumes.image, float(np.linalg.norm(volumes.image_affine[:3, 1]))
    if image.shape != label.shape:
        raise ValueError(f"{label_path}: label shape {label.shape} differs from {image_path}'s {image.shape}")
    return image, label, in_plane


def _read_coranet_case(files: tuple[Path, Path]) -> Volumes:
    image, label, in_plane = _read_hu_case(files)
    try:
        image, label = coranet_volumes(image, label, in_plane)
    except ValueError as err:
        raise ValueError(f"{files[1]}: {err}") from err
    affine = spacing_affine(PANCREAS_SPACING)
    return Volumes(image, label, affine, affine, name=str(files[1]))


def prepare_pancreas(
    source: str | os.PathLike,
    out: str | os.PathLike,
    allow_missing: bool = False,
    split: str = "mcnet",
    recipe: str = "raw",
) -> Path:
    """Convert NIH Pancreas-CT NIfTI pairs into a dataset folder ordered by the chosen list family.

    Images are ``<source>/images/PANCREAS_NNNN.nii.gz`` or ``imageNNNN.nii.gz`` (``.nii`` accepted, also
    directly in ``source``), labels ``<source>/labels/labelNNNN.nii.gz`` (the TCIA label files; also
    ``labels/PANCREAS_NNNN.nii.gz``). Intensities stay in Hounsfield units and the original geometry is
    kept: the 1 mm resampling, window and crop of the recipe are the bundle's transforms (``preprocessing``
    "pancreas-raw-hu"). ``split`` as for ``pancreas_h5``.
    The TCIA images are DICOM series: converting them is out of scope here (convert each series to
    ``images/PANCREAS_NNNN.nii.gz`` first, e.g. with dcm2niix or SimpleITK); listed cases found only as
    DICOM folders raise :class:`DicomSourceError` saying so.

    ``recipe="coranet"`` writes the CoraNet volumes instead (:func:`coranet_volumes`: in-plane spacing on all axes,
    window [-125, 275] then min-max, ground-truth box + 25 voxels, at least 96), from NIfTI pairs as above or from
    the official NIH download itself: the DICOM series ``Pancreas-CT/PANCREAS_NNNN/<study>/<series>/*.dcm`` (read
    with ITK) and ``TCIA_pancreas_labels-*/labelNNNN.nii.gz``; ``preprocessing`` "coranet-pancreas", spacing 1 mm.
    """
    if recipe not in ("raw", "coranet"):
        raise ValueError(f"unknown Pancreas recipe {recipe!r}; choose raw or coranet")
    source = check_source(source)
    splits = _case_ids(split)
    if recipe == "coranet":
        return prepare_folder(source, out, allow_missing, _coranet_conversion(splits, split))
    _refuse_dicom_only_cases(source, splits)
    conversion = Conversion(
        splits=splits,
        locate=_locate_nifti,
        item=_case_item,
        metadata=pancreas_metadata(
            "NIH Pancreas-CT in Hounsfield units and original geometry (512 x 512, 1.5-2.5 mm slices). The "
            "recipe's resampling to 1 mm, window [-125, 275] and crop are done by the bundle's transforms. "
            "No validation split in the reference line.",
            "pancreas-raw-hu",
            split,
        ),
    )
    return prepare_folder(source, out, allow_missing, conversion)


def _coranet_conversion(splits: dict[str, list[str]], split: str) -> Conversion:
    return Conversion(
        splits=splits,
        scan=_scan_official,
        locate=_locate_official,
        read=_read_coranet_case,
        item=_case_item,
        metadata=pancreas_metadata(
            "NIH Pancreas-CT prepared by the CoraNet recipe (koncle/CoraNet preprocess/pancreas_preprocess.py): "
            "resampled with the in-plane spacing on all three axes (z is not 1 mm), window [-125, 275] HU then "
            "min-max to [0, 1], cropped to the ground-truth box + 25 voxels (at least 96 per axis) on training and "
            "test cases, stored (x, y, z), spacing 1 mm. No validation split in the reference line.",
            "coranet-pancreas",
            split,
        ),
    )


_SPLIT_OPTION = {
    "split": {
        "choices": sorted(PANCREAS_SPLITS),
        "default": "mcnet",
        "help": "list family: mcnet (default), dycon_mcf (fold 0) or coranet (80 scans)",
    }
}
_H5_RECIPE_OPTION = {
    "recipe": {
        "choices": sorted(H5_RECIPES),
        "default": None,
        "help": "coranet: accept only CoraNet NNNN.h5 files (default with --split coranet); any: whichever group's",
    }
}
_RAW_RECIPE_OPTION = {
    "recipe": {
        "choices": ["coranet", "raw"],
        "default": "raw",
        "help": "raw: NIfTI in HU, geometry kept (default); coranet: the CoraNet volumes, also from the DICOM download",
    }
}
PREPARERS = (
    Preparer(
        "pancreas_h5",
        "processed Pancreas-CT h5 (MC-Net Pancreas_h5/imageNNNN_norm.h5; also DyCON PANCREAS_NNNN.h5, CoraNet NNNN.h5)",
        prepare_pancreas_h5,
        {**_SPLIT_OPTION, **_H5_RECIPE_OPTION},
    ),
    Preparer(
        "pancreas",
        "NIH Pancreas-CT: NIfTI (images/PANCREAS_NNNN.nii.gz, labels/labelNNNN.nii.gz) or, with --recipe coranet, the "
        "official download (Pancreas-CT/PANCREAS_NNNN DICOM series, TCIA_pancreas_labels-*/labelNNNN.nii.gz)",
        prepare_pancreas,
        {**_SPLIT_OPTION, **_RAW_RECIPE_OPTION},
    ),
)


# --------------------------------------------------------------------------------------------
# Phantom: contrast-enhanced abdominal CT in Hounsfield units with the pancreas labelled, 1 mm
# --------------------------------------------------------------------------------------------

PHANTOM_DESCRIPTION = (
    "Synthetic contrast-enhanced abdominal CT-like volumes in Hounsfield units standing in for NIH Pancreas-CT: "
    "fat, muscle, spine, aorta/IVC, liver, spleen, kidneys, stomach, bowel loops, duodenum and splenic vein "
    "around one small, elongated, lobulated pancreas (label 1) of similar density, CT noise, spacing 1 mm, not "
    "windowed. For demos and tests only."
)

PANCREAS_DEFAULT_SHAPE = (64, 64, 48)
# Hounsfield units of a portal-venous phase CT. The pancreas (~100) sits among organs and vessels of
# similar density (liver, spleen, bowel wall, duodenum, splenic vein), so HU alone cannot find it.
PANCREAS_HU = {
    "air": -1000.0,
    "fat": -100.0,
    "muscle": 45.0,
    "liver": 105.0,
    "spleen": 115.0,
    "kidney": 170.0,
    "kidney_inner": 35.0,
    "aorta": 180.0,
    "ivc": 130.0,
    "portal_vein": 160.0,
    "bowel_wall": 95.0,
    "fluid": 15.0,
    "oral_contrast": 260.0,
    "duodenum": 80.0,
    "pancreas": 100.0,
    "cancellous": 720.0,
    "cortical_bone": 1100.0,
    "canal": 25.0,
}


def _pancreas_curve(rng: np.random.Generator, dims: np.ndarray):
    """Centre line of the pancreas from head (u = 0, right of the midline) to tail (u = 1, spleen hilum).

    Returns a function u -> (x, y, z); a quadratic Bezier curve that bows anteriorly over the spine,
    with the tail higher than the head as in real anatomy.
    """
    jitter = rng.uniform(-0.03, 0.03, size=(3, 3))
    head = dims * (np.array([0.38, 0.50, 0.46]) + jitter[0])
    apex = dims * (np.array([0.54, 0.40, 0.50]) + jitter[1])
    tail = dims * (np.array([0.74, 0.60, 0.58]) + jitter[2])

    def point(u: float) -> np.ndarray:
        return (1 - u) ** 2 * head + 2 * u * (1 - u) * apex + u**2 * tail

    return point


def _pancreas_organ(rng: np.random.Generator, coords: Sequence[np.ndarray], dims: np.ndarray):
    """Lobulated pancreas: a chain of overlapping ellipsoids along the curve, thick head, thin tail.

    Returns (normalised radius rho, < 1 inside; curve function; list of (centre, in-plane radius)).
    """
    curve = _pancreas_curve(rng, dims)
    s = float(min(dims[0], dims[1]))
    warp = 0.025 * s  # small, high-frequency warp: lobulated outline
    warped = [c + warp * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=4.0) for c in coords]
    rhos, parts = [], []
    steps = np.linspace(0.0, 1.0, 9)
    for u in steps:
        center = curve(u) + rng.normal(0.0, 0.01 * s, size=3)
        tangent = curve(min(u + 0.05, 1.0)) - curve(max(u - 0.05, 0.0))
        width = (0.085 - 0.045 * u) * s * rng.uniform(0.85, 1.15)  # head about twice as thick as the tail
        height = max((0.14 - 0.07 * u) * dims[2] * rng.uniform(0.85, 1.15), 1.2)
        along = max(0.9 * np.linalg.norm(curve(1.0) - curve(0.0)) / (len(steps) - 1), 1.5)
        radii = (height, max(width, 1.2), along)  # rows of frame_towards: ~z, in-plane normal, tangent
        rhos.append(ellipsoid_rho(warped, center, radii, frame_towards(tangent)))
        parts.append((center, max(width, 1.2)))
    return np.min(rhos, axis=0), curve, parts


def pancreas_subject(
    rng: np.random.Generator, number: int, shape: tuple[int, ...] | None, with_label: bool = True
) -> list[PhantomVolume]:
    """One Pancreas-CT-like case in Hounsfield units with the pancreas labelled (default 64 x 64 x 48, 1 mm).

    An abdomen cross-section scaled into the grid: air, subcutaneous and visceral fat, muscle wall,
    spine, aorta/IVC, liver, spleen, kidneys, stomach, bowel loops, duodenum wrapping the pancreas head
    and the splenic vein along its back. Blur and Gaussian noise (8-15 HU) as in CT; values rounded to
    integers. Images stay in HU: the bundle windows them ([-125, 275]).
    """
    dims = np.array(shape or PANCREAS_DEFAULT_SHAPE)
    hu = {name: value + rng.normal(0.0, 8.0) for name, value in PANCREAS_HU.items()}
    hu["air"], hu["fat"] = -1000.0, -100.0 + rng.normal(0.0, 10.0)
    coords = voxel_grid(dims)
    x, y, z = coords
    s = float(min(dims[0], dims[1]))
    image = np.full(tuple(dims), hu["air"])

    def paint(mask: np.ndarray, value: float) -> None:
        image[mask] = value

    def blob(center_frac, radii_frac, jitter: float = 0.02) -> np.ndarray:
        center = dims * (np.asarray(center_frac) + rng.uniform(-jitter, jitter, size=3))
        radii = np.maximum(dims * np.asarray(radii_frac) * rng.uniform(0.9, 1.1, size=3), 0.8)
        return ellipsoid_rho(coords, center, radii) < 1

    body_radii = dims[:2] * np.array([0.46, 0.38]) * rng.uniform(0.92, 1.0, size=2)
    body_center = dims[:2] * np.array([0.5, 0.53])
    body = ellipsoid_rho(coords[:2], body_center, body_radii)
    fat_width = rng.uniform(0.06, 0.12)
    paint(body < 1, hu["fat"])
    paint(body < 1 - fat_width, hu["muscle"])
    paint(body < 1 - fat_width - 0.06, hu["fat"] + rng.normal(0.0, 5.0))  # visceral fat

    spine_center = dims[:2] * np.array([0.5, 0.79])
    spine_r = 0.075 * s
    for side in (-1.0, 1.0):  # paraspinal muscles
        paint(
            ellipsoid_rho(
                coords[:2],
                spine_center + np.array([side * 1.6 * spine_r, 0.9 * spine_r]),
                (1.1 * spine_r, 1.2 * spine_r),
            )
            < 1,
            hu["muscle"],
        )
    vertebra = ellipsoid_rho(coords[:2], spine_center, (spine_r, 0.85 * spine_r))
    paint(vertebra < 1, hu["cortical_bone"])
    paint(vertebra < 0.75, hu["cancellous"])
    canal = ellipsoid_rho(coords[:2], spine_center + np.array([0.0, 1.35 * spine_r]), (0.45 * spine_r, 0.4 * spine_r))
    paint(
        ellipsoid_rho(coords[:2], spine_center + np.array([0.0, 1.4 * spine_r]), (0.8 * spine_r, 0.7 * spine_r)) < 1,
        hu["cortical_bone"],
    )
    paint(canal < 1, hu["canal"])

    liver = blob((0.25, 0.43, 0.74), (0.19, 0.25, 0.38)) & (body < 1 - fat_width - 0.06)
    paint(liver, hu["liver"])
    paint(blob((0.30, 0.36, 0.55), (0.05, 0.05, 0.08)) & liver, hu["fluid"])  # gallbladder
    paint(blob((0.78, 0.64, 0.68), (0.09, 0.12, 0.24)), hu["spleen"])
    for cx in (0.31, 0.69):
        kidney_center, kidney_radii = (cx, 0.73, 0.38), (0.07, 0.09, 0.2)
        paint(blob(kidney_center, kidney_radii, jitter=0.01), hu["kidney"])
        paint(blob(kidney_center, np.array(kidney_radii) * 0.45, jitter=0.005), hu["kidney_inner"])
    stomach = blob((0.64, 0.33, 0.74), (0.14, 0.11, 0.2))
    paint(stomach, hu["bowel_wall"] - 30.0)
    lumen = stomach & blob((0.64, 0.33, 0.74), (0.11, 0.08, 0.17), jitter=0.0)
    paint(lumen, hu["fluid"])
    paint(lumen & (y < dims[1] * 0.3), hu["air"])  # gas above the fluid level (patient supine)
    for _ in range(int(rng.integers(6, 11))):  # bowel loops below and in front of the pancreas
        center = (rng.uniform(0.25, 0.75), rng.uniform(0.2, 0.55), rng.uniform(0.05, 0.5))
        loop = blob(center, (0.06, 0.06, 0.1), jitter=0.0) & (body < 1 - fat_width - 0.06)
        paint(loop, hu["bowel_wall"])
        content = rng.choice(["fluid", "air", "oral_contrast"], p=[0.5, 0.25, 0.25])
        paint(loop & blob(center, (0.03, 0.03, 0.06), jitter=0.0), hu[str(content)])

    rho_organ, curve, parts = _pancreas_organ(rng, coords, dims)
    organ = rho_organ < 1
    # Peripancreatic fat: a thin, patchy fat plane around the gland; the duodenum and vessels painted
    # next touch the gland directly, as in real scans.
    patches = smooth_field(rng, dims.astype(int), num_waves=5, max_cycles=3.0)
    paint((rho_organ < 1.3) & ~organ & (patches > -0.2) & (body < 1 - fat_width - 0.06), hu["fat"])
    head_center, head_width = parts[0]
    # Duodenum: a C-shaped tube hugging the head on its right side, same height as the head.
    ring = np.hypot(x - head_center[0], y - head_center[1])
    duodenum = (np.abs(ring - 1.6 * head_width) < max(0.035 * s, 0.8)) & (x < head_center[0] + 0.3 * head_width)
    duodenum &= np.abs(z - head_center[2]) < max(0.18 * dims[2], 1.5)
    paint(duodenum, hu["duodenum"])
    # Splenic vein along the back of body and tail; superior mesenteric vessels below the neck.
    vein_r = max(0.022 * s, 0.7)
    for u in np.linspace(0.35, 1.0, 12):
        center = curve(u) + np.array([0.0, parts[int(round(u * 8))][1] + vein_r, 0.0])
        paint(ellipsoid_rho(coords, center, (vein_r, vein_r, vein_r)) < 1, hu["portal_vein"])
    neck = curve(0.3)
    for dx, key in ((-0.02, "portal_vein"), (0.03, "aorta")):
        vessel = ellipsoid_rho(coords[:2], (neck[0] + dx * s, neck[1] + 0.12 * s), (vein_r, vein_r)) < 1
        paint(vessel & (z < neck[2]), hu[key])
    paint(ellipsoid_rho(coords[:2], dims[:2] * (0.54, 0.66), (0.045 * s, 0.045 * s)) < 1, hu["aorta"])
    paint(ellipsoid_rho(coords[:2], dims[:2] * (0.41, 0.65), (0.05 * s, 0.035 * s)) < 1, hu["ivc"])

    texture = 1.0 + 0.06 * smooth_field(rng, dims.astype(int), num_waves=6, max_cycles=6.0)  # lobular texture
    image[organ] = hu["pancreas"] * texture[organ]
    image = blur(image, axes=(0, 1, 2)) + rng.normal(0.0, rng.uniform(8.0, 15.0), size=image.shape)
    image = np.round(np.clip(image, -1024.0, 3071.0))
    item = volume_item("Pancreas", f"phantom{number:03d}", with_label)
    return [PhantomVolume(item=item, image=image, label=organ.astype(np.uint8), spacing=PANCREAS_SPACING)]


PHANTOM = Flavour(
    make_subject=pancreas_subject,
    default_counts=(8, 0, 2),
    metadata=phantom_metadata("Pancreas-CT-phantom", PHANTOM_DESCRIPTION, PANCREAS_LABELS, "CT", 3, "phantom-pancreas"),
)
