"""Entry module of ``python -m common.export``; the code is :mod:`common.tools.export`."""

from .tools.export import main

if __name__ == "__main__":
    raise SystemExit(main())
