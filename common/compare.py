"""Entry module of ``python -m common.compare``; the code is :mod:`common.tools.compare`."""

from .tools.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
