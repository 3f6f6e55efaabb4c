"""CoraNet (coranet.md): cost-sensitive and masked losses, inconsistency mask, method stages and snapshot refresh,
networks and the official checkpoint layout."""

import copy
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.losses import DiceLoss
from torch import nn
from torch.utils.data import DataLoader

from common.engines import SemiSupervisedTrainer
from common.engines.inspection import save_uncertainty_masks
from common.losses.coranet import (
    coranet_certain_loss,
    coranet_dice_loss,
    coranet_pseudo_labels,
    coranet_supervised_loss,
    coranet_total_loss,
    coranet_uncertain_loss,
    cost_sensitive_ce,
    cost_weight_vectors,
    hard_pred,
    inconsistency_mask,
    masked_ce,
)
from common.methods.base import HOOK_ITERATION_STARTED, HOOK_OPTIMIZER_STEPPED
from common.methods.coranet import CoraNet
from common.networks.coranet import (
    CoraOutput,
    MultiHeadSegNet,
    UNet2DTrunk,
    VNet3D,
    coranet_vnet_key_map,
    load_coranet_checkpoint,
)

LN2, LN43, LN3 = math.log(2.0), math.log(4.0 / 3.0), math.log(3.0)


def three_voxels():
    """Logits (1, 2, 1, 3): p = (.5, .5), (.25, .75), (.75, .25); labels 1, 1, 0.

    nll per voxel: ln 2, ln 4/3, ln 4/3.
    """
    logits = torch.tensor([[0.0, 0.0, LN3], [0.0, LN3, 0.0]]).view(1, 2, 1, 3)
    target = torch.tensor([[[1, 1, 0]]])
    return logits, target


# ---------------------------------------------------------------------------------------------------------------
# cost vectors and cross-entropies


def test_cost_weight_vectors_binary_and_multiclass():
    w_cons, w_rad = cost_weight_vectors(2)
    assert w_cons.tolist() == [5.0, 1.0] and w_rad.tolist() == [1.0, 5.0]
    assert w_cons.dtype == torch.float32
    w_cons, w_rad = cost_weight_vectors(4, alpha=2.0)
    assert w_cons.tolist() == [2.0, 1.0, 1.0, 1.0] and w_rad.tolist() == [1.0, 2.0, 2.0, 2.0]
    with pytest.raises(ValueError):
        cost_weight_vectors(1)


def test_cost_sensitive_ce_weighted_mean_by_hand():
    logits, target = three_voxels()
    # w_rad = [1, 5]: weights 5, 5, 1 -> (5 ln2 + 5 ln4/3 + ln4/3) / 11 = (3.465736 + 1.726092) / 11 = 0.471984
    _, w_rad = cost_weight_vectors(2)
    assert cost_sensitive_ce(logits, target, w_rad).item() == pytest.approx(0.471984, abs=1e-6)
    # w_cons = [5, 1]: weights 1, 1, 5 -> (ln2 + 6 ln4/3) / 7 = 2.419239 / 7 = 0.345606
    w_cons, _ = cost_weight_vectors(2)
    assert cost_sensitive_ce(logits, target, w_cons).item() == pytest.approx(0.345606, abs=1e-6)
    # no weights: plain mean (ln2 + 2 ln4/3) / 3 = 0.422837; a (N, 1, *S) label is accepted
    assert cost_sensitive_ce(logits, target.unsqueeze(1)).item() == pytest.approx(0.422837, abs=1e-6)
    # PyTorch's weighted CrossEntropyLoss has the same normalisation (sum of weights)
    ref = nn.CrossEntropyLoss(weight=w_rad)(logits, target)
    assert cost_sensitive_ce(logits, target, w_rad).item() == pytest.approx(ref.item(), abs=1e-6)


