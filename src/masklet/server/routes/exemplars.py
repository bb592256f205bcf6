"""Exemplar sessions (segment by example): prompt objects on support images, find them on new ones.

One :class:`~masklet.ExemplarPredictor` per session, held in the session store (same count limit,
idle TTL and byte budget as video sessions). Images travel with each call, as multipart (``image``
file part, ``args`` JSON part) or JSON (``{"image": data URI, ...args}``); the predictor reuses the
features of the last image when the same pixels come again. The bank downloads and uploads as
safetensors (``ExemplarPredictor.save`` / ``load``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ...errors import InvalidInputError
from ...exemplar import ExemplarPredictor, ExemplarResult
from ..codec import data_uri_bytes, decode_image, masks_to_rles, pack_array
from ..deps import Context, Ctx, require_key
from ..errors import ApiError
from ..schemas import ExemplarCreate, ExemplarInfo, ExemplarResponse, PackedArray
from ..store import Session

router = APIRouter(prefix="/v1/exemplars", dependencies=[Depends(require_key)])
KIND = "exemplar"


def _info(s: Session) -> ExemplarInfo:
    predictor: ExemplarPredictor = s.predictor
    return ExemplarInfo(
        session_id=s.session_id,
        model=s.model,
        max_memory=predictor.max_memory,
        obj_ids=predictor.obj_ids,
        memory_kinds={str(i): predictor.memory_kinds(i) for i in predictor.obj_ids},
    )


def _response(result: ExemplarResult) -> ExemplarResponse:
    h, w = result.masks.shape[-2:]
    return ExemplarResponse(
        obj_ids=[int(i) for i in result.obj_ids],
        height=int(h),
        width=int(w),
        masks=masks_to_rles(result.masks.cpu().numpy()),
        scores=[float(v) for v in result.scores.cpu()],
        object_score_logits=[float(v) for v in result.object_score_logits.cpu()],
        presence=[float(v) for v in result.presence.cpu()],
        low_res_logits=PackedArray(**pack_array(result.low_res_logits.float().cpu().numpy())),
    )


async def _image_and_args(request: Request, ctx: Context) -> tuple[np.ndarray, dict]:
    """The decoded image and the JSON arguments of a call (multipart or JSON)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        part, raw = form.get("image"), form.get("args", "{}")
        if part is None or isinstance(part, str):
            raise InvalidInputError("multipart: expected a file part named 'image'")
        data = await part.read()
        try:
            args = json.loads(raw if isinstance(raw, str) else (await raw.read()).decode())
        except ValueError:
            raise ApiError(400, "malformed_json", "args: not valid JSON") from None
    else:
        try:
            args = json.loads(await request.body())
        except ValueError as err:
            raise ApiError(400, "malformed_json", f"body: not valid JSON ({err})") from None
        if not isinstance(args, dict) or not isinstance(args.get("image"), str):
            raise InvalidInputError(
                'body: expected multipart (image, args) or {"image": "data:image/...;base64,...", ...}'
            )
        data = data_uri_bytes(args.pop("image"))
    if not isinstance(args, dict):
        raise InvalidInputError(f"args: expected a JSON object, got {type(args).__name__}")
    return decode_image(data, ctx.settings.max_pixels), args


async def _op(ctx: Context, sid: str, fn: Any) -> Any:
    """Run ``fn(predictor)`` on the model's worker with the session held; the bank may have grown."""
    session = ctx.sessions.get(sid, KIND)
    loaded = ctx.pool.get(session.model)
    async with session.busy:
        result = await ctx.pool.run(loaded, fn, session.predictor)
        session.state = session.predictor.bank  # what the byte budget counts
    ctx.sessions.enforce_budget(sid)
    return result


@router.post("", status_code=201)
async def create(body: ExemplarCreate, ctx: Ctx) -> ExemplarInfo:
    """A new exemplar session with an empty bank (``maxMemory`` memories per object)."""
    loaded = ctx.pool.get(body.model)
    predictor = ExemplarPredictor(
        loaded.model,
        body.max_memory,
        object_pointers=body.object_pointers,
        multimask_queries=body.multimask_queries,
        binarize_examples=body.binarize_examples,
        mask_threshold=body.mask_threshold,
    )
    session = ctx.sessions.add(
        lambda sid: Session(
            sid, loaded.name, predictor.bank, 0, 0, 0, busy=asyncio.Lock(), predictor=predictor, kind=KIND
        )
    )
    return _info(session)


