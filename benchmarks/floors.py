"""The floor of each method family: its unavoidable work per iteration, as a minimal hand-written loop.

A floor step runs, on batches already in memory, exactly the passes the method requires (student and teacher
forwards, the T dropout passes of UA-MT, both networks of CPS/ALHVR, CoraNet's snapshot and teacher), its loss
arithmetic through the same loss functions of ``common.losses``, the backward pass, gradient clipping where the
bundle clips, the optimiser step and the EMA update where the method has one. It uses the networks, optimiser
and loss objects a bundle's config builds, and none of the engine: no ignite, no method object, no handlers, no
logging, no checks. ``engine / floor`` is then the cost of everything the engine and the method object add.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import Tensor, nn

from common.losses import softmax_mse
from common.losses.alhvr import alhvr_step_losses
from common.losses.coranet import (
    coranet_certain_loss,
    coranet_pseudo_labels,
    coranet_supervised_loss,
    coranet_total_loss,
    coranet_uncertain_loss,
    cost_weight_vectors,
)
from common.losses.cps import cps_loss
from common.losses.dycon import DEFAULT_LOSS_CONFIG, adaptive_beta, dycon_step_losses
from common.losses.stlu import stlu_gamma, stlu_losses
from common.losses.uamt import uamt_consistency, uamt_threshold, uamt_uncertainty
from common.schedules import consistency_weight, ema_update_, ema_warmup_decay

Batch = Mapping[str, Tensor]
FloorStep = Callable[[Batch, Batch | None, int], None]

__all__ = ["Batch", "FloorStep", "FloorContext", "FLOORS", "build_floor", "method_family"]


class FloorContext:
    """What a floor needs from a parsed bundle config: its objects, its method settings and the optimiser step.

    Args:
        parser: a ``ConfigParser`` of the bundle's training config (with the benchmark's overrides).
        device: device of the networks.
        amp: mixed precision as the engine applies it (CUDA only: autocast around the forward passes and the
            losses, a ``GradScaler`` around backward and step).
    """

    def __init__(self, parser: ConfigParser, device: torch.device, amp: bool) -> None:
        self.parser = parser
        self.device = device
        self.amp = bool(amp) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.clip = self.get("train#trainer#clip_grad_norm")
        self._optimizer: torch.optim.Optimizer | None = None
        self._params: list[Tensor] = []

    def get(self, config_id: str, default: Any = None) -> Any:
        """The parsed (instantiated/evaluated) content of ``config_id``, or ``default`` when the id is absent."""
        if config_id not in self.parser:
            return default
        return self.parser.get_parsed_content(config_id)

    def method(self, name: str, default: Any) -> Any:
        """A hyperparameter of the bundle's ``method`` entry (the method class's default when not configured)."""
        return self.get(f"method#{name}", default)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = self.get("optimizer")
            self._params = [p for group in self._optimizer.param_groups for p in group["params"]]
        return self._optimizer

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context of the forward passes and losses (disabled off CUDA or without AMP)."""
        return torch.autocast("cuda", enabled=self.amp) if self.device.type == "cuda" else contextlib.nullcontext()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, loss: Tensor) -> None:
        """Backward, optional gradient clipping (the trainer's ``clip_grad_norm``), optimiser step."""
        clip, params = self.clip, self._params
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.optimizer.step()


def _forward(network: nn.Module, image: Tensor) -> Any:
    """The network's training forward (``forward_train`` where it has one)."""
    forward_train = getattr(network, "forward_train", None)
    return forward_train(image) if callable(forward_train) else network(image)


def _label_map(label: Tensor) -> Tensor:
    """``(N, 1, *S)`` labels as ``(N, *S)`` int64 class indices."""
    return (label[:, 0] if label.dim() >= 2 and label.shape[1] == 1 else label).long()


def _noise(x: Tensor, std: float, clip: float) -> Tensor:
    """The teacher-input noise ``clamp(N(0, std^2), -clip, clip)``."""
    return torch.clamp(torch.randn_like(x) * std, -clip, clip)


def _frozen(network: nn.Module) -> nn.Module:
    for param in network.parameters():
        param.requires_grad_(False)
    return network


def _train_mode(*networks: nn.Module) -> None:
    for network in networks:
        network.train()


def supervised_floor(ctx: FloorContext) -> FloorStep:
    """Supervised only: one forward of the labeled batch, the supervised loss, backward, step."""
    network, loss_fn = ctx.get("network"), ctx.get("supervised_loss")
    _train_mode(network)

    def step(labeled: Batch, unlabeled: Batch | None, iteration: int) -> None:
        ctx.zero_grad()
        with ctx.autocast():
            loss = loss_fn(_forward(network, labeled["image"]), labeled["label"])
        ctx.step(loss)

    return step


