import pytest
import torch
from torch import nn

from common.methods import MeanTeacher, Supervised
from common.methods.base import HOOK_OPTIMIZER_STEPPED


class Recorder(nn.Module):
    """1x1 convolution that remembers its last input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.conv(x)


def mse_sup(logits, label):
    return ((torch.softmax(logits, 1)[:, 1:] - label) ** 2).mean()


def batches(n_l=2, n_u=3):
    labeled = {"image": torch.randn(n_l, 1, 4, 4), "label": (torch.rand(n_l, 1, 4, 4) > 0.5).float()}
    unlabeled = {"image": torch.randn(n_u, 1, 4, 4)}
    return labeled, unlabeled


def test_supervised_ignores_unlabeled():
    net = Recorder()
    labeled, unlabeled = batches()
    losses = Supervised(net, mse_sup).compute_losses(labeled, unlabeled, 0)
    assert set(losses) == {"loss", "loss_sup"}
    assert torch.allclose(losses["loss"], mse_sup(net.conv(labeled["image"]), labeled["label"]))
    assert len(net.inputs) == 1 and net.inputs[0].shape[0] == 2


def test_mean_teacher_joint_student_batch_and_noisy_teacher():
    torch.manual_seed(0)
    student, teacher = Recorder(), Recorder()
    method = MeanTeacher(student, teacher, mse_sup, noise_std=0.1, noise_clip=0.2)
    labeled, unlabeled = batches()
    losses = method.compute_losses(labeled, unlabeled, iteration=0)
    assert student.inputs[0].shape[0] == 5  # labeled and unlabeled in one student batch
    noise = teacher.inputs[0] - unlabeled["image"]
    assert noise.abs().max() <= 0.2 + 1e-6 and noise.abs().max() > 0
    assert not any(p.requires_grad for p in teacher.parameters())
    expected_cons = (
        (torch.softmax(student.conv(unlabeled["image"]), 1) - torch.softmax(teacher.conv(teacher.inputs[0]), 1)) ** 2
    ).mean()
    assert losses["loss_cons"].item() == pytest.approx(expected_cons.item(), rel=1e-5)
    weight = losses["cons_weight"].item()
    assert weight == pytest.approx(0.1 * torch.exp(torch.tensor(-5.0)).item())
    assert losses["loss"].item() == pytest.approx(losses["loss_sup"].item() + weight * expected_cons.item(), rel=1e-5)


def test_mean_teacher_consistency_delay_and_no_unlabeled():
    method = MeanTeacher(Recorder(), Recorder(), mse_sup, consistency_start_iteration=1000)
    labeled, unlabeled = batches()
    delayed = method.compute_losses(labeled, unlabeled, iteration=999)
    assert delayed["loss_cons"].item() == 0.0
    assert delayed["loss"].item() == pytest.approx(delayed["loss_sup"].item())
    only_sup = method.compute_losses(labeled, None, iteration=5000)
    assert set(only_sup) == {"loss", "loss_sup"}


def test_mean_teacher_ema_hook_copies_then_averages():
    student, teacher = Recorder(), Recorder()
    method = MeanTeacher(student, teacher, mse_sup, ema_decay=0.99)
    hook = method.hooks()[HOOK_OPTIMIZER_STEPPED]
    hook(0)
    assert torch.equal(teacher.conv.weight, student.conv.weight)
    with torch.no_grad():
        student.conv.weight.add_(1.0)
    hook(1)  # decay min(1 - 1/2, 0.99) = 0.5
    assert torch.allclose(teacher.conv.weight, student.conv.weight - 0.5)
