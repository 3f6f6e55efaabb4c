"""CoraNet (Shi et al., IEEE TMI 2021, "Inconsistency-aware uncertainty estimation for semi-supervised medical image
segmentation"): conservative-radical heads, certain-region self-training and uncertain-region mean teacher.

Follows the official code (koncle/CoraNet ``train_ST_3D_VNet.py``) where it and the paper differ; the differences
are listed in ``bundles/coranet_pancreas/docs/README.md`` ("Code vs paper").
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..losses.coranet import (
    CERTAIN_AUX_WEIGHTS,
    coranet_certain_loss,
    coranet_pseudo_labels,
    coranet_supervised_loss,
    coranet_total_loss,
    coranet_uncertain_loss,
    cost_weight_vectors,
)
from ..schedules import consistency_weight, ema_update_
from .base import HOOK_ITERATION_STARTED, HOOK_OPTIMIZER_STEPPED, Batch, SemiSupervisedMethod, as_label_map

__all__ = ["CoraNet"]

logger = logging.getLogger(__name__)


def _unwrap(network: nn.Module) -> nn.Module:
    """The module inside a DataParallel/DistributedDataParallel wrapper (the network itself otherwise)."""
    return getattr(network, "module", network)


def _heads(network: nn.Module, image: Tensor) -> Any:
    """All heads' logits (``forward_train``): a :class:`~common.networks.coranet.CoraOutput`."""
    out = network.forward_train(image) if hasattr(network, "forward_train") else network(image)
    for name in ("main", "rad", "cons"):
        if not hasattr(out, name):
            raise TypeError(
                "CoraNet needs a three-head network whose forward_train returns CoraOutput(main, rad, cons) "
                f"(common.networks.coranet.VNet3D / MultiHeadSegNet), got {type(out).__name__}"
            )
    return out


_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


@contextlib.contextmanager
def _dropout_off(network: nn.Module) -> Iterator[None]:
    """Dropout layers of ``network`` in eval mode inside the block (everything else keeps its mode), then restored.

    The official teacher (koncle/CoraNet ``train_ST_3D_VNet.py``) runs in train mode, but its 3D V-Net has no dropout,
    so it sees no noise; the project's 2D trunk has dropout 0.05-0.5, which train mode would turn into teacher noise.
    """
    layers = [m for m in network.modules() if isinstance(m, _DROPOUT) and m.training]
    for layer in layers:
        layer.eval()
    try:
        yield
    finally:
        for layer in layers:
            layer.train()