def _mean_teacher_settings(ctx: FloorContext) -> dict[str, Any]:
    return {
        "consistency": ctx.method("consistency", 0.1),
        "rampup": ctx.method("consistency_rampup", 200.0),
        "iters_per_epoch": ctx.method("iters_per_epoch", 150),
        "ema_decay": ctx.method("ema_decay", 0.99),
        "noise_std": ctx.method("noise_std", 0.1),
        "noise_clip": ctx.method("noise_clip", 0.2),
    }


def mean_teacher_floor(ctx: FloorContext) -> FloorStep:
    """Mean Teacher: student on labeled + unlabeled, teacher (no grad) on noisy unlabeled, softmax MSE, EMA."""
    network, teacher, loss_fn = ctx.get("network"), _frozen(ctx.get("teacher")), ctx.get("supervised_loss")
    s = _mean_teacher_settings(ctx)
    _train_mode(network, teacher)

    def step(labeled: Batch, unlabeled: Batch | None, iteration: int) -> None:
        ctx.zero_grad()
        n = labeled["image"].shape[0]
        with ctx.autocast():
            logits = _forward(network, torch.cat([labeled["image"], unlabeled["image"]]))
            loss_sup = loss_fn(logits[:n], labeled["label"])
            with torch.no_grad():
                noisy = unlabeled["image"] + _noise(unlabeled["image"], s["noise_std"], s["noise_clip"])
                teacher_logits = _forward(teacher, noisy)
            loss_cons = softmax_mse(logits[n:], teacher_logits).mean()
            weight = consistency_weight(iteration, s["consistency"], s["rampup"], s["iters_per_epoch"])
            total = loss_sup + weight * loss_cons
        ctx.step(total)
        ema_update_(teacher, network, ema_warmup_decay(iteration, s["ema_decay"]))

    return step


def uamt_floor(ctx: FloorContext) -> FloorStep:
    """UA-MT: Mean Teacher plus ``passes`` teacher forwards of the ``duplicate``-times repeated unlabeled batch
    for the entropy mask, and the masked consistency."""
    network, teacher, loss_fn = ctx.get("network"), _frozen(ctx.get("teacher")), ctx.get("supervised_loss")
    s = _mean_teacher_settings(ctx)
    passes, duplicate = ctx.method("passes", 4), ctx.method("duplicate", 2)
    threshold_rampup = ctx.method("threshold_rampup", 30000.0)
    use_log_c, norm_factor = ctx.method("use_log_num_classes", False), ctx.method("norm_factor", 2.0)
    entropy_eps = ctx.method("entropy_eps", 1e-6)
    _train_mode(network, teacher)

    def mean_probs(images: Tensor) -> Tensor:
        n = images.shape[0]
        repeated = images.repeat(duplicate, *([1] * (images.dim() - 1)))
        total = None
        for _ in range(passes):
            noisy = repeated + _noise(repeated, s["noise_std"], s["noise_clip"])
            probs = torch.softmax(_forward(teacher, noisy).float(), dim=1)
            probs = probs.reshape(duplicate, n, *probs.shape[1:]).sum(dim=0)
            total = probs if total is None else total + probs
        return total / (passes * duplicate)

    def step(labeled: Batch, unlabeled: Batch | None, iteration: int) -> None:
        ctx.zero_grad()
        n = labeled["image"].shape[0]
        images_u = unlabeled["image"]
        with ctx.autocast():
            logits = _forward(network, torch.cat([labeled["image"], images_u]))
            loss_sup = loss_fn(logits[:n], labeled["label"])
            with torch.no_grad():
                teacher_logits = _forward(teacher, images_u + _noise(images_u, s["noise_std"], s["noise_clip"]))
                uncertainty = uamt_uncertainty(mean_probs(images_u), entropy_eps)
            threshold = uamt_threshold(iteration, threshold_rampup, logits.shape[1], use_log_num_classes=use_log_c)
            mask = (uncertainty < threshold).float()
            loss_cons = uamt_consistency(logits[n:], teacher_logits, mask, norm_factor=norm_factor)
            weight = consistency_weight(iteration, s["consistency"], s["rampup"], s["iters_per_epoch"])
            total = loss_sup + weight * loss_cons
        ctx.step(total)
        ema_update_(teacher, network, ema_warmup_decay(iteration, s["ema_decay"]))

    return step