def test_masked_ce_normalised_by_mask_count_and_empty_mask():
    logits, target = three_voxels()
    w_cons, _ = cost_weight_vectors(2)
    mask = torch.tensor([[[1.0, 0.0, 1.0]]])
    # voxels 1 and 3: weights 1 (label 1) and 5 (label 0) -> (ln2 + 5 ln4/3) / 2 = 2.131557 / 2 = 1.065779
    # (divided by the mask count 2, not by the weight sum 6)
    assert masked_ce(logits, target, mask, w_cons).item() == pytest.approx(1.065779, abs=1e-6)
    assert masked_ce(logits, target, mask.bool()).item() == pytest.approx((LN2 + LN43) / 2, abs=1e-6)
    leaf = logits.clone().requires_grad_(True)
    empty = masked_ce(leaf, target, torch.zeros(1, 1, 3), w_cons)
    empty.backward()
    assert empty.item() == 0.0 and torch.all(leaf.grad == 0)


# ---------------------------------------------------------------------------------------------------------------
# Dice


def two_voxels():
    """Logits (1, 2, 2): p = (.5, .5) label 1; p = (.75, .25) label 0."""
    return torch.tensor([[[0.0, LN3], [0.0, 0.0]]]), torch.tensor([[1, 0]])


def test_dice_loss_by_hand_with_and_without_mask():
    logits, target = two_voxels()
    s = 1e-5
    # class 0: I = .75, U = .5 + 1.75 = 2.25; class 1: I = .5, U = 1.5 + .25 = 1.75
    d0, d1 = (1.5 + s) / (2.25 + s), (1.0 + s) / (1.75 + s)
    expected = 1.0 - (d0 + d1) / 2  # = 1 - (0.666668 + 0.571431) / 2 = 0.380951
    assert expected == pytest.approx(0.380951, abs=1e-6)
    assert coranet_dice_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)
    # equals MONAI's Dice with softmax, one-hot target, background included, smooth 1e-5 (coranet.md §3)
    monai_dice = DiceLoss(softmax=True, to_onehot_y=True, include_background=True, smooth_nr=s, smooth_dr=s)
    assert coranet_dice_loss(logits, target).item() == pytest.approx(
        monai_dice(logits, target.unsqueeze(1)).item(), abs=1e-6
    )
    # mask [1, 0]: class 0: I = 0, U = .5; class 1: I = .5, U = 1.5 -> 1 - (s/(.5+s) + (1+s)/(1.5+s)) / 2 = 0.666655
    masked = 1.0 - (s / (0.5 + s) + (1.0 + s) / (1.5 + s)) / 2
    assert coranet_dice_loss(logits, target, torch.tensor([[1, 0]])).item() == pytest.approx(masked, abs=1e-6)
    # all-zero mask: 1 - s/s = 0
    assert coranet_dice_loss(logits, target, torch.zeros(1, 2)).item() == pytest.approx(0.0, abs=1e-7)


def test_dice_loss_one_channel_is_sigmoid_two_class():
    x = torch.tensor([[[0.3, -1.2, 2.0]]])  # (N=1, C=1, 3)
    target = torch.tensor([[1, 0, 1]])
    # softmax([0, x])[1] = sigmoid(x): the one-channel map is the 2-class map with a zero background logit
    two = torch.cat([torch.zeros_like(x), x], dim=1)
    assert coranet_dice_loss(x, target).item() == pytest.approx(coranet_dice_loss(two, target).item(), abs=1e-6)
    assert cost_sensitive_ce(x, target).item() == pytest.approx(cost_sensitive_ce(two, target).item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# hard predictions and the inconsistency mask


def test_hard_pred_threshold_and_tie_semantics():
    # binary: object iff softmax[:, 1] >= 0.5; an exact tie (equal logits -> 0.5 exactly) is object
    binary = torch.tensor([[[2.0, 2.0, 0.0, 1.0]], [[2.0, 2.0 - 1e-3, 0.0, 0.0]]]).view(1, 2, 4)
    assert hard_pred(binary).tolist() == [[1, 0, 1, 0]]
    # a higher threshold: p1 = sigmoid(1) = 0.731 >= 0.7 but not >= 0.75
    p1 = torch.tensor([[[0.0], [1.0]]]).view(1, 2, 1)
    assert hard_pred(p1, 0.7).item() == 1 and hard_pred(p1, 0.75).item() == 0
    # one channel: sigmoid(0) = 0.5 -> object
    assert hard_pred(torch.tensor([[[0.0, -0.1]]])).tolist() == [[1, 0]]
    # multi-class: argmax, first index on ties
    multi = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 2.0, 1.0]]).t().reshape(1, 4, 2)
    assert hard_pred(multi).tolist() == [[0, 1]]


