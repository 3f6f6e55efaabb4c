"""ALHVR (Lei et al., ICCV 2025): adaptive learning of high-value regions, official-code semantics.

Two networks A (``network``, the evaluated one: the project reports net A's best-validation checkpoint, see
bundles/alhvr_acdc/docs/README.md) and B (``network_2``) of the same class, trained jointly from independent
initialisations. Each runs its encoder once and its decoder on clean and feature-perturbed maps
(``forward_train``). Per iteration (the paper's total loss with the official ramp):

* supervised: ``CE + Dice_code`` on the labeled rows' clean logits of each net;
* unlabeled rows: adaptive threshold γ from the perturbed confidences of both nets and the region partition
  Ω1 (no loss) / Ω2_a, Ω2_b (CG-CPCL, cross prototypes) / Ω3 (DTCT, dynamic-teacher MSE + masked entropies);
* ``L = Σ_x L_sup,x + λ(t) (L_dtct,x + L_ce,x + L_cos,x)``, λ(t) = ``consistency_weight(t, 0.1, 200, 150)``.

The step itself is :func:`~..losses.alhvr.alhvr_step_losses` (pure, on the four outputs of each net); the method
holds its hyper-parameters once (:class:`ALHVRSettings`, the step's keyword arguments), runs the networks in the
official order and logs the terms.

One backward pass; the engine's single SGD optimiser over both networks' parameters is equivalent to the official
two optimisers with identical settings (SGD is per-parameter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..losses.alhvr import (
    alhvr_adaptive_threshold,
    alhvr_confidence,
    alhvr_region_masks,
    alhvr_step_losses,
    alhvr_supervised_loss,
)
from .base import Batch, SemiSupervisedMethod, as_label_map, preserved_rng_states

__all__ = ["ALHVR", "ALHVRSettings", "REGION_CODES", "alhvr_region_map"]

# one uint8 code per region: 0 = Ω1 reliable/stable (no loss), 1 = Ω2_a (A learns from B), 2 = Ω2_b (B learns
# from A), 3 = Ω3 (DTCT)
REGION_CODES = {"omega1": 0, "omega2_a": 1, "omega2_b": 2, "omega3": 3}

# entries of alhvr_step_losses that are logged, under the method's names
_LOGGED = {
    "sup_a": "loss_sup_a",
    "sup_b": "loss_sup_b",
    "dtct_a": "loss_dtct_a",
    "dtct_b": "loss_dtct_b",
    "dtct_mse_a": "loss_dtct_mse_a",
    "dtct_mse_b": "loss_dtct_mse_b",
    "cgcpcl_ce_a": "loss_cgcpcl_ce_a",
    "cgcpcl_ce_b": "loss_cgcpcl_ce_b",
    "cgcpcl_cos_a": "loss_cgcpcl_cos_a",
    "cgcpcl_cos_b": "loss_cgcpcl_cos_b",
    "gamma": "gamma",
    "weight": "cons_weight",
}


def alhvr_region_map(omega1: Tensor, omega2_a: Tensor, omega2_b: Tensor, omega3: Tensor) -> Tensor:
    """One ``uint8`` map ``[U, *S]`` of the region partition (codes :data:`REGION_CODES`), detached, on the CPU.

    Raises ``ValueError`` if the masks do not partition the pixels (each pixel in exactly one region).
    """
    masks = [m.detach().to("cpu", torch.bool) for m in (omega1, omega2_a, omega2_b, omega3)]
    counts = sum(m.to(torch.uint8) for m in masks)
    if not bool((counts == 1).all()):
        raise ValueError("the region masks must partition the pixels (each pixel in exactly one region)")
    out = torch.zeros(masks[0].shape, dtype=torch.uint8)
    for mask, code in zip(masks, REGION_CODES.values(), strict=True):
        out[mask] = code
    return out


@dataclass(frozen=True)
class ALHVRSettings:
    """The hyper-parameters of one ALHVR step, named as :func:`~..losses.alhvr.alhvr_step_losses`'s arguments."""

    num_classes: int
    beta: float
    temperature: float
    consistency: float
    rampup_length: float
    scaler: float
    rampup_epoch_len: int
    cross_sample_mask: bool
    detach_teacher: bool
    detach_prototypes: bool


