"""ALHVR (alhvr.md): every component on hand-made inputs, the two networks, one method step, inspection helpers.

Expected values are computed by hand (the computation is in the comment next to each assertion).
"""

from __future__ import annotations

import math
import random

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.losses import DiceLoss
from torch import nn

from common.engines.inspection import save_region_maps
from common.inferers import alhvr_acdc_predict_volume, alhvr_sliding_window_3d
from common.losses.alhvr import (
    ALHVRSupervisedLoss,
    alhvr_adaptive_threshold,
    alhvr_cgcpcl_loss,
    alhvr_confidence,
    alhvr_dice_loss,
    alhvr_dtct_loss,
    alhvr_dynamic_teacher,
    alhvr_masked_entropy_mean,
    alhvr_prototype_logits,
    alhvr_prototypes,
    alhvr_region_masks,
    alhvr_sharpen,
    alhvr_step_losses,
    alhvr_supervised_loss,
    alhvr_upsample_features,
)
from common.methods.alhvr import ALHVR, REGION_CODES, alhvr_region_map
from common.metrics.paper import alhvr_acdc_class_metrics, alhvr_val_metric
from common.networks.alhvr import (
    ALHVRUNet2D,
    ALHVRVNet3D,
    alhvr_feature_dropout,
    alhvr_feature_noise,
    alhvr_key_map,
    alhvr_perturb_features,
)
from common.networks.unet2d import UNet2D
from common.networks.vnet import VNet


class FixedRNG:
    """Stub generator: ``random()`` -> ``u`` (or an array of ``noise_u``), ``uniform(a, b)`` -> ``ratio``."""

    def __init__(self, u: float, ratio: float = 0.8, noise_u: float = 0.75) -> None:
        self.u, self.ratio, self.noise_u = u, ratio, noise_u

    def random(self, shape=None):
        return self.u if shape is None else np.full(shape, self.noise_u)

    def uniform(self, low, high):
        return self.ratio


# ------------------------------------------------------------------------------------------------------------------
# feature perturbation (§1.1)
# ------------------------------------------------------------------------------------------------------------------


def test_feature_noise_shared_over_batch() -> None:
    x = torch.tensor([[[1.0, 2.0]], [[-3.0, 4.0]]])  # (B=2, C=1, 2)
    noise = torch.tensor([[0.1, -0.2]])
    # x + x * n: [1.1, 1.6] and [-3.3, 3.2]
    expected = torch.tensor([[[1.1, 1.6]], [[-3.3, 3.2]]])
    torch.testing.assert_close(alhvr_feature_noise(x, noise), expected)
    with pytest.raises(ValueError):
        alhvr_feature_noise(x, torch.zeros(2, 1, 2))


def test_feature_dropout_strict_threshold_per_sample() -> None:
    # sample 0: channel means [1, 2, 4] -> threshold 0.5 * 4 = 2 -> keep att < 2 (only position 0; 2 is not < 2)
    # sample 1: all means negative [-1, -2, -3] -> threshold 0.5 * -1 = -0.5 > every att -> nothing dropped
    x = torch.tensor([[[0.0, 1.0, 3.0], [2.0, 3.0, 5.0]], [[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]]])
    out = alhvr_feature_dropout(x, 0.5)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    torch.testing.assert_close(out[1], x[1])
    # one spatial position with att > 0: att < r * att is false -> everything dropped
    single = torch.tensor([[[2.0], [4.0]]])
    assert torch.count_nonzero(alhvr_feature_dropout(single, 0.8)) == 0


def test_perturb_features_one_branch_for_all_levels() -> None:
    feats = [torch.rand(2, 3, 4, 4) + 0.1, torch.rand(2, 5, 2, 2) + 0.1]
    # u = 0.7 > 0.5 -> dropout with ratio 0.8 on every level
    dropped = alhvr_perturb_features(feats, FixedRNG(0.7, ratio=0.8))
    for f, d in zip(feats, dropped, strict=True):
        torch.testing.assert_close(d, alhvr_feature_dropout(f, 0.8))
    # u = 0.5 is not > 0.5 -> noise; noise_u = 0.75 -> noise = -0.3 + 0.75 * 0.6 = 0.15 everywhere -> x * 1.15
    noisy = alhvr_perturb_features(feats, FixedRNG(0.5, noise_u=0.75))
    for f, n in zip(feats, noisy, strict=True):
        torch.testing.assert_close(n, f * 1.15)


