"""UA-MT (baselines.md §5): uncertainty, threshold, masked consistency, teacher passes, one training step."""

import math

import pytest
import torch
from monai.losses import DiceCELoss
from torch import nn

from common.losses.uamt import uamt_consistency, uamt_threshold, uamt_uncertainty
from common.methods.base import HOOK_OPTIMIZER_STEPPED
from common.methods.uamt import UAMT
from common.networks import UNet2D, VNet

LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------------------------
# uamt_uncertainty


def test_uncertainty_of_two_opposite_passes_is_ln2():
    # passes with softmax [1, 0] and [0, 1] -> pbar = [.5, .5] -> u = -2 * .5 * ln(.5 + 1e-6) = -ln(0.500001)
    passes = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 2, 1, 1)  # (T, N, C, H, W)
    u = uamt_uncertainty(passes.mean(dim=0))
    assert u.shape == (1, 1, 1, 1)
    assert u.item() == pytest.approx(-math.log(0.5 + 1e-6), abs=1e-7)
    assert u.item() == pytest.approx(LN2, abs=3e-6)


def test_uncertainty_of_agreeing_passes_is_zero_and_class_channel_kept():
    # pbar = [1, 0, 0, 0] -> u = -1 * ln(1 + 1e-6) - 3 * 0 * ln(1e-6) = -1e-6 (0*ln 0 stays finite);
    # float32 rounds 1 + 1e-6 to 1.00000095, hence the tolerance
    certain = torch.zeros(2, 4, 3, 5)
    certain[:, 0] = 1.0
    u = uamt_uncertainty(certain)
    assert u.shape == (2, 1, 3, 5)
    assert torch.allclose(u, torch.full_like(u, -math.log1p(1e-6)), atol=1e-7)
    # uniform over 4 classes -> -ln(0.25 + 1e-6) = 1.386290 (ln 4 = 1.386294), above the ln 2 threshold
    uniform = torch.full((1, 4, 1, 1), 0.25)
    assert uamt_uncertainty(uniform).item() == pytest.approx(-math.log(0.25 + 1e-6), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# uamt_threshold


def test_threshold_endpoints_and_midpoint():
    # t = 0: phase 1 -> (0.75 + 0.25 e^-5) ln 2 = (0.75 + 0.25 * 0.006737947) * 0.693147 = 0.751684 * 0.693147
    #      = 0.521028
    assert uamt_threshold(0, 1000) == pytest.approx(0.7516844867 * LN2, rel=1e-9)
    assert uamt_threshold(0, 1000) == pytest.approx(0.521028, abs=1e-6)
    # t = T/2: phase 0.5 -> e^-1.25 = 0.2865048 -> (0.75 + 0.0716262) ln 2 = 0.569508
    assert uamt_threshold(500, 1000) == pytest.approx(0.569508, abs=1e-6)
    # t = T (and beyond): ln 2
    assert uamt_threshold(1000, 1000) == pytest.approx(LN2, rel=1e-12)
    assert uamt_threshold(5000, 1000) == pytest.approx(LN2, rel=1e-12)


def test_threshold_ln2_quirk_for_four_classes_and_its_switch():
    # SSL4MIS uses ln 2 for 4-class ACDC; the switch gives ln 4 = 1.386294 at the end of the ramp
    assert uamt_threshold(1000, 1000, num_classes=4) == pytest.approx(LN2)
    assert uamt_threshold(1000, 1000, num_classes=4, use_log_num_classes=True) == pytest.approx(math.log(4.0))
    assert uamt_threshold(0, 1000, num_classes=4, use_log_num_classes=True) == pytest.approx(
        0.7516844867 * math.log(4.0)
    )


# ---------------------------------------------------------------------------------------------------------------
# uamt_consistency


def _student_teacher_logits():
    # student logits [0, 0] -> p_s = [.5, .5]; teacher [ln 3, 0] -> p_t = [.75, .25]
    # per voxel: (0.25)^2 + (0.25)^2 = 0.125
    student = torch.zeros(2, 2, 4, 4, requires_grad=True)
    teacher = torch.zeros(2, 2, 4, 4)
    teacher[:, 0] = math.log(3.0)
    return student, teacher


def test_consistency_empty_mask_is_zero_with_finite_gradient():
    student, teacher = _student_teacher_logits()
    loss = uamt_consistency(student, teacher, torch.zeros(2, 1, 4, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(student.grad == 0)


def test_consistency_full_and_partial_mask():
    student, teacher = _student_teacher_logits()
    # full mask over V = 32 voxels: 0.125 * 32 / (2 * 32) = 0.0625
    full = uamt_consistency(student, teacher, torch.ones(2, 1, 4, 4))
    assert full.item() == pytest.approx(0.0625, rel=1e-6)
    # mask given without its class channel, 3 voxels: 0.125 * 3 / (2 * 3) = 0.0625 (the voxel count cancels)
    partial = torch.zeros(2, 4, 4)
    partial[0, 0, :3] = 1
    assert uamt_consistency(student, teacher, partial).item() == pytest.approx(0.0625, rel=1e-6)
    # masked voxels where student == teacher add to the count, not the sum: 3 differing + 5 agreeing voxels
    # -> 0.125 * 3 / (2 * 8) = 0.0234375
    teacher2 = teacher.clone()
    teacher2[1, 0] = 0.0  # sample 1 now agrees with the student everywhere
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, 0, :3] = 1
    mask[1, 0, 0, :] = 1
    mask[1, 0, 1, 0] = 1
    assert uamt_consistency(student, teacher2, mask).item() == pytest.approx(0.0234375, rel=1e-6)
    # norm_factor 1 doubles it: 0.125 * 3 / 8
    assert uamt_consistency(student, teacher2, mask, norm_factor=1.0).item() == pytest.approx(0.046875, rel=1e-6)


def test_consistency_does_not_backpropagate_into_teacher():
    student, teacher = _student_teacher_logits()
    teacher.requires_grad_(True)
    uamt_consistency(student, teacher, torch.ones(2, 1, 4, 4)).backward()
    assert teacher.grad is None and student.grad is not None


# ---------------------------------------------------------------------------------------------------------------
# the method


class Recording(nn.Module):
    """Returns fixed per-voxel logits ``(C, H, W)`` for every sample; records each call's input and train mode."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.calls = []

    def forward(self, x):
        self.calls.append((x.detach().clone(), self.training))
        return self.logits.expand(x.shape[0], *self.logits.shape) + 0.0 * x


def sup_loss(logits, label):
    return ((torch.softmax(logits, 1)[:, 1:] - label) ** 2).mean()


def _batches(n_l=2, n_u=3, h=2, w=4):
    labeled = {"image": torch.randn(n_l, 1, h, w), "label": (torch.rand(n_l, 1, h, w) > 0.5).float()}
    return labeled, {"image": torch.randn(n_u, 1, h, w)}


def _half_certain_teacher():
    # columns 0-1 certain: [10, -10] -> entropy ~ 0 (< threshold); columns 2-3 uniform: entropy ~ ln 2 (> 0.52)
    logits = torch.zeros(2, 2, 4)
    logits[0, :, :2] = 10.0
    logits[1, :, :2] = -10.0
    return Recording(logits)


def test_teacher_pass_count_batch_sizes_and_fresh_noise():
    torch.manual_seed(0)
    student, teacher = Recording(torch.zeros(2, 2, 4)), _half_certain_teacher()
    method = UAMT(student, teacher, sup_loss, threshold_rampup=1000)
    method.train()
    labeled, unlabeled = _batches(n_l=2, n_u=3)
    method.compute_losses(labeled, unlabeled, iteration=0)
    # student: one forward on labeled + unlabeled; teacher: 1 target pass on Nu + 4 passes on 2 * Nu
    assert [x.shape[0] for x, _ in student.calls] == [5]
    assert [x.shape[0] for x, _ in teacher.calls] == [3, 6, 6, 6, 6]
    assert all(training for _, training in teacher.calls)  # teacher stays in train mode (dropout active)
    repeated = unlabeled["image"].repeat(2, 1, 1, 1)
    noises = [x - repeated for x, _ in teacher.calls[1:]]
    for noise in noises:
        assert 0 < noise.abs().max() <= 0.2 + 1e-6  # clamped N(0, 0.1^2)
        assert not torch.allclose(noise[:3], noise[3:])  # the two copies get different noise
    assert not torch.allclose(noises[0], noises[1])  # fresh noise for every pass


def test_mask_and_consistency_on_half_certain_teacher():
    torch.manual_seed(0)
    student, teacher = Recording(torch.zeros(2, 2, 4)), _half_certain_teacher()
    method = UAMT(student, teacher, sup_loss, threshold_rampup=1000, iters_per_epoch=150)
    labeled, unlabeled = _batches()
    losses = method.compute_losses(labeled, unlabeled, iteration=0)
    assert set(losses) == {"loss", "loss_sup", "loss_cons", "cons_weight", "threshold", "mask_ratio"}
    # certain half of the voxels kept: mask ratio 0.5
    assert losses["mask_ratio"].item() == pytest.approx(0.5)
    assert losses["threshold"].item() == pytest.approx(0.521028, abs=1e-6)
    # kept voxels: p_s = [.5, .5], p_t = [sigmoid(20), 1 - sigmoid(20)] ~ [1, 2e-9] -> 0.25 + 0.25 = 0.5 per voxel;
    # consistency = 0.5 * V / (2 * V) = 0.25
    assert losses["loss_cons"].item() == pytest.approx(0.25, abs=1e-6)
    # lambda(0) = 0.1 * e^-5 = 0.000673795
    assert losses["cons_weight"].item() == pytest.approx(0.1 * math.exp(-5.0))
    expected = losses["loss_sup"].item() + 0.1 * math.exp(-5.0) * 0.25
    assert losses["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_uncertain_voxels_enter_with_ln_num_classes_switch():
    # 4 classes, uncertain voxels uniform: entropy -ln(0.25 + 1e-6) = 1.386290 > ln 2 -> masked out by default;
    # at t = T with ln C the threshold is ln 4 = 1.386294 > 1.386290 -> every voxel is kept
    logits = torch.zeros(4, 2, 4)
    logits[0, :, :2] = 20.0
    teacher = Recording(logits)
    labeled, unlabeled = _batches()
    default = UAMT(Recording(torch.zeros(4, 2, 4)), teacher, sup_loss, threshold_rampup=100)
    assert default.compute_losses(labeled, unlabeled, 100)["mask_ratio"].item() == pytest.approx(0.5)
    switched = UAMT(Recording(torch.zeros(4, 2, 4)), teacher, sup_loss, threshold_rampup=100, use_log_num_classes=True)
    assert switched.compute_losses(labeled, unlabeled, 100)["mask_ratio"].item() == pytest.approx(1.0)


def test_teacher_mean_probs_is_the_mean_over_all_eight_samples():
    class Counter(nn.Module):
        """Logits [k, 0] on the k-th call's samples: the mean softmax is computable by hand."""

        def __init__(self):
            super().__init__()
            self.k = 0

        def forward(self, x):
            self.k += 1
            out = torch.zeros(x.shape[0], 2, *x.shape[2:])
            out[:, 0] = float(self.k)
            out[x.shape[0] // 2 :, 0] = -float(self.k)  # second copy: [-k, 0]
            return out

    method = UAMT(Recording(torch.zeros(2, 1, 1)), Counter(), sup_loss, noise_std=0.0)
    probs = method.teacher_mean_probs(torch.zeros(1, 1, 1, 1))
    # sigmoid(k) + sigmoid(-k) = 1 for every pass -> mean of p_0 over 8 samples = 4 / 8 = 0.5
    assert probs.shape == (1, 2, 1, 1)
    assert probs[0, 0].item() == pytest.approx(0.5)
    # one pass, no duplication, two samples, next call k = 5: sample 0 gets [5, 0], sample 1 [-5, 0]
    # -> p_0 = sigmoid(5) = 0.993307 and 1 - 0.993307 (no averaging across samples)
    method.passes, method.duplicate = 1, 1
    single = method.teacher_mean_probs(torch.zeros(2, 1, 1, 1))
    assert single[0, 0].item() == pytest.approx(0.993307, abs=1e-6)
    assert single[1, 0].item() == pytest.approx(1 - 0.993307, abs=1e-6)


def test_no_unlabeled_stream_trains_supervised_part_only():
    student, teacher = Recording(torch.zeros(2, 2, 4)), _half_certain_teacher()
    losses = UAMT(student, teacher, sup_loss).compute_losses(*_batches()[:1], None, iteration=10)
    assert set(losses) == {"loss", "loss_sup"}
    assert teacher.calls == []


@pytest.mark.parametrize(
    "make_net, shape, num_classes",
    [
        (lambda: UNet2D(1, 4, features=(4, 8, 16, 32, 64)), (32, 32), 4),
        (lambda: VNet(1, 2, n_filters=4, has_dropout=True), (16, 16, 16), 2),
    ],
    ids=["unet2d", "vnet"],
)
def test_one_training_step_end_to_end(make_net, shape, num_classes):
    torch.manual_seed(0)
    student, teacher = make_net(), make_net()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, batch=True, lambda_dice=0.5, lambda_ce=0.5)
    method = UAMT(student, teacher, loss_fn, threshold_rampup=10)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    labeled = {"image": torch.randn(2, 1, *shape), "label": torch.randint(0, num_classes, (2, 1, *shape)).float()}
    unlabeled = {"image": torch.randn(2, 1, *shape)}
    before = [p.detach().clone() for p in student.parameters()]
    method.train()
    losses = method.compute_losses(labeled, unlabeled, iteration=0)
    assert torch.isfinite(losses["loss"]) and losses["loss"].requires_grad
    assert all(not v.requires_grad for k, v in losses.items() if k != "loss")
    assert 0.0 <= losses["mask_ratio"].item() <= 1.0
    optimizer.zero_grad()
    losses["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    optimizer.step()
    method.hooks()[HOOK_OPTIMIZER_STEPPED](0)  # first EMA update copies the student
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters(), strict=True))
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters(), strict=True))
