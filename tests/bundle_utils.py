"""Helpers to run the repository's bundles in-process at tiny sizes."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigWorkflow

from tests.conftest import REPO_ROOT

BUNDLES = {
    "supervised_acdc": "acdc",
    "mean_teacher_acdc": "acdc",
    "ua_mt_acdc": "acdc",
    "cps_acdc": "acdc",
    "alhvr_acdc": "acdc",
    "coranet_acdc": "acdc",
    "supervised_la": "la",
    "mean_teacher_la": "la",
    "ua_mt_la": "la",
    "cps_la": "la",
    "dycon_la": "la",
    "stlu_la": "la",
    "alhvr_brats": "brats",
    "dycon_brats": "brats",
    "stlu_brats": "brats",
    "dycon_pancreas": "pancreas",
    "coranet_pancreas": "pancreas",
    "stlu_pancreas": "pancreas",
    "dycon_isles": "isles",
    "supervised_abdomenct1k": "abdomenct1k",
    "alhvr_abdomenct1k": "abdomenct1k",
    "supervised_york": "york",
    "coranet_york": "york",
}

# Command-line-style overrides that shrink the demo overlay further, per dataset flavour.
TINY_3D = {"patch_size": [32, 32, 32], "sw_stride": [16, 16, 16], "sw_batch_size": 2, "num_labeled": 2}
TINY = {
    "acdc": {"spatial_size": [32, 32], "labeled_batch_size": 4, "num_labeled": 2},
    "la": TINY_3D,
    "pancreas": TINY_3D,
    "brats": TINY_3D,
    "isles": TINY_3D,
    "abdomenct1k": TINY_3D,
    "york": {"spatial_size": [32, 32], "labeled_batch_size": 4, "num_labeled": 2},
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
        logging_file=str(REPO_ROOT / "bundles" / "shared" / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    workflow.initialize()
    return workflow
