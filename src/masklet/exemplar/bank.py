"""The exemplar memory bank: each object's memories under the bank rule, saved to and read from safetensors."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..errors import InvalidInputError, PredictorStateError

BANK_FORMAT = "masklet-exemplar-bank"


@dataclass
class Memory:
    """One memory of an object: encoded mask features, and what the example adds to them."""

    kind: str  # "example" or "query"
    features: torch.Tensor  # (1, C_mem, h, w)
    obj_ptr: torch.Tensor | None = None  # (1, C): the decoder's object pointer (examples only)
    prototype: torch.Tensor | None = None  # (1, C0): mean finest feature under the mask (None: empty mask)


@dataclass
class Bank:
    """Memories per object id (in the order the objects were first added) and their position encoding."""

    memories: dict[int, list[Memory]] = field(default_factory=dict)
    pos_enc: torch.Tensor | None = None  # (1, C_mem, h, w): the same for every memory

    def position_encoding(self) -> torch.Tensor:
        """The bank's memory position encoding (set with its first memory)."""
        if self.pos_enc is None:
            raise PredictorStateError("the memory bank is empty: add an example first")
        return self.pos_enc

    def store(self, obj_id: int, memory: Memory, max_memory: int) -> None:
        """Add a memory under the bank rule (see :mod:`masklet.exemplar`): examples first, the oldest
        example replaced once there are ``max_memory``; query memories fill the free slots, newest kept."""
        memories = self.memories.setdefault(obj_id, [])
        examples = [m for m in memories if m.kind == "example"]
        queries = [m for m in memories if m.kind == "query"]
        if memory.kind == "example":
            examples = (examples + [memory])[-max_memory:]
        elif len(examples) < max_memory:
            queries.append(memory)
        queries = queries[len(queries) - (max_memory - len(examples)) :] if len(examples) < max_memory else []
        memories[:] = examples + queries

    def save(self, path: str | os.PathLike, shape: dict[str, int]) -> None:
        """Write the bank to a safetensors file (memories, object pointers, ids, kinds and the model ``shape``)."""
        from safetensors.torch import save_file

        if not self.memories:
            raise PredictorStateError("the memory bank is empty: nothing to save")
        tensors = {"pos_enc": self.position_encoding().detach().float().contiguous().cpu()}
        kinds: dict[str, list[str]] = {}
        for obj_id, memories in self.memories.items():
            kinds[str(obj_id)] = [m.kind for m in memories]
            for k, m in enumerate(memories):
                tensors[f"obj{obj_id}.{k}"] = m.features.detach().float().contiguous().cpu()
                if m.obj_ptr is not None:
                    tensors[f"obj{obj_id}.{k}.ptr"] = m.obj_ptr.detach().float().contiguous().cpu()
                if m.prototype is not None:
                    tensors[f"obj{obj_id}.{k}.proto"] = m.prototype.detach().float().contiguous().cpu()
        meta = {
            "format": BANK_FORMAT,
            "version": "2",
            "objects": json.dumps(kinds),
            "model": json.dumps(shape),
        }
        save_file(tensors, os.fspath(path), metadata=meta)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        shape: dict[str, int],
        max_memory: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> Bank:
        """A bank :meth:`save` wrote, for a model of this ``shape``, on ``device`` in ``dtype``."""
        from safetensors import safe_open

        try:
            handle = safe_open(os.fspath(path), framework="pt", device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise InvalidInputError(f"{path}: not a readable safetensors file ({err})") from None
        with handle as f:
            meta = f.metadata() or {}
            if meta.get("format") != BANK_FORMAT:
                raise InvalidInputError(f"{path}: not a masklet exemplar bank (format {meta.get('format')!r})")
            saved = json.loads(meta["model"])
            if saved != shape:
                raise InvalidInputError(f"{path}: the bank was made with a model of shape {saved}, this one is {shape}")
            kinds = json.loads(meta["objects"])
            names = set(f.keys())

            def optional(key: str, k: int, suffix: str) -> torch.Tensor | None:
                name = f"obj{key}.{k}.{suffix}"  # version 1 banks have no prototypes
                return f.get_tensor(name).to(device, dtype) if name in names else None

            bank = cls(pos_enc=f.get_tensor("pos_enc").to(device, dtype))
            for key, object_kinds in kinds.items():
                if len(object_kinds) > max_memory:
                    raise InvalidInputError(
                        f"{path}: object {key} has {len(object_kinds)} memories, more than max_memory={max_memory}"
                    )
                bank.memories[int(key)] = [
                    Memory(
                        kind,
                        f.get_tensor(f"obj{key}.{k}").to(device, dtype),
                        optional(key, k, "ptr"),
                        optional(key, k, "proto"),
                    )
                    for k, kind in enumerate(object_kinds)
                ]
        return bank
