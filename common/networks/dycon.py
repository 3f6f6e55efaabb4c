"""DyCON's two 3-D segmentation networks with a contrastive projection head (Assefa et al., CVPR 2025).

Both follow the package's network rule (``networks/__init__.py``): ``forward(x)`` returns the segmentation logits
only (the network's second official output, the one every loss and inference use) and is TorchScript-scriptable;
``forward_train(x)`` returns the official triple ``(aux, logits, emb)``:

* ``aux``: a tanh map, unused by DyCON (kept for parameter-count parity with the official classes);
* ``logits``: ``(B, C, H, W, D)`` segmentation logits;
* ``emb``: the raw (not normalised) projection-head output ``(B, embed_dim, H/f, W/f, D/f)`` with
  ``f = 16 / embed_upsample`` (8 for the default ``embed_upsample=2``).

Parameters are registered in the official order (``UNet3D`` of ``UNet3D_contrastive.py`` and ``VNet`` of
``VNet.py`` in CVML-KU/DyCON), so weights can be loaded by position. :class:`DyConUNet3D` also keeps the official
attribute names, so an official state dict loads after :func:`dycon_unet3d_key_map` (which only strips
``module.`` prefixes); :class:`DyConVNet` reuses the shared V-Net blocks, whose official checkpoints go through
:func:`common.networks.vnet.ssl4mis_vnet_key_map` (the extra ``out_conv2`` / ``projection`` keep their names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .unet2d import check_input_shape, strip_module_prefix
from .vnet import VNet

__all__ = ["DyConUNet3D", "DyConVNet", "UnetConv3", "UnetUp3", "dycon_unet3d_key_map", "embedding_factor"]


def embedding_factor(embed_upsample: int) -> int:
    """Ratio between the input size and the embedding grid, ``16 / embed_upsample``.

    The official training scripts take the label factor as ``4 * feature_scaler``, which matches the embedding grid
    only for ``feature_scaler = 2``; here the factor follows the grid (Decisions in
    ``bundles/dycon_la/docs/README.md``).

    Both backbones down-sample by 16 and the projection head up-samples the bottleneck by ``embed_upsample``.
    """
    if embed_upsample <= 0 or 16 % embed_upsample != 0:
        raise ValueError(f"embed_upsample must divide 16, got {embed_upsample}")
    return 16 // embed_upsample


def _kaiming_init_(module: nn.Module) -> None:
    """Official ``init_weights(..., 'kaiming')``: conv weights Kaiming-normal (fan_in, gain sqrt(2)), conv biases
    left at PyTorch's default, BatchNorm weight ~ N(1, 0.02) and bias 0 (``code/networks/networks_other.py``)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.constant_(m.bias, 0.0)


