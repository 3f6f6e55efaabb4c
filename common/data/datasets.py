"""Training datasets: whole volumes (3D networks) or every slice of every volume (2D networks on 3D data)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from monai.data import CacheDataset
from monai.data.meta_obj import get_track_meta, set_track_meta
from torch.utils.data import Dataset

__all__ = ["VolumeSliceDataset", "training_dataset"]


def training_dataset(
    data: Sequence[Mapping[str, Any]],
    transform: Callable,
    slice_transform: Callable | None = None,
    keys: Sequence[str] = ("image", "label"),
    cache_rate: float = 1.0,
    num_workers: int | None = 0,
) -> Dataset:
    """The training dataset a data recipe asks for: volumes, or their slices when it has a ``slice_transform``.

    One entry point lets every bundle share one training configuration whatever its network's dimension; the
    recipe decides. ``data`` is kept as the dataset's ``data`` attribute either way, which is what MONAI Label
    replaces (``train#dataset#data``). ``keys`` only matters for slices (which keys are cut).
    """
    if slice_transform is None:
        return CacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers)
    return VolumeSliceDataset(
        data, transform, slice_transform, keys=keys, cache_rate=cache_rate, num_workers=num_workers
    )


class VolumeSliceDataset(Dataset):
    """Every slice of every volume is one sample, as in SSL4MIS's 2D training on ACDC.

    Volumes go through ``transform`` (deterministic: load, channel-first, check, intensity scaling) once and
    are cached; ``__getitem__`` cuts one slice along ``slice_axis`` from the cached volume and applies
    ``slice_transform`` (random 2D augmentation, resizing) to it. Sampling slices uniformly matters: a random
    one-slice crop per volume would over-sample thin volumes. ``data`` holds the volume list, so MONAI Label
    can replace ``train#dataset#data`` with its labeled 3D studies.

    Args:
        data: list of volume dictionaries (``image``, optional ``label`` and metadata).
        transform: volume-level, deterministic transforms; keys must stay channel-first ``(C, X, Y, Z)``.
        slice_transform: transforms applied to each ``(C, X, Y)`` slice dictionary.
        slice_axis: spatial axis to slice along (-1: the last, z).
        keys: keys of the volume dictionary that are sliced; other entries are dropped from samples.
        cache_rate, num_workers: passed to ``monai.data.CacheDataset``.
        track_meta: MONAI metadata tracking while ``slice_transform`` runs. Samples are plain tensors cut from the
            cached volume (no affine, no history), so tracking would only wrap every intermediate in a
            ``MetaTensor`` and record each transform for an inversion nothing performs; off by default (the
            values are the same either way, about a third of the per-slice time is saved).
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        transform: Callable,
        slice_transform: Callable | None = None,
        slice_axis: int = -1,
        keys: Sequence[str] = ("image", "label"),
        cache_rate: float = 1.0,
        num_workers: int | None = 0,
        progress: bool = False,
        track_meta: bool = False,
    ) -> None:
        self.data = list(data)
        self.transform = transform
        self.slice_transform = slice_transform
        self.slice_axis = slice_axis
        self.keys = tuple(keys)
        self.track_meta = bool(track_meta)
        # copy_cache=False: samples are slices cut (and cloned) from the cached volume, which stays untouched
        self.volumes = CacheDataset(
            self.data, transform, cache_rate=cache_rate, num_workers=num_workers, copy_cache=False, progress=progress
        )
        self.index = [(v, z) for v in range(len(self.volumes)) for z in range(self._depth(self.volumes[v]))]

    def _depth(self, volume: Mapping[str, Any]) -> int:
        return int(volume["image"].shape[self.slice_axis])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v, z = self.index[i]
        volume = self.volumes[v]
        sample = {}
        for key in self.keys:
            if key in volume:
                value = volume[key]
                value = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
                sample[key] = value.select(self.slice_axis, z).clone()
        if self.slice_transform is None:
            return sample
        with _meta_tracking(self.track_meta):
            return self.slice_transform(sample)


@contextlib.contextmanager
def _meta_tracking(enabled: bool) -> Iterator[None]:
    """MONAI's global ``track_meta`` switch set to ``enabled`` inside the block and restored after it."""
    previous = get_track_meta()
    set_track_meta(enabled)
    try:
        yield
    finally:
        set_track_meta(previous)
