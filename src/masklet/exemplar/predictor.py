""":class:`ExemplarPredictor` (segment by example, see :mod:`masklet.exemplar`) and its result."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_obj_id, check_sam2_model, is_int, is_real
from ..errors import InvalidInputError, PredictorStateError
from ..image import ImagePredictor
from ..io import ImageSource, load_image
from ..model import Sam2Model
from ..transforms import preprocess, upscale_masks
from .bank import Bank, Memory
from .decode import ImageState, decode_by_memory, decode_by_prototype, no_memory, prototypes

__all__ = [
    "NANO_PRESENCE_CALIBRATION",
    "PROTOTYPE_PRESENCE_CALIBRATION",
    "QUERY_MODES",
    "ExemplarPredictor",
    "ExemplarResult",
    "similarity_evidence",
]

QUERY_MODES = ("prototype", "memory")

# (scale, bias) for masklet-nano in "memory" mode: logistic regression of "the object is on the
# query" on its object score logit, fit on generated scenes (make_example_set seeds 100-103, 1-3
# objects, 480 object-queries)
NANO_PRESENCE_CALIBRATION = (0.479, -1.828)

# (scale, bias) of "prototype" mode's default presence, sigmoid(scale * -log(1 - similarity) + bias)
# of the peak cosine similarity (the log spreads out the values near 1): a logistic fit for masklet-nano on generated scenes (make_example_set seeds
# 100-107, 1-3 objects, 960 object-queries; `python benchmarks/exemplar.py --fit`), not the measured seeds 0-3
PROTOTYPE_PRESENCE_CALIBRATION = (1.64, -5.203)

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@dataclass
class ExemplarResult:
    """Objects found on a query image, in the order they were first added."""

    obj_ids: list[int]
    masks: torch.Tensor  # (N, H, W) bool at the image size
    mask_logits: torch.Tensor  # (N, H, W) float at the image size
    low_res_logits: torch.Tensor  # (N, 1, h, w) float, the decoder's output (-1024 where absent)
    scores: torch.Tensor  # (N,) predicted IoU of each mask
    object_score_logits: torch.Tensor  # (N,)
    presence: torch.Tensor  # (N,) probability the object is on the image (see ExemplarPredictor)
    similarity: torch.Tensor | None = None  # (N,) "prototype" mode: peak cosine similarity to the prototype

    def __len__(self) -> int:
        return len(self.obj_ids)


class ExemplarPredictor:
    """Segment objects on new images from a memory of prompted examples (see the module doc).

    ``max_memory``: memories kept per object. ``query_mode``: ``"prototype"`` (default) or
    ``"memory"`` (see the module doc). In "prototype" mode queries are decoded with a single mask
    (the click is one point, but the multimask choice did worse on held-out scenes) and presence is
    ``sigmoid(scale * -log(1 - similarity) + bias)`` with ``presence_calibration`` (default
    ``PROTOTYPE_PRESENCE_CALIBRATION``, fit for masklet-nano); masks are not emptied for absent
    objects, so read ``presence``. The other options are for "memory" mode:
    ``object_pointers``: queries also attend to the
    examples' object pointers (placed one frame before the query); SAM2 models are trained to track
    with them and small ones (masklet-nano) find little without. ``multimask_queries`` (default: as
    SAM2 decodes a tracked frame, from the config) picks the best of the decoder's three masks by
    predicted IoU. ``binarize_examples`` (default: the config's
    ``binarize_mask_from_pts_for_mem_enc``) encodes example masks as hard 0/1. With
    ``query_mode="memory", object_pointers=False, multimask_queries=False`` the masks are those of Ultralytics'
    ``SAM2DynamicInteractivePredictor`` when every object is prompted on every support image.
    ``presence_calibration`` ``(scale, bias)`` in "memory" mode: presence is ``sigmoid(scale * logit + bias)``
    instead of the sigmoid of the model's logit, for a model whose object scores are not
    calibrated on the images at hand (fit them by logistic regression on labelled queries; the
    README gives masklet-nano's, ``NANO_PRESENCE_CALIBRATION``). Masks do not depend on it.
    """

    model: Sam2Model
    max_memory: int
    query_mode: str
    presence_calibration: tuple[float, float] | None
    object_pointers: bool
    mask_threshold: float
    binarize_examples: bool | None
    multimask_queries: bool
    _prompts: ImagePredictor
    _bank: Bank

    def __init__(
        self,
        model: Sam2Model,
        max_memory: int = 8,
        *,
        query_mode: str = "prototype",
        object_pointers: bool = True,
        multimask_queries: bool | None = None,
        binarize_examples: bool | None = None,
        mask_threshold: float = 0.0,
        presence_calibration: tuple[float, float] | None = None,
    ) -> None:
        check_sam2_model(model, memory_for="segment by example")
        if not is_int(max_memory, numpy=False) or max_memory < 1:
            raise InvalidInputError(f"max_memory: expected an int >= 1 (memories kept per object), got {max_memory!r}")
        if not is_real(mask_threshold):
            raise InvalidInputError(f"mask_threshold: expected a number, got {mask_threshold!r}")
        if query_mode not in QUERY_MODES:
            raise InvalidInputError(f"query_mode: expected one of {QUERY_MODES}, got {query_mode!r}")
        self.query_mode = query_mode
        if presence_calibration is not None:
            pair = tuple(presence_calibration) if isinstance(presence_calibration, (tuple, list)) else ()
            if len(pair) != 2 or not all(is_real(v) and np.isfinite(v) for v in pair):
                raise InvalidInputError(
                    f"presence_calibration: expected (scale, bias), two finite numbers, got {presence_calibration!r}"
                )
            presence_calibration = (float(pair[0]), float(pair[1]))
        elif query_mode == "prototype":
            presence_calibration = PROTOTYPE_PRESENCE_CALIBRATION
        self.presence_calibration = presence_calibration
        self.model = model.eval()
        self.max_memory = max_memory
        self.object_pointers = bool(object_pointers) and model.config.use_obj_ptrs_in_encoder
        self.mask_threshold = float(mask_threshold)
        self.binarize_examples = binarize_examples
        c = model.config
        if multimask_queries is None:  # as SAM2 decodes a tracked frame (no clicks)
            multimask_queries = (
                c.multimask_output_in_sam and c.multimask_output_for_tracking and c.multimask_min_pt_num <= 0
            )
        self.multimask_queries = bool(multimask_queries)
        self._prompts = ImagePredictor(model)  # the shared prompt validation
        self._bank = Bank()
        self._image: ImageState | None = None

    @property
    def bank(self) -> Bank:
        """The memory bank (replaced by :meth:`reset` and :meth:`load`): what a server's byte budget counts."""
        return self._bank

    @property
    def obj_ids(self) -> list[int]:
        """Ids of the objects in the bank, in the order they were first added."""
        return list(self._bank.memories)

    def memory_kinds(self, obj_id: int) -> list[str]:
        """The kinds ("example" / "query") of an object's memories, oldest first within each kind."""
        return [m.kind for m in self._memories_of(obj_id)]

    # ------------------------------------------------------------------ examples

    @torch.inference_mode()
    def add_example(
        self,
        image: ImageSource,
        obj_id: int,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        mask: Any = None,
    ) -> ExemplarResult:
        """Prompt one object on a support image (clicks with labels, a box, both, or a binary mask
        (H, W) at the image size) and add its mask to the object's memory; returns that mask."""
        check_obj_id(obj_id)
        if mask is not None and (points is not None or labels is not None or box is not None):
            raise InvalidInputError("give a mask alone, or points with labels and/or a box")
        if mask is None and points is None and labels is None and box is None:
            raise InvalidInputError("give points with labels, a box, or a mask for the example")
        state = self._encode(image)
        model = self.model
        raw = state.levels[-1]
        high_res = state.levels[:-1] or None
        if mask is not None:
            binary = self._mask_tensor(mask, state.hw)
            if model.config.use_mask_input_as_output_without_sam:
                sam = model.use_mask_as_output(raw, high_res, binary)
            else:
                low = F.interpolate(
                    binary,
                    size=model.sam_prompt_encoder.mask_input_size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
                sam = model.forward_sam_heads(no_memory(model, state), None, low * 20.0 - 10.0, high_res, False)
        else:
            prompts = self._prompts.prepare_prompts(points, labels, box, None, state.hw, True)
            if prompts.points is None or prompts.points[0].shape[0] != 1:
                raise InvalidInputError("points / box: an example is one object; give (P, 2) points and one box")
            coords, point_labels = prompts.points
            point_inputs = {"point_coords": coords.to(raw.dtype), "point_labels": point_labels}
            sam = model.forward_sam_heads(no_memory(model, state), point_inputs, None, high_res, False)
        memory = self._encode_memory(raw, sam.low_res_masks, sam.object_score_logits, from_prompt=True)
        prototype = prototypes(state, sam.low_res_masks)[0]
        self._bank.store(int(obj_id), Memory("example", memory, sam.obj_ptr, prototype), self.max_memory)
        return self._result([int(obj_id)], sam.low_res_masks, sam.ious[:, :1], sam.object_score_logits, state.hw)

    def remove_object(self, obj_id: int) -> list[int]:
        """Forget an object and its memories; returns the remaining ids."""
        self._memories_of(obj_id)
        del self._bank.memories[int(obj_id)]
        return self.obj_ids

    def reset(self) -> None:
        """Forget every object and memory (and the cached image features)."""
        self._bank = Bank()
        self._image = None

    # ------------------------------------------------------------------- queries

    @torch.inference_mode()
    def segment(self, image: ImageSource, update_memory: bool = False) -> ExemplarResult:
        """Find every object of the bank on ``image``; with ``update_memory``, each object found
        (presence > 0.5, calibrated when asked) adds this result to its memory as a query memory."""
        if not self._bank.memories:
            raise PredictorStateError("no objects in the memory: add_example(...) first")
        state = self._encode(image)
        ids = self.obj_ids
        if self.query_mode == "prototype":
            sam, similarity = decode_by_prototype(self.model, self._bank, state, ids)
            result = self._result(
                ids, sam.low_res_masks, sam.ious[:, :1], sam.object_score_logits, state.hw, similarity
            )
        else:
            sam = decode_by_memory(self.model, self._bank, state, ids, self.object_pointers, self.multimask_queries)
            result = self._result(
                ids, sam.low_res_masks, sam.ious.max(dim=1, keepdim=True).values, sam.object_score_logits, state.hw
            )
        n = len(ids)
        if update_memory:
            found = [i for i in range(n) if float(result.presence[i]) > 0.5]
            if found:
                raw = state.levels[-1].expand(len(found), -1, -1, -1)
                memories = self._encode_memory(
                    raw, sam.low_res_masks[found], sam.object_score_logits[found], from_prompt=False
                )
                found_prototypes = prototypes(state, sam.low_res_masks[found])
                for j, i in enumerate(found):
                    self._bank.store(
                        ids[i], Memory("query", memories[j : j + 1], None, found_prototypes[j]), self.max_memory
                    )
        return result

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write the memory bank to a safetensors file (memories, object pointers, ids, kinds and model shape)."""
        self._bank.save(path, self._shape())

    def load(self, path: str | os.PathLike) -> None:
        """Replace the memory bank with one :meth:`save` wrote (for a model of the same shape)."""
        self._bank = Bank.load(path, self._shape(), self.max_memory, self.model.device, self.model.dtype)

    # ------------------------------------------------------------------ internals

    def _shape(self) -> dict[str, int]:
        c = self.model.config
        return {
            "image_size": c.image_size,
            "mem_dim": c.mem_dim,
            "hidden_dim": c.hidden_dim,
            "embedding_size": c.embedding_size,
        }

    def _memories_of(self, obj_id: Any) -> list[Memory]:
        check_obj_id(obj_id)
        if int(obj_id) not in self._bank.memories:
            raise InvalidInputError(f"obj_id: unknown object {obj_id!r}; known objects: {self.obj_ids}")
        return self._bank.memories[int(obj_id)]

    def _encode(self, image: ImageSource) -> ImageState:
        """Features of an image, reusing the last image's when the pixels are the same."""
        pixels = load_image(image)
        key = hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=16).digest() + bytes(
            str(pixels.shape), "ascii"
        )
        if self._image is not None and self._image.key == key:
            return self._image
        model = self.model
        batch = preprocess(pixels, model.image_size, model.device, model.encoder_dtype)
        encoded = model.encode_image(batch)
        self._image = ImageState(key, tuple(pixels.shape[:2]), encoded.levels, encoded.positions)
        return self._image

    def _encode_memory(
        self, raw: torch.Tensor, low_res: torch.Tensor, object_logits: torch.Tensor, from_prompt: bool
    ) -> torch.Tensor:
        size = self.model.image_size
        high_res = upscale_masks(low_res, size)
        features, pos_enc = self.model.encode_memory(
            raw,
            high_res.to(raw.dtype),
            object_logits,
            is_mask_from_pts=from_prompt,
            binarize_mask_from_pts=self.binarize_examples,
            non_overlap=False,
        )
        if self._bank.pos_enc is None:
            self._bank.pos_enc = pos_enc[:1].clone()
        return features

    def _mask_tensor(self, mask: Any, hw: tuple[int, int]) -> torch.Tensor:
        m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        if (
            m.ndim != 2
            or m.is_complex()
            or not (m.dtype == torch.bool or m.dtype.is_floating_point or m.dtype in _INT_DTYPES)
        ):
            raise InvalidInputError(
                f"mask: expected a 2-D (H, W) binary mask (bool or 0/1 numbers), got {m.dtype} of shape {tuple(m.shape)}"
            )
        if tuple(m.shape) != hw:
            raise InvalidInputError(f"mask: expected the image size {hw} (H, W), got {tuple(m.shape)}")
        size = self.model.image_size
        m = m.to(self.model.device).float()[None, None]
        if m.shape[-2:] != (size, size):
            m = (
                F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True) >= 0.5
            ).float()
        return m

    def _result(
        self,
        ids: list[int],
        low_res: torch.Tensor,
        ious: torch.Tensor,
        object_logits: torch.Tensor,
        hw: tuple[int, int],
        similarity: torch.Tensor | None = None,
    ) -> ExemplarResult:
        low_res = low_res.float()
        logits = upscale_masks(low_res, hw)[:, 0]
        scores = object_logits.float().reshape(-1)
        similarity = None if similarity is None else similarity.float().reshape(-1)
        return ExemplarResult(
            obj_ids=list(ids),
            masks=logits > self.mask_threshold,
            mask_logits=logits,
            low_res_logits=low_res,
            scores=ious.float().reshape(-1),
            object_score_logits=scores,
            presence=self._presence(scores if similarity is None else similarity_evidence(similarity)),
            similarity=similarity,
        )

    def _presence(self, evidence: torch.Tensor) -> torch.Tensor:
        """Sigmoid of the (calibrated) evidence: the object score logit, or the peak similarity."""
        if self.presence_calibration is None:
            return torch.sigmoid(evidence)
        scale, bias = self.presence_calibration
        return torch.sigmoid(scale * evidence + bias)


def similarity_evidence(similarity: torch.Tensor) -> torch.Tensor:
    """-log(1 - s) of a peak cosine similarity: the value "prototype" mode calibrates into presence."""
    return -torch.log((1.0 - similarity).clamp(min=1e-6))
