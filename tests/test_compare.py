"""The comparison command on a tiny budget: every file it promises, with its columns."""

from __future__ import annotations

import csv
import subprocess
import sys

from common.tools.plots import write_png
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


def read_png(path):
    """Decode a PNG written by ``write_png`` (one IDAT chunk, filter 0) into an ``(H, W, 3)`` array."""
    import struct
    import zlib

    import numpy as np

    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = np.frombuffer(zlib.decompress(data[41 : 41 + idat_len]), np.uint8).reshape(height, 1 + 3 * width)
    return raw[:, 1:].reshape(height, width, 3)


def test_text_mask_draws_the_glyphs():
    import numpy as np

    from common.tools.plots import text_mask

    one = np.array([[0, 1, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [1, 1, 1, 0]], dtype=bool)
    assert np.array_equal(text_mask("1", scale=1), one)  # the glyph, then one blank column
    assert np.array_equal(text_mask("1", scale=2), one.repeat(2, 0).repeat(2, 1))
    assert text_mask("La_1", scale=2).shape == (10, 32)
    assert np.array_equal(text_mask("LA"), text_mask("la"))  # case-free
    assert text_mask("?", scale=1)[:, :3].all()  # outside the font: a filled box, not nothing


def test_bar_chart_labels_each_bar_under_the_axis(tmp_path):
    import numpy as np

    from common.tools.plots import bar_chart_png, text_mask

    names = ["cps_la", "supervised_acdc"]
    image = read_png(bar_chart_png(tmp_path / "d.png", names, [[0.5, 0.7], [0.9]], height=100))
    longest = text_mask("supervised_acdc").shape[1]
    assert image.shape[0] == 100 + longest + 8
    below = image[101:].min(axis=2) < 128  # dark pixels under the axis: the labels
    columns = np.flatnonzero(below.any(axis=0))
    left_margin = text_mask("0.25").shape[1] + 8
    first, second = left_margin + 18, left_margin + 18 + 36 + 18  # each bar's left edge
    assert columns.min() >= first and columns.max() < second + 36
    assert below[:, first : first + 36].any() and below[:, second : second + 36].any()
    rows_first = np.flatnonzero(below[:, first : first + 36].any(axis=1))
    rows_second = np.flatnonzero(below[:, second : second + 36].any(axis=1))
    assert rows_second.max() > rows_first.max()  # the longer name reaches further down
    assert (image[:101, :left_margin].min(axis=2) < 128).any()  # tick values at the left
