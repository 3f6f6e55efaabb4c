import math

import pytest
import torch

from common.losses import masked_softmax_mse, softmax_mse


def test_softmax_mse_hand_case():
    student = torch.zeros(1, 2, 1, 1)  # softmax [0.5, 0.5]
    teacher = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1)  # softmax [0.75, 0.25]
    out = softmax_mse(student, teacher)
    assert out.shape == (1, 2, 1, 1)
    assert torch.allclose(out, torch.full_like(out, 0.0625))


def test_softmax_mse_gradient_only_through_student():
    student = torch.zeros(1, 2, 2, requires_grad=True)
    teacher = torch.ones(1, 2, 2, requires_grad=True)
    softmax_mse(student, teacher).sum().backward()
    assert teacher.grad is None


def test_masked_softmax_mse_normalises_by_voxels():
    student = torch.zeros(1, 2, 2)
    teacher = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])  # voxel 0 differs, voxel 1 agrees
    mask = torch.tensor([[1.0, 1.0]])
    # voxel 0 contributes 2 * 0.0625 over the two classes, voxel 1 contributes 0; two masked voxels
    assert masked_softmax_mse(student, teacher, mask).item() == pytest.approx(0.0625)
    assert masked_softmax_mse(student, teacher, torch.zeros(1, 2)).item() == 0.0
