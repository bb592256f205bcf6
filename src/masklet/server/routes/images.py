"""Images by id: upload once, prompt many times, automatic masks, embeddings in and out."""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from ...amg import MaskGenerator
from ...errors import InvalidInputError, PredictorStateError
from ...image import ImageEmbeddings, ImagePredictor
from ..codec import (
    data_uri_bytes,
    decode_image,
    image_id,
)
from ..deps import Ctx, require_key
from ..errors import ApiError
from ..fetch import fetch_url
from ..image_batch import prepare_job
from ..pool import Loaded
from ..schemas import (
    AutomaticOptions,
    AutomaticResponse,
    BatchRequest,
    BatchResponse,
    ImageInfo,
    PredictRequest,
    PredictResponse,
)
from ..store import CachedImage

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
SAFETENSORS = "application/x-safetensors"


async def upload_bytes(request: Request, field: str = "image") -> tuple[bytes, str | None]:
    """The image bytes of a raw body, a multipart part ``field`` or JSON ``{"image": data URI}``,
    and the model named in a JSON body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        part = form.get(field)
        if part is None or isinstance(part, str):
            raise InvalidInputError(f"multipart: expected a file part named {field!r}")
        return await part.read(), None
    body = await request.body()
    if ctype == "application/json":
        try:
            doc = json.loads(body)
        except ValueError as err:
            raise ApiError(400, "malformed_json", f"body: not valid JSON ({err})") from None
        model = doc.get("model") if isinstance(doc, dict) else None
        model = model if isinstance(model, str) else None
        if isinstance(doc, dict) and "url" in doc:
            if not isinstance(doc["url"], str):
                raise InvalidInputError(f"url: expected a string, got {type(doc['url']).__name__}")
            return await fetch_url(doc["url"], request.app.state.ctx.settings), model
        if not isinstance(doc, dict) or not isinstance(doc.get("image"), str):
            raise InvalidInputError('body: expected {"image": "data:image/...;base64,..."} or {"url": "https://..."}')
        return data_uri_bytes(doc["image"]), model
    return body, None


def _encode(loaded: Loaded, pixels: np.ndarray) -> ImageEmbeddings:
    predictor = loaded.image_predictor
    predictor.set_image(pixels)
    emb = predictor.get_embeddings()
    predictor.reset_predictor()
    return emb


@router.post("/images", status_code=201)
async def upload_image(request: Request, ctx: Ctx, model: Annotated[str | None, Query()] = None) -> ImageInfo:
    """Upload an image (raw body, multipart ``image`` or JSON data URI); encoded once per content and model."""
    data, json_model = await upload_bytes(request)
    loaded = ctx.pool.get(model or json_model)
    pixels = decode_image(data, ctx.settings.max_pixels)
    iid = image_id(loaded.name, pixels)
    cached = iid in ctx.images
    if not cached:
        emb = await ctx.pool.run(loaded, _encode, loaded, pixels)
        ctx.images.put(CachedImage(iid, loaded.name, pixels, emb))
    h, w = pixels.shape[:2]
    return ImageInfo(image_id=iid, model=loaded.name, width=w, height=h, cached=cached)


@router.get("/images/{iid}")
async def image_info(iid: str, ctx: Ctx) -> ImageInfo:
    """Whether an image is cached (clients check before uploading)."""
    item = ctx.images.get(iid)
    h, w = item.embeddings.orig_hw[0]
    return ImageInfo(image_id=iid, model=item.model, width=w, height=h, cached=True)


@router.delete("/images/{iid}")
async def delete_image(iid: str, ctx: Ctx) -> dict:
    ctx.images.get(iid)
    ctx.images.pop(iid)
    return {"deleted": iid}


@router.post("/images/{iid}/predict")
async def predict(iid: str, body: PredictRequest, ctx: Ctx) -> PredictResponse:
    """Masks, scores and (optionally) low-res logits for prompts on a cached image."""
    item = ctx.images.get(iid)
    loaded = ctx.pool.get(item.model)
    job = prepare_job(loaded, iid, item.embeddings, body, body)  # bad prompts: their 4xx, never in a batch
    return await ctx.batcher.submit(loaded, job, ctx.prompt_decoder)  # decoded with concurrent prompts


@router.post("/images/predict_batch")
async def predict_batch(body: BatchRequest, ctx: Ctx) -> BatchResponse:
    """Prompts on several cached images (each with its own objects) in one request, decoded together
    (one mask-decoder call per model for up to ``batch_max_objects`` objects)."""
    items = [ctx.images.get(it.image_id) for it in body.items]
    models = [ctx.pool.get(item.model) for item in items]
    jobs = [prepare_job(m, it.image_id, item.embeddings, it, body) for m, it, item in zip(models, body.items, items)]

    def run_all() -> BatchResponse:
        results: list[PredictResponse | Exception | None] = [None] * len(jobs)
        for name in dict.fromkeys(m.name for m in models):
            idx = [i for i, m in enumerate(models) if m.name == name]
            for i, out in zip(idx, ctx.prompt_decoder(models[idx[0]], [jobs[i] for i in idx])):
                results[i] = out
        for r in results:
            if isinstance(r, Exception):
                raise r
        return BatchResponse(results=[r for r in results if isinstance(r, PredictResponse)])

    return await ctx.pool.run(models[0], run_all)


def _generator(loaded: Loaded, opts: AutomaticOptions) -> MaskGenerator:
    kwargs: dict[str, Any] = opts.model_dump()
    if kwargs["point_grids"] is not None:
        kwargs["point_grids"] = [np.asarray(g, dtype=np.float64) for g in kwargs["point_grids"]]
    return MaskGenerator(loaded.model, output_mode="coco_rle", **kwargs)


@router.post("/models/{name}/automatic/check")
async def check_automatic(name: str, body: AutomaticOptions, ctx: Ctx) -> dict:
    """Validate MaskGenerator options (the remote twin calls this from its constructor)."""
    _generator(ctx.pool.get(name), body)
    return {"ok": True}


@router.post("/images/{iid}/automatic")
async def automatic(iid: str, body: AutomaticOptions, ctx: Ctx) -> AutomaticResponse:
    """Automatic masks of a cached image with any MaskGenerator options (COCO RLE records)."""
    item = ctx.images.get(iid)
    if item.pixels.size == 0:
        raise PredictorStateError("automatic masks need the image's pixels; this image was uploaded as embeddings only")
    loaded = ctx.pool.get(item.model)
    generator = _generator(loaded, body)
    records = await ctx.pool.run(loaded, generator.generate, item.pixels)
    return AutomaticResponse(image_id=iid, records=records)


@router.get("/images/{iid}/embeddings")
async def download_embeddings(iid: str, ctx: Ctx) -> Response:
    """The encoder output as safetensors (raw tensors plus a small header, never base64)."""
    from safetensors.torch import save

    item = ctx.images.get(iid)
    tensors = {f"level_{i}": t.detach().contiguous().cpu() for i, t in enumerate(item.embeddings.levels)}
    meta = {"orig_hw": json.dumps([list(hw) for hw in item.embeddings.orig_hw]), "model": item.model}
    return Response(save(tensors, metadata=meta), media_type=SAFETENSORS)


def _read_safetensors(data: bytes) -> ImageEmbeddings:
    from safetensors.torch import load

    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        meta = header.get("__metadata__") or {}
        pairs = json.loads(meta["orig_hw"])
        if any(len(hw) != 2 for hw in pairs):
            raise ValueError(f"orig_hw: expected [H, W] pairs, got {pairs}")
        orig_hw = [(int(hw[0]), int(hw[1])) for hw in pairs]
        tensors = load(data)
        levels = [tensors[f"level_{i}"] for i in range(len(tensors))]
    except Exception as err:  # noqa: BLE001 (anything unreadable is the caller's bad input)
        raise InvalidInputError(
            f"embeddings: expected a masklet safetensors file (level_0.. tensors, orig_hw metadata): {type(err).__name__} {err}"
        ) from None
    return ImageEmbeddings(levels=levels, orig_hw=orig_hw)


@router.post("/images/embeddings", status_code=201)
async def upload_embeddings(request: Request, ctx: Ctx, model: Annotated[str | None, Query()] = None) -> ImageInfo:
    """Register downloaded embeddings (safetensors body) under an id; the encoder is skipped."""
    loaded = ctx.pool.get(model)
    data = await request.body()
    emb = _read_safetensors(data)
    if len(emb.orig_hw) != 1:
        raise InvalidInputError(f"embeddings: expected the embeddings of one image, got {len(emb.orig_hw)}")

    def check() -> ImageEmbeddings:
        predictor = ImagePredictor(loaded.model)
        predictor.set_embeddings(emb)  # the shared shape checks
        return predictor.get_embeddings()

    checked = await ctx.pool.run(loaded, check)
    iid = "e" + hashlib.sha256(loaded.name.encode() + b"|" + data).hexdigest()[:31]
    cached = iid in ctx.images
    ctx.images.put(CachedImage(iid, loaded.name, np.zeros((0, 0, 3), np.uint8), checked))
    h, w = checked.orig_hw[0]
    return ImageInfo(image_id=iid, model=loaded.name, width=w, height=h, cached=cached)
