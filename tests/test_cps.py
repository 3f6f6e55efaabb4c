"""CPS (baselines.md §6): the cross pseudo-supervision loss, the two-network method, init schemes, one step."""

import math

import pytest
import torch
from monai.losses import DiceCELoss
from torch import nn

from common.losses.cps import cps_loss, cps_pseudo_label
from common.methods.cps import CPS, init_conv_weights_
from common.networks import UNet2D, VNet

# ---------------------------------------------------------------------------------------------------------------
# cps_loss


def _two_voxel_case():
    # (N=1, C=2, H=1, W=2); voxel A: logits [2, 0], voxel B: logits [0, 1]
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2).clone().requires_grad_(True)
    # other network: voxel A [0, 3] -> pseudo-label 1; voxel B [0, -1] -> pseudo-label 0
    other = torch.tensor([[0.0, 3.0], [0.0, -1.0]]).T.reshape(1, 2, 1, 2).clone().requires_grad_(True)
    return logits, other


def test_cps_loss_hand_computed_two_class_case():
    logits, other = _two_voxel_case()
    assert cps_pseudo_label(other).tolist() == [[[1, 0]]]
    # CE_A = -ln softmax([2, 0])[1] = ln(e^2 + e^0) - 0 = ln(1 + e^2) = 2.126928
    # CE_B = -ln softmax([0, 1])[0] = ln(e^0 + e^1) - 0 = ln(1 + e)   = 1.313262
    # mean over the two voxels = 1.720095
    expected = 0.5 * (math.log(1 + math.e**2) + math.log(1 + math.e))
    assert expected == pytest.approx(1.720095, abs=1e-6)
    assert cps_loss(logits, other).item() == pytest.approx(expected, rel=1e-6)


def test_cps_loss_gradient_stays_out_of_the_pseudo_label():
    logits, other = _two_voxel_case()
    cps_loss(logits, other).backward()
    assert other.grad is None
    # d CE / d logits = (softmax - onehot) / number of voxels; voxel A class 1: (1 / (1 + e^2) - 1) / 2 = -0.440399
    assert logits.grad[0, 1, 0, 0].item() == pytest.approx((1 / (1 + math.e**2) - 1) / 2, rel=1e-5)


