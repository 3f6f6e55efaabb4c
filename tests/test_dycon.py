"""DyCON: schedules, UnCL, FeCL, supervised/consistency losses, networks and one method step (dycon.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from common.losses.dycon import (
    adaptive_beta,
    downsample_labels,
    dycon_step_losses,
    dycon_supervised_loss,
    fecl_loss,
    flatten_embeddings,
    gambling_softmax,
    largest_connected_component,
    mt_consistency_loss,
    patch_entropy,
    squared_dice_loss,
    teacher_pseudo_labels,
    threshold_rampup,
    uncl_loss,
)
from common.methods.base import HOOK_OPTIMIZER_STEPPED
from common.methods.dycon import DyCON
from common.networks.dycon import DyConUNet3D, DyConVNet

# ----------------------------------------------------------------------------------------------------------------
# Schedules (dycon.md §4.3, §4.4)
# ----------------------------------------------------------------------------------------------------------------


def test_adaptive_beta_endpoints_and_midpoint():
    assert adaptive_beta(0, 100) == pytest.approx(5.0)
    assert adaptive_beta(100, 100) == pytest.approx(0.5)
    # mid-training: 5 * 0.1 ** 0.5 = 1.5811
    assert adaptive_beta(50, 100) == pytest.approx(1.58114, abs=1e-5)
    # BraTS: ipe 6, E_max = 20000 // 6 + 1 = 3334, last epoch 19999 // 6 = 3333 -> 5 * 0.1 ** (3333/3334) = 0.50035
    assert adaptive_beta(3333, 3334) == pytest.approx(0.50035, abs=1e-5)
    assert adaptive_beta(0, 10, beta_max=2.0, beta_min=1.0) == pytest.approx(2.0)


def test_threshold_rampup_values():
    # e = 0: 0.3 + 0.2 * exp(-5) = 0.301348 (not 0.3)
    assert threshold_rampup(0, 1500, 0.3, 0.5) == pytest.approx(0.3 + 0.2 * math.exp(-5.0))
    assert threshold_rampup(0, 1500, 0.3, 0.5) == pytest.approx(0.301348, abs=1e-6)
    # e = R/2: 0.3 + 0.2 * exp(-5 * 0.25) = 0.357301
    assert threshold_rampup(750, 1500, 0.3, 0.5) == pytest.approx(0.357301, abs=1e-6)
    assert threshold_rampup(1500, 1500, 0.3, 0.5) == pytest.approx(0.5)
    assert threshold_rampup(9999, 1500, 0.3, 0.5) == pytest.approx(0.5)  # clipped
    assert threshold_rampup(-3, 1500, 0.3, 0.5) == pytest.approx(0.301348, abs=1e-6)
    assert threshold_rampup(7, 0, 0.3, 0.5) == 0.5  # R = 0 -> hi


# ----------------------------------------------------------------------------------------------------------------
# Embeddings, cell labels, pseudo-labels (dycon.md §3.3)
# ----------------------------------------------------------------------------------------------------------------


def test_flatten_embeddings_order_and_norm():
    features = torch.zeros(1, 2, 1, 1, 2)
    features[0, :, 0, 0, 0] = torch.tensor([3.0, 4.0])  # cell 0 -> (0.6, 0.8)
    # cell 1 stays all-zero -> stays zero (eps 1e-12)
    out = flatten_embeddings(features)
    assert out.shape == (1, 2, 2)
    assert torch.allclose(out[0, 0], torch.tensor([0.6, 0.8]))
    assert torch.equal(out[0, 1], torch.zeros(2))
    # C order: grid (h, w, d) = (1, 2, 2) -> cell index w * 2 + d
    grid = torch.arange(4.0).reshape(1, 1, 1, 2, 2)
    assert flatten_embeddings(grid)[0, :, 0].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_downsample_labels_all_background():
    labels = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    for mode in ("trilinear", "avgpool"):
        mask = downsample_labels(labels, 8, mode)
        assert mask.shape == (2, 8) and mask.dtype == torch.float32
        assert mask.sum() == 0


def test_downsample_labels_handful_of_foreground_voxels():
    labels = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    # block (0, 0, 0): its 2x2x2 central voxels are offsets 3 and 4; mark 5 of those 8 -> cell 0 foreground
    central = [(3, 3, 3), (3, 3, 4), (3, 4, 3), (3, 4, 4), (4, 3, 3)]
    for x, y, z in central:
        labels[0, x, y, z] = 1
    # block (1, 1, 1) (cell 7): 4 of 8 central voxels -> background (strict > 0.5)
    for x, y, z in [(11, 11, 11), (11, 11, 12), (11, 12, 11), (11, 12, 12)]:
        labels[0, x, y, z] = 1
    # block (0, 0, 1) (cell 1): many off-centre voxels, none central -> background under trilinear
    labels[0, 0:3, 0:3, 8:11] = 1
    mask = downsample_labels(labels, 8, "trilinear")
    assert mask[0].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # avg-pool counts the whole block: 5, 4 and 27 of 512 voxels are all below half -> nothing
    assert downsample_labels(labels, 8, "avgpool").sum() == 0
    full = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    full[0, :8, :8, 8:] = 1
    full[0, 8:, 8:, 8:12] = 1  # exactly half of block (1, 1, 1) -> background (strict)
    assert downsample_labels(full, 8, "avgpool")[0].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # (B, 1, H, W, D) input is accepted
    assert torch.equal(downsample_labels(labels[:, None], 8), mask)


def test_teacher_pseudo_labels_ties_to_background():
    # (class 0, class 1) logits of three voxels: (1, 2) -> fg, (2, -1) -> bg, (0.5, 0.5) tie -> bg
    logits = torch.tensor([[1.0, 2.0, 0.5], [2.0, -1.0, 0.5]]).reshape(1, 2, 3, 1, 1)
    labels = teacher_pseudo_labels(logits)
    assert labels.dtype == torch.int64 and labels.shape == (1, 3, 1, 1)
    assert labels.flatten().tolist() == [1, 0, 0]


# ----------------------------------------------------------------------------------------------------------------
# Supervised and MT losses (dycon.md §4.1, §4.2)
# ----------------------------------------------------------------------------------------------------------------


def test_squared_dice_loss_hand_value_and_all_background():
    prob = torch.tensor([[0.5, 0.5, 0.0, 1.0]])
    target = torch.tensor([[1, 0, 0, 1]])
    # I = 1.5, sum p^2 = 1.5, sum y^2 = 2 -> 1 - (3 + 1e-5) / (3.5 + 1e-5)
    assert squared_dice_loss(prob, target).item() == pytest.approx(1 - 3.00001 / 3.50001, rel=1e-6)
    # all-background labeled batch: 1 - 1e-5 / (sum p^2 + 1e-5), here sum p^2 = 4 * 0.04
    background = torch.zeros(1, 4, dtype=torch.long)
    expected = 1 - 1e-5 / (0.16 + 1e-5)
    assert squared_dice_loss(torch.full((1, 4), 0.2), background).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_supervised_loss_matches_monai_equivalents(dtype):
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 4, 4, 4, dtype=dtype)
    labels = (torch.rand(2, 4, 4, 4) > 0.6).long()
    ce, dice = dycon_supervised_loss(logits, labels)
    assert ce.dtype == dtype and dice.dtype == dtype and ce.dim() == 0
    assert ce.item() == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)
    monai_dice = DiceLoss(
        include_background=False,
        to_onehot_y=True,
        softmax=False,
        squared_pred=True,
        batch=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )(torch.softmax(logits, 1), labels[:, None])
    assert dice.item() == pytest.approx(monai_dice.item(), rel=1e-5)
    # the bundle's top-level `supervised_loss` (DiceCELoss) equals CE + Dice
    bundle_loss = DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        squared_pred=True,
        batch=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )(logits, labels[:, None].to(dtype))
    assert bundle_loss.item() == pytest.approx((ce + dice).item(), rel=1e-5)


def test_mt_consistency_loss_double_softmax():
    p = torch.tensor([0.5, 0.5]).reshape(1, 2, 1, 1, 1)
    q = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1, 1)
    # softmax(p) = (0.5, 0.5); softmax(q) = (e/(e+1), 1/(e+1)) = (0.731059, 0.268941); diff^2 = 0.231059^2
    expected = (math.e / (math.e + 1) - 0.5) ** 2
    assert mt_consistency_loss(p, q).item() == pytest.approx(expected, rel=1e-6)
    assert mt_consistency_loss(p.double(), q.double()).dtype == torch.float64


# ----------------------------------------------------------------------------------------------------------------
# UnCL (dycon.md §4.3)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uncl_identical_uniform_predictions(dtype):
    # p = q = (0.5, 0.5): no difference term; H = -log(0.5 + 1e-6) per voxel, loss = beta * 2H
    logits = torch.zeros(2, 2, 3, 3, 3, dtype=dtype)
    h = -math.log(0.5 + 1e-6)
    for beta in (5.0, 0.5):
        loss = uncl_loss(logits, logits, beta)
        assert loss.dim() == 0 and loss.dtype == dtype
        assert loss.item() == pytest.approx(beta * 2 * h, rel=1e-6)


def test_uncl_hand_value_and_voxel_mean():
    student = torch.zeros(1, 2, 2, 1, 1, dtype=torch.float64)
    teacher = torch.zeros(1, 2, 2, 1, 1, dtype=torch.float64)
    teacher[0, 0, 0] = math.log(3.0)  # voxel 0: q = (0.75, 0.25); voxel 1: q = (0.5, 0.5)
    hs = -math.log(0.5 + 1e-6)
    ht = -(0.75 * math.log(0.75 + 1e-6) + 0.25 * math.log(0.25 + 1e-6))
    beta = 1.0
    # voxel 0: sum_c (p - q)^2 = 2 * 0.25^2 = 0.125 over (e^{hs} + e^{ht}); voxel 1: no difference
    diff_term = (0.125 / (math.exp(beta * hs) + math.exp(beta * ht)) + 0.0) / 2
    entropy_term = beta * ((hs + ht) + (hs + hs)) / 2
    assert uncl_loss(student, teacher, beta).item() == pytest.approx(diff_term + entropy_term, rel=1e-10)
    # one voxel alone: 1.288769 (hand value)
    assert uncl_loss(student[..., :1, :, :], teacher[..., :1, :, :], 1.0).item() == pytest.approx(1.2887694, rel=1e-6)


def test_uncl_confident_and_gradient_through_student_only():
    student = torch.tensor([[20.0, -20.0]]).reshape(1, 2, 1, 1, 1).requires_grad_()
    teacher = torch.tensor([[-20.0, 20.0]]).reshape(1, 2, 1, 1, 1).requires_grad_()
    loss = uncl_loss(student, teacher, 5.0)
    # H ~ 0 on both sides: weight 1/2, loss ~ 0.5 * (1 + 1) = 1
    assert loss.item() == pytest.approx(1.0, abs=1e-4)
    loss.backward()
    assert student.grad is not None and teacher.grad is None


# ----------------------------------------------------------------------------------------------------------------
# FeCL (dycon.md §4.5)
# ----------------------------------------------------------------------------------------------------------------


def _three_cells(dtype=torch.float64):
    # z0 = z1 = (1, 0), z2 = (0, 1); labels (0, 0, 1)
    emb = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=dtype)
    labels = torch.tensor([[0.0, 0.0, 1.0]], dtype=dtype)
    return emb, labels


def test_fecl_all_background_patch_is_zero():
    torch.manual_seed(0)
    emb = nn.functional.normalize(torch.randn(2, 8, 4), dim=-1)
    labels = torch.zeros(2, 1, 8)
    loss = fecl_loss(emb, labels, emb.flip(1), 0)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0
    assert loss.item() == 0.0


def test_fecl_hand_value_with_column_shift():
    emb, labels = _three_cells()
    # tau = 1: a = [[0,1,0],[1,0,0],[0,0,0]]; column maxima (1, 1, 0)
    # e = exp(a - m): row0 (e^-1, 1, 1), row1 (1, e^-1, 1), row2 (e^-1, e^-1, 1)
    # Z_0 = e_02 = 1, Z_1 = e_12 = 1 -> r_01 = r_10 = 1 / (1 + 1) = 0.5 (a per-row shift would give 0.731)
    # L_0 = L_1 = ln 2, cell 2 has no positive (n_2 = 0) -> 0 but counted: L = 2 ln 2 / 3 = 0.462098
    plain = fecl_loss(emb, labels, None, 0, temperature=1.0, use_focal=False)
    assert plain.item() == pytest.approx(2 * math.log(2) / 3, rel=1e-10)
    # focal: w = (1 - 0.5)^2 = 0.25 -> ln 2 / 6 = 0.115525
    focal = fecl_loss(emb, labels, None, 0, temperature=1.0, use_focal=True, gamma=2.0)
    assert focal.item() == pytest.approx(math.log(2) / 6, rel=1e-10)
    # a (B, 1, N) label tensor gives the same
    assert fecl_loss(emb, labels[:, None], None, 0, temperature=1.0, use_focal=False).item() == pytest.approx(
        plain.item()
    )


def test_fecl_teacher_hard_negatives_and_threshold_ramp():
    emb, labels = _three_cells()
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]]], dtype=torch.float64)
    base = 2 * math.log(2) / 3
    # c_02 = c_12 = 0.6 (negative pairs above 0.5): L_cross = -log(1 - 0.6) = 0.916291; c_20 = c_21 = 0
    for epoch in (0, 1500):
        loss = fecl_loss(emb, labels, teacher, epoch, temperature=1.0, use_focal=False)
        assert loss.item() == pytest.approx(base + 0.916290731874155, rel=1e-10)
    # lambda_cross scales only the teacher term
    half = fecl_loss(emb, labels, teacher, 0, temperature=1.0, use_focal=False, lambda_cross=0.5)
    assert half.item() == pytest.approx(base + 0.5 * 0.916290731874155, rel=1e-10)
    # c = 0.4: hard at epoch 0 (theta = 0.301348), not at epoch 1500 (theta = 0.5)
    teacher_04 = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.4, math.sqrt(1 - 0.16)]]], dtype=torch.float64)
    early = fecl_loss(emb, labels, teacher_04, 0, temperature=1.0, use_focal=False)
    late = fecl_loss(emb, labels, teacher_04, 1500, temperature=1.0, use_focal=False)
    assert early.item() == pytest.approx(base - math.log(0.6), rel=1e-10)
    assert late.item() == pytest.approx(base, rel=1e-10)


def test_fecl_cross_term_clamped_when_rounding_exceeds_one():
    emb, labels = _three_cells()
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0 + 1e-7, 0.0]]], dtype=torch.float64)  # c_02 > 1
    loss = fecl_loss(emb, labels, teacher, 0, temperature=1.0, use_focal=False)
    assert math.isfinite(loss.item())


def _fecl_naive(z, y, zt, epoch, tau, gamma, use_focal):
    """Loop-by-loop transcription of dycon.md §4.5 steps 1-11 for one batch (float64)."""
    b_size, n, _ = z.shape
    anchor_losses, hard = [], []
    theta = threshold_rampup(epoch, 1500, 0.3, 0.5)
    for b in range(b_size):
        a = [[0.0 if i == j else float(z[b, i] @ z[b, j]) / tau for j in range(n)] for i in range(n)]
        m = [max(a[i][j] for i in range(n)) for j in range(n)]
        e = [[math.exp(a[i][j] - m[j]) for j in range(n)] for i in range(n)]
        for i in range(n):
            z_i = sum(e[i][j] for j in range(n) if y[b, j] != y[b, i])
            total, n_pos = 0.0, -1
            for j in range(n):
                if y[b, j] == y[b, i]:
                    n_pos += 1
                    if i != j:
                        r = e[i][j] / (e[i][j] + z_i + 1e-18)
                        w = (1 - r) ** gamma if use_focal else 1.0
                        total += w * -math.log(r + 1e-18)
                if y[b, j] != y[b, i]:
                    c = float(z[b, i] @ zt[b, j])
                    if c > theta:
                        hard.append(-math.log(1 - c + 1e-18))
            anchor_losses.append(total / (n_pos + 1e-18))
    cross = sum(hard) / len(hard) if hard else 0.0
    return sum(anchor_losses) / len(anchor_losses) + cross


@pytest.mark.parametrize("use_focal", [True, False])
def test_fecl_matches_loop_transcription(use_focal):
    torch.manual_seed(3)
    z = nn.functional.normalize(torch.randn(2, 6, 3, dtype=torch.float64), dim=-1)
    zt = nn.functional.normalize(z + 0.3 * torch.randn_like(z), dim=-1)
    y = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.float64)
    expected = _fecl_naive(z, y, zt, 10, 0.6, 2.0, use_focal)
    got = fecl_loss(z, y, zt, 10, temperature=0.6, gamma=2.0, use_focal=use_focal)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    assert fecl_loss(z.float(), y.float(), zt.float(), 10, use_focal=use_focal).dtype == torch.float32


def test_fecl_entropy_weights_replace_focal_and_patch_entropy():
    emb, labels = _three_cells()
    weights = torch.tensor([[2.0, 0.0, 5.0]], dtype=torch.float64)
    # un-focal anchor losses (ln 2, ln 2, 0) weighted by (2, 0, 5): 2 ln 2 / 3
    loss = fecl_loss(emb, labels, None, 0, temperature=1.0, use_focal=True, entropy_weights=weights)
    assert loss.item() == pytest.approx(2 * math.log(2) / 3, rel=1e-10)
    # gambling softmax is a (stable) softmax; uniform logits -> entropy -log(0.5 + 1e-6) on every cell
    big = torch.full((1, 2, 16, 16, 16), 1000.0)
    assert torch.allclose(gambling_softmax(big), torch.full_like(big, 0.5))
    ent = patch_entropy(big, 8)
    assert ent.shape == (1, 8)
    assert torch.allclose(ent, torch.full((1, 8), -math.log(0.5 + 1e-6)))


# ----------------------------------------------------------------------------------------------------------------
# dycon_step_losses (dycon.md §5.2)
# ----------------------------------------------------------------------------------------------------------------


def _step_inputs(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    stud = torch.randn(4, 2, 16, 16, 16, generator=g, dtype=dtype)
    ema = torch.randn(4, 2, 16, 16, 16, generator=g, dtype=dtype)
    fs = torch.randn(4, 8, 2, 2, 2, generator=g, dtype=dtype)
    ft = torch.randn(4, 8, 2, 2, 2, generator=g, dtype=dtype)
    labels = (torch.rand(4, 16, 16, 16, generator=g) > 0.5).long()
    return stud, ema, fs, ft, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_losses_compose_total(dtype):
    stud, ema, fs, ft, labels = _step_inputs(dtype=dtype)
    out = dycon_step_losses(stud, ema, fs, ft, labels, 2, 300, 7, 2.0, {})
    assert set(out) == {
        "loss_seg",
        "loss_seg_dice",
        "consistency_weight",
        "consistency_loss",
        "f_loss",
        "u_loss",
        "loss",
        "mask",
    }
    # w_c(300) = 0.1 * sigmoid_rampup(2, 200) = 0.1 * exp(-5 * (198/200)^2)
    assert out["consistency_weight"] == pytest.approx(0.1 * math.exp(-5 * 0.99**2))
    expected = (out["loss_seg"] + out["loss_seg_dice"] + out["consistency_weight"] * out["consistency_loss"]) + 0.5 * (
        out["f_loss"] + out["u_loss"]
    )
    assert out["loss"].dtype == dtype
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["u_loss"].item() == pytest.approx(uncl_loss(stud, ema, 2.0).item(), rel=1e-6)
    # teacher pseudo-labels for the unlabeled rows, ground truth for the labeled rows
    pseudo = labels.clone()
    pseudo[2:] = ema[2:].argmax(1)
    assert torch.equal(out["mask"], downsample_labels(pseudo, 8))


def test_step_losses_never_read_unlabeled_labels_by_default():
    stud, ema, fs, ft, labels = _step_inputs()
    a = dycon_step_losses(stud, ema, fs, ft, labels, 2, 0, 0, 5.0, {"fecl_part": "all"})
    changed = labels.clone()
    changed[2:] = 1 - changed[2:]
    b = dycon_step_losses(stud, ema, fs, ft, changed, 2, 0, 0, 5.0, {"fecl_part": "all"})
    assert a["loss"].item() == b["loss"].item()
    # the official mode does read them
    gt = {"fecl_label_source": "ground_truth", "fecl_part": "all"}
    c = dycon_step_losses(stud, ema, fs, ft, labels, 2, 0, 0, 5.0, gt)
    d = dycon_step_losses(stud, ema, fs, ft, changed, 2, 0, 0, 5.0, gt)
    assert c["f_loss"].item() != d["f_loss"].item()


def test_step_losses_reject_mismatched_grid():
    stud, ema, fs, ft, labels = _step_inputs()
    with pytest.raises(ValueError, match="mask_factor"):
        dycon_step_losses(stud, ema, fs, ft, labels, 2, 0, 0, 5.0, {"mask_factor": 4})


# ----------------------------------------------------------------------------------------------------------------
# Largest connected component (dycon.md §7.2)
# ----------------------------------------------------------------------------------------------------------------


def test_largest_connected_component():
    seg = np.zeros((6, 6, 6), dtype=np.uint8)
    seg[0, 0, 0] = seg[1, 1, 1] = 1  # diagonal neighbours: one 26-connected component of 2
    seg[4, 4, 4] = 1
    out = largest_connected_component(seg)
    assert out.dtype == bool and out.sum() == 2 and out[0, 0, 0] and out[1, 1, 1]
    tie = np.zeros((6, 6, 6), dtype=np.uint8)
    tie[0, 0, 0:2] = 1
    tie[4, 4, 0:2] = 1  # equal sizes -> keep the one met first in raster order
    kept = largest_connected_component(tie)
    assert kept[0, 0, 0] and not kept[4, 4, 0]
    empty = largest_connected_component(np.zeros((3, 3, 3)))
    assert empty.dtype == bool and not empty.any()


# ----------------------------------------------------------------------------------------------------------------
# Networks (dycon.md §3)
# ----------------------------------------------------------------------------------------------------------------


def _shapes(module):
    return [tuple(p.shape) for p in module.parameters()]


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return DyConUNet3D()


@pytest.fixture(scope="module")
def vnet():
    torch.manual_seed(0)
    return DyConVNet()


def test_unet_parameter_count_and_order(unet):
    assert sum(p.numel() for p in unet.parameters()) == 6_148_532
    shapes = _shapes(unet)
    assert shapes[:2] == [(16, 1, 3, 3, 3), (16,)]  # conv1: first conv (no norm parameters)
    assert shapes[-12:] == [
        (2, 16, 1, 1, 1),  # final (aux head)
        (2,),
        (2, 16, 1, 1, 1),  # out_conv2 (logits)
        (2,),
        (512, 256, 1, 1, 1),
        (512,),
        (512,),
        (512,),
        (256, 512, 1, 1, 1),
        (256,),
        (256,),
        (256,),
    ]
    assert (128, 384, 3, 3, 3) in shapes  # up_concat4: (256 + 128) -> 128


def test_vnet_parameter_count_and_order(vnet):
    assert sum(p.numel() for p in vnet.parameters()) == 9_707_236
    shapes = _shapes(vnet)
    assert shapes[-10:] == [
        (2, 16, 1, 1, 1),  # out_conv
        (2,),
        (2, 16, 1, 1, 1),  # out_conv2 (unused, parity)
        (2,),
        (512, 256, 1, 1, 1),
        (512,),
        (512,),
        (512,),
        (256, 512, 1, 1, 1),
        (256,),
    ]


@pytest.mark.parametrize("name", ["unet", "vnet"])
def test_network_outputs_and_script(name, request):
    net = request.getfixturevalue(name)
    x = torch.randn(2, 1, 32, 32, 16)
    net.train()
    aux, logits, emb = net.forward_train(x)
    assert aux.shape == logits.shape == (2, 2, 32, 32, 16)
    assert emb.shape == (2, 256, 4, 4, 2)  # 1/8 of the input
    assert aux.abs().max() <= 1
    net.eval()
    with torch.no_grad():
        # the U-Net's InstanceNorm needs more than one bottleneck voxel: 16^3 only for the V-Net
        small = (1, 1, 16, 16, 16) if name == "vnet" else (1, 1, 16, 32, 16)
        assert net(torch.randn(*small)).shape == (1, 2, *small[2:])
        scripted = torch.jit.script(net)
        y = torch.randn(1, 1, 32, 16, 16)
        assert torch.allclose(scripted(y), net(y), atol=1e-5)
        if name == "unet":  # eval: forward_train's logits are forward's output
            assert torch.allclose(net.forward_train(y)[1], net(y), atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 1, 24, 16, 16))
    if name == "unet":
        with pytest.raises(ValueError, match="bottleneck"):
            net(torch.randn(1, 1, 16, 16, 16))


def test_vnet_aux_is_tanh_of_logits(vnet):
    vnet.eval()
    with torch.no_grad():
        aux, logits, _ = vnet.forward_train(torch.randn(1, 1, 16, 16, 16))
    assert torch.allclose(aux, torch.tanh(logits))


# ----------------------------------------------------------------------------------------------------------------
# The method on the engine's interface
# ----------------------------------------------------------------------------------------------------------------


def _tiny_method(**kwargs):
    torch.manual_seed(0)
    net = DyConUNet3D(base_filters=2, embed_dim=8, proj_hidden=8)
    teacher = DyConUNet3D(base_filters=2, embed_dim=8, proj_hidden=8)
    return DyCON(net, teacher, max_iterations=100, iters_per_epoch=2, **kwargs)


def _tiny_batches():
    g = torch.Generator().manual_seed(1)
    shape = (2, 1, 32, 16, 16)  # embedding grid 4 x 2 x 2
    labeled = {"image": torch.randn(*shape, generator=g), "label": torch.zeros(shape)}
    labeled["label"][:, :, 4:20, 4:12, 4:12] = 1.0
    unlabeled = {"image": torch.randn(*shape, generator=g)}
    return labeled, unlabeled


def test_dycon_step_returns_finite_losses_and_updates_teacher():
    method = _tiny_method()
    assert all(torch.equal(a, b) for a, b in zip(method.teacher.parameters(), method.network.parameters(), strict=True))
    assert not any(p.requires_grad for p in method.teacher.parameters())
    labeled, unlabeled = _tiny_batches()
    method.train()
    losses = method.compute_losses(labeled, unlabeled, iteration=3)
    expected_keys = {
        "loss",
        "loss_sup",
        "loss_seg",
        "loss_seg_dice",
        "consistency_loss",
        "consistency_weight",
        "f_loss",
        "u_loss",
        "beta",
    }
    assert set(losses) == expected_keys
    assert all(torch.isfinite(v).all() and v.dim() == 0 for v in losses.values())
    assert losses["loss"].requires_grad and not losses["f_loss"].requires_grad
    # iteration 3, ipe 2 -> epoch 1 of E_max = 100 // 2 + 1 = 51
    assert losses["beta"].item() == pytest.approx(5.0 * 0.1 ** (1 / 51))
    assert losses["loss_sup"].item() == pytest.approx(losses["loss_seg"].item() + losses["loss_seg_dice"].item())
    losses["loss"].backward()
    with torch.no_grad():
        for p in method.network.parameters():
            p.sub_(0.1 * p.grad if p.grad is not None else 0.0)
    hook = method.hooks()[HOOK_OPTIMIZER_STEPPED]
    hook(1)  # decay min(1 - 1/2, 0.99) = 0.5: teacher = midpoint of old copy and updated student
    first = next(method.network.parameters())
    assert torch.allclose(next(method.teacher.parameters()), first + 0.05 * first.grad)
    only_sup = method.compute_losses(labeled, None, iteration=4)
    assert set(only_sup) == {"loss", "loss_sup", "loss_seg", "loss_seg_dice"}


def test_dycon_schedules_in_iterations_and_static_beta():
    method = _tiny_method()
    assert method.beta(0) == pytest.approx(5.0)
    assert method.beta(1) == pytest.approx(5.0)  # same epoch (ipe 2)
    assert method.beta(100) == pytest.approx(5.0 * 0.1 ** (50 / 51))  # epoch 50 of E_max 51 = 0.5237
    assert method.fecl_threshold(0) == pytest.approx(0.301348, abs=1e-6)
    assert method.fecl_threshold(3000) == pytest.approx(0.5)  # 1500 epochs x 2 iterations
    assert _tiny_method(static_beta=0.5).beta(0) == 0.5


def test_dycon_ground_truth_mode_explains_data_contract():
    method = _tiny_method(fecl_label_source="ground_truth")
    labeled, unlabeled = _tiny_batches()
    with pytest.raises(ValueError, match="data contract"):
        method.compute_losses(labeled, unlabeled, iteration=0)
    # with labels present (direct diagnostic call) the official behaviour runs
    unlabeled["label"] = torch.zeros(2, 1, 32, 16, 16)
    assert torch.isfinite(method.compute_losses(labeled, unlabeled, iteration=0)["loss"])
    with pytest.raises(ValueError, match="fecl_label_source"):
        _tiny_method(fecl_label_source="oracle")