def test_perturb_features_default_uses_official_global_generators() -> None:
    feats = [torch.rand(2, 3, 4, 4) + 0.1, torch.rand(2, 4, 2, 2) + 0.1]
    random.seed(0)  # random.random() = 0.844 > 0.5 -> dropout branch
    np.random.seed(3)
    out = alhvr_perturb_features(feats, None)
    random.seed(0)
    assert random.random() > 0.5
    np.random.seed(3)
    ratios = [np.random.uniform(0.7, 0.9) for _ in feats]  # one NumPy draw per level
    for f, o, r in zip(feats, out, ratios, strict=True):
        torch.testing.assert_close(o, alhvr_feature_dropout(f, r))
    random.seed(1)  # random.random() = 0.134 -> noise branch, torch's global generator
    torch.manual_seed(5)
    out = alhvr_perturb_features(feats, None)
    torch.manual_seed(5)
    for f, o in zip(feats, out, strict=True):
        noise = torch.distributions.Uniform(-0.3, 0.3).sample(f.shape[1:])
        torch.testing.assert_close(o, f + f * noise)


def test_perturb_features_torch_generator_is_reproducible() -> None:
    feats = [torch.rand(1, 2, 4, 4)]
    a = alhvr_perturb_features(feats, torch.Generator().manual_seed(7))
    b = alhvr_perturb_features(feats, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a[0], b[0])


# ------------------------------------------------------------------------------------------------------------------
# threshold and regions (§2)
# ------------------------------------------------------------------------------------------------------------------


def test_confidence_ties_take_lowest_index() -> None:
    prob = torch.tensor([[[0.4], [0.4], [0.2]]])  # (1, K=3, 1)
    conf, pseudo = alhvr_confidence(prob)
    assert conf.item() == pytest.approx(0.4) and pseudo.item() == 0 and pseudo.dtype == torch.int64


def test_adaptive_threshold_truncates_k() -> None:
    values = torch.arange(90, dtype=torch.float32).reshape(2, 5, 9) / 100
    # N = 90, beta = 0.7 -> k = trunc(62.999...) = 62 (not 63); c = values; gamma = mean(0..61) / 100 = 0.305
    gamma = alhvr_adaptive_threshold(values, values, 0.7)
    assert gamma.dim() == 0 and not gamma.requires_grad
    assert gamma.item() == pytest.approx(0.305, abs=1e-6)
    # the two confidences are averaged: (0.2 + 0.6) / 2 = 0.4 everywhere
    gamma = alhvr_adaptive_threshold(torch.full((1, 4), 0.2), torch.full((1, 4), 0.6, requires_grad=True), 0.5)
    assert gamma.item() == pytest.approx(0.4) and not gamma.requires_grad
    with pytest.raises(ValueError):  # N * beta = 0.8 -> k = 0 (the official code would give NaN)
        alhvr_adaptive_threshold(torch.ones(1, 1), torch.ones(1, 1), 0.8)


def test_region_masks_code_inequalities_and_partition() -> None:
    conf_a = torch.tensor([[0.5, 0.5, 0.3, 0.9, 0.3, 0.9]])
    conf_b = torch.tensor([[0.9, 0.5, 0.3, 0.3, 0.5, 0.9]])
    o1, o2a, o2b, o3 = alhvr_region_masks(conf_a, conf_b, torch.tensor(0.5))
    # pixel 0: a = γ (<= γ) and b > γ -> Ω2_a; pixel 1: a = b = γ -> tie, Ω1; pixel 2: both < γ -> Ω3;
    # pixel 3: b < γ, a > γ -> Ω2_b; pixel 4: a < γ, b = γ -> not Ω2_a (b not > γ), not Ω3 (b not < γ) -> Ω1;
    # pixel 5: both > γ -> Ω1
    assert o2a.tolist() == [[True, False, False, False, False, False]]
    assert o2b.tolist() == [[False, False, False, True, False, False]]
    assert o3.tolist() == [[False, False, True, False, False, False]]
    assert o1.tolist() == [[False, True, False, False, True, True]]
    assert all(m.dtype == torch.bool for m in (o1, o2a, o2b, o3))
    assert torch.equal(o1.int() + o2a.int() + o2b.int() + o3.int(), torch.ones(1, 6, dtype=torch.int32))


# ------------------------------------------------------------------------------------------------------------------
# DTCT (§3)
# ------------------------------------------------------------------------------------------------------------------


