"""What every subcommand shares: the model options, their loading, value parsers, the server client."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "sam2.1-hiera-tiny"
MODEL_HELP = (
    f"hub model name (default {DEFAULT_MODEL}, downloaded once); offline, use the packaged "
    "--model masklet-nano or --checkpoint PATH"
)
DTYPES = ("float32", "bfloat16", "float16")


def add_model_options(
    parser: argparse.ArgumentParser, *, default_model: str | None = None, model_help: str = MODEL_HELP
) -> None:
    """``--model/--checkpoint`` (one of), ``--config``, ``--device``, ``--dtype``: the options that choose
    and place the model, spelled the same on every subcommand that loads one."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=default_model, help=model_help)
    source.add_argument("--checkpoint", type=Path, help="local checkpoint: official .pt or Hugging Face folder")
    parser.add_argument("--config", type=Path, help="official-style yaml config for a non-standard checkpoint")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="dtype of the image encoder and memory attention (default float32)",
    )


def add_server_option(parser: argparse.ArgumentParser) -> None:
    """``--server URL``: run the same work on a masklet server."""
    parser.add_argument(
        "--server", metavar="URL", help="run on a masklet server (masklet serve) instead; key from MASKLET_API_KEY"
    )


def model_source(args: argparse.Namespace) -> str:
    """The model the options name, as a plain string (a path prints as a path, not a repr)."""
    return str(args.checkpoint) if args.checkpoint is not None else (args.model or DEFAULT_MODEL)


def model_dtype(args: argparse.Namespace) -> Any:
    """The torch dtype of ``--dtype`` (``--bf16``, where a subcommand has it, means bfloat16)."""
    import torch

    name = "bfloat16" if getattr(args, "bf16", False) else args.dtype
    return getattr(torch, name)


def load_model(args: argparse.Namespace, **kwargs: Any) -> Any:
    """Load the model the CLI options name; an unreachable hub says which options work offline."""
    from ..checkpoints import load_model as load
    from ..errors import ModelNotFoundError

    source = model_source(args)
    kwargs.setdefault("dtype", model_dtype(args))
    try:
        return load(source, device=args.device, config=args.config, **kwargs)
    except ModelNotFoundError as err:
        if args.checkpoint is not None or "Hugging Face" not in str(err):
            raise
        raise ModelNotFoundError(
            f"{source} is not in the local cache and the hub cannot be reached; offline, pass "
            f"--model masklet-nano (packaged) or --checkpoint PATH to a downloaded .pt"
        ) from None


def client(args: argparse.Namespace) -> Any:
    """The masklet server client of ``--server URL`` (needs masklet[client])."""
    import os

    from ..client import Client

    return Client(args.server, api_key=os.environ.get("MASKLET_API_KEY"))


def library_default(callable_: Any, name: str) -> Any:
    """The default of a keyword of a library class or function, so that CLI defaults cannot drift."""
    import inspect

    return inspect.signature(callable_).parameters[name].default


# ------------------------------------------------------------------------- value parsers


def floats(text: str, count: tuple[int, ...], what: str) -> list[float]:
    """Comma-separated numbers, as many as one of ``count``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count:
        shapes = " or ".join({2: "X,Y", 3: "X,Y,LABEL", 4: "X0,Y0,X1,Y1"}[n] for n in count)
        raise argparse.ArgumentTypeError(f"{what} {text!r}: expected {shapes}")
    return values


def index(text: str) -> int:
    """A frame index or count: a plain non-negative integer."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected an int >= 0")
    return int(text)


def check_inside(what: str, values: Sequence[float], height: int, width: int) -> None:
    """Points and boxes must lie within the image (pixels 0..W, 0..H)."""
    from ..errors import InvalidInputError

    xs, ys = values[0:4:2], values[1:4:2]
    if not all(0 <= x <= width for x in xs) or not all(0 <= y <= height for y in ys):
        raise InvalidInputError(
            f"{what} lies outside the image, which is {width}x{height} (WxH): x must be in 0..{width}, y in 0..{height}"
        )


def join_negative(argv: Sequence[str]) -> list[str]:
    """``--point -10,-10`` -> ``--point=-10,-10``: argparse would read the value as an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in ("--point", "--box", "--prompt") and token[:1] == "-" and token[1:2].isdigit():
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out
