"""One inference context for every public entry point: no autograd, and autocast switched off.

masklet's models carry their own dtypes (``load_model(dtype=..., memory_dtype=...)``) and keep the
light heads in float32. An enclosing ``torch.autocast`` (the official README's pattern) would
re-cast some matmuls but not others and mix dtypes mid-layer; inside masklet it is therefore
disabled, so the same code gives the same masks with or without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def inference() -> Iterator[None]:
    """``torch.inference_mode()`` with CPU (and CUDA) autocast off; usable as a decorator too."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield
