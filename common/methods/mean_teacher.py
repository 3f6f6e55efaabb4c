"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) as implemented by SSL4MIS.

Reference: SSL4MIS ``code/train_mean_teacher_{2D,3D}.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..losses import softmax_mse
from ..schedules import consistency_weight, ema_update_, ema_warmup_decay
from .base import HOOK_OPTIMIZER_STEPPED, Batch, SemiSupervisedMethod, forward_train, gaussian_noise


class MeanTeacher(SemiSupervisedMethod):
    """Student trained on labels plus a consistency term towards an EMA teacher.

    Per iteration: the student sees the labeled and unlabeled images in one batch (BatchNorm statistics of the
    joint batch, as in the reference); the teacher, in train mode and without gradient, sees the unlabeled
    images plus clamped Gaussian noise; consistency = mean squared difference of the two softmax maps over
    all unlabeled elements; total = supervised + lambda(t) * consistency; after the optimiser step the
    teacher's parameters follow the student's by EMA with warm-up decay ``min(1 - 1/(t+1), ema_decay)``.

    Args:
        network: the student (the evaluated network).
        teacher: a network of the same architecture; its initial weights do not matter (the first EMA update
            copies the student).
        supervised_loss: callable of ``(logits, label (N, 1, *S))``.
        consistency: maximum consistency weight (0.1).
        consistency_rampup: ramp length in "epochs" of ``iters_per_epoch`` iterations (200 in SSL4MIS, 40 in
            the LA line).
        iters_per_epoch: iterations per ramp "epoch" (150, the reference's ``iter_num // 150``).
        ema_decay: upper bound of the EMA decay (0.99).
        noise_std, noise_clip: teacher input noise ``clamp(N(0, std^2), -clip, clip)`` (0.1, 0.2).
        consistency_start_iteration: iterations during which the consistency term is forced to 0; the SSL4MIS
            2D script uses 1000 (a quirk of ``train_mean_teacher_2D.py``), its 3D script 0.
    """

    def __init__(
        self,
        network: nn.Module,
        teacher: nn.Module,
        supervised_loss: Callable[[Tensor, Tensor], Tensor],
        consistency: float = 0.1,
        consistency_rampup: float = 200.0,
        iters_per_epoch: int = 150,
        ema_decay: float = 0.99,
        noise_std: float = 0.1,
        noise_clip: float = 0.2,
        consistency_start_iteration: int = 0,
    ) -> None:
        super().__init__({"network": network, "teacher": teacher})
        self.network = network
        self.teacher = teacher
        for param in teacher.parameters():
            param.requires_grad_(False)
        self.supervised_loss = supervised_loss
        self.consistency = consistency
        self.consistency_rampup = consistency_rampup
        self.iters_per_epoch = iters_per_epoch
        self.ema_decay = ema_decay
        self.noise_std = noise_std
        self.noise_clip = noise_clip
        self.consistency_start_iteration = consistency_start_iteration

    def compute_losses(self, labeled: Batch, unlabeled: Batch | None, iteration: int) -> dict[str, Tensor]:
        if unlabeled is None:
            logits_l = forward_train(self.network, labeled["image"])
            loss_sup = self.supervised_loss(logits_l, labeled["label"])
            return {"loss": loss_sup, "loss_sup": loss_sup.detach()}

        n_labeled = labeled["image"].shape[0]
        logits = forward_train(self.network, torch.cat([labeled["image"], unlabeled["image"]]))
        logits_l, logits_u = logits[:n_labeled], logits[n_labeled:]
        loss_sup = self.supervised_loss(logits_l, labeled["label"])

        with torch.no_grad():
            noisy = unlabeled["image"] + gaussian_noise(unlabeled["image"], self.noise_std, self.noise_clip)
            teacher_logits = forward_train(self.teacher, noisy)
        loss_cons = softmax_mse(logits_u, teacher_logits).mean()
        if iteration < self.consistency_start_iteration:
            loss_cons = loss_cons * 0.0
        weight = consistency_weight(iteration, self.consistency, self.consistency_rampup, self.iters_per_epoch)
        total = loss_sup + weight * loss_cons
        return {
            "loss": total,
            "loss_sup": loss_sup.detach(),
            "loss_cons": loss_cons.detach(),
            "cons_weight": torch.tensor(weight),
        }

    def update_teacher(self, iteration: int) -> None:
        """EMA step after the optimiser step of ``iteration`` (0-based)."""
        ema_update_(self.teacher, self.network, ema_warmup_decay(iteration, self.ema_decay))

    def hooks(self):
        return {HOOK_OPTIMIZER_STEPPED: self.update_teacher}
