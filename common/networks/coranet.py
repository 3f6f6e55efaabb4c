"""CoraNet networks (Shi et al., IEEE TMI 2021; official code koncle/CoraNet): a shared trunk, three light heads.

Heads are named by behaviour (paper semantics) and kept in the official index order (``branchs[0..2]`` of the
official ``vnet.py``), so official state dicts load; the official variable names are inverted with respect to the
behaviour (the head trained with cost a on object errors is the official ``con``):

====== ========= ============================================ ==================================
index  name      supervised cost vector                        behaviour
====== ========= ============================================ ==================================
0      ``main``  none (plain CE + Dice)                        the evaluated head
1      ``rad``   ``w_rad = [1, a, ..., a]`` (official ``con``)  radical: over-segments
2      ``cons``  ``w_cons = [a, 1, ..., 1]`` (official ``rad``) conservative: under-segments
====== ========= ============================================ ==================================

Network rule of this package (``networks/__init__.py``): ``forward(x)`` returns ONE tensor, the main head's logits
(TorchScript-scriptable, what inference, export and MONAI Label run); ``forward_train(x)`` returns all heads as a
:class:`CoraOutput`.

* :class:`VNet3D`: the official ``vnet.py`` (koncle/CoraNet), a UA-MT-style V-Net whose ``block_nine``/``out_conv``
  are replaced by three heads ``branchs[k]`` = [3x3x3 conv -> norm -> ReLU, (Dropout3d), 1x1x1 conv]. Built from the
  shared V-Net blocks (:mod:`.vnet`): the encoder is :class:`~.vnet.VNetEncoder`, the trunk decoder keeps the
  official block names (``decoder.block_five_up`` ... ``decoder.block_eight_up``). Parameter shapes and their
  registration order are the official ones (9,457,190 parameters in the default configuration); official
  checkpoints load through :func:`coranet_vnet_key_map` / :func:`load_coranet_checkpoint`.
* :class:`MultiHeadSegNet`: any trunk returning a feature map plus the same three heads; with
  :class:`UNet2DTrunk` (the SSL4MIS 2-D U-Net without its 3x3 output conv) it is the project's 2-D CoraNet
  (a project decision: the official code is 3-D only; see ``bundles/coranet_acdc/docs/README.md``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from .unet2d import DEFAULT_DROPOUT, DEFAULT_FEATURES, UNetDecoder2D, UNetEncoder2D
from .vnet import VNetEncoder, VNetStage, VNetUp, ssl4mis_vnet_key_map

__all__ = [
    "CORANET_HEADS",
    "CoraOutput",
    "CoraNetVNetDecoder",
    "MultiHeadSegNet",
    "UNet2DTrunk",
    "VNet3D",
    "coranet_vnet_key_map",
    "load_coranet_checkpoint",
]

CORANET_HEADS = ("main", "rad", "cons")


class CoraOutput(NamedTuple):
    """The three heads' logits ``(N, C, *S)`` in the official index order (``out[0..2]`` of the official code).

    ``main`` (index 0) is evaluated; ``rad`` (index 1) is the radical, over-segmenting head (the official code's
    ``con`` variables); ``cons`` (index 2) the conservative, under-segmenting head (official ``rad``).
    """

    main: Tensor
    rad: Tensor
    cons: Tensor


def pack_heads(outputs: Sequence[Tensor]) -> Tensor | CoraOutput | tuple[Tensor, ...]:
    """Training output of a multi-head network: one head -> the tensor, three -> :class:`CoraOutput`, else a tuple.

    The package's single convention for ``n_heads``: a one-head network behaves like a plain segmentation network
    (its training output is the logits tensor, as for every non-CoraNet network).
    """
    if len(outputs) == 1:
        return outputs[0]
    if len(outputs) == len(CORANET_HEADS):
        return CoraOutput(*outputs)
    return tuple(outputs)


def _check_heads(n_heads: int) -> int:
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")
    return int(n_heads)


class CoraNetVNetDecoder(nn.Module):
    """The CoraNet V-Net trunk decoder: four transposed-conv up-samplings with ADDED skips, no head.

    Same blocks as :class:`~.vnet.VNetDecoder` up to ``block_eight_up`` (official ``vnet.py``); the official
    network has no ``block_nine``/``out_conv`` (its three heads take the f-channel map after the last skip).
    ``forward([F1, ..., F5])`` returns that map ``(N, f, *S)``.
    """

    def __init__(self, n_filters: int = 16, normalization: str = "instancenorm") -> None:
        super().__init__()
        f = n_filters
        self.n_filters = n_filters
        self.block_five_up = VNetUp(16 * f, 8 * f, normalization)
        self.block_six = VNetStage(3, 8 * f, 8 * f, normalization)
        self.block_six_up = VNetUp(8 * f, 4 * f, normalization)
        self.block_seven = VNetStage(3, 4 * f, 4 * f, normalization)
        self.block_seven_up = VNetUp(4 * f, 2 * f, normalization)
        self.block_eight = VNetStage(2, 2 * f, 2 * f, normalization)
        self.block_eight_up = VNetUp(2 * f, f, normalization)

    def forward(self, features: list[Tensor]) -> Tensor:
        if len(features) != 5:
            raise ValueError(f"CoraNetVNetDecoder expects 5 feature maps [F1, ..., F5], got {len(features)}")
        x6 = self.block_six(self.block_five_up(features[4]) + features[3])
        x7 = self.block_seven(self.block_six_up(x6) + features[2])
        x8 = self.block_eight(self.block_seven_up(x7) + features[1])
        return self.block_eight_up(x8) + features[0]


def _vnet_head(n_filters: int, n_classes: int, normalization: str, has_dropout: bool) -> nn.Sequential:
    """Official ``branchs[k]``: ConvBlock(1, f, f) -> [Dropout3d(0.5) when has_dropout] -> 1x1x1 conv f -> C."""
    layers: list[nn.Module] = [VNetStage(1, n_filters, n_filters, normalization)]
    if has_dropout:  # the official head holds its own dropout, active in train mode whatever ``dropout`` says
        layers.append(nn.Dropout3d(p=0.5))
    layers.append(
        Convolution(spatial_dims=3, in_channels=n_filters, out_channels=n_classes, kernel_size=1, conv_only=True)
    )
    return nn.Sequential(*layers)


class VNet3D(nn.Module):
    """CoraNet's 3-D V-Net with three heads (official ``vnet.py`` of koncle/CoraNet).

    Input ``(N, in_channels, X, Y, Z)`` with every side divisible by 16; with instance norm the bottleneck (size/16)
    needs more than one voxel in total (so 16^3 inputs fail in train and eval mode alike; 32^3 works).
    ``forward(x)`` -> main logits ``(N, n_classes, X, Y, Z)``; ``forward_train(x)`` -> :class:`CoraOutput`
    (``n_heads=3``), the tensor (``n_heads=1``) or a tuple.

    Args:
        in_channels: input channels.
        n_classes: output classes per head.
        n_filters: width f of the first level (16).
        normalization: "instancenorm" (CoraNet: no affine, no running statistics -> no parameters and identical
            train/eval behaviour), "batchnorm", "groupnorm" or "none".
        has_dropout: Dropout3d(0.5) on the bottleneck and inside every head, as the official class.
        n_heads: number of heads (3).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        n_filters: int = 16,
        normalization: str = "instancenorm",
        has_dropout: bool = False,
        n_heads: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.n_heads = _check_heads(n_heads)
        self.has_dropout = has_dropout
        self.encoder = VNetEncoder(in_channels, n_filters, normalization, has_dropout)
        self.decoder = CoraNetVNetDecoder(n_filters, normalization)
        self.branchs = nn.ModuleList(
            [_vnet_head(n_filters, n_classes, normalization, has_dropout) for _ in range(self.n_heads)]
        )

    def features(self, x: Tensor, dropout: bool = True) -> Tensor:
        """The f-channel full-resolution trunk output shared by the heads (``dropout=False``: no bottleneck dropout)."""
        return self.decoder(self.encoder(x, dropout))

    def forward(self, x: Tensor) -> Tensor:
        """Main-head logits only (the evaluated output); the auxiliary heads are not computed."""
        return self.branchs[0](self.features(x))

    def forward_heads(self, x: Tensor) -> list[Tensor]:
        """Every head's logits, in index order."""
        shared = self.features(x)
        return [head(shared) for head in self.branchs]

    def forward_train(self, x: Tensor):
        """:class:`CoraOutput` ``(main, rad, cons)`` for three heads (see :func:`pack_heads`)."""
        return pack_heads(self.forward_heads(x))


