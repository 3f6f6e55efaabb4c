"""Backbones shared by the bundles: the SSL4MIS 2-D U-Net and 3-D V-Net, split into encoder and decoder.

Both follow the project's network rule: ``forward(x)`` returns one tensor (the logits) and is TorchScript-scriptable;
methods call ``forward_train(x)``, which method-specific variants override. The ``ssl4mis_*_key_map`` functions
rename official checkpoints to these modules' parameter names.
"""

from .alhvr import ALHVRUNet2D, ALHVRVNet3D
from .coranet import CoraOutput, MultiHeadSegNet, UNet2DTrunk, VNet3D
from .dycon import DyConUNet3D, DyConVNet
from .stlu import STLUNet
from .unet2d import UNet2D, UNetDecoder2D, UNetEncoder2D, ssl4mis_unet_key_map
from .vnet import VNet, VNetDecoder, VNetEncoder, ssl4mis_vnet_key_map

__all__ = [
    "UNet2D",
    "UNetDecoder2D",
    "UNetEncoder2D",
    "VNet",
    "VNetDecoder",
    "VNetEncoder",
    "ssl4mis_unet_key_map",
    "ssl4mis_vnet_key_map",
    "ALHVRUNet2D",
    "ALHVRVNet3D",
    "VNet3D",
    "MultiHeadSegNet",
    "UNet2DTrunk",
    "CoraOutput",
    "DyConUNet3D",
    "DyConVNet",
    "STLUNet",
]
