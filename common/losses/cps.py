"""Cross pseudo supervision (Chen et al., CVPR 2021) as implemented by SSL4MIS.

Reference: SSL4MIS ``code/train_cross_pseudo_supervision_{2D,3D}.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cps_pseudo_label", "cps_loss"]


def cps_pseudo_label(logits: Tensor) -> Tensor:
    """Hard pseudo-label ``argmax_c softmax(logits)_c`` of a detached prediction, ``(N, *S)`` int64."""
    return torch.argmax(torch.softmax(logits.detach().float(), dim=1), dim=1)


def cps_loss(logits: Tensor, other_logits: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` against the OTHER network's hard pseudo-label, mean over voxels (the CPS loss term).

    ``CE(logits, argmax softmax(other_logits))``: the pseudo-label is detached, so no gradient reaches the
    network that produced ``other_logits`` through this term (it gets its own term with the roles swapped).

    Args:
        logits: ``(N, C, *S)`` logits of the network being supervised.
        other_logits: ``(N, C, *S)`` logits of the other network on the same images.
    """
    return F.cross_entropy(logits.float(), cps_pseudo_label(other_logits))
