"""The ``masklet`` parser and entry point: each subcommand registers itself and runs through ``args.run``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import MaskletError
from . import amg, demo, segment, serve, track, train
from .common import join_negative


def _configure_batch(sub: argparse._SubParsersAction) -> None:
    from ..batch import add_parser

    add_parser(sub)  # masklet batch, in batch.py


def _configure_export(sub: argparse._SubParsersAction) -> None:
    from ..export.onnx import add_cli, run_cli

    add_cli(sub)  # masklet export onnx, in export/onnx.py
    sub.choices["export"].set_defaults(run=lambda args: print(run_cli(args)) or 0)


#: Every subcommand's ``configure``, in the order of ``masklet --help``.
SUBCOMMANDS = (
    segment.configure,
    amg.configure,
    track.configure,
    demo.configure,
    serve.configure,
    _configure_batch,
    _configure_export,
    train.configure,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``masklet`` argument parser with every subcommand."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="masklet",
        description="Segment Anything 2 from the command line.",
        epilog="Works offline with the packaged model: --model masklet-nano (small, trained on synthetic scenes).",
    )
    parser.add_argument("--version", action="version", version=f"masklet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for configure in SUBCOMMANDS:
        configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``masklet`` command: exit code 0, or 2 with one ``error:`` line for bad input."""
    args = build_parser().parse_args(join_negative(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.run(args))
    except MaskletError as err:
        print(f"masklet {args.command}: error: {err}", file=sys.stderr)
        return 2
