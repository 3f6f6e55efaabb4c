"""STLU-Net (Pattern Recognition 2026, semantic transfer) as a method object of the shared engine.

Per iteration: one encoder pass on ``[x_l; x_u]``; the D-stream (channel dropout) and the M-stream (labeled/unlabeled
similarity-weighted feature mixing) are decoded by the shared decoder; both streams get Dice against the labels
on the labeled rows and Dice against the other stream's argmax on the unlabeled rows;
``L = L_sup + gamma(t) L_unsup``. One network, no teacher, no hooks. Choices the paper leaves open are options
with ASSUMED defaults, listed in the table of ``bundles/stlu_la/docs/README.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..losses.stlu import stlu_dice_loss, stlu_gamma, stlu_losses, symmetric_supervised_dice_loss
from ..networks.stlu import STLUNet, parse_stlu_levels
from .base import Batch, SemiSupervisedMethod, as_label_map

__all__ = ["STLU", "STLUMethod"]

SUPERVISION_MODES = ("symmetric", "mix_only", "drop_only")


class STLU(SemiSupervisedMethod):
    """STLU-Net training objective on an :class:`~..networks.stlu.STLUNet` (:func:`~..losses.stlu.stlu_losses`).

    The stream options (``p_drop``, ``mix_levels``, ``dropout_levels``, ``mix_eps``, ``detach_weight`` and the
    ablation switches ``mix_strategy``, ``mix_lambda``, ``mix_placement``, ``joint_decoder``) belong to the network;
    given here (not None) they are checked against it, so a bundle keeps one value under ``method`` and references
    it from ``network_def``. Every other option is the method's own.

    Args:
        network: the STLU network (the evaluated network).
        gamma_max: maximum weight of the unsupervised loss (ASSUMED 1.0, MC-Net/ML ``consistency``).
        rampup_length: sigmoid ramp length in "epochs" of ``iters_per_epoch`` iterations (ASSUMED 40).
        iters_per_epoch: iterations per ramp epoch (ASSUMED 150, MC-Net's ``iter_num // 150``).
        gamma_iteration_offset: added to the engine's 0-based iteration before the ramp (ASSUMED 1: MC-Net
            increments its counter before computing the weight, so gamma = e^-5 at the first step).
        include_background: Dice also on class 0 (ASSUMED False: foreground classes, MC-Net's binary Dice).
        dice_eps: Dice smoothing (ASSUMED 1e-10, plain denominator).
        supervision: which stream(s) receive the pseudo-label loss: "symmetric" (paper, both), "mix_only" (the
            M-stream learns from the D-stream's argmax) or "drop_only" (the reverse); the asymmetric variants are
            the ablation's, their exact definition ASSUMED.
        p_drop, mix_levels, dropout_levels, mix_eps, detach_weight, mix_strategy, mix_lambda, mix_placement,
            joint_decoder: expected network settings (see above and :class:`~..networks.stlu.STLUNet`).

    ``compute_losses`` returns ``loss``, ``loss_sup``, ``loss_unsup``, ``gamma`` and ``w_level<k>`` (mean similarity
    weight over both kinds of rows) for every mixed level k.
    """

    def __init__(
        self,
        network: STLUNet,
        gamma_max: float = 1.0,
        rampup_length: float = 40.0,
        iters_per_epoch: int = 150,
        gamma_iteration_offset: int = 1,
        include_background: bool = False,
        dice_eps: float = 1e-10,
        supervision: str = "symmetric",
        p_drop: float | None = None,
        mix_levels=None,
        dropout_levels=None,
        mix_eps: float | None = None,
        detach_weight: bool | None = None,
        mix_strategy: str | None = None,
        mix_lambda: float | None = None,
        mix_placement: str | None = None,
        joint_decoder: bool | None = None,
    ) -> None:
        super().__init__({"network": network})
        if not callable(getattr(network, "forward_train", None)):
            raise TypeError(f"STLU needs a network with forward_train(x, n_labeled), got {type(network).__name__}")
        if supervision not in SUPERVISION_MODES:
            raise ValueError(f"supervision must be one of {SUPERVISION_MODES}, got {supervision!r}")
        expected = {
            "p_drop": p_drop,
            "mix_levels": None if mix_levels is None else parse_stlu_levels(mix_levels),
            "dropout_levels": None if dropout_levels is None else parse_stlu_levels(dropout_levels),
            "mix_eps": mix_eps,
            "detach_weight": detach_weight,
            "mix_strategy": mix_strategy,
            "mix_lambda": mix_lambda,
            "mix_placement": mix_placement,
            "joint_decoder": joint_decoder,
        }
        for name, value in expected.items():
            if value is not None and getattr(network, name, value) != value:
                raise ValueError(
                    f"STLU option {name}={value!r} differs from the network's {getattr(network, name)!r}; "
                    "set it in one place (network_def referencing the method's value)"
                )
        self.network = network
        self.gamma_max = float(gamma_max)
        self.rampup_length = float(rampup_length)
        self.iters_per_epoch = int(iters_per_epoch)
        self.gamma_iteration_offset = int(gamma_iteration_offset)
        self.include_background = include_background
        self.dice_eps = float(dice_eps)
        self.supervision = supervision

    def gamma(self, iteration: int) -> float:
        """gamma(t) for the engine's 0-based ``iteration`` (:func:`~..losses.stlu.stlu_gamma`)."""
        return stlu_gamma(
            iteration, self.gamma_max, self.rampup_length, self.iters_per_epoch, self.gamma_iteration_offset
        )

    def compute_losses(self, labeled: Batch, unlabeled: Batch | None, iteration: int) -> dict[str, Tensor]:
        image_l = labeled["image"]
        label_l = as_label_map(labeled["label"])
        n_l = image_l.shape[0]
        image = image_l if unlabeled is None else torch.cat([image_l, unlabeled["image"]])
        out = self.network.forward_train(image, n_l)
        gamma = self.gamma(iteration)
        if self.supervision == "symmetric":
            losses = stlu_losses(
                out["logits_d"], out["logits_m"], label_l, n_l, gamma, self.include_background, self.dice_eps
            )
            loss_sup, loss_unsup, total = losses["loss_sup"], losses["loss_unsup"], losses["loss_total"]
        else:
            loss_sup, loss_unsup = self._asymmetric_losses(out["logits_d"], out["logits_m"], label_l, n_l)
            total = loss_sup + gamma * loss_unsup
        result = {
            "loss": total,
            "loss_sup": loss_sup.detach(),
            "loss_unsup": loss_unsup.detach(),
            "gamma": torch.tensor(gamma),
        }
        for level, (w_l, w_u) in out["weights"].items():
            result[f"w_level{level}"] = torch.cat([w_l.detach().flatten(), w_u.detach().flatten()]).mean()
        return result

    def _asymmetric_losses(
        self, logits_d: Tensor, logits_m: Tensor, label_l: Tensor, n_l: int
    ) -> tuple[Tensor, Tensor]:
        """Supervised loss of both streams and the one-way pseudo-label loss of the ablation variants."""
        kwargs = {"include_background": self.include_background, "eps": self.dice_eps}
        loss_sup = symmetric_supervised_dice_loss(logits_d[:n_l], logits_m[:n_l], label_l, **kwargs)
        if logits_d.shape[0] == n_l:
            return loss_sup, loss_sup.new_zeros(())
        logits_d_u, logits_m_u = logits_d[n_l:], logits_m[n_l:]
        # the symmetric loss is Dice(P^d, argmax Z^m) + Dice(P^m, argmax Z^d); a one-way variant keeps one term
        if self.supervision == "mix_only":
            target = torch.argmax(logits_d_u, dim=1).detach()
            loss_unsup = stlu_dice_loss(torch.softmax(logits_m_u, dim=1), target, **kwargs)
        else:
            target = torch.argmax(logits_m_u, dim=1).detach()
            loss_unsup = stlu_dice_loss(torch.softmax(logits_d_u, dim=1), target, **kwargs)
        return loss_sup, loss_unsup


# Every method class is named after its method (``STLU``, ``CoraNet``, ...); ``STLUMethod`` is an alias of the same
# class, kept for callers that use that name.
STLUMethod = STLU
