"""The error envelope ``{"error": {"code", "message", "requestId"}}`` and masklet error -> HTTP code."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors as E

log = logging.getLogger("masklet.server")

#: masklet error type -> (HTTP status, code); the most specific type first. The client inverts it.
ERROR_CODES: list[tuple[type[Exception], int, str]] = [
    (E.ImageDecodeError, 400, "image_decode_error"),
    (E.VideoDecodeError, 400, "video_decode_error"),
    (E.ModelNotFoundError, 404, "unknown_model"),
    (E.ConfigError, 400, "config_error"),
    (E.InvalidInputError, 400, "invalid_input"),
    (E.PredictorStateError, 409, "predictor_state"),
]


class ApiError(Exception):
    """An error answered as the envelope with ``status`` (and optional headers)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def request_id(request: Request) -> str:
    """The request's id (set by the middleware; a fresh one outside it)."""
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


def envelope(status: int, code: str, message: str, rid: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error response carrying the request id in the body and the X-Request-ID header."""
    return JSONResponse(
        {"error": {"code": code, "message": message, "requestId": rid}},
        status_code=status,
        headers={"X-Request-ID": rid, **(headers or {})},
    )


def to_api_error(err: Exception) -> ApiError | None:
    """The ApiError of a masklet error, or None for anything else (a real fault)."""
    if isinstance(err, ApiError):
        return err
    for kind, status, code in ERROR_CODES:
        if isinstance(err, kind):
            return ApiError(status, code, str(err))
    return None


def install_handlers(app: FastAPI) -> None:
    """Answer every error with the envelope: 4xx for bad input, 500 only for real faults."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, err: ApiError) -> JSONResponse:
        return envelope(err.status, err.code, err.message, request_id(request), err.headers)

    @app.exception_handler(E.MaskletError)
    async def _masklet(request: Request, err: E.MaskletError) -> JSONResponse:
        api = to_api_error(err) or ApiError(500, "internal_error", "internal error")
        return envelope(api.status, api.code, api.message, request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for e in err.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where or 'body'}: {e.get('msg')}")
        return envelope(422, "validation_error", "; ".join(parts), request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return envelope(
            err.status_code, codes.get(err.status_code, "bad_request"), str(err.detail), request_id(request)
        )

    @app.exception_handler(Exception)
    async def _fault(request: Request, err: Exception) -> JSONResponse:
        log.exception("request %s failed", request_id(request))
        return envelope(500, "internal_error", "internal error (see the server log)", request_id(request))
