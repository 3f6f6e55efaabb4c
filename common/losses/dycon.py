"""DyCON's losses and schedules (Assefa et al., "DyCON: Dynamic Uncertainty-aware Consistency and Contrastive
Learning for Semi-supervised Medical Image Segmentation", CVPR 2025; official code CVML-KU/DyCON).

Pure functions of tensors. Every loss returns a 0-dim tensor in the dtype of its inputs (float32 or float64) on
the inputs' device. Shared pieces are reused, not duplicated: ``consistency_weight`` (common/schedules.py) and
``softmax_mse`` (common/losses/consistency.py).

Symbols: B batch, B_l labeled part, C classes (2), ``(H, W, D)`` patch, ``f`` label-downsampling
factor (8), ``N = (H/f)(W/f)(D/f)`` embedding cells per volume, E embedding dimension, ``t`` 0-based iteration,
``e`` epoch = ``t // ipe`` with ``ipe`` iterations per official epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from ..schedules import consistency_weight
from .consistency import softmax_mse

__all__ = [
    "DEFAULT_LOSS_CONFIG",
    "DyCONLossConfig",
    "adaptive_beta",
    "downsample_labels",
    "dycon_step_losses",
    "dycon_supervised_loss",
    "fecl_loss",
    "flatten_embeddings",
    "gambling_softmax",
    "largest_connected_component",
    "mt_consistency_loss",
    "patch_entropy",
    "squared_dice_loss",
    "teacher_pseudo_labels",
    "threshold_rampup",
    "uncl_loss",
]

FECL_LABEL_SOURCES = ("teacher", "ground_truth")
FECL_PARTS = ("unlabeled", "all")
MASK_MODES = ("trilinear", "avgpool")


@dataclass(frozen=True)
class DyCONLossConfig:
    """The ``cfg`` of :func:`dycon_step_losses`: loss weights, MT ramp and FeCL settings.

    Defaults are the official training settings, with the project's teacher pseudo-labels as FeCL cell labels of
    the unlabeled rows (``fecl_label_source``; bundles/dycon_la/docs/README.md, "Decisions").

    Attributes:
        l_weight, u_weight: weights of the supervised loss and of (FeCL + UnCL).
        consistency, consistency_rampup, consistency_iters_per_unit: MT-MSE weight
            ``consistency_weight(t, consistency, consistency_rampup, consistency_iters_per_unit)``.
        temperature, gamma, use_focal, use_teacher_hn, fecl_rampup_epochs, lambda_cross, use_entropy_weights:
            FeCL settings (:func:`fecl_loss`; ``use_teacher_hn=False`` drops the teacher hard-negative term).
        mask_factor: label-downsampling factor, ``16 / embed_upsample``; checked against the embedding grid.
        mask_mode: "trilinear" (official HEAD) or "avgpool" (release cd2d514).
        fecl_part: "unlabeled" (official HEAD) or "all" (release cd2d514; labeled rows use their ground truth).
        fecl_label_source: "teacher" (project default) or "ground_truth" (official: a label leak, parity only).
    """

    l_weight: float = 1.0
    u_weight: float = 0.5
    consistency: float = 0.1
    consistency_rampup: float = 200.0
    consistency_iters_per_unit: int = 150
    temperature: float = 0.6
    gamma: float = 2.0
    use_focal: bool = True
    use_teacher_hn: bool = True
    fecl_rampup_epochs: float = 1500.0
    lambda_cross: float = 1.0
    use_entropy_weights: bool = False
    mask_factor: int = 8
    mask_mode: str = "trilinear"
    fecl_part: str = "unlabeled"
    fecl_label_source: str = "teacher"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("fecl_label_source", FECL_LABEL_SOURCES),
            ("fecl_part", FECL_PARTS),
            ("mask_mode", MASK_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


# the same defaults as a mapping, for callers that build ``cfg`` key by key (e.g. the benchmarks)
DEFAULT_LOSS_CONFIG: dict[str, Any] = asdict(DyCONLossConfig())


# --------------------------------------------------------------------------------------------------------------
# Schedules (UnCL's beta, FeCL's teacher hard-negative threshold)
# --------------------------------------------------------------------------------------------------------------


def adaptive_beta(epoch: int, total_epochs: int, beta_max: float = 5.0, beta_min: float = 0.5) -> float:
    """UnCL sharpness ``beta(e) = beta_max * (beta_min / beta_max) ** (e / E_max)`` (official schedule).

    Exponential decay from ``beta_max`` at epoch 0 to ``beta_min`` at ``e = E_max``; the official run stops at
    ``e = E_max - 1`` (``E_max = T_max // ipe + 1``), i.e. just above ``beta_min``.
    """
    return beta_max * (beta_min / beta_max) ** (epoch / total_epochs)


def threshold_rampup(epoch: float, rampup_epochs: float, lo: float, hi: float, steepness: float = 5.0) -> float:
    """FeCL threshold ``lo + (hi - lo) * exp(-k (1 - clip(e, 0, R) / R)^2)``; ``hi`` when ``R = 0``.

    At ``e = 0`` it is ``lo + exp(-k) (hi - lo)``, not ``lo``.
    """
    if rampup_epochs == 0:
        return hi
    phase = 1.0 - min(max(float(epoch), 0.0), float(rampup_epochs)) / rampup_epochs
    return lo + (hi - lo) * math.exp(-steepness * phase * phase)


# --------------------------------------------------------------------------------------------------------------
# Embeddings and cell labels (FeCL's patch-level representations)
# --------------------------------------------------------------------------------------------------------------


def flatten_embeddings(features: Tensor) -> Tensor:
    """``(B, E, h, w, d) -> (B, N, E)``, C-order over the grid, each row L2-normalised (eps 1e-12)."""
    b, e = features.shape[:2]
    return F.normalize(features.reshape(b, e, -1).transpose(1, 2), dim=-1, eps=1e-12)


def _label_volume(labels: Tensor) -> Tensor:
    """``(B, H, W, D)`` or ``(B, 1, H, W, D)`` labels as ``(B, H, W, D)``."""
    if labels.dim() == 5:
        if labels.shape[1] != 1:
            raise ValueError(f"labels must be (B, H, W, D) or (B, 1, H, W, D), got {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.dim() != 4:
        raise ValueError(f"labels must be (B, H, W, D) or (B, 1, H, W, D), got {tuple(labels.shape)}")
    return labels


def downsample_labels(labels: Tensor, factor: int = 8, mode: str = "trilinear") -> Tensor:
    """One binary label per embedding cell, ``(B, H, W, D) -> (B, N)`` float 0./1.

    ``"trilinear"`` (official HEAD): trilinear resize by scale ``1/factor`` (align_corners False), then strictly
    ``> 0.5``; for even ``factor`` a cell is foreground iff at least 5 of the 8 central voxels of its block are.
    ``"avgpool"`` (release cd2d514): foreground fraction of the ``factor^3`` block strictly ``> 0.5``.
    Labels are compared with 1 after the resize, so only the foreground class (1) counts.
    """
    volume = (_label_volume(labels) == 1).to(torch.float32).unsqueeze(1)
    if mode == "trilinear":
        small = F.interpolate(volume, scale_factor=1.0 / factor, mode="trilinear", align_corners=False)
    elif mode == "avgpool":
        small = F.avg_pool3d(volume, kernel_size=factor, stride=factor)
    else:
        raise ValueError(f"mode must be one of {MASK_MODES}, got {mode!r}")
    return (small > 0.5).to(torch.float32).reshape(volume.shape[0], -1)


def teacher_pseudo_labels(teacher_logits: Tensor) -> Tensor:
    """Hard pseudo-labels ``argmax_c`` of the teacher's logits, ``(B, C, *S) -> int64 (B, *S)``; ties -> class 0.

    ``torch.argmax`` returns the first maximal index, so an exact tie goes to the lower class (background).
    """
    return torch.argmax(teacher_logits.detach(), dim=1)


# --------------------------------------------------------------------------------------------------------------
# Supervised and consistency losses
# --------------------------------------------------------------------------------------------------------------


def squared_dice_loss(prob_fg: Tensor, target: Tensor, smooth: float = 1e-5) -> Tensor:
    """``1 - (2 sum p y + s) / (sum p^2 + sum y^2 + s)`` over the whole batch at once.

    ``prob_fg``: foreground probabilities ``(B, *S)``; ``target``: bool/int foreground mask ``(B, *S)``. Equals
    MONAI ``DiceLoss(include_background=False, to_onehot_y=True, squared_pred=True, batch=True,
    smooth_nr=smooth, smooth_dr=smooth)`` on two-class probabilities.
    """
    y = target.to(prob_fg.dtype)
    intersect = torch.sum(prob_fg * y)
    return 1.0 - (2.0 * intersect + smooth) / (torch.sum(prob_fg * prob_fg) + torch.sum(y * y) + smooth)


def dycon_supervised_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(CE, Dice)`` of the labeled half; ``L_sup = CE + Dice``.

    CE: mean multi-class cross-entropy over all voxels; Dice: :func:`squared_dice_loss` of the softmax foreground
    channel against ``labels == 1``. ``labels``: int64 ``(B_l, *S)`` (a ``(B_l, 1, *S)`` map is accepted).
    """
    if labels.dim() == logits.dim():
        labels = labels[:, 0]
    labels = labels.long()
    ce = F.cross_entropy(logits, labels)
    dice = squared_dice_loss(torch.softmax(logits, dim=1)[:, 1], labels == 1)
    return ce, dice


def mt_consistency_loss(student_probs: Tensor, teacher_probs: Tensor) -> Tensor:
    """Plain Mean-Teacher MSE ``mean((softmax(P_s) - softmax(P_t))^2)`` on PROBABILITIES (official code).

    The official code hands probabilities to ``softmax_mse_loss``, which applies a softmax again; this keeps that
    double softmax (parity). Mean over all ``B_u * C * H * W * D`` elements; the teacher is a constant.
    """
    # the shared softmax_mse computes in float32; the result is cast back to the input dtype
    return softmax_mse(student_probs, teacher_probs).mean().to(student_probs.dtype)


def _entropy(probs: Tensor, eps: float) -> Tensor:
    """Per-voxel Shannon entropy ``-sum_c p log(p + eps)`` (natural log, not normalised), shape ``(B, *S)``."""
    return -torch.sum(probs * torch.log(probs + eps), dim=1)


def uncl_loss(student_logits: Tensor, teacher_logits: Tensor, beta: float, eps: float = 1e-6) -> Tensor:
    """UnCL, the paper's uncertainty-aware consistency loss (official ``UnCLoss``).

    ``p = softmax(s)``, ``q = softmax(t)``, ``H_s``, ``H_t`` their entropies (natural log, ``eps`` inside the log);
    ``UnCL = mean_{b,v}[ sum_c (p_c - q_c)^2 / (exp(beta H_s) + exp(beta H_t)) ] + beta * mean_{b,v}[H_s + H_t]``.
    Gradient reaches the student through ``p`` and ``H_s``; the teacher is a constant. Computed as the formula,
    without the official ``[B, B, *S]`` broadcast (same mean).
    """
    p = torch.softmax(student_logits, dim=1)
    q = torch.softmax(teacher_logits.detach(), dim=1)
    h_s, h_t = _entropy(p, eps), _entropy(q, eps)
    weighted = torch.sum((p - q) ** 2, dim=1) / (torch.exp(beta * h_s) + torch.exp(beta * h_t))
    return torch.mean(weighted) + beta * torch.mean(h_s + h_t)


# --------------------------------------------------------------------------------------------------------------
# FeCL: the paper's focal entropy-aware contrastive loss
# --------------------------------------------------------------------------------------------------------------


def gambling_softmax(logits: Tensor) -> Tensor:
    """The paper's "gambling softmax": an ordinary softmax over classes.

    The official form ``exp(l) / (sum exp(l) + 1e-18)`` has no max-subtraction and overflows for large logits;
    the stable softmax gives the same values wherever the naive form is finite (up to the 1e-18).
    """
    return torch.softmax(logits, dim=1)


def patch_entropy(logits: Tensor, factor: int = 8) -> Tensor:
    """Per-cell entropy weights for FeCL's optional entropy weighting, ``(B, C, H, W, D) -> (B, N)``.

    Entropy ``-sum_c p log(p + 1e-6)`` of :func:`gambling_softmax`, trilinear resize by ``1/factor``
    (align_corners False), flattened in C order. Give it the same batch slice as the embeddings it weights.
    """
    entropy = _entropy(gambling_softmax(logits), 1e-6).unsqueeze(1)
    small = F.interpolate(entropy, scale_factor=1.0 / factor, mode="trilinear", align_corners=False)
    return small.reshape(logits.shape[0], -1)


def fecl_loss(
    student_emb: Tensor,
    patch_labels: Tensor,
    teacher_emb: Tensor | None,
    epoch: int,
    *,
    temperature: float = 0.6,
    gamma: float = 2.0,
    use_focal: bool = True,
    rampup_epochs: float = 1500,
    lambda_cross: float = 1.0,
    entropy_weights: Tensor | None = None,
) -> Tensor:
    """FeCL, the focal entropy-aware contrastive loss with teacher hard negatives (official code).

    Per volume b (pairs never cross volumes; every cell is an anchor), with normalised student embeddings ``z``,
    cell labels ``y`` and, optionally, normalised teacher embeddings ``z~``:

    1. ``P_ij = [y_i = y_j]`` (diagonal included), ``O_ij = [i != j]``;
    2. ``a_ij = O_ij <z_i, z_j> / tau`` (diagonal exactly 0);
    3. column shift ``m_j = max_i a_ij`` (a constant), ``e_ij = exp(a_ij - m_j)`` -- per COLUMN, so it does not
       cancel below (official code, reproduced on purpose; bundles/dycon_la/docs/README.md, "Decisions");
    4. ``Z_i = sum_j (1 - P_ij) e_ij``;  5. ``r_ij = e_ij / (e_ij + Z_i + 1e-18)``;
    6. ``l_ij = -log(r_ij + 1e-18) P_ij O_ij``;  7. ``n_i = sum_j P_ij - 1``;
    8. focal weight ``w_ij = (1 - r_ij)^gamma`` (not detached; 1 without focal) -- the official negative focal
       weight multiplies zero entries and is omitted;
    9. ``L_i = sum_j w_ij l_ij / (n_i + 1e-18)``; ``L_student = mean over all B*N anchors``.
       With ``entropy_weights u`` (optional, off in official training) instead
       ``L_student = mean_{b,i} u_bi sum_j l_ij / (n_i + 1e-18)``.
    10. teacher hard negatives: ``c_ij = <z_i, z~_j>``, ``theta = threshold_rampup(epoch, rampup_epochs, 0.3, 0.5)``,
        ``H = {(b, i, j): y_i != y_j, c_ij > theta}`` over the whole batch,
        ``L_cross = mean_H -log(max(1 - c_ij, 0) + 1e-18)`` (0 if H is empty; the clamp avoids a NaN when rounding
        gives ``c > 1``). Gradient reaches the student only.
    11. ``FeCL = L_student + lambda_cross * L_cross``.

    Args:
        student_emb: ``(B, N, E)`` L2-normalised student embeddings (:func:`flatten_embeddings`).
        patch_labels: ``(B, N)`` or ``(B, 1, N)`` cell labels (0./1.).
        teacher_emb: ``(B, N, E)`` normalised teacher embeddings, or None to drop the teacher term.
        epoch: official epoch index (``t // ipe``) for the threshold ramp.
        temperature, gamma, use_focal, rampup_epochs, lambda_cross: defaults = official training settings.
        entropy_weights: ``(B, N)`` per-anchor weights (:func:`patch_entropy`) or None.
    """
    labels = patch_labels.reshape(patch_labels.shape[0], -1).to(student_emb.dtype)
    n = student_emb.shape[1]
    if labels.shape[1] != n:
        raise ValueError(f"patch_labels have {labels.shape[1]} cells per volume, the embeddings {n}")
    positive = (labels.unsqueeze(2) == labels.unsqueeze(1)).to(student_emb.dtype)  # P (B, N, N)
    off_diagonal = 1.0 - torch.eye(n, dtype=student_emb.dtype, device=student_emb.device)  # O (N, N)

    logits = torch.matmul(student_emb, student_emb.transpose(1, 2)) / temperature * off_diagonal
    column_max = torch.max(logits, dim=1, keepdim=True).values.detach()  # m_j: max over anchors i
    exp_logits = torch.exp(logits - column_max)
    negative_mass = torch.sum(exp_logits * (1.0 - positive), dim=-1, keepdim=True)  # Z_i
    pair_prob = exp_logits / (exp_logits + negative_mass + 1e-18)  # r_ij
    pair_loss = -torch.log(pair_prob + 1e-18) * positive * off_diagonal  # l_ij
    n_pos = torch.sum(positive, dim=-1) - 1.0 + 1e-18  # n_i (+ the official 1e-18)

    if entropy_weights is not None:
        per_anchor = torch.sum(pair_loss, dim=-1) / n_pos
        loss_student = torch.mean(per_anchor * entropy_weights.reshape(per_anchor.shape).to(per_anchor.dtype))
    else:
        weights = (1.0 - pair_prob) ** gamma if use_focal else torch.ones_like(pair_prob)
        loss_student = torch.mean(torch.sum(pair_loss * weights, dim=-1) / n_pos)

    if teacher_emb is None:
        return loss_student
    cross = torch.matmul(student_emb, teacher_emb.detach().transpose(1, 2))  # c_ij
    threshold = threshold_rampup(epoch, rampup_epochs, 0.3, 0.5)
    hard = (positive == 0) & (cross > threshold)
    if not bool(hard.any()):
        return loss_student  # L_cross = 0
    hard_sim = cross[hard]
    loss_cross = torch.mean(-torch.log(torch.clamp(1.0 - hard_sim, min=0.0) + 1e-18))
    return loss_student + lambda_cross * loss_cross


# --------------------------------------------------------------------------------------------------------------
# One training step's losses
# --------------------------------------------------------------------------------------------------------------


def _cfg(cfg: Any, name: str) -> Any:
    """Read ``name`` from a mapping or an attribute object (argparse namespace, dataclass), else its default."""
    if cfg is None:
        return DEFAULT_LOSS_CONFIG[name]
    if isinstance(cfg, Mapping):
        return cfg.get(name, DEFAULT_LOSS_CONFIG[name])
    return getattr(cfg, name, DEFAULT_LOSS_CONFIG[name])


def dycon_step_losses(
    stud_logits: Tensor,
    ema_logits: Tensor,
    stud_features: Tensor,
    ema_features: Tensor,
    labels: Tensor,
    labeled_bs: int,
    iter_num: int,
    epoch: int,
    beta: float,
    cfg: Any = None,
) -> dict[str, Any]:
    """All losses of one DyCON iteration; ``loss`` keeps its graph, ``mask`` is ``(B, N)``.

    ``L = l_weight (CE + Dice) + w_c(t) L_mse + u_weight (FeCL + UnCL)`` with ``w_c(t) = consistency_weight(t,
    consistency, consistency_rampup, consistency_iters_per_unit)``, ``L_mse`` on the unlabeled rows
    (``labeled_bs:``), UnCL on the whole batch and FeCL on ``fecl_part`` ("unlabeled": rows ``labeled_bs:``;
    "all": every row). FeCL cell labels come from ``labels`` for labeled rows and, for unlabeled rows, from the
    teacher's argmax (``fecl_label_source="teacher"``, the project default) or from ``labels`` (``"ground_truth"``:
    the official behaviour, which reads the labels of the unlabeled volumes -- a label leak kept for
    parity/diagnosis only; bundles/dycon_la/docs/README.md, "Decisions"). Unlabeled rows of ``labels`` are read
    only in the ``"ground_truth"`` mode.

    Args:
        stud_logits, ema_logits: ``(B, C, H, W, D)`` student / teacher logits.
        stud_features, ema_features: ``(B, E, h, w, d)`` raw projection-head outputs.
        labels: int ``(B, H, W, D)`` (or ``(B, 1, H, W, D)``).
        labeled_bs: number of labeled rows at the start of the batch.
        iter_num: 0-based iteration (consistency ramp). epoch: official epoch (FeCL threshold). beta: UnCL beta.
        cfg: a :class:`DyCONLossConfig`, or a mapping / attribute object with some of its fields (missing ones take
            the defaults).

    Returns:
        ``{loss_seg, loss_seg_dice, consistency_weight (float), consistency_loss, f_loss, u_loss, loss, mask}``.
    """
    label_source = _cfg(cfg, "fecl_label_source")
    part = _cfg(cfg, "fecl_part")
    if label_source not in FECL_LABEL_SOURCES:
        raise ValueError(f"fecl_label_source must be one of {FECL_LABEL_SOURCES}, got {label_source!r}")
    if part not in FECL_PARTS:
        raise ValueError(f"fecl_part must be one of {FECL_PARTS}, got {part!r}")
    labels = _label_volume(labels).long()
    lb = labeled_bs

    loss_seg, loss_seg_dice = dycon_supervised_loss(stud_logits[:lb], labels[:lb])
    cons_weight = consistency_weight(
        iter_num, _cfg(cfg, "consistency"), _cfg(cfg, "consistency_rampup"), _cfg(cfg, "consistency_iters_per_unit")
    )
    stud_probs = torch.softmax(stud_logits, dim=1)
    ema_probs = torch.softmax(ema_logits.detach(), dim=1)
    consistency_loss = mt_consistency_loss(stud_probs[lb:], ema_probs[lb:])

    fecl_labels = labels.clone()
    if label_source == "teacher":
        fecl_labels[lb:] = teacher_pseudo_labels(ema_logits[lb:])
    factor = int(_cfg(cfg, "mask_factor"))
    mask = downsample_labels(fecl_labels, factor, _cfg(cfg, "mask_mode"))
    grid = tuple(stud_features.shape[2:])
    expected = tuple(s // factor for s in labels.shape[1:])
    if grid != expected:  # the mask factor must match the embedding grid
        raise ValueError(
            f"mask_factor {factor} gives a {expected} label grid but the embeddings are {grid}; "
            "use mask_factor = 16 / embed_upsample"
        )
    stud_emb = flatten_embeddings(stud_features)
    ema_emb = flatten_embeddings(ema_features.detach())
    rows = slice(lb, None) if part == "unlabeled" else slice(None)
    entropy_weights = None
    if _cfg(cfg, "use_entropy_weights"):
        entropy_weights = patch_entropy(stud_logits[rows], factor)  # same slice as the embeddings
    f_loss = fecl_loss(
        stud_emb[rows],
        mask[rows].to(stud_emb.dtype),
        ema_emb[rows] if _cfg(cfg, "use_teacher_hn") else None,
        epoch,
        temperature=_cfg(cfg, "temperature"),
        gamma=_cfg(cfg, "gamma"),
        use_focal=bool(_cfg(cfg, "use_focal")),
        rampup_epochs=_cfg(cfg, "fecl_rampup_epochs"),
        lambda_cross=_cfg(cfg, "lambda_cross"),
        entropy_weights=entropy_weights,
    )
    u_loss = uncl_loss(stud_logits, ema_logits, beta)
    loss = (
        _cfg(cfg, "l_weight") * (loss_seg + loss_seg_dice)
        + cons_weight * consistency_loss
        + _cfg(cfg, "u_weight") * (f_loss + u_loss)
    )
    return {
        "loss_seg": loss_seg,
        "loss_seg_dice": loss_seg_dice,
        "consistency_weight": cons_weight,
        "consistency_loss": consistency_loss,
        "f_loss": f_loss,
        "u_loss": u_loss,
        "loss": loss,
        "mask": mask,
    }


# --------------------------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------------------------


def largest_connected_component(seg: Any) -> np.ndarray:
    """Keep the largest 26-connected foreground component of a 3-D mask, as a bool array (official test script).

    Exact ties go to the component met first in raster-scan order (lowest ``scipy.ndimage.label`` index, what
    the official label + bincount + argmax does; MONAI ``KeepLargestConnectedComponent`` keeps the later one).
    An empty mask is returned unchanged (all False). Post-processing, not a loss: it lives here with DyCON's other
    pure functions.
    """
    if isinstance(seg, Tensor):
        seg = seg.detach().cpu().numpy()
    mask = np.asarray(seg) > 0
    components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if count == 0:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))
