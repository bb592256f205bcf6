"""The web page's in-browser decoding: the exported prompt decoder of a served model, exported on
first request and cached, and the few numbers the page needs to turn its logits into the server's masks."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from ... import web_vendor
from ..deps import Ctx, require_key
from ..errors import ApiError
from ..pool import Loaded

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


class DecoderCache:
    """Exported decoders by model name in one temporary folder (one export per model and process)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="masklet-web-decoder-"))
        self.lock = threading.Lock()
        self.paths: dict[str, Path] = {}

    def path(self, loaded: Loaded) -> Path:
        """The decoder .onnx of ``loaded``, exported now if this is its first request."""
        from ...export.onnx import export_part

        with self.lock:
            if loaded.name not in self.paths:
                model = loaded.model
                path = self.folder / f"{len(self.paths)}-prompt_decoder.onnx"
                export_part(model, "decoder", path)
                self.paths[loaded.name] = path
            return self.paths[loaded.name]


def _cache(request: Request) -> DecoderCache:
    state = request.app.state
    if getattr(state, "web_decoders", None) is None:
        state.web_decoders = DecoderCache()
    return state.web_decoders


def _check(loaded: Loaded) -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise ApiError(501, "onnx_unavailable", "in-browser decoding needs the server's masklet[onnx] extra") from None
    dtype = loaded.model.sam_mask_decoder.iou_token.weight.dtype
    if str(dtype) != "torch.float32":
        raise ApiError(501, "onnx_unavailable", f"model {loaded.name!r} has a {dtype} decoder; export needs float32")


@router.get("/web-decoder")
async def web_decoder(ctx: Ctx, model: Annotated[str | None, Query()] = None) -> dict[str, Any]:
    """What the page needs to decode clicks itself: the decoder's address and the mask post-processing."""
    loaded = ctx.pool.get(model)
    c = loaded.model.config
    dec = loaded.model.sam_mask_decoder
    return {
        "model": loaded.name,
        "imageSize": c.image_size,
        "lowResSide": 4 * c.embedding_size,
        "numMaskTokens": c.decoder.num_multimask_outputs + 1,
        "dynamicMultimask": bool(dec.dynamic_multimask_via_stability),
        "stabilityDelta": float(dec.stability_delta),
        "stabilityThresh": float(dec.stability_thresh),
        "decoder": f"/v1/web-decoder/decoder.onnx?model={loaded.name}",
        "runtime": "/static/ort.wasm.bundle.min.mjs" if web_vendor.present() else None,
    }


@router.get("/web-decoder/decoder.onnx")
async def decoder_onnx(request: Request, ctx: Ctx, model: Annotated[str | None, Query()] = None) -> FileResponse:
    """The served model's prompt decoder as ONNX (``masklet export onnx --parts decoder``'s file)."""
    loaded = ctx.pool.get(model)
    _check(loaded)
    path = await ctx.pool.run(loaded, _cache(request).path, loaded)
    return FileResponse(path, media_type="application/octet-stream", headers={"Cache-Control": "private, max-age=3600"})
