"""The 2D bundles segment a volume slice by slice: every original slice once, none skipped or duplicated."""

from __future__ import annotations

import torch
from torch import nn

from tests.bundle_utils import make_workflow


class SliceMean(nn.Module):
    """Two-channel 'logits' [mean intensity of the slice, 0] broadcast over the slice; records its calls."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(tuple(x.shape))
        mean = x.mean(dim=(1, 2, 3), keepdim=True).expand(-1, 1, *x.shape[2:])
        return torch.cat([mean, torch.zeros_like(mean)], dim=1)


def test_acdc_inferer_visits_each_slice_once(phantom_datasets):
    workflow = make_workflow(
        "mean_teacher_acdc", configs=("inference",), workflow_type="infer",
        dataset_dir=str(phantom_datasets["acdc"]), spatial_size=[32, 32],
    )  # fmt: skip
    inferer = workflow.parser.get_parsed_content("inferer")
    depth = 11
    volume = torch.arange(depth, dtype=torch.float32).view(1, 1, 1, 1, depth).expand(1, 1, 32, 32, depth) / depth
    network = SliceMean()
    probs = inferer(volume.contiguous(), network)
    assert probs.shape == (1, 2, 32, 32, depth)
    assert sum(b[0] for b in network.batches) == depth  # each slice passed through the network exactly once
    assert all(b[1:] == (1, 32, 32) for b in network.batches)
    expected = torch.sigmoid(torch.arange(depth, dtype=torch.float32) / depth)  # softmax of [m, 0] at slice z
    assert torch.allclose(probs[0, 0, 0, 0], expected, atol=1e-6)
