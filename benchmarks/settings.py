"""Reference sizes of the benchmark, the bundles it knows and the typical case size of each dataset."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"

CPU_THREADS = 2  # issue #11: "2 threads on CPU"


@dataclass(frozen=True)
class Reference:
    """The training size every bundle of one dimensionality is benchmarked at."""

    dims: int
    patch: tuple[int, ...]
    labeled_batch: int
    unlabeled_batch: int
    iterations_per_round: int  # iterations timed together as one round
    rounds: int  # timed rounds after the warm-up round (at least 3)


REFERENCES = {
    2: Reference(dims=2, patch=(128, 128), labeled_batch=4, unlabeled_batch=4, iterations_per_round=4, rounds=5),
    3: Reference(dims=3, patch=(64, 64, 64), labeled_batch=2, unlabeled_batch=2, iterations_per_round=1, rounds=5),
}

# A typical case of each dataset as its prepared dataset folder holds it (protocol.md §2): ACDC frames resized
# in-plane by the bundle, LA h5 crops (e.g. 175 x 132 x 88), Pancreas crops around the organ at 1 mm, the BraTS
# brain box of a 240 x 240 x 155 scan, an ISLES DWI volume. Training phantoms and inference cases use it.
TYPICAL_SHAPE: dict[str, tuple[int, ...]] = {
    "acdc": (256, 216, 10),
    "la": (176, 136, 88),
    "pancreas": (144, 128, 112),
    "brats": (140, 170, 140),
    "isles": (112, 112, 72),
    "abdomenct1k": (224, 224, 80),  # the phantom's 1.2 x 1.2 x 2.5 mm grid: about 180 x 180 x 130 at 1.5 mm
    "york": (256, 256, 10),
}

# Training cases written per flavour (subjects; ACDC subjects are patients of two frames): enough for the demo's
# ``num_labeled`` labeled cases plus an unlabeled stream that fills its batch.
TRAINING_SUBJECTS = {"acdc": 4, "la": 4, "pancreas": 4, "brats": 4, "isles": 4, "abdomenct1k": 4, "york": 4}
SLICE_FLAVOURS = {"acdc", "york"}  # datasets whose bundles run a 2D network over the slices

# On the CPU, 3D inference uses the reference patch with half-patch strides (the papers' strides of 4-18 voxels
# with 96-112 voxel windows take tens of minutes per case on 2 cores); ``--inference-settings bundle`` (the
# default on a GPU) keeps the bundle's own patch and stride.
CPU_INFERENCE_STRIDE_FRACTION = 0.5


def bundle_names() -> list[str]:
    """Every bundle of the repository (folders of ``bundles/`` with a ``configs/train.json``), sorted."""
    return sorted(p.parent.parent.name for p in BUNDLES_DIR.glob("*/configs/train.json"))


def config_file(bundle: str, name: str) -> Path:
    """Path of ``bundles/<bundle>/configs/<name>.json``."""
    return BUNDLES_DIR / bundle / "configs" / f"{name}.json"


def read_config(bundle: str, name: str) -> dict[str, Any]:
    """The raw JSON of one of a bundle's configs."""
    return json.loads(config_file(bundle, name).read_text())


def bundle_flavour(bundle: str) -> str:
    """The phantom flavour (= dataset) of a bundle, from its demo overlay's ``dataset_dir`` entry."""
    entry = read_config(bundle, "demo").get("dataset_dir")
    if not isinstance(entry, dict) or "flavour" not in entry:
        raise ValueError(f"{config_file(bundle, 'demo')}: dataset_dir names no phantom flavour")
    return str(entry["flavour"])


def bundle_dims(bundle: str) -> int:
    """2 for the slice-wise bundles (ACDC, York), 3 for the volumetric ones."""
    return 2 if bundle_flavour(bundle) in SLICE_FLAVOURS else 3


def reference(bundle: str) -> Reference:
    """The reference size of a bundle."""
    return REFERENCES[bundle_dims(bundle)]
