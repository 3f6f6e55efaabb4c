"""Data at run time: the dataset-folder contract, datasets, contract transforms, the checker and recipes.

``prepare.py`` and ``phantoms.py`` only keep the commands of the dataset tooling (``common.datasets``) at their
documented names; nothing here imports them.
"""

from .contract import (
    DatasetError,
    check_num_classes,
    dataset_labels,
    inference_datalist,
    load_dataset_json,
    resolve_items,
    semi_supervised_datalists,
    split_labeled,
)
from .datasets import VolumeSliceDataset, training_dataset
from .transforms import CheckDatad, ForegroundZScored, LabelBoxCropd, label_box

__all__ = [
    "DatasetError",
    "LabelBoxCropd",
    "label_box",
    "check_num_classes",
    "dataset_labels",
    "inference_datalist",
    "load_dataset_json",
    "resolve_items",
    "semi_supervised_datalists",
    "split_labeled",
    "VolumeSliceDataset",
    "training_dataset",
    "CheckDatad",
    "ForegroundZScored",
]