def test_sharpen_values_and_limits() -> None:
    p = torch.tensor([0.5, 0.8, 0.3, 0.0, 1.0])
    out = alhvr_sharpen(p, 0.5)
    # T = 0.5 -> power 2: 0.25/0.5 = 0.5; 0.64/(0.64+0.04) = 0.941176; 0.09/(0.09+0.49) = 0.155172; 0 -> 0; 1 -> 1
    torch.testing.assert_close(out, torch.tensor([0.5, 0.64 / 0.68, 0.09 / 0.58, 0.0, 1.0]))
    # T = 0.1, no renormalisation: [0.5, 0.3, 0.2] -> [0.5, 0.3^10/(0.3^10+0.7^10), 0.2^10/(0.2^10+0.8^10)]
    row = alhvr_sharpen(torch.tensor([0.5, 0.3, 0.2]))
    expected = [0.5, 0.3**10 / (0.3**10 + 0.7**10), 0.2**10 / (0.2**10 + 0.8**10)]
    torch.testing.assert_close(row, torch.tensor(expected))
    assert row.sum().item() == pytest.approx(0.500210, abs=1e-6)  # does not sum to 1
    # T -> 0 (0.01): a hard 0/1 threshold at 0.5, still finite
    hard = alhvr_sharpen(torch.tensor([0.45, 0.55, 0.5]), 0.01)
    assert hard[0].item() < 1e-6 and hard[1].item() > 1 - 1e-6 and hard[2].item() == pytest.approx(0.5)
    assert torch.isfinite(hard).all()


def test_dynamic_teacher_strict_with_ties_to_b() -> None:
    a = torch.tensor([[[0.9, 0.6], [0.1, 0.4]]])  # pixel 0 conf 0.9, pixel 1 conf 0.6
    b = torch.tensor([[[0.2, 0.6], [0.8, 0.4]]])  # pixel 0 conf 0.8, pixel 1 conf 0.6 (tie)
    t = alhvr_dynamic_teacher(a, b)
    torch.testing.assert_close(t, torch.tensor([[[0.9, 0.6], [0.1, 0.4]]]))
    # pixel 1 tie -> b's vector (equal here by value, so flip b's second pixel to make it visible)
    b2 = torch.tensor([[[0.2, 0.4], [0.8, 0.6]]])
    t2 = alhvr_dynamic_teacher(a, b2)
    torch.testing.assert_close(t2[0, :, 1], torch.tensor([0.4, 0.6]))


def test_masked_entropy_mean_over_all_pixels() -> None:
    prob = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]])  # (U=1, K=2, 2 pixels)
    mask = torch.tensor([[True, False]])
    # pixel 0: -2 * 0.5 * ln(0.5 + 1e-6) = 0.6931452; pixel 1 masked to q = 0 -> 0; mean over 2 pixels
    expected = -math.log(0.5 + 1e-6) / 2
    assert alhvr_masked_entropy_mean(prob, mask).item() == pytest.approx(expected, rel=1e-6)


def test_dtct_loss_hand_values_and_gradients() -> None:
    prob_pert = torch.tensor([[[0.7, 0.2], [0.3, 0.8]]], requires_grad=True)
    prob_clean = torch.tensor([[[0.5, 0.9], [0.5, 0.1]]])
    teacher = torch.tensor([[[0.5, 0.9], [0.5, 0.1]]], requires_grad=True)
    omega3 = torch.tensor([[True, False]])
    out = alhvr_dtct_loss(prob_pert, prob_clean, teacher, omega3)
    # pixel 0 only: sharpen([0.5, 0.5]) = [0.5, 0.5]; (0.7-0.5)^2 + (0.3-0.5)^2 = 0.08, / 1 masked pixel
    assert out["mse"].item() == pytest.approx(0.08, rel=1e-5)
    # entropies averaged over both pixels: clean -ln(0.500001)/2; pert -(0.7 ln 0.700001 + 0.3 ln 0.300001)/2
    ent_clean = -math.log(0.5 + 1e-6) / 2
    ent_pert = -(0.7 * math.log(0.7 + 1e-6) + 0.3 * math.log(0.3 + 1e-6)) / 2
    assert out["ent_clean"].item() == pytest.approx(ent_clean, rel=1e-5)
    assert out["ent_pert"].item() == pytest.approx(ent_pert, rel=1e-5)
    assert out["total"].item() == pytest.approx(0.08 + ent_clean + ent_pert, rel=1e-5)
    out["mse"].backward()
    # the teacher is not detached: d mse / d teacher at pixel 0 = -2 (p - s) * sharpen'(0.5) != 0
    assert teacher.grad[0, :, 0].abs().sum() > 0 and teacher.grad[0, :, 1].abs().sum() == 0


def test_dtct_loss_empty_mask_is_zero_without_gradient() -> None:
    prob_pert = torch.softmax(torch.randn(2, 3, 4, 4), 1).requires_grad_(True)
    prob_clean = torch.softmax(torch.randn(2, 3, 4, 4), 1).requires_grad_(True)
    out = alhvr_dtct_loss(prob_pert, prob_clean, prob_clean, torch.zeros(2, 4, 4, dtype=torch.bool))
    assert all(v.item() == 0.0 for v in out.values())
    out["total"].backward()
    assert prob_pert.grad.abs().max() == 0 and prob_clean.grad.abs().max() == 0


