"""Dispatcher of ``python -m common.data.phantoms`` and of ``ensure_phantom_dataset``, which every bundle's demo
config names; the generator is :mod:`common.datasets.phantoms`, each flavour in its dataset's module."""

from ..datasets.phantoms import ensure_phantom_dataset, main, make_phantom_dataset

__all__ = ["ensure_phantom_dataset", "make_phantom_dataset", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
