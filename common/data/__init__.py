"""Data: the dataset-folder contract, datasets, contract transforms, phantoms and preparation of real data."""

from .contract import (
    DatasetError,
    dataset_labels,
    inference_datalist,
    load_dataset_json,
    resolve_items,
    semi_supervised_datalists,
    split_labeled,
)
from .datasets import VolumeSliceDataset, training_dataset
from .transforms import CheckDatad, ForegroundZScored

__all__ = [
    "DatasetError",
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
