"""``python -m masklet``: the command line (see :mod:`masklet.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
