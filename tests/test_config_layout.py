"""The bundle configs keep their shape: shared blocks exist once, each bundle shows its method first.

Also the guard of the shared-config redesign: every bundle's ``train.json`` + ``demo.json`` builds the same
network, method, optimiser, transforms and handlers as the per-bundle configs it replaced
(``tests/fixtures/config_fingerprints.json``, see ``tests/config_fingerprint.py``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from common.tools.json_style import bundle_config_files, format_config
from tests.bundle_utils import BUNDLES, bundle_dir
from tests.config_fingerprint import FIXTURE, bundle_fingerprint
from tests.conftest import REPO_ROOT

MIN_BLOCK_LINES = 10  # a JSON object or list this long (in the repository's JSON style) may not stand in three bundles
MAX_BUNDLES_PER_BLOCK = 2
MAX_TRAIN_LINES = 150
METHOD_WITHIN_LINES = 60


def style_lines(value) -> int:
    """Lines of ``value`` as the bundle configs write it (``common.tools.json_style``, checked below)."""
    return len(format_config(value).splitlines())


def blocks(value, path: str = ""):
    """Every object and list inside a config, with its id path."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    yield path, value
    for key, child in items:
        yield from blocks(child, f"{path}#{key}" if path else str(key))


def repeated_blocks(configs: dict[str, dict[str, dict]]) -> dict[str, set[str]]:
    """Blocks of at least ``MIN_BLOCK_LINES`` lines found in more than ``MAX_BUNDLES_PER_BLOCK`` bundles."""
    where = defaultdict(set)
    for bundle, files in configs.items():
        for name, config in files.items():
            for path, block in blocks(config):
                if style_lines(block) >= MIN_BLOCK_LINES:
                    where[json.dumps(block, sort_keys=True)].add(f"{bundle}/{name}#{path}")
    by_bundle = {key: {place.split("/")[0] for place in places} for key, places in where.items()}
    return {key: where[key] for key, bundles in by_bundle.items() if len(bundles) > MAX_BUNDLES_PER_BLOCK}


def bundle_configs(name: str) -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted((bundle_dir(name) / "configs").glob("*.json"))}


def test_no_block_is_repeated_in_three_bundles():
    repeated = repeated_blocks({name: bundle_configs(name) for name in BUNDLES})
    places = sorted(sorted(p)[0] + f" (+{len(p) - 1} more)" for p in repeated.values())
    assert not places, "move these blocks into bundles/shared/ and reference them:\n" + "\n".join(places)


def test_repetition_check_finds_a_copied_block():
    handler = {"_target_": "StatsHandler", **{f"a_long_setting_name_{i}": i for i in range(MIN_BLOCK_LINES)}}
    configs = {name: {"train.json": {"handler": dict(handler), "own": name}} for name in ("a", "b", "c")}
    assert list(repeated_blocks(configs)) == [json.dumps(handler, sort_keys=True)]
    del configs["c"]
    assert not repeated_blocks(configs)


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_train_config_shows_its_method_first(name):
    lines = (bundle_dir(name) / "configs" / "train.json").read_text().splitlines()
    assert len(lines) <= MAX_TRAIN_LINES
    method_line = next(i for i, line in enumerate(lines, 1) if line.startswith('    "method": {'))
    assert method_line <= METHOD_WITHIN_LINES


def test_byte_identical_files_exist_once():
    """logging.conf, LICENSE and the like live once (the export ships a copy per bundle).

    A bundle's own overlay files (``configs/*.json``) are exempt: each is the entry point of a command, and two
    bundles' short ``evaluate.json`` can agree to the byte while naming the same shared skeleton.
    """
    files = defaultdict(list)
    for path in (REPO_ROOT / "bundles").rglob("*"):
        if path.suffix == ".json" and path.parent.name == "configs":
            continue
        if path.is_file() and not any(part in {"models", "eval", ".cache", "runs"} for part in path.parts):
            files[path.read_bytes()].append(path.relative_to(REPO_ROOT))
    copies = [sorted(paths) for paths in files.values() if len(paths) > 1]
    assert not copies, copies


def test_bundle_configs_are_in_the_repository_json_style():
    off_style = [p for p in bundle_config_files() if p.read_text() != format_config(json.loads(p.read_text())) + "\n"]
    assert not off_style, "run python -m common.tools.json_style --write"


def test_config_lines_fell_by_sixty_percent_from_the_per_bundle_layout():
    """All bundle configs together, shared files included, per bundle: the 19 bundles that each carried their own
    copy of everything had 17,311 lines (911 a bundle); bundles added since count with the same allowance."""
    lines = sum(len(path.read_text().splitlines()) for path in bundle_config_files())
    assert lines <= 0.4 * 17_311 / 19 * len(BUNDLES), lines


def test_overlays_switch_nothing_by_list_position():
    for name in BUNDLES:
        for file_name, config in bundle_configs(name).items():
            positional = [key for key in config if any(part.isdigit() for part in key.split("#"))]
            assert not positional, f"{name}/{file_name}: {positional}"


@pytest.fixture(scope="module")
def recorded_fingerprints() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_shared_layout_builds_what_the_per_bundle_configs_built(name, recorded_fingerprints):
    assert bundle_fingerprint(name) == recorded_fingerprints[name]


def test_shared_files_are_referenced(tmp_path):
    used = "\n".join(path.read_text() for path in (REPO_ROOT / "bundles").rglob("*.json"))
    for path in Path(REPO_ROOT / "bundles" / "shared").rglob("*.json"):
        assert str(path.relative_to(REPO_ROOT)) in used, f"{path} is not used by any bundle"
