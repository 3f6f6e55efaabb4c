"""One ignite/MONAI trainer for every method: a labeled and an unlabeled stream, counted in iterations."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.engines import Trainer
from monai.inferers import Inferer, SimpleInferer
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from ..methods.base import HOOK_ITERATION_STARTED, HOOK_OPTIMIZER_STEPPED, SemiSupervisedMethod
from .resume import derived_seed, reseed_global_generators, seed_loader

__all__ = ["SemiSupervisedTrainer"]

logger = logging.getLogger(__name__)

_HOOK_EVENTS = {HOOK_ITERATION_STARTED: Events.ITERATION_STARTED, HOOK_OPTIMIZER_STEPPED: Events.ITERATION_COMPLETED}
# ``stream`` values of ``derived_seed``: one seed per consumer of randomness at an epoch start
_GLOBAL_STREAM, _LABELED_STREAM, _UNLABELED_STREAM = 0, 1, 2
_STREAMS_PER_RANK = 3
# a distributed unlabeled sampler's epoch (which seeds its permutation): engine epoch * this + passes within it
_SAMPLER_PASSES_PER_EPOCH = 100_000


def _dataset_size(loader: Iterable | None) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return None if dataset is None else len(dataset)
    except TypeError:
        return None


class SemiSupervisedTrainer(Trainer):
    """Draws a labeled batch from ``train_data_loader`` and an unlabeled batch from ``unlabeled_data_loader``
    every iteration and hands both to ``method``, which returns named losses (total under ``"loss"``).

    The engine owns what is common to all methods: device transfer, AMP (CUDA only), the optimiser step,
    gradient clipping, stopping at ``max_iterations`` and the method's hooks, which run as ignite event
    handlers (e.g. the EMA teacher update after each optimiser step). ``engine.state.output`` holds the
    detached losses, so MONAI's ``StatsHandler``/``TensorBoardStatsHandler`` log every component.

    **Exact resume** (``seed`` given, as bundles do): every epoch starts from a state that is a function of
    ``(seed, iteration)`` and of what the training-state checkpoint holds. At each epoch start the torch, NumPy
    and Python global generators and the random transforms of both datasets (MONAI ``set_random_state``) are
    reseeded from ``(seed, iteration)``, and both streams restart with fresh iterators (so fresh shuffles drawn
    from the reseeded generator). Without the restart the stream positions would depend on the run's history:
    ignite keeps the labeled iterator across epochs when ``epoch_length`` is set, the unlabeled iterator lives
    in this object, and neither can be checkpointed. Checkpoints are written at epoch ends
    (``TrainingStateSaver``), so a run killed at any moment and resumed from its latest checkpoint draws the same
    batches, augmentations and noise as an uninterrupted run with the same seed. The cost: each epoch cuts the
    current pass over a stream short (every sample stays equally likely across epochs). Exact with
    ``num_workers=0``; persistent workers keep their own transform states across epochs.

    Args:
        device: device of the networks.
        max_epochs: engine epochs; an epoch is ``epoch_length`` iterations (the papers count iterations, so
            bundles set ``epoch_length`` and derive ``max_epochs`` from ``max_iterations``).
        train_data_loader: labeled stream; restarted when exhausted (ignite semantics with ``epoch_length``).
        method: the method object.
        optimizer: optimiser over all trainable parameters of the method.
        unlabeled_data_loader: unlabeled stream, cycled endlessly; ``None`` -> labeled only. An empty one is
            refused unless the method has no unsupervised term (``requires_unlabeled=False``) or
            ``allow_supervised_only`` is set.
        allow_supervised_only: accept an empty unlabeled stream for a semi-supervised method and train its
            supervised part only, with a logged warning (MONAI Label hands a bundle labeled studies only).
        max_iterations: stop after this many iterations even inside an epoch (``None``: run all epochs).
        seed: when given, reseed and restart both streams at every epoch start from ``(seed, iteration)``
            (exact resume, above); ``None`` keeps the streams running across epochs.
        clip_grad_norm: clip the global gradient norm to this value when given.
        amp: mixed precision; only takes effect on CUDA devices.
        image_key, label_key: keys of the batch dictionaries.
        train_handlers: MONAI/ignite handlers to attach.
        inferer: kept for the MONAI bundle property ``train#inferer``; training uses the method's own forward.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        method: SemiSupervisedMethod,
        optimizer: Optimizer,
        unlabeled_data_loader: Iterable | DataLoader | None = None,
        epoch_length: int | None = None,
        max_iterations: int | None = None,
        seed: int | None = None,
        clip_grad_norm: float | None = None,
        amp: bool = False,
        non_blocking: bool = False,
        image_key: str = "image",
        label_key: str = "label",
        inferer: Inferer | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        train_handlers: Sequence | None = None,
        allow_supervised_only: bool = False,
    ) -> None:
        labeled_size = _dataset_size(train_data_loader)
        if labeled_size == 0:
            raise ValueError("The labeled training set is empty: a semi-supervised run needs labeled images.")
        device = torch.device(device) if isinstance(device, str) else device
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            handlers=None,
            amp=amp and device.type == "cuda",
            decollate=False,
        )
        self.method = method
        self.optimizer = optimizer
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.clip_grad_norm = clip_grad_norm
        self.image_key = image_key
        self.label_key = label_key
        self.max_iterations = max_iterations
        self.allow_supervised_only = allow_supervised_only
        self.unlabeled_data_loader = self._usable_unlabeled_loader(unlabeled_data_loader)
        self._unlabeled_iter: Iterator | None = None
        self.seed = seed

        if seed is not None:
            self.add_event_handler(Events.EPOCH_STARTED, self._restart_streams)
        for name, hook in method.hooks().items():
            if name not in _HOOK_EVENTS:
                raise ValueError(f"Unknown method hook {name!r}; known: {sorted(_HOOK_EVENTS)}.")
            self.add_event_handler(_HOOK_EVENTS[name], self._call_hook, hook)
        if max_iterations is not None:
            self.add_event_handler(Events.ITERATION_COMPLETED(once=max_iterations), self._stop_at_max_iterations)
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    def _usable_unlabeled_loader(self, loader: Iterable | None) -> Iterable | None:
        if loader is None:
            return None
        if _dataset_size(loader) == 0:
            name = type(self.method).__name__
            if self.method.requires_unlabeled and not self.allow_supervised_only:
                raise ValueError(
                    f"The unlabeled stream is empty but {name} learns from unlabeled images: lower num_labeled "
                    "below the training list, add an 'unlabeled' section to dataset.json, train the supervised "
                    "bundle, or set allow_supervised_only to train the supervised part only."
                )
            if self.method.requires_unlabeled:
                logger.warning("The unlabeled stream is empty: %s trains its supervised part only.", name)
            return None
        return loader

    def _restart_streams(self, engine: Engine) -> None:
        """Reseed every generator from ``(seed, iteration)`` and start both streams afresh (see class docs)."""
        iteration = engine.state.iteration
        # each distributed rank draws its own augmentations and noise (rank 0 as a single-process run)
        offset = _STREAMS_PER_RANK * idist.get_rank()
        reseed_global_generators(derived_seed(self.seed, iteration, _GLOBAL_STREAM + offset))
        labeled = engine.state.dataloader
        seed_loader(labeled, derived_seed(self.seed, iteration, _LABELED_STREAM + offset))
        if self.unlabeled_data_loader is not None:
            seed_loader(self.unlabeled_data_loader, derived_seed(self.seed, iteration, _UNLABELED_STREAM + offset))
            sampler = self._unlabeled_epoch_sampler()
            if sampler is not None:  # a new shard permutation per epoch, as MONAI's Workflow does for the labeled one
                sampler.set_epoch(engine.state.epoch * _SAMPLER_PASSES_PER_EPOCH)
        engine.set_data(labeled)  # a fresh labeled iterator; ignite then starts counting the epoch at 0
        self._unlabeled_iter = None if self.unlabeled_data_loader is None else iter(self.unlabeled_data_loader)

    @staticmethod
    def _stop_at_max_iterations(engine: Engine) -> None:
        # end the epoch normally (EPOCH_COMPLETED handlers such as checkpointing still run) and make it the last
        engine.state.max_epochs = engine.state.epoch
        engine.terminate_epoch()

    @staticmethod
    def _call_hook(engine: Engine, hook: Callable[[int], None]) -> None:
        hook(engine.state.iteration - 1)

    def _unlabeled_epoch_sampler(self) -> Any | None:
        """The unlabeled loader's sampler when its permutation is seeded by an epoch (``DistributedSampler``)."""
        sampler = getattr(self.unlabeled_data_loader, "sampler", None)
        return sampler if hasattr(sampler, "set_epoch") else None

    def _next_unlabeled(self) -> Mapping[str, Any] | None:
        if self.unlabeled_data_loader is None:
            return None
        if self._unlabeled_iter is None:
            self._unlabeled_iter = iter(self.unlabeled_data_loader)
        try:
            return next(self._unlabeled_iter)
        except StopIteration:  # an endless stream of fresh permutations, as the reference's unlabeled sampler
            sampler = self._unlabeled_epoch_sampler()
            if sampler is not None:  # it would repeat its permutation otherwise
                sampler.set_epoch(getattr(sampler, "epoch", 0) + 1)
            self._unlabeled_iter = iter(self.unlabeled_data_loader)
            return next(self._unlabeled_iter)

    def _to_device(self, batch: Mapping[str, Any], keys: Sequence[str]) -> dict[str, torch.Tensor]:
        out = {}
        for key in keys:
            if key in batch:
                value = batch[key]
                # plain tensors: MetaTensor bookkeeping costs time in every loss operation and is not needed here
                value = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
                out[key] = value.to(self.state.device, non_blocking=self.non_blocking)
        return out

    def _iteration(self, engine: Engine, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        labeled = self._to_device(batchdata, (self.image_key, self.label_key))
        unlabeled_batch = self._next_unlabeled()
        # the unlabeled labels reach only a method that asks for them (DyCON's official FeCL: a paper-protocol leak)
        unlabeled_keys = (self.image_key, self.label_key) if self.method.reads_unlabeled_labels else (self.image_key,)
        unlabeled = None if unlabeled_batch is None else self._to_device(unlabeled_batch, unlabeled_keys)
        iteration = engine.state.iteration - 1

        self.method.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=self.amp):
            losses = self.method.compute_losses(labeled, unlabeled, iteration)
        total = losses["loss"]
        if not math.isfinite(float(total.detach())):
            details = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            raise FloatingPointError(f"Non-finite training loss at iteration {iteration + 1} ({details}).")

        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self._clip()
            self.optimizer.step()
        return {key: value.detach() for key, value in losses.items()}

    def _clip(self) -> None:
        if self.clip_grad_norm is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
