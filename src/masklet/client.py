"""Client of ``masklet serve``: remote twins of the predictors, same methods, arguments and numpy outputs.

    from masklet.client import Client
    client = Client("http://127.0.0.1:7463", api_key=None)
    predictor = client.image_predictor()        # instead of ImagePredictor(model)
    predictor.set_image("photo.jpg")
    masks, scores, low_res = predictor.predict(point_coords=[[200, 150]], point_labels=[1])

Arguments are checked here with the local predictors' own checks before anything is sent, so a bad
prompt raises the same masklet error type as locally; errors found by the server come back as the
same types (mapped from the envelope's code). 502/503/504 and refused connections are retried with
backoff; a video session the server lost (restart, eviction) is re-created and its prompt log
replayed, transparently. Needs ``pip install 'masklet[client]'`` (httpx; websockets for streams).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from typing_extensions import Self

from . import errors as E
from .checks import is_real
from .image import ImageEmbeddings
from .io import ImageSource, load_image
from .masks import encode_uncompressed_rle
from .prompts import image_prompts
from .server.codec import image_id, npy_bytes, pack_array, rles_to_masks, unpack_array

__all__ = ["Client", "RemoteError"]

_RETRY_STATUS = (502, 503, 504)


class RemoteError(E.MaskletError):
    """A server answer with no local error type (auth, limits, server faults)."""


#: envelope code -> masklet error type (the inverse of the server's mapping).
_CODE_TYPES: dict[str, type[Exception]] = {
    "invalid_input": E.InvalidInputError,
    "validation_error": E.InvalidInputError,
    "malformed_json": E.InvalidInputError,
    "payload_too_large": E.InvalidInputError,
    "image_decode_error": E.ImageDecodeError,
    "video_decode_error": E.VideoDecodeError,
    "config_error": E.ConfigError,
    "predictor_state": E.PredictorStateError,
    "unknown_model": E.ModelNotFoundError,
}


def _error(status: int, body: Any) -> Exception:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    code, message = err.get("code", "http_error"), err.get("message", f"HTTP {status}")
    exc = _CODE_TYPES.get(code, RemoteError)(message)
    exc.status, exc.code, exc.request_id = status, code, err.get("requestId")  # type: ignore[attr-defined]  # set on any exception type of _CODE_TYPES
    return exc


def _is_unknown(err: Exception, code: str) -> bool:
    return getattr(err, "code", None) == code


def _lists(value: Any) -> Any:
    """Validated numbers as JSON lists (None stays None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64).tolist()


