"""STLU-Net (stlu.md): feature mixing, channel dropout, Dice losses, gamma ramp, network and method."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from common.losses.stlu import (
    STLUDiceLoss,
    consistency_weight,
    cross_pseudo_dice_loss,
    stlu_dice_loss,
    stlu_gamma,
    stlu_losses,
    symmetric_supervised_dice_loss,
)
from common.methods.stlu import STLU
from common.networks.stlu import STLUNet, parse_stlu_levels
from common.networks.stlu_mixing import (
    channel_dropout,
    channel_similarity_mix,
    channel_similarity_weights,
    mix_labeled_unlabeled,
    pair_partner_indices,
)
from common.networks.vnet import VNet

INV_SQRT2 = 1.0 / math.sqrt(2.0)


def logit_pair(p1: float) -> list[float]:
    """Two-class logits whose softmax gives foreground probability ``p1``."""
    return [0.0, math.log(p1 / (1.0 - p1))]


def two_class_logits(fg_probs: list[list[float]]) -> torch.Tensor:
    """``(B, 2, N)`` logits from per-sample foreground probabilities (1 spatial axis)."""
    rows = [[[logit_pair(p)[k] for p in sample] for k in range(2)] for sample in fg_probs]
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- 4.1 weights


def test_similarity_weights_hand_values_2d():
    # channel 0: a=[1,0,0,0], b=[1,1,0,0] -> 1 / (1 * sqrt 2); channel 1: b = 2a -> 1; channel 2: b = -a -> 0 (clamped)
    x_l = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 0.0]]]])
    x_u = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[2.0, 4.0], [6.0, 8.0]], [[-1.0, 0.0], [0.0, 0.0]]]])
    w = channel_similarity_weights(x_l, x_u)
    assert w.shape == (1, 3, 1, 1) and w.dtype == torch.float32
    assert torch.allclose(w.flatten(), torch.tensor([INV_SQRT2, 1.0, 0.0]), atol=1e-6)


def test_similarity_weights_3d_shape_dtype_and_torch_cosine():
    g = torch.Generator().manual_seed(0)
    x_l = torch.randn(2, 3, 4, 4, 2, generator=g, dtype=torch.float64)
    x_u = torch.randn(2, 3, 4, 4, 2, generator=g, dtype=torch.float64)
    w = channel_similarity_weights(x_l, x_u)
    assert w.shape == (2, 3, 1, 1, 1) and w.dtype == torch.float64
    expected = F.cosine_similarity(x_u.flatten(2), x_l.flatten(2), dim=-1, eps=1e-8).clamp(0, 1)
    assert torch.allclose(w.flatten(2)[..., 0], expected)
    half = channel_similarity_weights(x_l.half(), x_u.half())
    assert half.dtype == torch.float16 and torch.allclose(half.double(), w, atol=2e-3)


def test_similarity_weights_eps_floors_each_norm():
    # |a| = 1e-9 < eps, |b| = 10: <a,b> / (10 * 1e-8) = 1e-8 / 1e-7 = 0.1 (a floored product would give 1)
    x_l = torch.tensor([[[1e-9, 0.0]]])
    x_u = torch.tensor([[[10.0, 0.0]]])
    assert channel_similarity_weights(x_l, x_u).item() == pytest.approx(0.1, rel=1e-5)


@pytest.mark.parametrize("both", [False, True])
def test_similarity_weights_zero_channel_no_nan(both):
    x_l = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [0.0, 1.0]]]], requires_grad=True)
    u = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [0.0, 1.0]]]])
    if not both:
        u[0, 0] = torch.tensor([[1.0, 3.0], [2.0, 1.0]])
    x_u = u.clone().requires_grad_(True)
    w = channel_similarity_weights(x_l, x_u)
    assert w[0, 0].item() == 0.0 and w[0, 1].item() == pytest.approx(1.0)
    w.sum().backward()
    assert torch.isfinite(x_l.grad).all() and torch.isfinite(x_u.grad).all()
    # the mixed maps of a zero channel: w = 0, so each side takes the partner's map, also with finite gradients
    x_l.grad = x_u.grad = None
    m_l, m_u, _ = channel_similarity_mix(x_l, x_u)
    assert torch.equal(m_l[0, 0], u[0, 0]) and torch.equal(m_u[0, 0], torch.zeros(2, 2))
    (m_l.sum() + m_u.sum()).backward()
    assert torch.isfinite(x_l.grad).all() and torch.isfinite(x_u.grad).all()


def test_similarity_weights_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\(1, 2, 3\).*\(1, 2, 4\)"):
        channel_similarity_weights(torch.ones(1, 2, 3), torch.ones(1, 2, 4))
    with pytest.raises(ValueError):
        channel_similarity_weights(torch.ones(1, 2), torch.ones(1, 2))


# ---------------------------------------------------------------------------------------------- 4.2 mixing


def test_two_way_mix_hand_values():
    # a = [1, 0], b = [1, 1]: w = 1/sqrt2; l_mixed = w a + (1-w) b = [1, 1-w]; u_mixed = w b + (1-w) a = [1, w]
    x_l = torch.tensor([[[1.0, 0.0]]])
    x_u = torch.tensor([[[1.0, 1.0]]])
    m_l, m_u, w = channel_similarity_mix(x_l, x_u)
    assert w.shape == (1, 1, 1) and w.item() == pytest.approx(INV_SQRT2)
    assert torch.allclose(m_l, torch.tensor([[[1.0, 1.0 - INV_SQRT2]]]))
    assert torch.allclose(m_u, torch.tensor([[[1.0, INV_SQRT2]]]))


@pytest.mark.parametrize("detach", [True, False])
def test_two_way_mix_detach_weight(detach):
    x_l = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    x_u = torch.tensor([[[1.0, 1.0]]])
    m_l, _, _ = channel_similarity_mix(x_l, x_u, detach_weight=detach)
    m_l.sum().backward()
    constant_w = torch.full((1, 1, 2), INV_SQRT2)  # d(w a + (1-w) b)/da with w held fixed
    assert torch.allclose(x_l.grad, constant_w) == detach


# ---------------------------------------------------------------------------------------------- 4.3 pairing


@pytest.mark.parametrize(
    ("n_l", "n_u", "of_l", "of_u"),
    [(2, 2, [0, 1], [0, 1]), (2, 3, [0, 1], [0, 1, 0]), (1, 2, [0], [0, 0]), (3, 1, [0, 0, 0], [0])],
)
def test_pair_partner_indices(n_l, n_u, of_l, of_u):
    partner_of_l, partner_of_u = pair_partner_indices(n_l, n_u)
    assert partner_of_l.dtype == torch.long and partner_of_l.tolist() == of_l and partner_of_u.tolist() == of_u


@pytest.mark.parametrize(("n_l", "n_u"), [(0, 2), (2, 0)])
def test_pair_partner_indices_needs_both_kinds(n_l, n_u):
    with pytest.raises(ValueError):
        pair_partner_indices(n_l, n_u)


def test_mix_labeled_unlabeled_hand_values_one_plus_two():
    # l0 = [1, 0]; u0 = [1, 1] (w = 1/sqrt2 with l0); u1 = [0, 1] (w = 0 with l0)
    feat = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]]])
    mixed, w_l, w_u = mix_labeled_unlabeled(feat, 1)
    w = INV_SQRT2
    expected = torch.tensor([[[1.0, 1.0 - w]], [[1.0, w]], [[1.0, 0.0]]])
    assert torch.allclose(mixed, expected)
    assert torch.allclose(w_l.flatten(), torch.tensor([w])) and torch.allclose(w_u.flatten(), torch.tensor([w, 0.0]))


@pytest.mark.parametrize(("n_l", "n_u"), [(2, 2), (2, 3), (1, 2), (3, 1)])
def test_mix_labeled_unlabeled_matches_rowwise_definition(n_l, n_u):
    g = torch.Generator().manual_seed(n_l * 10 + n_u)
    feat = torch.rand(n_l + n_u, 3, 4, 2, 2, generator=g)
    mixed, w_l, w_u = mix_labeled_unlabeled(feat, n_l)
    assert mixed.shape == feat.shape and w_l.shape == (n_l, 3, 1, 1, 1) and w_u.shape == (n_u, 3, 1, 1, 1)
    for i in range(n_l):  # labeled row i with unlabeled partner i mod n_u, one sample at a time
        m, _, w = channel_similarity_mix(feat[i : i + 1], feat[n_l + i % n_u : n_l + i % n_u + 1])
        assert torch.allclose(mixed[i], m[0]) and torch.allclose(w_l[i], w[0])
    for j in range(n_u):  # unlabeled row j with labeled partner j mod n_l
        _, m, w = channel_similarity_mix(feat[j % n_l : j % n_l + 1], feat[n_l + j : n_l + j + 1])
        assert torch.allclose(mixed[n_l + j], m[0]) and torch.allclose(w_u[j], w[0])
    if n_l == n_u:
        assert torch.equal(w_l, w_u)


def test_mix_labeled_unlabeled_needs_both_kinds():
    with pytest.raises(ValueError):
        mix_labeled_unlabeled(torch.rand(2, 1, 4), 2)


# ---------------------------------------------------------------------------------------------- 4.4 dropout


def test_channel_dropout_properties():
    torch.manual_seed(0)
    x = torch.rand(4, 256, 2, 2, 2) + 0.5
    y = channel_dropout(x, 0.5)
    kept = (y != 0).flatten(2).all(-1)
    dropped = (y == 0).flatten(2).all(-1)
    assert bool((kept | dropped).all()), "a channel map was partly dropped"
    assert torch.allclose(y[kept], (2.0 * x)[kept])
    assert abs(kept.float().mean().item() - 0.5) < 0.06  # 1024 Bernoulli(0.5) draws: sd 0.016
    assert torch.equal(channel_dropout(x, 0.5, training=False), x) and torch.equal(channel_dropout(x, 0.0), x)
    y2 = channel_dropout(torch.ones(2, 64, 3, 3), 0.25)
    assert set(y2.unique().tolist()) <= {0.0, torch.tensor(4.0 / 3.0).item()}  # kept: 1 / (1 - 0.25) in float32
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError):
            channel_dropout(x, bad)


# ---------------------------------------------------------------------------------------------- 4.5-4.7 Dice


def test_stlu_dice_hand_values():
    # p1 = [.8, .6, .2, 0], t = [1, 1, 0, 0]: I = 1.4, S = 1.6 + 2 -> 1 - 2.8 / 3.6 = 0.2222
    p1 = torch.tensor([[[0.8, 0.6], [0.2, 0.0]]])
    probs = torch.stack([1 - p1, p1], dim=1)
    target = torch.tensor([[[1, 1], [0, 0]]])
    assert stlu_dice_loss(probs, target).item() == pytest.approx(1 - 2.8 / 3.6, abs=1e-6)
    # background: p0 = [.2, .4, .8, 1], t0 = [0, 0, 1, 1]: I = 1.8, S = 2.4 + 2 -> 0.1818; mean with 0.2222
    both = stlu_dice_loss(probs, target[:, None], include_background=True)
    assert both.item() == pytest.approx(((1 - 3.6 / 4.4) + (1 - 2.8 / 3.6)) / 2, abs=1e-6)
    assert stlu_dice_loss(probs, target.float()).item() == pytest.approx(1 - 2.8 / 3.6, abs=1e-6)


def test_stlu_dice_is_batch_level():
    # sample A: p = [1, 0], t = [1, 0]; sample B: p = [0, 0], t = [0, 1]. Pooled I = 1, S = 1 + 2 -> 1/3
    # (the mean of per-sample Dice losses would be (0 + 1) / 2)
    p1 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    probs = torch.stack([1 - p1, p1], dim=1)
    target = torch.tensor([[1, 0], [0, 1]])
    assert stlu_dice_loss(probs, target).item() == pytest.approx(1 / 3, abs=1e-6)


def test_stlu_dice_three_classes_and_monai_equivalence():
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(2, 3, 5, 4, generator=g), dim=1)
    target = torch.randint(0, 3, (2, 5, 4), generator=g)
    reference = DiceLoss(
        include_background=False, to_onehot_y=True, softmax=False, batch=True, smooth_nr=1e-10, smooth_dr=1e-10
    )
    assert torch.allclose(stlu_dice_loss(probs, target), reference(probs, target[:, None]), atol=1e-6)
    # class 1 alone, by hand from the definition
    t1 = (target == 1).float()
    l1 = 1 - 2 * (probs[:, 1] * t1).sum() / (probs[:, 1].sum() + t1.sum())
    t2 = (target == 2).float()
    l2 = 1 - 2 * (probs[:, 2] * t2).sum() / (probs[:, 2].sum() + t2.sum())
    assert torch.allclose(stlu_dice_loss(probs, target), (l1 + l2) / 2, atol=1e-6)


def test_stlu_dice_empty_cases():
    empty = torch.zeros(1, 2, 3)
    probs_empty = torch.stack([torch.ones(1, 2, 3), torch.zeros(1, 2, 3)], dim=1)
    assert stlu_dice_loss(probs_empty, empty.long()).item() == 0.0  # (0 + eps) / (0 + eps)
    probs_half = torch.full((1, 2, 2, 3), 0.5)
    assert stlu_dice_loss(probs_half, empty.long()).item() == pytest.approx(1.0, abs=1e-7)


def test_stlu_dice_rejects_bad_targets():
    probs = torch.full((1, 2, 2, 2), 0.5)
    for bad in (torch.full((1, 2, 2), 2), torch.full((1, 2, 2), -1), torch.full((1, 2, 2), 0.5)):
        with pytest.raises(ValueError):
            stlu_dice_loss(probs, bad)
    with pytest.raises(ValueError):
        stlu_dice_loss(probs, torch.zeros(1, 3, 2, dtype=torch.long))


def test_symmetric_supervised_dice_hand_values():
    # D-stream p1 = [.8, .6, .2, ~0] vs t = [1, 1, 0, 0] -> 0.2222; M-stream p1 = 0.5 everywhere: I = 1, S = 4 -> 0.5
    logits_d = two_class_logits([[0.8, 0.6, 0.2, 1e-12]])
    logits_m = torch.zeros(1, 2, 4, dtype=torch.float64)
    target = torch.tensor([[1, 1, 0, 0]])
    loss = symmetric_supervised_dice_loss(logits_d, logits_m, target)
    assert loss.item() == pytest.approx(1 - 2.8 / 3.6 + 0.5, abs=1e-6)
    module = STLUDiceLoss()
    assert module(logits_d, target[:, None].float()).item() == pytest.approx(1 - 2.8 / 3.6, abs=1e-6)


def test_cross_pseudo_dice_hand_values_and_no_pseudo_label_gradient():
    # D p1 = [.8, .2] -> argmax [1, 0]; M p1 = [.6, .6] -> argmax [1, 1].
    # Dice(P^d, [1,1]): I = 1.0, S = 1.0 + 2 -> 1/3; Dice(P^m, [1,0]): I = .6, S = 1.2 + 1 -> 1 - 1.2/2.2
    logits_d = two_class_logits([[0.8, 0.2]]).requires_grad_(True)
    logits_m = two_class_logits([[0.6, 0.6]]).requires_grad_(True)
    loss = cross_pseudo_dice_loss(logits_d, logits_m)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(1 / 3 + 1 - 1.2 / 2.2, abs=1e-6)
    loss.backward()
    # the gradient reaching each stream is that of its own Dice term against a constant target
    d_only = logits_d.detach().clone().requires_grad_(True)
    stlu_dice_loss(torch.softmax(d_only, 1), torch.tensor([[1, 1]])).backward()
    assert torch.allclose(logits_d.grad, d_only.grad)


def test_cross_pseudo_dice_ties_resolve_to_background():
    # M logits tie everywhere -> pseudo-label all 0 (empty): Dice(P^d, empty) with P^d = .8 -> ~1;
    # D argmax = 1 everywhere, Dice(P^m = .5, ones): I = 1, S = 1 + 2 -> 1/3
    logits_d = two_class_logits([[0.8, 0.8]])
    logits_m = torch.zeros(1, 2, 2, dtype=torch.float64)
    assert cross_pseudo_dice_loss(logits_d, logits_m).item() == pytest.approx(1.0 + 1 / 3, abs=1e-6)


def test_stlu_losses_composition():
    g = torch.Generator().manual_seed(5)
    logits_d = torch.randn(3, 2, 4, 4, generator=g)
    logits_m = torch.randn(3, 2, 4, 4, generator=g)
    label = torch.randint(0, 2, (2, 1, 4, 4), generator=g)
    out = stlu_losses(logits_d, logits_m, label, 2, 0.25)
    assert set(out) == {"loss_sup", "loss_unsup", "loss_total"}
    assert torch.allclose(out["loss_sup"], symmetric_supervised_dice_loss(logits_d[:2], logits_m[:2], label))
    assert torch.allclose(out["loss_unsup"], cross_pseudo_dice_loss(logits_d[2:], logits_m[2:]))
    assert torch.allclose(out["loss_total"], out["loss_sup"] + 0.25 * out["loss_unsup"])
    sup_only = stlu_losses(logits_d[:2], logits_m[:2], label, 2, 0.25)
    assert sup_only["loss_unsup"].item() == 0.0 and torch.equal(sup_only["loss_total"], sup_only["loss_sup"])


# ---------------------------------------------------------------------------------------------- 4.8 gamma


def test_gamma_ramp():
    e5 = math.exp(-5.0)
    ramp1 = math.exp(-5.0 * (39 / 40) ** 2)  # sigmoid_rampup(1, 40) = 0.0086247
    assert consistency_weight(0, 1.0, 40) == pytest.approx(e5)
    assert consistency_weight(149, 1.0, 40) == pytest.approx(e5)
    assert consistency_weight(150, 1.0, 40) == pytest.approx(ramp1)
    assert consistency_weight(6000, 1.0, 40) == 1.0
    # the engine's 0-based iteration t is the optimiser step t + 1
    assert stlu_gamma(0) == pytest.approx(e5)
    assert stlu_gamma(148) == pytest.approx(e5) and stlu_gamma(149) == pytest.approx(ramp1)
    assert stlu_gamma(5999) == 1.0 and stlu_gamma(20000) == 1.0
    assert stlu_gamma(0, gamma_max=2.0, rampup_length=0.0) == 2.0


# ---------------------------------------------------------------------------------------------- 4.10 network


def small_net(**kwargs) -> STLUNet:
    torch.manual_seed(0)
    return STLUNet(n_filters=4, **kwargs)


def test_parse_levels():
    assert parse_stlu_levels(["S", "I", "B"]) == (1, 2, 3, 4, 5)
    assert parse_stlu_levels(["i", "B"]) == (3, 4, 5) and parse_stlu_levels("IB") == (3, 4, 5)
    assert parse_stlu_levels([5, 1, "2"]) == (1, 2, 5) and parse_stlu_levels(()) == ()
    for bad in ([0], [6], ["X"], [1.5]):
        with pytest.raises(ValueError):
            parse_stlu_levels(bad)


def test_forward_train_shapes_and_weights():
    net = small_net(mix_levels=("I", "B")).train()
    x = torch.randn(3, 1, 16, 16, 16)
    out = net.forward_train(x, 1)
    assert out["logits_d"].shape == out["logits_m"].shape == (3, 2, 16, 16, 16)
    assert sorted(out["weights"]) == [3, 4, 5]
    w_l, w_u = out["weights"][4]
    assert w_l.shape == (1, 32, 1, 1, 1) and w_u.shape == (2, 32, 1, 1, 1)
    assert ((w_l >= 0) & (w_l <= 1)).all()
    assert net.forward_train(x, 3)["weights"] == {}  # no unlabeled rows: nothing to mix


def test_streams_identical_without_perturbation():
    # duplicating the batch for the joint decoder call leaves BatchNorm's batch mean and biased variance unchanged
    net = small_net(mix_levels=(), p_drop=0.0).train()
    x = torch.randn(4, 1, 16, 16, 16)
    out = net.forward_train(x, 2)
    plain = net(x)
    assert torch.allclose(out["logits_d"], out["logits_m"], atol=1e-5)
    assert torch.allclose(out["logits_d"], plain, atol=1e-5)


def test_semantic_transfer_reaches_unlabeled_rows_of_mixed_stream_only():
    net = small_net().eval()  # BatchNorm in eval mode: rows do not interact through batch statistics
    x = torch.randn(4, 1, 16, 16, 16)
    x2 = x.clone()
    x2[:2] = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.manual_seed(1)
        a = net.forward_train(x, 2)
        torch.manual_seed(1)
        b = net.forward_train(x2, 2)
    assert torch.allclose(a["logits_d"][2:], b["logits_d"][2:])
    assert not torch.allclose(a["logits_m"][2:], b["logits_m"][2:], atol=1e-4)


def test_strategy_and_placement_options():
    x = torch.randn(2, 1, 16, 16, 16)
    fixed = small_net(mix_strategy="fixed", mix_lambda=0.3, mix_levels=[1]).train()
    w_l, w_u = fixed.forward_train(x, 1)["weights"][1]
    assert torch.all(w_l == 0.3) and torch.all(w_u == 0.3)
    skip = small_net(mix_levels=[1], p_drop=0.0).eval()
    deep = small_net(mix_levels=[1], p_drop=0.0, mix_placement="propagate").eval()
    with torch.no_grad():
        out_skip, out_deep = skip.forward_train(x, 1), deep.forward_train(x, 1)
    assert torch.allclose(out_skip["weights"][1][0], out_deep["weights"][1][0])
    assert torch.allclose(out_skip["logits_d"], out_deep["logits_d"])
    assert not torch.allclose(out_skip["logits_m"], out_deep["logits_m"], atol=1e-5)  # F2..F5 now see the mix
    for bad in ({"p_drop": 1.0}, {"mix_strategy": "manifold"}, {"mix_placement": "x"}, {"normalization": "bn"}):
        with pytest.raises(ValueError):
            STLUNet(n_filters=4, **bad)


def test_network_scriptable_loads_into_vnet_and_checks_size():
    net = small_net().eval()
    x = torch.randn(1, 1, 16, 16, 32)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        eager = net(x)
        assert torch.allclose(scripted(x), eager, atol=1e-6)
        plain = VNet(n_filters=4).eval()
        plain.load_state_dict(net.state_dict(), strict=True)
        assert torch.allclose(plain(x), eager, atol=1e-6)
    assert list(net.state_dict()) == list(VNet().state_dict())
    with pytest.raises(ValueError):
        net(torch.randn(1, 1, 16, 16, 24))


# ---------------------------------------------------------------------------------------------- method


def stlu_batches(n_l=2, n_u=2, side=16):
    g = torch.Generator().manual_seed(7)
    label = torch.zeros(n_l, 1, side, side, side)
    label[:, :, 4:12, 4:12, 4:12] = 1.0
    image = label + 0.3 * torch.randn(n_l, 1, side, side, side, generator=g)
    unlabeled = {"image": torch.randn(n_u, 1, side, side, side, generator=g)}
    return {"image": image, "label": label}, unlabeled


def test_stlu_step_returns_all_losses_and_finite_gradients():
    net = small_net()
    method = STLU(net)
    labeled, unlabeled = stlu_batches(2, 3)
    method.train()
    losses = method.compute_losses(labeled, unlabeled, 0)
    expected = {"loss", "loss_sup", "loss_unsup", "gamma"} | {f"w_level{k}" for k in range(1, 6)}
    assert set(losses) == expected
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert losses["gamma"].item() == pytest.approx(math.exp(-5.0))
    assert losses["loss"].item() == pytest.approx(
        losses["loss_sup"].item() + math.exp(-5.0) * losses["loss_unsup"].item(), rel=1e-5
    )
    assert all(not v.requires_grad for k, v in losses.items() if k != "loss")
    losses["loss"].backward()
    for part in (net.encoder, net.decoder):
        grads = [p.grad for p in part.parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
        assert any(gr.abs().sum() > 0 for gr in grads)


def test_stlu_without_unlabeled_and_variants():
    labeled, unlabeled = stlu_batches(2, 2)
    sup_only = STLU(small_net()).compute_losses(labeled, None, 0)
    assert sup_only["loss_unsup"].item() == 0.0 and set(sup_only) == {"loss", "loss_sup", "loss_unsup", "gamma"}
    for mode in ("mix_only", "drop_only"):
        out = STLU(small_net(), supervision=mode).compute_losses(labeled, unlabeled, 10_000)
        assert out["gamma"].item() == 1.0
        assert torch.allclose(out["loss"], out["loss_sup"] + out["loss_unsup"])
    with pytest.raises(ValueError, match="p_drop"):
        STLU(small_net(), p_drop=0.3)
    STLU(small_net(mix_levels=["I", "B"]), mix_levels=[3, 4, 5], p_drop=0.5)  # consistent: accepted
    with pytest.raises(ValueError):
        STLU(small_net(), supervision="other")


def test_stlu_training_lowers_supervised_loss():
    torch.manual_seed(0)
    net = STLUNet(n_filters=4)
    method = STLU(net, iters_per_epoch=1, rampup_length=5)
    labeled, unlabeled = stlu_batches(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    history = []
    for iteration in range(5):
        method.train()
        optimizer.zero_grad()
        losses = method.compute_losses(labeled, unlabeled, iteration)
        losses["loss"].backward()
        optimizer.step()
        history.append(losses["loss_sup"].item())
    assert history[-1] < history[0]
