"""CoraNet losses (Shi et al., IEEE TMI 2021) as the official code koncle/CoraNet computes them.

Sources: ``train_ST_3D_VNet.py`` (the losses of both stages), ``utils1/loss.py`` (Dice) and ``utils1/utils.py``
(``get_mask``, ``pred_unlabel``). Where the paper and the code differ the code is followed; the differences are
listed in ``bundles/coranet_pancreas/docs/README.md`` ("Code vs paper").

Conventions: logits ``(N, C, *S)``; labels ``(N, *S)`` int64 class indices (a ``(N, 1, *S)``
label is accepted too); masks ``(N, *S)`` (or ``(N, 1, *S)``) bool or float, floats acting as weights. Every loss
returns a 0-dim float32 tensor, differentiable with respect to the logits only, and computes its softmax in float32
so that AMP does not change the value. A one-channel logit map (``C == 1``) is read as the sigmoid of the object
class, i.e. as the two classes ``[1 - p, p]`` (the official ``get_probability``).

Heads are accessed by name through :class:`~common.networks.coranet.CoraOutput` ``(main, rad, cons)``; the cost
vectors are named by behaviour (paper semantics; the official variable names are inverted, see
``networks/coranet.py``): ``w_cons = [a, 1, ...]`` makes background errors
expensive (conservative), ``w_rad = [1, a, ...]`` object errors (radical).

The shared pieces CoraNet uses are re-exported here unchanged: ``softmax_mse`` and
``masked_softmax_mse`` (:mod:`.consistency`), ``sigmoid_rampup`` and ``ema_update_`` (``common.schedules``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..schedules import ema_update_, sigmoid_rampup
from .consistency import masked_softmax_mse, softmax_mse

__all__ = [
    "CERTAIN_AUX_WEIGHTS",
    "coranet_certain_loss",
    "coranet_dice_loss",
    "coranet_pseudo_labels",
    "coranet_supervised_loss",
    "coranet_total_loss",
    "coranet_uncertain_loss",
    "cost_sensitive_ce",
    "cost_weight_vectors",
    "ema_update_",
    "hard_pred",
    "inconsistency_mask",
    "masked_ce",
    "masked_softmax_mse",
    "sigmoid_rampup",
    "softmax_mse",
]

# Cost vectors of the auxiliary heads' certain-region CE (C-SN): "swapped" = official HEAD ``train_ST_3D_VNet.py``
# (each auxiliary head gets the OTHER head's vector, likely unintended, kept for parity), "same" = each keeps its
# own, "none" = main head only (as the paper's C-SN; the official code of commit 273e448, December 2021).
CERTAIN_AUX_WEIGHTS = ("swapped", "same", "none")


def cost_weight_vectors(n_classes: int, alpha: float = 5.0) -> tuple[Tensor, Tensor]:
    """``(w_cons, w_rad)`` = ``([a, 1, ..., 1], [1, a, ..., a])``, float32 ``(C,)`` (paper Fig. 1: costs 1:5, 5:1).

    Index 0 is the background. Several foreground classes share the object cost (the project's multi-class
    generalisation, background versus all foreground classes; the official code is binary, see
    ``bundles/coranet_acdc/docs/README.md``).
    """
    if n_classes < 2:
        raise ValueError(f"cost vectors need at least 2 classes, got {n_classes}")
    w_cons = torch.ones(n_classes, dtype=torch.float32)
    w_cons[0] = float(alpha)
    w_rad = torch.full((n_classes,), float(alpha), dtype=torch.float32)
    w_rad[0] = 1.0
    return w_cons, w_rad


def _log_probs(logits: Tensor) -> Tensor:
    """Float32 log-probabilities ``(N, C, *S)``; one channel -> ``[log(1 - p), log p]`` with ``p = sigmoid``."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=1)
    return F.log_softmax(logits, dim=1)