class Client:
    """A connection to a masklet server; ``timeout`` in seconds per request, ``retries`` on 502/503/504."""

    def __init__(
        self, url: str, api_key: str | None = None, timeout: float = 120.0, retries: int = 8, backoff: float = 0.25
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.headers = {} if api_key is None else {"X-API-Key": api_key}
        self.retries, self.backoff = retries, backoff
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)
        self._models: dict[str | None, dict] = {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send with retries; return the parsed JSON (or bytes); raise the mapped error on 4xx/5xx."""
        import httpx

        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.RemoteProtocolError) as err:
                if attempt == self.retries:
                    raise RemoteError(f"cannot reach {self.url}: {err}") from None
            else:
                if response.status_code not in _RETRY_STATUS or attempt == self.retries:
                    break
            time.sleep(min(self.backoff * 2**attempt, 2.0))
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise _error(response.status_code, body)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def model_info(self, model: str | None) -> dict:
        """The server's description of a model (the default one for None)."""
        if model not in self._models:
            infos = self.request("GET", "/v1/models")
            for info in infos:
                self._models[info["name"]] = info
            self._models[None] = infos[0]
            if model not in self._models:
                raise E.ModelNotFoundError(
                    f"model: unknown model {model!r}; served models: {[i['name'] for i in infos]}"
                )
        info = self._models[model]
        if info.get("imageSize") is None:  # still loading: ask again
            self._models.clear()
            time.sleep(0.5)
            return self.model_info(model)
        return info

    def image_predictor(self, model: str | None = None, **options: Any) -> RemoteImagePredictor:
        return RemoteImagePredictor(self, model, **options)

    def mask_generator(self, model: str | None = None, **options: Any) -> RemoteMaskGenerator:
        return RemoteMaskGenerator(self, model, **options)

    def video_predictor(
        self, model: str | None = None, *, exact_logits: bool = False, **options: Any
    ) -> RemoteVideoPredictor:
        return RemoteVideoPredictor(self, model, exact_logits=exact_logits, **options)

    def stream_tracker(self, model: str | None = None, **options: Any) -> RemoteStreamTracker:
        return RemoteStreamTracker(self, model, **options)

    def exemplar_predictor(
        self, model: str | None = None, max_memory: int = 8, **options: Any
    ) -> RemoteExemplarPredictor:
        """The remote twin of :class:`~masklet.ExemplarPredictor` (one exemplar session on the server)."""
        return RemoteExemplarPredictor(self, model, max_memory, **options)

    # ------------------------------------------------------------------ images

    def upload_image(self, model: str | None, pixels: np.ndarray) -> str:
        """The server id of decoded pixels, uploading them only when the server lacks them."""
        name = self.model_info(model)["name"]
        iid = image_id(name, pixels)
        try:
            self.request("GET", f"/v1/images/{iid}")
        except RemoteError as err:
            if not _is_unknown(err, "unknown_image"):
                raise
            info = self.request(
                "POST",
                "/v1/images",
                params={"model": name},
                content=npy_bytes(pixels),
                headers={"content-type": "application/x-npy"},
            )
            iid = info["imageId"]
        return iid


def _shim(info: dict) -> Any:
    """What the local prompt checks read from a predictor, from the server's model info."""
    model = SimpleNamespace(image_size=info["imageSize"], config=SimpleNamespace(embedding_size=info["embeddingSize"]))
    return SimpleNamespace(model=model, device=torch.device("cpu"), image_size=info["imageSize"])


class RemoteImagePredictor:
    """:class:`~masklet.ImagePredictor` on a server: images are uploaded once and prompted by id."""

    def __init__(
        self,
        client: Client,
        model: str | None = None,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
    ) -> None:
        for name, value in (("max_hole_area", max_hole_area), ("max_sprinkle_area", max_sprinkle_area)):
            if not is_real(value) or value < 0:
                raise E.InvalidInputError(f"{name}: expected a number >= 0, got {value!r}")
        if not is_real(mask_threshold) or not np.isfinite(mask_threshold):
            raise E.InvalidInputError(f"mask_threshold: expected a finite number, got {mask_threshold!r}")
        self.client, self.info = client, client.model_info(model)
        self.model_name = self.info["name"]
        self.options = {
            "maskThreshold": float(mask_threshold),
            "maxHoleArea": float(max_hole_area),
            "maxSprinkleArea": float(max_sprinkle_area),
        }
        self._images: list[tuple[str, np.ndarray | None, tuple[int, int]]] = []
        self._is_batch = False

    def set_image(self, image: ImageSource) -> None:
        """Upload one image (any source ``load_image`` takes) unless the server already has it."""
        self.reset_predictor()
        pixels = load_image(image)
        self._images = [(self.client.upload_image(self.model_name, pixels), pixels, pixels.shape[:2])]

    def set_images(self, images: Sequence[ImageSource]) -> None:
        """Upload a batch of images; use :meth:`predict_batch` afterwards."""
        if isinstance(images, (str, bytes, np.ndarray, torch.Tensor)) or not isinstance(images, Sequence):
            raise E.InvalidInputError(f"images: expected a list of images, got {type(images).__name__}")
        if len(images) == 0:
            raise E.InvalidInputError("images: expected at least one image, got an empty list")
        self.reset_predictor()
        loaded = [load_image(img) for img in images]
        self._images = [(self.client.upload_image(self.model_name, p), p, p.shape[:2]) for p in loaded]
        self._is_batch = True

    set_image_batch = set_images

    def reset_predictor(self) -> None:
        self._images, self._is_batch = [], False

    def _require_image(self) -> None:
        if not self._images:
            raise E.PredictorStateError("no image is set: call set_image(...) or set_images(...) before predicting")

    def get_embeddings(self) -> ImageEmbeddings:
        """Download the encoder output (safetensors) of the current image(s)."""
        from safetensors.torch import load

        self._require_image()
        levels: list[list[torch.Tensor]] = []
        hws: list[tuple[int, int]] = []
        for iid, _, hw in self._images:
            tensors = load(self._call(lambda i=iid: self.client.request("GET", f"/v1/images/{i}/embeddings")))
            levels.append([tensors[f"level_{k}"] for k in range(len(tensors))])
            hws.append(hw)
        return ImageEmbeddings(levels=[torch.cat(ls) for ls in zip(*levels)], orig_hw=hws)

    def get_image_embedding(self) -> torch.Tensor:
        return self.get_embeddings().levels[-1]

    def set_embeddings(self, embeddings: ImageEmbeddings) -> None:
        """Upload embeddings (safetensors) so the server skips the encoder."""
        from safetensors.torch import save

        if not isinstance(embeddings, ImageEmbeddings):
            raise E.InvalidInputError(f"embeddings: expected ImageEmbeddings, got {type(embeddings).__name__}")
        self.reset_predictor()
        for i, hw in enumerate(embeddings.orig_hw):
            tensors = {f"level_{k}": t[i : i + 1].detach().contiguous().cpu() for k, t in enumerate(embeddings.levels)}
            data = save(tensors, metadata={"orig_hw": json.dumps([list(hw)])})
            info = self.client.request(
                "POST",
                "/v1/images/embeddings",
                params={"model": self.model_name},
                content=data,
                headers={"content-type": "application/x-safetensors"},
            )
            self._images.append((info["imageId"], None, (int(hw[0]), int(hw[1]))))
        self._is_batch = len(embeddings.orig_hw) > 1

    def _prompt(self, index: int, coords: Any, labels: Any, box: Any, mask_input: Any, normalize: bool) -> dict:
        hw = self._images[index][2]
        size = int(self.info["imageSize"])
        image_prompts(coords, labels, box, mask_input, hw, size, 4 * int(self.info["embeddingSize"]), normalize)
        labels_list = (
            None
            if labels is None
            else np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.float64)
            .astype(int)
            .tolist()
        )
        mask = (
            None
            if mask_input is None
            else pack_array(
                np.asarray(
                    mask_input.detach().cpu() if isinstance(mask_input, torch.Tensor) else mask_input, dtype=np.float32
                )
            )
        )
        return {"pointCoords": _lists(coords), "pointLabels": labels_list, "box": _lists(box), "maskInput": mask}

    def _call(self, fn: Any) -> Any:
        """Run a request; if the server forgot an image, upload its pixels again and retry once."""
        try:
            return fn()
        except RemoteError as err:
            kept = [(p, hw) for _, p, hw in self._images if p is not None]
            if not _is_unknown(err, "unknown_image") or len(kept) != len(self._images):
                raise
            self._images = [(self.client.upload_image(self.model_name, p), p, hw) for p, hw in kept]
            return fn()

    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Same arguments and outputs as :meth:`masklet.ImagePredictor.predict`."""
        self._require_image()
        if self._is_batch and len(self._images) > 1:
            raise E.PredictorStateError(
                "several images are set: use predict_batch(...), or set_image(...) for one image"
            )
        body = {
            **self._prompt(0, point_coords, point_labels, box, mask_input, normalize_coords),
            **self.options,
            "multimaskOutput": bool(multimask_output),
            "returnLogits": bool(return_logits),
            "normalizeCoords": bool(normalize_coords),
        }
        out = self._call(lambda: self.client.request("POST", f"/v1/images/{self._images[0][0]}/predict", json=body))
        return _outputs(out)

    def predict_batch(
        self,
        point_coords_batch: Sequence[Any] | None = None,
        point_labels_batch: Sequence[Any] | None = None,
        box_batch: Sequence[Any] | None = None,
        mask_input_batch: Sequence[Any] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Same arguments and outputs as :meth:`masklet.ImagePredictor.predict_batch` (one request)."""
        self._require_image()
        n = len(self._images)
        batches = (
            ("point_coords_batch", point_coords_batch),
            ("point_labels_batch", point_labels_batch),
            ("box_batch", box_batch),
            ("mask_input_batch", mask_input_batch),
        )
        for name, value in batches:
            if value is not None and len(value) != n:
                raise E.InvalidInputError(f"{name}: expected one entry per image ({n}), got {len(value)}")

        def pick(b, i):
            return None if b is None else b[i]

        prompts = [
            self._prompt(
                i,
                pick(point_coords_batch, i),
                pick(point_labels_batch, i),
                pick(box_batch, i),
                pick(mask_input_batch, i),
                normalize_coords,
            )
            for i in range(n)
        ]

        def send() -> Any:
            items = [{"imageId": iid, **p} for (iid, _, _), p in zip(self._images, prompts)]
            return self.client.request(
                "POST",
                "/v1/images/predict_batch",
                json={
                    "items": items,
                    **self.options,
                    "multimaskOutput": bool(multimask_output),
                    "returnLogits": bool(return_logits),
                    "normalizeCoords": bool(normalize_coords),
                },
            )

        results = [_outputs(r) for r in self._call(send)["results"]]
        return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]


