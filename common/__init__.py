"""Shared code of the semiseg-bundles collection.

Bundles reference this package by dotted path (``common.networks.UNet2D``). Inside the package every
import is relative, because an exported bundle carries this folder as its ``scripts`` package.
"""
