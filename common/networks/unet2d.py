"""The 2-D U-Net of SSL4MIS (``code/networks/unet.py``, class ``UNet``, taken from PyMIC).

Built from :class:`monai.networks.blocks.Convolution` so that every parameter has the shape, and is registered
in the order, of the official class. Official checkpoints load through
:func:`ssl4mis_unet_key_map`; MONAI names its layers ``conv`` and ``adn.N``, the official class ``conv_conv.<i>``.

Layout (defaults, 1 input channel, 4 classes, 1,813,764 parameters)::

    encoder.in_conv          conv block 1 -> 16 (dropout 0.05)                 full resolution
    encoder.down1 .. down4   2x2 max-pool, conv block 16->32 ... 128->256      /2 ... /16
    decoder.up1 .. up4       1x1 conv deeper -> skip width, x2 bilinear (align_corners), concat [skip, up],
                             conv block 2w -> w (dropout 0)
    decoder.out_conv         3x3 conv 16 -> num_classes (logits)

Up-sampling: the official ``UpBlock`` defaults to ``bilinear=True`` and the official ``Decoder`` never passes the
``'bilinear': False`` entry of the ``UNet`` params dict on, so the released network up-samples with a 1x1 conv plus
bilinear interpolation (``decoder.up<k>.conv1x1`` weights). Only that reading gives the 1,813,764 parameters of the
official class as instantiated; the 2x2 transposed-conv reading (what the ``'bilinear': False`` entry suggests) has
1,944,324 and cannot load official checkpoints. It stays available as ``bilinear=False``.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import Tensor, nn

__all__ = [
    "UNet2D",
    "UNetConvBlock2D",
    "UNetDecoder2D",
    "UNetDownBlock2D",
    "UNetEncoder2D",
    "UNetUpBlock2D",
    "check_input_shape",
    "ssl4mis_unet_key_map",
    "strip_module_prefix",
]

NUM_LEVELS = 5
DEFAULT_FEATURES = (16, 32, 64, 128, 256)
DEFAULT_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)
# PyMIC uses nn.LeakyReLU() with its default slope; MONAI's factory needs it spelled out.
LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.01})


def check_input_shape(x: Tensor, spatial_dims: int, divisor: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, C, *spatial)`` with every spatial side divisible by ``divisor``.

    Written in the TorchScript subset: it is called from scripted ``forward`` methods (a scripted module raises
    ``torch.jit.Error`` carrying the same message).
    """
    if x.dim() != spatial_dims + 2:
        raise ValueError(f"{name} expects a {spatial_dims + 2}-D input (B, C, *spatial), got shape {list(x.shape)}")
    for side in x.shape[2:]:
        if side % divisor != 0:
            raise ValueError(
                f"{name} needs every spatial side divisible by {divisor} (one factor 2 per down-sampling), "
                f"got spatial shape {list(x.shape[2:])}; pad or crop the input"
            )


def _check_levels(name: str, values: Sequence[Any]) -> tuple:
    """Return ``values`` as a tuple after checking that it has one entry per U-Net level."""
    values = tuple(values)
    if len(values) != NUM_LEVELS:
        raise ValueError(f"{name} needs {NUM_LEVELS} entries (one per U-Net level), got {len(values)}: {values}")
    return values


class UNetConvBlock2D(nn.Module):
    """PyMIC conv block: 3x3 conv -> BN -> LeakyReLU -> Dropout(p) -> 3x3 conv -> BN -> LeakyReLU.

    The dropout sits between the two convolutions (not at the end) and is element-wise ``nn.Dropout``
    (MONAI's default ``dropout_dim=1``), as in the official block. The decoder uses ``dropout=0.0``; the
    official decoder blocks also hold a p=0 dropout, which is kept so the layouts stay parallel.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = Convolution(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=3,
            adn_ordering="NAD",
            act=LEAKY_RELU,
            norm="batch",
            dropout=dropout,
        )
        self.conv2 = Convolution(
            spatial_dims=2,
            in_channels=out_channels,
            out_channels=out_channels,
            kernel_size=3,
            adn_ordering="NA",
            act=LEAKY_RELU,
            norm="batch",
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class UNetDownBlock2D(nn.Module):
    """Encoder level 1..4: 2x2 max-pool, then a conv block (official ``DownBlock``)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.conv = UNetConvBlock2D(in_channels, out_channels, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pool(x))


