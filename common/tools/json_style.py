"""The JSON style of the repository's bundle configs: 4-space indent, short lists and objects on one line.

A list or object stays on one line when that line fits in 120 characters (the project's line length), so a
transform or a size reads as one line and a config's length is the number of its settings. Exported bundles are
written in the model zoo's style instead (``json.dumps(indent=4)``, see ``common.tools.export``).

    python -m common.tools.json_style            # list the bundle configs that are not in this style
    python -m common.tools.json_style --write    # rewrite them
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["LINE_LENGTH", "format_config", "bundle_config_files", "main"]

LINE_LENGTH = 120
BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def format_config(value: Any, indent: int = 0, prefix: int = 0) -> str:
    """``value`` as JSON text in the repository style; ``prefix`` is the width already used on the first line."""
    pad = " " * 4 * indent
    if isinstance(value, (dict, list)) and value:
        one_line = json.dumps(value, ensure_ascii=False)
        if len(pad) + prefix + len(one_line) + 1 <= LINE_LENGTH:  # + 1: the comma that may follow
            return one_line
    if isinstance(value, dict) and value:
        items = []
        for key, item in value.items():
            head = json.dumps(key, ensure_ascii=False) + ": "
            items.append(f"{pad}    {head}{format_config(item, indent + 1, len(head))}")
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value:
        items = [f"{pad}    {format_config(item, indent + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def bundle_config_files(root: Path = BUNDLES) -> list[Path]:
    """Every JSON file of the repository's bundles and of ``bundles/shared``."""
    return sorted(path for path in root.rglob("*.json") if not {"models", "eval", ".cache"} & set(path.parts))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or rewrite the bundle configs in the repository's JSON style.")
    parser.add_argument("--write", action="store_true", help="rewrite the files that are not in the style")
    args = parser.parse_args(argv)
    off_style = []
    for path in bundle_config_files():
        text = path.read_text(encoding="utf-8")
        styled = format_config(json.loads(text)) + "\n"
        if text != styled:
            off_style.append(path)
            if args.write:
                path.write_text(styled, encoding="utf-8")
    for path in off_style:
        print(f"{'rewrote' if args.write else 'not in style'}: {path}")
    return 1 if off_style and not args.write else 0


if __name__ == "__main__":
    raise SystemExit(main())
