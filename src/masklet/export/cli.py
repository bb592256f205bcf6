"""``masklet export onnx``: the CLI's arguments and their run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .manifest import PARTS
from .onnx import DEFAULT_OPSET, DTYPES, REFUSED_DTYPES, check_dtype, export_onnx


def add_cli(sub: Any) -> None:
    """Register ``masklet export onnx`` on the CLI's subparsers."""
    export = sub.add_parser("export", help="export a model for other runtimes (needs masklet[onnx])")
    fmt = export.add_subparsers(dest="format", required=True)
    p = fmt.add_parser("onnx", help="ONNX models of the encoder, prompt decoder and video step + manifest.json")
    p.add_argument("--model", required=True, help="hub name, packaged name (masklet-nano), .pt or Hugging Face folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated subset of encoder,decoder,memory (default all)"
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=[*DTYPES, *REFUSED_DTYPES],
        help="float32, or float16 for the image encoder (the heads stay float32); bfloat16 is refused: "
        "ONNX Runtime's CPU provider cannot run it",
    )


def run_cli(args: argparse.Namespace) -> str:
    """Run ``masklet export onnx``; returns the line to print."""
    from ..checkpoints import load_model

    check_dtype(args.dtype)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    model = load_model(args.model)
    out = export_onnx(model, args.out, parts, args.opset, source=str(args.model), dtype=args.dtype)
    files = sorted(p.name for p in out.iterdir())
    return f"wrote {', '.join(files)} to {out}"
