"""The web page: ``/`` and its static assets, plus the two reads it needs (media listing, frame images)."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, RedirectResponse, Response
from PIL import Image

from ..deps import Ctx, require_key
from ..errors import ApiError

router = APIRouter()
api = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".mjs": "text/javascript; charset=utf-8",  # onnxruntime-web (fetched by masklet.web_vendor)
    ".wasm": "application/wasm",  # streaming compilation needs this type
}
_VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def static_dir() -> Path:
    """Where the packaged page lives (``masklet/web``)."""
    return Path(str(resources.files("masklet") / "web"))


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The page (no key needed to load it; its API calls send the key the user enters)."""
    return FileResponse(static_dir() / "index.html", media_type=_TYPES[".html"], headers={"Cache-Control": "no-cache"})


@router.get("/web", include_in_schema=False)
async def web_alias() -> RedirectResponse:
    return RedirectResponse("/")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    """One flat asset by name (no sub-folders, so no path traversal)."""
    root = static_dir()
    path = (root / name).resolve()
    if "/" in name or "\\" in name or path.parent != root.resolve() or not path.is_file() or path.suffix not in _TYPES:
        raise ApiError(404, "not_found", f"static asset {name!r} does not exist")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


@api.get("/media")
async def list_media(ctx: Ctx) -> dict:
    """Videos and frame folders under the media roots (two levels deep), as paths the video route accepts."""
    items: list[dict] = []
    for root in ctx.settings.media_roots:
        if not root.is_dir():
            continue
        candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
        candidates += sorted(q for p in candidates[1:] for q in p.iterdir() if q.is_dir())
        for folder in candidates:
            files = sorted(folder.iterdir()) if folder.is_dir() else []
            frames = [f for f in files if f.suffix.lower() in _IMAGE_EXT]
            if frames and folder != root:
                items.append({"path": str(folder.relative_to(root)), "kind": "frames", "frames": len(frames)})
            items += [
                {"path": str(f.relative_to(root)), "kind": "video"} for f in files if f.suffix.lower() in _VIDEO_EXT
            ]
            if len(items) >= 500:
                break
    return {"items": items[:500]}


@api.get("/videos/{sid}/frames/{idx}")
async def frame_image(sid: str, idx: int, ctx: Ctx) -> Response:
    """Frame ``idx`` of a session as a JPEG (the page shows any source this way)."""
    session = ctx.sessions.get(sid)
    if not 0 <= idx < session.num_frames:
        raise ApiError(400, "invalid_input", f"idx: expected a frame index in [0, {session.num_frames}), got {idx}")
    loaded = ctx.pool.get(session.model)

    def encode() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(session.state.frames[idx]).save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    data = await ctx.pool.run(loaded, encode)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


router.include_router(api)
