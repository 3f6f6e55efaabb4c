"""Consistency losses between two predictions of the same input (mean-teacher family)."""

from __future__ import annotations

import torch
from torch import Tensor


def softmax_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Element-wise squared difference of the two softmax maps, no reduction (shape ``(N, C, *S)``).

    Mean Teacher's consistency term (Tarvainen & Valpola 2017, eq. of the SSL4MIS ``softmax_mse_loss``); the
    teacher is treated as a constant. Softmax runs in float32 so AMP does not change the value.
    """
    student = torch.softmax(student_logits.float(), dim=1)
    teacher = torch.softmax(teacher_logits.detach().float(), dim=1)
    return (student - teacher) ** 2


def masked_softmax_mse(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, eps: float = 1e-16) -> Tensor:
    """``sum_{n,c,v} m * (p_s - p_t)^2 / (sum_{n,v} m + eps)``; ``mask`` is ``(N, *S)`` or ``(N, 1, *S)``.

    The normaliser counts voxels, not voxel-class pairs. An empty mask gives 0.
    """
    if mask.dim() == student_logits.dim() - 1:
        mask = mask.unsqueeze(1)
    mask = mask.to(torch.float32)
    distance = softmax_mse(student_logits, teacher_logits)
    return (distance * mask).sum() / (mask.sum() + eps)
