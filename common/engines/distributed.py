"""Multi-process training with PyTorch DDP under ``torchrun``: the network wrapper of ``multi_gpu_train.json``.

Each bundle's overlay wraps every trainable network in :class:`DistributedNetwork`, gives both training streams
a ``DistributedSampler`` and disables the logging handlers on ranks other than 0. Every rank validates on the
whole validation set with the unwrapped network (MONAI's metrics gather across ranks, so the mean is exact and
identical everywhere) and runs the checkpoint savers, which write on rank 0 only. Ignite's ``Checkpoint`` saves
and loads the module inside a DDP wrapper, so checkpoints stay loadable by single-process bundles.
"""

from __future__ import annotations

from typing import Any

from torch.nn.parallel import DistributedDataParallel

__all__ = ["DistributedNetwork"]


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