# ------------------------------------------------------------------------------------------------------------------
# CG-CPCL (§4)
# ------------------------------------------------------------------------------------------------------------------


def test_upsample_features_modes() -> None:
    const = torch.full((1, 2, 2, 2), 3.0)
    up = alhvr_upsample_features(const, (8, 8))
    assert up.shape == (1, 2, 8, 8) and torch.allclose(up, torch.full_like(up, 3.0))
    ramp = torch.tensor([[[[0.0, 1.0]]]])  # (1, 1, 1, 2) -> width 4, align_corners=False: [0, 0.25, 0.75, 1]
    torch.testing.assert_close(alhvr_upsample_features(ramp, (1, 4))[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert alhvr_upsample_features(torch.ones(1, 2, 2, 2, 2), (4, 4, 4)).shape == (1, 2, 4, 4, 4)


def test_prototypes_constant_feature_and_absent_class() -> None:
    feat = torch.full((2, 1, 1, 2), 3.0)  # U = 2, C = 1, two pixels, constant 3
    pseudo = torch.tensor([[[0, 0]], [[0, 1]]])
    proto = alhvr_prototypes(feat, pseudo, 3)
    # class 0: (6 / (2 + 1e-5) + 3 / (1 + 1e-5)) / 2; class 1: (0 + 3 / (1 + 1e-5)) / 2 (divided by U = 2 although
    # only sample 1 has it); class 2 absent -> zero prototype
    expected = [(6 / (2 + 1e-5) + 3 / (1 + 1e-5)) / 2, 3 / (1 + 1e-5) / 2, 0.0]
    torch.testing.assert_close(proto[:, 0], torch.tensor(expected))
    assert proto.shape == (3, 1)


def test_prototype_logits_cosine_and_zero_prototype() -> None:
    feat = torch.tensor([[[[2.0]], [[0.0]]]])  # (1, C=2, 1, 1) feature (2, 0)
    protos = torch.tensor([[1.0, 0.0], [0.0, 5.0], [0.0, 0.0]])
    z = alhvr_prototype_logits(feat, protos, scaler=2.0)
    # cos = [1, 0, 0 (zero prototype)] x scaler 2
    torch.testing.assert_close(z[0, :, 0, 0], torch.tensor([2.0, 0.0, 0.0]))


def _cgcpcl_case():
    # U = 2 samples of one pixel; prototypes e0, e1; sample 0 feature e0 -> z = [1, 0]; sample 1 feature e1 -> [0, 1]
    feat = torch.tensor([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])
    protos = torch.eye(2)
    pseudo = torch.zeros(2, 1, 1, dtype=torch.int64)  # teacher says class 0 for both
    return feat, protos, pseudo


def test_cgcpcl_cross_sample_quirk_and_intended_form() -> None:
    feat, protos, pseudo = _cgcpcl_case()
    mask = torch.tensor([[[True]], [[False]]])
    ce0, ce1 = math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))  # CE([1,0], 0) = 0.3133, CE([0,1], 0) = 1.3133
    ce, cos = alhvr_cgcpcl_loss(feat, protos, pseudo, mask)
    # code: Σ_s (Σ_u m)(Σ_u ce) / Σ m = 1 * (ce0 + ce1) / 1
    assert ce.item() == pytest.approx(ce0 + ce1, rel=1e-5)
    # cos: only sample 0 masked: (1 - 1) + (1 - 0) = 1, mean over U*K*S = 4 elements -> 0.25
    assert cos.item() == pytest.approx(0.25, rel=1e-6)
    ce_intended, cos_intended = alhvr_cgcpcl_loss(feat, protos, pseudo, mask, cross_sample_mask=False)
    assert ce_intended.item() == pytest.approx(ce0, rel=1e-5) and cos_intended.item() == pytest.approx(0.25)


def test_cgcpcl_single_sample_quirk_inert_and_empty_mask() -> None:
    feat, protos, pseudo = _cgcpcl_case()
    mask = torch.tensor([[[True]]])
    a = alhvr_cgcpcl_loss(feat[:1], protos, pseudo[:1], mask, cross_sample_mask=True)
    b = alhvr_cgcpcl_loss(feat[:1], protos, pseudo[:1], mask, cross_sample_mask=False)
    assert a[0].item() == pytest.approx(b[0].item()) and a[1].item() == pytest.approx(b[1].item())
    feat = feat.clone().requires_grad_(True)
    ce, cos = alhvr_cgcpcl_loss(feat, protos, pseudo, torch.zeros(2, 1, 1, dtype=torch.bool))
    assert ce.item() == 0.0 and cos.item() == 0.0
    (ce + cos).backward()
    assert feat.grad.abs().max() == 0


