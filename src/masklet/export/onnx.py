"""ONNX export of a masklet model: image encoder, prompt decoder and the video step.

Each part is a small export-friendly wrapper around the model's own modules (same weights, same
maths; no data-dependent Python branches, RoPE as real cos/sin products instead of complex
numbers; see ``encoder``, ``decoder``, ``memory``), traced with ``torch.onnx.export``.
``export_onnx`` also writes ``manifest.json`` (``manifest``) describing every input and output,
the pre-processing and how the parts chain. Needs the ``masklet[onnx]`` extra (onnx, onnxruntime).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..model import Sam2Model
from .decoder import DecoderExport
from .encoder import CastExport, EncoderExport
from .manifest import FILES, FORMAT, MANIFEST, PARTS, examples, manifest, part_specs
from .memory import MaskPromptExport, MemoryAttentionExport, MemoryEncoderExport, NoMemoryExport

__all__ = [
    "DEFAULT_OPSET",
    "DTYPES",
    "FILES",
    "FORMAT",
    "MANIFEST",
    "PARTS",
    "REFUSED_DTYPES",
    "CastExport",
    "DecoderExport",
    "EncoderExport",
    "MaskPromptExport",
    "MemoryAttentionExport",
    "MemoryEncoderExport",
    "NoMemoryExport",
    "add_cli",
    "check_dtype",
    "export_onnx",
    "export_part",
    "run_cli",
]

DEFAULT_OPSET = 17
#: Export precisions: the image encoder's weights and compute; the light heads (prompt decoder, video
#: step) stay float32, as in masklet's own low-precision models. Inputs and outputs are float32 always.
DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: Precisions refused, with why: ONNX Runtime's CPU provider has no kernels for them.
REFUSED_DTYPES = {
    "bfloat16": "ONNX Runtime's CPU provider has no bfloat16 Conv or MatMul kernels (the model "
    "would not load); use --dtype float16 or float32, or masklet's PyTorch bfloat16 path"
}
WRAPPERS: dict[str, type[nn.Module]] = {
    "encoder": EncoderExport,
    "decoder": DecoderExport,
    "memory_attention": MemoryAttentionExport,
    "memory_encoder": MemoryEncoderExport,
    "no_memory": NoMemoryExport,
    "mask_prompt": MaskPromptExport,
}


def check_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of an export precision name; bfloat16 and unknown names are refused with why."""
    if dtype in REFUSED_DTYPES:
        raise InvalidInputError(f"dtype: {dtype} is not exported: {REFUSED_DTYPES[dtype]}")
    if dtype not in DTYPES:
        raise InvalidInputError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def export_part(
    model: Sam2Model, part: str, path: str | Path, opset: int = DEFAULT_OPSET, dtype: str = "float32"
) -> dict[str, Any]:
    """Export one model (a key of :data:`FILES`) to ``path``; returns its manifest entry.

    ``dtype`` other than float32 applies to the encoder only (see :data:`DTYPES`).
    """
    compute = check_dtype(dtype) if part == "encoder" else torch.float32
    if part not in FILES:
        raise InvalidInputError(f"part: expected one of {sorted(FILES)}, got {part!r}")
    specs = part_specs(model)[part]
    dynamic = {}
    for item in specs["inputs"] + specs["outputs"]:
        axes = {i: d for i, d in enumerate(item["shape"]) if isinstance(d, str)}
        if axes:
            dynamic[item["name"]] = axes
    wrapper: nn.Module = WRAPPERS[part](model).eval()
    if compute != torch.float32:
        wrapper = CastExport(WRAPPERS[part](copy.deepcopy(model)), compute).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            examples(model, part),
            str(path),
            input_names=[s["name"] for s in specs["inputs"]],
            output_names=[s["name"] for s in specs["outputs"]],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    return {"file": Path(path).name, "compute_dtype": str(compute).removeprefix("torch."), **specs}


def _models(model: Sam2Model, parts: Sequence[str]) -> list[str]:
    """The exported models of the chosen CLI parts that this model has."""
    c = model.config
    names = [name for part in parts for name in PARTS[part]]
    if not c.directly_add_no_mem_embed:
        names = [n for n in names if n != "no_memory"]
    if not c.use_obj_ptrs_in_encoder:
        names = [n for n in names if n != "mask_prompt"]
    return names


def export_onnx(
    model: Sam2Model,
    out_dir: str | Path,
    parts: Sequence[str] = tuple(PARTS),
    opset: int = DEFAULT_OPSET,
    source: str | None = None,
    dtype: str = "float32",
) -> Path:
    """Write the chosen parts (``encoder``, ``decoder``, ``memory``) and ``manifest.json`` to ``out_dir``.

    ``dtype="float16"`` exports the image encoder in float16 (float32 inputs and outputs); bfloat16
    is refused, as ONNX Runtime's CPU provider cannot run it.
    """
    check_dtype(dtype)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise InvalidInputError(f"parts: expected a non-empty subset of {list(PARTS)}, got {list(parts)}")
    if not isinstance(opset, int) or not 14 <= opset <= 20:
        raise InvalidInputError(f"opset: expected an integer from 14 to 20, got {opset!r}")
    if model.dtype != torch.float32 or model.encoder_dtype != torch.float32:
        raise InvalidInputError("model: ONNX export needs a float32 model (load_model(..., dtype=torch.float32))")
    c = model.config
    if c.num_maskmem > 0 and "memory" in parts and not c.directly_add_no_mem_embed:
        raise InvalidInputError("model: export of the video step needs a config with directly_add_no_mem_embed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    exported = {name: export_part(model, name, out / FILES[name], opset, dtype) for name in _models(model, parts)}
    (out / MANIFEST).write_text(json.dumps(manifest(model, exported, opset, dtype, source), indent=2))
    return out


def add_cli(sub: Any) -> None:
    """Register ``masklet export onnx`` on the CLI's subparsers (see :mod:`masklet.export.cli`)."""
    from .cli import add_cli as add

    add(sub)


def run_cli(args: Any) -> str:
    """Run ``masklet export onnx``; returns the line to print (see :mod:`masklet.export.cli`)."""
    from .cli import run_cli as run

    return run(args)
