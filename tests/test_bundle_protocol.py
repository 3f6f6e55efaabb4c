"""The bundles' default configs (not the demo overlay) use each paper's test-time window and stride."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser

from common.inferers import sliding_window_overlap
from tests.bundle_utils import config_files

# dycon.md §7.2: the test patch and stride differ from the validation inferer of training
DYCON_TEST_WINDOWS = {
    "dycon_la": ((112, 112, 80), (18, 18, 4)),
    "dycon_pancreas": ((96, 96, 96), (16, 16, 4)),
    "dycon_brats": ((96, 96, 96), (16, 16, 4)),
    "dycon_isles": ((96, 96, 64), (16, 16, 4)),
}


def window_of(parser: ConfigParser, inferer_id: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    inferer = parser.get_parsed_content(inferer_id).inferer
    return tuple(inferer.roi_size), tuple(inferer.overlap)


@pytest.mark.parametrize("name", sorted(DYCON_TEST_WINDOWS))
def test_dycon_inference_uses_test_window(name):
    patch, stride = DYCON_TEST_WINDOWS[name]
    parser = ConfigParser()
    parser.read_config(config_files(name, "inference"))
    assert window_of(parser, "inferer") == (patch, sliding_window_overlap(patch, stride))


@pytest.mark.parametrize("name", sorted(DYCON_TEST_WINDOWS))
def test_dycon_evaluation_uses_test_window_not_validation_window(name):
    patch, stride = DYCON_TEST_WINDOWS[name]
    parser = ConfigParser()
    parser.read_config(config_files(name, "train", "evaluate"))
    assert window_of(parser, "validate#inferer") == (patch, sliding_window_overlap(patch, stride))
    training = ConfigParser()
    training.read_config(config_files(name, "train"))
    validation_patch, _ = window_of(training, "validate#inferer")
    assert validation_patch == tuple(training.get_parsed_content("patch_size"))
