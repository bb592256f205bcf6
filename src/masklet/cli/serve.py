"""``masklet serve``: its options and its run live in :mod:`masklet.server.serve` (the server's own module)."""

from __future__ import annotations

from typing import Any


def configure(sub: Any) -> None:
    """Register ``masklet serve`` (``masklet.server.serve.add_parser`` sets its ``run``)."""
    from ..server.serve import add_parser

    add_parser(sub)
