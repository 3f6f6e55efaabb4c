"""ALHVR networks: one encoder, one decoder run twice (clean and feature-perturbed encoder maps).

The official ``UNet_fea_aux`` (ACDC) and ``VNet_fea_aux`` (BraTS) of ``ziziyao/ALHVR`` are the SSL4MIS U-Net /
MC-Net V-Net with a decoder that also returns a "prototype feature" (the feature map CG-CPCL builds its class
prototypes from). Both classes here are thin subclasses of the shared :class:`~.unet2d.UNet2D` and
:class:`~.vnet.VNet`: no new layers, so parameter shapes, registration order and counts are those of the
backbones (1,813,764 and 9,448,866 parameters), and only the decoder's forward is recomposed to expose the
prototype feature.

API:

* ``encode(x)`` -> the five encoder maps;
* ``decode(features)`` -> ``(logits, feat)`` with ``feat`` the prototype feature;
* ``forward(x)`` -> ONE tensor, the clean logits (what inference, export and MONAI Label run; TorchScript-able);
* ``forward_train(x, perturbation=None)`` -> ``(logits_clean, logits_pert, feat_clean, feat_pert)``: encoder once,
  perturbed copy of the five maps (default :func:`alhvr_perturb_features` with the official global random
  generators), the same decoder on the clean maps first and on the perturbed ones second (the order matters for
  BatchNorm running statistics: the perturbed pass updates them last, as in the official code).

The feature perturbation (the paper's perturbed branch; official code: CCT's ``FeatureDropout`` and
``FeatureNoise``) lives here because it is part of the network's training forward, not a loss.

Official checkpoints load through :func:`alhvr_key_map` (or the 2D/3D specific functions).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .unet2d import UNet2D, ssl4mis_unet_key_map, strip_module_prefix
from .vnet import VNet, ssl4mis_vnet_key_map

__all__ = [
    "ALHVRUNet2D",
    "ALHVRVNet3D",
    "Perturbation",
    "alhvr_feature_dropout",
    "alhvr_feature_noise",
    "alhvr_key_map",
    "alhvr_perturb_features",
    "alhvr_unet_key_map",
    "alhvr_vnet_key_map",
]

NOISE_RANGE = 0.3  # feature noise U(-0.3, 0.3) (official code: CCT FeatureNoise)
DROPOUT_RATIO_RANGE = (0.7, 0.9)  # feature dropout threshold ratio (official code: CCT FeatureDropout)

PerturbRNG = random.Random | np.random.Generator | np.random.RandomState | torch.Generator | None


# ---------------------------------------------------------------------------------------------------------------
# feature perturbation (the perturbed branch of each network)
# ---------------------------------------------------------------------------------------------------------------


def alhvr_feature_noise(x: Tensor, noise: Tensor) -> Tensor:
    """Feature noise: ``x + x * noise`` with one ``noise`` of shape ``x.shape[1:]`` shared by the batch.

    The official sampler draws ``noise ~ U(-0.3, 0.3)`` per level (see :func:`alhvr_perturb_features`).
    """
    if tuple(noise.shape) != tuple(x.shape[1:]):
        raise ValueError(f"noise must have shape {tuple(x.shape[1:])} (x without batch), got {tuple(noise.shape)}")
    return x.mul(noise.unsqueeze(0)) + x


def alhvr_feature_dropout(x: Tensor, ratio: float) -> Tensor:
    """Feature dropout: zero the positions whose channel mean reaches ``ratio`` x its per-sample maximum.

    ``att = mean_c x``; keep ``att < ratio * max_S att`` (strict), per sample; the 0/1 mask carries no gradient.
    Negative ``att`` everywhere -> nothing dropped; one spatial position with ``att > 0`` -> everything dropped.
    """
    batch = x.shape[0]
    attention = x.mean(dim=1, keepdim=True)
    max_val = attention.reshape(batch, -1).max(dim=1, keepdim=True)[0]
    threshold = (max_val * ratio).reshape((batch,) + (1,) * (x.dim() - 1))
    keep = (attention < threshold).to(x.dtype)
    return x.mul(keep)


def _branch_draw(rng: PerturbRNG) -> float:
    """One U[0, 1) draw choosing dropout (> 0.5) or noise; official: Python's global ``random.random()``."""
    if rng is None:
        return random.random()
    if isinstance(rng, torch.Generator):
        return float(torch.rand((), generator=rng, dtype=torch.float64))
    return float(rng.random())


def _ratio_draw(rng: PerturbRNG) -> float:
    """One U(0.7, 0.9) draw per level; official: NumPy's global ``np.random.uniform``."""
    low, high = DROPOUT_RATIO_RANGE
    if rng is None:
        return float(np.random.uniform(low, high))
    if isinstance(rng, torch.Generator):
        return low + (high - low) * float(torch.rand((), generator=rng, dtype=torch.float64))
    return float(rng.uniform(low, high))


