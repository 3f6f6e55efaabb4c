"""Every bundle trains at tiny sizes through its own configs: properties, learning, checkpoints."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from common.tools.metadata import read_metadata
from tests.bundle_utils import BUNDLES, TINY, bundle_dir, make_workflow

ITERATIONS = 12


def supervised_loss_on(workflow, batch) -> float:
    """The method's supervised loss on a fixed labeled batch (no unlabeled data, fixed dropout seed, no step)."""
    method = workflow.parser.get_parsed_content("method")
    labeled = {k: torch.as_tensor(batch[k]) for k in ("image", "label")}
    labeled = {k: (v.as_tensor() if hasattr(v, "as_tensor") else v) for k, v in labeled.items()}
    method.train()
    torch.manual_seed(0)
    with torch.no_grad():
        return float(method.compute_losses(labeled, None, 0)["loss_sup"])


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
    assert list((trained["ckpt_dir"].parent / "checkpoints").glob("latest*.pt")), "no resumable checkpoint written"
    assert [p.name for p in trained["ckpt_dir"].iterdir()] == ["model.pt"], "models/ holds a resume state"


def test_network_def_matches_metadata(trained):
    meta = read_metadata(bundle_dir(trained["name"]) / "configs" / "metadata.json")
    fmt = meta["network_data_format"]
    network = trained["workflow"].parser.get_parsed_content("network_def", lazy=False).eval()
    spatial = [32] * len(fmt["inputs"]["image"]["spatial_shape"])
    with torch.no_grad():
        out = network(torch.zeros(1, fmt["inputs"]["image"]["num_channels"], *spatial))
    assert out.shape == (1, fmt["outputs"]["pred"]["num_channels"], *spatial)
    assert len(fmt["outputs"]["pred"]["channel_def"]) == out.shape[1]


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_input_format_follows_modality(name):
    """CT inputs are Hounsfield units (the recipes clip and scale HU windows), MR inputs magnitude images."""
    image = read_metadata(bundle_dir(name) / "configs" / "metadata.json")["network_data_format"]["inputs"]["image"]
    assert image["format"] == {"CT": "hounsfield", "MR": "magnitude"}[image["modality"]]


def tiny_overrides(trained) -> dict:
    keep = ("dataset_dir", "spatial_size", "patch_size", "sw_stride", "sw_batch_size")
    return {k: v for k, v in trained["overrides"].items() if k in keep}


def test_network_def_identical_in_train_and_inference(trained):
    configs = bundle_dir(trained["name"]) / "configs"
    train, infer = ConfigParser(), ConfigParser()
    train.read_config(str(configs / "train.json"))
    infer.read_config(str(configs / "inference.json"))
    for parser in (train, infer):
        parser.resolve_macro_and_relative_ids()
    assert train["network_def"] == infer["network_def"]
    assert infer.get("network_def#in_channels", "@in_channels") == "@in_channels"
    assert not any("_meta_" in json.dumps(v) for v in infer.config.values()), "inference.json must be self-contained"


def test_inference_on_plain_nifti_folder_keeps_input_geometry(trained):
    """New images arrive as a folder of NIfTI files without dataset.json: every bundle must segment them."""
    dataset_dir = Path(trained["overrides"]["dataset_dir"])
    tests = json.loads((dataset_dir / "dataset.json").read_text())["test"]
    assert tests
    plain = trained["out"] / "plain_images"
    plain.mkdir()
    for item in tests:
        shutil.copy(dataset_dir / item["image"], plain / Path(item["image"]).name)
    out = trained["out"] / "predictions"
    workflow = make_workflow(
        trained["name"],
        configs=("inference",),
        workflow_type="infer",
        ckpt_path=str(trained["ckpt_dir"] / "model.pt"),
        output_dir=str(out),
        num_workers=0,
        **{**tiny_overrides(trained), "dataset_dir": str(plain)},
    )
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()
    for item in tests:
        source = nib.load(str(dataset_dir / item["image"]))
        stem = Path(item["image"]).name.replace(".nii.gz", "")
        pred = nib.load(str(out / f"{stem}_seg.nii.gz"))
        assert pred.shape == source.shape
        assert np.allclose(pred.affine, source.affine)
        values = np.unique(np.asarray(pred.dataobj))
        assert values.min() >= 0 and values.max() < trained["workflow"].parser["num_classes"]


def test_evaluate_writes_both_metric_families(trained):
    out = trained["out"] / "evaluation"
    workflow = make_workflow(
        trained["name"],
        configs=("train", "demo", "evaluate"),
        ckpt_path=str(trained["ckpt_dir"] / "model.pt"),
        ckpt_dir=str(out / "unused_models"),
        output_dir=str(out),
        **tiny_overrides(trained),
        num_labeled=trained["overrides"]["num_labeled"],
    )
    assert workflow.check_properties() == []  # the overlay keeps every train property resolvable
    workflow.run()
    workflow.finalize()
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    num_classes = trained["workflow"].parser["num_classes"]
    num_test = len(json.loads((Path(trained["overrides"]["dataset_dir"]) / "dataset.json").read_text())["test"])
    assert len(rows) == num_test * (num_classes - 1)  # one row per case x foreground class
    for key in ("paper_dice", "paper_jaccard", "paper_hd95", "paper_asd", "monai_dice", "monai_iou", "monai_hd95_mm"):
        assert key in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_cases"] == num_test
    assert 0.0 <= summary["paper_voxel_units"]["overall"]["dice"]["mean"] <= 1.0
    assert "assd_mm" in summary["monai_mm"]["overall"]
