"""Tests of the shared backbones (common.networks): sizes, shapes, TorchScript, official-checkpoint loading.

The ``_Ref*`` modules below are plain ``torch.nn`` re-statements of the official SSL4MIS layouts described in
baselines.md section 9.1/9.2 ("State-dict layout"), written for these tests: their state dicts carry the
official key names, so loading them through the key maps checks weight compatibility.
"""

import pytest
import torch
from torch import Tensor, nn

from common.networks import (
    UNet2D,
    UNetDecoder2D,
    UNetEncoder2D,
    VNet,
    VNetDecoder,
    VNetEncoder,
    ssl4mis_unet_key_map,
    ssl4mis_vnet_key_map,
)

UNET_PARAMS = 1_813_764
UNET_TRANSPOSED_PARAMS = 1_944_324  # the bilinear=False reading (3 * sum(in * out) more than the 1x1 convs)
VNET_PARAMS = 9_448_866
VNET_ENCODER_PARAMS = 7_376_896
VNET_DECODER_PARAMS = 2_071_970
NORMALIZATIONS = ("batchnorm", "groupnorm", "instancenorm", "none")


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(p.shape) for p in module.parameters()]


def _randomize_(module: nn.Module) -> nn.Module:
    """Give norm layers non-trivial affine parameters and running statistics (defaults would hide mistakes)."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.running_mean.normal_(0.0, 0.1)
                sub.running_var.uniform_(0.5, 1.5)
            if isinstance(sub, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and sub.affine:
                sub.weight.uniform_(0.5, 1.5)
                sub.bias.normal_(0.0, 0.1)
    return module


# ---------------------------------------------------------------------------------------------------------------
# Reference layouts with the official attribute names
# ---------------------------------------------------------------------------------------------------------------


class _RefConvBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, p: float) -> None:
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.01),
            nn.Dropout(p),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.01),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_conv(x)


class _RefDown2D(nn.Module):
    def __init__(self, cin: int, cout: int, p: float) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), _RefConvBlock2D(cin, cout, p))

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool_conv(x)


class _RefUp2D(nn.Module):
    def __init__(self, cin: int, cskip: int, bilinear: bool) -> None:
        super().__init__()
        self.bilinear = bilinear
        if bilinear:
            self.conv1x1 = nn.Conv2d(cin, cskip, 1)
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            self.up = nn.ConvTranspose2d(cin, cskip, 2, stride=2)
        self.conv = _RefConvBlock2D(2 * cskip, cskip, 0.0)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if self.bilinear:
            x = self.conv1x1(x)
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class _RefUNetEncoder(nn.Module):
    def __init__(self, cin: int, widths: list[int], drops: list[float]) -> None:
        super().__init__()
        self.in_conv = _RefConvBlock2D(cin, widths[0], drops[0])
        self.down1 = _RefDown2D(widths[0], widths[1], drops[1])
        self.down2 = _RefDown2D(widths[1], widths[2], drops[2])
        self.down3 = _RefDown2D(widths[2], widths[3], drops[3])
        self.down4 = _RefDown2D(widths[3], widths[4], drops[4])

    def forward(self, x: Tensor) -> list[Tensor]:
        x0 = self.in_conv(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        return [x0, x1, x2, x3, self.down4(x3)]


class _RefUNetDecoder(nn.Module):
    def __init__(self, widths: list[int], n_classes: int, bilinear: bool) -> None:
        super().__init__()
        self.up1 = _RefUp2D(widths[4], widths[3], bilinear)
        self.up2 = _RefUp2D(widths[3], widths[2], bilinear)
        self.up3 = _RefUp2D(widths[2], widths[1], bilinear)
        self.up4 = _RefUp2D(widths[1], widths[0], bilinear)
        self.out_conv = nn.Conv2d(widths[0], n_classes, 3, padding=1)

    def forward(self, f: list[Tensor]) -> Tensor:
        x = self.up4(self.up3(self.up2(self.up1(f[4], f[3]), f[2]), f[1]), f[0])
        return self.out_conv(x)


class _RefUNet(nn.Module):
    def __init__(self, cin: int = 1, n_classes: int = 4, bilinear: bool = True) -> None:
        super().__init__()
        widths = [16, 32, 64, 128, 256]
        self.encoder = _RefUNetEncoder(cin, widths, [0.05, 0.1, 0.2, 0.3, 0.5])
        self.decoder = _RefUNetDecoder(widths, n_classes, bilinear)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def _ref_norm3d(normalization: str, channels: int) -> list[nn.Module]:
    if normalization == "batchnorm":
        return [nn.BatchNorm3d(channels)]
    if normalization == "groupnorm":
        return [nn.GroupNorm(16, channels)]
    if normalization == "instancenorm":
        return [nn.InstanceNorm3d(channels)]
    return []


class _RefStage3D(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, normalization: str) -> None:
        super().__init__()
        ops: list[nn.Module] = []
        for i in range(n):
            ops += [nn.Conv3d(cin if i == 0 else cout, cout, 3, padding=1), *_ref_norm3d(normalization, cout)]
            ops.append(nn.ReLU(inplace=True))
        self.conv = nn.Sequential(*ops)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class _RefResample3D(nn.Module):
    def __init__(self, cin: int, cout: int, normalization: str, transposed: bool) -> None:
        super().__init__()
        conv = nn.ConvTranspose3d(cin, cout, 2, stride=2) if transposed else nn.Conv3d(cin, cout, 2, stride=2)
        self.conv = nn.Sequential(conv, *_ref_norm3d(normalization, cout), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class _RefVNet(nn.Module):
    def __init__(self, cin: int = 1, n_classes: int = 2, f: int = 16, normalization: str = "batchnorm") -> None:
        super().__init__()
        norm = normalization
        self.block_one = _RefStage3D(1, cin, f, norm)
        self.block_one_dw = _RefResample3D(f, 2 * f, norm, False)
        self.block_two = _RefStage3D(2, 2 * f, 2 * f, norm)
        self.block_two_dw = _RefResample3D(2 * f, 4 * f, norm, False)
        self.block_three = _RefStage3D(3, 4 * f, 4 * f, norm)
        self.block_three_dw = _RefResample3D(4 * f, 8 * f, norm, False)
        self.block_four = _RefStage3D(3, 8 * f, 8 * f, norm)
        self.block_four_dw = _RefResample3D(8 * f, 16 * f, norm, False)
        self.block_five = _RefStage3D(3, 16 * f, 16 * f, norm)
        self.block_five_up = _RefResample3D(16 * f, 8 * f, norm, True)
        self.block_six = _RefStage3D(3, 8 * f, 8 * f, norm)
        self.block_six_up = _RefResample3D(8 * f, 4 * f, norm, True)
        self.block_seven = _RefStage3D(3, 4 * f, 4 * f, norm)
        self.block_seven_up = _RefResample3D(4 * f, 2 * f, norm, True)
        self.block_eight = _RefStage3D(2, 2 * f, 2 * f, norm)
        self.block_eight_up = _RefResample3D(2 * f, f, norm, True)
        self.block_nine = _RefStage3D(1, f, f, norm)
        self.out_conv = nn.Conv3d(f, n_classes, 1)
        self.dropout = nn.Dropout3d(0.5)

    def forward(self, x: Tensor) -> Tensor:  # eval-mode reference: dropout omitted
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        x6 = self.block_six(self.block_five_up(x5) + x4)
        x7 = self.block_seven(self.block_six_up(x6) + x3)
        x8 = self.block_eight(self.block_seven_up(x7) + x2)
        x9 = self.block_nine(self.block_eight_up(x8) + x1)
        return self.out_conv(x9)


# ---------------------------------------------------------------------------------------------------------------
# 2-D U-Net
# ---------------------------------------------------------------------------------------------------------------


def test_unet_parameter_count_and_structure() -> None:
    net = UNet2D(in_channels=1, num_classes=4)
    assert _count(net) == UNET_PARAMS
    assert len(list(net.parameters())) == 82
    assert len(net.state_dict()) == 136
    assert isinstance(net.encoder, UNetEncoder2D)
    assert isinstance(net.decoder, UNetDecoder2D)
    assert isinstance(net.decoder.out_conv.conv, nn.Conv2d) and net.decoder.out_conv.conv.kernel_size == (3, 3)
    assert _count(UNet2D(bilinear=False)) == UNET_TRANSPOSED_PARAMS


@pytest.mark.parametrize("bilinear", [True, False])
def test_unet_registration_order_matches_official(bilinear: bool) -> None:
    assert _shapes(UNet2D(bilinear=bilinear)) == _shapes(_RefUNet(bilinear=bilinear))


def test_unet_shapes() -> None:
    torch.manual_seed(0)
    net = UNet2D().eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        features = net.encoder(x)
        assert [tuple(f.shape) for f in features] == [
            (2, 16, 64, 64),
            (2, 32, 32, 32),
            (2, 64, 16, 16),
            (2, 128, 8, 8),
            (2, 256, 4, 4),
        ]
        stages = net.decoder.decode_stages(features)
        assert [tuple(s.shape) for s in stages] == [(2, 128, 8, 8), (2, 64, 16, 16), (2, 32, 32, 32), (2, 16, 64, 64)]
        assert net.decoder.decode_features(features).shape == (2, 16, 64, 64)
        logits = net(x)
        assert logits.shape == (2, 4, 64, 64)
        torch.testing.assert_close(net.forward_train(x), logits)
        torch.testing.assert_close(net.decoder.out_conv(net.decoder.decode_features(features)), logits)


def test_unet_dropout_is_elementwise_and_train_only() -> None:
    net = UNet2D()
    dropouts = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert all(type(m) is nn.Dropout for m in dropouts)
    assert sorted(m.p for m in dropouts if m.p > 0) == [0.05, 0.1, 0.2, 0.3, 0.5]
    x = torch.randn(1, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x))


@pytest.mark.parametrize("bilinear", [True, False])
def test_unet_key_map_loads_official_layout(bilinear: bool) -> None:
    torch.manual_seed(1)
    ref = _randomize_(_RefUNet(bilinear=bilinear)).eval()
    official = {f"module.{k}": v for k, v in ref.state_dict().items()}  # as saved from nn.DataParallel
    net = UNet2D(bilinear=bilinear)
    mapped = ssl4mis_unet_key_map(official)
    assert list(mapped) == list(net.state_dict())  # same names, same order
    net.load_state_dict(mapped, strict=True)
    net.eval()
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)


def test_unet_torchscript_matches_eager() -> None:
    torch.manual_seed(2)
    net = _randomize_(UNet2D()).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=0)


def test_unet_rejects_bad_input_and_arguments() -> None:
    net = UNet2D().eval()
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 1, 20, 32))
    with pytest.raises(ValueError, match="4-D input"):
        net(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="5 entries"):
        UNet2D(features=(16, 32, 64, 128))
    with pytest.raises(ValueError, match="5 entries"):
        UNet2D(dropout=(0.1, 0.1))


# ---------------------------------------------------------------------------------------------------------------
# 3-D V-Net
# ---------------------------------------------------------------------------------------------------------------


def test_vnet_parameter_count_and_structure() -> None:
    net = VNet(in_channels=1, out_channels=2, has_dropout=True)
    assert _count(net) == VNET_PARAMS
    assert _count(net.encoder) == VNET_ENCODER_PARAMS
    assert _count(net.decoder) == VNET_DECODER_PARAMS
    assert len(list(net.parameters())) == 118
    assert len(net.state_dict()) == 205
    assert isinstance(net.encoder, VNetEncoder)
    assert isinstance(net.decoder, VNetDecoder)
    assert isinstance(net.encoder.dropout, nn.Dropout3d) and isinstance(net.decoder.dropout, nn.Dropout3d)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())  # only the two channel-wise dropouts


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_vnet_registration_order_matches_official(normalization: str) -> None:
    net = VNet(normalization=normalization)
    ref = _RefVNet(normalization=normalization)
    assert _shapes(net) == _shapes(ref)
    assert len(net.state_dict()) == len(ref.state_dict())


def test_vnet_shapes() -> None:
    torch.manual_seed(3)
    net = VNet(has_dropout=True).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        features = net.encoder(x)
        assert [tuple(f.shape) for f in features] == [
            (1, 16, 32, 32, 32),
            (1, 32, 16, 16, 16),
            (1, 64, 8, 8, 8),
            (1, 128, 4, 4, 4),
            (1, 256, 2, 2, 2),
        ]
        stages = net.decoder.decode_stages(features)
        assert [tuple(s.shape) for s in stages] == [
            (1, 128, 4, 4, 4),
            (1, 64, 8, 8, 8),
            (1, 32, 16, 16, 16),
            (1, 16, 32, 32, 32),
        ]
        assert net.decoder.decode_features(features).shape == (1, 16, 32, 32, 32)
        logits = net(x)
        assert logits.shape == (1, 2, 32, 32, 32)
        torch.testing.assert_close(net.forward_train(x), logits)
        torch.testing.assert_close(net.decoder.out_conv(net.decoder.decode_features(features)), logits)


def test_vnet_dropout_flag() -> None:
    torch.manual_seed(4)
    net = VNet(has_dropout=True).train()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, dropout=False), net(x, dropout=False))
        assert not torch.allclose(net(x), net(x, dropout=False))
        # has_dropout=False ignores the flag: same weights give the dropout-free output.
        plain = VNet(has_dropout=False).train()
        plain.load_state_dict(net.state_dict())
        torch.testing.assert_close(plain(x), net(x, dropout=False))


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_vnet_key_map_loads_official_layout(normalization: str) -> None:
    torch.manual_seed(5)
    ref = _randomize_(_RefVNet(normalization=normalization)).eval()
    official = {f"module.{k}": v for k, v in ref.state_dict().items()}
    net = VNet(normalization=normalization, has_dropout=True)
    mapped = ssl4mis_vnet_key_map(official)
    assert list(mapped) == list(net.state_dict())
    net.load_state_dict(mapped, strict=True)
    net.eval()
    x = torch.randn(1, 1, 16, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)


def test_vnet_key_map_accepts_encoder_decoder_split() -> None:
    """ALHVR/MC-Net style checkpoints hold the same blocks under ``encoder.`` / ``decoder.``."""
    flat = _RefVNet().state_dict()
    encoder_blocks = ("block_one", "block_two", "block_three", "block_four", "block_five.")
    split = {}
    for key, value in flat.items():
        is_encoder = key.startswith(encoder_blocks) or "_dw." in key
        split[("encoder." if is_encoder else "decoder.") + key] = value
    from_split, from_flat = ssl4mis_vnet_key_map(split), ssl4mis_vnet_key_map(flat)
    assert list(from_split) == list(from_flat) == list(VNet().state_dict())
    assert all(from_split[k] is from_flat[k] for k in from_flat)


def test_vnet_torchscript_matches_eager() -> None:
    torch.manual_seed(6)
    net = _randomize_(VNet(has_dropout=True)).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 16, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=0)
        torch.testing.assert_close(scripted(x, dropout=False), net(x))
    with pytest.raises(torch.jit.Error, match="divisible by 16"):
        scripted(torch.randn(1, 1, 20, 16, 16))


def test_vnet_rejects_bad_normalization_and_size() -> None:
    for cls in (VNet, VNetEncoder, VNetDecoder):
        with pytest.raises(ValueError, match="normalization"):
            cls(normalization="layernorm")
    net = VNet().eval()
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 1, 20, 16, 16))
    with pytest.raises(ValueError, match="5-D input"):
        net(torch.randn(1, 1, 16, 16))
