"""Batch concurrent prompt requests for one model into one model call on its device worker.

Every request queues its job, then submits one drain call to the model's single worker thread
(the pool's FIFO). A drain takes up to ``max_batch`` queued jobs of its model and batch function
and runs them together, so requests that arrived while the worker was busy share the next call
(batching where it pays: it adds no wait, and forms batches exactly when requests queue up); a
job is finished by its own drain or an earlier one. With ``window_ms`` > 0 a drain that finds
fewer than ``max_batch`` jobs also waits up to that long on the worker for more (for devices where
a bigger batch costs little). ``max_batch`` 1 turns batching off.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from .metrics import Metrics
from .pool import Loaded, ModelPool

#: Runs on the worker: the payloads of one batch -> one result or exception per payload, in order.
BatchFn = Callable[[Loaded, list[Any]], Sequence[Any]]
_Key = tuple[str, BatchFn]


@dataclass(eq=False)
class _Job:
    payload: Any
    future: Future[Any] = field(default_factory=Future)


class PromptBatcher:
    """Gathers jobs per (model, batch function) and runs them in batches of at most ``max_batch``."""

    def __init__(self, pool: ModelPool, metrics: Metrics, max_batch: int = 8, window_ms: float = 0.0) -> None:
        if max_batch < 1:
            raise ValueError(f"batch_max: expected >= 1 (1 turns batching off), got {max_batch}")
        if not window_ms >= 0:  # also refuses NaN
            raise ValueError(f"batch_window_ms: expected >= 0 (0: never wait), got {window_ms}")
        self.pool, self.metrics = pool, metrics
        self.max_batch, self.window_s = int(max_batch), float(window_ms) / 1000.0
        self._queues: dict[_Key, deque[_Job]] = {}
        self._cond = threading.Condition()

    async def submit(self, loaded: Loaded, payload: Any, run_batch: BatchFn) -> Any:
        """Queue ``payload`` and return its result (or raise its exception) once a batch ran it.

        ``run_batch`` must be one long-lived object per kind of job: jobs batch together only
        with jobs of the same model and the same ``run_batch``."""
        key: _Key = (loaded.name, run_batch)
        job = _Job(payload)
        with self._cond:
            self._queues.setdefault(key, deque()).append(job)
            self._cond.notify_all()
        try:
            await self.pool.run(loaded, self._drain, loaded, key)
        except BaseException:  # the request went away (cancelled) or the worker is gone: unqueue its job
            self._drop(key, job)
            raise
        return job.future.result()  # done: by this drain or an earlier one of the same key

    def _drop(self, key: _Key, job: _Job) -> None:
        """Forget a job whose request went away before a drain took it (a taken one just finishes)."""
        with self._cond:
            queue = self._queues.get(key)
            if queue is not None and job in queue:
                queue.remove(job)
        job.future.cancel()

    def _take(self, key: _Key) -> list[_Job]:
        """Up to ``max_batch`` queued jobs of ``key`` (waiting up to the window for a full batch)."""
        with self._cond:
            queue = self._queues[key]
            if self.window_s > 0 and 0 < len(queue) < self.max_batch:
                start = time.perf_counter()
                self._cond.wait_for(lambda: len(queue) >= self.max_batch, timeout=self.window_s)
                self.metrics.batch_wait.labels(key[0]).observe(time.perf_counter() - start)
            jobs = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
        return [j for j in jobs if j.future.set_running_or_notify_cancel()]

    def _drain(self, loaded: Loaded, key: _Key) -> None:
        """On the worker: run up to ``max_batch`` queued jobs of ``key`` in one batch call."""
        jobs = self._take(key)
        if not jobs:
            return  # an earlier drain took this request's job
        self.metrics.prompt_batch.labels(loaded.name).observe(len(jobs))
        if len(jobs) > 1:
            self.metrics.batched_calls.labels(loaded.name).inc()
        try:
            results = list(key[1](loaded, [j.payload for j in jobs]))
        except Exception as err:  # every job of the batch hears it (a real server fault)
            for j in jobs:
                j.future.set_exception(err)
            return
        if len(results) != len(jobs):
            fault = RuntimeError(f"batch function gave {len(results)} results for {len(jobs)} jobs")
            results = [fault] * len(jobs)
        for j, result in zip(jobs, results):
            if isinstance(result, BaseException):
                j.future.set_exception(result)
            else:
                j.future.set_result(result)
