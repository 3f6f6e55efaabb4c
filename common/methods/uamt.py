"""UA-MT, the uncertainty-aware mean teacher (Yu et al., MICCAI 2019), as implemented by SSL4MIS.

Reference: SSL4MIS ``code/train_uncertainty_aware_mean_teacher_{2D,3D}.py``; the kept quirks and their switches are
listed in ``bundles/ua_mt_la/docs/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..losses.uamt import uamt_consistency, uamt_threshold, uamt_uncertainty
from ..schedules import consistency_weight
from .base import Batch, forward_train, gaussian_noise
from .mean_teacher import MeanTeacher


class UAMT(MeanTeacher):
    """Mean Teacher whose consistency term only counts voxels where the teacher is certain (SSL4MIS UA-MT).

    Per iteration, on top of :class:`MeanTeacher` (joint student batch, EMA teacher in train mode, EMA hook):

    1. the consistency target is one teacher forward on the unlabeled images plus clamped Gaussian noise;
    2. uncertainty = entropy of the mean softmax of ``T = passes * duplicate`` further stochastic teacher
       passes (SSL4MIS: 4 forwards of the unlabeled batch repeated twice, each with fresh clamped noise; the
       teacher's dropout is active because it stays in train mode, and its BatchNorm layers see each pass);
    3. mask = [uncertainty < threshold(t)], threshold ramped over ``threshold_rampup`` raw iterations;
    4. consistency = masked softmax MSE normalised by ``norm_factor * sum(mask)``;
    5. total = supervised + lambda(t) * consistency, lambda(t) = consistency * sigmoid_rampup(t // 150, 200).

    Args:
        network, teacher, supervised_loss, consistency, consistency_rampup, iters_per_epoch, ema_decay,
            noise_std, noise_clip, consistency_start_iteration: as :class:`MeanTeacher` (UA-MT has no
            consistency delay in SSL4MIS, 2D or 3D: keep ``consistency_start_iteration`` at 0 to reproduce it).
        threshold_rampup: length in raw iterations of the threshold's sigmoid ramp; SSL4MIS uses the run's
            ``max_iterations`` (bundles pass ``@max_iterations``).
        passes: teacher forwards for the uncertainty (4).
        duplicate: copies of the unlabeled batch per forward (2); ``T = passes * duplicate`` = 8 samples.
        use_log_num_classes: threshold scale ``ln C`` instead of the SSL4MIS quirk ``ln 2`` (default False).
        norm_factor: the consistency denominator's constant (2.0, the SSL4MIS value, kept for 4 classes too).
        entropy_eps: epsilon inside the entropy's logarithm (1e-6).
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
        threshold_rampup: float = 30000.0,
        passes: int = 4,
        duplicate: int = 2,
        use_log_num_classes: bool = False,
        norm_factor: float = 2.0,
        entropy_eps: float = 1e-6,
    ) -> None:
        super().__init__(
            network,
            teacher,
            supervised_loss,
            consistency=consistency,
            consistency_rampup=consistency_rampup,
            iters_per_epoch=iters_per_epoch,
            ema_decay=ema_decay,
            noise_std=noise_std,
            noise_clip=noise_clip,
            consistency_start_iteration=consistency_start_iteration,
        )
        if passes < 1 or duplicate < 1:
            raise ValueError(f"passes and duplicate must be at least 1, got {passes} and {duplicate}.")
        self.threshold_rampup = threshold_rampup
        self.passes = passes
        self.duplicate = duplicate
        self.use_log_num_classes = use_log_num_classes
        self.norm_factor = norm_factor
        self.entropy_eps = entropy_eps

    @torch.no_grad()
    def teacher_mean_probs(self, images: Tensor) -> Tensor:
        """Mean softmax of the teacher over ``passes * duplicate`` noisy copies of ``images`` (UA-MT's T = 8 passes).

        Each forward sees the batch repeated ``duplicate`` times along the batch axis, with fresh noise for every
        element, as SSL4MIS does (``repeat(2, ...)``, 4 forwards, then a mean over the 8 predictions per sample).
        """
        n = images.shape[0]
        repeated = images.repeat(self.duplicate, *([1] * (images.dim() - 1)))
        total = None
        for _ in range(self.passes):
            noisy = repeated + gaussian_noise(repeated, self.noise_std, self.noise_clip)
            probs = torch.softmax(forward_train(self.teacher, noisy).float(), dim=1)
            # rows are [copy 0 of samples 0..n-1, copy 1 of samples 0..n-1, ...]: sum the copies per sample
            probs = probs.reshape(self.duplicate, n, *probs.shape[1:]).sum(dim=0)
            total = probs if total is None else total + probs
        return total / (self.passes * self.duplicate)

    def compute_losses(self, labeled: Batch, unlabeled: Batch | None, iteration: int) -> dict[str, Tensor]:
        if unlabeled is None:  # no unlabeled stream: the supervised part only, as MeanTeacher
            return super().compute_losses(labeled, None, iteration)

        n_labeled = labeled["image"].shape[0]
        images_u = unlabeled["image"]
        logits = forward_train(self.network, torch.cat([labeled["image"], images_u]))
        logits_l, logits_u = logits[:n_labeled], logits[n_labeled:]
        loss_sup = self.supervised_loss(logits_l, labeled["label"])

        with torch.no_grad():
            noisy = images_u + gaussian_noise(images_u, self.noise_std, self.noise_clip)
            teacher_logits = forward_train(self.teacher, noisy)
            uncertainty = uamt_uncertainty(self.teacher_mean_probs(images_u), self.entropy_eps)
        threshold = uamt_threshold(
            iteration, self.threshold_rampup, logits_u.shape[1], use_log_num_classes=self.use_log_num_classes
        )
        mask = (uncertainty < threshold).float()
        loss_cons = uamt_consistency(logits_u, teacher_logits, mask, norm_factor=self.norm_factor)
        if iteration < self.consistency_start_iteration:
            loss_cons = loss_cons * 0.0
        weight = consistency_weight(iteration, self.consistency, self.consistency_rampup, self.iters_per_epoch)
        total = loss_sup + weight * loss_cons
        return {
            "loss": total,
            "loss_sup": loss_sup.detach(),
            "loss_cons": loss_cons.detach(),
            "cons_weight": torch.tensor(weight),
            "threshold": torch.tensor(threshold),
            "mask_ratio": mask.mean(),
        }