def _conv_in_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3x3 conv (bias) -> InstanceNorm3d without affine parameters or running statistics -> ReLU."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.InstanceNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class UnetConv3(nn.Module):
    """Two conv -> InstanceNorm -> ReLU layers (official ``UnetConv3`` of ``code/networks/utils.py``, batchnorm on)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_in_relu(in_channels, out_channels)
        self.conv2 = _conv_in_relu(out_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class UnetUp3(nn.Module):
    """Decoder stage ``Up(deep, skip -> out)``: trilinear x2 (align_corners False), concat ``[skip, up]``, DoubleConv.

    Official ``UnetUp3_CT``; its pad of the skip by the size offset is a no-op for inputs divisible by 16.
    """

    def __init__(self, deep_channels: int, out_channels: int) -> None:
        super().__init__()
        # the skip has ``out_channels`` channels: the official class builds the conv as (in + out) -> out
        self.conv = UnetConv3(deep_channels + out_channels, out_channels)

    def forward(self, skip: Tensor, deep: Tensor) -> Tensor:
        up = F.interpolate(deep, scale_factor=2.0, mode="trilinear", align_corners=False)
        return self.conv(torch.cat([skip, up], dim=1))


class DyConUNet3D(nn.Module):
    """DyCON's 3-D U-Net (official ``UNet3D`` of ``UNet3D_contrastive.py`` with ``feature_scale=4``, ASPP off).

    Filters ``F = base_filters x [1, 2, 4, 8, 16]``; four max-pool levels with DoubleConv blocks (InstanceNorm
    without affine, ReLU), element-wise ``Dropout(p)`` on the bottleneck and on the last decoder map, two 1x1x1
    heads (``aux = tanh(final(d1))``, ``logits = out_conv2(d1)``), and a projection head on the dropped-out
    bottleneck: trilinear x ``embed_upsample`` (align_corners True) -> 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN.
    With the defaults it has 6,148,532 parameters.

    Args:
        in_channels: input channels.
        num_classes: classes C (2 in every DyCON setting).
        base_filters: width of the first level (16).
        embed_dim: embedding dimension E (256).
        proj_hidden: hidden width of the projection head (512).
        embed_upsample: up-sampling of the bottleneck before the projection (2 -> embeddings at 1/8 of the input).
        dropout: probability of both element-wise dropouts (0.3).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_filters: int = 16,
        embed_dim: int = 256,
        proj_hidden: int = 512,
        embed_upsample: int = 2,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        f = [base_filters * m for m in (1, 2, 4, 8, 16)]
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.embed_upsample = embed_upsample
        self.embed_factor = embedding_factor(embed_upsample)
        # registration order of the official class: conv1..conv4, center, up_concat4..1, final, out_conv2, projection
        self.conv1 = UnetConv3(in_channels, f[0])
        self.conv2 = UnetConv3(f[0], f[1])
        self.conv3 = UnetConv3(f[1], f[2])
        self.conv4 = UnetConv3(f[2], f[3])
        self.center = UnetConv3(f[3], f[4])
        self.up_concat4 = UnetUp3(f[4], f[3])
        self.up_concat3 = UnetUp3(f[3], f[2])
        self.up_concat2 = UnetUp3(f[2], f[1])
        self.up_concat1 = UnetUp3(f[1], f[0])
        self.final = nn.Conv3d(f[0], num_classes, kernel_size=1)
        self.out_conv2 = nn.Conv3d(f[0], num_classes, kernel_size=1)
        self.maxpool = nn.MaxPool3d(kernel_size=2)
        self.dropout1 = nn.Dropout(p=dropout)
        self.dropout2 = nn.Dropout(p=dropout)
        self.projection = nn.Sequential(
            nn.Conv3d(f[4], proj_hidden, kernel_size=1),
            nn.BatchNorm3d(proj_hidden),
            nn.ReLU(inplace=True),
            nn.Conv3d(proj_hidden, embed_dim, kernel_size=1),
            nn.BatchNorm3d(embed_dim),
        )
        _kaiming_init_(self)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder maps ``[e1, e2, e3, e4, c]``; ``c`` is the bottleneck after its dropout."""
        check_input_shape(x, 3, 16, "DyConUNet3D")  # four max-poolings
        if x.shape[2] * x.shape[3] * x.shape[4] <= 16 * 16 * 16:
            # InstanceNorm normalises each channel over the bottleneck's voxels, which needs more than one
            raise ValueError(
                f"DyConUNet3D needs more than one bottleneck voxel (at least one side >= 32), "
                f"got spatial shape {list(x.shape[2:])}"
            )
        e1 = self.conv1(x)
        e2 = self.conv2(self.maxpool(e1))
        e3 = self.conv3(self.maxpool(e2))
        e4 = self.conv4(self.maxpool(e3))
        c = self.dropout1(self.center(self.maxpool(e4)))
        return [e1, e2, e3, e4, c]

    def decode(self, features: list[Tensor]) -> Tensor:
        """Last decoder map ``d1`` (after its dropout) from the encoder maps."""
        d4 = self.up_concat4(features[3], features[4])
        d3 = self.up_concat3(features[2], d4)
        d2 = self.up_concat2(features[1], d3)
        d1 = self.up_concat1(features[0], d2)
        return self.dropout2(d1)

    def project(self, bottleneck: Tensor) -> Tensor:
        """Raw embeddings ``(B, E, H/f, W/f, D/f)`` from the (dropped-out) bottleneck."""
        up = F.interpolate(bottleneck, scale_factor=float(self.embed_upsample), mode="trilinear", align_corners=True)
        return self.projection(up)

    def forward(self, x: Tensor) -> Tensor:
        """Segmentation logits ``(B, C, H, W, D)`` (the evaluated output; the projection head is skipped)."""
        return self.out_conv2(self.decode(self.encode(x)))

    def forward_train(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Official training output ``(aux, logits, emb)`` (the three outputs of the official ``UNet3D.forward``)."""
        features = self.encode(x)
        d1 = self.decode(features)
        return self.final(d1).tanh(), self.out_conv2(d1), self.project(features[4])


