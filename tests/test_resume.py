"""Exact resume after SIGKILL, atomic checkpoints, and the pieces behind them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.utils.data import DataLoader

from common.engines import (
    AtomicCheckpointSaver,
    SemiSupervisedTrainer,
    TrainingStateLoader,
    TrainingStateSaver,
    latest_checkpoint,
    resume_checkpoint,
)
from common.engines.resume import derived_seed, parse_flag
from common.methods.base import SemiSupervisedMethod
from tests.bundle_utils import TINY, config_files, make_workflow
from tests.conftest import REPO_ROOT


class BlockAtIteration:
    """Test-only handler: the run hangs after ``iteration`` completes, so the test kills it at a known point."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=self.iteration), self._block)

    @staticmethod
    def _block(engine: Engine) -> None:
        while True:
            time.sleep(1.0)


# ---- the pieces ----------------------------------------------------------------------------------------------


def test_parse_flag_accepts_config_and_command_line_spellings():
    assert parse_flag(True) and parse_flag("true") and parse_flag("True") and parse_flag(1)
    assert not parse_flag(False) and not parse_flag("false") and not parse_flag("0")
    with pytest.raises(ValueError, match="resume must be true or false, got 'maybe'"):
        parse_flag("maybe")


def test_latest_checkpoint_is_the_highest_step_and_missing_ones_are_named(tmp_path):
    for epoch in (2, 10, 9):
        (tmp_path / f"latest_checkpoint_epoch={epoch}.pt").write_bytes(b"x")
    (tmp_path / "model.pt").write_bytes(b"x")
    assert Path(latest_checkpoint(tmp_path)).name == "latest_checkpoint_epoch=10.pt"
    assert resume_checkpoint("false", tmp_path) is None
    with pytest.raises(FileNotFoundError, match=f"no training checkpoint latest_\\*.pt in {tmp_path / 'empty'}"):
        resume_checkpoint(True, tmp_path / "empty")


def test_derived_seeds_differ_by_iteration_and_stream():
    seeds = {derived_seed(1337, it, stream) for it in (0, 4, 8) for stream in (0, 1, 2)}
    assert len(seeds) == 9
    assert derived_seed(1337, 4, 1) == derived_seed(1337, 4, 1)


def _engine_with_state_saver(save_dir: Path, net: nn.Module) -> tuple[Engine, TrainingStateSaver]:
    engine = Engine(lambda e, batch: None)
    saver = TrainingStateSaver(
        save_dir=str(save_dir), save_dict={"net": net}, save_interval=1, n_saved=1, file_prefix="latest"
    )
    saver.attach(engine)
    return engine, saver


def test_interrupted_save_keeps_the_previous_latest_checkpoint(tmp_path, monkeypatch):
    net = nn.Linear(3, 2)
    engine, _ = _engine_with_state_saver(tmp_path, net)
    engine.run([0, 1], max_epochs=1)  # writes latest_checkpoint_epoch=1.pt
    saved_weight = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)

    real_save = torch.save

    def crash_mid_write(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        engine.run([0, 1], max_epochs=2)  # epoch 2's save fails half-way
    monkeypatch.setattr(torch, "save", real_save)

    assert [p.name for p in tmp_path.iterdir()] == ["latest_checkpoint_epoch=1.pt"]  # no temporary file left
    state = torch.load(tmp_path / "latest_checkpoint_epoch=1.pt", weights_only=True)
    assert torch.equal(state["net"]["weight"], saved_weight)
    assert state["trainer"]["iteration"] == 2

    # a new run in the same folder (as after a restart) replaces it at its first successful save
    engine, _ = _engine_with_state_saver(tmp_path, net)
    engine.run([0, 1], max_epochs=3)
    assert [p.name for p in tmp_path.iterdir()] == ["latest_checkpoint_epoch=3.pt"]


def test_interrupted_final_save_keeps_the_previous_model(tmp_path, monkeypatch):
    net = nn.Linear(3, 2)
    engine = Engine(lambda e, batch: None)
    AtomicCheckpointSaver(
        save_dir=str(tmp_path), save_dict={"model": net}, save_final=True, final_filename="model.pt"
    ).attach(engine)
    engine.run([0], max_epochs=1)
    first = torch.load(tmp_path / "model.pt", weights_only=True)

    def crash(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise KeyboardInterrupt

    with torch.no_grad():
        net.weight.mul_(-1.0)
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        engine.run([0], max_epochs=2)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.pt"]
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], first["weight"])


def _validator_with_best_saver(save_dir: Path, net: nn.Module, dice: float) -> tuple[Engine, AtomicCheckpointSaver]:
    validator = Engine(lambda e, batch: None)
    validator.state.metrics = {}
    validator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(dice=dice))
    saver = AtomicCheckpointSaver(
        save_dir=str(save_dir),
        save_dict={"model": net},
        save_key_metric=True,
        key_metric_name="dice",
        key_metric_filename="model.pt",
    )
    saver.attach(validator)
    return validator, saver


