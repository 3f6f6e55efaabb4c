"""CoraNet inspection helpers, free of ignite (coranet.md §4).

:class:`~.coranet.CoraNet` built with ``keep_masks=True`` keeps the last self-training batch's inconsistency
mask in ``last_uncertain`` (bool ``(N, *S)``, True = the conservative and radical heads disagree) and its
pseudo-labels in ``last_pseudo_labels``. :func:`save_uncertainty_masks` writes such a mask to NIfTI; a bundle
handler would call it after an iteration, e.g.::

    @trainer.on(Events.ITERATION_COMPLETED(every=interval))
    def _save(engine):
        mask = engine.method.last_uncertain            # None until the first self-training step
        if mask is not None:
            save_uncertainty_masks(mask, output_dir + "/uncertainty", "uncertain", engine.state.iteration)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from .inspect_maps import write_sample_maps

__all__ = ["save_uncertainty_masks"]


def save_uncertainty_masks(
    mask: Tensor | np.ndarray,
    out_dir: str | os.PathLike,
    prefix: str,
    iteration: int,
    spacing: Sequence[float] | None = None,
) -> list[Path]:
    """Write each sample of a mask ``(N, H, W)`` or ``(N, X, Y, Z)`` as ``<prefix>_iter<iteration>_<n>.nii.gz``.

    ``uint8`` NIfTI (1 = uncertain), identity affine or a diagonal one from ``spacing``; a ``(N, 1, *S)`` mask
    loses its channel; ``out_dir`` is created. Returns the paths written, in sample order.
    """
    array = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, Tensor) else mask)
    if array.ndim in (4, 5) and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a mask of shape (N, H, W) or (N, X, Y, Z), got {array.shape}")
    return write_sample_maps(array, out_dir, prefix, iteration, spacing)
