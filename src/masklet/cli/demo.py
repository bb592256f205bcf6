"""``masklet demo``: the offline demo on generated data (click, box, automatic masks, tracking)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_model_options, model_dtype, model_source


def configure(sub: Any) -> None:
    """Register ``masklet demo`` (its model defaults to the packaged masklet-nano)."""
    p = sub.add_parser("demo", help="offline demo on generated data: click, box, automatic masks, tracking")
    add_model_options(p, default_model="masklet-nano", model_help="model name or path (default masklet-nano)")
    p.add_argument("--out", type=Path, default=Path("masklet-demo"), help="output folder (default masklet-demo)")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated scene and clip")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Write the demo and print its files and the automatic-mask options it used."""
    from ..checkpoints import recommended_amg_options
    from ..demo import run_demo

    source = model_source(args)
    written, count = run_demo(source, args.out, args.seed, args.device, dtype=model_dtype(args), config=args.config)
    print(f"masklet demo with {source}:")
    for name, path in written.items():
        print(f"  {name:12s} {path}")
    filters = ", ".join(f"{k}={v:g}" for k, v in recommended_amg_options(source).items()) or "defaults"
    print(f"  ({count} automatic masks; options: {filters})")
    return 0
