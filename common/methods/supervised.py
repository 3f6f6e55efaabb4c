"""Supervised-only baseline: the labeled stream alone (SSL4MIS ``code/train_fully_supervised_{2D,3D}.py``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .base import Batch, SemiSupervisedMethod, forward_train


class Supervised(SemiSupervisedMethod):
    """Trains ``network`` with ``supervised_loss(logits, label)`` on the labeled batch; ignores unlabeled data.

    Args:
        network: the segmentation network.
        supervised_loss: callable of ``(logits (N, C, *S), label (N, 1, *S))``, e.g. MONAI ``DiceCELoss``
            configured as SSL4MIS's ``0.5 * (CE + Dice)``.
    """

    requires_unlabeled = False

    def __init__(self, network: nn.Module, supervised_loss: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__({"network": network})
        self.network = network
        self.supervised_loss = supervised_loss

    def compute_losses(self, labeled: Batch, unlabeled: Batch | None, iteration: int) -> dict[str, Tensor]:
        logits = forward_train(self.network, labeled["image"])
        loss_sup = self.supervised_loss(logits, labeled["label"])
        return {"loss": loss_sup, "loss_sup": loss_sup.detach()}