# ------------------------------------------------------------------------------------------------------------------
# supervised loss (§5)
# ------------------------------------------------------------------------------------------------------------------


def test_dice_code_perfect_and_absent_class() -> None:
    label = torch.tensor([[[0, 1], [1, 0]]])  # classes 0 and 1 present, class 2 absent
    prob = torch.nn.functional.one_hot(label, 3).permute(0, 3, 1, 2).float()
    # perfect: classes 0, 1 -> 1 - 2/(2+2) = 0.5 each; class 2 absent, no prediction -> 1 - 0/1e-10 = 1; mean 2/3
    assert alhvr_dice_loss(prob, label, 3).item() == pytest.approx(2 / 3, rel=1e-6)
    # a channel axis of 1 on the label is accepted
    assert alhvr_dice_loss(prob, label[:, None], 3).item() == pytest.approx(2 / 3, rel=1e-6)


def test_dice_code_equals_monai_affine_identity() -> None:
    torch.manual_seed(0)
    prob = torch.softmax(torch.randn(3, 4, 6, 5), 1)
    label = torch.randint(0, 4, (3, 6, 5))
    monai = DiceLoss(
        include_background=True,
        to_onehot_y=True,
        softmax=False,
        squared_pred=True,
        batch=True,
        smooth_nr=0.0,
        smooth_dr=1e-10,
    )(prob, label[:, None])
    assert alhvr_dice_loss(prob, label, 4).item() == pytest.approx(0.5 + 0.5 * monai.item(), rel=1e-5)


def test_supervised_loss_uniform_logits() -> None:
    label = torch.tensor([[[0, 0], [0, 1]]])  # n0 = 3, n1 = 1, N = 4, K = 2
    ce, dice, total = alhvr_supervised_loss(torch.zeros(1, 2, 2, 2), label, 2)
    # p = 1/2 everywhere: CE = ln 2; d_c = 1 - (n_c/2) / (N/4 + n_c): d0 = 1 - 1.5/4 = 0.625, d1 = 1 - 0.5/2 = 0.75
    assert ce.item() == pytest.approx(math.log(2), rel=1e-6)
    assert dice.item() == pytest.approx((0.625 + 0.75) / 2, rel=1e-6)
    assert total.item() == pytest.approx(math.log(2) + 0.6875, rel=1e-6)
    assert ALHVRSupervisedLoss(2)(torch.zeros(1, 2, 2, 2), label[:, None].float()).item() == pytest.approx(total.item())


# ------------------------------------------------------------------------------------------------------------------
# one step (§6, §10)
# ------------------------------------------------------------------------------------------------------------------