def cps_floor(ctx: FloorContext) -> FloorStep:
    """CPS: both networks on labeled + unlabeled, supervised loss of each, cross pseudo-label CE both ways."""
    net_1, net_2, loss_fn = ctx.get("network"), ctx.get("network_2"), ctx.get("supervised_loss")
    consistency, rampup = ctx.method("consistency", 0.1), ctx.method("consistency_rampup", 200.0)
    iters_per_epoch = ctx.method("iters_per_epoch", 150)
    _train_mode(net_1, net_2)

    def step(labeled: Batch, unlabeled: Batch | None, iteration: int) -> None:
        ctx.zero_grad()
        n = labeled["image"].shape[0]
        images = torch.cat([labeled["image"], unlabeled["image"]])
        with ctx.autocast():
            logits_1, logits_2 = _forward(net_1, images), _forward(net_2, images)
            sup_1 = loss_fn(logits_1[:n], labeled["label"])
            sup_2 = loss_fn(logits_2[:n], labeled["label"])
            cps_1, cps_2 = cps_loss(logits_1[n:], logits_2[n:]), cps_loss(logits_2[n:], logits_1[n:])
            weight = consistency_weight(iteration, consistency, rampup, iters_per_epoch)
            total = (sup_1 + weight * cps_1) + (sup_2 + weight * cps_2)
        ctx.step(total)

    return step


def alhvr_floor(ctx: FloorContext) -> FloorStep:
    """ALHVR: both networks' clean and perturbed decoder passes, then all losses of one step."""
    net_a, net_b = ctx.get("network"), ctx.get("network_2")
    options = {
        "num_classes": ctx.method("num_classes", 2),
        "beta": ctx.method("beta", 0.8),
        "temperature": ctx.method("temperature", 0.1),
        "consistency": ctx.method("consistency", 0.1),
        "rampup_length": ctx.method("consistency_rampup", 200.0),
        "scaler": ctx.method("scaler", 1.0),
    }
    keywords = {
        "rampup_epoch_len": ctx.method("rampup_epoch_len", 150),
        "cross_sample_mask": ctx.method("cross_sample_mask", True),
        "detach_teacher": ctx.method("detach_teacher", False),
        "detach_prototypes": ctx.method("detach_prototypes", False),
    }
    _train_mode(net_a, net_b)

    def step(labeled: Batch, unlabeled: Batch | None, iteration: int) -> None:
        ctx.zero_grad()
        n = labeled["image"].shape[0]
        images = torch.cat([labeled["image"], unlabeled["image"]])
        with ctx.autocast():
            out_a, out_b = net_a.forward_train(images), net_b.forward_train(images)
            terms = alhvr_step_losses(
                out_a,
                out_b,
                _label_map(labeled["label"]),
                n,
                options["num_classes"],
                iteration,
                options["beta"],
                options["temperature"],
                options["consistency"],
                options["rampup_length"],
                options["scaler"],
                **keywords,
            )
        ctx.step(terms["loss"])

    return step


def dycon_floor(ctx: FloorContext) -> FloorStep:
    """DyCON: student and teacher (noisy input, no grad) on the joint batch, UnCL + FeCL + MT + supervised."""
    network, teacher = ctx.get("network"), _frozen(ctx.get("teacher"))
    cfg = {key: ctx.method(key, default) for key, default in DEFAULT_LOSS_CONFIG.items()}
    max_iterations = int(ctx.method("max_iterations", 1))
    iters_per_epoch = int(ctx.method("iters_per_epoch", 1))
    total_epochs = max_iterations // iters_per_epoch + 1
    beta_max, beta_min = ctx.method("beta_max", 5.0), ctx.method("beta_min", 0.5)
    static_beta = ctx.method("static_beta", None)
    ema_decay = ctx.method("ema_decay", 0.99)
    noise_std, noise_clip = ctx.method("noise_std", 0.1), ctx.method("noise_clip", 0.2)
    _train_mode(network, teacher)

    def step(labeled: Batch, unlabeled: Batch | None, iteration: int) -> None:
        ctx.zero_grad()
        n = labeled["image"].shape[0]
        images = torch.cat([labeled["image"], unlabeled["image"]])
        label_l = _label_map(labeled["label"])
        labels = torch.cat([label_l, label_l.new_zeros((unlabeled["image"].shape[0], *label_l.shape[1:]))])
        epoch = iteration // iters_per_epoch
        beta = static_beta if static_beta is not None else adaptive_beta(epoch, total_epochs, beta_max, beta_min)
        with ctx.autocast():
            _, logits, features = network.forward_train(images)
            with torch.no_grad():
                _, ema_logits, ema_features = teacher.forward_train(images + _noise(images, noise_std, noise_clip))
        out = dycon_step_losses(
            logits.float(), ema_logits.float(), features.float(), ema_features.float(), labels, n, iteration, epoch,
            beta, cfg,
        )  # fmt: skip
        ctx.step(out["loss"])
        ema_update_(teacher, network, ema_warmup_decay(iteration, ema_decay))

    return step


