"""The ``masklet`` command line: one module per subcommand (``configure`` registers it, ``run`` runs it),
the model options and helpers they share in :mod:`masklet.cli.common`."""

from __future__ import annotations

from .amg import amg_options, run_amg
from .main import build_parser, main
from .segment import run_segment
from .track import run_track
from .train import run_train

__all__ = ["amg_options", "build_parser", "main", "run_amg", "run_segment", "run_track", "run_train"]
