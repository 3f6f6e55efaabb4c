"""The 3-D V-Net of SSL4MIS / UA-MT (``code/networks/vnet.py``, class ``VNet``), split into encoder and decoder.

Not MONAI's ``VNet`` (the original design of Milletari et al., 3DV 2016: 5x5x5 residual stages, PReLU/ELU): this
is the plain-stage, additive-skip network of SSL4MIS and UA-MT (MC-Net's ``code/networks/VNet.py`` is the same
network; the STLU-Net bundles use it too), built from :class:`monai.networks.blocks.Convolution` with the official
parameter shapes in the official registration order (block_one, block_one_dw, block_two, ..., block_five,
block_five_up, block_six, ..., block_nine, out_conv). With f = n_filters = 16, 1 input channel and 2 classes it has
9,448,866 parameters (encoder 7,376,896, decoder 2,071,970).

The official block names are kept as attribute names (``encoder.block_one`` ... ``decoder.out_conv``); inside a
block MONAI's ``conv`` / ``adn.N`` replace the official ``conv.<index>``. :func:`ssl4mis_vnet_key_map` renames
official checkpoints.
"""

import re
from collections.abc import Mapping
from typing import Any

from monai.networks.blocks import Convolution
from torch import Tensor, nn

from .unet2d import check_input_shape, strip_module_prefix

__all__ = [
    "VNet",
    "VNetDecoder",
    "VNetDown",
    "VNetEncoder",
    "VNetStage",
    "VNetUp",
    "ssl4mis_vnet_key_map",
    "vnet_norm",
]

# Official ``normalization`` names -> MONAI norm specs. GroupNorm uses 16 groups as in the official code;
# the official InstanceNorm3d is the PyTorch default (no affine parameters, no running statistics).
_NORMS: dict[str, Any] = {
    "batchnorm": "batch",
    "groupnorm": ("group", {"num_groups": 16}),
    "instancenorm": ("instance", {"affine": False, "track_running_stats": False}),
    "none": None,
}


def vnet_norm(normalization: str) -> Any:
    """MONAI norm argument for an official ``normalization`` name; ``ValueError`` for anything else."""
    if normalization not in _NORMS:
        raise ValueError(f"normalization must be one of {sorted(_NORMS)}, got {normalization!r}")
    return _NORMS[normalization]


class VNetStage(nn.Sequential):
    """``n_convs`` x [3x3x3 conv (padding 1) -> norm -> ReLU]; the first conv changes the width.

    A plain stack (official ``ConvBlock``), not residual: the official residual block exists but is unused.
    """

    def __init__(self, n_convs: int, in_channels: int, out_channels: int, normalization: str = "batchnorm") -> None:
        norm = vnet_norm(normalization)
        super().__init__(
            *[
                Convolution(
                    spatial_dims=3,
                    in_channels=in_channels if i == 0 else out_channels,
                    out_channels=out_channels,
                    kernel_size=3,
                    adn_ordering="NA",
                    act="relu",
                    norm=norm,
                )
                for i in range(n_convs)
            ]
        )


