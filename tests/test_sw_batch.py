"""Inference batches its windows (sw_batch_size > 1), and batching does not change the prediction (issue #11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from common.inferers import sliding_window_predict
from common.networks import UNet2D, VNet
from tests.bundle_utils import BUNDLES, config_files

BUNDLES_3D = [name for name, flavour in BUNDLES.items() if flavour != "acdc"]


def _parser(bundle: str, *configs: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_files(bundle, *configs))
    parser.resolve_macro_and_relative_ids()  # the shared blocks (%bundles/shared/...) become addressable by id
    parser.update(overrides)
    return parser


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_inference_and_validation_batch_windows_with_amp(bundle):
    inference = _parser(bundle, "inference")
    assert inference.get_parsed_content("inferer#inferer#sw_batch_size") > 1
    assert inference.get_parsed_content("amp") is True  # autocast on CUDA (the evaluator ignores it on the CPU)
    assert inference["evaluator#amp"] == "@amp"
    train = _parser(bundle, "train")  # validation during training (and evaluate.json) use the recipe's inferer
    assert train.get_parsed_content("validate#inferer").inferer.sw_batch_size > 1


def _probabilities(inferer, network, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return inferer(image, network)


def _assert_same_prediction(reference: torch.Tensor, other: torch.Tensor, atol: float) -> None:
    assert other.shape == reference.shape
    torch.testing.assert_close(other, reference, atol=atol, rtol=0)
    top2 = torch.topk(reference, 2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > 10 * atol  # float-order near-ties are not a different prediction
    assert torch.equal(other.argmax(1)[decided], reference.argmax(1)[decided])
    assert decided.float().mean() > 0.99


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_batched_sliding_windows_give_the_same_prediction(dtype, atol):
    """The bundle's own 3D inferer (ProbabilityInferer over SlidingWindowInferer) with sw_batch_size 1 vs more."""
    torch.manual_seed(0)
    network = VNet(in_channels=1, out_channels=3, n_filters=4, normalization="batchnorm", has_dropout=True)
    network = network.to(dtype).eval()
    image = torch.randn(1, 1, 37, 30, 26, dtype=dtype)
    overrides = {"patch_size": [16, 16, 16], "sw_stride": [8, 8, 4], "num_classes": 3}

    def inferer(sw_batch_size: int):
        return _parser("supervised_la", "inference", sw_batch_size=sw_batch_size, **overrides).get_parsed_content(
            "inferer"
        )

    unbatched = _probabilities(inferer(1), network, image)
    assert unbatched.shape == (1, 3, 37, 30, 26)
    torch.testing.assert_close(unbatched.sum(1), torch.ones_like(unbatched[:, 0]))
    for sw_batch_size in (2, 4, 7, 500):  # 500 > number of windows: a single batch
        _assert_same_prediction(unbatched, _probabilities(inferer(sw_batch_size), network, image), atol)


def test_batched_slices_give_the_same_prediction():
    """The bundle's own 2D inferer (SliceInferer over the slices of a volume) with sw_batch_size 1 vs 16."""
    torch.manual_seed(0)
    network = UNet2D(in_channels=1, num_classes=4).double().eval()
    image = torch.randn(1, 1, 32, 32, 7, dtype=torch.float64)

    def inferer(sw_batch_size: int):
        parser = _parser("mean_teacher_acdc", "inference", spatial_size=[32, 32])
        parser["inferer#inferer#sw_batch_size"] = sw_batch_size
        return parser.get_parsed_content("inferer")

    unbatched = _probabilities(inferer(1), network, image)
    for sw_batch_size in (3, 16):
        _assert_same_prediction(unbatched, _probabilities(inferer(sw_batch_size), network, image), 1e-6)


def test_reference_sliding_window_matches_batched_monai_inferer():
    """The reference one-window-at-a-time scheme equals the bundle's batched inferer (windows, padding, averaging)."""
    torch.manual_seed(0)
    network = VNet(in_channels=1, out_channels=2, n_filters=4, normalization="batchnorm").double().eval()
    image = np.random.default_rng(3).normal(size=(21, 30, 11)).astype(np.float32)
    patch, stride = (16, 16, 16), (6, 6, 3)
    _, reference_score = sliding_window_predict(
        lambda w: network(w.double()), image, patch, stride_xy=stride[0], stride_z=stride[2], num_classes=2
    )
    batched = _parser(
        "supervised_la", "inference", patch_size=list(patch), sw_stride=list(stride), sw_batch_size=4
    ).get_parsed_content("inferer")
    monai_score = _probabilities(batched, network, torch.from_numpy(image).double()[None, None])
    _assert_same_prediction(torch.from_numpy(reference_score)[None].to(monai_score.dtype), monai_score, 1e-6)