class ALHVR(SemiSupervisedMethod):
    """ALHVR on two networks with ``forward_train(x) -> (logits_clean, logits_pert, feat_clean, feat_pert)``.

    Args:
        network: net A, the evaluated/exported network (``@network``).
        network_2: net B, same class, independent initialisation (``@network_2``).
        num_classes: K, background included (4 ACDC, 2 BraTS).
        beta: proportion of lowest confidences averaged into γ (0.8 ACDC, 0.7 BraTS; official ``proportion``).
        temperature: DTCT sharpening temperature (0.1).
        consistency: maximum unsupervised weight (0.1).
        consistency_rampup: ramp length in "epochs" (200).
        rampup_epoch_len: iterations per ramp "epoch" (150; λ uses ``t // 150``).
        scaler: cosine-logit multiplier of CG-CPCL (1).
        cross_sample_mask: True = the official CE-mask broadcast; False = per-pixel masked mean.
        detach_teacher: stop the gradient through the DTCT teacher (official: False).
        detach_prototypes: stop the gradient through the prototypes (official: False).
        keep_regions: keep the last batch's region map (``uint8 [U, *S]``, codes of
            :data:`REGION_CODES`) in ``last_regions`` and γ in ``last_gamma`` for inspection.
    """

    def __init__(
        self,
        network: nn.Module,
        network_2: nn.Module,
        num_classes: int,
        beta: float = 0.8,
        temperature: float = 0.1,
        consistency: float = 0.1,
        consistency_rampup: float = 200.0,
        rampup_epoch_len: int = 150,
        scaler: float = 1.0,
        cross_sample_mask: bool = True,
        detach_teacher: bool = False,
        detach_prototypes: bool = False,
        keep_regions: bool = False,
    ) -> None:
        if network is network_2:
            raise ValueError("ALHVR needs two distinct networks (independent initialisations).")
        super().__init__({"network": network, "network_2": network_2})
        self.network = network
        self.network_2 = network_2
        self.settings = ALHVRSettings(
            num_classes,
            beta,
            temperature,
            consistency,
            consistency_rampup,  # the step's rampup_length
            scaler,
            rampup_epoch_len,
            cross_sample_mask,
            detach_teacher,
            detach_prototypes,
        )
        self.keep_regions = keep_regions
        self.last_regions: Tensor | None = None
        self.last_gamma: float | None = None

    def _supervised_only(self, labeled: Batch) -> dict[str, Tensor]:
        """Empty unlabeled stream: each net's supervised loss on its clean logits (both decoder passes still run,
        so BatchNorm sees what it sees in a normal step)."""
        label = as_label_map(labeled["label"])
        losses = {}
        for name, net in (("a", self.network), ("b", self.network_2)):
            logits_clean = net.forward_train(labeled["image"])[0]
            losses[name] = alhvr_supervised_loss(logits_clean, label, self.settings.num_classes)[2]
        total = losses["a"] + losses["b"]
        return {
            "loss": total,
            "loss_sup": total.detach(),
            "loss_sup_a": losses["a"].detach(),
            "loss_sup_b": losses["b"].detach(),
        }

    @torch.no_grad()
    def inspection_maps(self, image: Tensor) -> dict[str, Tensor]:
        """Region map (``"regions"``, ``uint8 [N, *S]``, codes of :data:`REGION_CODES`) of ``image``
        taken as an unlabeled batch: γ and the partition from both nets' perturbed confidences, as in a step.

        For inspection, not training: both nets run in eval mode (running BatchNorm statistics, no dropout, no
        statistics updated) and the random perturbation draws happen inside forked RNG states, so calling this
        between iterations changes nothing in the run.
        """
        modes = [net.training for net in (self.network, self.network_2)]
        self.network.eval()
        self.network_2.eval()
        try:
            with preserved_rng_states():
                conf = [alhvr_confidence(torch.softmax(net.forward_train(image)[1], dim=1))[0] for net in self.nets]
        finally:
            for net, mode in zip((self.network, self.network_2), modes, strict=True):
                net.train(mode)
        gamma = alhvr_adaptive_threshold(conf[0], conf[1], self.settings.beta)
        return {"regions": alhvr_region_map(*alhvr_region_masks(conf[0], conf[1], gamma))}

    @property
    def nets(self) -> tuple[nn.Module, nn.Module]:
        """Net A then net B, the official order."""
        return self.network, self.network_2

    def compute_losses(self, labeled: Batch, unlabeled: Batch | None, iteration: int) -> dict[str, Tensor]:
        if unlabeled is None:
            return self._supervised_only(labeled)
        n_labeled = labeled["image"].shape[0]
        image = torch.cat([labeled["image"], unlabeled["image"]])
        # net A first, then net B, as the official loop (the perturbation draws follow that order)
        out_a = self.network.forward_train(image)
        out_b = self.network_2.forward_train(image)
        label = as_label_map(labeled["label"])
        terms = alhvr_step_losses(out_a, out_b, label, n_labeled, iter_num=iteration, **vars(self.settings))
        if self.keep_regions:
            self.last_regions = alhvr_region_map(*(terms[key] for key in REGION_CODES))
            self.last_gamma = float(terms["gamma"])

        losses = {"loss": terms["loss"], "loss_sup": (terms["sup_a"] + terms["sup_b"]).detach()}
        losses.update({new: terms[old].detach().float() for old, new in _LOGGED.items()})
        num_pixels = terms["omega1"].numel()
        for key in REGION_CODES:  # fraction of the unlabeled pixels in each region
            losses[f"frac_{key}"] = terms[key].sum().float().detach() / num_pixels
        return losses