def test_best_metric_tracker_survives_a_restart(tmp_path):
    best, worse = nn.Linear(2, 1), nn.Linear(2, 1)
    validator, saver = _validator_with_best_saver(tmp_path, best, dice=0.9)
    validator.run([0], max_epochs=1)
    state = saver.state_dict()
    assert [score for score, _ in state["_saved"]] == [0.9]

    # the resumed process: a fresh saver restored from the training state does not replace a better model.pt
    validator, restarted = _validator_with_best_saver(tmp_path, worse, dice=0.5)
    restarted.load_state_dict(state)
    validator.run([0], max_epochs=1)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], best.weight.detach())
    # without the restored tracker it would have (the behaviour this guards against)
    validator, forgetful = _validator_with_best_saver(tmp_path, worse, dice=0.5)
    validator.run([0], max_epochs=1)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], worse.weight.detach())


def test_state_saver_refuses_iteration_level_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="epoch_level=true"):
        TrainingStateSaver(
            save_dir=str(tmp_path), save_dict={"net": nn.Linear(1, 1)}, save_interval=1, epoch_level=False
        )


# ---- the engine mechanism on a toy method --------------------------------------------------------------------


class NoisyFit(SemiSupervisedMethod):
    """Fits a scalar; records every sample it sees (images hold their index) and draws torch noise."""

    def __init__(self) -> None:
        self.weight = nn.Parameter(torch.zeros(1))
        holder = nn.Module()
        holder.weight = self.weight
        super().__init__({"network": holder})
        self.seen: list[tuple[list[int], list[int]]] = []

    def compute_losses(self, labeled, unlabeled, iteration):
        self.seen.append((labeled["image"].flatten().tolist(), unlabeled["image"].flatten().tolist()))
        noise = torch.randn(1) * 0.1
        loss = ((self.weight + noise - labeled["image"]) ** 2).mean()
        return {"loss": loss}


def _toy_trainer(method: NoisyFit, handlers: list) -> SemiSupervisedTrainer:
    labeled = [{"image": torch.tensor([float(i)]), "label": torch.tensor([0.0])} for i in range(5)]
    unlabeled = [{"image": torch.tensor([100.0 + i])} for i in range(3)]
    return SemiSupervisedTrainer(
        device="cpu",
        max_epochs=3,
        epoch_length=4,
        max_iterations=12,
        seed=7,
        train_data_loader=DataLoader(labeled, batch_size=2, shuffle=True),
        unlabeled_data_loader=DataLoader(unlabeled, batch_size=2, shuffle=True),
        method=method,
        optimizer=torch.optim.SGD([method.weight], lr=0.1, momentum=0.9),
        train_handlers=handlers,
    )


def test_resumed_engine_draws_the_same_batches_and_noise(tmp_path):
    full = NoisyFit()
    torch.manual_seed(0)
    trainer = _toy_trainer(
        full,
        [
            TrainingStateSaver(
                save_dir=str(tmp_path / "a"),
                save_dict={"net": full.modules["network"]},
                save_interval=1,
                n_saved=None,
                file_prefix="latest",
            )
        ],
    )
    trainer.run()
    assert len(full.seen) == 12

    resumed = NoisyFit()
    torch.manual_seed(123)  # a different process history: nothing before the epoch start may matter
    checkpoint = tmp_path / "a" / "latest_checkpoint_epoch=1.pt"
    loader = TrainingStateLoader(load_path=checkpoint, load_dict={"net": resumed.modules["network"]})
    trainer = _toy_trainer(resumed, [loader])
    trainer.run()
    # momentum is not in this toy checkpoint, so compare what was drawn, not the weights
    assert trainer.state.iteration == 12
    assert resumed.seen == full.seen[4:]
    epochs = [full.seen[i : i + 4] for i in (0, 4, 8)]
    assert epochs[0] != epochs[1] != epochs[2]  # fresh shuffles every epoch, not a replay


def test_loader_names_the_file_when_it_does_not_fit(tmp_path):
    net = nn.Linear(3, 2)
    engine, _ = _engine_with_state_saver(tmp_path, net)
    engine.run([0, 1], max_epochs=1)
    path = tmp_path / "latest_checkpoint_epoch=1.pt"
    with pytest.raises(FileNotFoundError, match="no_such.pt does not exist"):
        TrainingStateLoader(load_path=tmp_path / "no_such.pt", load_dict={"net": net})

    other = Engine(lambda e, batch: None)
    TrainingStateLoader(load_path=path, load_dict={"net": net, "teacher": nn.Linear(3, 2)}).attach(other)
    with pytest.raises(ValueError, match=r"latest_checkpoint_epoch=1.pt lacks \['teacher'\]"):
        other.run([0, 1], max_epochs=1)

    longer = Engine(lambda e, batch: None)
    TrainingStateLoader(load_path=path, load_dict={"net": net}).attach(longer)
    with pytest.raises(ValueError, match="epoch_length=2 but this run has epoch_length=3"):
        longer.run([0, 1, 2], max_epochs=2)


# ---- kill -9 and resume a real bundle ------------------------------------------------------------------------

KILL_CASES = [("mean_teacher_acdc", "acdc"), ("mean_teacher_la", "la")]


