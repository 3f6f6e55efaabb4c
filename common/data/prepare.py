"""Turn users' downloads into dataset folders (protocol.md §5) ordered by the papers' split lists.

Every command reads the reference split lists shipped in ``splits/`` next to this file, finds each
listed case in the user's download, converts it to NIfTI and writes ``dataset.json`` with
``training`` / ``validation`` / ``test`` in list-file order, so "the first N training items" is the
papers' labeled subset.

Usage::

    python -m common.data.prepare acdc    --source <ACDC download>       --out <dataset folder>
    python -m common.data.prepare acdc_h5 --source <SSL4MIS data/ACDC>   --out <dataset folder>
    python -m common.data.prepare la_h5   --source <UA-MT data/2018LA_Seg_Training Set> --out <folder>

Missing cases are an error listing all of them; ``--allow-missing`` skips them with a warning.
A new dataset is one more function decorated with :func:`register` (see :func:`prepare_la_h5`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    """One prepare command: its CLI name, help text and the function doing the work."""

    name: str
    help: str
    run: Callable[..., Path]


PREPARERS: dict[str, Preparer] = {}


def register(name: str, help: str) -> Callable[[Callable[..., Path]], Callable[..., Path]]:
    """Decorator adding a ``prepare_<dataset>(source, out, allow_missing=False) -> Path`` to the CLI."""

    def decorate(func: Callable[..., Path]) -> Callable[..., Path]:
        PREPARERS[name] = Preparer(name=name, help=help, run=func)
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
    (protocol.md §2.1): the lower frame number becomes frame01 (ED), the higher frame02 (ES).
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


def la_item(case_id: str, with_label: bool = True) -> dict[str, str]:
    """Return the dataset.json item of LA case ``case_id``.

    Files go under ``images/`` and ``labels/`` and the case is stored as ``LA:<id>``, so no id
    names an existing path (MONAI would turn it into one).
    """
    item = {"image": f"images/{case_id}.nii.gz"}
    if with_label:
        item["label"] = f"labels/{case_id}.nii.gz"
    item["case"] = f"LA:{case_id}"
    return item


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
# CLI
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI parser with one sub-command per registered preparer."""
    parser = argparse.ArgumentParser(prog="python -m common.data.prepare", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for preparer in PREPARERS.values():
        sub = commands.add_parser(preparer.name, help=preparer.help, description=preparer.run.__doc__)
        sub.add_argument("--source", required=True, help="folder of the downloaded data")
        sub.add_argument("--out", required=True, help="dataset folder to write (dataset.json + NIfTI)")
        sub.add_argument("--allow-missing", action="store_true", help="skip listed cases that are absent")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 with a one-line message on a data error)."""
    args = build_parser().parse_args(argv)
    try:
        PREPARERS[args.command].run(args.source, args.out, allow_missing=args.allow_missing)
    except (FileNotFoundError, ValueError) as exc:
        print(f"prepare {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
