"""Small PNG figures drawn with numpy and written with zlib: no plotting library is a dependency of the bundles."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_png", "case_panel_png", "bar_chart_png", "text_mask", "LABEL_COLOURS"]

# background black, then distinct colours per class index
LABEL_COLOURS = np.array(
    [[0, 0, 0], [230, 57, 70], [42, 157, 143], [69, 123, 157], [244, 162, 97], [131, 56, 236], [255, 209, 102]],
    dtype=np.uint8,
)


# A 3x5 pixel font (capital letter shapes) for the labels of the figures: the bundle names and tick values.
_GLYPHS = {
    "a": ".#./#.#/###/#.#/#.#", "b": "##./#.#/##./#.#/##.", "c": ".##/#../#../#../.##", "d": "##./#.#/#.#/#.#/##.",
    "e": "###/#../##./#../###", "f": "###/#../##./#../#..", "g": ".##/#../#.#/#.#/.##", "h": "#.#/#.#/###/#.#/#.#",
    "i": "###/.#./.#./.#./###", "j": "..#/..#/..#/#.#/.#.", "k": "#.#/#.#/##./#.#/#.#", "l": "#../#../#../#../###",
    "m": "#.#/###/###/#.#/#.#", "n": "##./#.#/#.#/#.#/#.#", "o": ".#./#.#/#.#/#.#/.#.", "p": "##./#.#/##./#../#..",
    "q": ".#./#.#/#.#/##./.##", "r": "##./#.#/##./#.#/#.#", "s": ".##/#../.#./..#/##.", "t": "###/.#./.#./.#./.#.",
    "u": "#.#/#.#/#.#/#.#/###", "v": "#.#/#.#/#.#/#.#/.#.", "w": "#.#/#.#/###/###/#.#", "x": "#.#/#.#/.#./#.#/#.#",
    "y": "#.#/#.#/.#./.#./.#.", "z": "###/..#/.#./#../###", "0": "###/#.#/#.#/#.#/###", "1": ".#./##./.#./.#./###",
    "2": "##./..#/.#./#../###", "3": "##./..#/.#./..#/##.", "4": "#.#/#.#/###/..#/..#", "5": "###/#../##./..#/##.",
    "6": ".##/#../###/#.#/###", "7": "###/..#/.#./.#./.#.", "8": "###/#.#/###/#.#/###", "9": "###/#.#/###/..#/##.",
    "_": ".../.../.../.../###", ".": ".../.../.../.../.#.", "-": ".../.../###/.../...", " ": ".../.../.../.../...",
}  # fmt: skip


def text_mask(text: str, scale: int = 2) -> np.ndarray:
    """Boolean ``(5 * scale, 4 * scale * len(text))`` mask of ``text`` in the 3x5 font, one blank column per glyph.

    Letters are drawn case-free; a character outside the font becomes a filled box, so it is visible, not lost.
    """
    columns = []
    for char in text.lower():
        rows = _GLYPHS.get(char, "###/###/###/###/###").split("/")
        glyph = np.array([[c == "#" for c in row] for row in rows], dtype=bool)
        columns += [glyph, np.zeros((5, 1), dtype=bool)]
    mask = np.concatenate(columns, axis=1) if columns else np.zeros((5, 0), dtype=bool)
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)


def _stamp(canvas: np.ndarray, mask: np.ndarray, top: int, left: int, colour: int = 0) -> None:
    """Paint ``mask`` into ``canvas`` at ``(top, left)``, clipped to the canvas."""
    height = min(mask.shape[0], canvas.shape[0] - top)
    width = min(mask.shape[1], canvas.shape[1] - left)
    region = canvas[top : top + height, left : left + width]
    region[mask[:height, :width]] = colour


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` uint8 array as an 8-bit RGB PNG."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))  # filter type 0 per scanline

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(png)
    return path


def _grey(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    scaled = np.clip((image - lo) / max(hi - lo, 1e-8), 0, 1)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _labels(label: np.ndarray) -> np.ndarray:
    return LABEL_COLOURS[np.clip(label, 0, len(LABEL_COLOURS) - 1)]


def _upscale(rgb: np.ndarray, min_side: int = 192) -> np.ndarray:
    factor = max(1, int(np.ceil(min_side / max(min(rgb.shape[:2]), 1))))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1)


def case_panel_png(path: str | Path, image: np.ndarray, label: np.ndarray, pred: np.ndarray) -> Path:
    """Image, ground truth and prediction of one 2D slice side by side (slice shown with x down, y across), each
    titled above."""
    panels = [_upscale(_grey(image)), _upscale(_labels(label)), _upscale(_labels(pred))]
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    body = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    header = np.full((16, body.shape[1], 3), 255, np.uint8)
    for index, title in enumerate(("image", "ground truth", "prediction")):
        _stamp(header, text_mask(title), 3, index * (panels[0].shape[1] + gap.shape[1]))
    return write_png(path, np.concatenate([header, body], axis=0))


def bar_chart_png(path: str | Path, names: Sequence[str], values: Sequence[Sequence[float]], height: int = 240) -> Path:
    """One bar per method at its mean (Dice in [0, 1]) with a whisker from min to max of its cases.

    Each bar carries its name under the axis (reading upwards) and the grid lines at 0.25 ... 1 their value; bars
    take the colours of ``LABEL_COLOURS[1:]`` in order.
    """
    bar, gap, scale = 36, 18, 2
    left_margin = text_mask("0.25", scale).shape[1] + 8
    label_height = max((text_mask(name, scale).shape[1] for name in names), default=0) + 8
    width = left_margin + gap + len(names) * (bar + gap)
    canvas = np.full((height + label_height, width, 3), 255, np.uint8)
    for level in (0.25, 0.5, 0.75, 1.0):  # light grid lines with their value at the left
        row = height - int(level * (height - 10))
        canvas[row, left_margin:] = 220
        tick = text_mask(f"{level:g}", scale)
        _stamp(canvas, tick, row - tick.shape[0] // 2, left_margin - 4 - tick.shape[1])
    for i, (name, case_values) in enumerate(zip(names, values, strict=True)):
        finite = [v for v in case_values if np.isfinite(v)] or [0.0]
        left = left_margin + gap + i * (bar + gap)
        top = height - int(float(np.mean(finite)) * (height - 10))
        canvas[top:height, left : left + bar] = LABEL_COLOURS[1 + i % (len(LABEL_COLOURS) - 1)]
        low, high = (height - int(float(v) * (height - 10)) for v in (min(finite), max(finite)))
        centre = left + bar // 2
        canvas[high : low + 1, centre - 1 : centre + 1] = 0
        canvas[[high, low], centre - 6 : centre + 6] = 0
        label = np.rot90(text_mask(name, scale))  # reads bottom to top, its end next to the axis
        _stamp(canvas, label, height + 4, left + (bar - label.shape[1]) // 2)
    canvas[height, left_margin:] = 0
    return write_png(path, canvas)
