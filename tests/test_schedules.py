import math

import pytest
import torch

from common.schedules import (
    PolyDecay,
    consistency_weight,
    ema_update_,
    ema_warmup_decay,
    linear_rampup,
    sigmoid_rampup,
)


def test_sigmoid_rampup_hand_values():
    assert sigmoid_rampup(0, 200) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(100, 200) == pytest.approx(math.exp(-1.25))  # phase 0.5 -> exp(-5 * 0.25)
    assert sigmoid_rampup(200, 200) == pytest.approx(1.0)
    assert sigmoid_rampup(300, 200) == pytest.approx(1.0)  # clipped
    assert sigmoid_rampup(-5, 200) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(7, 0) == 1.0


def test_linear_rampup():
    assert linear_rampup(5, 10) == 0.5
    assert linear_rampup(20, 10) == 1.0
    assert linear_rampup(3, 0) == 1.0


def test_consistency_weight_counts_epochs_of_150_iterations():
    assert consistency_weight(149, 0.1, 200) == pytest.approx(0.1 * math.exp(-5.0))
    assert consistency_weight(150, 0.1, 200) == pytest.approx(0.1 * math.exp(-5.0 * (199 / 200) ** 2))
    # last iteration of a 30 000-iteration run: epoch 199 of 200
    assert consistency_weight(29999, 0.1, 200, 150) == pytest.approx(0.1 * math.exp(-5.0 * (1 / 200) ** 2))
    assert consistency_weight(10, 1.0, 40, iters_per_epoch=1) == pytest.approx(math.exp(-5.0 * 0.75**2))


def test_ema_warmup_decay():
    assert ema_warmup_decay(0, 0.99) == 0.0  # first update copies the student
    assert ema_warmup_decay(1, 0.99) == 0.5
    assert ema_warmup_decay(9, 0.99) == pytest.approx(0.9)
    assert ema_warmup_decay(1000, 0.99) == 0.99


def test_ema_update_parameters_only():
    teacher = torch.nn.BatchNorm1d(2)
    student = torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
        student.running_mean.fill_(7.0)
    ema_update_(teacher, student, 0.25)
    assert torch.allclose(teacher.weight, torch.full((2,), 2.5))  # 0.25 * 1 + 0.75 * 3
    assert torch.allclose(teacher.running_mean, torch.zeros(2))  # buffers are not averaged


def test_poly_decay_reference_offset_and_clamp():
    poly = PolyDecay(100, power=0.9)
    assert poly(0) == 1.0 and poly(1) == 1.0  # the first two steps use the base rate
    assert poly(2) == pytest.approx(0.99**0.9)
    assert poly(101) == 0.0
    assert poly(500) == 0.0  # past the end: no complex numbers
    assert PolyDecay(100, power=0.0)(50) == 1.0
    with pytest.raises(ValueError):
        PolyDecay(0)