@router.get("/{sid}")
async def info(sid: str, ctx: Ctx) -> ExemplarInfo:
    return _info(ctx.sessions.get(sid, KIND))


@router.delete("/{sid}")
async def close(sid: str, ctx: Ctx) -> dict:
    """Close the session and free its bank."""
    session = ctx.sessions.get(sid, KIND)
    async with session.busy:
        ctx.sessions.close(sid)
    return {"closed": sid}


_EXAMPLE_ARGS = {"objId", "points", "labels", "box", "mask"}


@router.post("/{sid}/examples")
async def add_example(sid: str, request: Request, ctx: Ctx) -> ExemplarResponse:
    """Prompt one object on a support image (args ``objId`` and ``points`` + ``labels``, ``box`` or a
    ``mask`` as COCO RLE) and add its mask to the object's memory; answers that mask."""
    from ...masks import decode_rle

    ctx.sessions.get(sid, KIND)
    image, args = await _image_and_args(request, ctx)
    if set(args) - _EXAMPLE_ARGS:
        raise InvalidInputError(f"args: accepted keys are {', '.join(sorted(_EXAMPLE_ARGS))}, got {sorted(args)}")
    mask = None if args.get("mask") is None else decode_rle(args["mask"])[0]

    obj_id: Any = args.get("objId")  # JSON as sent: the predictor checks it

    def run(p: ExemplarPredictor) -> ExemplarResponse:
        return _response(p.add_example(image, obj_id, args.get("points"), args.get("labels"), args.get("box"), mask))

    return await _op(ctx, sid, run)


@router.post("/{sid}/segment")
async def segment(sid: str, request: Request, ctx: Ctx) -> ExemplarResponse:
    """Find every object of the bank on an image (args ``updateMemory``: add the found ones to memory)."""
    ctx.sessions.get(sid, KIND)
    image, args = await _image_and_args(request, ctx)
    if set(args) - {"updateMemory"} or not isinstance(args.get("updateMemory", False), bool):
        raise InvalidInputError(f"args: expected only updateMemory (a bool), got {args!r}")
    return await _op(ctx, sid, lambda p: _response(p.segment(image, args.get("updateMemory", False))))


@router.delete("/{sid}/objects/{obj_id}")
async def remove_object(sid: str, obj_id: int, ctx: Ctx) -> ExemplarInfo:
    """Forget an object and its memories."""
    await _op(ctx, sid, lambda p: p.remove_object(obj_id))
    return _info(ctx.sessions.get(sid, KIND))


@router.post("/{sid}/reset")
async def reset(sid: str, ctx: Ctx) -> ExemplarInfo:
    """Forget every object and memory."""
    await _op(ctx, sid, lambda p: p.reset())
    return _info(ctx.sessions.get(sid, KIND))


@router.get("/{sid}/bank")
async def download_bank(sid: str, ctx: Ctx) -> Response:
    """The memory bank as safetensors (``ExemplarPredictor.save``)."""

    def run(p: ExemplarPredictor) -> bytes:
        with tempfile.TemporaryDirectory(prefix="masklet-bank-") as tmp:
            path = Path(tmp) / "bank.safetensors"
            p.save(path)
            return path.read_bytes()

    return Response(await _op(ctx, sid, run), media_type="application/x-safetensors")


@router.put("/{sid}/bank")
async def upload_bank(sid: str, request: Request, ctx: Ctx) -> ExemplarInfo:
    """Replace the memory bank with an uploaded safetensors bank (``ExemplarPredictor.load``)."""
    ctx.sessions.get(sid, KIND)
    data = await request.body()

    def run(p: ExemplarPredictor) -> None:
        with tempfile.TemporaryDirectory(prefix="masklet-bank-") as tmp:
            path = Path(tmp) / "bank.safetensors"
            path.write_bytes(data)
            try:
                p.load(path)
            except InvalidInputError as err:
                raise InvalidInputError(str(err).replace(str(path), "bank")) from None
            except Exception as err:  # noqa: BLE001 (an unreadable upload is the caller's bad input)
                raise InvalidInputError(f"bank: not a readable masklet exemplar bank ({type(err).__name__})") from None

    await _op(ctx, sid, run)
    return _info(ctx.sessions.get(sid, KIND))
