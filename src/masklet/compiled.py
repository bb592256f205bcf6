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

from .amg.decoder import GridDecoder
from .errors import ConfigError
from .model import Sam2Model
from .precision import inference

__all__ = ["CompileReport", "compile_cache_dir", "compile_model"]

#: Environment variable that overrides the default artefact folder.
CACHE_ENV = "MASKLET_COMPILE_CACHE"


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
    key = repr((torch.__version__, model.config, str(model.encoder_dtype), model.device.type, automatic_masks))
    prefix = "encoder-amg" if automatic_masks else "encoder"
    return cache_dir / f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.bin"


def compile_model(
    model: Sam2Model,
    cache_dir: str | Path | None = None,
    mode: str | None = None,
    warm_up: bool = True,
    automatic_masks: bool = False,
) -> CompileReport:
    """Compile ``model``'s image encoder in place; load / save its artefacts under ``cache_dir``.

    ``automatic_masks``: also compile the :class:`~masklet.amg.GridDecoder`'s transformer pass
    (every prompt count from two up, every image: one graph with a symbolic batch), which fuses
    its element-wise passes (masklet-nano, 32 x 32 grid, 2-thread CPU: the whole run 6-9 % faster;
    the cold start 16 s longer, 40 s on a first compile, cached artefacts or not). ``mode`` is passed to ``torch.compile`` (None: its default).
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
    if automatic_masks:
        model.compiled_grid_decode = torch.compile(GridDecoder.decode_eager, dynamic=True, mode=mode)
    start = time.perf_counter()
    if warm_up:
        size = model.image_size
        with inference():
            # through encode_image: the encoder is called as set_image calls it (the decoder's projections)
            encoded = model.encode_image(torch.zeros(1, 3, size, size, device=model.device, dtype=model.encoder_dtype))
            if automatic_masks:  # point prompts as the generator passes them (model coordinates)
                # three: a batch equal to another size (two coordinates) would share its symbol
                # and be specialised to it
                points = torch.rand(3, 1, 2, generator=torch.Generator().manual_seed(0)).to(model.device) * size
                labels = torch.ones(3, 1, dtype=torch.int32, device=model.device)
                GridDecoder(model, model.image_embeddings(encoded)).decode(points, labels, None)
        if not loaded:
            artefacts = torch.compiler.save_cache_artifacts()
            if artefacts is not None:
                folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(artefacts[0])
                tmp.replace(path)
    return CompileReport(seconds=time.perf_counter() - start, artefacts=path, loaded=loaded)
