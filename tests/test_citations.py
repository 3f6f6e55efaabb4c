"""Every document that ``common/`` cites must be one a reader can open (issue 19).

Docstrings and comments of the shared code may point to a paper (equation, section, table, figure), to an official
code base (file, function) or to a document of this repository (the top-level ``README.md``, a bundle's
``bundles/<name>/docs/README.md``). They must not point to design notes that are neither in the repository nor in an
exported bundle: the method and protocol specs (``coranet.md``, ``protocol.md``, ...) and anything under a
``shared/`` folder. Every other ``something.md`` reference must name a Markdown file of this repository, given from
the repository root, relative to the citing file, or as the trailing part of its path (``docs/README.md``);
``<placeholder>`` parts match any name.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMON = ROOT / "common"
SKIP_DIRS = {"__pycache__", "eval", "models", "runs"}

# The design notes the project was written from; they are not shipped with the repository or an exported bundle.
UNSHIPPED = re.compile(
    r"\b(?:api|protocol|baselines|alhvr|dycon|coranet|stlu|bundle-conventions)\.md\b|(?<!bundles/)\bshared/"
)
# A Markdown path: word characters, dots, slashes, dashes, ``<placeholder>`` parts and ``*`` globs before ``.md``.
MD_REFERENCE = re.compile(r"([\w./<>*-]*)\.md\b")


def _walk(top: Path) -> list[Path]:
    """Files under ``top``, skipping hidden folders (``.git``, ``.cache``), caches and run outputs."""
    found = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        found += [Path(folder) / name for name in sorted(files)]
    return found


REPO_MARKDOWN = sorted(p.relative_to(ROOT).as_posix() for p in _walk(ROOT) if p.suffix == ".md")


def _resolves(reference: str, source: Path) -> bool:
    """True when ``reference`` (without ``.md``) names a Markdown file of the repository."""
    pattern = re.sub(r"<[^>]*>", "*", reference) + ".md"
    source_dir = source.parent.relative_to(ROOT).as_posix()
    relative = os.path.normpath(os.path.join(source_dir, pattern)).replace(os.sep, "/")
    candidates = {pattern.lstrip("/"), relative}
    if not pattern.startswith(("/", "./", "../")):
        candidates.add("*/" + pattern)  # the trailing part of a repository path
    return any(fnmatch.fnmatchcase(path, c) for path in REPO_MARKDOWN for c in candidates)


def unfollowable_citations(text: str, source: Path) -> list[str]:
    """``"<line>: <reference>"`` for every citation in ``text`` that a reader of the repository cannot follow."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        problems += [f"{number}: {m.group(0)}" for m in UNSHIPPED.finditer(line)]
        for match in MD_REFERENCE.finditer(line):
            reference = match.group(1)
            if not reference.strip("./*") or line[max(match.start() - 1, 0) : match.start()] == ":":
                continue  # a bare suffix (``".md"``, ``"*.md"``) or a URL (``https://...``)
            if UNSHIPPED.search(match.group(0)) is None and not _resolves(reference, source):
                problems.append(f"{number}: {match.group(0)} (no such file in the repository)")
    return problems


COMMON_FILES = [p for p in _walk(COMMON) if p.suffix in (".py", ".md", ".txt", ".json", ".list", ".yaml", ".yml")]


@pytest.mark.parametrize("path", COMMON_FILES, ids=[p.relative_to(ROOT).as_posix() for p in COMMON_FILES])
def test_common_cites_only_documents_in_the_repository(path):
    problems = unfollowable_citations(path.read_text(encoding="utf-8"), path)
    assert not problems, f"{path.relative_to(ROOT)} cites documents a reader cannot open:\n" + "\n".join(problems)


def test_checker_flags_unshipped_notes_and_missing_files_and_accepts_repository_documents():
    source = COMMON / "losses" / "example.py"
    bad = (
        "coranet.md §5\n"
        "see dycon.md §4.2 and api.md 3\n"
        "/work/shared/specs/protocol\n"
        "docs/design/notes.md\n"
        "bundles/no_such_bundle/docs/README.md\n"
    )
    assert [p.split(":")[0] for p in unfollowable_citations(bad, source)] == ["1", "2", "2", "3", "4", "5"]
    good = (
        "CoraNet (Shi et al., IEEE TMI 2021), Fig. 1; official ``train_ST_3D_VNet.py``\n"
        'README.md, "Evaluate"; ``bundles/coranet_pancreas/docs/README.md``; bundles/<name>/docs/README.md\n'
        'docs/README.md; the report ``table.md``; suffix == ".md"; glob("*.md"); https://example.org/x/notes.md\n'
    )
    assert unfollowable_citations(good, source) == []
