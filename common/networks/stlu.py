"""STLU-Net (Pattern Recognition 2026, "Enhancing semi-supervised medical image segmentation via semantic
transfer"): one V-Net whose encoder features feed two perturbed streams through the shared decoder.

* D-stream: channel dropout on the encoder features (paper: p = 0.5).
* M-stream: every labeled sample is paired with an unlabeled one and, at the selected encoder levels, each
  feature map becomes a channel-wise similarity-weighted mix of the pair (:mod:`.stlu_mixing`).

At inference STLU-Net is a plain V-Net: :meth:`STLUNet.forward` runs ``decoder(encoder(x))`` without mixing or
dropout, and the state dict has exactly the keys and shapes of :class:`~.vnet.VNet`, so checkpoints load into it.

The paper leaves many details open; the choices made here are marked ASSUMED (the MC-Net/ML code base's, or the
simplest reading of the paper), and each is an option listed with its default in the "ASSUMED choice" table of
``bundles/stlu_la/docs/README.md`` (the same table is in the ``stlu_pancreas`` and ``stlu_brats`` READMEs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .stlu_mixing import channel_dropout, mix_labeled_unlabeled, pair_partner_indices
from .unet2d import check_input_shape
from .vnet import VNet

__all__ = ["STLUNet", "STLU_GROUP_LEVELS", "parse_stlu_levels"]

NUM_LEVELS = 5
# ASSUMED: the paper's mixing ablation names shallow / intermediate / bottleneck encoder groups (S+I+B best) but not
# their levels; this is the natural split of the five V-Net encoder levels.
STLU_GROUP_LEVELS: dict[str, tuple[int, ...]] = {"S": (1, 2), "I": (3, 4), "B": (5,)}
MIX_STRATEGIES = ("similarity", "fixed")
MIX_PLACEMENTS = ("decoder_inputs", "propagate")


def parse_stlu_levels(levels: Iterable[int | str] | str) -> tuple[int, ...]:
    """Encoder levels as a sorted tuple of 1-based level numbers.

    Accepts level numbers 1..5 (ints or digit strings) and the group letters of the paper's ablation, case-free:
    ``["S", "I", "B"]`` -> (1, 2, 3, 4, 5), ``"IB"`` -> (3, 4, 5). An empty collection disables the perturbation.
    """
    items: Iterable[int | str] = list(levels) if isinstance(levels, str) else levels
    out: set[int] = set()
    for item in items:
        if isinstance(item, str) and item.strip().upper() in STLU_GROUP_LEVELS:
            out.update(STLU_GROUP_LEVELS[item.strip().upper()])
            continue
        try:
            level = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"unknown STLU level {item!r}: use 1..{NUM_LEVELS} or group letters S, I, B") from None
        if not 1 <= level <= NUM_LEVELS or (not isinstance(item, str) and level != item):
            raise ValueError(f"STLU level {item!r} out of range 1..{NUM_LEVELS}")
        out.add(level)
    return tuple(sorted(out))


class STLUNet(VNet):
    """V-Net with STLU's two training streams (the paper's D-stream and M-stream); a plain :class:`VNet` at inference.

    Args:
        in_channels, out_channels, n_filters, normalization: the V-Net's (ASSUMED: the UA-MT/SSL4MIS/MC-Net V-Net,
            the paper says only "V-Net backbone"); its built-in dropout is off
            (ASSUMED: STLU's dropout is the D-stream perturbation).
        mix_levels: encoder levels mixed in the M-stream (1-based, or group letters S/I/B). Default all five =
            S+I+B, the paper's best; the level-to-group map is ASSUMED.
        dropout_levels: encoder levels where the D-stream drops channels; default all five (ASSUMED), independent
            masks per level.
        p_drop: channel-dropout probability of the D-stream (paper: 0.5).
        mix_eps: floor of each norm in the cosine similarity (ASSUMED 1e-8, torch's convention).
        detach_weight: stop gradients through the similarity weights (ASSUMED default False: not detached).
        mix_strategy: "similarity" (paper) or "fixed" (ablation: the constant ``mix_lambda`` for every channel).
        mix_lambda: the constant weight of the "fixed" strategy.
        mix_placement: "decoder_inputs" (ASSUMED default: one clean encoder pass, mixed maps go straight to the
            decoder as skip/bottleneck inputs) or "propagate" (a second encoder pass for the M-stream in which a
            mixed level also feeds the deeper stages, Manifold-Mixup style; the paper's text does not settle this).
        joint_decoder: decode both streams in ONE decoder call on the 2B-sample concatenation, so BatchNorm sees
            both (ASSUMED default True); False decodes each stream separately.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str = "batchnorm",
        mix_levels: Sequence[int | str] | str = (1, 2, 3, 4, 5),
        dropout_levels: Sequence[int | str] | str = (1, 2, 3, 4, 5),
        p_drop: float = 0.5,
        mix_eps: float = 1e-8,
        detach_weight: bool = False,
        mix_strategy: str = "similarity",
        mix_lambda: float = 0.5,
        mix_placement: str = "decoder_inputs",
        joint_decoder: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, n_filters, normalization, has_dropout=False)
        if not 0.0 <= p_drop < 1.0:
            raise ValueError(f"p_drop must satisfy 0 <= p_drop < 1, got {p_drop}")
        if mix_strategy not in MIX_STRATEGIES:
            raise ValueError(f"mix_strategy must be one of {MIX_STRATEGIES}, got {mix_strategy!r}")
        if not 0.0 <= mix_lambda <= 1.0:
            raise ValueError(f"mix_lambda must lie in [0, 1], got {mix_lambda}")
        if mix_placement not in MIX_PLACEMENTS:
            raise ValueError(f"mix_placement must be one of {MIX_PLACEMENTS}, got {mix_placement!r}")
        self.mix_levels = parse_stlu_levels(mix_levels)
        self.dropout_levels = parse_stlu_levels(dropout_levels)
        self.p_drop = float(p_drop)
        self.mix_eps = float(mix_eps)
        self.detach_weight = bool(detach_weight)
        self.mix_strategy = mix_strategy
        self.mix_lambda = float(mix_lambda)
        self.mix_placement = mix_placement
        self.joint_decoder = bool(joint_decoder)

    def forward(self, x: Tensor) -> Tensor:
        """Inference logits ``(B, K, *S)``: the plain V-Net, no mixing, no dropout."""
        return self.decoder(self.encoder(x, False), False)

    def forward_train(self, x: Tensor, n_labeled: int) -> dict:
        """Both training streams on the joint batch ``x = [x_l; x_u]``: one encoder pass, then both streams decoded.

        Returns ``{"logits_d": (B, K, *S), "logits_m": (B, K, *S), "weights": {level: (w_l, w_u)}}``. The
        channel dropout is always active here (it is the D-stream's perturbation, whatever the module's mode).
        Without samples of both kinds (``n_labeled`` 0 or B: supervised-only training) nothing can be mixed and
        the M-stream decodes the clean features (``weights`` is empty).
        """
        batch = x.shape[0]
        n_l = int(n_labeled)
        if not 0 <= n_l <= batch:
            raise ValueError(f"n_labeled must be in 0..{batch}, got {n_l}")
        can_mix = 0 < n_l < batch
        weights: dict[int, tuple[Tensor, Tensor]] = {}
        features = self.encoder(x, False)
        if self.mix_placement == "propagate" and can_mix and self.mix_levels:
            features_m = self._encode_mixed(x, n_l, weights)
        else:
            features_m = list(features)
            if can_mix:
                for level in self.mix_levels:
                    features_m[level - 1], w_l, w_u = self._mix(features[level - 1], n_l)
                    weights[level] = (w_l, w_u)
        features_d = [
            channel_dropout(f, self.p_drop, True) if level in self.dropout_levels else f
            for level, f in enumerate(features, start=1)
        ]
        if self.joint_decoder:
            logits = self.decoder([torch.cat([d, m]) for d, m in zip(features_d, features_m, strict=True)], False)
            logits_d, logits_m = logits[:batch], logits[batch:]
        else:
            logits_d = self.decoder(features_d, False)
            logits_m = self.decoder(features_m, False)
        return {"logits_d": logits_d, "logits_m": logits_m, "weights": weights}

    def _mix(self, feat: Tensor, n_l: int) -> tuple[Tensor, Tensor, Tensor]:
        """One level of the M-stream: ``(mixed features, w_l, w_u)`` for the configured strategy."""
        if self.mix_strategy == "similarity":
            return mix_labeled_unlabeled(feat, n_l, self.mix_eps, self.detach_weight)
        # "fixed": the ablation's constant weight, the same pairing and two-way rule as the similarity mixing
        n_u = feat.shape[0] - n_l
        partner_of_l, partner_of_u = pair_partner_indices(n_l, n_u)
        feat_l, feat_u = feat[:n_l], feat[n_l:]
        lam = self.mix_lambda
        mixed_l = lam * feat_l + (1.0 - lam) * feat_u.index_select(0, partner_of_l.to(feat.device))
        mixed_u = lam * feat_u + (1.0 - lam) * feat_l.index_select(0, partner_of_u.to(feat.device))
        shape = (1,) * (feat.dim() - 2)
        w_l = feat.new_full((n_l, feat.shape[1], *shape), lam)
        w_u = feat.new_full((n_u, feat.shape[1], *shape), lam)
        return torch.cat([mixed_l, mixed_u]), w_l, w_u

    def _encode_mixed(self, x: Tensor, n_l: int, weights: dict[int, tuple[Tensor, Tensor]]) -> list[Tensor]:
        """Second encoder pass in which a mixed level feeds the deeper stages ("propagate" placement)."""
        check_input_shape(x, 3, 16, "STLUNet")
        enc = self.encoder
        stages = [
            (None, enc.block_one),
            (enc.block_one_dw, enc.block_two),
            (enc.block_two_dw, enc.block_three),
            (enc.block_three_dw, enc.block_four),
            (enc.block_four_dw, enc.block_five),
        ]
        out = []
        h = x
        for level, (down, stage) in enumerate(stages, start=1):
            h = stage(h if down is None else down(h))
            if level in self.mix_levels:
                h, w_l, w_u = self._mix(h, n_l)
                weights[level] = (w_l, w_u)
            out.append(h)
        return out
