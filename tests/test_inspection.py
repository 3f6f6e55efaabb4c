"""Inspection maps (ALHVR region maps, CoraNet uncertainty masks): values, training left untouched, bundle option."""

from __future__ import annotations

import copy
import random

import nibabel as nib
import numpy as np
import pytest
import torch

from common.losses.alhvr import alhvr_adaptive_threshold, alhvr_confidence, alhvr_region_masks
from common.methods.alhvr import ALHVR, alhvr_region_map
from common.methods.base import preserved_rng_states
from common.networks.alhvr import ALHVRUNet2D
from tests.bundle_utils import TINY, make_workflow
from tests.test_coranet import batches as coranet_batches
from tests.test_coranet import make_method as make_coranet


def alhvr_batches(size: int = 32):
    gen = torch.Generator().manual_seed(0)
    labeled = {
        "image": torch.randn(2, 1, size, size, generator=gen),
        "label": torch.randint(0, 4, (2, 1, size, size), generator=gen).float(),
    }
    return labeled, {"image": torch.randn(2, 1, size, size, generator=gen)}


def test_preserved_rng_states_restores_every_global_generator():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    with preserved_rng_states():
        torch.rand(5), np.random.rand(5), random.random()
    got = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_alhvr_region_map_of_image_matches_partition_of_eval_perturbed_confidences():
    torch.manual_seed(0)
    method = ALHVR(ALHVRUNet2D(), ALHVRUNet2D(), num_classes=4, beta=0.8)
    image = alhvr_batches()[1]["image"]
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    regions = method.inspection_maps(image)["regions"]
    # the same draws, by hand: both nets in eval mode, perturbed logits of A then B
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    method.network.eval()
    method.network_2.eval()
    with torch.no_grad():
        conf = [alhvr_confidence(torch.softmax(net.forward_train(image)[1], 1))[0] for net in method.nets]
    gamma = alhvr_adaptive_threshold(conf[0], conf[1], 0.8)
    expected = alhvr_region_map(*alhvr_region_masks(conf[0], conf[1], gamma))
    assert regions.shape == (2, 32, 32) and regions.dtype == torch.uint8
    assert torch.equal(regions, expected)
    # β = 0.8 of the pixels lie below-or-near γ: the map is not one single region
    assert len(torch.unique(regions)) > 1


def test_alhvr_inspection_between_steps_changes_nothing_in_training():
    labeled, unlabeled = alhvr_batches()

    def two_steps(inspect: bool):
        torch.manual_seed(0)
        method = ALHVR(ALHVRUNet2D(), ALHVRUNet2D(), num_classes=4)
        optimizer = torch.optim.SGD(list(method.network.parameters()) + list(method.network_2.parameters()), lr=0.1)
        random.seed(5)
        np.random.seed(5)
        torch.manual_seed(5)
        values = []
        for iteration in range(2):
            method.train()
            optimizer.zero_grad()
            loss = method.compute_losses(labeled, unlabeled, iteration)["loss"]
            loss.backward()
            optimizer.step()
            values.append(float(loss.detach()))
            if inspect:
                method.inspection_maps(unlabeled["image"])
        return values, method

    plain, plain_method = two_steps(False)
    inspected, inspected_method = two_steps(True)
    assert plain == inspected
    inspected_state = inspected_method.network.state_dict()
    for key, value in plain_method.network.state_dict().items():
        assert torch.equal(value, inspected_state[key])  # BatchNorm running statistics included
    assert inspected_method.network.training  # mode restored


def test_coranet_uncertainty_mask_is_head_disagreement_and_leaves_weights():
    method = make_coranet()
    _, unlabeled = coranet_batches()
    before = copy.deepcopy(method.network.state_dict())
    maps = method.inspection_maps(unlabeled["image"])
    method.network.eval()
    with torch.no_grad():
        out = method.network.forward_train(unlabeled["image"])
    rad = (torch.softmax(out.rad, 1)[:, 1] >= 0.5).to(torch.uint8)
    cons = (torch.softmax(out.cons, 1)[:, 1] >= 0.5).to(torch.uint8)
    assert torch.equal(maps["uncertain"], (rad != cons).to(torch.uint8))
    assert maps["pseudo_label"].shape == maps["uncertain"].shape
    assert all(torch.equal(before[k], v) for k, v in method.network.state_dict().items())


@pytest.mark.parametrize("name, flavour", [("alhvr_acdc", "acdc"), ("coranet_pancreas", "pancreas")])
def test_bundle_option_writes_inspection_maps(name, flavour, phantom_datasets, tmp_path):
    workflow = make_workflow(
        name,
        **TINY[flavour],
        dataset_dir=str(phantom_datasets[flavour]),
        max_iterations=4,
        val_interval=4,
        save_inspection_maps=True,
        inspection_interval=2,
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "eval"),
    )
    workflow.run()
    workflow.finalize()
    folder = tmp_path / "eval" / "inspection"
    key = "regions" if name.startswith("alhvr") else "uncertain"
    images = sorted(folder.glob("image_*.nii.gz"))
    assert images
    for iteration in (2, 4):
        maps = sorted(folder.glob(f"{key}_iter{iteration:06d}_*.nii.gz"))
        assert len(maps) == len(images)
        for image_path, map_path in zip(images, maps, strict=True):
            values = np.asarray(nib.load(str(map_path)).dataobj)
            assert values.shape == nib.load(str(image_path)).shape
            assert values.max() <= (3 if key == "regions" else 1)
