"""Dispatcher of ``python -m common.data.prepare``; the preparers are in :mod:`common.datasets`, one per dataset."""

from ..datasets.prepare import PREPARERS, build_parser, main

__all__ = ["PREPARERS", "build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