def test_inconsistency_mask_with_exact_ties_is_symmetric():
    tie = torch.zeros(1, 2, 3)  # softmax 0.5/0.5 -> object everywhere
    other = torch.tensor([[[0.0, 0.0, 0.0], [0.0, -1e-4, 1.0]]])  # object, background, object
    uncertain = inconsistency_mask(tie, other)
    assert uncertain.dtype == torch.bool and uncertain.tolist() == [[False, True, False]]
    assert torch.equal(inconsistency_mask(other, tie), uncertain)
    # multi-class: a foreground-foreground disagreement is uncertain
    a = torch.tensor([[0.0, 3.0, 1.0], [0.0, 1.0, 3.0]]).t().reshape(1, 3, 2)  # argmax 1, 2
    b = torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]]).t().reshape(1, 3, 2)  # argmax 2, 2
    assert inconsistency_mask(a, b).tolist() == [[True, False]]


def test_pseudo_labels_from_main_head_and_certain_where_aux_agree():
    main = torch.tensor([[[0.0, 1.0, -1.0]], [[1.0, 0.0, 1.0]]]).view(1, 2, 3)  # -> 1, 0, 1
    rad = torch.tensor([[[0.0, 0.0, 0.0]], [[1.0, 1.0, -1.0]]]).view(1, 2, 3)  # -> 1, 1, 0
    cons = torch.tensor([[[0.0, 0.0, 0.0]], [[1.0, -1.0, -1.0]]]).view(1, 2, 3)  # -> 1, 0, 0
    plab, certain = coranet_pseudo_labels(CoraOutput(main, rad, cons))
    assert plab.tolist() == [[1, 0, 1]] and certain.tolist() == [[True, False, True]]


# ---------------------------------------------------------------------------------------------------------------
# composed losses


def test_supervised_loss_uses_each_heads_own_cost_vector():
    logits, target = three_voxels()
    w_cons, w_rad = cost_weight_vectors(2)
    out = CoraOutput(logits, logits, logits)
    terms = coranet_supervised_loss(out, target, w_cons, w_rad)
    assert set(terms) == {"ce", "dice", "rad", "cons", "total"}
    assert terms["rad"].item() == pytest.approx(0.471984, abs=1e-6)  # w_rad, hand value above
    assert terms["cons"].item() == pytest.approx(0.345606, abs=1e-6)  # w_cons
    assert terms["ce"].item() == pytest.approx(0.422837, abs=1e-6)
    mean4 = (terms["ce"] + terms["dice"] + terms["rad"] + terms["cons"]) / 4
    assert terms["total"].item() == pytest.approx(mean4.item(), abs=1e-7)


def test_certain_loss_swapped_same_none_and_empty_certain_region():
    logits, plab = three_voxels()
    w_cons, w_rad = cost_weight_vectors(2)
    out = CoraOutput(logits, logits, logits)
    certain = torch.ones(1, 1, 3, dtype=torch.bool)
    swapped = coranet_certain_loss(out, plab, certain, w_cons, w_rad)
    # swapped: rad head gets w_cons -> (ln2 + 6 ln4/3) / 3 (mask count) = 0.806413; cons gets w_rad -> 5.191828 / 3
    assert swapped["rad"].item() == pytest.approx(0.806413, abs=1e-6)
    assert swapped["cons"].item() == pytest.approx(1.730609, abs=1e-6)
    same = coranet_certain_loss(out, plab, certain, w_cons, w_rad, aux_weights="same")
    assert same["rad"].item() == pytest.approx(1.730609, abs=1e-6)
    assert same["cons"].item() == pytest.approx(0.806413, abs=1e-6)
    none = coranet_certain_loss(out, plab, certain, w_cons, w_rad, aux_weights="none")
    assert none["rad"].item() == 0.0 and none["cons"].item() == 0.0
    assert none["total"].item() == pytest.approx((none["ce"] + none["dice"]).item() / 2, abs=1e-7)
    # empty certain region: every term exactly 0, gradients 0
    leaf = logits.clone().requires_grad_(True)
    empty = coranet_certain_loss(CoraOutput(leaf, leaf, leaf), plab, ~certain, w_cons, w_rad)
    empty["total"].backward()
    assert all(abs(v.item()) < 1e-7 for v in empty.values())
    assert torch.all(leaf.grad.abs() < 1e-7)
    with pytest.raises(ValueError):
        coranet_certain_loss(out, plab, certain, w_cons, w_rad, aux_weights="bogus")


