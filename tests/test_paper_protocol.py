"""Each configs/paper_protocol.json reproduces the official data lists, label use and selection rule (issue 21)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from monai.bundle import ConfigParser

from common.tools.protocols import PAPER_PROTOCOLS, paper_protocol_configs
from tests.bundle_utils import bundle_dir, config_files
from tests.conftest import write_dataset


@pytest.fixture
def folder(tmp_path):
    """A 2-class folder: 24 training cases (ID order, as DyCON/MCF fold 0), 2 validation, 3 test."""
    label = np.zeros((4, 4, 4))
    label[1:3, 1:3, 1:3] = 1
    cases = {f"case{i:02d}": (np.full((4, 4, 4), float(i)), label) for i in range(29)}
    root = write_dataset(tmp_path / "data", cases, {"0": "background", "1": "fg"})
    meta = json.loads((root / "dataset.json").read_text())
    items = meta["training"]
    meta["training"], meta["validation"], meta["test"] = items[:24], items[24:26], items[26:]
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _lists(name, folder, *configs):
    parser = ConfigParser()
    parser.read_config(config_files(name, "train", *configs))
    parser.update({"dataset_dir": str(folder), "num_labeled": 4})
    return parser, parser.get_parsed_content("datalists")


def _case(items):
    return [item["case"] for item in items]


def test_every_overlay_is_listed_with_its_changes_and_has_a_desc():
    overlays = {p.parent.parent.name for p in bundle_dir("dycon_la").parent.glob("*/configs/paper_protocol.json")}
    assert overlays == set(PAPER_PROTOCOLS)
    for name in overlays:
        parser = ConfigParser()
        parser.read_config(config_files(name, "train", "paper_protocol"))
        assert "PAPER PROTOCOL" in parser.get("_desc_") and PAPER_PROTOCOLS[name].changes
    assert paper_protocol_configs("bundles/alhvr_brats", ["a.json"]) == ["a.json"]
    assert paper_protocol_configs("bundles/stlu_la", ["a.json"])[-1].endswith("stlu_la/configs/paper_protocol.json")


@pytest.mark.parametrize("name", ["dycon_la", "dycon_isles", "dycon_brats", "dycon_pancreas"])
def test_dycon_overlays_feed_fecl_the_ground_truth_of_the_unlabeled_volumes(name, folder):
    _, clean = _lists(name, folder)
    assert all("label" not in item for item in clean["unlabeled"])
    parser, paper = _lists(name, folder, "paper_protocol")
    assert _case(paper["labeled"]) == _case(clean["labeled"])
    assert _case(paper["unlabeled"]) == _case(clean["unlabeled"])
    assert all(item["label"].endswith(f"{item['case']}_gt.nii.gz") for item in paper["unlabeled"])
    assert parser.get_parsed_content("method").reads_unlabeled_labels


def test_dycon_pancreas_selects_and_reports_on_test1_the_first_20_training_cases(folder):
    _, paper = _lists("dycon_pancreas", folder, "paper_protocol")
    first20 = [f"case{i:02d}" for i in range(20)]  # test1.list = PANCREAS_0001-0020 of train.list 0001-0062
    assert _case(paper["validation"]) == first20 and _case(paper["test"]) == first20


def test_dycon_brats_reports_the_selection_list(folder):
    parser = ConfigParser()
    parser.read_config(config_files("dycon_brats", "train", "evaluate", "paper_protocol"))
    assert parser.get_parsed_content("eval_section") == "validation"  # test_BraTS19.py evaluates val.txt
    _, paper = _lists("dycon_brats", folder, "paper_protocol")
    assert _case(paper["validation"]) == ["case24", "case25"]  # selection on val.txt, as by default


@pytest.mark.parametrize("name, interval", [("coranet_pancreas", 120), ("stlu_la", 200), ("stlu_pancreas", 200)])
def test_best_on_test_overlays_select_the_checkpoint_on_the_test_list(name, interval, folder):
    _, clean = _lists(name, folder)
    parser, paper = _lists(name, folder, "paper_protocol")
    assert _case(paper["validation"]) == _case(paper["test"]) == ["case26", "case27", "case28"]
    assert _case(clean["validation"]) == ["case24", "case25"]
    assert parser.get_parsed_content("val_interval") == interval
    assert all("label" not in item for item in paper["unlabeled"])  # no label leak here
