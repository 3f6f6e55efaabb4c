"""Multi-process training: ``torchrun`` with each bundle's ``multi_gpu_train.json`` on CPU (gloo)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from monai.bundle import ConfigParser
from torch import nn

from common.engines import DistributedNetwork
from tests.bundle_utils import BUNDLES, TINY, bundle_dir
from tests.conftest import REPO_ROOT

LOGGING_HANDLERS = {"StatsHandler", "TensorBoardStatsHandler", "common.engines.ProgressBar"}


class TwoOutputs(nn.Module):
    """``forward`` gives logits; ``forward_train`` gives (logits, features) and calls ``forward`` itself."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)

    def forward_train(self, x):
        return self.forward(x), x.mean()


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_distributed_network_routes_forward_train_through_ddp(process_group):
    module = TwoOutputs()
    network = DistributedNetwork(module)
    x = torch.randn(2, 1, 8, 8)
    logits, features = network.forward_train(x)
    assert torch.equal(logits, module(x)) and torch.equal(features, x.mean())
    assert "forward" not in module.__dict__, "the class's forward must be restored after the call"
    logits.sum().backward()
    assert module.conv.weight.grad is not None
    assert torch.equal(network(x), module(x))  # plain forward unchanged


def _command_line_overrides(flavour: str) -> list[str]:
    args = []
    for key, value in {**TINY[flavour], "max_iterations": 4, "val_interval": 2}.items():
        args += [f"--{key}", json.dumps(value)]
    return args


def _rank_weights_overlay(path, networks: list[str]) -> str:
    """A test overlay whose ``finalize`` saves each rank's networks before the process group ends."""
    state = "{" + ", ".join(f"'{n}': getattr(@{n}, 'module', @{n}).state_dict()" for n in networks) + "}"
    target = f"'{path.parent}/rank' + str(torch.distributed.get_rank()) + '.pt'"
    overlay = {
        "finalize": [
            f"$torch.save({state}, {target})",
            "$torch.distributed.is_initialized() and torch.distributed.destroy_process_group()",
        ]
    }
    path.write_text(json.dumps(overlay))
    return str(path)


@pytest.mark.parametrize("name, networks", [("cps_acdc", ["network", "network_2"]), ("mean_teacher_la", ["network"])])
def test_two_process_training_keeps_ranks_identical(name, networks, phantom_datasets, tmp_path):
    """2 gloo processes: both ranks end with the same weights (teacher EMA too) and only one checkpoint set."""
    flavour = BUNDLES[name]
    if name.startswith("mean_teacher"):
        networks = [*networks, "teacher"]
    configs = [str(bundle_dir(name) / "configs" / f"{c}.json") for c in ("train", "demo", "multi_gpu_train")]
    (tmp_path / "ranks").mkdir()
    configs.append(_rank_weights_overlay(tmp_path / "ranks" / "overlay.json", networks))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    command += ["-m", "monai.bundle", "run", "--config_file", str(configs)]
    command += ["--dataset_dir", str(phantom_datasets[flavour]), "--ckpt_dir", str(tmp_path / "models")]
    command += ["--output_dir", str(tmp_path / "eval"), *_command_line_overrides(flavour)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    weights = [torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for network in networks:
        params = dict(weights[0][network])
        for key, value in weights[1][network].items():
            if "running_" in key or "num_batches" in key:
                continue  # BatchNorm statistics: DDP broadcasts rank 0's before each forward; rank 0 saves
            torch.testing.assert_close(value, params[key], rtol=0, atol=0, msg=f"{network}.{key} differs")
    saved = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert saved == ["model.pt"], saved
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["latest_checkpoint_epoch=2.pt"]
    model = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert set(model) == set(weights[0]["network"]), "model.pt must hold the unwrapped network"
    events = list((tmp_path / "eval" / "tensorboard").glob("events.out.tfevents.*"))
    writers = {path.name.split(".")[-2] for path in events}  # events.out.tfevents.<time>.<host>.<pid>.<n>
    assert events and len(writers) == 1, f"only rank 0 logs: {events}"


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_every_bundle_has_a_complete_multi_gpu_overlay(name):
    """Every network the optimiser trains is DDP-wrapped; the overlay sets top-level ids only."""
    configs = bundle_dir(name) / "configs"
    train = json.loads((configs / "train.json").read_text())
    raw_overlay = json.loads((configs / "multi_gpu_train.json").read_text())
    assert not [key for key in raw_overlay if "#" in key], "the overlay reaches into shared blocks"
    parser = ConfigParser(raw_overlay)
    parser.resolve_macro_and_relative_ids()
    overlay = parser.get()
    trained = [n for n in ("network", "network_2") if f"@{n}." in str(train["optimizer"]["params"])]
    assert trained
    for network in ("network", "network_2"):
        assert (network in overlay) == (network in trained)
    for network in trained:
        assert overlay[network]["_target_"] == "common.engines.DistributedNetwork"
        assert overlay[network]["module"] == f"$@{network}_def.to(@device)"
    assert train["train"] == "%bundles/shared/train.json#train"


def test_shared_training_config_is_rank_aware():
    """Both streams are sharded once a process group exists; rank 0 alone logs; validation runs unwrapped."""
    shared = json.loads((REPO_ROOT / "bundles" / "shared" / "train.json").read_text())
    train, validate = shared["train"], shared["validate"]
    for loader, sampler in (("dataloader", "sampler"), ("unlabeled_dataloader", "unlabeled_sampler")):
        assert train[sampler]["_target_"] == "common.engines.distributed_sampler"
        assert train[loader]["sampler"] == f"@train#{sampler}"
        assert train[loader]["shuffle"].startswith(f"$@train#{sampler} is None")
    logging = [h for s in (train, validate) for h in s["handlers"] if isinstance(h, dict)]
    logging = [h for h in logging if h["_target_"] in LOGGING_HANDLERS]
    assert len(logging) == 5
    assert all("@train#rank > 0" in h["_disabled_"] for h in logging)
    assert validate["evaluator"]["network"]["_target_"] == "common.engines.unwrap_network"


def test_distributed_helpers_without_a_process_group():
    from common.data import training_dataset
    from common.engines import distributed_sampler, process_rank, unwrap_network

    dataset = training_dataset([{"image": torch.zeros(1, 2, 2)}], transform=None)
    assert process_rank() == 0 and distributed_sampler(dataset) is None
    network = nn.Linear(2, 2)
    assert unwrap_network(network) is network
