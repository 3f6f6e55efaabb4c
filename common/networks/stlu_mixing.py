"""STLU-Net feature perturbations (M-stream and D-stream of the paper): similarity-weighted mixing, channel dropout.

The M-stream replaces every labeled/unlabeled feature map by a channel-wise convex combination with its partner
from the other kind, weighted by the clamped cosine similarity of the two maps of that channel; the D-stream drops
whole channels. All functions are pure (no parameters) and work for any number >= 1 of spatial axes. Choices the
paper leaves open are marked ASSUMED (table of ``bundles/stlu_la/docs/README.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "channel_similarity_weights",
    "channel_similarity_mix",
    "pair_partner_indices",
    "mix_labeled_unlabeled",
    "channel_dropout",
]


def channel_similarity_weights(x_l: Tensor, x_u: Tensor, eps: float = 1e-8) -> Tensor:
    """Clamped channel-wise cosine similarity ``w[n, c]`` of two feature batches (the paper's mixing weights).

    ``w[n, c] = clamp(<b, a> / (max(|b|, eps) * max(|a|, eps)), 0, 1)`` with ``a = x_l[n, c]`` and ``b = x_u[n, c]``
    flattened over all spatial axes: one scalar per (sample, channel), spatially uniform.

    Args:
        x_l, x_u: ``(N, C, *S)`` floating tensors of identical shape, at least one spatial axis.
        eps: floor of EACH norm separately (as ``torch.nn.functional.cosine_similarity``).

    Returns:
        ``w`` of shape ``(N, C, 1, ..., 1)`` (one singleton per spatial axis), dtype of the inputs, in [0, 1].
        A channel that is all zeros on either side gives exactly 0, with finite gradients.
    """
    if x_l.shape != x_u.shape:
        raise ValueError(f"x_l and x_u must have the same shape, got {tuple(x_l.shape)} and {tuple(x_u.shape)}")
    if x_l.dim() < 3:
        raise ValueError(f"expected (N, C, *spatial) with at least one spatial axis, got shape {tuple(x_l.shape)}")
    if not (x_l.is_floating_point() and x_u.is_floating_point()):
        raise ValueError(f"expected floating tensors, got {x_l.dtype} and {x_u.dtype}")
    # Half-precision sums over large maps lose digits: accumulate in at least float32 (float64 stays float64).
    work = torch.promote_types(torch.promote_types(x_l.dtype, x_u.dtype), torch.float32)
    a = x_l.flatten(2).to(work)
    b = x_u.flatten(2).to(work)
    dot = (a * b).sum(-1)
    # max(|a|, eps) computed as sqrt(max(|a|^2, eps^2)): same value, but a zero map gets a zero gradient instead of
    # the NaN that differentiating the norm itself at 0 would give.
    floor = eps * eps
    norm_a = (a * a).sum(-1).clamp_min(floor).sqrt()
    norm_b = (b * b).sum(-1).clamp_min(floor).sqrt()
    w = (dot / (norm_b * norm_a)).clamp(0.0, 1.0)
    return w.to(x_l.dtype).reshape(*w.shape, *([1] * (x_l.dim() - 2)))


def channel_similarity_mix(
    x_l: Tensor, x_u: Tensor, eps: float = 1e-8, detach_weight: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Two-way similarity-weighted mixing of a labeled and an unlabeled feature batch (the paper's M-stream mix).

    ``x_l_mixed = w * x_l + (1 - w) * x_u`` and ``x_u_mixed = w * x_u + (1 - w) * x_l`` with ``w`` from
    :func:`channel_similarity_weights`: similar channels stay close to the sample's own features, dissimilar ones
    are largely taken from the partner. ``detach_weight=True`` stops the gradient through ``w`` only.

    Returns:
        ``(x_l_mixed, x_u_mixed, w)``; the mixed maps have the inputs' shape and dtype.
    """
    w = channel_similarity_weights(x_l, x_u, eps)
    if detach_weight:
        w = w.detach()
    x_l_mixed = w * x_l + (1.0 - w) * x_u
    x_u_mixed = w * x_u + (1.0 - w) * x_l
    return x_l_mixed, x_u_mixed, w


def pair_partner_indices(n_l: int, n_u: int) -> tuple[Tensor, Tensor]:
    """Partner of every labeled and every unlabeled row: ``i mod n_u`` and ``j mod n_l``.

    Fixed index pairing (ASSUMED): the loaders already shuffle which volumes meet. With ``n_l == n_u`` it is the
    identity pairing. Raises ``ValueError`` when either count is below 1 (nothing to mix with).

    Returns:
        ``(partner_of_l, partner_of_u)``: int64 tensors of lengths ``n_l`` and ``n_u``.
    """
    if n_l < 1 or n_u < 1:
        raise ValueError(f"STLU mixing needs at least one labeled and one unlabeled sample, got n_l={n_l}, n_u={n_u}")
    partner_of_l = torch.arange(n_l, dtype=torch.long) % n_u
    partner_of_u = torch.arange(n_u, dtype=torch.long) % n_l
    return partner_of_l, partner_of_u


def mix_labeled_unlabeled(
    feat: Tensor, n_labeled: int, eps: float = 1e-8, detach_weight: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Mix every row of a joint batch with its partner of the other kind (vectorised :func:`channel_similarity_mix`).

    Labeled row i is mixed with unlabeled row ``i mod n_u`` and keeps its labeled output; unlabeled row j is mixed
    with labeled row ``j mod n_l`` and keeps its unlabeled output. Odd or unequal counts work by the modulo rule.

    Args:
        feat: ``(B, C, *S)``, rows ``[:n_labeled]`` labeled, rows ``[n_labeled:]`` unlabeled.
        n_labeled: number of labeled rows, ``1 <= n_labeled <= B - 1``.

    Returns:
        ``(feat_mixed, w_l, w_u)``: mixed features in the input row order, ``w_l (n_l, C, 1, ...)`` and
        ``w_u (n_u, C, 1, ...)``; with ``n_l == n_u`` the two weight tensors are equal.
    """
    n_l = int(n_labeled)
    n_u = feat.shape[0] - n_l
    partner_of_l, partner_of_u = pair_partner_indices(n_l, n_u)
    feat_l, feat_u = feat[:n_l], feat[n_l:]
    partner_u = feat_u.index_select(0, partner_of_l.to(feat.device))  # unlabeled partner of each labeled row
    partner_l = feat_l.index_select(0, partner_of_u.to(feat.device))  # labeled partner of each unlabeled row
    mixed_l, _, w_l = channel_similarity_mix(feat_l, partner_u, eps, detach_weight)
    _, mixed_u, w_u = channel_similarity_mix(partner_l, feat_u, eps, detach_weight)
    return torch.cat([mixed_l, mixed_u]), w_l, w_u


def channel_dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Channel-wise dropout of the D-stream (paper: p = 0.5): whole (sample, channel) maps zeroed with probability p.

    Kept maps are scaled by ``1 / (1 - p)``. ``dropout3d`` for 5-D input, ``dropout2d`` for 4-D, ``dropout1d`` for
    3-D; identity when ``training`` is False or ``p == 0``. ``0 <= p < 1`` (``ValueError`` otherwise).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"channel dropout probability must satisfy 0 <= p < 1, got {p}")
    if not training or p == 0.0:
        return x
    if x.dim() == 5:
        return F.dropout3d(x, p, True)
    if x.dim() == 4:
        return F.dropout2d(x, p, True)
    if x.dim() == 3:
        return F.dropout1d(x, p, True)
    raise ValueError(f"channel_dropout expects (N, C, *S) with 1 to 3 spatial axes, got shape {tuple(x.shape)}")