def coranet_floor(ctx: FloorContext) -> FloorStep:
    """CoraNet self-training (stage 2): student heads on the labeled and, separately, the unlabeled batch, the
    frozen snapshot (eval mode) and the EMA teacher on the unlabeled batch, the three losses, EMA update."""
    network, teacher = ctx.get("network"), _frozen(ctx.get("teacher"))
    snapshot = _frozen(copy.deepcopy(network)).eval()
    num_classes, alpha = int(ctx.method("num_classes", 2)), float(ctx.method("alpha", 5.0))
    w_cons, w_rad = (w.to(ctx.device) for w in cost_weight_vectors(num_classes, alpha))
    threshold = float(ctx.method("threshold", 0.5))
    aux_weights = ctx.method("certain_aux_weights", "swapped")
    consistency, rampup = ctx.method("consistency", 0.1), ctx.method("consistency_rampup", 40.0)
    iters_per_epoch, unsup_weight = ctx.method("iters_per_epoch", 6), ctx.method("unsup_weight", 0.5)
    ema_decay = float(ctx.method("ema_decay", 0.99))
    _train_mode(network, teacher)

    def step(labeled: Batch, unlabeled: Batch | None, iteration: int) -> None:
        ctx.zero_grad()
        images_u = unlabeled["image"]
        with ctx.autocast():
            sup = coranet_supervised_loss(
                network.forward_train(labeled["image"]), _label_map(labeled["label"]), w_cons, w_rad
            )
            out_u = network.forward_train(images_u)
            with torch.no_grad():
                plab, certain = coranet_pseudo_labels(snapshot.forward_train(images_u), threshold)
                out_t = teacher.forward_train(images_u)
            certain_terms = coranet_certain_loss(out_u, plab, certain, w_cons, w_rad, aux_weights)
            weight = consistency_weight(iteration, consistency, rampup, iters_per_epoch)
            uncertain = coranet_uncertain_loss(out_u, out_t, ~certain, weight)
            total = coranet_total_loss(sup["total"], certain_terms["total"], uncertain, unsup_weight)
        ctx.step(total)
        ema_update_(teacher, network, ema_decay)

    return step


def stlu_floor(ctx: FloorContext) -> FloorStep:
    """STLU-Net: one encoder pass, the D- and M-stream decodes, symmetric Dice + cross pseudo-label Dice."""
    network = ctx.get("network")
    gamma_args = (
        ctx.method("gamma_max", 1.0),
        ctx.method("rampup_length", 40.0),
        ctx.method("iters_per_epoch", 150),
        ctx.method("gamma_iteration_offset", 1),
    )
    include_background, eps = ctx.method("include_background", False), ctx.method("dice_eps", 1e-10)
    _train_mode(network)

    def step(labeled: Batch, unlabeled: Batch | None, iteration: int) -> None:
        ctx.zero_grad()
        n = labeled["image"].shape[0]
        with ctx.autocast():
            out = network.forward_train(torch.cat([labeled["image"], unlabeled["image"]]), n)
            gamma = stlu_gamma(iteration, *gamma_args)
            losses = stlu_losses(
                out["logits_d"], out["logits_m"], _label_map(labeled["label"]), n, gamma, include_background, eps
            )
        ctx.step(losses["loss_total"])

    return step


FLOORS: dict[str, Callable[[FloorContext], FloorStep]] = {
    "Supervised": supervised_floor,
    "MeanTeacher": mean_teacher_floor,
    "UAMT": uamt_floor,
    "CPS": cps_floor,
    "ALHVR": alhvr_floor,
    "DyCON": dycon_floor,
    "CoraNet": coranet_floor,
    "STLU": stlu_floor,
}


def method_family(parser: ConfigParser) -> str:
    """The method class name of a bundle config (``common.methods.uamt.UAMT`` -> ``UAMT``)."""
    return str(parser.get("method")["_target_"]).rsplit(".", 1)[-1]


def build_floor(parser: ConfigParser, device: torch.device, amp: bool) -> FloorStep:
    """The floor step of the bundle configured by ``parser``."""
    family = method_family(parser)
    if family not in FLOORS:
        raise KeyError(f"no floor loop for method {family!r}; known: {sorted(FLOORS)}")
    return FLOORS[family](FloorContext(parser, device, amp))


def iterate_pairs(labeled: list[Batch], unlabeled: list[Batch] | None) -> Iterator[tuple[Batch, Batch | None]]:
    """Endless (labeled, unlabeled) batch pairs cycling over in-memory lists, as the engine draws them."""
    i = 0
    while True:
        yield labeled[i % len(labeled)], None if not unlabeled else unlabeled[i % len(unlabeled)]
        i += 1
