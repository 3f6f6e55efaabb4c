"""Helpers to run the repository's bundles in-process at tiny sizes."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigWorkflow

from tests.conftest import REPO_ROOT

BUNDLES = {
    "supervised_acdc": "acdc",
    "mean_teacher_acdc": "acdc",
    "supervised_la": "la",
    "mean_teacher_la": "la",
}

# Command-line-style overrides that shrink the demo overlay further, per dataset flavour.
TINY = {
    "acdc": {"spatial_size": [32, 32], "labeled_batch_size": 4, "num_labeled": 2},
    "la": {"patch_size": [32, 32, 32], "sw_stride": [16, 16, 16], "sw_batch_size": 2, "num_labeled": 2},
}


def bundle_dir(name: str) -> Path:
    return REPO_ROOT / "bundles" / name


def config_files(name: str, *names: str) -> list[str]:
    return [str(bundle_dir(name) / "configs" / f"{n}.json") for n in names]


def make_workflow(name: str, configs=("train", "demo"), workflow_type="train", **overrides) -> ConfigWorkflow:
    """A ``ConfigWorkflow`` of bundle ``name`` merged from ``configs`` with id overrides, initialised."""
    workflow = ConfigWorkflow(
        config_file=config_files(name, *configs),
        meta_file=str(bundle_dir(name) / "configs" / "metadata.json"),
        logging_file=str(bundle_dir(name) / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    return workflow