def _noise_draw(rng: PerturbRNG, x: Tensor) -> Tensor:
    """One U(-0.3, 0.3) tensor of shape ``x.shape[1:]``; official: torch's global generator (``Uniform.sample``)."""
    shape = tuple(x.shape[1:])
    if rng is None or isinstance(rng, torch.Generator):
        # Uniform(low, high).sample(shape) is low + rand(shape) * (high - low) in x's float type on the CPU
        u = torch.rand(shape, generator=rng, dtype=x.dtype)
    elif isinstance(rng, random.Random):
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        u = torch.rand(shape, generator=generator, dtype=x.dtype)
    else:
        u = torch.as_tensor(rng.random(shape), dtype=x.dtype)
    return (-NOISE_RANGE + u * (2.0 * NOISE_RANGE)).to(x.device)


def alhvr_perturb_features(feats: list[Tensor], rng: PerturbRNG = None) -> list[Tensor]:
    """Perturbed copy of the five encoder maps: ONE branch choice per call, fresh draws per level.

    ``u > 0.5`` -> :func:`alhvr_feature_dropout` on every level with its own ``ratio ~ U(0.7, 0.9)``; otherwise
    :func:`alhvr_feature_noise` with its own ``noise ~ U(-0.3, 0.3)`` per level. ``rng=None`` uses the official
    generators (Python ``random`` for the branch, NumPy's global generator for the ratios, torch's for the noise);
    a ``torch.Generator``, ``numpy.random.Generator``/``RandomState`` or ``random.Random`` makes every draw come
    from that one object (reproducible tests).
    """
    if _branch_draw(rng) > 0.5:
        return [alhvr_feature_dropout(f, _ratio_draw(rng)) for f in feats]
    return [alhvr_feature_noise(f, _noise_draw(rng, f)) for f in feats]


# ---------------------------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------------------------

Perturbation = Callable[[list[Tensor]], list[Tensor]]
TrainOutput = tuple[Tensor, Tensor, Tensor, Tensor]


class ALHVRUNet2D(UNet2D):
    """Official ``UNet_fea_aux``: SSL4MIS U-Net, channels 16..256, 1x1-conv + bilinear up-sampling.

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
        """``(logits_clean, logits_pert, feat_clean, feat_pert)``: one encoder pass, clean then perturbed decode."""
        features = self.encode(x)
        perturbed = perturbation(features) if perturbation is not None else alhvr_perturb_features(features, None)
        logits_clean, feat_clean = self.decode(features)
        logits_pert, feat_pert = self.decode(perturbed)
        return logits_clean, logits_pert, feat_clean, feat_pert


class ALHVRVNet3D(VNet):
    """Official ``VNet_fea_aux``: MC-Net V-Net, f = 16, BatchNorm, transposed-conv up-sampling,
    additive skips, ``Dropout3d(0.5)`` on x5 and before the head.

    The prototype feature is ``x6`` (block_six's output, ``(B, 128, D/8, H/8, W/8)``). The encoder's dropout acts
    once, before the perturbation, so both decoder passes see the same dropped channels; the decoder's dropout is
    drawn independently in each pass, so in training even the clean logits are dropout-perturbed (as in the official
    code). Every spatial side must be divisible by 16.

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
        """``(logits_clean, logits_pert, feat_clean, feat_pert)``: one encoder pass, clean then perturbed decode."""
        features = self.encode(x)
        perturbed = perturbation(features) if perturbation is not None else alhvr_perturb_features(features, None)
        logits_clean, feat_clean = self.decode(features)
        logits_pert, feat_pert = self.decode(perturbed)
        return logits_clean, logits_pert, feat_clean, feat_pert


def alhvr_unet_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Official ``UNet_fea_aux`` state dict -> :class:`ALHVRUNet2D` names.

    The official names (``encoder.in_conv.conv_conv.{0,1,4,5}``, ``encoder.down<k>.maxpool_conv.1.conv_conv.*``,
    ``decoder.up<k>.conv1x1``, ``decoder.up<k>.conv.conv_conv.*``, ``decoder.out_conv``) are those of the SSL4MIS
    U-Net, so this is :func:`~.unet2d.ssl4mis_unet_key_map` (``module.`` prefixes stripped).
    """
    return ssl4mis_unet_key_map(state_dict)


def alhvr_vnet_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Official ``VNet_fea_aux`` state dict (usually ``module.``-prefixed) -> :class:`ALHVRVNet3D` names.

    ``encoder.block_<n>.conv.<i>``, ``encoder.block_<n>_dw.conv.{0,1}``, ``decoder.block_<n>_up.conv.{0,1}``,
    ``decoder.block_<n>.conv.<i>`` and ``decoder.out_conv``: the MC-Net split layout that
    :func:`~.vnet.ssl4mis_vnet_key_map` already understands.
    """
    return ssl4mis_vnet_key_map(state_dict)


def alhvr_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an official ALHVR checkpoint (2D or 3D, detected from its keys) to this module's names.

    Use as ``net.load_state_dict(alhvr_key_map(torch.load(path, map_location="cpu")), strict=True)``; load strictly
    (the official ``test_acdc.py`` uses ``strict=False``, which would silently keep random weights).
    """
    keys = [strip_module_prefix(key) for key in state_dict]
    if any(".block_" in f".{key}" for key in keys):
        return alhvr_vnet_key_map(state_dict)
    return alhvr_unet_key_map(state_dict)
