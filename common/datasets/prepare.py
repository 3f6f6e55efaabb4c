"""Turn users' downloads into dataset folders ordered by the papers' split lists.

Every command reads the reference split lists shipped in ``common/data/splits/``, finds each listed case in the
user's download, converts it to NIfTI and writes ``dataset.json`` with ``training`` / ``validation`` / ``test``
in list-file order, so "the first N training items" is the papers' labeled subset.

Usage::

    python -m common.data.prepare acdc        --source <ACDC download>             --out <dataset folder>
    python -m common.data.prepare acdc_h5     --source <SSL4MIS data/ACDC>         --out <dataset folder>
    python -m common.data.prepare la_h5       --source <UA-MT data/2018LA_Seg_Training Set> --out <folder>
    python -m common.data.prepare brats_h5    --source <SSL4MIS data/BraTS2019>    --out <dataset folder>
    python -m common.data.prepare brats       --source <MICCAI_BraTS_2019_Data_Training> --out <folder>
    python -m common.data.prepare pancreas_h5 --source <MC-Net data/Pancreas>      --out <folder> [--split mcnet]
    python -m common.data.prepare pancreas    --source <folder with images/ labels/> --out <folder> [--split ...]
    python -m common.data.prepare isles       --source <ISLES-2022 BIDS folder>    --out <dataset folder>
    python -m common.data.prepare abdomenct1k --source <AbdomenCT-1K NIfTI release> --out <dataset folder>
    python -m common.data.prepare york        --source <York cardiac MRI .mat files> --out <dataset folder>

``--split`` (Pancreas only) picks one of the three list families (``common/data/splits/README.md``): ``mcnet``
(default, ycwu1997/MC-Net), ``dycon_mcf`` (CVML-KU/DyCON = WYC-321/MCF fold 0) or ``coranet`` (koncle/CoraNet).
Missing cases are an error listing all of them; ``--allow-missing`` skips them with a warning.
A new dataset is one more module of this package with a ``PREPARERS`` tuple, listed in :data:`PREPARERS`.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from . import abdomenct1k, acdc, brats, isles, la, pancreas, york
from .preparer import Preparer

# in the order of the command line's help
PREPARERS: dict[str, Preparer] = {
    preparer.name: preparer
    for preparer in (*acdc.PREPARERS, *la.PREPARERS, *brats.PREPARERS, *pancreas.PREPARERS, *isles.PREPARERS)
    + (*abdomenct1k.PREPARERS, *york.PREPARERS)
}


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI parser with one sub-command per preparer."""
    parser = argparse.ArgumentParser(prog="python -m common.data.prepare", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for preparer in PREPARERS.values():
        sub = commands.add_parser(
            preparer.name,
            help=preparer.help,
            description=inspect.cleandoc(preparer.run.__doc__ or ""),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--source", required=True, help="folder of the downloaded data")
        sub.add_argument("--out", required=True, help="dataset folder to write (dataset.json + NIfTI)")
        sub.add_argument("--allow-missing", action="store_true", help="skip listed cases that are absent")
        for keyword, settings in preparer.options.items():
            sub.add_argument("--" + keyword.replace("_", "-"), dest=keyword, **settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 with a one-line message on a data error)."""
    args = build_parser().parse_args(argv)
    preparer = PREPARERS[args.command]
    extra = {keyword: getattr(args, keyword) for keyword in preparer.options}
    try:
        preparer.run(args.source, args.out, allow_missing=args.allow_missing, **extra)
    except (FileNotFoundError, ValueError) as exc:
        print(f"prepare {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
