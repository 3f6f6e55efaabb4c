"""Cross pseudo supervision (Chen et al., CVPR 2021) as implemented by SSL4MIS.

Reference: SSL4MIS ``code/train_cross_pseudo_supervision_{2D,3D}.py``; the reference-code details kept and their
switches are listed in ``bundles/cps_la/docs/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..losses.cps import cps_loss
from ..schedules import consistency_weight
from .base import Batch, SemiSupervisedMethod, forward_train

CPS_INITS = ("default", "kaiming_xavier")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # not transposed convolutions, as the reference's isinstance checks
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def init_conv_weights_(network: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise in place the weights of ``network``'s convolutions (``"kaiming"`` or ``"xavier"`` normal).

    As the SSL4MIS 3D CPS script's init helpers: conv weights drawn from Kaiming-normal (fan-in, ReLU gain) or
    Xavier-normal, conv biases untouched, BatchNorm weight 1 and bias 0; transposed convolutions keep their
    PyTorch default (the reference's ``isinstance(m, nn.Conv3d)`` does not match them).
    """
    for module in network.modules():
        if isinstance(module, _CONVS):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(module.weight)
            elif scheme == "xavier":
                nn.init.xavier_normal_(module.weight)
            else:
                raise ValueError(f"Unknown conv init scheme {scheme!r}; expected 'kaiming' or 'xavier'.")
        elif isinstance(module, _NORMS) and module.affine:
            module.weight.fill_(1.0)
            module.bias.zero_()
    return network


class CPS(SemiSupervisedMethod):
    """Two networks of the same architecture, each supervised by the other's hard pseudo-labels (SSL4MIS CPS).

    Per iteration both networks see the same batch, the labeled and unlabeled images concatenated (so BatchNorm
    statistics are those of the joint batch, as in the reference). For ``k`` in {1, 2}:
    ``loss_k = supervised(logits_k on labeled) + lambda(t) * CE(logits_k on unlabeled, argmax of the other
    network's detached softmax)``, ``lambda(t) = consistency * sigmoid_rampup(t // iters_per_epoch, rampup)``
    (SSL4MIS re-uses its consistency weight 0.1 / 200 here; the CPS paper's 1.5 is not used). The total
    ``loss_1 + loss_2`` is stepped by one optimiser over both networks' parameters, which equals the reference's
    two SGD optimisers with the same settings (each parameter gets only its own network's gradient).

    ``network`` (network 1) is the evaluated and exported network; ``network_2`` only trains alongside it.

    Args:
        network: network 1, the evaluated one.
        network_2: network 2, same architecture.
        supervised_loss: callable of ``(logits, label (N, 1, *S))``.
        consistency: maximum CPS weight (0.1).
        consistency_rampup: ramp length in "epochs" of ``iters_per_epoch`` iterations (200).
        iters_per_epoch: iterations per ramp "epoch" (150).
        init: ``"default"`` keeps the networks' own initialisation (SSL4MIS 2D script: its init helpers are
            defined but not called); ``"kaiming_xavier"`` re-initialises network 1 Kaiming-normal and network 2
            Xavier-normal on conv weights (SSL4MIS 3D script). Applied once, here, in place.
    """

    def __init__(
        self,
        network: nn.Module,
        network_2: nn.Module,
        supervised_loss: Callable[[Tensor, Tensor], Tensor],
        consistency: float = 0.1,
        consistency_rampup: float = 200.0,
        iters_per_epoch: int = 150,
        init: str = "default",
    ) -> None:
        if network is network_2:
            raise ValueError("CPS needs two distinct networks; network and network_2 are the same object.")
        if init not in CPS_INITS:
            raise ValueError(f"Unknown CPS init {init!r}; expected one of {CPS_INITS}.")
        super().__init__({"network": network, "network_2": network_2})
        self.network = network
        self.network_2 = network_2
        self.supervised_loss = supervised_loss
        self.consistency = consistency
        self.consistency_rampup = consistency_rampup
        self.iters_per_epoch = iters_per_epoch
        self.init = init
        if init == "kaiming_xavier":
            init_conv_weights_(network, "kaiming")
            init_conv_weights_(network_2, "xavier")

    def compute_losses(self, labeled: Batch, unlabeled: Batch | None, iteration: int) -> dict[str, Tensor]:
        n_labeled = labeled["image"].shape[0]
        images = labeled["image"] if unlabeled is None else torch.cat([labeled["image"], unlabeled["image"]])
        logits_1 = forward_train(self.network, images)
        logits_2 = forward_train(self.network_2, images)
        loss_sup_1 = self.supervised_loss(logits_1[:n_labeled], labeled["label"])
        loss_sup_2 = self.supervised_loss(logits_2[:n_labeled], labeled["label"])
        losses = {
            "loss_sup": (loss_sup_1 + loss_sup_2).detach(),
            "loss_sup_1": loss_sup_1.detach(),
            "loss_sup_2": loss_sup_2.detach(),
        }
        if unlabeled is None:  # no unlabeled stream: both networks train their supervised part only
            return {"loss": loss_sup_1 + loss_sup_2, **losses}

        loss_cps_1 = cps_loss(logits_1[n_labeled:], logits_2[n_labeled:])
        loss_cps_2 = cps_loss(logits_2[n_labeled:], logits_1[n_labeled:])
        weight = consistency_weight(iteration, self.consistency, self.consistency_rampup, self.iters_per_epoch)
        total = (loss_sup_1 + weight * loss_cps_1) + (loss_sup_2 + weight * loss_cps_2)
        return {
            "loss": total,
            **losses,
            "loss_cps_1": loss_cps_1.detach(),
            "loss_cps_2": loss_cps_2.detach(),
            "cps_weight": torch.tensor(weight),
        }
