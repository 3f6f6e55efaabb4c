"""UA-MT: uncertainty-aware mean teacher (Yu et al., MICCAI 2019) as implemented by SSL4MIS
(``code/train_uncertainty_aware_mean_teacher_{2D,3D}.py``).

Three pure functions: the predictive entropy of the teacher's averaged stochastic predictions (the paper's
uncertainty estimate), the ramped entropy threshold and the uncertainty-masked consistency. Both SSL4MIS quirks are
kept by default and can be switched off by name: the threshold uses ln 2 whatever the number of classes
(``use_log_num_classes``), and the consistency is normalised by twice the mask count (``norm_factor``); the
bundles' READMEs (``bundles/ua_mt_la/docs/README.md``) list them with their switches.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedules import sigmoid_rampup
from .consistency import softmax_mse

__all__ = ["uamt_uncertainty", "uamt_threshold", "uamt_consistency"]


def uamt_uncertainty(mean_probs: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-voxel predictive entropy ``u = -sum_c pbar_c * ln(pbar_c + eps)`` (SSL4MIS ``uncertainty``).

    Args:
        mean_probs: ``(N, C, *S)`` softmax probabilities already averaged over the T stochastic teacher passes.
        eps: inside the logarithm, as SSL4MIS (1e-6); it keeps ``0 * ln 0`` finite.

    Returns:
        ``(N, 1, *S)`` entropies (class channel kept with size 1 so the mask broadcasts over classes).
    """
    mean_probs = mean_probs.float()
    return -torch.sum(mean_probs * torch.log(mean_probs + eps), dim=1, keepdim=True)


def uamt_threshold(
    iteration: float, max_iterations: float, num_classes: int = 2, use_log_num_classes: bool = False
) -> float:
    """Entropy threshold ``H(t) = (0.75 + 0.25 * sigmoid_rampup(t, T)) * ln K`` (SSL4MIS ``threshold``).

    The ramp runs in raw iterations over the whole run (``T = max_iterations``): ``(0.75 + 0.25 e^-5) ln K`` at
    ``t = 0``, ``ln K`` from ``t = T`` on.

    Args:
        iteration: 0-based iteration (the reference's ``iter_num`` before its increment).
        max_iterations: ramp length ``T``.
        num_classes: ``C``; only used when ``use_log_num_classes`` is True.
        use_log_num_classes: ``K = C`` (the maximum entropy of C classes) instead of the SSL4MIS quirk
            ``K = 2``, which SSL4MIS uses for 4-class ACDC too (default False = reproduce the quirk).
    """
    base = num_classes if use_log_num_classes else 2
    return (0.75 + 0.25 * sigmoid_rampup(iteration, max_iterations)) * math.log(base)


def uamt_consistency(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, norm_factor: float = 2.0, eps: float = 1e-16
) -> Tensor:
    """Masked softmax MSE ``sum(m * (p_s - p_t)^2) / (norm_factor * sum(m) + eps)`` (SSL4MIS ``consistency_loss``).

    The numerator sums over batch, classes and voxels with the mask broadcast over the class channel; the
    denominator counts masked voxels once (not per class). ``norm_factor = 2`` is the SSL4MIS constant, written
    for two classes and kept for four (so the term is a per-voxel class-sum over 2, not a per-element mean).
    An empty mask gives exactly 0. The teacher is a constant (its logits are detached).

    Args:
        student_logits, teacher_logits: ``(N, C, *S)`` logits.
        mask: ``(N, 1, *S)`` or ``(N, *S)``, 1 where the teacher is certain enough.
        norm_factor: the constant in the denominator (2.0 reproduces SSL4MIS; 1.0 gives the per-voxel class-sum).
        eps: keeps the empty-mask case finite.
    """
    if mask.dim() == student_logits.dim() - 1:
        mask = mask.unsqueeze(1)
    mask = mask.to(torch.float32)
    distance = softmax_mse(student_logits, teacher_logits)
    return torch.sum(mask * distance) / (norm_factor * torch.sum(mask) + eps)