def test_uncertain_loss_by_hand_and_empty_uncertain_region():
    # voxel 1: student (.5, .5), teacher (.75, .25) -> sum over classes of delta^2 = .0625 + .0625 = .125
    student = torch.tensor([[[0.0, 5.0], [0.0, 0.0]]])  # (1, 2, 2)
    teacher = torch.tensor([[[LN3, 0.0], [0.0, 0.0]]])
    s_out = CoraOutput(student, teacher.clone(), student)  # rad head agrees with the teacher: 0
    t_out = CoraOutput(teacher, teacher, teacher)
    uncertain = torch.tensor([[True, False]])  # voxel 2 (large difference) is masked out
    # heads: .125 / 1 voxel, 0, .125 -> mean 0.083333 * weight 0.1 = 0.0083333
    value = coranet_uncertain_loss(s_out, t_out, uncertain, 0.1)
    assert value.item() == pytest.approx(0.1 * 0.25 / 3, abs=1e-7)
    assert coranet_uncertain_loss(s_out, t_out, torch.zeros(1, 2, dtype=torch.bool), 0.1).item() == 0.0


def test_total_loss():
    # 1 + 0.5 * (0.4 + 0.2) = 1.3
    assert coranet_total_loss(torch.tensor(1.0), torch.tensor(0.4), torch.tensor(0.2)).item() == pytest.approx(1.3)
    assert coranet_total_loss(1.0, 0.4, 0.2, unsup_weight=1.0).item() == pytest.approx(1.6)


# ---------------------------------------------------------------------------------------------------------------
# the method


def tiny_net(n_classes=2):
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    return MultiHeadSegNet(trunk, trunk_out_channels=4, n_classes=n_classes)


def batches(n_classes=2, size=8):
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 1, size, size, generator=gen)
    label = (image > 0.5).float() * (n_classes - 1)
    return {"image": image, "label": label}, {"image": torch.rand(2, 1, size, size, generator=gen)}


def make_method(**kw):
    net, teacher = tiny_net(), tiny_net()
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)  # distinct from the student until the stage switch
    defaults = {"num_classes": 2, "pretrain_iterations": 2, "refresh_every": 3, "iters_per_epoch": 1}
    return CoraNet(net, teacher, **{**defaults, **kw})


def params_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


SUP_KEYS = {"loss", "loss_sup", "sup_ce", "sup_dice", "sup_rad", "sup_cons"}
ST_KEYS = {"loss_certain", "certain_ce", "certain_dice", "certain_rad", "certain_cons", "loss_uncertain"}


