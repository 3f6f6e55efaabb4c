"""Every bundle trains at tiny sizes through its own configs: properties, learning, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from tests.bundle_utils import BUNDLES, TINY, bundle_dir, make_workflow

ITERATIONS = 12


def supervised_loss_on(workflow, batch) -> float:
    """Supervised loss of the evaluated network on a fixed batch (train mode, fixed dropout seed)."""
    network = workflow.parser.get_parsed_content("network")
    loss_fn = workflow.parser.get_parsed_content("supervised_loss")
    network.train()
    torch.manual_seed(0)
    with torch.no_grad():
        logits = network(batch["image"].as_tensor() if hasattr(batch["image"], "as_tensor") else batch["image"])
        return float(loss_fn(logits, torch.as_tensor(batch["label"])))


@pytest.fixture(scope="session", params=sorted(BUNDLES))
def trained(request, phantom_datasets, tmp_path_factory):
    """Train bundle ``request.param`` for a few iterations once per session; later tests reuse its outputs."""
    name = request.param
    flavour = BUNDLES[name]
    out = tmp_path_factory.mktemp(name)
    overrides = {
        **TINY[flavour],
        "dataset_dir": str(phantom_datasets[flavour]),
        "max_iterations": ITERATIONS,
        "val_interval": ITERATIONS // 2,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
    }
    workflow = make_workflow(name, **overrides)
    missing = workflow.check_properties()
    batch = next(iter(workflow.parser.get_parsed_content("train#dataloader")))
    loss_before = supervised_loss_on(workflow, batch)
    workflow.run()
    loss_after = supervised_loss_on(workflow, batch)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    result = {
        "name": name,
        "workflow": workflow,
        "missing": missing,
        "iterations": trainer.state.iteration,
        "output": dict(trainer.state.output),
        "loss_before": loss_before,
        "loss_after": loss_after,
        "ckpt_dir": out / "models",
        "out": out,
        "overrides": overrides,
    }
    workflow.finalize()
    return result


def test_train_properties_complete(trained):
    assert trained["missing"] == []


def test_runs_exact_iterations_and_logs_components(trained):
    assert trained["iterations"] == ITERATIONS
    keys = set(trained["output"])
    assert {"loss", "loss_sup"} <= keys
    if trained["name"].startswith("mean_teacher"):
        assert {"loss_cons", "cons_weight"} <= keys


def test_training_lowers_supervised_loss(trained):
    assert trained["loss_after"] < trained["loss_before"]


def test_writes_loadable_checkpoints(trained):
    weights = torch.load(trained["ckpt_dir"] / "model.pt", weights_only=True)
    network = trained["workflow"].parser.get_parsed_content("network_def", lazy=False)
    network.load_state_dict(weights)
    assert list(trained["ckpt_dir"].glob("latest*.pt")), "no resumable checkpoint written"


def test_network_def_matches_metadata(trained):
    meta = json.loads((bundle_dir(trained["name"]) / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    network = trained["workflow"].parser.get_parsed_content("network_def", lazy=False).eval()
    spatial = [32] * len(fmt["inputs"]["image"]["spatial_shape"])
    with torch.no_grad():
        out = network(torch.zeros(1, fmt["inputs"]["image"]["num_channels"], *spatial))
    assert out.shape == (1, fmt["outputs"]["pred"]["num_channels"], *spatial)
    assert len(fmt["outputs"]["pred"]["channel_def"]) == out.shape[1]
