"""Prompt requests on cached images, checked on arrival and decoded together on the worker.

:func:`prepare_job` runs in the request handler: it checks the prompts and options with the
predictor's own checks, so a bad request is its 4xx and never enters a batch.
:class:`PromptDecoder` is the prompt batcher's batch function: the jobs go through
:func:`masklet.decode.decode_call` (one mask-decoder call for up to ``max_objects`` rows, whatever
their prompts), then each job is finished by ``ImagePredictor.postprocess`` with its own
threshold and clean-up options, as ``ImagePredictor.predict`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..decode import DecodedSet, PromptSet, decode_call, plan_calls
from ..errors import PredictorStateError
from ..image import ImageEmbeddings, ImagePredictor
from ..precision import inference
from ..prompts import Prompts, image_prompts
from .codec import masks_to_rles, pack_array, unpack_array
from .metrics import Metrics
from .pool import Loaded
from .schemas import ImagePrompt, PackedArray, PredictOptions, PredictResponse


@dataclass
class PromptJob:
    """One checked prompt request: its image, CPU prompts, predictor and options."""

    image_id: str
    embeddings: ImageEmbeddings
    prompts: Prompts
    predictor: ImagePredictor  # carries the threshold / clean-up options; no image set
    opts: PredictOptions


def prepare_job(
    loaded: Loaded, image_id: str, emb: ImageEmbeddings, prompt: ImagePrompt, opts: PredictOptions
) -> PromptJob:
    """Check one request's prompts and options (masklet errors -> its 4xx) into a job for the batcher."""
    if len(emb.orig_hw) != 1:
        raise PredictorStateError(f"image {image_id}: holds {len(emb.orig_hw)} images; prompts need exactly one")
    predictor = ImagePredictor(loaded.model, opts.mask_threshold, opts.max_hole_area, opts.max_sprinkle_area)
    mask_input = None if prompt.mask_input is None else unpack_array(prompt.mask_input.model_dump(), "maskInput")
    prompts = image_prompts(
        prompt.point_coords,
        prompt.point_labels,
        prompt.box,
        mask_input,
        emb.orig_hw[0],
        loaded.model.image_size,
        4 * loaded.model.config.embedding_size,
        opts.normalize_coords,
    )
    return PromptJob(image_id, emb, prompts, predictor, opts)


def respond(
    image_id: str, hw: tuple[int, int], masks: np.ndarray, scores: np.ndarray, low: np.ndarray, opts: PredictOptions
) -> PredictResponse:
    """The response body of one predict call from its numpy outputs (object axis already squeezed)."""
    h, w = hw
    out = PredictResponse(
        image_id=image_id,
        lead=list(masks.shape[:-2]),
        height=h,
        width=w,
        scores=scores.astype(np.float32).reshape(-1).tolist(),
        scores_shape=list(scores.shape),
    )
    if opts.return_logits:
        out.mask_logits = PackedArray(**pack_array(masks))
    else:
        out.masks = masks_to_rles(masks)
    if opts.low_res_logits:
        out.low_res_logits = PackedArray(**pack_array(low))
    return out


class PromptDecoder:
    """The batch function of prompt jobs: one response (or that job's own exception) per job.

    Counts its mask-decoder calls and their rows in ``metrics``; ``max_objects`` caps the rows
    (objects) of one decoder call, which bounds its memory."""

    def __init__(self, metrics: Metrics, max_objects: int = 64) -> None:
        if max_objects < 1:
            raise ValueError(f"batch_max_objects: expected >= 1, got {max_objects}")
        self.metrics, self.max_objects = metrics, int(max_objects)

    def __call__(self, loaded: Loaded, jobs: list[PromptJob]) -> list[PredictResponse | Exception]:
        """On the model's worker: decode ``jobs`` together, then finish each on its own."""
        sets = [_prompt_set(loaded, job) for job in jobs]
        decoded: list[DecodedSet | Exception]
        try:
            decoded = list(self._decode(loaded, sets))
        except Exception:  # isolate the failing job: decode one set at a time
            decoded = []
            for s in sets:
                try:
                    decoded.extend(self._decode(loaded, [s]))
                except Exception as err:
                    decoded.append(err)
        results: list[PredictResponse | Exception] = []
        for job, d in zip(jobs, decoded):
            try:
                results.append(d if isinstance(d, Exception) else _finish(job, d))
            except Exception as err:
                results.append(err)
        return results

    def _decode(self, loaded: Loaded, sets: Sequence[PromptSet]) -> list[DecodedSet]:
        """:func:`masklet.decode.decode_sets`, counting each decoder call and its rows."""
        out: list[DecodedSet] = []
        with inference():
            for call in plan_calls(sets, self.max_objects):
                out.extend(decode_call(loaded.model, [sets[i] for i in call]))
                self.metrics.decoder_calls.labels(loaded.name).inc()
                self.metrics.decoder_rows.labels(loaded.name).observe(sum(sets[i].objects for i in call))
        return out


def _squeeze(x: np.ndarray) -> np.ndarray:
    """Drop the object axis of a single object, as ``ImagePredictor.predict`` does."""
    return x[0] if x.shape[0] == 1 else x


def _prompt_set(loaded: Loaded, job: PromptJob) -> PromptSet:
    model = loaded.model
    levels = [t.to(device=model.device, dtype=model.dtype) for t in job.embeddings.levels]
    prompts = job.prompts.to(model.device)
    return PromptSet(levels, prompts.points, prompts.mask, bool(job.opts.multimask_output))


def _finish(job: PromptJob, decoded: DecodedSet) -> PredictResponse:
    hw = job.embeddings.orig_hw[0]
    masks, scores, low = job.predictor.postprocess(decoded.low_res, decoded.ious, hw, job.opts.return_logits)
    return respond(job.image_id, hw, _squeeze(masks), _squeeze(scores), _squeeze(low), job.opts)