def _outputs(batch: int, k: int = 4, size: int = 8, c: int = 3, seed: int = 0, uniform_pert: bool = False):
    gen = torch.Generator().manual_seed(seed)
    lc = torch.randn(batch, k, size, size, generator=gen, requires_grad=True)
    lp = torch.zeros(batch, k, size, size) if uniform_pert else torch.randn(batch, k, size, size, generator=gen)
    fc = torch.randn(batch, c, size // 2, size // 2, generator=gen, requires_grad=True)
    fp = torch.randn(batch, c, size // 2, size // 2, generator=gen)
    return lc, lp.requires_grad_(True), fc, fp.requires_grad_(True)


def test_step_losses_keys_weight_and_total() -> None:
    out_a, out_b = _outputs(4, seed=0), _outputs(4, seed=1)
    label = torch.randint(0, 4, (4, 8, 8))
    terms = alhvr_step_losses(out_a, out_b, label, 2, 4, 0, 0.8)
    # λ(0) = 0.1 * exp(-5) = 6.7379e-4; λ(14999) = 0.1 * exp(-5 (1 - 99/200)^2) = 2.79396e-2
    assert terms["weight"].item() == pytest.approx(6.7379e-4, rel=1e-4)
    later = alhvr_step_losses(out_a, out_b, label, 2, 4, 14999, 0.8)
    assert later["weight"].item() == pytest.approx(2.79396e-2, rel=1e-4)
    for x in ("a", "b"):
        expected = terms[f"sup_{x}"] + terms["weight"] * (terms[f"dtct_{x}"] + terms[f"cgcpcl_{x}"])
        torch.testing.assert_close(terms[f"loss_{x}"], expected)
    torch.testing.assert_close(terms["loss"], terms["loss_a"] + terms["loss_b"])
    assert terms["omega3"].shape == (2, 8, 8) and terms["prototypes_a"].shape == (4, 3)
    assert all(torch.isfinite(torch.as_tensor(v, dtype=torch.float32)).all() for v in terms.values())
    # the unlabeled label rows are ignored
    other = alhvr_step_losses(out_a, out_b, label[:2], 2, 4, 0, 0.8)
    torch.testing.assert_close(other["loss"], terms["loss"])


def test_step_losses_empty_regions_give_no_unsupervised_gradient() -> None:
    # uniform perturbed logits -> every confidence 1/4 -> γ = 1/4 -> all ties -> Ω1 everywhere, Ω2/Ω3 empty
    out_a, out_b = _outputs(3, uniform_pert=True, seed=0), _outputs(3, uniform_pert=True, seed=1)
    terms = alhvr_step_losses(out_a, out_b, torch.randint(0, 4, (3, 8, 8)), 1, 4, 0, 0.8)
    assert terms["gamma"].item() == 0.25 and bool(terms["omega1"].all())
    for x in ("a", "b"):
        assert terms[f"dtct_{x}"].item() == 0.0 and terms[f"cgcpcl_{x}"].item() == 0.0
    (terms["loss_a"] - terms["sup_a"] + terms["loss_b"] - terms["sup_b"]).backward()
    for out in (out_a, out_b):
        for tensor in out:
            assert tensor.grad is None or tensor.grad.abs().max() == 0


def test_step_losses_switches() -> None:
    out_a, out_b = _outputs(4, seed=2), _outputs(4, seed=3)
    label = torch.randint(0, 4, (4, 8, 8))
    terms = alhvr_step_losses(out_a, out_b, label, 2, 4, 0, 0.8, detach_teacher=True, detach_prototypes=True)
    assert not terms["teacher"].requires_grad and not terms["prototypes_a"].requires_grad
    base = alhvr_step_losses(out_a, out_b, label, 2, 4, 0, 0.8)
    intended = alhvr_step_losses(out_a, out_b, label, 2, 4, 0, 0.8, cross_sample_mask=False)
    torch.testing.assert_close(intended["cgcpcl_cos_a"], base["cgcpcl_cos_a"])  # only the CE term changes
    assert base["teacher"].requires_grad and base["prototypes_b"].requires_grad


# ------------------------------------------------------------------------------------------------------------------
# networks (§1)
# ------------------------------------------------------------------------------------------------------------------


def _official_unet_keys() -> list[str]:
    """State-dict keys of the official ``UNet_fea_aux`` (alhvr.md §1.2), in registration order."""
    conv, bn = ("weight", "bias"), ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def block(prefix: str) -> list[str]:
        keys = []
        for index, names in (("0", conv), ("1", bn), ("4", conv), ("5", bn)):
            keys += [f"{prefix}.conv_conv.{index}.{n}" for n in names]
        return keys

    keys = block("encoder.in_conv")
    for k in range(1, 5):
        keys += block(f"encoder.down{k}.maxpool_conv.1")
    for k in range(1, 5):
        keys += [f"decoder.up{k}.conv1x1.{n}" for n in conv] + block(f"decoder.up{k}.conv")
    return keys + [f"decoder.out_conv.{n}" for n in conv]


def _official_vnet_keys() -> list[str]:
    """State-dict keys of the official ``VNet_fea_aux`` (alhvr.md §1.3), DataParallel-prefixed."""
    conv, bn = ("weight", "bias"), ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def stage(prefix: str, n: int) -> list[str]:
        keys = []
        for i in range(n):
            keys += [f"{prefix}.conv.{3 * i}.{k}" for k in conv] + [f"{prefix}.conv.{3 * i + 1}.{k}" for k in bn]
        return keys

    def resample(prefix: str) -> list[str]:
        return [f"{prefix}.conv.0.{k}" for k in conv] + [f"{prefix}.conv.1.{k}" for k in bn]

    keys = stage("encoder.block_one", 1) + resample("encoder.block_one_dw") + stage("encoder.block_two", 2)
    keys += resample("encoder.block_two_dw") + stage("encoder.block_three", 3) + resample("encoder.block_three_dw")
    keys += stage("encoder.block_four", 3) + resample("encoder.block_four_dw") + stage("encoder.block_five", 3)
    keys += resample("decoder.block_five_up") + stage("decoder.block_six", 3) + resample("decoder.block_six_up")
    keys += stage("decoder.block_seven", 3) + resample("decoder.block_seven_up") + stage("decoder.block_eight", 2)
    keys += resample("decoder.block_eight_up") + stage("decoder.block_nine", 1)
    keys += [f"decoder.out_conv.{k}" for k in conv]
    return ["module." + k for k in keys]


@pytest.mark.parametrize(
    ("cls", "params", "tensors", "entries", "official"),
    [(ALHVRUNet2D, 1_813_764, 82, 136, _official_unet_keys), (ALHVRVNet3D, 9_448_866, 118, 205, _official_vnet_keys)],
)
def test_network_sizes_and_official_key_map(cls, params, tensors, entries, official) -> None:
    net = cls()
    assert sum(p.numel() for p in net.parameters()) == params
    assert len(list(net.parameters())) == tensors and len(net.state_dict()) == entries
    keys = official()
    assert len(keys) == entries
    # official checkpoint = our tensors under official names in registration order; the map must restore our names
    ours = net.state_dict()
    checkpoint = {k: v.clone() + 1 for k, v in zip(keys, ours.values(), strict=True)}
    mapped = alhvr_key_map(checkpoint)
    assert list(mapped) == list(ours)
    net.load_state_dict(mapped, strict=True)
    first = next(iter(checkpoint.values()))
    torch.testing.assert_close(next(iter(net.state_dict().values())), first)


def test_unet_registration_order_and_shapes() -> None:
    net = ALHVRUNet2D()
    shapes = [tuple(p.shape) for p in net.parameters()]
    # enc0: conv1 W, b, BN1 γ, β, conv2 W, b, BN2 γ, β; up1 starts with the 1x1 conv 256 -> 128; out conv 16 -> 4
    assert shapes[:8] == [(16, 1, 3, 3), (16,), (16,), (16,), (16, 16, 3, 3), (16,), (16,), (16,)]
    assert shapes[40:42] == [(128, 256, 1, 1), (128,)]
    assert shapes[-2:] == [(4, 16, 3, 3), (4,)]
    net.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        out = net(x)
        logits_c, logits_p, feat_c, feat_p = net.forward_train(x, perturbation=lambda f: f)
        plain = UNet2D()
        plain.load_state_dict(net.state_dict())
        reference = plain.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4, 32, 32)
    assert feat_c.shape == (2, 64, 4, 4)  # /8, 64 channels (up2's 1x1 conv output)
    torch.testing.assert_close(out, reference)  # decode re-composes the shared decoder exactly
    torch.testing.assert_close(logits_p, logits_c)  # identity perturbation, eval mode
    torch.testing.assert_close(feat_p, feat_c)


def test_vnet_forward_train_shapes_and_decoder_equivalence() -> None:
    net = ALHVRVNet3D().eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = net(x)
        logits_c, logits_p, feat_c, feat_p = net.forward_train(x)
        plain = VNet(1, 2, 16, "batchnorm", has_dropout=True)
        plain.load_state_dict(net.state_dict())
        reference = plain.eval()(x)
    assert out.shape == logits_p.shape == (1, 2, 16, 16, 16)
    assert feat_c.shape == feat_p.shape == (1, 128, 2, 2, 2)  # x6: /8, 128 channels
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(logits_c, out)


def test_forward_train_default_perturbation_follows_global_generators() -> None:
    net = ALHVRUNet2D().eval()
    x = torch.randn(2, 1, 32, 32)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    with torch.no_grad():
        got = net.forward_train(x)
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        feats = net.encode(x)
        expected = net.decode(alhvr_perturb_features(feats, None))
    torch.testing.assert_close(got[1], expected[0])
    torch.testing.assert_close(got[3], expected[1])


@pytest.mark.parametrize(("cls", "shape"), [(ALHVRUNet2D, (1, 1, 32, 32)), (ALHVRVNet3D, (1, 1, 16, 16, 16))])
def test_networks_torchscript_single_tensor(cls, shape) -> None:
    net = cls().eval()
    scripted = torch.jit.script(net)
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_vnet_decoder_dropout_differs_between_passes_in_training() -> None:
    net = ALHVRVNet3D().train()
    torch.manual_seed(0)
    logits_c, logits_p, _, _ = net.forward_train(torch.randn(2, 1, 16, 16, 16), perturbation=lambda f: f)
    # identical features, but the decoder's Dropout3d is drawn independently in each pass
    assert not torch.allclose(logits_c, logits_p)


# ------------------------------------------------------------------------------------------------------------------
# the method
# ------------------------------------------------------------------------------------------------------------------


def _batches(nl: int = 2, nu: int = 2, size: int = 32):
    gen = torch.Generator().manual_seed(0)
    labeled = {
        "image": torch.randn(nl, 1, size, size, generator=gen),
        "label": torch.randint(0, 4, (nl, 1, size, size), generator=gen).float(),
    }
    return labeled, {"image": torch.randn(nu, 1, size, size, generator=gen)}


def test_alhvr_step_returns_all_losses() -> None:
    torch.manual_seed(0)
    method = ALHVR(ALHVRUNet2D(), ALHVRUNet2D(), num_classes=4, beta=0.8, keep_regions=True)
    labeled, unlabeled = _batches()
    method.train()
    losses = method.compute_losses(labeled, unlabeled, 0)
    expected = {
        "loss",
        "loss_sup",
        "loss_sup_a",
        "loss_sup_b",
        "loss_dtct_a",
        "loss_dtct_b",
        "loss_dtct_mse_a",
        "loss_dtct_mse_b",
        "loss_cgcpcl_ce_a",
        "loss_cgcpcl_ce_b",
        "loss_cgcpcl_cos_a",
        "loss_cgcpcl_cos_b",
        "gamma",
        "cons_weight",
        "frac_omega1",
        "frac_omega2_a",
        "frac_omega2_b",
        "frac_omega3",
    }
    assert set(losses) == expected
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert losses["loss"].requires_grad and not any(v.requires_grad for k, v in losses.items() if k != "loss")
    fractions = sum(losses[f"frac_{k}"] for k in ("omega1", "omega2_a", "omega2_b", "omega3"))
    assert fractions.item() == pytest.approx(1.0)
    losses["loss"].backward()
    # both networks receive gradients from the one total
    assert all(any(p.grad is not None for p in net.parameters()) for net in (method.network, method.network_2))
    assert method.last_regions.shape == (2, 32, 32) and method.last_regions.dtype == torch.uint8
    assert 0.0 < method.last_gamma < 1.0


def test_alhvr_supervised_only_and_distinct_networks() -> None:
    net = ALHVRUNet2D()
    with pytest.raises(ValueError):
        ALHVR(net, net, num_classes=4)
    method = ALHVR(net, ALHVRUNet2D(), num_classes=4)
    labeled, _ = _batches(nl=2)
    losses = method.compute_losses(labeled, None, 0)
    assert set(losses) == {"loss", "loss_sup", "loss_sup_a", "loss_sup_b"}
    torch.testing.assert_close(losses["loss"].detach(), losses["loss_sup_a"] + losses["loss_sup_b"])
    assert method.last_regions is None


# ------------------------------------------------------------------------------------------------------------------
# inspection and evaluation helpers
# ------------------------------------------------------------------------------------------------------------------


def test_region_map_codes_and_saving(tmp_path) -> None:
    conf_a = torch.tensor([[[0.5, 0.5, 0.3, 0.9]]])
    conf_b = torch.tensor([[[0.9, 0.5, 0.3, 0.3]]])
    masks = alhvr_region_masks(conf_a, conf_b, 0.5)
    regions = alhvr_region_map(*masks)
    # Ω2_a, Ω1 (tie), Ω3, Ω2_b
    codes = [REGION_CODES[k] for k in ("omega2_a", "omega1", "omega3", "omega2_b")]
    assert regions.tolist() == [[codes]]
    paths = save_region_maps(regions, tmp_path / "regions", "regions", 200)
    assert [p.name for p in paths] == ["regions_iter000200_0.nii.gz"]
    np.testing.assert_array_equal(np.asarray(nib.load(str(paths[0])).dataobj), regions[0].numpy())
    with pytest.raises(ValueError):
        alhvr_region_map(masks[0], masks[0], masks[2], masks[3])  # not a partition


class _SignNet(nn.Module):
    """Two-class stub: logits (-x, x), so the prediction is ``x > 0``."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.cat([-x, x], dim=1) + self.dummy


def test_acdc_predict_volume_and_class_metrics() -> None:
    image = np.stack([np.ones((20, 24)), -np.ones((20, 24))]).astype(np.float32)
    net = _SignNet().train()
    pred = alhvr_acdc_predict_volume(net, image, patch=(32, 32))
    assert pred.shape == (2, 20, 24) and pred[0].all() and not pred[1].any()
    assert net.training  # mode restored
    gt = np.zeros((2, 20, 24), dtype=np.int64)
    gt[0] = 1
    metrics = alhvr_acdc_class_metrics(pred, gt, num_classes=4)
    # class 1 predicted exactly: (1, 1, 0, 0); classes 2 and 3 never predicted -> (0, 0, 0, 0)
    np.testing.assert_allclose(metrics, [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_sliding_window_and_val_metric() -> None:
    image = -np.ones((20, 18, 17), dtype=np.float32)
    image[4:10, 5:12, 3:9] = 1.0
    label = alhvr_sliding_window_3d(_SignNet(), image, patch=(16, 16, 16), stride_xy=8, stride_z=8)
    np.testing.assert_array_equal(label, (image > 0).astype(np.int64))
    assert alhvr_val_metric(image > 0, label > 0) == pytest.approx((1.0, 0.0))
    assert alhvr_val_metric(np.zeros((4, 4, 4)), label[:4, :4, :4] > 0) == (0.0, 0.0)
