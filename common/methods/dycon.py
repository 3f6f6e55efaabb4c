"""DyCON (Assefa et al., CVPR 2025): Mean Teacher with UnCL and FeCL on the shared engine."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from ..losses.dycon import DyCONLossConfig, adaptive_beta, dycon_step_losses, dycon_supervised_loss, threshold_rampup
from ..schedules import ema_update_, ema_warmup_decay
from .base import HOOK_OPTIMIZER_STEPPED, Batch, SemiSupervisedMethod, as_label_map, forward_train, gaussian_noise

__all__ = ["DyCON"]

logger = logging.getLogger(__name__)


class DyCON(SemiSupervisedMethod):
    """DyCON: a Mean Teacher whose student also learns from UnCL and FeCL.

    Per iteration (the official training loop): the student (``forward_train`` -> ``(aux, logits, emb)``) sees the
    labeled and unlabeled images as ONE batch (labeled rows first); the teacher, in train mode and without
    gradient, sees the same batch plus ``clamp(N(0, noise_std^2), +-noise_clip)``. Losses
    (:func:`~..losses.dycon.dycon_step_losses`, with the method's :class:`~..losses.dycon.DyCONLossConfig` as
    ``cfg``):
    ``L = l_weight (CE + Dice)[labeled] + w_c(t) MSE[unlabeled] + u_weight (FeCL[fecl_part] + UnCL[all rows])``
    with ``w_c(t) = consistency * sigmoid_rampup(t // consistency_iters_per_unit, consistency_rampup)``.
    After each optimiser step (the "optimizer_stepped" hook) the teacher's parameters follow the student's by
    EMA with decay ``min(1 - 1/(t+1), ema_decay)`` (parameters only; the teacher's BatchNorm statistics come from
    its own forwards). The teacher starts as a copy of the student (equivalent to the official independent init
    after the first update; bundles/dycon_la/docs/README.md, "Decisions"). Gradient-norm clipping (1.0) is the
    engine's ``clip_grad_norm``.

    Epoch-based schedules, converted to iterations: the official code counts epochs as passes over the labeled set,
    ``ipe = floor(n_labeled / labeled_bs)`` iterations each (``iters_per_epoch`` here). At 0-based iteration ``t``
    the epoch is ``e = t // iters_per_epoch`` and the number of epochs is
    ``E_max = max_iterations // iters_per_epoch + 1``. Then
    * UnCL ``beta(t) = adaptive_beta(e, E_max, beta_max, beta_min)`` (constant within an epoch), or ``static_beta``;
    * the FeCL teacher hard-negative threshold ``threshold_rampup(e, fecl_rampup_epochs, 0.3, 0.5)`` ramps over
      ``fecl_rampup_epochs * iters_per_epoch`` iterations (LA with 4 labeled, batch 4 + 4: 1500 iterations;
      Pancreas 12 labeled: 4500; BraTS 25 labeled: 9000; ISLES 10 labeled: 3000).
    The MT-MSE ramp counts units of ``consistency_iters_per_unit`` (150) iterations, independent of ``ipe``.

    FeCL labels of the unlabeled rows (bundles/dycon_la/docs/README.md, "Decisions"): ``fecl_label_source="teacher"``
    (default) uses the teacher's argmax of the same step. ``"ground_truth"`` is the official behaviour: it reads the
    labels of the "unlabeled" volumes, a label leak that breaks the semi-supervised protocol, so it is a
    parity/diagnosis option only and must never produce reported numbers. The engine never hands labels of unlabeled
    images to a method (the data contract removes them before any transform), so in that mode ``compute_losses`` uses a
    ``"label"`` entry of the unlabeled batch when one is present (direct calls, diagnostics) and otherwise raises a
    ``ValueError`` saying why; with this project's engine and bundles it therefore cannot run.

    A non-finite total loss is not skipped here (the official loop skips the step); the engine raises instead.

    Args:
        network: the student (evaluated network), a DyConUNet3D or DyConVNet.
        teacher: a network of the same architecture (its weights are overwritten by the student's).
        max_iterations: training length ``T_max`` (sets ``E_max``).
        iters_per_epoch: official epoch length ``ipe = max(1, num_labeled // labeled_batch_size)``.
        beta_max, beta_min: UnCL beta schedule end points (5.0, 0.5); static_beta: fixed beta (ablation) or None.
        ema_decay: EMA decay bound (0.99). noise_std, noise_clip: teacher input noise (0.1, 0.2).
        **loss_settings: fields of :class:`~..losses.dycon.DyCONLossConfig`, held once in ``loss_config`` and
            passed as the step's ``cfg``: ``l_weight``, ``u_weight`` (1.0, 0.5); the MT-MSE ramp ``consistency``,
            ``consistency_rampup``, ``consistency_iters_per_unit`` (0.1, 200, 150); FeCL's ``temperature``,
            ``gamma``, ``use_focal``, ``use_teacher_hn``, ``fecl_rampup_epochs``, ``lambda_cross``,
            ``use_entropy_weights`` (0.6, 2.0, True, True, 1500, 1.0, False); ``mask_factor`` (8), ``mask_mode``
            ("trilinear"), ``fecl_part`` ("unlabeled"), ``fecl_label_source`` ("teacher"; see above).
    """

    def __init__(
        self,
        network: nn.Module,
        teacher: nn.Module,
        max_iterations: int,
        iters_per_epoch: int = 1,
        beta_max: float = 5.0,
        beta_min: float = 0.5,
        static_beta: float | None = None,
        ema_decay: float = 0.99,
        noise_std: float = 0.1,
        noise_clip: float = 0.2,
        **loss_settings: Any,
    ) -> None:
        super().__init__({"network": network, "teacher": teacher})
        if iters_per_epoch < 1 or max_iterations < 1:
            raise ValueError(f"iters_per_epoch and max_iterations must be >= 1, got {iters_per_epoch}/{max_iterations}")
        self.loss_config = DyCONLossConfig(**loss_settings)
        if self.loss_config.fecl_label_source == "ground_truth":
            logger.warning(
                "DyCON fecl_label_source='ground_truth' reads the labels of unlabeled volumes (the official code's "
                "label leak): parity/diagnosis only, never for reported results."
            )
        self.network = network
        self.teacher = teacher
        # start the teacher as a copy of the student (unwrapping a DistributedDataParallel student)
        teacher.load_state_dict(getattr(network, "module", network).state_dict())
        for param in teacher.parameters():
            param.requires_grad_(False)
        self.max_iterations = int(max_iterations)
        self.iters_per_epoch = int(iters_per_epoch)
        self.total_epochs = self.max_iterations // self.iters_per_epoch + 1
        self.beta_max = beta_max
        self.beta_min = beta_min
        self.static_beta = static_beta
        self.ema_decay = ema_decay
        self.noise_std = noise_std
        self.noise_clip = noise_clip

    @property
    def reads_unlabeled_labels(self) -> bool:
        """The official FeCL mode reads the unlabeled batch's labels (a leak, paper-protocol reproduction only)."""
        return self.loss_config.fecl_label_source == "ground_truth"

    def epoch(self, iteration: int) -> int:
        """Official epoch index of 0-based ``iteration``: ``iteration // iters_per_epoch``."""
        return iteration // self.iters_per_epoch

    def beta(self, iteration: int) -> float:
        """UnCL beta at ``iteration``: ``static_beta`` if set, else ``adaptive_beta(epoch, E_max)``."""
        if self.static_beta is not None:
            return float(self.static_beta)
        return adaptive_beta(self.epoch(iteration), self.total_epochs, self.beta_max, self.beta_min)

    def fecl_threshold(self, iteration: int) -> float:
        """Teacher hard-negative cosine threshold at ``iteration`` (0.3 -> 0.5 over ``fecl_rampup_epochs``)."""
        return threshold_rampup(self.epoch(iteration), self.loss_config.fecl_rampup_epochs, 0.3, 0.5)

    def _unlabeled_labels(self, unlabeled: Batch, like: Tensor) -> Tensor:
        """Label rows for the unlabeled images: zeros (never read) or, in the leak mode, their ground truth."""
        if self.loss_config.fecl_label_source != "ground_truth":
            return torch.zeros_like(like[:, 0], dtype=torch.long)
        if "label" not in unlabeled:
            raise ValueError(
                "DyCON fecl_label_source='ground_truth' needs the labels of the unlabeled images, but the unlabeled "
                "batch has none: the data contract removes them unless the datalists keep them "
                "(keep_unlabeled_labels, set by the bundle's configs/paper_protocol.json)."
            )
        return as_label_map(unlabeled["label"])

    def compute_losses(self, labeled: Batch, unlabeled: Batch | None, iteration: int) -> dict[str, Tensor]:
        if unlabeled is None:  # no unlabeled stream (none, or empty with allow_supervised_only): supervised part
            _, logits, _ = forward_train(self.network, labeled["image"])
            ce, dice = dycon_supervised_loss(logits, as_label_map(labeled["label"]))
            loss = self.loss_config.l_weight * (ce + dice)
            sup = (ce + dice).detach()
            return {"loss": loss, "loss_sup": sup, "loss_seg": ce.detach(), "loss_seg_dice": dice.detach()}

        n_labeled = labeled["image"].shape[0]
        images = torch.cat([labeled["image"], unlabeled["image"]])
        labels = torch.cat([as_label_map(labeled["label"]), self._unlabeled_labels(unlabeled, unlabeled["image"])])
        _, stud_logits, stud_features = forward_train(self.network, images)
        with torch.no_grad():
            noisy = images + gaussian_noise(images, self.noise_std, self.noise_clip)
            _, ema_logits, ema_features = forward_train(self.teacher, noisy)

        beta = self.beta(iteration)
        # losses in float32 even under AMP: FeCL's 1e-18 guards vanish in float16
        with torch.autocast(device_type=images.device.type, enabled=False):
            out = dycon_step_losses(
                _as_float(stud_logits),
                _as_float(ema_logits),
                _as_float(stud_features),
                _as_float(ema_features),
                labels,
                n_labeled,
                iteration,
                self.epoch(iteration),
                beta,
                self.loss_config,
            )
        sup = out["loss_seg"] + out["loss_seg_dice"]
        return {
            "loss": out["loss"],
            "loss_sup": sup.detach(),
            "loss_seg": out["loss_seg"].detach(),
            "loss_seg_dice": out["loss_seg_dice"].detach(),
            "consistency_loss": out["consistency_loss"].detach(),
            "consistency_weight": torch.tensor(out["consistency_weight"]),
            "f_loss": out["f_loss"].detach(),
            "u_loss": out["u_loss"].detach(),
            "beta": torch.tensor(beta),
        }

    def update_teacher(self, iteration: int) -> None:
        """EMA step after the optimiser step of ``iteration`` (0-based): decay ``min(1 - 1/(t+1), ema_decay)``."""
        ema_update_(self.teacher, self.network, ema_warmup_decay(iteration, self.ema_decay))

    def hooks(self):
        return {HOOK_OPTIMIZER_STEPPED: self.update_teacher}


def _as_float(x: Tensor) -> Tensor:
    """Half-precision tensors (AMP) as float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