def _probs(logits: Tensor) -> Tensor:
    """Float32 probabilities ``(N, C, *S)`` (softmax; sigmoid read as two classes for one channel)."""
    logits = logits.float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1.0 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def _label_map(target: Tensor, logits: Tensor) -> Tensor:
    """``(N, *S)`` int64 labels; a ``(N, 1, *S)`` label (MONAI channel-first) loses its channel."""
    if target.dim() == logits.dim():
        if target.shape[1] != 1:
            raise ValueError(f"label must be (N, *S) or (N, 1, *S), got {tuple(target.shape)}")
        target = target[:, 0]
    if target.shape[0] != logits.shape[0] or target.shape[1:] != logits.shape[2:]:
        raise ValueError(f"label shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return target.long()


def _voxel_mask(mask: Tensor, logits: Tensor) -> Tensor:
    """``(N, *S)`` float32 mask on the logits' device (``(N, 1, *S)`` accepted)."""
    if mask.dim() == logits.dim():
        mask = mask[:, 0]
    if mask.shape[0] != logits.shape[0] or mask.shape[1:] != logits.shape[2:]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match logits {tuple(logits.shape)}")
    return mask.to(device=logits.device, dtype=torch.float32)


def _nll(logits: Tensor, target: Tensor) -> Tensor:
    """Per-voxel ``-log p_v[y_v]`` ``(N, *S)``."""
    return -_log_probs(logits).gather(1, target.unsqueeze(1)).squeeze(1)


def _weights_of(target: Tensor, class_weights: Tensor | None, like: Tensor) -> Tensor:
    """Per-voxel ``w[y_v]`` (ones without weights)."""
    if class_weights is None:
        return torch.ones_like(like)
    weights = torch.as_tensor(class_weights, dtype=torch.float32, device=like.device)
    return weights[target]


def cost_sensitive_ce(logits: Tensor, target: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Weighted mean cross-entropy ``sum_v w[y_v] * nll_v / sum_v w[y_v]`` (official ``CE_con`` / ``CE_rad``).

    Normalised by the sum of the weights (PyTorch ``CrossEntropyLoss(weight=...)`` semantics), not by the voxel
    count; ``class_weights=None`` is the plain mean.
    """
    target = _label_map(target, logits)
    nll = _nll(logits, target)
    weights = _weights_of(target, class_weights, nll)
    return (weights * nll).sum() / weights.sum()


def masked_ce(
    logits: Tensor, target: Tensor, mask: Tensor, class_weights: Tensor | None = None, eps: float = 1e-16
) -> Tensor:
    """Certain-region CE ``sum_v m_v w[y_v] nll_v / (sum_v m_v + eps)`` (the paper's C-SN).

    Normalised by the mask count, not by the weights (official ``train_ST_3D_VNet.py``, unlike its supervised
    weighted CE: auxiliary terms with weight a are up to a times larger); an empty mask
    gives exactly 0.
    """
    target = _label_map(target, logits)
    m = _voxel_mask(mask, logits)
    nll = _nll(logits, target)
    weights = _weights_of(target, class_weights, nll)
    return (m * weights * nll).sum() / (m.sum() + eps)


def coranet_dice_loss(logits: Tensor, target: Tensor, mask: Tensor | None = None, smooth: float = 1e-5) -> Tensor:
    """Official soft Dice ``1 - mean_{n,c} (2 I + s) / (U + s)`` (``utils1/loss.py`` ``DiceLoss``).

    Per sample n and class c, background included: ``I = sum_v m_v p_v,c t_v,c``, ``U = sum_v m_v (p_v,c + t_v,c)``
    with ``t`` one-hot and ``m = 1`` without a mask. The mask weights the sums AFTER the softmax (unlike
    ``monai.losses.MaskedDiceLoss``). An all-zero mask gives ``1 - s/s = 0``.
    """
    target = _label_map(target, logits)
    probs = _probs(logits)
    n, c = probs.shape[:2]
    probs = probs.reshape(n, c, -1)
    onehot = F.one_hot(target.reshape(n, -1), c).transpose(1, 2).to(probs.dtype)
    inter = probs * onehot
    union = probs + onehot
    if mask is not None:
        m = _voxel_mask(mask, logits).reshape(n, 1, -1)
        inter = inter * m
        union = union * m
    dice = (2.0 * inter.sum(dim=2) + smooth) / (union.sum(dim=2) + smooth)
    return 1.0 - dice.mean()


@torch.no_grad()
def hard_pred(logits: Tensor, threshold: float = 0.5) -> Tensor:
    """Hard prediction ``(N, *S)`` int64 (official ``get_mask`` of ``utils1/utils.py``).

    Two classes: object iff ``softmax(logits)[:, 1] >= threshold`` (an exact 0.5/0.5 tie counts as object); one
    channel: ``sigmoid >= threshold``; more classes: argmax (the first index on ties; ``threshold`` unused).
    """
    logits = logits.detach().float()
    if logits.shape[1] <= 2:
        return (_probs(logits)[:, 1] >= threshold).long()
    return logits.argmax(dim=1)


@torch.no_grad()
def inconsistency_mask(cons_logits: Tensor, rad_logits: Tensor, threshold: float = 0.5) -> Tensor:
    """Uncertain voxels ``(N, *S)`` bool: the conservative and radical heads' hard predictions differ.

    Official ``pred_unlabel`` (``utils1/utils.py``) keeps ``get_mask(out[1]) == get_mask(out[2])`` as certain.
    Symmetric in its arguments; for C > 2 a disagreement between two foreground classes counts (the project's
    multi-class rule, ``bundles/coranet_acdc/docs/README.md``).
    """
    return hard_pred(cons_logits, threshold) != hard_pred(rad_logits, threshold)


@torch.no_grad()
def coranet_pseudo_labels(out: Any, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """``(plab, certain)`` = ``(hard_pred(out.main), ~inconsistency_mask(out.cons, out.rad))`` (``pred_unlabel``).

    The pseudo-label comes from the MAIN head; ``certain`` is True where the auxiliary heads agree. No gradient.
    """
    return hard_pred(out.main, threshold), ~inconsistency_mask(out.cons, out.rad, threshold)


def _ce_dice_terms(main_ce: Tensor, main_dice: Tensor, rad: Tensor, cons: Tensor) -> dict[str, Tensor]:
    return {"ce": main_ce, "dice": main_dice, "rad": rad, "cons": cons, "total": (main_ce + main_dice + rad + cons) / 4}


def coranet_supervised_loss(out: Any, target: Tensor, w_cons: Tensor, w_rad: Tensor) -> dict[str, Tensor]:
    """Labeled loss of both stages (official ``train_ST_3D_VNet.py``): keys ``ce, dice, rad, cons, total``.

    ``total = (CE(main) + Dice(main) + CE_w(rad; w_rad) + CE_w(cons; w_cons)) / 4``; Dice on the main head only;
    the weighted CEs are normalised by the sum of the weights.
    """
    return _ce_dice_terms(
        cost_sensitive_ce(out.main, target),
        coranet_dice_loss(out.main, target),
        cost_sensitive_ce(out.rad, target, w_rad),
        cost_sensitive_ce(out.cons, target, w_cons),
    )


def coranet_certain_loss(
    out: Any, plab: Tensor, certain: Tensor, w_cons: Tensor, w_rad: Tensor, aux_weights: str = "swapped"
) -> dict[str, Tensor]:
    """C-SN, self-training on the certain region (official ``train_ST_3D_VNet.py``): keys ``ce, dice, rad, cons,
    total``.

    ``aux_weights``:

    * ``"swapped"`` (official HEAD code, default): ``total = (mCE(main) + mDice(main) + mCE(rad; w_cons)
      + mCE(cons; w_rad)) / 4`` -- each auxiliary head gets the OTHER head's cost vector (likely unintended);
    * ``"same"``: as above with ``rad; w_rad`` and ``cons; w_cons``;
    * ``"none"``: ``total = (mCE(main) + mDice(main)) / 2`` (Dec-2021 code, the paper's formula); ``rad`` and
      ``cons`` are reported as 0.

    Masked CE is normalised by the number of certain voxels, masked Dice weights its sums by ``certain``; an
    empty certain region gives 0 for every term.
    """
    if aux_weights not in CERTAIN_AUX_WEIGHTS:
        raise ValueError(f"aux_weights must be one of {CERTAIN_AUX_WEIGHTS}, got {aux_weights!r}")
    main_ce = masked_ce(out.main, plab, certain)
    main_dice = coranet_dice_loss(out.main, plab, certain)
    if aux_weights == "none":
        zero = main_ce.new_zeros(())
        return {"ce": main_ce, "dice": main_dice, "rad": zero, "cons": zero, "total": (main_ce + main_dice) / 2}
    rad_w, cons_w = (w_cons, w_rad) if aux_weights == "swapped" else (w_rad, w_cons)
    return _ce_dice_terms(
        main_ce, main_dice, masked_ce(out.rad, plab, certain, rad_w), masked_ce(out.cons, plab, certain, cons_w)
    )


def coranet_uncertain_loss(student: Any, teacher: Any, uncertain: Tensor, weight: float) -> Tensor:
    """UC-SN, masked mean-teacher consistency (official code): ``mean_h weight * masked_softmax_mse(s_h, t_h, u)``.

    Over the three heads (main, rad, cons; the paper's UC-SN uses the main decoder only), each against the teacher's
    same head; the masked reduction divides by
    the number of uncertain voxels (not voxel x class). An empty uncertain region gives 0. The teacher is constant.
    """
    heads = [masked_softmax_mse(s, t, uncertain) for s, t in zip(student, teacher, strict=True)]
    return weight * torch.stack(heads).mean()


def coranet_total_loss(
    sup: Tensor | float, certain: Tensor | float, uncertain: Tensor | float, unsup_weight: float = 0.5
) -> Tensor:
    """Self-training objective ``sup + unsup_weight * (certain + uncertain)`` (official: ``unsup_weight`` 0.5)."""
    return torch.as_tensor(sup) + unsup_weight * (torch.as_tensor(certain) + torch.as_tensor(uncertain))
