"""The comparison command on a tiny budget: every file it promises, with its columns."""

from __future__ import annotations

import csv
import subprocess
import sys

from common.plots import write_png
from tests.conftest import REPO_ROOT


def test_compare_writes_tables_and_plots(phantom_datasets, tmp_path):
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "common.compare", "--bundles", "supervised_acdc", "mean_teacher_acdc",
        "--out", str(out), "--dataset-dir", str(phantom_datasets["acdc"]), "--num-labeled", "2",
        "--max-iterations", "4", "--val-interval", "2",
        "--override", "spatial_size=[32,32]", "--override", "num_workers=0",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[2/2] mean_teacher_acdc" in result.stdout
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["bundle"] for r in rows] == ["supervised_acdc", "mean_teacher_acdc"]
    for column in ("dice_mean", "dice_std", "hd95_mean", "asd_mean", "reported_dice", "train_seconds", "peak_rss_mb"):
        assert column in rows[0]
    assert 0.0 <= float(rows[0]["dice_mean"]) <= 1.0 and float(rows[1]["peak_rss_mb"]) > 0
    assert "| mean_teacher_acdc |" in (out / "table.md").read_text()
    for png in ("dice.png", "supervised_acdc_case.png", "mean_teacher_acdc_case.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_png_roundtrip_header(tmp_path):
    import struct
    import zlib

    import numpy as np

    rgb = np.zeros((3, 2, 3), np.uint8)
    rgb[1, 1] = [10, 20, 30]
    data = write_png(tmp_path / "x.png", rgb).read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (2, 3)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert raw[1 * 7 + 1 + 3 : 1 * 7 + 1 + 6] == bytes([10, 20, 30])  # row 1 (filter byte + 2 px), pixel 1