def test_cps_loss_of_agreeing_confident_networks_is_small_and_symmetric_in_shape():
    logits = torch.zeros(2, 3, 4, 4, 4)
    logits[:, 1] = 20.0
    assert cps_loss(logits, logits).item() == pytest.approx(2 * math.exp(-20.0), abs=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# the method


class Recorder(nn.Module):
    """1x1 convolution (no normalisation) that records its inputs."""

    def __init__(self, classes=2):
        super().__init__()
        self.conv = nn.Conv2d(1, classes, 1)
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.conv(x)


def sup_loss(logits, label):
    return ((torch.softmax(logits, 1)[:, 1:] - label) ** 2).mean()


def _batches(n_l=2, n_u=3):
    labeled = {"image": torch.randn(n_l, 1, 4, 4), "label": (torch.rand(n_l, 1, 4, 4) > 0.5).float()}
    return labeled, {"image": torch.randn(n_u, 1, 4, 4)}


def test_both_networks_see_the_same_joint_batch_and_losses_add_up():
    torch.manual_seed(0)
    net_1, net_2 = Recorder(), Recorder()
    method = CPS(net_1, net_2, sup_loss)
    labeled, unlabeled = _batches()
    losses = method.compute_losses(labeled, unlabeled, iteration=0)
    joint = torch.cat([labeled["image"], unlabeled["image"]])
    assert len(net_1.inputs) == len(net_2.inputs) == 1
    assert torch.equal(net_1.inputs[0], joint) and torch.equal(net_2.inputs[0], joint)
    assert {"loss", "loss_sup_1", "loss_sup_2", "loss_cps_1", "loss_cps_2", "cps_weight"} <= set(losses)
    logits_1, logits_2 = net_1.conv(joint), net_2.conv(joint)
    assert losses["loss_cps_1"].item() == pytest.approx(cps_loss(logits_1[2:], logits_2[2:]).item(), rel=1e-6)
    assert losses["loss_cps_2"].item() == pytest.approx(cps_loss(logits_2[2:], logits_1[2:]).item(), rel=1e-6)
    # lambda(0) = 0.1 * sigmoid_rampup(0, 200) = 0.1 * e^-5 = 0.000673795
    weight = losses["cps_weight"].item()
    assert weight == pytest.approx(0.1 * math.exp(-5.0))
    expected = (
        losses["loss_sup_1"] + weight * losses["loss_cps_1"] + losses["loss_sup_2"] + weight * losses["loss_cps_2"]
    )
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(not v.requires_grad for k, v in losses.items() if k != "loss")


def test_cps_weight_ramp_end():
    method = CPS(Recorder(), Recorder(), sup_loss)
    # iteration 30000 -> 30000 // 150 = 200 = ramp length -> weight 0.1
    assert method.compute_losses(*_batches(), iteration=30000)["cps_weight"].item() == pytest.approx(0.1)


def test_network_2_gradient_comes_only_from_its_own_loss():
    torch.manual_seed(1)
    net_1, net_2 = Recorder(), Recorder()
    method = CPS(net_1, net_2, sup_loss, iters_per_epoch=1, consistency_rampup=0)  # weight 0.1 from the start
    labeled, unlabeled = _batches()
    method.compute_losses(labeled, unlabeled, iteration=0)["loss"].backward()
    grad_2 = net_2.conv.weight.grad.clone()
    # by hand: loss_2 = sup(l2 on labeled) + 0.1 * CE(l2 on unlabeled, argmax l1 on unlabeled), l1 a constant
    net_2.conv.weight.grad = None
    joint = torch.cat([labeled["image"], unlabeled["image"]])
    logits_2 = net_2.conv(joint)
    target = torch.argmax(net_1.conv(joint)[2:], dim=1).detach()
    own = sup_loss(logits_2[:2], labeled["label"]) + 0.1 * nn.functional.cross_entropy(logits_2[2:], target)
    own.backward()
    assert torch.allclose(grad_2, net_2.conv.weight.grad, atol=1e-7)
    assert grad_2.abs().sum() > 0


def test_no_unlabeled_stream_and_argument_checks():
    net_1, net_2 = Recorder(), Recorder()
    labeled, _ = _batches()
    losses = CPS(net_1, net_2, sup_loss).compute_losses(labeled, None, iteration=7)
    assert set(losses) == {"loss", "loss_sup", "loss_sup_1", "loss_sup_2"}
    assert net_1.inputs[0].shape[0] == 2
    assert losses["loss"].item() == pytest.approx((losses["loss_sup_1"] + losses["loss_sup_2"]).item())
    with pytest.raises(ValueError, match="distinct"):
        CPS(net_1, net_1, sup_loss)
    with pytest.raises(ValueError, match="init"):
        CPS(net_1, net_2, sup_loss, init="orthogonal")


# ---------------------------------------------------------------------------------------------------------------
# initialisation


class InitProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(64, 64, 3)  # fan_in = fan_out = 64 * 27 = 1728
        self.norm = nn.BatchNorm3d(64)
        self.up = nn.ConvTranspose3d(64, 64, 2)


def test_kaiming_xavier_init_matches_the_3d_script():
    torch.manual_seed(0)
    net_1, net_2 = InitProbe(), InitProbe()
    for net in (net_1, net_2):
        with torch.no_grad():
            net.norm.weight.fill_(3.0)
            net.norm.bias.fill_(2.0)
    up_before = net_1.up.weight.detach().clone()
    bias_before = net_1.conv.bias.detach().clone()
    CPS(net_1, net_2, sup_loss, init="kaiming_xavier")
    # Kaiming-normal (fan-in, ReLU gain): std sqrt(2 / 1728) = 0.03402; Xavier-normal: sqrt(2 / 3456) = 0.02406;
    # 110 592 weights each, so the sample std is within 1 %
    assert net_1.conv.weight.std().item() == pytest.approx(math.sqrt(2 / 1728), rel=0.02)
    assert net_2.conv.weight.std().item() == pytest.approx(math.sqrt(2 / 3456), rel=0.02)
    for net in (net_1, net_2):
        assert torch.all(net.norm.weight == 1) and torch.all(net.norm.bias == 0)
    assert torch.equal(net_1.up.weight, up_before)  # transposed convs keep their default init
    assert torch.equal(net_1.conv.bias, bias_before)


def test_default_init_leaves_the_networks_alone():
    net_1, net_2 = InitProbe(), InitProbe()
    before = [p.detach().clone() for p in net_1.parameters()]
    CPS(net_1, net_2, sup_loss, init="default")
    assert all(torch.equal(b, p) for b, p in zip(before, net_1.parameters(), strict=True))
    # PyTorch default for conv weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) -> std 1 / sqrt(3 * 1728) = 0.01389
    assert net_1.conv.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 1728), rel=0.02)
    with pytest.raises(ValueError, match="scheme"):
        init_conv_weights_(net_1, "uniform")


# ---------------------------------------------------------------------------------------------------------------
# one training step


@pytest.mark.parametrize(
    "make_net, shape, num_classes, init",
    [
        (lambda: UNet2D(1, 4, features=(4, 8, 16, 32, 64)), (32, 32), 4, "default"),
        (lambda: VNet(1, 2, n_filters=4, has_dropout=True), (16, 16, 16), 2, "kaiming_xavier"),
    ],
    ids=["unet2d", "vnet"],
)
def test_one_training_step_end_to_end(make_net, shape, num_classes, init):
    torch.manual_seed(0)
    net_1, net_2 = make_net(), make_net()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, batch=True, lambda_dice=0.5, lambda_ce=0.5)
    method = CPS(net_1, net_2, loss_fn, init=init)
    optimizer = torch.optim.SGD([*net_1.parameters(), *net_2.parameters()], lr=0.01, momentum=0.9)
    labeled = {"image": torch.randn(2, 1, *shape), "label": torch.randint(0, num_classes, (2, 1, *shape)).float()}
    unlabeled = {"image": torch.randn(2, 1, *shape)}
    before_1 = [p.detach().clone() for p in net_1.parameters()]
    before_2 = [p.detach().clone() for p in net_2.parameters()]
    method.train()
    losses = method.compute_losses(labeled, unlabeled, iteration=0)
    assert torch.isfinite(losses["loss"]) and losses["loss"].requires_grad
    optimizer.zero_grad()
    losses["loss"].backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before_1, net_1.parameters(), strict=True))
    assert any(not torch.equal(b, p) for b, p in zip(before_2, net_2.parameters(), strict=True))
