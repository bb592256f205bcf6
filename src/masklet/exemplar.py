"""Segment by example: objects prompted on support images are found again on new images.

Each prompted example is decoded as SAM2 decodes a first video frame (no memory); its mask is
encoded by the memory encoder into the object's memory bank, and the mean of the image's finest
decoder features under the mask is kept as the example's prototype.

Two ways to segment a query (``query_mode``):

- ``"prototype"`` (default): each object's prototype (the mean of its memories' prototypes) is
  compared, by cosine similarity, with the query's finest features; the SAM heads decode the query
  without memory from one positive click at the most similar place, and presence is the calibrated
  peak similarity. It is training-free target-guided prompting (as PerSAM does for SAM): small SAM2
  models (masklet-nano) find far more with it than through memory attention.
- ``"memory"``: the query's features attend, through memory attention, to the object's memories
  (all given the temporal encoding of a conditioning frame; with ``object_pointers``, also the
  examples' object pointers) and the SAM heads decode the result with no prompt. Without object
  pointers and multimask output these are the semantics of Ultralytics'
  ``SAM2DynamicInteractivePredictor``, with its problems fixed: any int object ids, one bank per object (an object not prompted on a support image
gets no "absent" memory from it), cost proportional to the real number of objects, a bounded bank,
and presence reported as the sigmoid of the object score logit (a probability) rather than the
logit divided by 32.

Bank rule (per object, at most ``max_memory`` memories): prompted examples come first -- once
there are ``max_memory`` of them, a new example replaces the oldest; query results added with
``segment(..., update_memory=True)`` fill the remaining slots, the newest replacing the oldest.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidInputError, PredictorStateError
from .image import ImagePredictor
from .io import ImageSource, load_image
from .model import Sam2Model
from .model.sam2 import NO_OBJ_SCORE, SamOutput
from .transforms import preprocess, upscale_masks

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

_BANK_FORMAT = "masklet-exemplar-bank"
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


@dataclass
class _Memory:
    kind: str  # "example" or "query"
    features: torch.Tensor  # (1, C_mem, h, w)
    obj_ptr: torch.Tensor | None = None  # (1, C): the decoder's object pointer (examples only)
    prototype: torch.Tensor | None = None  # (1, C0): mean finest feature under the mask (None: empty mask)


@dataclass
class _ImageState:
    key: bytes
    hw: tuple[int, int]
    levels: list[torch.Tensor]  # (1, C, h, w) finest first
    positions: list[torch.Tensor]


@dataclass
class _Bank:
    memories: dict[int, list[_Memory]] = field(default_factory=dict)
    pos_enc: torch.Tensor | None = None  # (1, C_mem, h, w): the same for every memory


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
    _bank: _Bank

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
        if not isinstance(model, Sam2Model):
            raise InvalidInputError(
                f"model: expected a masklet Sam2Model (see masklet.load_model), got {type(model).__name__}"
            )
        if model.config.num_maskmem == 0:
            raise InvalidInputError("model: this config has no memory (num_maskmem=0) and cannot segment by example")
        if not isinstance(max_memory, int) or isinstance(max_memory, bool) or max_memory < 1:
            raise InvalidInputError(f"max_memory: expected an int >= 1 (memories kept per object), got {max_memory!r}")
        if not isinstance(mask_threshold, numbers.Real) or isinstance(mask_threshold, bool):
            raise InvalidInputError(f"mask_threshold: expected a number, got {mask_threshold!r}")
        if query_mode not in QUERY_MODES:
            raise InvalidInputError(f"query_mode: expected one of {QUERY_MODES}, got {query_mode!r}")
        self.query_mode = query_mode
        if presence_calibration is not None:
            pair = tuple(presence_calibration) if isinstance(presence_calibration, (tuple, list)) else ()
            if len(pair) != 2 or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) for v in pair
            ):
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
        self._bank = _Bank()
        self._image: _ImageState | None = None

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
        _check_obj_id(obj_id)
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
                sam = model.forward_sam_heads(self._no_memory(state), None, low * 20.0 - 10.0, high_res, False)
        else:
            prompts = self._prompts.prepare_prompts(points, labels, box, None, state.hw, True)
            if prompts.points is None or prompts.points[0].shape[0] != 1:
                raise InvalidInputError("points / box: an example is one object; give (P, 2) points and one box")
            coords, point_labels = prompts.points
            point_inputs = {"point_coords": coords.to(raw.dtype), "point_labels": point_labels}
            sam = model.forward_sam_heads(self._no_memory(state), point_inputs, None, high_res, False)
        memory = self._encode_memory(raw, sam.low_res_masks, sam.object_score_logits, from_prompt=True)
        prototype = self._prototypes(state, sam.low_res_masks)[0]
        self._store(int(obj_id), _Memory("example", memory, sam.obj_ptr, prototype))
        return self._result([int(obj_id)], sam.low_res_masks, sam.ious[:, :1], sam.object_score_logits, state.hw)

    def remove_object(self, obj_id: int) -> list[int]:
        """Forget an object and its memories; returns the remaining ids."""
        self._memories_of(obj_id)
        del self._bank.memories[int(obj_id)]
        return self.obj_ids

    def reset(self) -> None:
        """Forget every object and memory (and the cached image features)."""
        self._bank = _Bank()
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
            sam, similarity = self._decode_by_prototype(state, ids)
            result = self._result(
                ids, sam.low_res_masks, sam.ious[:, :1], sam.object_score_logits, state.hw, similarity
            )
        else:
            sam = self._decode_by_memory(state, ids)
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
                prototypes = self._prototypes(state, sam.low_res_masks[found])
                for j, i in enumerate(found):
                    self._store(ids[i], _Memory("query", memories[j : j + 1], None, prototypes[j]))
        return result

    def _decode_by_prototype(self, state: _ImageState, ids: list[int]) -> tuple[SamOutput, torch.Tensor]:
        """Decode each object without memory from a click at its prototype's most similar place;
        returns the SAM output and each object's peak cosine similarity (-1 without a prototype)."""
        model = self.model
        fine = state.levels[0][0].float()  # (C0, h0, w0)
        h0, w0 = fine.shape[-2:]
        prototypes, known = [], []
        for obj_id in ids:
            own = [m.prototype for m in self._bank.memories[obj_id] if m.prototype is not None]
            known.append(bool(own))
            prototypes.append(torch.cat(own).float().mean(0) if own else fine.new_zeros(fine.shape[0]))
        sims = F.normalize(torch.stack(prototypes), dim=1) @ F.normalize(fine.flatten(1), dim=0)  # (N, h0 * w0)
        peak, where = sims.max(dim=1)
        known_t = torch.tensor(known, device=peak.device)
        peak = torch.where(known_t, peak, torch.full_like(peak, -1.0))
        size = model.image_size
        xs = ((where % w0).float() + 0.5) * (size / w0)
        ys = ((where // w0).float() + 0.5) * (size / h0)
        n = len(ids)
        point_inputs = {
            "point_coords": torch.stack([xs, ys], dim=-1)[:, None].to(state.levels[-1].dtype),
            "point_labels": torch.ones(n, 1, dtype=torch.int32, device=peak.device),
        }
        features = self._no_memory(state).expand(n, -1, -1, -1)
        high_res = None if len(state.levels) == 1 else [f.expand(n, -1, -1, -1) for f in state.levels[:-1]]
        sam = model.forward_sam_heads(features, point_inputs, None, high_res, False)
        if not all(known):  # an object whose masks were all empty has nothing to look for
            sam.low_res_masks[~known_t] = NO_OBJ_SCORE
        return sam, peak

    def _decode_by_memory(self, state: _ImageState, ids: list[int]) -> SamOutput:
        """Memory attention over each object's memories, then the SAM heads with no prompt."""
        model = self.model
        c = model.config
        h, w = state.levels[-1].shape[-2:]
        vision = state.levels[-1].flatten(2).permute(2, 0, 1)  # (hw, 1, C)
        vision_pos = state.positions[-1].flatten(2).permute(2, 0, 1)
        pos = self._pos_enc().flatten(2).permute(2, 0, 1) + model.maskmem_tpos_enc[c.num_maskmem - 1]  # (hw, 1, Cm)
        # Objects with as many memories share one batched memory attention call.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, obj_id in enumerate(ids):
            memories = self._bank.memories[obj_id]
            pointers = sum(m.obj_ptr is not None for m in memories) if self.object_pointers else 0
            groups.setdefault((len(memories), pointers), []).append(i)
        fused = torch.empty(len(ids), c.hidden_dim, h, w, dtype=state.levels[-1].dtype, device=model.device)
        attn_dtype = model.memory_attention.norm.weight.dtype
        for (count, pointers), members in groups.items():
            batch = len(members)
            memory = torch.stack(
                [
                    torch.cat([m.features for m in self._bank.memories[ids[i]]])
                    .flatten(2)
                    .permute(0, 2, 1)
                    .flatten(0, 1)
                    for i in members
                ],
                dim=1,
            )  # (count * hw, B, Cm), memories in bank order
            memory_pos = pos.repeat(count, 1, 1).expand(-1, batch, -1)
            num_ptr_tokens = 0
            if pointers:
                tokens, tokens_pos = self._pointer_tokens([ids[i] for i in members])
                memory, memory_pos = torch.cat([memory, tokens]), torch.cat([memory_pos, tokens_pos])
                num_ptr_tokens = tokens.shape[0]
            out = model.memory_attention(
                curr=vision.to(attn_dtype),
                memory=memory.to(attn_dtype),
                curr_pos=vision_pos.to(attn_dtype),
                memory_pos=memory_pos.to(attn_dtype),
                num_obj_ptr_tokens=num_ptr_tokens,
            )
            out = out.to(fused.dtype).expand(-1, batch, -1) if out.shape[1] == 1 else out.to(fused.dtype)
            fused[members] = out.permute(1, 2, 0).reshape(batch, c.hidden_dim, h, w)
        n = len(ids)
        high_res = None if len(state.levels) == 1 else [f.expand(n, -1, -1, -1) for f in state.levels[:-1]]
        return model.forward_sam_heads(fused, None, None, high_res, self.multimask_queries)

    def _pointer_tokens(self, obj_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Object pointers of the objects' examples as memory tokens (P * split, B, C_mem), each
        placed one frame before the query (as a video's last conditioning frame)."""
        from .model.position import sine_1d

        model = self.model
        c = model.config
        ptrs = torch.stack(
            [torch.cat([m.obj_ptr for m in self._bank.memories[i] if m.obj_ptr is not None]) for i in obj_ids], dim=1
        )  # (P, B, C)
        count, batch = ptrs.shape[:2]
        if c.add_tpos_enc_to_obj_ptrs:
            tpos_dim = c.hidden_dim if c.proj_tpos_enc_in_obj_ptrs else c.mem_dim
            rel = torch.ones(count, device=ptrs.device) / max(c.max_obj_ptrs_in_encoder - 1, 1)
            pos = (
                model.obj_ptr_tpos_proj(sine_1d(rel, tpos_dim).to(model.dtype))
                .unsqueeze(1)
                .expand(-1, batch, c.mem_dim)
            )
        else:
            pos = ptrs.new_zeros(count, batch, c.mem_dim)
        if c.mem_dim < c.hidden_dim:
            split = c.hidden_dim // c.mem_dim
            ptrs = ptrs.reshape(count, batch, split, c.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            pos = pos.repeat_interleave(split, dim=0)
        return ptrs, pos

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write the memory bank to a safetensors file (memories, object pointers, ids, kinds and model shape)."""
        from safetensors.torch import save_file

        if not self._bank.memories:
            raise PredictorStateError("the memory bank is empty: nothing to save")
        tensors = {"pos_enc": self._pos_enc().detach().float().contiguous().cpu()}
        kinds: dict[str, list[str]] = {}
        for obj_id, memories in self._bank.memories.items():
            kinds[str(obj_id)] = [m.kind for m in memories]
            for k, m in enumerate(memories):
                tensors[f"obj{obj_id}.{k}"] = m.features.detach().float().contiguous().cpu()
                if m.obj_ptr is not None:
                    tensors[f"obj{obj_id}.{k}.ptr"] = m.obj_ptr.detach().float().contiguous().cpu()
                if m.prototype is not None:
                    tensors[f"obj{obj_id}.{k}.proto"] = m.prototype.detach().float().contiguous().cpu()
        meta = {
            "format": _BANK_FORMAT,
            "version": "2",
            "objects": json.dumps(kinds),
            "model": json.dumps(self._shape()),
        }
        save_file(tensors, os.fspath(path), metadata=meta)

    def load(self, path: str | os.PathLike) -> None:
        """Replace the memory bank with one :meth:`save` wrote (for a model of the same shape)."""
        from safetensors import safe_open

        try:
            handle = safe_open(os.fspath(path), framework="pt", device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise InvalidInputError(f"{path}: not a readable safetensors file ({err})") from None
        with handle as f:
            meta = f.metadata() or {}
            if meta.get("format") != _BANK_FORMAT:
                raise InvalidInputError(f"{path}: not a masklet exemplar bank (format {meta.get('format')!r})")
            shape = json.loads(meta["model"])
            if shape != self._shape():
                raise InvalidInputError(
                    f"{path}: the bank was made with a model of shape {shape}, this one is {self._shape()}"
                )
            kinds = json.loads(meta["objects"])
            names = set(f.keys())
            device, dtype = self.model.device, self.model.dtype

            def optional(key: str, k: int, suffix: str) -> torch.Tensor | None:
                name = f"obj{key}.{k}.{suffix}"  # version 1 banks have no prototypes
                return f.get_tensor(name).to(device, dtype) if name in names else None

            bank = _Bank(pos_enc=f.get_tensor("pos_enc").to(device, dtype))
            for key, object_kinds in kinds.items():
                if len(object_kinds) > self.max_memory:
                    raise InvalidInputError(
                        f"{path}: object {key} has {len(object_kinds)} memories, more than max_memory={self.max_memory}"
                    )
                bank.memories[int(key)] = [
                    _Memory(
                        kind,
                        f.get_tensor(f"obj{key}.{k}").to(device, dtype),
                        optional(key, k, "ptr"),
                        optional(key, k, "proto"),
                    )
                    for k, kind in enumerate(object_kinds)
                ]
        self._bank = bank

    # ------------------------------------------------------------------ internals

    def _pos_enc(self) -> torch.Tensor:
        """The bank's memory position encoding (set with its first memory)."""
        if self._bank.pos_enc is None:
            raise PredictorStateError("the memory bank is empty: add an example first")
        return self._bank.pos_enc

    def _shape(self) -> dict[str, int]:
        c = self.model.config
        return {
            "image_size": c.image_size,
            "mem_dim": c.mem_dim,
            "hidden_dim": c.hidden_dim,
            "embedding_size": c.embedding_size,
        }

    def _memories_of(self, obj_id: Any) -> list[_Memory]:
        _check_obj_id(obj_id)
        if int(obj_id) not in self._bank.memories:
            raise InvalidInputError(f"obj_id: unknown object {obj_id!r}; known objects: {self.obj_ids}")
        return self._bank.memories[int(obj_id)]

    def _store(self, obj_id: int, memory: _Memory) -> None:
        """Add a memory under the bank rule (see the module doc)."""
        memories = self._bank.memories.setdefault(obj_id, [])
        examples = [m for m in memories if m.kind == "example"]
        queries = [m for m in memories if m.kind == "query"]
        if memory.kind == "example":
            examples = (examples + [memory])[-self.max_memory :]
        elif len(examples) < self.max_memory:
            queries.append(memory)
        queries = queries[len(queries) - (self.max_memory - len(examples)) :] if len(examples) < self.max_memory else []
        memories[:] = examples + queries

    def _encode(self, image: ImageSource) -> _ImageState:
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
        self._image = _ImageState(key, tuple(pixels.shape[:2]), encoded.levels, encoded.positions)
        return self._image

    def _no_memory(self, state: _ImageState) -> torch.Tensor:
        """The features of an image decoded without memory, as SAM2 decodes a first frame."""
        raw = state.levels[-1]
        h, w = raw.shape[-2:]
        seq = raw.flatten(2).permute(2, 0, 1)
        pos = state.positions[-1].flatten(2).permute(2, 0, 1)
        return self.model.condition_on_memory(0, True, seq, pos, (h, w), None, None)  # type: ignore[arg-type]  # no memory: the model's no-memory path takes None

    def _encode_memory(
        self, raw: torch.Tensor, low_res: torch.Tensor, object_logits: torch.Tensor, from_prompt: bool
    ) -> torch.Tensor:
        size = self.model.image_size
        high_res = F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)
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

    def _prototypes(self, state: _ImageState, low_res: torch.Tensor) -> list[torch.Tensor | None]:
        """Mean finest-level feature under each (B, 1, h, w) mask logit map > 0, as (1, C0); None if empty."""
        fine = state.levels[0]
        inside = F.interpolate(low_res.float(), size=fine.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0
        out: list[torch.Tensor | None] = []
        for m in inside:
            count = int(m.sum())
            out.append(None if count == 0 else (fine[0].float() * m).sum(dim=(1, 2))[None].div(count).to(fine.dtype))
        return out


def similarity_evidence(similarity: torch.Tensor) -> torch.Tensor:
    """-log(1 - s) of a peak cosine similarity: the value "prototype" mode calibrates into presence."""
    return -torch.log((1.0 - similarity).clamp(min=1e-6))


def _check_obj_id(obj_id: Any) -> None:
    if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool):
        raise InvalidInputError(f"obj_id: expected an int, got {obj_id!r}")