class CoraNet(SemiSupervisedMethod):
    """CoraNet on the shared engine: supervised pretraining, then self-training with an EMA teacher.

    **Stage 1** (``iteration < pretrain_iterations``; official ``pretrain``): labeled batch only,
    ``loss = L_sup = (CE(main) + Dice(main) + CE_w(rad; w_rad) + CE_w(cons; w_cons)) / 4``. The unlabeled
    batch the engine draws is ignored.

    **Stage 2** (from ``pretrain_iterations`` on; official ``self_train``): per iteration, with
    ``t = iteration - pretrain_iterations``

    1. student heads on the labeled batch -> ``L_sup``; student heads on the unlabeled batch (a separate forward,
       as the official code: BatchNorm sees each batch alone);
    2. the frozen snapshot (below, eval mode, no gradient) on the same unlabeled batch ->
       ``plab = hard_pred(main)``, ``certain = [hard_pred(cons) == hard_pred(rad)]`` (official ``pred_unlabel``);
    3. ``L_certain`` = C-SN loss on ``certain`` with ``plab`` (``certain_aux_weights``, default "swapped" = code);
    4. the EMA teacher (train mode with its dropout layers off, no noise, no gradient) on the same unlabeled batch;
       ``L_uncertain = mean_h lambda(t) * masked_softmax_mse(student_h, teacher_h, ~certain)`` over the three heads,
       ``lambda(t) = consistency * sigmoid_rampup(t // iters_per_epoch, consistency_rampup)``;
    5. ``loss = L_sup + unsup_weight * (L_certain + L_uncertain)``; one optimiser step; then (hook
       ``optimizer_stepped``) ``teacher <- ema_decay * teacher + (1 - ema_decay) * student`` (constant decay,
       parameters only).

    **Hooks** (ignite event handlers on the shared engine; no second loop):

    * ``iteration_started(t)``: at ``t == pretrain_iterations`` the stage switch -- the teacher and the snapshot are
      set to the pretrained student (the official code reloads the same checkpoint into both networks; the
      optimiser state carries over); afterwards every ``refresh_every`` iterations the snapshot is refreshed
      from the current student.
    * ``optimizer_stepped(t)``: the EMA update, stage 2 only.

    **Pseudo-label refresh = a frozen snapshot.** The official code re-predicts ``(plab, certain)`` for every
    unlabeled volume at the start of every 5th self-training epoch with the current student and reuses those
    maps unchanged until the next refresh. This engine streams random batches (and may crop or augment them), so
    no per-sample cache can be kept aligned with the images. Instead a frozen copy of the student -- the snapshot,
    taken at the same moments -- computes ``(plab, certain)`` on the fly for each unlabeled batch. Equivalence:
    for the same unlabeled input the snapshot yields exactly the maps the official cache would hold (same weights,
    same input; instance norm is per sample, BatchNorm runs in eval mode), so with the official fixed, unaugmented
    centre crop of each unlabeled volume (the Pancreas bundle) the two agree. Differences: (a) with random crops or
    augmentation the maps are computed on the view the student sees -- always aligned, where a cache would be
    computed once on an un-augmented view -- so the "stale up to ``refresh_every`` iterations" property refers to
    the weights, not to a fixed set of maps; (b) one extra no-gradient forward per iteration instead of one pass
    over the unlabeled set per refresh; (c) the official log of the pseudo-labels' Dice against the unlabeled
    ground truth is not available (the engine's unlabeled batches carry no labels).

    **Epochs to iterations** (official 3D schedule of ``train_ST_3D_VNet.py``): stage 1 = 60 epochs x 8 iterations whose
    checkpoint after 59 epochs is used -> ``pretrain_iterations = 472``; stage 2 = 201 epochs x 6 iterations =
    1,206 iterations; refresh every 5 epochs -> ``refresh_every = 30``; the consistency ramp counts self-training
    epochs -> ``iters_per_epoch = 6``, ``consistency_rampup = 40`` (epochs). The 2D settings are already in
    iterations (``iters_per_epoch = 1``, ramp 4,000, refresh 500, pretrain 10,000).

    **Checkpointing**: :meth:`state_dict` / :meth:`load_state_dict` hold the snapshot and the iteration it was
    taken at, so a run resumed from a checkpoint whose ``save_dict`` includes the method continues exactly.

    Args:
        network: the student, a three-head network (``forward_train`` -> ``CoraOutput``); the evaluated network.
        teacher: same architecture; overwritten by the student's weights at the stage switch.
        num_classes: classes C (cost vectors ``w_cons = [a, 1, ...]``, ``w_rad = [1, a, ...]``).
        alpha: misclassification cost a (5).
        pretrain_iterations: length of stage 1 in iterations (0 = self-train from the start).
        refresh_every: iterations between snapshot refreshes in stage 2.
        ema_decay: constant EMA decay of the teacher (0.99).
        consistency: maximum weight of the uncertain-region consistency (0.1).
        consistency_rampup: ramp length in "epochs" of ``iters_per_epoch`` self-training iterations (0 = no ramp).
        iters_per_epoch: iterations per ramp epoch (3D official: 6; 2D: 1).
        unsup_weight: weight of ``L_certain + L_uncertain`` (0.5).
        certain_aux_weights: "swapped" (code), "same" or "none" (see ``losses/coranet.py``, ``CERTAIN_AUX_WEIGHTS``).
        threshold: foreground probability threshold of the binary hard predictions (0.5).
        snapshot: optional module of the same architecture to hold the snapshot (a deep copy of the student
            otherwise).
        snapshot_eval: run the snapshot in eval mode (True: BatchNorm networks then predict with their running
            statistics; the official instance-norm V-Net computes the same in both modes).
        teacher_dropout: run the teacher's dropout layers (False, default: the teacher sees no noise, as the
            official teacher, whose V-Net has no dropout; True: the project's earlier behaviour, train-mode dropout).
        keep_masks: keep the last stage-2 batch's ``uncertain`` mask (``last_uncertain``, bool ``(N, *S)`` on the
            CPU) and pseudo-labels (``last_pseudo_labels``) (``save_uncertainty_masks``).
    """

    def __init__(
        self,
        network: nn.Module,
        teacher: nn.Module,
        num_classes: int = 2,
        alpha: float = 5.0,
        pretrain_iterations: int = 472,
        refresh_every: int = 30,
        ema_decay: float = 0.99,
        consistency: float = 0.1,
        consistency_rampup: float = 40.0,
        iters_per_epoch: int = 6,
        unsup_weight: float = 0.5,
        certain_aux_weights: str = "swapped",
        threshold: float = 0.5,
        snapshot: nn.Module | None = None,
        snapshot_eval: bool = True,
        keep_masks: bool = False,
        teacher_dropout: bool = False,
    ) -> None:
        super().__init__({"network": network, "teacher": teacher})
        if pretrain_iterations < 0 or refresh_every < 1 or iters_per_epoch < 1:
            raise ValueError(
                "need pretrain_iterations >= 0, refresh_every >= 1 and iters_per_epoch >= 1, got "
                f"{pretrain_iterations}, {refresh_every}, {iters_per_epoch}"
            )
        if certain_aux_weights not in CERTAIN_AUX_WEIGHTS:
            raise ValueError(f"certain_aux_weights must be one of {CERTAIN_AUX_WEIGHTS}, got {certain_aux_weights!r}")
        self.network = network
        self.teacher = teacher
        for param in teacher.parameters():
            param.requires_grad_(False)
        # The snapshot is not in ``modules``: the engine's ``train()`` must not switch it to train mode.
        self.snapshot = copy.deepcopy(_unwrap(network)) if snapshot is None else snapshot
        for param in self.snapshot.parameters():
            param.requires_grad_(False)
        self.snapshot_iteration = -1  # iteration whose start the snapshot was taken at (-1: not yet)
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.w_cons, self.w_rad = cost_weight_vectors(self.num_classes, self.alpha)
        self.pretrain_iterations = int(pretrain_iterations)
        self.refresh_every = int(refresh_every)
        self.ema_decay = float(ema_decay)
        self.consistency = float(consistency)
        self.consistency_rampup = float(consistency_rampup)
        self.iters_per_epoch = int(iters_per_epoch)
        self.unsup_weight = float(unsup_weight)
        self.certain_aux_weights = certain_aux_weights
        self.threshold = float(threshold)
        self.snapshot_eval = bool(snapshot_eval)
        self.keep_masks = bool(keep_masks)
        self.teacher_dropout = bool(teacher_dropout)
        self.last_uncertain: Tensor | None = None
        self.last_pseudo_labels: Tensor | None = None

    # ---- schedule -------------------------------------------------------------------------------------------

    def in_self_training(self, iteration: int) -> bool:
        """Whether ``iteration`` (0-based) belongs to stage 2."""
        return iteration >= self.pretrain_iterations

    def consistency_weight(self, iteration: int) -> float:
        """``lambda`` of the uncertain-region term at ``iteration`` (official ramp over epochs; 0 in stage 1)."""
        if not self.in_self_training(iteration):
            return 0.0
        return consistency_weight(
            iteration - self.pretrain_iterations, self.consistency, self.consistency_rampup, self.iters_per_epoch
        )

    @torch.no_grad()
    def refresh_snapshot(self, iteration: int) -> None:
        """Copy the student's current weights (and buffers) into the snapshot."""
        self.snapshot.load_state_dict(_unwrap(self.network).state_dict())
        self.snapshot_iteration = int(iteration)
        logger.debug("CoraNet: pseudo-label snapshot refreshed at iteration %d", iteration)

    @torch.no_grad()
    def start_self_training(self, iteration: int) -> None:
        """Stage switch: teacher and snapshot <- the pretrained student (official ``load_net_opt`` of both nets)."""
        self.teacher.load_state_dict(_unwrap(self.network).state_dict())
        self.refresh_snapshot(iteration)
        logger.info("CoraNet: self-training starts at iteration %d (teacher and snapshot = student)", iteration)

    def on_iteration_started(self, iteration: int) -> None:
        """Hook: the stage switch at ``pretrain_iterations``, then a snapshot refresh every ``refresh_every``."""
        if not self.in_self_training(iteration):
            return
        if iteration == self.pretrain_iterations or self.snapshot_iteration < self.pretrain_iterations:
            self.start_self_training(iteration)
        elif (iteration - self.pretrain_iterations) % self.refresh_every == 0:
            self.refresh_snapshot(iteration)

    def on_optimizer_stepped(self, iteration: int) -> None:
        """Hook: constant-decay EMA of the teacher after each stage-2 step (official ``update_ema_variables``)."""
        if self.in_self_training(iteration):
            ema_update_(self.teacher, _unwrap(self.network), self.ema_decay)

    def hooks(self) -> dict[str, Callable[[int], None]]:
        return {HOOK_ITERATION_STARTED: self.on_iteration_started, HOOK_OPTIMIZER_STEPPED: self.on_optimizer_stepped}

    # ---- losses ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def pseudo_labels(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(plab, certain)`` of the frozen snapshot for an unlabeled batch (official ``pred_unlabel``)."""
        was_training = self.snapshot.training
        self.snapshot.train(not self.snapshot_eval)
        try:
            out = _heads(self.snapshot, image)
        finally:
            self.snapshot.train(was_training)
        return coranet_pseudo_labels(out, self.threshold)

    @torch.no_grad()
    def inspection_maps(self, image: Tensor) -> dict[str, Tensor]:
        """The inconsistency mask (``"uncertain"``, 1 where the conservative and radical heads disagree) and the
        pseudo-labels (``"pseudo_label"``) of ``image`` taken as an unlabeled batch (as ``pred_unlabel``), ``uint8``.

        In self-training they come from the snapshot the method uses; before the stage switch, from the current
        student in eval mode (what the first snapshot would give). No weights, statistics or RNG state change.
        """
        source = self.snapshot if self.snapshot_iteration >= self.pretrain_iterations else _unwrap(self.network)
        was_training = source.training
        source.eval()
        try:
            plab, certain = coranet_pseudo_labels(_heads(source, image), self.threshold)
        finally:
            source.train(was_training)
        return {"uncertain": (~certain).to(torch.uint8), "pseudo_label": plab.to(torch.uint8)}

    def _cost_weights(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(w_cons, w_rad)`` on ``device``, moved there once rather than copied every iteration."""
        if self.w_cons.device != device:
            self.w_cons, self.w_rad = self.w_cons.to(device), self.w_rad.to(device)
        return self.w_cons, self.w_rad

    def compute_losses(self, labeled: Batch, unlabeled: Batch | None, iteration: int) -> dict[str, Tensor]:
        out_l = _heads(self.network, labeled["image"])
        w_cons, w_rad = self._cost_weights(out_l.main.device)
        sup = coranet_supervised_loss(out_l, as_label_map(labeled["label"]), w_cons, w_rad)
        losses = {f"sup_{key}": value.detach() for key, value in sup.items() if key != "total"}
        losses["loss_sup"] = sup["total"].detach()
        if unlabeled is None or not self.in_self_training(iteration):
            return {"loss": sup["total"], **losses}

        if self.snapshot_iteration < self.pretrain_iterations:
            # compute_losses called without the engine's hooks (or resumed without the method's state): switch now
            self.start_self_training(iteration)
        image_u = unlabeled["image"]
        out_u = _heads(self.network, image_u)
        plab, certain = self.pseudo_labels(image_u)
        with torch.no_grad(), contextlib.nullcontext() if self.teacher_dropout else _dropout_off(self.teacher):
            out_t = _heads(self.teacher, image_u)
        uncertain = ~certain
        certain_terms = coranet_certain_loss(out_u, plab, certain, w_cons, w_rad, self.certain_aux_weights)
        weight = self.consistency_weight(iteration)
        loss_uncertain = coranet_uncertain_loss(out_u, out_t, uncertain, weight)
        total = coranet_total_loss(sup["total"], certain_terms["total"], loss_uncertain, self.unsup_weight)
        if self.keep_masks:
            self.last_uncertain = uncertain.detach().cpu()
            self.last_pseudo_labels = plab.detach().cpu()
        losses.update({f"certain_{key}": value.detach() for key, value in certain_terms.items() if key != "total"})
        losses.update(
            {
                "loss_certain": certain_terms["total"].detach(),
                "loss_uncertain": loss_uncertain.detach(),
                "cons_weight": torch.tensor(weight),
                "uncertain_fraction": uncertain.float().mean().detach(),
            }
        )
        return {"loss": total, **losses}

    # ---- checkpointing --------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The snapshot's weights and the iteration they were taken at (teacher and student are saved apart)."""
        return {"snapshot": self.snapshot.state_dict(), "snapshot_iteration": self.snapshot_iteration}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.snapshot.load_state_dict(state["snapshot"])
        self.snapshot_iteration = int(state["snapshot_iteration"])