class UNetUpBlock2D(nn.Module):
    """Decoder step (official ``UpBlock``): bring the deeper map to the skip width at twice the resolution,
    concatenate AFTER the skip (``[skip, up]``, the channel order the official weights expect), then a p=0 conv
    block.

    ``bilinear=True`` (what the official ``UNet`` really runs, see the module notes): 1x1 conv deeper -> skip width,
    then x2 bilinear up-sampling with ``align_corners=True``. ``bilinear=False``: one 2x2 stride-2 transposed conv.
    Both attributes always exist (``conv1x1`` is an identity in the transposed case) so ``forward`` has no branch.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, bilinear: bool = True) -> None:
        super().__init__()
        self.conv1x1: nn.Module
        self.up: nn.Module
        if bilinear:
            self.conv1x1 = Convolution(
                spatial_dims=2, in_channels=in_channels, out_channels=skip_channels, kernel_size=1, conv_only=True
            )
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            self.conv1x1 = nn.Identity()
            # padding/output_padding must be explicit: MONAI's "same" padding for k=2 would change the output size.
            self.up = Convolution(
                spatial_dims=2,
                in_channels=in_channels,
                out_channels=skip_channels,
                strides=2,
                kernel_size=2,
                padding=0,
                output_padding=0,
                is_transposed=True,
                conv_only=True,
            )
        self.conv = UNetConvBlock2D(2 * skip_channels, out_channels, 0.0)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(self.conv1x1(x))], dim=1))


class UNetEncoder2D(nn.Module):
    """Five-level encoder; ``forward(x)`` returns the feature maps ``[x0, ..., x4]`` (full resolution ... /16).

    Args:
        in_channels: input channels.
        features: widths of the five levels.
        dropout: element-wise dropout rate inside each level's conv block.
    """

    def __init__(
        self,
        in_channels: int = 1,
        features: Sequence[int] = DEFAULT_FEATURES,
        dropout: Sequence[float] = DEFAULT_DROPOUT,
    ) -> None:
        super().__init__()
        features = _check_levels("features", features)
        dropout = _check_levels("dropout", dropout)
        self.in_channels = in_channels
        self.features = features
        self.in_conv = UNetConvBlock2D(in_channels, features[0], dropout[0])
        self.down1 = UNetDownBlock2D(features[0], features[1], dropout[1])
        self.down2 = UNetDownBlock2D(features[1], features[2], dropout[2])
        self.down3 = UNetDownBlock2D(features[2], features[3], dropout[3])
        self.down4 = UNetDownBlock2D(features[3], features[4], dropout[4])

    def forward(self, x: Tensor) -> list[Tensor]:
        check_input_shape(x, 2, 16, "UNet2D")  # four 2x max-pools
        x0 = self.in_conv(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        x4 = self.down4(x3)
        return [x0, x1, x2, x3, x4]


class UNetDecoder2D(nn.Module):
    """Four up-sampling steps and a 3x3 head; ``forward(features)`` maps the encoder's five maps to logits.

    ``decode_stages`` exposes every step's output (deep-supervision variants) and ``decode_features`` the last
    full-resolution map before ``out_conv`` (methods that attach their own heads).

    Args:
        num_classes: output channels of the head.
        features: widths of the five levels (as given to the encoder).
        bilinear: up-sampling kind of every step (see :class:`UNetUpBlock2D`); True is the official ``UNet``.
    """

    def __init__(self, num_classes: int = 4, features: Sequence[int] = DEFAULT_FEATURES, bilinear: bool = True) -> None:
        super().__init__()
        features = _check_levels("features", features)
        self.num_classes = num_classes
        self.features = features
        self.up1 = UNetUpBlock2D(features[4], features[3], features[3], bilinear)
        self.up2 = UNetUpBlock2D(features[3], features[2], features[2], bilinear)
        self.up3 = UNetUpBlock2D(features[2], features[1], features[1], bilinear)
        self.up4 = UNetUpBlock2D(features[1], features[0], features[0], bilinear)
        # 3x3 head (not 1x1), no norm/activation: the official ``out_conv``.
        self.out_conv = Convolution(
            spatial_dims=2, in_channels=features[0], out_channels=num_classes, kernel_size=3, conv_only=True
        )

    def decode_stages(self, features: list[Tensor]) -> list[Tensor]:
        """Outputs of ``up1``..``up4`` (widths features[3] ... features[0], resolutions /8 ... full)."""
        if len(features) != 5:  # literal: TorchScript cannot read module-level ints
            raise ValueError(f"UNetDecoder2D expects 5 feature maps, got {len(features)}")
        d1 = self.up1(features[4], features[3])
        d2 = self.up2(d1, features[2])
        d3 = self.up3(d2, features[1])
        d4 = self.up4(d3, features[0])
        return [d1, d2, d3, d4]

    def decode_features(self, features: list[Tensor]) -> Tensor:
        """The last full-resolution ``features[0]``-channel map, i.e. the input of ``out_conv``."""
        return self.decode_stages(features)[-1]

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.out_conv(self.decode_features(features))


class UNet2D(nn.Module):
    """SSL4MIS/PyMIC 2-D U-Net (``code/networks/unet.py``); ``forward(x)`` returns logits ``(B, num_classes, H, W)``.

    H and W must be divisible by 16. Attributes ``encoder`` (:class:`UNetEncoder2D`) and ``decoder``
    (:class:`UNetDecoder2D`); methods call :meth:`forward_train`, which variants override.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        features: Sequence[int] = DEFAULT_FEATURES,
        dropout: Sequence[float] = DEFAULT_DROPOUT,
        bilinear: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder = UNetEncoder2D(in_channels, features, dropout)
        self.decoder = UNetDecoder2D(num_classes, features, bilinear)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))

    def forward_train(self, x: Tensor) -> Tensor:
        """Training output: the logits for the plain network (variants return more)."""
        return self.forward(x)


