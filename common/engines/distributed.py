"""Multi-process training with PyTorch DDP under ``torchrun``: the network wrapper of ``multi_gpu_train.json``.

Each bundle's overlay wraps every trainable network in :class:`DistributedNetwork` and starts the process group.
The shared training configuration is rank-aware by itself, so the overlay switches nothing else: both training
streams take :func:`distributed_sampler` (a ``DistributedSampler`` once a process group exists, else ``None``)
and the logging handlers are disabled where :func:`process_rank` is not 0. Every rank validates on the
whole validation set with the unwrapped network (MONAI's metrics gather across ranks, so the mean is exact and
identical everywhere) and runs the checkpoint savers, which write on rank 0 only. Ignite's ``Checkpoint`` saves
and loads the module inside a DDP wrapper, so checkpoints stay loadable by single-process bundles.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from monai.data import DistributedSampler
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

__all__ = ["DistributedNetwork", "distributed_sampler", "process_rank", "unwrap_network"]


def process_rank() -> int:
    """This process's rank in the default process group, 0 when there is none (a single-process run)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def distributed_sampler(
    dataset: Dataset, even_divisible: bool = True, shuffle: bool = True
) -> DistributedSampler | None:
    """A MONAI ``DistributedSampler`` over ``dataset`` in a multi-process run, ``None`` in a single-process one.

    ``even_divisible`` pads the shards to equal length (training streams); validation keeps every case once.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return DistributedSampler(dataset, even_divisible=even_divisible, shuffle=shuffle)


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (validation runs it on every rank without DDP's synchronisation)."""
    return network.module if isinstance(network, DistributedDataParallel) else network


class DistributedNetwork(DistributedDataParallel):
    """``DistributedDataParallel`` whose ``forward_train`` also goes through DDP's forward.

    Methods call ``network.forward_train(...)`` for the training outputs (features, extra heads). A plain DDP
    wrapper has no such attribute, and calling the inner module's ``forward_train`` directly would bypass DDP's
    forward, where it prepares the gradient all-reduce and broadcasts the buffers. Here the inner module's
    ``forward`` is pointed at its ``forward_train`` for the duration of one DDP call.
    """

    def forward_train(self, *args: Any, **kwargs: Any) -> Any:
        module = self.module
        train_forward = getattr(module, "forward_train", None)
        if not callable(train_forward):
            return self(*args, **kwargs)

        def forward_once(*inner_args: Any, **inner_kwargs: Any) -> Any:
            module.__dict__.pop("forward", None)  # forward_train may call the real forward itself
            return train_forward(*inner_args, **inner_kwargs)

        module.forward = forward_once  # an instance attribute shadows the class's forward for this one DDP call
        try:
            return self(*args, **kwargs)
        finally:
            module.__dict__.pop("forward", None)
