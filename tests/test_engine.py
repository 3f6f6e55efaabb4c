import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from common.engines import SemiSupervisedTrainer
from common.methods.base import HOOK_ITERATION_STARTED, HOOK_OPTIMIZER_STEPPED, SemiSupervisedMethod


class CountingMethod(SemiSupervisedMethod):
    """Least-squares fit of a scalar weight; records what the engine hands over."""

    def __init__(self, requires_unlabeled=True):
        self.weight = nn.Parameter(torch.zeros(1))
        holder = nn.Module()
        holder.weight = self.weight
        super().__init__({"network": holder})
        self.requires_unlabeled = requires_unlabeled
        self.calls, self.started, self.stepped = [], [], []

    def compute_losses(self, labeled, unlabeled, iteration):
        self.calls.append(
            (iteration, labeled["image"].shape[0], None if unlabeled is None else unlabeled["image"].shape[0])
        )
        loss = ((self.weight * labeled["image"] - labeled["label"]) ** 2).mean()
        return {"loss": loss, "loss_sup": loss.detach()}

    def hooks(self):
        return {HOOK_ITERATION_STARTED: self.started.append, HOOK_OPTIMIZER_STEPPED: self.stepped.append}


def labeled_loader(n=4, batch=2):
    data = [{"image": torch.ones(1, 2), "label": torch.full((1, 2), 2.0)} for _ in range(n)]
    return DataLoader(data, batch_size=batch, shuffle=True)


def unlabeled_loader(n=3, batch=2):
    return DataLoader([{"image": torch.ones(1, 2)} for _ in range(n)], batch_size=batch)


def make_trainer(method, unlabeled, max_iterations=7, epoch_length=3):
    return SemiSupervisedTrainer(
        device="cpu",
        max_epochs=3,
        epoch_length=epoch_length,
        max_iterations=max_iterations,
        train_data_loader=labeled_loader(),
        unlabeled_data_loader=unlabeled,
        method=method,
        optimizer=torch.optim.SGD([method.weight], lr=0.4),
    )


def test_engine_runs_iterations_hooks_and_streams():
    method = CountingMethod()
    trainer = make_trainer(method, unlabeled_loader())
    trainer.run()
    assert trainer.state.iteration == 7  # stops inside the third epoch
    assert [c[0] for c in method.calls] == list(range(7))
    assert method.started == list(range(7)) and method.stepped == list(range(7))
    # the unlabeled stream of 3 images in batches of 2 is cycled: 2, 1, 2, 1, ...
    assert [c[2] for c in method.calls] == [2, 1, 2, 1, 2, 1, 2]
    assert set(trainer.state.output) == {"loss", "loss_sup"}
    assert method.weight.item() == pytest.approx(2.0, abs=0.2)  # it learned w * 1 = 2


def test_engine_refuses_empty_unlabeled_stream_for_a_semi_supervised_method():
    with pytest.raises(ValueError, match="unlabeled stream is empty but CountingMethod learns from unlabeled"):
        make_trainer(CountingMethod(), DataLoader([], batch_size=2), max_iterations=2)


def test_engine_allow_supervised_only_trains_the_supervised_part_with_a_warning(caplog):
    method = CountingMethod()
    trainer = SemiSupervisedTrainer(
        device="cpu",
        max_epochs=1,
        epoch_length=2,
        train_data_loader=labeled_loader(),
        unlabeled_data_loader=DataLoader([], batch_size=2),
        method=method,
        optimizer=torch.optim.SGD([method.weight], lr=0.4),
        allow_supervised_only=True,
    )
    assert "CountingMethod trains its supervised part only" in caplog.text
    trainer.run()
    assert [c[2] for c in method.calls] == [None, None]


def test_engine_empty_unlabeled_trains_a_supervised_method():
    method = CountingMethod(requires_unlabeled=False)
    trainer = make_trainer(method, DataLoader([], batch_size=2), max_iterations=2)
    trainer.run()
    assert trainer.state.iteration == 2
    assert all(c[2] is None for c in method.calls)


def test_engine_rejects_empty_labeled_set():
    method = CountingMethod()
    with pytest.raises(ValueError, match="labeled training set is empty"):
        SemiSupervisedTrainer(
            device="cpu",
            max_epochs=1,
            train_data_loader=DataLoader([], batch_size=1),
            method=method,
            optimizer=torch.optim.SGD([method.weight], lr=0.1),
        )


def test_engine_refuses_non_finite_loss():
    method = CountingMethod()
    trainer = make_trainer(method, None, max_iterations=2)
    with torch.no_grad():
        method.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="iteration 1"):
        trainer.run()


def test_engine_distributed_unlabeled_sampler_draws_a_new_permutation_on_every_pass():
    # a DistributedSampler's permutation depends only on (seed, epoch): each pass through the shard within an engine
    # epoch must advance it, else the unlabeled stream repeats the same order until the next epoch
    dataset = [{"image": torch.full((1, 2), float(i))} for i in range(6)]
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0)
    seen = []

    class Recording(CountingMethod):
        def compute_losses(self, labeled, unlabeled, iteration):
            seen.append(int(unlabeled["image"][0, 0, 0]))
            return super().compute_losses(labeled, unlabeled, iteration)

    trainer = make_trainer(Recording(), DataLoader(dataset, batch_size=1, sampler=sampler), 18, epoch_length=18)
    trainer.run()
    passes = [seen[i : i + 6] for i in range(0, 18, 6)]
    assert all(sorted(p) == list(range(6)) for p in passes)  # every pass covers the shard once
    assert len({tuple(p) for p in passes}) == 3  # and in a new order each time


@pytest.mark.parametrize("reads", [False, True])
def test_unlabeled_labels_reach_only_a_method_that_reads_them(reads):
    seen = []

    class KeyRecording(CountingMethod):
        reads_unlabeled_labels = reads

        def compute_losses(self, labeled, unlabeled, iteration):
            seen.append(set(unlabeled))
            return super().compute_losses(labeled, unlabeled, iteration)

    with_labels = DataLoader([{"image": torch.ones(1, 2), "label": torch.ones(1, 2)} for _ in range(2)], batch_size=2)
    make_trainer(KeyRecording(), with_labels, max_iterations=2).run()
    assert seen == [{"image", "label"} if reads else {"image"}] * 2  # a paper-protocol leak is opt-in per method
