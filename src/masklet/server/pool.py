"""The model pool: each model loaded once, one worker thread per device running one call at a time."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..image import ImagePredictor
from ..model import Sam2Model
from .errors import ApiError
from .metrics import Metrics

T = TypeVar("T")
log = logging.getLogger("masklet.server")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Loaded:
    """One served model with the predictor its image requests share (used on its worker only)."""

    name: str
    model: Sam2Model
    image_predictor: ImagePredictor


class ModelPool:
    """Load models in the background; run model work on the device's single worker thread."""

    def __init__(self, names: list[str], device: str, dtype: str, metrics: Metrics) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.names, self.device, self.dtype, self.metrics = list(names), device, _DTYPES[dtype], metrics
        self.models: dict[str, Loaded] = {}
        self.status: dict[str, str] = {n: "LOADING" for n in self.names}
        self.load_error: str | None = None
        self._workers: dict[str, ThreadPoolExecutor] = {}
        self._loader: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return len(self.models) == len(self.names)

    def start_loading(self) -> None:
        """Load every model on a background thread; readiness flips when all are loaded."""
        self._loader = threading.Thread(target=self._load_all, name="masklet-loader", daemon=True)
        self._loader.start()

    def _load_all(self) -> None:
        from ..checkpoints import load_model

        for name in self.names:
            try:
                model = load_model(name, device=self.device, dtype=self.dtype)
                self.models[name] = Loaded(name, model, ImagePredictor(model))
                self.status[name] = "RUNNING"
            except Exception as err:  # reported by /ready, never a crash
                log.exception("loading model %s failed", name)
                self.status[name], self.load_error = "FAILED", f"{name}: {err}"

    def get(self, name: str | None) -> Loaded:
        """The loaded model ``name`` (default: the first), or a 503 / 404 envelope."""
        if name is None:
            name = self.names[0]
        if name not in self.status:
            raise ApiError(404, "unknown_model", f"model: unknown model {name!r}; served models: {self.names}")
        if name not in self.models:
            raise ApiError(503, "not_ready", f"model {name!r} is {self.status[name].lower()}", {"Retry-After": "2"})
        return self.models[name]

    def _worker(self, model: Sam2Model) -> ThreadPoolExecutor:
        key = str(model.device)
        if key not in self._workers:
            self._workers[key] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"masklet-{key}")
        return self._workers[key]

    async def run(self, loaded: Loaded, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model's device worker, leaving the event loop free."""
        device = str(loaded.model.device)

        def timed() -> T:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.metrics.model_seconds.labels(device).observe(time.perf_counter() - start)

        pending = self.metrics.model_queue.labels(device)  # until the call ends or is dropped unstarted
        pending.inc()
        future = self._worker(loaded.model).submit(timed)
        future.add_done_callback(lambda _: pending.dec())
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Finish queued work and stop the workers."""
        for worker in self._workers.values():
            worker.shutdown(wait=True, cancel_futures=False)