class VNetDown(Convolution):
    """2x2x2 conv with stride 2 -> norm -> ReLU (official ``DownsamplingConvBlock``).

    ``padding=0`` must be given: MONAI cannot derive a symmetric "same" padding for an even kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, normalization: str = "batchnorm") -> None:
        super().__init__(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            strides=2,
            kernel_size=2,
            padding=0,
            adn_ordering="NA",
            act="relu",
            norm=vnet_norm(normalization),
        )


class VNetUp(Convolution):
    """2x2x2 transposed conv with stride 2 -> norm -> ReLU (official ``UpsamplingDeconvBlock``); doubles each side."""

    def __init__(self, in_channels: int, out_channels: int, normalization: str = "batchnorm") -> None:
        super().__init__(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            strides=2,
            kernel_size=2,
            padding=0,
            output_padding=0,
            is_transposed=True,
            adn_ordering="NA",
            act="relu",
            norm=vnet_norm(normalization),
        )


class VNetEncoder(nn.Module):
    """Five-level V-Net encoder; ``forward(x)`` returns ``[F1, ..., F5]``.

    With f = n_filters: F1 (f, full size), F2 (2f, /2), F3 (4f, /4), F4 (8f, /8), F5 (16f, /16). Every spatial side
    of ``x`` must be divisible by 16 (``ValueError`` otherwise).

    Args:
        in_channels: input channels.
        n_filters: width f of the first level.
        normalization: "batchnorm", "groupnorm" (16 groups), "instancenorm" (no affine) or "none".
        has_dropout: apply channel-wise ``Dropout3d(0.5)`` to F5 (active in train mode only).
    """

    def __init__(
        self, in_channels: int = 1, n_filters: int = 16, normalization: str = "batchnorm", has_dropout: bool = False
    ) -> None:
        super().__init__()
        f = n_filters
        self.in_channels = in_channels
        self.n_filters = n_filters
        self.has_dropout = has_dropout
        self.block_one = VNetStage(1, in_channels, f, normalization)
        self.block_one_dw = VNetDown(f, 2 * f, normalization)
        self.block_two = VNetStage(2, 2 * f, 2 * f, normalization)
        self.block_two_dw = VNetDown(2 * f, 4 * f, normalization)
        self.block_three = VNetStage(3, 4 * f, 4 * f, normalization)
        self.block_three_dw = VNetDown(4 * f, 8 * f, normalization)
        self.block_four = VNetStage(3, 8 * f, 8 * f, normalization)
        self.block_four_dw = VNetDown(8 * f, 16 * f, normalization)
        self.block_five = VNetStage(3, 16 * f, 16 * f, normalization)
        # Always built (it has no parameters) so ``forward`` scripts the same way whatever ``has_dropout`` is.
        self.dropout = nn.Dropout3d(p=0.5)

    def forward(self, x: Tensor, dropout: bool = True) -> list[Tensor]:
        """``dropout=False`` skips the F5 dropout for this call (the official ``turnoff_drop``)."""
        check_input_shape(x, 3, 16, "VNet")  # four stride-2 down-samplings
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        if self.has_dropout and dropout:
            x5 = self.dropout(x5)
        return [x1, x2, x3, x4, x5]


class VNetDecoder(nn.Module):
    """V-Net decoder: transposed-conv up-sampling with ADDED skips, then a 1x1x1 head; ``forward`` -> logits.

    ``decode_stages`` returns the outputs of block_six .. block_nine (8f at /8, 4f at /4, 2f at /2, f at full size;
    e.g. ALHVR's prototype feature is the first), ``decode_features`` the last of them, i.e. the f-channel map before
    the dropout and ``out_conv``, for methods that attach their own heads.

    Args:
        out_channels: number of classes (channels of the logits).
        n_filters: width f of the first level (as given to the encoder).
        normalization: as for :class:`VNetEncoder`.
        has_dropout: apply channel-wise ``Dropout3d(0.5)`` before ``out_conv`` (active in train mode only).
    """

    def __init__(
        self, out_channels: int = 2, n_filters: int = 16, normalization: str = "batchnorm", has_dropout: bool = False
    ) -> None:
        super().__init__()
        f = n_filters
        self.out_channels = out_channels
        self.n_filters = n_filters
        self.has_dropout = has_dropout
        self.block_five_up = VNetUp(16 * f, 8 * f, normalization)
        self.block_six = VNetStage(3, 8 * f, 8 * f, normalization)
        self.block_six_up = VNetUp(8 * f, 4 * f, normalization)
        self.block_seven = VNetStage(3, 4 * f, 4 * f, normalization)
        self.block_seven_up = VNetUp(4 * f, 2 * f, normalization)
        self.block_eight = VNetStage(2, 2 * f, 2 * f, normalization)
        self.block_eight_up = VNetUp(2 * f, f, normalization)
        self.block_nine = VNetStage(1, f, f, normalization)
        self.out_conv = Convolution(
            spatial_dims=3, in_channels=f, out_channels=out_channels, kernel_size=1, conv_only=True
        )
        self.dropout = nn.Dropout3d(p=0.5)

    def decode_stages(self, features: list[Tensor]) -> list[Tensor]:
        """Outputs of block_six, block_seven, block_eight and block_nine for the encoder maps ``[F1, ..., F5]``."""
        if len(features) != 5:
            raise ValueError(f"VNetDecoder expects 5 feature maps [F1, ..., F5], got {len(features)}")
        x6 = self.block_six(self.block_five_up(features[4]) + features[3])
        x7 = self.block_seven(self.block_six_up(x6) + features[2])
        x8 = self.block_eight(self.block_seven_up(x7) + features[1])
        x9 = self.block_nine(self.block_eight_up(x8) + features[0])
        return [x6, x7, x8, x9]

    def decode_features(self, features: list[Tensor]) -> Tensor:
        """The last f-channel full-resolution map (block_nine's output), before the dropout and ``out_conv``."""
        return self.decode_stages(features)[-1]

    def forward(self, features: list[Tensor], dropout: bool = True) -> Tensor:
        """``dropout=False`` skips the pre-head dropout for this call."""
        x9 = self.decode_features(features)
        if self.has_dropout and dropout:
            x9 = self.dropout(x9)
        return self.out_conv(x9)


class VNet(nn.Module):
    """SSL4MIS V-Net (``code/networks/vnet.py``); ``forward(x)`` returns logits ``(B, out_channels, X, Y, Z)``.

    Attributes ``encoder`` (:class:`VNetEncoder`) and ``decoder`` (:class:`VNetDecoder`). Dropout (when
    ``has_dropout``; the baseline bundles use True) acts in train mode and can be skipped for one call with
    ``forward(x, dropout=False)``. Methods call :meth:`forward_train`, which variants override.

    Args:
        in_channels: input channels.
        out_channels: number of classes.
        n_filters: width f of the first level.
        normalization: "batchnorm", "groupnorm" (16 groups), "instancenorm" (no affine) or "none".
        has_dropout: ``Dropout3d(0.5)`` on F5 and before the head.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str = "batchnorm",
        has_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.has_dropout = has_dropout
        self.encoder = VNetEncoder(in_channels, n_filters, normalization, has_dropout)
        self.decoder = VNetDecoder(out_channels, n_filters, normalization, has_dropout)

    def forward(self, x: Tensor, dropout: bool = True) -> Tensor:
        return self.decoder(self.encoder(x, dropout), dropout)

    def forward_train(self, x: Tensor) -> Tensor:
        """Training output: the logits for the plain network (variants return more)."""
        return self.forward(x)


_ENCODER_STAGES = ("one", "two", "three", "four", "five")
_DECODER_STAGES = ("six", "seven", "eight", "nine")
_STAGE_KEY = re.compile(r"block_(?P<name>[a-z]+)\.conv\.(?P<index>\d+)\.(?P<rest>.+)")
_RESAMPLE_KEY = re.compile(r"block_(?P<name>[a-z]+)_(?P<kind>dw|up)\.conv\.(?P<index>\d+)\.(?P<rest>.+)")
_HEAD_KEY = re.compile(r"out_conv\.(?P<rest>.+)")
# Official MC-Net/ALHVR-style checkpoints put the same blocks under ``encoder.`` / ``decoder.``.
_SPLIT_PREFIX = re.compile(r"^(encoder|decoder)\.(?=block_|out_conv\.)")


def _stage_strides(keys: list[str]) -> dict[str, int]:
    """Positions per conv inside each official ``ConvBlock`` Sequential: 3 (conv, norm, ReLU) or 2 (conv, ReLU).

    With ``normalization="none"`` the convs sit at 0, 2, 4; with a norm at 0, 3, 6 (norm at 1, 4, 7; an
    instance norm has no state). Index 2 is a ReLU whenever a norm is present, so any stateful index with
    ``index % 3 == 2`` reveals the norm-free layout. A one-conv block (index 0 only) reads the same either way.
    """
    strides: dict[str, int] = {}
    for key in keys:
        match = _STAGE_KEY.fullmatch(key)
        if match is None:
            continue
        name = match["name"]
        strides.setdefault(name, 3)
        if int(match["index"]) % 3 == 2:
            strides[name] = 2
    return strides


def _map_vnet_key(key: str, strides: dict[str, int]) -> str:
    """One (prefix-free) official V-Net key -> this module's key (unknown keys are returned unchanged)."""
    match = _STAGE_KEY.fullmatch(key)
    if match is not None and match["name"] in _ENCODER_STAGES + _DECODER_STAGES:
        name, rest = match["name"], match["rest"]
        conv, position = divmod(int(match["index"]), strides[name])
        if position not in (0, 1):
            raise ValueError(f"official V-Net key {key!r} names a layer without state")
        part = "encoder" if name in _ENCODER_STAGES else "decoder"
        layer = "conv" if position == 0 else "adn.N"
        return f"{part}.block_{name}.{conv}.{layer}.{rest}"
    match = _RESAMPLE_KEY.fullmatch(key)
    if match is not None:
        name, kind, index, rest = match["name"], match["kind"], match["index"], match["rest"]
        valid = name in _ENCODER_STAGES[:4] if kind == "dw" else name in ("five", "six", "seven", "eight")
        if valid and index in ("0", "1"):
            part = "encoder" if kind == "dw" else "decoder"
            layer = "conv" if index == "0" else "adn.N"
            return f"{part}.block_{name}_{kind}.{layer}.{rest}"
    match = _HEAD_KEY.fullmatch(key)
    if match is not None:
        return f"decoder.out_conv.conv.{match['rest']}"
    return key


def ssl4mis_vnet_key_map(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an official SSL4MIS/UA-MT ``VNet`` state dict to :class:`VNet` names (values untouched, order kept).

    Handles ``block_<n>.conv.<3i>`` (conv i) / ``.conv.<3i+1>`` (its norm), the norm-free layout
    (``.conv.<2i>``), ``block_<n>_dw.conv.{0,1}``, ``block_<n>_up.conv.{0,1}`` and ``out_conv``; strips a leading
    ``module.`` (DataParallel) and an ``encoder.`` / ``decoder.`` split prefix (ALHVR layout). Other keys pass
    through unchanged, so a variant can rename its extra heads itself; ``load_state_dict(strict=True)`` reports
    any that remain unknown.
    """
    keys = [_SPLIT_PREFIX.sub("", strip_module_prefix(key), count=1) for key in state_dict]
    strides = _stage_strides(keys)
    out: dict[str, Any] = {}
    for key, value in zip(keys, state_dict.values(), strict=True):
        new_key = _map_vnet_key(key, strides)
        if new_key in out:
            raise ValueError(f"two keys of the checkpoint map to {new_key!r}")
        out[new_key] = value
    return out