def _outputs(out: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hw = (out["height"], out["width"])
    if out.get("maskLogits") is not None:
        masks = unpack_array(out["maskLogits"], "maskLogits")
    else:
        masks = rles_to_masks(out["masks"], out["lead"], hw)
    scores = np.asarray(out["scores"], dtype=np.float32).reshape(out["scoresShape"])
    low = unpack_array(out["lowResLogits"], "lowResLogits") if out.get("lowResLogits") else np.zeros(0, np.float32)
    return masks, scores, low


class RemoteMaskGenerator:
    """:class:`~masklet.MaskGenerator` on a server: options checked by the server at construction."""

    def __init__(
        self,
        client: Client,
        model: str | None = None,
        output_mode: str = "binary_mask",
        progress: Any = False,
        **options: Any,
    ) -> None:
        from .amg import OUTPUT_MODES

        if output_mode not in OUTPUT_MODES:
            raise E.InvalidInputError(f"output_mode: expected one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        if not (isinstance(progress, (bool, np.bool_)) or callable(progress)):
            raise E.InvalidInputError(
                f"progress: expected True, False or a callable progress(done, total), got {progress!r}"
            )
        if options.get("point_grids") is not None:
            options["point_grids"] = [np.asarray(g, dtype=np.float64).tolist() for g in options["point_grids"]]
        self.client, self.output_mode, self.progress = client, output_mode, progress
        self.model_name = client.model_info(model)["name"]
        self.options = options
        try:
            client.request("POST", f"/v1/models/{self.model_name}/automatic/check", json=options)
        except E.InvalidInputError:
            raise
        except TypeError as err:  # not JSON-serialisable option values
            raise E.InvalidInputError(f"options: {err}") from None

    def generate(self, image: ImageSource) -> list[dict[str, Any]]:
        """Same records as :meth:`masklet.MaskGenerator.generate`, in the same order."""
        pixels = load_image(image)
        iid = self.client.upload_image(self.model_name, pixels)
        records = self.client.request("POST", f"/v1/images/{iid}/automatic", json=self.options)["records"]
        for rec in records:
            if self.output_mode != "coco_rle":
                mask = rles_to_masks([rec["segmentation"]], [1], tuple(rec["segmentation"]["size"]))
                rec["segmentation"] = mask[0] if self.output_mode == "binary_mask" else encode_uncompressed_rle(mask)[0]
        if callable(self.progress):
            self.progress(1, 1)
        return records


from .client_exemplar import RemoteExemplarPredictor  # noqa: E402 (imports this module)
from .client_video import RemoteStreamTracker, RemoteVideoPredictor, RemoteVideoState  # noqa: E402 (imports this module)

__all__ += [
    "RemoteExemplarPredictor",
    "RemoteImagePredictor",
    "RemoteMaskGenerator",
    "RemoteStreamTracker",
    "RemoteVideoPredictor",
    "RemoteVideoState",
]
