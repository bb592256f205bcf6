"""Optional compiled mode: ``torch.compile`` of the image encoder (and, on request, of the automatic
mask generator's grid decoder), its artefacts cached across runs.

Off by default (``load_model(..., compile=True)`` or :func:`compile_model`). The encoder is
compiled in place (``nn.Module.compile``, so state-dict keys do not change) for fixed shapes, and
warmed up once on a blank image of the model's input size, so the cold start is paid, and timed,
inside :func:`compile_model`. The compiler's artefacts are then written with
``torch.compiler.save_cache_artifacts`` to one file per (torch version, config, dtype, device)
under ``cache_dir``, and loaded back with ``torch.compiler.load_cache_artifacts`` by later runs,
which then skip code generation and C++ compilation. Needs only torch (and a C++ compiler on CPU).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .amg.decoder import POINTS_PER_BATCH, DecoderState, GridDecoder, prompts_per_chunk
from .errors import ConfigError
from .model import Sam2Model
from .precision import inference

__all__ = ["CompileReport", "CompiledGridDecode", "compile_cache_dir", "compile_model"]

#: Environment variable that overrides the default artefact folder.
CACHE_ENV = "MASKLET_COMPILE_CACHE"
#: Part of the artefact file's key: bumped when the compiled graphs change, so that a file written
#: for other graphs is not taken as covering these (2: the grid decoder's fixed-batch graph).
_GRAPHS_VERSION = 2


@dataclass
class CompileReport:
    """What :func:`compile_model` did: seconds of the warm-up (the cold start), artefact file, hit or miss."""

    seconds: float
    artefacts: Path
    loaded: bool


def compile_cache_dir() -> Path:
    """``$MASKLET_COMPILE_CACHE``, else ``~/.cache/masklet/compile``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "masklet" / "compile"


def _artefact_path(model: Sam2Model, cache_dir: Path, automatic_masks: bool) -> Path:
    key = repr(
        (torch.__version__, model.config, str(model.encoder_dtype), model.device.type, automatic_masks, _GRAPHS_VERSION)
    )
    prefix = "encoder-amg" if automatic_masks else "encoder"
    return cache_dir / f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.bin"


def _decode_fixed_batch(
    decoder: GridDecoder, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None
) -> tuple[torch.Tensor, DecoderState]:
    """``GridDecoder.decode_eager`` under a code object of its own, so that its compiled graph (all
    shapes fixed) keeps a cache apart from the symbolic-batch one's."""
    return GridDecoder.decode_eager(decoder, coords, labels, mask_input)


class CompiledGridDecode:
    """The grid decoder's transformer pass, compiled twice: for ``batch`` prompts, the chunk the
    automatic mask generator decodes at once by default (nearly every call), with all shapes fixed,
    and for any other prompt count with a symbolic batch. The fixed graph is faster (masklet-nano,
    32x32 grid, 1 thread: the whole run 0.94x the CPU time it takes with the symbolic graph)."""

    def __init__(self, batch: int, mode: str | None) -> None:
        self.batch = batch
        self.fixed = torch.compile(_decode_fixed_batch, dynamic=False, mode=mode)
        self.symbolic = torch.compile(GridDecoder.decode_eager, dynamic=True, mode=mode)

    def __call__(
        self, decoder: GridDecoder, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, DecoderState]:
        run = self.fixed if coords.shape[0] == self.batch else self.symbolic
        return run(decoder, coords, labels, mask_input)


def compile_model(
    model: Sam2Model,
    cache_dir: str | Path | None = None,
    mode: str | None = None,
    warm_up: bool = True,
    automatic_masks: bool = False,
) -> CompileReport:
    """Compile ``model``'s image encoder in place; load / save its artefacts under ``cache_dir``.

    ``automatic_masks``: also compile the :class:`~masklet.amg.GridDecoder`'s transformer pass for
    every prompt count from two up and every image (:class:`CompiledGridDecode`: a fixed-shape
    graph for the generator's default chunk, a symbolic-batch one for the rest), which fuses its
    element-wise passes (masklet-nano, 32 x 32 grid, 2-thread CPU: the whole run 1.15-1.23x
    faster than eager; the cold start 18 s from cached artefacts, 108 s on a first compile, the
    encoder's included). ``mode`` is passed to ``torch.compile`` (None: its default).
    Outputs equal eager ones to float rounding (fused element-wise kernels); tests check 1e-4.
    """
    if not isinstance(model, Sam2Model):
        raise ConfigError(f"compile_model: expected a masklet Sam2Model, got {type(model).__name__}")
    folder = Path(cache_dir) if cache_dir is not None else compile_cache_dir()
    path = _artefact_path(model, folder, automatic_masks)
    loaded = False
    if path.is_file():
        loaded = torch.compiler.load_cache_artifacts(path.read_bytes()) is not None
    model.image_encoder.compile(dynamic=False, mode=mode)
    grid_batch = 0
    if automatic_masks:
        side = model.config.embedding_size
        grid_batch = prompts_per_chunk(
            side * side, model.config.hidden_dim, model.dtype.itemsize, model.device, POINTS_PER_BATCH, upscale=False
        )
        model.compiled_grid_decode = CompiledGridDecode(grid_batch, mode)
    start = time.perf_counter()
    if warm_up:
        size = model.image_size
        with inference():
            # through encode_image: the encoder is called as set_image calls it (the decoder's projections)
            encoded = model.encode_image(torch.zeros(1, 3, size, size, device=model.device, dtype=model.encoder_dtype))
            if automatic_masks:  # point prompts as the generator passes them (model coordinates)
                decoder = GridDecoder(model, model.image_embeddings(encoded))
                # the symbolic graph on three prompts (five where three is the fixed batch): a batch
                # equal to another size (two coordinates) would share its symbol and be specialised to it
                batches = [5 if grid_batch == 3 else 3]
                if grid_batch > 1:  # a single prompt runs eagerly
                    batches.append(grid_batch)
                for prompts in batches:
                    points = torch.rand(prompts, 1, 2, generator=torch.Generator().manual_seed(0)) * size
                    labels = torch.ones(prompts, 1, dtype=torch.int32, device=model.device)
                    decoder.decode(points.to(model.device), labels, None)
        if not loaded:
            artefacts = torch.compiler.save_cache_artifacts()
            if artefacts is not None:
                folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(artefacts[0])
                tmp.replace(path)
    return CompileReport(seconds=time.perf_counter() - start, artefacts=path, loaded=loaded)
