"""STLU-Net losses (Pattern Recognition 2026): batch-level Dice, symmetric supervision, cross pseudo-label Dice.

L = L_sup + gamma(t) * L_unsup with
``L_sup = Dice(P^d_l, y_l) + Dice(P^m_l, y_l)`` and ``L_unsup = Dice(P^d_u, argmax P^m_u) + Dice(P^m_u, argmax P^d_u)``
(paper, "label-preserving" supervision of both streams and cross pseudo-labels without confidence threshold).
The gamma ramp is the shared :func:`consistency_weight` (re-exported here with :func:`sigmoid_rampup`). The paper
writes only "Dice" and "gamma increases with training time"; the Dice form and the ramp values are ASSUMED from the
MC-Net/ML code base (table of ``bundles/stlu_la/docs/README.md``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..schedules import consistency_weight, sigmoid_rampup

__all__ = [
    "stlu_dice_loss",
    "symmetric_supervised_dice_loss",
    "cross_pseudo_dice_loss",
    "stlu_gamma",
    "stlu_losses",
    "STLUDiceLoss",
    "sigmoid_rampup",
    "consistency_weight",
]


def _label_map(target: Tensor, probs: Tensor) -> Tensor:
    """``(B, *S)`` or ``(B, 1, *S)`` integer-valued labels as ``(B, *S)`` int64, checked against ``probs``."""
    spatial = tuple(probs.shape[2:])
    if target.dim() == probs.dim() and target.shape[1] == 1:
        target = target[:, 0]
    if tuple(target.shape) != (probs.shape[0], *spatial):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match probs {tuple(probs.shape)}: "
            f"expected {(probs.shape[0], *spatial)} or {(probs.shape[0], 1, *spatial)}"
        )
    if target.is_floating_point():
        # the loaders deliver labels as float class indices; only exact integers are labels
        if target.numel() and not bool(torch.equal(target, target.round())):
            raise ValueError("target holds non-integer values; expected class indices")
        target = target.long()
    elif target.dtype == torch.bool:
        target = target.long()
    num_classes = probs.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"target values must lie in 0..{num_classes - 1}, got range [{int(target.min())}, {int(target.max())}]"
        )
    return target.long()


def stlu_dice_loss(probs: Tensor, target: Tensor, include_background: bool = False, eps: float = 1e-10) -> Tensor:
    """Batch-level soft Dice loss (MC-Net ``code/utils/losses.py`` ``Binary_dice_loss``, generalised to K classes).

    For every scored class c, with sums over the batch AND all voxels together:
    ``I_c = sum p_c [t = c]``, ``S_c = sum p_c + sum [t = c]``, ``l_c = 1 - (2 I_c + eps) / (S_c + eps)``;
    the loss is the mean of ``l_c`` over the scored classes (1..K-1, or 0..K-1 with ``include_background``).
    Computed and returned in float32 whatever the input precision (AMP does not change the value). Empty target and
    empty prediction give exactly 0.

    Args:
        probs: ``(B, K, *S)`` class probabilities (softmax already applied).
        target: ``(B, *S)`` or ``(B, 1, *S)`` class indices in 0..K-1 (``ValueError`` otherwise).
        include_background: also score class 0.
        eps: smoothing of numerator and denominator (1e-10, plain denominator).

    Returns:
        0-dim float32 tensor.
    """
    if probs.dim() < 3:
        raise ValueError(f"probs must be (B, K, *spatial), got shape {tuple(probs.shape)}")
    labels = _label_map(target, probs)
    first = 0 if include_background else 1
    num_classes = probs.shape[1]
    if first >= num_classes:
        raise ValueError(f"no class to score: K={num_classes}, include_background={include_background}")
    work = torch.float32
    losses = []
    for c in range(first, num_classes):
        p_c = probs[:, c].to(work)
        t_c = (labels == c).to(work)
        intersection = (p_c * t_c).sum()
        total = p_c.sum() + t_c.sum()
        losses.append(1.0 - (2.0 * intersection + eps) / (total + eps))
    return torch.stack(losses).mean()


def symmetric_supervised_dice_loss(
    logits_d_l: Tensor, logits_m_l: Tensor, target: Tensor, include_background: bool = False, eps: float = 1e-10
) -> Tensor:
    """Paper's L_sup: ``Dice(softmax(Z^d_l), y_l) + Dice(softmax(Z^m_l), y_l)``.

    Row i of the mixed-stream logits is scored against ``y_l[i]`` only (labels stay with the sample of origin).
    Both logits ``(n_l, K, *S)``; ``target`` ``(n_l, *S)`` or ``(n_l, 1, *S)``.
    """
    loss_d = stlu_dice_loss(torch.softmax(logits_d_l, dim=1), target, include_background, eps)
    loss_m = stlu_dice_loss(torch.softmax(logits_m_l, dim=1), target, include_background, eps)
    return loss_d + loss_m


def cross_pseudo_dice_loss(
    logits_d_u: Tensor, logits_m_u: Tensor, include_background: bool = False, eps: float = 1e-10
) -> Tensor:
    """Paper's L_unsup: each stream is supervised by the other stream's argmax pseudo-label.

    ``Dice(softmax(Z^d_u), argmax Z^m_u) + Dice(softmax(Z^m_u), argmax Z^d_u)``; the pseudo-labels are detached
    int64 maps, ties resolve to the lowest class index, no confidence threshold.
    """
    with torch.no_grad():
        pseudo_d = torch.argmax(logits_d_u, dim=1)
        pseudo_m = torch.argmax(logits_m_u, dim=1)
    loss_d = stlu_dice_loss(torch.softmax(logits_d_u, dim=1), pseudo_m, include_background, eps)
    loss_m = stlu_dice_loss(torch.softmax(logits_m_u, dim=1), pseudo_d, include_background, eps)
    return loss_d + loss_m


def stlu_gamma(
    iteration: int, gamma_max: float = 1.0, rampup_length: float = 40.0, iters_per_epoch: int = 150, offset: int = 1
) -> float:
    """gamma(t) of the paper's L = L_sup + gamma L_unsup for the engine's 0-based ``iteration``.

    ``consistency_weight(iteration + offset, gamma_max, rampup_length, iters_per_epoch)``: MC-Net/ML increment
    their step counter before computing the weight, so the step being taken is 1-based (``offset=1``, ASSUMED).
    Defaults: e^-5 at the first step, 1 from step 6000 on.
    """
    return consistency_weight(iteration + offset, gamma_max, rampup_length, iters_per_epoch)


def stlu_losses(
    logits_d: Tensor,
    logits_m: Tensor,
    label_l: Tensor,
    n_labeled: int,
    gamma: float | Tensor,
    include_background: bool = False,
    eps: float = 1e-10,
) -> dict[str, Tensor]:
    """Composition of the STLU objective ``L = L_sup + gamma L_unsup`` on a joint batch.

    Rows ``[:n_labeled]`` are labeled, the rest unlabeled. Returns the scalars ``loss_sup``
    (:func:`symmetric_supervised_dice_loss` on the labeled rows), ``loss_unsup`` (:func:`cross_pseudo_dice_loss` on
    the unlabeled rows; 0 when there are none) and
    ``loss_total = loss_sup + gamma * loss_unsup``. ``include_background`` and ``eps`` go to every Dice term.
    """
    n_l = int(n_labeled)
    if logits_d.shape != logits_m.shape:
        raise ValueError(f"stream logits differ in shape: {tuple(logits_d.shape)} and {tuple(logits_m.shape)}")
    if not 1 <= n_l <= logits_d.shape[0]:
        raise ValueError(f"n_labeled must be in 1..{logits_d.shape[0]}, got {n_l}")
    loss_sup = symmetric_supervised_dice_loss(logits_d[:n_l], logits_m[:n_l], label_l, include_background, eps)
    if logits_d.shape[0] > n_l:
        loss_unsup = cross_pseudo_dice_loss(logits_d[n_l:], logits_m[n_l:], include_background, eps)
    else:
        loss_unsup = loss_sup.new_zeros(())
    return {"loss_sup": loss_sup, "loss_unsup": loss_unsup, "loss_total": loss_sup + gamma * loss_unsup}


class STLUDiceLoss(nn.Module):
    """``stlu_dice_loss(softmax(logits), label)`` as a loss module of ``(logits, label)`` for one network output.

    The per-stream supervised Dice of STLU; bundles expose it as ``supervised_loss`` to score the evaluated
    network on a batch (the method itself composes :func:`stlu_losses`).
    """

    def __init__(self, include_background: bool = False, eps: float = 1e-10) -> None:
        super().__init__()
        self.include_background = include_background
        self.eps = eps

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return stlu_dice_loss(torch.softmax(logits, dim=1), target, self.include_background, self.eps)
