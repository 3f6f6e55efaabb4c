"""The dataset-folder contract (README.md): ``dataset.json`` plus NIfTI files, paths relative to the folder.

``semi_supervised_datalists`` turns a folder into the lists a bundle trains on: the first ``num_labeled``
training cases (patients, where items carry ``patient``) are the labeled stream; the remaining training cases
and the optional ``unlabeled`` section feed the unlabeled stream with their label key removed here, before any
transform, so no label can leak into an unsupervised loss. Problems are reported as ``DatasetError`` naming the
folder or file and what is wrong.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DatasetError",
    "check_num_classes",
    "load_dataset_json",
    "resolve_items",
    "split_labeled",
    "semi_supervised_datalists",
    "dataset_labels",
    "inference_datalist",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")

PATH_KEYS = ("image", "label")
SECTIONS = ("training", "unlabeled", "validation", "test")


class DatasetError(ValueError):
    """A dataset folder, its ``dataset.json`` or one of its files breaks the contract."""


def load_dataset_json(dataset_dir: str | Path) -> dict[str, Any]:
    """Read and check ``<dataset_dir>/dataset.json``: it must hold ``labels`` and a non-empty ``training`` list."""
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise DatasetError(f"Dataset folder {folder} does not exist (set --dataset_dir to a prepared dataset folder).")
    path = folder / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path} is missing: a dataset folder needs a dataset.json (see README.md).")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON: {err}.") from err
    if not isinstance(meta, dict):
        raise DatasetError(f"{path} must hold a JSON object, found {type(meta).__name__}.")
    if not isinstance(meta.get("labels"), Mapping) or not meta["labels"]:
        raise DatasetError(f'{path} needs \'labels\' (class index -> name), e.g. {{"0": "background", ...}}.')
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise DatasetError(f"{path} needs a non-empty 'training' list of {{'image', 'label'}} items.")
    for section in SECTIONS:
        value = meta.get(section, [])
        if not isinstance(value, list):
            raise DatasetError(f"{path}: '{section}' must be a list, found {type(value).__name__}.")
    return meta


def check_num_classes(meta: Mapping[str, Any], num_classes: int | None, path: str | Path) -> None:
    """Refuse a bundle whose ``num_classes`` differs from the number of ``labels`` of the dataset at ``path``.

    A 4-class bundle would otherwise train on a 3-class folder without a word, and a model of the wrong width
    fail only later, when a checkpoint is loaded (``size mismatch for ...out_conv...``). ``None`` skips the check.
    """
    if num_classes is None:
        return
    labels = meta.get("labels") or {}
    if int(num_classes) != len(labels):
        raise DatasetError(
            f"{path}: the bundle's num_classes is {num_classes} but the dataset's 'labels' name {len(labels)} "
            f"classes ({', '.join(f'{k}: {v}' for k, v in labels.items())}); set --num_classes {len(labels)} or "
            "use a dataset folder with the bundle's classes."
        )


def dataset_labels(dataset_dir: str | Path) -> dict[str, str]:
    """Class index -> name mapping of a dataset folder."""
    return dict(load_dataset_json(dataset_dir)["labels"])


def resolve_items(
    dataset_dir: str | Path, items: Sequence[Mapping[str, Any]], section: str, require_label: bool
) -> list[dict[str, Any]]:
    """Absolute paths for the ``image``/``label`` entries of ``items``; every missing file is reported at once."""
    folder = Path(dataset_dir).resolve()
    resolved, problems = [], []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or "image" not in item:
            problems.append(f"{section}[{index}] has no 'image' entry")
            continue
        if require_label and "label" not in item:
            problems.append(f"{section}[{index}] ({item['image']}) has no 'label' entry")
            continue
        out = dict(item)
        for key in PATH_KEYS:
            if key in out:
                path = folder / str(out[key])
                if not path.is_file():
                    problems.append(f"{section}[{index}] {key} file {path} does not exist")
                out[key] = str(path)
        resolved.append(out)
    if problems:
        listing = "\n  ".join(problems)
        raise DatasetError(f"{folder / 'dataset.json'} lists files that cannot be used:\n  {listing}")
    return resolved


def _group_key(item: Mapping[str, Any], index: int) -> str:
    return str(item.get("patient", item.get("case", item.get("image", index))))


def split_labeled(
    items: Sequence[Mapping[str, Any]], num_labeled: int | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """First ``num_labeled`` groups of ``items`` (patients where items carry ``patient``, else cases) and the rest.

    ``num_labeled`` of ``None`` or a negative value takes every item (fully supervised upper bound). The rest is
    returned without its ``label`` key.
    """
    groups: list[str] = []
    for index, item in enumerate(items):
        key = _group_key(item, index)
        if key not in groups:
            groups.append(key)
    if num_labeled is None or num_labeled < 0:
        num_labeled = len(groups)
    if num_labeled == 0:
        raise DatasetError("num_labeled is 0: a run needs at least one labeled case.")
    if num_labeled > len(groups):
        unit = "patients" if any("patient" in item for item in items) else "cases"
        raise DatasetError(f"num_labeled={num_labeled} exceeds the {len(groups)} {unit} of the training list.")
    chosen = set(groups[:num_labeled])
    labeled = [dict(item) for i, item in enumerate(items) if _group_key(item, i) in chosen]
    unlabeled = [
        {k: v for k, v in item.items() if k != "label"}
        for i, item in enumerate(items)
        if _group_key(item, i) not in chosen
    ]
    return labeled, unlabeled


def semi_supervised_datalists(
    dataset_dir: str | Path,
    num_labeled: int | None,
    use_extra_unlabeled: bool = True,
    require_unlabeled: bool = False,
    num_classes: int | None = None,
    validation_from: str = "validation",
    test_from: str = "test",
    keep_unlabeled_labels: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Lists ``labeled``, ``unlabeled``, ``validation`` and ``test`` of a dataset folder with absolute paths.

    Args:
        dataset_dir: folder holding ``dataset.json``.
        num_labeled: labeled patients/cases taken from the head of ``training`` (the papers' "first N").
        use_extra_unlabeled: append the images of the optional ``unlabeled`` section to the unlabeled stream.
        require_unlabeled: refuse a split that leaves the unlabeled stream empty (semi-supervised bundles).
        num_classes: the bundle's class count, refused when it differs from the folder's ``labels`` (None: no check).
        validation_from, test_from: the cases the ``validation`` (checkpoint selection) and ``test`` lists hold: a
            section name, or ``"training:N"`` for the first N training cases. Anything but the defaults is a paper-
            protocol reproduction that leaks (configs/paper_protocol.json of the bundles that need one).
        keep_unlabeled_labels: keep the labels of the unlabeled stream (DyCON's official FeCL reads them: a leak,
            paper-protocol reproduction only).
    """
    meta = load_dataset_json(dataset_dir)
    check_num_classes(meta, num_classes, Path(dataset_dir) / "dataset.json")
    training = resolve_items(dataset_dir, meta["training"], "training", require_label=True)
    labeled, unlabeled = split_labeled(training, num_labeled)
    if use_extra_unlabeled:
        extra = resolve_items(dataset_dir, meta.get("unlabeled", []), "unlabeled", require_label=False)
        unlabeled += [{k: v for k, v in item.items() if k != "label"} for item in extra]
    if require_unlabeled and not unlabeled:
        raise DatasetError(
            f"{Path(dataset_dir) / 'dataset.json'}: num_labeled={num_labeled} leaves no unlabeled images for a "
            "semi-supervised method; lower num_labeled, add an 'unlabeled' section, train the supervised bundle, or "
            "set allow_supervised_only true to train the method's supervised part only."
        )
    if keep_unlabeled_labels:
        labels = {item["image"]: item["label"] for item in training}
        unlabeled = [
            {**item, **({"label": labels[item["image"]]} if item["image"] in labels else {})} for item in unlabeled
        ]
    sections = {
        section: resolve_items(dataset_dir, meta.get(section, []), section, require_label=True)
        for section in ("validation", "test")
    }
    return {
        "labeled": labeled,
        "unlabeled": unlabeled,
        "validation": _cases_from(validation_from, sections, training),
        "test": _cases_from(test_from, sections, training),
    }


