"""Ramps, consistency weights, EMA and learning-rate schedules shared by every method and the engine.

A leaf module: it imports nothing from the rest of the package. Iterations are counted from 0 (the number of
optimiser steps completed before the current one), as in the reference training loops of SSL4MIS.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "sigmoid_rampup",
    "linear_rampup",
    "consistency_weight",
    "ema_warmup_decay",
    "ema_update_",
    "PolyDecay",
]


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Sigmoid-shaped ramp-up of Laine & Aila (2017): ``exp(-5 (1 - clip(current, 0, L) / L)^2)``.

    Returns 1.0 when ``rampup_length`` is 0 (no ramp).
    """
    if rampup_length == 0:
        return 1.0
    phase = 1.0 - float(np.clip(current, 0.0, rampup_length)) / rampup_length
    return float(np.exp(-5.0 * phase * phase))


def linear_rampup(current: float, rampup_length: float) -> float:
    """Linear ramp from 0 to 1 over ``rampup_length``; 1.0 when the length is 0."""
    if rampup_length == 0:
        return 1.0
    return float(np.clip(current / rampup_length, 0.0, 1.0))


def consistency_weight(iteration: int, max_weight: float, rampup_length: float, iters_per_epoch: int = 150) -> float:
    """Unsupervised-loss weight ``max_weight * sigmoid_rampup(iteration // iters_per_epoch, rampup_length)``.

    The reference code ramps over "epochs" of 150 iterations (SSL4MIS ``get_current_consistency_weight``).
    """
    return max_weight * sigmoid_rampup(iteration // iters_per_epoch, rampup_length)


def ema_warmup_decay(t: int, decay: float) -> float:
    """EMA decay with warm-up, ``min(1 - 1 / (t + 1), decay)``: the first update (t = 0) copies the student."""
    return min(1.0 - 1.0 / (t + 1), decay)


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """In place ``teacher = decay * teacher + (1 - decay) * student`` over parameters only.

    Buffers (BatchNorm running statistics) are deliberately not averaged: the reference teachers keep their
    own statistics from their own forward passes in train mode.
    """
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameter tensors, student {len(s_params)}")
    # the same two element-wise operations as ``t.mul_(decay).add_(s, alpha=1 - decay)`` per tensor (identical
    # results), issued as one multi-tensor call each instead of two Python-level calls per parameter
    torch._foreach_mul_(t_params, decay)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - decay)


class PolyDecay:
    """Learning-rate factor for ``torch.optim.lr_scheduler.LambdaLR``, stepped once per iteration.

    SSL4MIS sets ``lr = base * (1 - t / T) ** power`` after each step with ``t`` the counter before its
    increment, so the first two steps both use the base rate; ``delay=1`` reproduces that. ``power=0`` gives a
    constant rate (ALHVR, DyCON, MC-Net). Iterations past ``max_iterations`` keep the last factor instead of
    raising a negative number to a fractional power.
    """

    def __init__(self, max_iterations: int, power: float = 0.9, delay: int = 1) -> None:
        if max_iterations <= 0:
            raise ValueError(f"max_iterations must be positive, got {max_iterations}.")
        self.max_iterations = max_iterations
        self.power = power
        self.delay = delay

    def __call__(self, step: int) -> float:
        t = min(max(step - self.delay, 0), self.max_iterations)
        return (1.0 - t / self.max_iterations) ** self.power if self.power else 1.0


def epochs_for(max_iterations: int, epoch_length: int) -> int:
    """Number of engine epochs of ``epoch_length`` iterations that cover ``max_iterations``."""
    return max(1, math.ceil(max_iterations / epoch_length))