# Index inside the official ``conv_conv`` Sequential -> this module's sub-path in UNetConvBlock2D
# (2 = LeakyReLU, 3 = Dropout and 6 = LeakyReLU hold no state).
_CONV_CONV_INDEX = {"0": "conv1.conv", "1": "conv1.adn.N", "4": "conv2.conv", "5": "conv2.adn.N"}
_UNET_PATTERNS = (
    (re.compile(r"encoder\.in_conv\.conv_conv\.(?P<index>\d+)\.(?P<rest>.+)"), "encoder.in_conv.{block}.{rest}"),
    (
        re.compile(r"encoder\.down(?P<level>\d)\.maxpool_conv\.1\.conv_conv\.(?P<index>\d+)\.(?P<rest>.+)"),
        "encoder.down{level}.conv.{block}.{rest}",
    ),
    (
        re.compile(r"decoder\.up(?P<level>\d)\.conv\.conv_conv\.(?P<index>\d+)\.(?P<rest>.+)"),
        "decoder.up{level}.conv.{block}.{rest}",
    ),
    (re.compile(r"decoder\.up(?P<level>\d)\.conv1x1\.(?P<rest>.+)"), "decoder.up{level}.conv1x1.conv.{rest}"),
    (re.compile(r"decoder\.up(?P<level>\d)\.up\.(?P<rest>.+)"), "decoder.up{level}.up.conv.{rest}"),
    (re.compile(r"decoder\.out_conv\.(?P<rest>.+)"), "decoder.out_conv.conv.{rest}"),
)


def strip_module_prefix(key: str) -> str:
    """Drop the ``module.`` prefixes that ``nn.DataParallel`` / DDP add when a wrapped model is saved."""
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def _map_unet_key(key: str) -> str:
    """One official U-Net key -> this module's key (unknown keys are returned unchanged)."""
    for pattern, template in _UNET_PATTERNS:
        match = pattern.fullmatch(key)
        if match is None:
            continue
        parts = match.groupdict()
        if "index" in parts:
            if parts["index"] not in _CONV_CONV_INDEX:
                raise ValueError(f"unexpected conv_conv index {parts['index']} in official U-Net key {key!r}")
            parts["block"] = _CONV_CONV_INDEX[parts["index"]]
        return template.format(**parts)
    return key


def ssl4mis_unet_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an official SSL4MIS ``UNet`` state dict to :class:`UNet2D` names (values untouched, order kept).

    ``encoder.in_conv.conv_conv.{0,1,4,5}``, ``encoder.down<k>.maxpool_conv.1.conv_conv.{0,1,4,5}``,
    ``decoder.up<k>.conv1x1`` (bilinear up-sampling; ``decoder.up<k>.up`` for the transposed-conv variant),
    ``decoder.up<k>.conv.conv_conv.{0,1,4,5}`` and ``decoder.out_conv`` are mapped; a leading
    ``module.`` is stripped. Keys outside that layout (e.g. a variant's extra heads) pass through unchanged so a
    variant can rename them itself; ``load_state_dict(strict=True)`` reports any that remain unknown.
    """
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new_key = _map_unet_key(strip_module_prefix(key))
        if new_key in out:
            raise ValueError(f"two keys of the checkpoint map to {new_key!r}")
        out[new_key] = value
    return out