def test_stage_switch_changes_returned_losses():
    method = make_method(consistency_rampup=0.0)
    labeled, unlabeled = batches()
    before = method.compute_losses(labeled, unlabeled, 1)
    assert set(before) == SUP_KEYS
    assert before["loss"].item() == pytest.approx(before["loss_sup"].item())
    assert not params_equal(method.teacher, method.network)

    method.hooks()[HOOK_ITERATION_STARTED](2)  # the stage switch
    assert params_equal(method.teacher, method.network) and params_equal(method.snapshot, method.network)
    after = method.compute_losses(labeled, unlabeled, 2)
    assert ST_KEYS | SUP_KEYS | {"cons_weight", "uncertain_fraction"} == set(after)
    # loss = sup + 0.5 (certain + uncertain); rampup 0 -> weight = 0.1
    expected = after["loss_sup"] + 0.5 * (after["loss_certain"] + after["loss_uncertain"])
    assert after["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert after["cons_weight"].item() == pytest.approx(0.1)
    assert after["loss"].requires_grad and not after["loss_certain"].requires_grad
    # no unlabeled stream: the supervised part only, also in stage 2
    assert set(method.compute_losses(labeled, None, 5)) == SUP_KEYS


def test_consistency_weight_counts_self_training_epochs():
    method = make_method(pretrain_iterations=10, iters_per_epoch=6, consistency_rampup=40.0)
    assert method.consistency_weight(9) == 0.0
    # epoch 0 (iterations 10..15): 0.1 exp(-5) = 6.7379e-4; epoch 40 (iteration 250): 0.1
    assert method.consistency_weight(10) == pytest.approx(0.1 * math.exp(-5.0))
    assert method.consistency_weight(15) == pytest.approx(0.1 * math.exp(-5.0))
    # epoch 1 (iteration 16): 0.1 exp(-5 (39/40)^2) = 0.1 * 0.0086 ...
    assert method.consistency_weight(16) == pytest.approx(0.1 * math.exp(-5.0 * (39 / 40) ** 2))
    assert method.consistency_weight(250) == pytest.approx(0.1)


def test_snapshot_refresh_every_n_iterations_drives_pseudo_labels():
    method = make_method(pretrain_iterations=2, refresh_every=3)
    started = method.hooks()[HOOK_ITERATION_STARTED]
    _, unlabeled = batches()
    started(2)
    plab0, _ = method.pseudo_labels(unlabeled["image"])
    # make the student's main head predict "object" everywhere
    with torch.no_grad():
        method.network.heads[0][1].conv.bias.copy_(torch.tensor([-100.0, 100.0]))
    started(3)
    started(4)  # no refresh: the snapshot still holds the weights of iteration 2
    assert method.snapshot_iteration == 2
    assert torch.equal(method.pseudo_labels(unlabeled["image"])[0], plab0)
    started(5)  # 5 - 2 = 3 = refresh_every -> refresh
    assert method.snapshot_iteration == 5 and params_equal(method.snapshot, method.network)
    assert bool((method.pseudo_labels(unlabeled["image"])[0] == 1).all())
    # the snapshot never trains and keeps its own mode
    assert not any(p.requires_grad for p in method.snapshot.parameters())


def test_ema_only_in_self_training_and_state_dict_round_trip():
    method = make_method(pretrain_iterations=2, ema_decay=0.99)
    stepped = method.hooks()[HOOK_OPTIMIZER_STEPPED]
    teacher0 = [p.clone() for p in method.teacher.parameters()]
    stepped(1)  # stage 1: teacher untouched
    assert all(torch.equal(a, b) for a, b in zip(teacher0, method.teacher.parameters(), strict=True))
    stepped(2)
    for t0, t, s in zip(teacher0, method.teacher.parameters(), method.network.parameters(), strict=True):
        assert torch.allclose(t, 0.99 * t0 + 0.01 * s, atol=1e-7)

    method.hooks()[HOOK_ITERATION_STARTED](2)
    state = method.state_dict()
    other = make_method(pretrain_iterations=2)
    other.load_state_dict(state)
    assert other.snapshot_iteration == 2 and params_equal(other.snapshot, method.network)
    other.hooks()[HOOK_ITERATION_STARTED](4)  # resumed mid-stage: no new stage switch, no refresh
    assert not params_equal(other.teacher, other.network)


def test_keep_masks_and_save_uncertainty_masks(tmp_path):
    method = make_method(pretrain_iterations=0, keep_masks=True)
    labeled, unlabeled = batches()
    assert method.last_uncertain is None
    method.hooks()[HOOK_ITERATION_STARTED](0)
    out = method.compute_losses(labeled, unlabeled, 0)
    mask = method.last_uncertain
    assert mask.shape == (2, 8, 8) and mask.dtype == torch.bool and mask.device.type == "cpu"
    assert out["uncertain_fraction"].item() == pytest.approx(mask.float().mean().item())
    assert method.last_pseudo_labels.shape == (2, 8, 8)
    paths = save_uncertainty_masks(mask, tmp_path / "u", "uncertain", 7)
    assert [p.name for p in paths] == ["uncertain_iter000007_0.nii.gz", "uncertain_iter000007_1.nii.gz"]
    back = np.asarray(nib.load(str(paths[1])).dataobj)
    assert back.dtype == np.uint8 and np.array_equal(back, mask[1].numpy().astype(np.uint8))
    with pytest.raises(ValueError):
        save_uncertainty_masks(torch.zeros(4, 4), tmp_path, "x", 0)


def test_method_rejects_single_head_network():
    trunk = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    single = MultiHeadSegNet(trunk, 4, 2, n_heads=1)
    method = CoraNet(single, MultiHeadSegNet(trunk, 4, 2, n_heads=1), pretrain_iterations=0)
    labeled, _ = batches()
    with pytest.raises(TypeError, match="three-head"):
        method.compute_losses(labeled, None, 0)


def test_engine_runs_both_stages_through_the_hooks():
    method = make_method(pretrain_iterations=2, refresh_every=2)
    labeled, unlabeled = batches()
    lab = [{"image": labeled["image"][i], "label": labeled["label"][i]} for i in range(2)]
    unl = [{"image": unlabeled["image"][i]} for i in range(2)]
    outputs = []
    trainer = SemiSupervisedTrainer(
        device="cpu",
        max_epochs=2,
        epoch_length=3,
        max_iterations=5,
        train_data_loader=DataLoader(lab, batch_size=2),
        unlabeled_data_loader=DataLoader(unl, batch_size=2),
        method=method,
        optimizer=torch.optim.Adam(method.network.parameters(), lr=1e-3, betas=(0.5, 0.999)),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(set(e.state.output)))
    trainer.run()
    assert [ST_KEYS <= keys for keys in outputs] == [False, False, True, True, True]
    assert method.snapshot_iteration == 4  # switch at 2, refresh at 4
    assert not params_equal(method.teacher, method.network)  # EMA lags behind the trained student


# ---------------------------------------------------------------------------------------------------------------
# networks


def test_vnet3d_parameter_count_and_layout():
    net = VNet3D()
    assert sum(p.numel() for p in net.parameters()) == 9_457_190
    assert len(list(net.parameters())) == 68 and len(list(net.buffers())) == 0
    head = sum(p.numel() for p in net.branchs[0].parameters())
    assert head == 6_962  # 16*16*27 + 16 + 2*16 + 2
    assert sum(p.numel() for n, p in net.named_parameters() if not n.startswith("branchs")) == 9_436_304


def test_vnet3d_shapes_script_and_instance_norm_limit():
    torch.manual_seed(0)
    net = VNet3D(n_filters=4)
    x = torch.randn(1, 1, 32, 32, 32)
    out = net.forward_train(x)
    assert isinstance(out, CoraOutput) and all(o.shape == (1, 2, 32, 32, 32) for o in out)
    assert torch.equal(net(x), out.main)
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(x), out.main, atol=1e-5)
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        net(torch.randn(1, 1, 16, 16, 16))  # bottleneck of one voxel: instance norm undefined
    bn = VNet3D(n_filters=4, normalization="batchnorm", n_classes=3).eval()
    assert bn(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    single = VNet3D(n_filters=4, n_heads=1)
    assert isinstance(single.forward_train(x), torch.Tensor)


def official_keys(normalization="instancenorm", has_dropout=False):
    """Official koncle/CoraNet ``vnet.py`` state-dict keys in registration order (written from coranet.md §2.2)."""
    stateful = {
        "instancenorm": [],
        "batchnorm": ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"],
    }[normalization]
    step = 3  # conv, norm, ReLU per conv of a ConvBlock

    def stage(name, n):
        keys = []
        for i in range(n):
            keys += [f"{name}.conv.{step * i}.weight", f"{name}.conv.{step * i}.bias"]
            keys += [f"{name}.conv.{step * i + 1}.{s}" for s in stateful]
        return keys

    def resample(name):
        return [f"{name}.conv.0.weight", f"{name}.conv.0.bias"] + [f"{name}.conv.1.{s}" for s in stateful]

    keys = []
    for name, n in (("one", 1), ("two", 2), ("three", 3), ("four", 3)):
        keys += stage(f"block_{name}", n) + resample(f"block_{name}_dw")
    keys += stage("block_five", 3) + resample("block_five_up")
    for name, n, up in (("six", 3, "six"), ("seven", 3, "seven"), ("eight", 2, "eight")):
        keys += stage(f"block_{name}", n) + resample(f"block_{up}_up")
    last = 2 if has_dropout else 1
    for k in range(3):
        keys += stage(f"branchs.{k}.0", 1) + [f"branchs.{k}.{last}.weight", f"branchs.{k}.{last}.bias"]
    return keys


@pytest.mark.parametrize(
    "normalization, has_dropout", [("instancenorm", False), ("batchnorm", True)], ids=["in", "bn-dropout"]
)
def test_official_checkpoint_layout_loads_by_key(normalization, has_dropout):
    net = VNet3D(n_filters=4, normalization=normalization, has_dropout=has_dropout)
    ours = net.state_dict()
    keys = official_keys(normalization, has_dropout)
    assert len(keys) == len(ours)  # 68 parameter tensors with instance norm
    # same shapes in the same order: fill the official dict position by position with distinct values
    gen = torch.Generator().manual_seed(0)
    official = {
        f"module.{k}": torch.randn(v.shape, generator=gen) if v.is_floating_point() else torch.full_like(v, 7)
        for k, v in zip(keys, ours.values(), strict=True)
    }
    mapped = coranet_vnet_key_map(official)
    assert list(mapped) == list(ours)  # every key renamed to ours, order kept
    load_coranet_checkpoint(net, {"net": official, "opt": {}, "epoch": 60})
    for (name, value), expected in zip(net.state_dict().items(), official.values(), strict=True):
        assert torch.equal(value, expected), name


def test_official_checkpoint_file(tmp_path):
    net = VNet3D(n_filters=4)
    official = {f"module.{k}": v.clone() + 1 for k, v in zip(official_keys(), net.state_dict().values(), strict=True)}
    torch.save({"net": official, "epoch": 60}, tmp_path / "best.pth")
    loaded = load_coranet_checkpoint(VNet3D(n_filters=4), tmp_path / "best.pth")
    assert torch.equal(loaded.branchs[2][1].conv.bias, official["module.branchs.2.1.bias"])


def test_multihead_unet2d_count_shapes_and_script():
    net = MultiHeadSegNet(UNet2DTrunk(), trunk_out_channels=16, n_classes=4)
    # UNet2D 1,813,764 - out_conv (16*4*9 + 4 = 580) + 3 heads * (16*16*9 + 16 + 2*16 + 16*4 + 4 = 2,420)
    assert sum(p.numel() for p in net.parameters()) == 1_820_444
    net.eval()
    x = torch.randn(2, 1, 32, 32)
    out = net.forward_train(x)
    assert isinstance(out, CoraOutput) and all(o.shape == (2, 4, 32, 32) for o in out)
    assert torch.allclose(torch.jit.script(net)(x), out.main, atol=1e-5)


def _teacher_outputs_of_two_steps(**kw):
    """The teacher's main-head output in two self-training steps on the same batch, with different RNG states."""
    trunk = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.5))
    net = MultiHeadSegNet(trunk, trunk_out_channels=4, n_classes=2)
    method = CoraNet(net, copy.deepcopy(net), num_classes=2, pretrain_iterations=0, iters_per_epoch=1, **kw)
    outputs, forward_train = [], method.teacher.forward_train

    def recording_forward_train(x):
        out = forward_train(x)
        outputs.append(out.main.detach().clone())
        return out

    method.teacher.forward_train = recording_forward_train
    labeled, unlabeled = batches()
    for seed in (1, 2):
        torch.manual_seed(seed)
        method.train()
        method.compute_losses(labeled, unlabeled, 0)
    return method, outputs


def test_teacher_sees_no_dropout_noise_in_a_training_step():
    method, (first, second) = _teacher_outputs_of_two_steps()
    assert torch.equal(first, second)  # deterministic: the dropout layers were off
    assert all(m.training for m in method.teacher.modules())  # and restored to train mode afterwards
    _, (noisy_first, noisy_second) = _teacher_outputs_of_two_steps(teacher_dropout=True)
    assert not torch.equal(noisy_first, noisy_second)  # the earlier behaviour (the switch) is noisy
