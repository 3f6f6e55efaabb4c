"""The interface between the training engine and a semi-supervised method.

A method owns its networks and losses and knows nothing of ignite. The engine calls ``compute_losses`` once
per iteration with a labeled batch and an unlabeled batch (``None`` when there is no unlabeled stream), steps
the optimiser on ``losses["loss"]`` and calls the method's hooks at the named moments of an iteration.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

Batch = Mapping[str, Tensor]

# Moments of an iteration at which the engine calls a method's hooks; the engine maps them to ignite events.
HOOK_ITERATION_STARTED = "iteration_started"
HOOK_OPTIMIZER_STEPPED = "optimizer_stepped"
HOOK_NAMES = (HOOK_ITERATION_STARTED, HOOK_OPTIMIZER_STEPPED)


class SemiSupervisedMethod:
    """Base class: subclasses implement ``compute_losses`` and list their modules in ``modules``.

    Attributes:
        modules: every network the method runs, by name (``{"network": student, "teacher": teacher}``);
            ``train()`` puts all of them in train mode, which is what the reference loops do (teachers included).
        requires_unlabeled: whether the method has an unsupervised term. When it does and the unlabeled stream
            is empty, the engine refuses to train (a semi-supervised bundle must not silently run supervised).
        reads_unlabeled_labels: the engine hands the unlabeled batch's ``label`` to ``compute_losses`` (False: only
            the image). Only a paper-protocol reproduction of an official label leak sets it (DyCON FeCL).
    """

    requires_unlabeled: bool = True
    reads_unlabeled_labels: bool = False

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.modules = dict(modules)

    def train(self) -> None:
        """Put every module (and all of its submodules) in train mode.

        The engine calls this every iteration, so a module whose submodules are all in train mode already (the
        usual case: only validation and inspection switch modes, and they restore them) is left alone; walking
        the tree to check is several times cheaper than ``nn.Module.train``'s re-setting of every submodule.
        """
        for module in self.modules.values():
            if not all(m.training for m in module.modules()):
                module.train()

    def compute_losses(self, labeled: Batch, unlabeled: Batch | None, iteration: int) -> dict[str, Tensor]:
        """Return the named losses of one iteration; the total is under ``"loss"``.

        ``iteration`` counts the optimiser steps completed before this one (0 for the first step).
        """
        raise NotImplementedError

    def hooks(self) -> dict[str, Callable[[int], None]]:
        """Callables the engine runs at the moments named in ``HOOK_NAMES``, given the 0-based iteration."""
        return {}


def forward_train(network: nn.Module, image: Tensor):
    """Run a network's training-time forward (``forward_train`` where it has one, else ``forward``)."""
    method = getattr(network, "forward_train", None)
    return method(image) if callable(method) else network(image)


def as_label_map(label: Tensor) -> Tensor:
    """``(N, 1, *S)`` or ``(N, *S)`` label tensor as ``(N, *S)`` int64 class indices."""
    if label.dim() >= 2 and label.shape[1] == 1:
        label = label[:, 0]
    return label.long()


def gaussian_noise(x: Tensor, std: float, clip: float) -> Tensor:
    """Additive noise ``clamp(N(0, std^2), -clip, clip)`` used on the teacher's input (SSL4MIS MT/UA-MT)."""
    return torch.clamp(torch.randn_like(x) * std, -clip, clip)


@contextmanager
def preserved_rng_states() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global generators on exit (CPU; CUDA devices too when present).

    An inspection pass that draws random perturbations inside this block leaves the training run's random
    stream exactly as it was, so saving maps never changes the trained weights.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