def _overrides(flavour: str, dataset_dir: Path, ckpt_dir: Path, output_dir: Path) -> dict:
    """Weights to ``<run>/models``, resume states to ``<run>/checkpoints`` (the bundle layout under a run folder)."""
    return {
        **TINY[flavour],
        "dataset_dir": str(dataset_dir),
        "max_iterations": 8,
        "val_interval": 4,
        "num_workers": 0,
        "ckpt_dir": str(ckpt_dir),
        "resume_dir": str(ckpt_dir.parent / "checkpoints"),
        "output_dir": str(output_dir),
    }


def _cli(name: str, args_file: Path, *extra: str) -> list[str]:
    configs = "[" + ",".join(f"'{c}'" for c in config_files(name, "train", "demo")) + "]"
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
        "--args_file",
        str(args_file),
        *extra,
    ]


def _run_until_first_checkpoint_then_kill(command: list[str], ckpt_dir: Path, log: Path, timeout: float = 600) -> None:
    # output goes to a file: a full pipe would stall the child before it ever writes a checkpoint
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while not list(ckpt_dir.glob("latest_*.pt")):
            if process.poll() is not None:
                pytest.fail(f"the run ended (code {process.returncode}) early:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no latest checkpoint appeared in time:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name, flavour", KILL_CASES)
def test_killed_run_resumes_to_the_uninterrupted_result(name, flavour, phantom_datasets, tmp_path):
    # A: uninterrupted, in this process
    a_dir = tmp_path / "a"
    workflow = make_workflow(name, **_overrides(flavour, phantom_datasets[flavour], a_dir / "models", a_dir / "eval"))
    workflow.run()
    workflow.finalize()
    expected = _state(latest_checkpoint(a_dir / "checkpoints"))
    assert expected["trainer"]["iteration"] == 8
    assert [p.name for p in (a_dir / "models").iterdir()] == ["model.pt"]  # models/ holds no resume state

    # B: a CLI run that hangs in its second epoch (test-side handler), killed with SIGKILL after the first
    # checkpoint, then resumed with --resume true
    b_dir = tmp_path / "b"
    overrides = _overrides(flavour, phantom_datasets[flavour], b_dir / "models", b_dir / "eval")
    args_file = tmp_path / "b_args.json"
    args_file.write_text(json.dumps(overrides))
    blocked = tmp_path / "b_blocked.json"
    # the test handler takes the id of the bundle's optional handler (null in these bundles), so the override is a
    # top-level id, as every command-line override of a shared block is
    blocking = {"_target_": "tests.test_resume.BlockAtIteration", "iteration": 6}
    blocked.write_text(json.dumps({**overrides, "inspection_saver": blocking}))
    _run_until_first_checkpoint_then_kill(_cli(name, blocked), b_dir / "checkpoints", tmp_path / "b_killed.log")
    interrupted = _state(latest_checkpoint(b_dir / "checkpoints"))
    assert interrupted["trainer"]["iteration"] == 4

    result = subprocess.run(
        _cli(name, args_file, "--resume", "true"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stderr + result.stdout
    files = sorted(p.name for p in (b_dir / "checkpoints").glob("latest_*.pt"))
    assert files == ["latest_checkpoint_epoch=2.pt"]  # the resumed-from file was replaced, not left behind
    resumed = _state(b_dir / "checkpoints" / files[0])
    assert [p.name for p in (b_dir / "models").iterdir()] == ["model.pt"]

    assert resumed["trainer"]["iteration"] == expected["trainer"]["iteration"]
    for key in ("network", "teacher"):
        assert expected[key].keys() == resumed[key].keys()
        for tensor_name, value in expected[key].items():
            assert torch.allclose(resumed[key][tensor_name], value, rtol=1e-5, atol=1e-6), (key, tensor_name)
    momentum = [s["momentum_buffer"] for s in expected["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in resumed["optimizer"]["state"].values()]
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(momentum, momentum_b, strict=True))
    assert expected["lr_scheduler"]["last_epoch"] == resumed["lr_scheduler"]["last_epoch"] == 8
    assert expected["best_metric_saver"] == resumed["best_metric_saver"]  # same best validation score tracked
    model_a, model_b = _state(a_dir / "models" / "model.pt"), _state(b_dir / "models" / "model.pt")
    assert all(torch.allclose(model_b[k], v, rtol=1e-5, atol=1e-6) for k, v in model_a.items())
    # and the interruption mattered: training moved the weights after the checkpoint it resumed from
    first = next(iter(expected["network"]))
    assert not torch.allclose(interrupted["network"][first], resumed["network"][first])


def test_resume_without_a_checkpoint_names_the_folder(phantom_datasets, tmp_path):
    overrides = _overrides("acdc", phantom_datasets["acdc"], tmp_path / "models", tmp_path / "eval")
    workflow = make_workflow("mean_teacher_acdc", resume="true", **overrides)
    with pytest.raises(RuntimeError) as info:
        workflow.parser.get_parsed_content("resume_from")
    assert isinstance(info.value.__cause__, FileNotFoundError)  # MONAI's wrapper chains it; the CLI prints both
    assert f"no training checkpoint latest_*.pt in {tmp_path / 'checkpoints'}" in str(info.value.__cause__)
