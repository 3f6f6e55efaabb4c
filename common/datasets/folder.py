"""Writing a dataset folder: NIfTI images and labels, their dataset.json items and descriptive keys.

Shared by the preparers of real downloads and the phantom generators, so both write the layout that
``common/data/contract.py`` reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = ("training", "validation", "test")  # always written; a dataset without such a list leaves it empty


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


def as_label_map(
    array: np.ndarray,
    num_classes: int,
    name: str,
    image_shape: tuple[int, ...] | None = None,
    merge_foreground: bool = False,
) -> np.ndarray:
    """Return a source label in the one layout every dataset folder stores: uint8 classes ``0..num_classes-1``.

    ``merge_foreground`` first turns every positive value into class 1 (BraTS' whole tumour from its labels
    1, 2 and 4). With ``image_shape`` the label must lie on the image's grid. Errors name ``name``, the file.
    """
    array = np.asarray(array)
    if image_shape is not None and tuple(image_shape) != array.shape:
        raise ValueError(f"{name}: image shape {tuple(image_shape)} differs from label shape {array.shape}")
    if merge_foreground:
        array = array > 0
    values = np.unique(array)
    bad = [v for v in values.tolist() if v != int(v) or not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"{name}: label values {bad[:10]} outside 0..{num_classes - 1}")
    return array.astype(np.uint8)


def volume_item(prefix: str, case_id: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of a 3D case: ``images/<id>.nii.gz``, ``labels/<id>.nii.gz``, ``<prefix>:<id>``.

    The prefix keeps ``case`` an identifier: MONAI's ``load_decathlon_datalist`` turns any string naming
    an existing path into that path.
    """
    item = {"image": f"images/{case_id}.nii.gz"}
    if with_label:
        item["label"] = f"labels/{case_id}.nii.gz"
    item["case"] = f"{prefix}:{case_id}"
    return item


def frame_item(case: str, patient: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of a frame volume ``<subject>_<frame>`` of a cine dataset (ACDC, York):
    ``<subject>/<case>.nii.gz`` (+ ``_gt`` label); ``patient`` groups the frames of one subject for ``num_labeled``."""
    subject = case.split("_")[0]
    item = {"image": f"{subject}/{case}.nii.gz"}
    if with_label:
        item["label"] = f"{subject}/{case}_gt.nii.gz"
    item["case"] = case
    if with_label:
        item["patient"] = patient
    return item


def dataset_metadata(
    name: str,
    description: str,
    source_split: str,
    labels: Mapping[str, str],
    modality: str,
    dims: int,
    preprocessing: str,
    **details: Any,
) -> dict[str, Any]:
    """Return the descriptive dataset.json keys in the order every dataset folder writes them.

    ``details`` are a dataset's own keys, written right after ``source_split`` (ACDC's ``source_format``,
    Pancreas-CT's ``split_family`` and ``case_mapping``). ``metric_spacing`` is None: metrics in voxel units.
    """
    return {
        "name": name,
        "description": description,
        "source_split": source_split,
        **details,
        "labels": dict(labels),
        "modality": {"0": modality},
        "dims": dims,
        "metric_spacing": None,
        "preprocessing": preprocessing,
    }