def _cases_from(source: str, sections: Mapping[str, list], training: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The list named by ``source``: ``validation``, ``test`` or ``training:N`` (the first N training cases)."""
    if source in sections:
        return sections[source]
    name, _, count = source.partition(":")
    if name != "training" or not count.isdigit():
        raise DatasetError(f"unknown evaluation list {source!r}: use validation, test or training:N")
    return [dict(item) for item in training[: int(count)]]


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))


def inference_datalist(
    dataset_dir: str | Path, datalist: str | Path | None = None, section: str = "test", num_classes: int | None = None
) -> list[dict[str, str]]:
    """Images to segment, as ``[{"image": path}]``; labels are never read.

    ``datalist`` may be a ``dataset.json``-style file (its ``section`` list), a folder of NIfTI files or a glob
    pattern; without it, ``dataset_dir`` is used: its ``dataset.json`` ``section`` when there is one, else every
    NIfTI file below it. ``num_classes`` is checked against the ``labels`` of a dataset.json it reads (a folder or
    glob of plain NIfTI files has none to check against).
    """
    source = Path(datalist) if datalist else Path(dataset_dir)
    if datalist and glob.has_magic(str(datalist)):
        files = sorted(Path(p) for p in glob.glob(str(datalist), recursive=True))
    elif source.is_file():
        meta = json.loads(source.read_text())
        if "labels" in meta:
            check_num_classes(meta, num_classes, source)
        items = resolve_items(source.parent, meta.get(section, []), section, require_label=False)
        files = [Path(item["image"]) for item in items]
    elif (source / "dataset.json").is_file():
        meta = load_dataset_json(source)
        check_num_classes(meta, num_classes, source / "dataset.json")
        items = resolve_items(source, meta.get(section, []), section, require_label=False)
        files = [Path(item["image"]) for item in items]
    elif source.is_dir():
        files = _nifti_files(source)
    else:
        raise DatasetError(f"{source} is neither a dataset folder, a datalist file, a NIfTI folder nor a glob.")
    if not files:
        raise DatasetError(f"No images to segment were found in {source} (section '{section}').")
    return [{"image": str(path)} for path in files]