class UNet2DTrunk(nn.Module):
    """The SSL4MIS 2-D U-Net (:class:`~.unet2d.UNet2D` layout) without its final 3x3 conv (2-D CoraNet trunk).

    ``forward(x)`` returns the decoder's last full-resolution map ``(N, features[0], H, W)`` (16 channels by
    default). Parameter names are those of ``UNet2D`` (``encoder.*``, ``decoder.up*``), so U-Net checkpoints load
    with ``strict=False`` (only ``decoder.out_conv`` is left over).
    """

    def __init__(
        self,
        in_channels: int = 1,
        features: Sequence[int] = DEFAULT_FEATURES,
        dropout: Sequence[float] = DEFAULT_DROPOUT,
        bilinear: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = int(features[0])
        self.encoder = UNetEncoder2D(in_channels, features, dropout)
        self.decoder = UNetDecoder2D(1, features, bilinear)
        # The shared decoder always builds a 3x3 class head; CoraNet's heads replace it, so drop its parameters.
        self.decoder.out_conv = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder.decode_features(self.encoder(x))


def _head(spatial_dims: int, channels: int, n_classes: int, norm: Any) -> nn.Sequential:
    """CNR (3x3 conv, padding 1, bias) -> norm -> ReLU, then a 1x1 conv to ``n_classes`` (the official 3-D head)."""
    return nn.Sequential(
        Convolution(
            spatial_dims=spatial_dims,
            in_channels=channels,
            out_channels=channels,
            kernel_size=3,
            adn_ordering="NA",
            act="relu",
            norm=norm,
        ),
        Convolution(
            spatial_dims=spatial_dims, in_channels=channels, out_channels=n_classes, kernel_size=1, conv_only=True
        ),
    )


class MultiHeadSegNet(nn.Module):
    """A segmentation trunk plus ``n_heads`` CoraNet heads (the official code's shared-decoder design).

    ``trunk(x)`` must return ``(N, trunk_out_channels, *S)``; every head is Conv(k=3, pad 1) -> norm -> ReLU ->
    Conv(k=1) to ``n_classes``. ``forward(x)`` -> main logits (scriptable when the trunk is);
    ``forward_train(x)`` -> :class:`CoraOutput` for three heads. The paper's "three decoders" variant
    (``decoder_mode="full"``) is an ablation that is not implemented.

    Args:
        trunk: the shared network, e.g. :class:`UNet2DTrunk`.
        trunk_out_channels: channels of the trunk output (16 for the SSL4MIS U-Net).
        n_classes: output classes per head.
        n_heads: number of heads (3).
        spatial_dims: 2 or 3.
        norm: MONAI norm spec of the heads ("batch", "instance", ...; ``None`` for none).
    """

    def __init__(
        self,
        trunk: nn.Module,
        trunk_out_channels: int = 16,
        n_classes: int = 2,
        n_heads: int = 3,
        spatial_dims: int = 2,
        norm: Any = "batch",
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.n_heads = _check_heads(n_heads)
        self.spatial_dims = spatial_dims
        self.trunk = trunk
        self.heads = nn.ModuleList(
            [_head(spatial_dims, trunk_out_channels, n_classes, norm) for _ in range(self.n_heads)]
        )

    def forward(self, x: Tensor) -> Tensor:
        """Main-head logits only (the evaluated output)."""
        return self.heads[0](self.trunk(x))

    def forward_heads(self, x: Tensor) -> list[Tensor]:
        shared = self.trunk(x)
        return [head(shared) for head in self.heads]

    def forward_train(self, x: Tensor):
        """:class:`CoraOutput` ``(main, rad, cons)`` for three heads (see :func:`pack_heads`)."""
        return pack_heads(self.forward_heads(x))


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints

# Official head keys after the trunk rename: ``branchs.<k>.0.conv.<i>.<p>`` (the head's ConvBlock; i = 0 conv,
# 1 its norm when it has state) and ``branchs.<k>.<j>.<p>`` (the final 1x1x1 conv; j = 2 with dropout, else 1).
_HEAD_BLOCK_KEY = re.compile(r"branchs\.(?P<k>\d+)\.0\.conv\.(?P<index>\d+)\.(?P<rest>.+)")
_HEAD_OUT_KEY = re.compile(r"branchs\.(?P<k>\d+)\.(?P<j>[12])\.(?P<rest>weight|bias)")


def _map_head_key(key: str) -> str:
    match = _HEAD_BLOCK_KEY.fullmatch(key)
    if match is not None:
        layer = {"0": "conv", "1": "adn.N"}.get(match["index"])
        if layer is None:
            raise ValueError(f"official CoraNet head key {key!r} names a layer without state")
        return f"branchs.{match['k']}.0.0.{layer}.{match['rest']}"
    match = _HEAD_OUT_KEY.fullmatch(key)
    if match is not None:
        return f"branchs.{match['k']}.{match['j']}.conv.{match['rest']}"
    return key


def coranet_vnet_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an official koncle/CoraNet ``VNet`` state dict to :class:`VNet3D` names (values untouched, order kept).

    Strips ``module.`` (the released weights come from ``nn.DataParallel``); the trunk goes through
    :func:`~.vnet.ssl4mis_vnet_key_map` (``block_one.conv.0.weight`` -> ``encoder.block_one.0.conv.weight``,
    ``block_six.conv.3.weight`` -> ``decoder.block_six.1.conv.weight``, ...), the heads
    ``branchs.k.0.conv.0.*`` -> ``branchs.k.0.0.conv.*`` and ``branchs.k.1.*`` (``.2.*`` with dropout) ->
    ``branchs.k.1.conv.*``.
    """
    return {_map_head_key(key): value for key, value in ssl4mis_vnet_key_map(state_dict).items()}


def load_coranet_checkpoint(
    network: nn.Module, checkpoint: str | os.PathLike | Mapping[str, Any], strict: bool = True
) -> nn.Module:
    """Load an official CoraNet checkpoint into :class:`VNet3D` ``network`` and return it.

    ``checkpoint`` is a path or an already loaded object: a state dict, or the official ``save_net_opt`` dict
    ``{"net": state_dict, "opt": ..., "epoch": ...}`` (the optimiser state is ignored). Keys are renamed by
    :func:`coranet_vnet_key_map`; ``strict`` as for ``load_state_dict``.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = checkpoint.get("net", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state dict or a {{'net': state_dict}} checkpoint, got {type(state).__name__}")
    network.load_state_dict(coranet_vnet_key_map(state), strict=strict)
    return network
