"""ALHVR networks (alhvr.md §1): one encoder, one decoder run twice (clean and feature-perturbed features).

The official ``UNet_fea_aux`` (ACDC) and ``VNet_fea_aux`` (BraTS) are the SSL4MIS U-Net / MC-Net V-Net with a
decoder that also returns a "prototype feature" (§1.2, §1.3). Both classes here are thin subclasses of the shared
:class:`~.unet2d.UNet2D` and :class:`~.vnet.VNet`: no new layers, so parameter shapes, registration order and counts
are those of the backbones (1,813,764 and 9,448,866 parameters), and only the decoder's forward is recomposed to
expose the prototype feature.

API (api.md §2, alhvr.md §1.5):

* ``encode(x)`` -> the five encoder maps;
* ``decode(features)`` -> ``(logits, feat)`` with ``feat`` the prototype feature;
* ``forward(x)`` -> ONE tensor, the clean logits (what inference, export and MONAI Label run; TorchScript-able);
* ``forward_train(x, perturbation=None)`` -> ``(logits_clean, logits_pert, feat_clean, feat_pert)``: encoder once,
  perturbed copy of the five maps (default :func:`~..losses.alhvr.alhvr_perturb_features` with the official global
  random generators), the same decoder on the clean maps first and on the perturbed ones second (the order matters
  for BatchNorm running statistics, §1.4).

Official checkpoints load through :func:`alhvr_key_map` (or the 2D/3D specific functions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..losses.alhvr import alhvr_perturb_features
from .unet2d import UNet2D, ssl4mis_unet_key_map, strip_module_prefix
from .vnet import VNet, ssl4mis_vnet_key_map

__all__ = [
    "ALHVRUNet2D",
    "ALHVRVNet3D",
    "Perturbation",
    "alhvr_key_map",
    "alhvr_unet_key_map",
    "alhvr_vnet_key_map",
]

Perturbation = Callable[[list[Tensor]], list[Tensor]]
TrainOutput = tuple[Tensor, Tensor, Tensor, Tensor]


class ALHVRUNet2D(UNet2D):
    """Official ``UNet_fea_aux`` (alhvr.md §1.2): SSL4MIS U-Net, channels 16..256, 1x1-conv + bilinear up-sampling.

    The prototype feature is the output of ``up2``'s 1x1 convolution, i.e. the ``up1`` output projected to 64
    channels before up-sampling: ``(B, 64, H/8, W/8)``. H and W must be divisible by 16.

    Args:
        in_channels: input channels (1 for ACDC).
        num_classes: classes including background (4 for ACDC).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 4) -> None:
        super().__init__(in_channels=in_channels, num_classes=num_classes)

    def encode(self, x: Tensor) -> list[Tensor]:
        """The five encoder maps ``[x0, ..., x4]`` (full resolution ... /16)."""
        return self.encoder(x)

    def decode(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``(logits, feat)``: the shared decoder with ``up2`` split open to expose its 1x1-conv output."""
        if len(features) != 5:
            raise ValueError(f"ALHVRUNet2D.decode expects 5 feature maps, got {len(features)}")
        dec = self.decoder
        d1 = dec.up1(features[4], features[3])
        feat = dec.up2.conv1x1(d1)
        # same computation as UNetUpBlock2D.forward, written out so the 1x1-conv output can be returned
        d2 = dec.up2.conv(torch.cat([features[2], dec.up2.up(feat)], dim=1))
        d3 = dec.up3(d2, features[1])
        d4 = dec.up4(d3, features[0])
        return dec.out_conv(d4), feat

    def forward(self, x: Tensor) -> Tensor:
        """Clean logits ``(B, num_classes, H, W)`` (no perturbation; the evaluated output)."""
        return self.decode(self.encode(x))[0]

    def forward_train(self, x: Tensor, perturbation: Perturbation | None = None) -> TrainOutput:
        """``(logits_clean, logits_pert, feat_clean, feat_pert)`` (alhvr.md §1, §1.5)."""
        features = self.encode(x)
        perturbed = perturbation(features) if perturbation is not None else alhvr_perturb_features(features, None)
        logits_clean, feat_clean = self.decode(features)
        logits_pert, feat_pert = self.decode(perturbed)
        return logits_clean, logits_pert, feat_clean, feat_pert


class ALHVRVNet3D(VNet):
    """Official ``VNet_fea_aux`` (alhvr.md §1.3): MC-Net V-Net, f = 16, BatchNorm, transposed-conv up-sampling,
    additive skips, ``Dropout3d(0.5)`` on x5 and before the head.

    The prototype feature is ``x6`` (block_six's output, ``(B, 128, D/8, H/8, W/8)``). The encoder's dropout acts
    once, before the perturbation, so both decoder passes see the same dropped channels; the decoder's dropout is
    drawn independently in each pass, so in training even the clean logits are dropout-perturbed (§11 #20).
    Every spatial side must be divisible by 16.

    Args:
        in_channels: input channels (1: FLAIR).
        num_classes: classes including background (2: whole tumour).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=num_classes,
            n_filters=16,
            normalization="batchnorm",
            has_dropout=True,
        )
        self.num_classes = num_classes

    def encode(self, x: Tensor, dropout: bool = True) -> list[Tensor]:
        """The five encoder maps ``[x1, ..., x5]``; x5 goes through the encoder dropout in train mode."""
        return self.encoder(x, dropout)

    def decode(self, features: list[Tensor], dropout: bool = True) -> tuple[Tensor, Tensor]:
        """``(logits, x6)``: the shared decoder, returning block_six's output as the prototype feature."""
        dec = self.decoder
        stages = dec.decode_stages(features)
        x9 = stages[3]
        if dec.has_dropout and dropout:
            x9 = dec.dropout(x9)
        return dec.out_conv(x9), stages[0]

    def forward(self, x: Tensor, dropout: bool = True) -> Tensor:
        """Clean logits ``(B, num_classes, D, H, W)``; ``dropout=False`` skips both dropouts for this call."""
        return self.decode(self.encode(x, dropout), dropout)[0]

    def forward_train(self, x: Tensor, perturbation: Perturbation | None = None) -> TrainOutput:
        """``(logits_clean, logits_pert, feat_clean, feat_pert)`` (alhvr.md §1, §1.5)."""
        features = self.encode(x)
        perturbed = perturbation(features) if perturbation is not None else alhvr_perturb_features(features, None)
        logits_clean, feat_clean = self.decode(features)
        logits_pert, feat_pert = self.decode(perturbed)
        return logits_clean, logits_pert, feat_clean, feat_pert


def alhvr_unet_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Official ``UNet_fea_aux`` state dict -> :class:`ALHVRUNet2D` names (alhvr.md §1.2).

    The official names (``encoder.in_conv.conv_conv.{0,1,4,5}``, ``encoder.down<k>.maxpool_conv.1.conv_conv.*``,
    ``decoder.up<k>.conv1x1``, ``decoder.up<k>.conv.conv_conv.*``, ``decoder.out_conv``) are those of the SSL4MIS
    U-Net, so this is :func:`~.unet2d.ssl4mis_unet_key_map` (``module.`` prefixes stripped).
    """
    return ssl4mis_unet_key_map(state_dict)


def alhvr_vnet_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Official ``VNet_fea_aux`` state dict (usually ``module.``-prefixed) -> :class:`ALHVRVNet3D` names (§1.3).

    ``encoder.block_<n>.conv.<i>``, ``encoder.block_<n>_dw.conv.{0,1}``, ``decoder.block_<n>_up.conv.{0,1}``,
    ``decoder.block_<n>.conv.<i>`` and ``decoder.out_conv``: the MC-Net split layout that
    :func:`~.vnet.ssl4mis_vnet_key_map` already understands.
    """
    return ssl4mis_vnet_key_map(state_dict)


def alhvr_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an official ALHVR checkpoint (2D or 3D, detected from its keys) to this module's names.

    Use as ``net.load_state_dict(alhvr_key_map(torch.load(path, map_location="cpu")), strict=True)``; load strictly
    (the official ``test_acdc.py`` uses ``strict=False``, which would silently keep random weights, §11 #19).
    """
    keys = [strip_module_prefix(key) for key in state_dict]
    if any(".block_" in f".{key}" for key in keys):
        return alhvr_vnet_key_map(state_dict)
    return alhvr_unet_key_map(state_dict)