class DyConVNet(VNet):
    """DyCON's V-Net (official ``code/networks/VNet.py``) on the shared V-Net blocks of ``common.networks.vnet``.

    The shared :class:`~common.networks.vnet.VNet` (plain stages, additive skips, ``Dropout3d(0.5)`` on F5 and
    before the head when ``has_dropout``) plus, in the official registration order after ``out_conv``: an unused
    second 1x1x1 head ``out_conv2`` (parameter parity) and a projection head on the dropped-out F5: trilinear x
    ``embed_upsample`` (align_corners True) -> 1x1 conv -> BatchNorm3d -> 1x1 conv (no ReLU, no final BN, unlike
    the U-Net head). ``aux = tanh(logits)`` (same conv). PyTorch default initialisation (the official init routine
    is never called). With the defaults (``normalization="none"``) it has 9,707,236 parameters.

    Args:
        in_channels: input channels.
        num_classes: classes C.
        n_filters: width of the first level (16).
        normalization: "none" (official factory default), "batchnorm" (the usual LA V-Net), "groupnorm",
            "instancenorm".
        has_dropout: the two ``Dropout3d(0.5)`` (True in DyCON).
        embed_dim, proj_hidden, embed_upsample: projection head as for :class:`DyConUNet3D`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        n_filters: int = 16,
        normalization: str = "none",
        has_dropout: bool = True,
        embed_dim: int = 256,
        proj_hidden: int = 512,
        embed_upsample: int = 2,
    ) -> None:
        super().__init__(in_channels, num_classes, n_filters, normalization, has_dropout)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.embed_upsample = embed_upsample
        self.embed_factor = embedding_factor(embed_upsample)
        self.out_conv2 = nn.Conv3d(n_filters, num_classes, kernel_size=1)
        self.projection = nn.Sequential(
            nn.Conv3d(16 * n_filters, proj_hidden, kernel_size=1),
            nn.BatchNorm3d(proj_hidden),
            nn.Conv3d(proj_hidden, embed_dim, kernel_size=1),
        )

    def forward(self, x: Tensor, dropout: bool = True) -> Tensor:
        """Segmentation logits (``dropout=False`` skips both dropouts for this call, as the shared V-Net)."""
        return self.decoder(self.encoder(x, dropout), dropout)

    def forward_train(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Official training output ``(aux, logits, emb)``; ``aux = tanh(logits)``."""
        features = self.encoder(x)
        logits = self.decoder(features)
        up = F.interpolate(features[4], scale_factor=float(self.embed_upsample), mode="trilinear", align_corners=True)
        return logits.tanh(), logits, self.projection(up)


def dycon_unet3d_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Official ``UNet3D`` (``UNet3D_contrastive.py``) state dict -> :class:`DyConUNet3D` keys.

    The module keeps the official attribute names, so only DataParallel ``module.`` prefixes are removed (values
    and order untouched); ``load_state_dict(strict=True)`` then reports anything left over (e.g. ASPP weights of a
    checkpoint trained with ``use_aspp=True``, which DyCON never does).
    """
    return {strip_module_prefix(key): value for key, value in state_dict.items()}
