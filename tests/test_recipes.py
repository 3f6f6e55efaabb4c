"""Data and evaluation recipes against the official code, on synthetic volumes (issue 21)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from tests.bundle_utils import config_files


def _write_nifti(path, array):
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.eye(4)), str(path))
    return str(path)


def test_alhvr_brats_rotates_and_flips_in_the_official_zy_plane(tmp_path):
    """SSL4MIS/ALHVR rotate and flip h5 axes 0, 1 = (z, y); after the transpose to (x, y, z) that is axes (1, 2)."""
    x_ramp = np.broadcast_to(np.arange(1, 9, dtype=np.float32)[:, None, None], (8, 8, 8))
    yz = np.arange(64, dtype=np.float32).reshape(1, 8, 8)  # tells whether the (y, z) plane moved
    item = {"image": _write_nifti(tmp_path / "image.nii.gz", x_ramp * 100 + yz), "label": None}
    item["label"] = _write_nifti(tmp_path / "label.nii.gz", np.zeros((8, 8, 8)))
    parser = ConfigParser()
    parser.read_config(config_files("alhvr_brats", "train"))
    parser.update({"patch_size": [8, 8, 8], "raw_intensities": False})
    assert parser.get_parsed_content("rotflip_axes") == [1, 2]
    transform = parser.get_parsed_content("recipe#train#preprocessing")
    moved = 0
    for seed in range(8):
        transform.set_random_state(seed)
        image = torch.as_tensor(transform(dict(item))["image"])[0].numpy()
        np.testing.assert_array_equal(image // 100, x_ramp)  # the x axis is never rotated or flipped
        moved += not np.array_equal(image % 100, np.broadcast_to(yz, (8, 8, 8)))
    assert moved == 8  # every draw flips (and maybe rotates) the (y, z) plane
