"""ALHVR losses and their building blocks (Lei et al., "Adaptive Learning of High-Value Regions", ICCV 2025).

Pure functions of tensors, dimension-agnostic (``S`` = 2 or 3 spatial dims), following the official code
``ziziyao/ALHVR`` by default, quirks included (listed in bundles/alhvr_acdc/docs/README.md, "Code vs paper");
each documented departure is a keyword switch whose default is the code's behaviour.

Notation: ``U`` unlabeled rows, ``L`` labeled rows, ``K`` classes (background included), ``a``/``b`` nets A/B,
``1`` clean and ``2`` perturbed decoder pass, ``γ`` adaptive threshold, Ω1/Ω2/Ω3 the paper's region partition
(reliable stable / reliable unstable / unreliable stable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..schedules import consistency_weight

__all__ = [
    "ALHVRSupervisedLoss",
    "alhvr_adaptive_threshold",
    "alhvr_cgcpcl_loss",
    "alhvr_confidence",
    "alhvr_dice_loss",
    "alhvr_dtct_loss",
    "alhvr_dynamic_teacher",
    "alhvr_masked_entropy_mean",
    "alhvr_prototype_logits",
    "alhvr_prototypes",
    "alhvr_region_masks",
    "alhvr_sharpen",
    "alhvr_step_losses",
    "alhvr_supervised_loss",
    "alhvr_upsample_features",
]

MASK_EPS = 1e-16  # denominators of the masked means (official code)
ENTROPY_EPS = 1e-6
PROTOTYPE_EPS = 1e-5
DICE_SMOOTH = 1e-10


# ---------------------------------------------------------------------------------------------------------------
# region partition (paper: reliable stable Ω1, reliable unstable Ω2, unreliable stable Ω3)
# ---------------------------------------------------------------------------------------------------------------


def alhvr_confidence(prob: Tensor) -> tuple[Tensor, Tensor]:
    """``(max_k prob, argmax_k prob)`` over dim 1 (``torch.max``: ties -> lowest index); pseudo-labels int64."""
    conf, pseudo = torch.max(prob, dim=1)
    return conf, pseudo


def alhvr_adaptive_threshold(conf_a: Tensor, conf_b: Tensor, beta: float) -> Tensor:
    """Adaptive threshold γ (the paper's γ): mean of the ``trunc(N·β)`` smallest values of
    ``(conf_a + conf_b) / 2``, pooled over the whole unlabeled batch (N = U·|S|). 0-d tensor, no gradient.

    Raises ``ValueError`` when ``trunc(N·β) == 0`` (the official code would return NaN) or exceeds N.
    """
    with torch.no_grad():
        con = (conf_a + conf_b) * 0.5
        k = int(con.numel() * beta)  # Python double precision, truncation (N=90, β=0.7 -> 62)
        if k < 1 or k > con.numel():
            raise ValueError(f"trunc(N * beta) must be in [1, N]; got N={con.numel()}, beta={beta} -> k={k}")
        lowest, _ = torch.topk(con.reshape(-1), k, largest=False)
        return torch.mean(lowest)


def alhvr_region_masks(conf_a: Tensor, conf_b: Tensor, gamma: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Region partition (official code's inequalities), bool ``[U, *S]`` masks ``(omega1, omega2_a, omega2_b, omega3)``.

    * Ω2_a (A learns from B): ``conf_a <= γ and conf_b > γ``; Ω2_b: ``conf_b <= γ and conf_a > γ``;
    * Ω3 (unreliable, stable): ``conf_a < γ and conf_b < γ``;
    * Ω1: everything else (both above γ, and the ties ``conf = γ`` the others leave out). No loss uses Ω1.
    """
    omega2_a = (conf_a <= gamma) & (conf_b > gamma)
    omega2_b = (conf_b <= gamma) & (conf_a > gamma)
    omega3 = (conf_a < gamma) & (conf_b < gamma)
    omega1 = ~(omega2_a | omega2_b | omega3)
    return omega1, omega2_a, omega2_b, omega3


# ---------------------------------------------------------------------------------------------------------------
# DTCT: dynamic teacher competition teaching on Ω3
# ---------------------------------------------------------------------------------------------------------------


def alhvr_sharpen(p: Tensor, temperature: float = 0.1) -> Tensor:
    """DTCT sharpening, element-wise: ``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))``, NOT renormalised over classes."""
    power = 1.0 / temperature
    sharp = p**power
    return sharp / (sharp + (1.0 - p) ** power)


def alhvr_dynamic_teacher(prob_a1: Tensor, prob_b1: Tensor) -> Tensor:
    """DTCT's dynamic teacher: per pixel the whole clean probability vector of the more confident net.

    ``a1`` where ``max_k a1 > max_k b1`` (strict), else ``b1`` (ties -> b). Not detached, as in the official code.
    """
    choose_a = prob_a1.max(dim=1, keepdim=True)[0] > prob_b1.max(dim=1, keepdim=True)[0]
    return torch.where(choose_a, prob_a1, prob_b1)


def alhvr_masked_entropy_mean(prob: Tensor, mask: Tensor, eps: float = ENTROPY_EPS) -> Tensor:
    """DTCT's masked entropy H̄: entropy of ``q = prob * mask`` (zero outside the mask), ``-Σ_k q log(q + eps)``,
    averaged over ALL ``U·|S|`` positions (not over the mask's size)."""
    q = prob * mask.unsqueeze(1).to(prob.dtype)
    entropy = -1.0 * torch.sum(q * torch.log(q + eps), dim=1, keepdim=True)
    return entropy.mean()


def alhvr_dtct_loss(
    prob_pert: Tensor, prob_clean: Tensor, teacher: Tensor, omega3: Tensor, temperature: float = 0.1
) -> dict[str, Tensor]:
    """Dynamic teacher competition teaching on Ω3: ``{"mse", "ent_clean", "ent_pert", "total"}``.

    ``mse = Σ_{u,k,s} m (prob_pert - sharpen(teacher))² / (Σ_{u,s} m + 1e-16)`` (sum over classes, divided by the
    number of masked pixels); ``ent_* =`` :func:`alhvr_masked_entropy_mean`; ``total = mse + ent_clean + ent_pert``.
    The teacher is used as given (detach it beforehand for the stop-gradient variant). Empty Ω3 -> all terms 0
    with zero gradients.
    """
    m = omega3.unsqueeze(1).to(prob_pert.dtype)
    distance = (prob_pert - alhvr_sharpen(teacher, temperature)) ** 2
    mse = torch.sum(m * distance) / (torch.sum(m) + MASK_EPS)
    ent_clean = alhvr_masked_entropy_mean(prob_clean, omega3)
    ent_pert = alhvr_masked_entropy_mean(prob_pert, omega3)
    return {"mse": mse, "ent_clean": ent_clean, "ent_pert": ent_pert, "total": mse + ent_clean + ent_pert}


# ---------------------------------------------------------------------------------------------------------------
# CG-CPCL: confidence-guided cross-prototype consistency learning on Ω2
# ---------------------------------------------------------------------------------------------------------------


def alhvr_upsample_features(feat: Tensor, size: Sequence[int]) -> Tensor:
    """Prototype feature resized to the label grid: bilinear (2D) / trilinear (3D), ``align_corners=False``."""
    modes = {4: "bilinear", 5: "trilinear"}
    if feat.dim() not in modes:
        raise ValueError(f"expected a (U, C, H, W) or (U, C, D, H, W) feature map, got shape {tuple(feat.shape)}")
    return F.interpolate(feat, size=tuple(int(s) for s in size), mode=modes[feat.dim()], align_corners=False)


def alhvr_prototypes(feat_up: Tensor, pseudo: Tensor, num_classes: int, eps: float = PROTOTYPE_EPS) -> Tensor:
    """Class prototypes ``[K, C]`` (official ``getPrototype_2D/3D``), not detached.

    Per sample u and class k the masked mean ``v_uk = Σ_s F[u,:,s][ŷ=k] / (Σ_s [ŷ=k] + eps)``; then
    ``P[k] = (1/U) Σ_u v_uk`` — divided by U even where class k is absent from a sample (zero contribution), so a
    class absent from the whole batch gets the zero prototype.
    """
    batch = feat_up.shape[0]
    spatial = tuple(range(2, feat_up.dim()))
    rows = []
    for k in range(num_classes):
        mask = (pseudo == k).to(feat_up.dtype).unsqueeze(1)  # [U, 1, *S]
        masked_mean = torch.sum(feat_up * mask, dim=spatial) / (mask.sum(dim=spatial) + eps)  # [U, C]
        rows.append(torch.sum(masked_mean, dim=0) / batch)
    return torch.stack(rows, dim=0)


def alhvr_prototype_logits(feat_up: Tensor, prototypes: Tensor, scaler: float = 1.0) -> Tensor:
    """Cosine logits ``[U, K, *S]``: ``scaler * cos(F[u,:,s], P[k])`` with PyTorch's ``cosine_similarity``
    (eps 1e-8); a zero prototype gives 0."""
    view = (1, prototypes.shape[1]) + (1,) * (feat_up.dim() - 2)
    logits = [F.cosine_similarity(feat_up, proto.reshape(view), dim=1) * scaler for proto in prototypes]
    return torch.stack(logits, dim=1)


def alhvr_cgcpcl_loss(
    feat_pert_up: Tensor,
    prototypes_teacher: Tensor,
    pseudo_teacher: Tensor,
    omega2_learner: Tensor,
    scaler: float = 1.0,
    cross_sample_mask: bool = True,
) -> tuple[Tensor, Tensor]:
    """Confidence-guided cross-prototype consistency on the learner's Ω2: ``(loss_ce, loss_cos)``.

    ``z = scaler * cos(F_learner_pert, P_teacher)``; per-pixel ``ce = CE(z, ŷ_teacher)``.

    * ``cross_sample_mask=True`` (official code): the ``[U,1,*S]`` mask broadcasts against the ``[U,*S]``
      CE map to ``[U,U,*S]``: ``L_ce = Σ_s (Σ_u m)(Σ_u ce) / (Σ m + 1e-16)`` (≈ U x the intended value; identical
      when U = 1). ``False``: the intended per-pixel masked mean ``Σ m·ce / (Σ m + 1e-16)``.
    * ``L_cos = mean over U·K·|S| of m (1 - z)``: all K prototypes, averaged over every element (official
      code; bundles/alhvr_acdc/docs/README.md, "Code vs paper").

    Empty mask -> ``(0, 0)``.
    """
    z = alhvr_prototype_logits(feat_pert_up, prototypes_teacher, scaler)
    ce = F.cross_entropy(z, pseudo_teacher.long(), reduction="none")  # [U, *S]
    m = omega2_learner.unsqueeze(1).to(z.dtype)  # [U, 1, *S]
    if cross_sample_mask:
        loss_ce = torch.sum(m * ce) / (torch.sum(m) + MASK_EPS)  # broadcast [U,1,*S] x [U,*S] -> [U,U,*S]
    else:
        loss_ce = torch.sum(m[:, 0] * ce) / (torch.sum(m) + MASK_EPS)
    loss_cos = ((1.0 - z) * m).mean()
    return loss_ce, loss_cos


# ---------------------------------------------------------------------------------------------------------------
# supervised loss (labeled rows, clean logits)
# ---------------------------------------------------------------------------------------------------------------


def _label_map(label: Tensor, prob: Tensor) -> Tensor:
    """``[L, *S]`` labels from ``[L, *S]`` or ``[L, 1, *S]``."""
    if label.dim() == prob.dim() and label.shape[1] == 1:
        label = label[:, 0]
    if tuple(label.shape) != (prob.shape[0],) + tuple(prob.shape[2:]):
        raise ValueError(f"label shape {tuple(label.shape)} does not match predictions {tuple(prob.shape)}")
    return label


def alhvr_dice_loss(prob: Tensor, label: Tensor, num_classes: int) -> Tensor:
    """Official ``DiceLoss`` = Dice_code: mean over ALL K classes (background included) of
    ``1 - Σ p_c y_c / (Σ p_c² + Σ y_c² + 1e-10)``, sums over the whole labeled batch.

    No factor 2: a perfect prediction scores 0.5, a class absent from the batch scores exactly 1.
    ``label`` is ``[L, *S]`` (or ``[L, 1, *S]``) class indices.
    """
    label = _label_map(label, prob)
    loss = prob.new_zeros(())
    for c in range(num_classes):
        score = prob[:, c]
        target = (label == c).to(prob.dtype)
        intersection = torch.sum(score * target)
        union = torch.sum(score * score) + torch.sum(target * target) + DICE_SMOOTH
        loss = loss + (1.0 - intersection / union)
    return loss / num_classes


def alhvr_supervised_loss(logits: Tensor, label: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Supervised loss on the labeled rows' clean logits: ``(ce, dice, total = dice + ce)``.

    ``ce`` = mean cross-entropy over all labeled pixels; ``dice`` = :func:`alhvr_dice_loss` of the softmax.
    """
    label = _label_map(label, logits)
    ce = F.cross_entropy(logits, label.long())
    dice = alhvr_dice_loss(torch.softmax(logits, dim=1), label, num_classes)
    return ce, dice, dice + ce


class ALHVRSupervisedLoss:
    """Callable ``(logits, label) -> Dice_code + CE`` (:func:`alhvr_supervised_loss`'s total) for bundle configs.

    ``label`` may be ``[L, 1, *S]`` (MONAI batches) or ``[L, *S]``.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, logits: Tensor, label: Tensor) -> Tensor:
        return alhvr_supervised_loss(logits, label, self.num_classes)[2]


# ---------------------------------------------------------------------------------------------------------------
# one step: the paper's total loss with the official ramp
# ---------------------------------------------------------------------------------------------------------------


def alhvr_step_losses(
    out_a: Sequence[Tensor],
    out_b: Sequence[Tensor],
    label: Tensor,
    labeled_bs: int,
    num_classes: int,
    iter_num: int,
    beta: float,
    temperature: float = 0.1,
    consistency: float = 0.1,
    rampup_length: float = 200.0,
    scaler: float = 1.0,
    *,
    rampup_epoch_len: int = 150,
    cross_sample_mask: bool = True,
    detach_teacher: bool = False,
    detach_prototypes: bool = False,
) -> dict[str, Any]:
    """All losses of one ALHVR step: ``L = Σ_{x∈{a,b}} L_sup,x + λ(t) (L_dtct,x + L_ce,x + L_cos,x)``.

    Args:
        out_a, out_b: ``(logits_clean, logits_pert, feat_clean, feat_pert)`` of nets A and B on the whole batch
            (labeled rows first).
        label: ``[B, *S]`` or ``[L, *S]`` (a channel axis of 1 is accepted) class indices; rows >= ``labeled_bs``
            are ignored.
        labeled_bs: number L of labeled rows; the unsupervised terms use rows ``[L, B)`` only.
        num_classes: K.
        iter_num: optimiser steps completed before this one (λ uses ``iter_num // rampup_epoch_len``).
        beta: proportion of lowest confidences averaged into γ (0.8 ACDC, 0.7 BraTS).
        temperature: sharpening temperature (0.1).
        consistency, rampup_length: λ(t) = consistency · sigmoid_rampup(t // rampup_epoch_len, rampup_length).
        scaler: cosine-logit multiplier (1).
        rampup_epoch_len: iterations per ramp "epoch" (150).
        cross_sample_mask: CG-CPCL CE broadcast quirk (True = official code).
        detach_teacher, detach_prototypes: stop-gradient variants (False = official code).

    Returns a dict of tensors: ``loss`` (total, with graph), ``loss_a``/``loss_b``, per net ``x ∈ {a, b}``:
    ``sup_ce_x``, ``sup_dice_x``, ``sup_x``, ``dtct_mse_x``, ``dtct_ent_clean_x``, ``dtct_ent_pert_x``, ``dtct_x``,
    ``cgcpcl_ce_x``, ``cgcpcl_cos_x``, ``cgcpcl_x``; and ``gamma`` (0-d), ``weight`` (λ, 0-d), ``omega1``,
    ``omega2_a``, ``omega2_b``, ``omega3`` (bool ``[U, *S]``), ``teacher`` ``[U, K, *S]``, ``prototypes_a``/``_b``
    ``[K, C]``, ``pseudo_a``/``_b`` ``[U, *S]``. Nothing is detached except γ (and what the switches detach).
    """
    logits_a1, logits_a2, feat_a1, feat_a2 = out_a
    logits_b1, logits_b2, feat_b1, feat_b2 = out_b
    L = labeled_bs
    if not 0 < L < logits_a1.shape[0]:
        raise ValueError(f"labeled_bs must be in [1, B-1] for B={logits_a1.shape[0]}, got {L}")
    label_l = label[:L]
    if label_l.dim() == logits_a1.dim() and label_l.shape[1] == 1:
        label_l = label_l[:, 0]

    prob_a1, prob_a2 = torch.softmax(logits_a1, dim=1), torch.softmax(logits_a2, dim=1)
    prob_b1, prob_b2 = torch.softmax(logits_b1, dim=1), torch.softmax(logits_b2, dim=1)
    out: dict[str, Any] = {}
    for name, logits in (("a", logits_a1), ("b", logits_b1)):
        ce, dice, total = alhvr_supervised_loss(logits[:L], label_l, num_classes)
        out[f"sup_ce_{name}"], out[f"sup_dice_{name}"], out[f"sup_{name}"] = ce, dice, total

    # unlabeled rows only from here on
    pa1, pa2, pb1, pb2 = prob_a1[L:], prob_a2[L:], prob_b1[L:], prob_b2[L:]
    conf_a2, _ = alhvr_confidence(pa2)
    conf_b2, _ = alhvr_confidence(pb2)
    gamma = alhvr_adaptive_threshold(conf_a2, conf_b2, beta)
    omega1, omega2_a, omega2_b, omega3 = alhvr_region_masks(conf_a2, conf_b2, gamma)

    teacher = alhvr_dynamic_teacher(pa1, pb1)
    if detach_teacher:
        teacher = teacher.detach()
    _, pseudo_a = alhvr_confidence(pa1)
    _, pseudo_b = alhvr_confidence(pb1)
    size = tuple(logits_a1.shape[2:])
    fa1, fb1 = alhvr_upsample_features(feat_a1[L:], size), alhvr_upsample_features(feat_b1[L:], size)
    fa2, fb2 = alhvr_upsample_features(feat_a2[L:], size), alhvr_upsample_features(feat_b2[L:], size)
    proto_a = alhvr_prototypes(fa1, pseudo_a, num_classes)
    proto_b = alhvr_prototypes(fb1, pseudo_b, num_classes)
    if detach_prototypes:
        proto_a, proto_b = proto_a.detach(), proto_b.detach()

    weight = consistency_weight(iter_num, consistency, rampup_length, rampup_epoch_len)
    learners = (
        ("a", pa2, pa1, fa2, proto_b, pseudo_b, omega2_a),  # A learns from B on Ω2_a
        ("b", pb2, pb1, fb2, proto_a, pseudo_a, omega2_b),  # B learns from A on Ω2_b
    )
    for name, p2, p1, f2, proto_t, pseudo_t, omega2 in learners:
        dtct = alhvr_dtct_loss(p2, p1, teacher, omega3, temperature)
        loss_ce, loss_cos = alhvr_cgcpcl_loss(f2, proto_t, pseudo_t, omega2, scaler, cross_sample_mask)
        out[f"dtct_mse_{name}"] = dtct["mse"]
        out[f"dtct_ent_clean_{name}"] = dtct["ent_clean"]
        out[f"dtct_ent_pert_{name}"] = dtct["ent_pert"]
        out[f"dtct_{name}"] = dtct["total"]
        out[f"cgcpcl_ce_{name}"], out[f"cgcpcl_cos_{name}"] = loss_ce, loss_cos
        out[f"cgcpcl_{name}"] = loss_ce + loss_cos
        out[f"loss_{name}"] = out[f"sup_{name}"] + weight * (dtct["total"] + out[f"cgcpcl_{name}"])

    out.update(
        loss=out["loss_a"] + out["loss_b"],
        gamma=gamma,
        weight=torch.tensor(weight),
        omega1=omega1,
        omega2_a=omega2_a,
        omega2_b=omega2_b,
        omega3=omega3,
        teacher=teacher,
        prototypes_a=proto_a,
        prototypes_b=proto_b,
        pseudo_a=pseudo_a,
        pseudo_b=pseudo_b,
    )
    return out
