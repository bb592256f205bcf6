"""Remote twin of :class:`~masklet.ExemplarPredictor` (see :mod:`masklet.client`): same methods,
arguments and :class:`~masklet.exemplar.ExemplarResult` outputs, the bank held by the server.

Arguments are checked here as locally before anything is sent. The client keeps the log of what
changed the bank (examples, remembered queries, removals, resets, loads); when the server lost the
session (restart, eviction, expiry) it opens a new one and replays the log, transparently.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import errors as E
from .checks import check_obj_id, is_int
from .exemplar import ExemplarResult
from .image import ImagePredictor
from .io import ImageSource, load_image
from .masks import encode_rle
from .server.codec import npy_bytes, rles_to_masks, unpack_array
from .transforms import upscale_masks

if TYPE_CHECKING:
    from .client import Client


class RemoteExemplarPredictor:
    """:class:`~masklet.ExemplarPredictor` on a server: one exemplar session per predictor."""

    def __init__(
        self,
        client: Client,
        model: str | None = None,
        max_memory: int = 8,
        *,
        object_pointers: bool = True,
        multimask_queries: bool | None = None,
        binarize_examples: bool | None = None,
        mask_threshold: float = 0.0,
    ) -> None:
        from .client import _shim

        if not is_int(max_memory, numpy=False) or max_memory < 1:
            raise E.InvalidInputError(
                f"max_memory: expected an int >= 1 (memories kept per object), got {max_memory!r}"
            )
        if not isinstance(mask_threshold, (int, float, np.number)) or isinstance(mask_threshold, bool):
            raise E.InvalidInputError(f"mask_threshold: expected a number, got {mask_threshold!r}")
        self.client, self.info = client, client.model_info(model)
        self.model_name, self.max_memory, self.mask_threshold = self.info["name"], max_memory, float(mask_threshold)
        self._shim = _shim(self.info)
        self._options = {
            "model": self.model_name,
            "maxMemory": max_memory,
            "objectPointers": bool(object_pointers),
            "multimaskQueries": multimask_queries,
            "binarizeExamples": binarize_examples,
            "maskThreshold": self.mask_threshold,
        }
        self._log: list[tuple[str, Any, Any]] = []  # (op, pixels or bytes, args): what changed the bank
        self._obj_ids: list[int] = []
        self.session_id = self._create()

    def _create(self) -> str:
        return self.client.request("POST", "/v1/exemplars", json=self._options)["sessionId"]

    @property
    def obj_ids(self) -> list[int]:
        """Ids of the objects in the bank, in the order they were first added."""
        return list(self._obj_ids)

    def memory_kinds(self, obj_id: int) -> list[str]:
        """The kinds ("example" / "query") of an object's memories (as the server holds them)."""
        check_obj_id(obj_id)
        kinds = self._send("GET", "")["memoryKinds"]
        if str(int(obj_id)) not in kinds:
            raise E.InvalidInputError(f"obj_id: unknown object {obj_id!r}; known objects: {self.obj_ids}")
        return kinds[str(int(obj_id))]

    # ------------------------------------------------------------ transport and replay

    def _raw(
        self, method: str, path: str, pixels: np.ndarray | None = None, args: dict | None = None, **kw: Any
    ) -> Any:
        url = f"/v1/exemplars/{self.session_id}{path}"
        if pixels is not None:
            kw["files"] = [("image", ("image.npy", npy_bytes(pixels), "application/x-npy"))]
            kw["data"] = {"args": json.dumps(args or {})}
        return self.client.request(method, url, **kw)

    def _send(
        self, method: str, path: str, pixels: np.ndarray | None = None, args: dict | None = None, **kw: Any
    ) -> Any:
        """A session request; if the server lost the session, re-create it, replay the log, retry."""
        try:
            return self._raw(method, path, pixels, args, **kw)
        except E.MaskletError as err:
            if getattr(err, "code", None) != "unknown_session":
                raise
        self.replay()
        return self._raw(method, path, pixels, args, **kw)

    def replay(self) -> None:
        """Open a new session and re-apply every logged change to the bank, in order."""
        self.session_id = self._create()
        for op, data, args in self._log:
            if op == "example":
                self._raw("POST", "/examples", data, args)
            elif op == "segment":
                self._raw("POST", "/segment", data, {"updateMemory": True})
            elif op == "remove":
                self._raw("DELETE", f"/objects/{args}")
            elif op == "reset":
                self._raw("POST", "/reset")
            elif op == "load":
                self._raw("PUT", "/bank", content=data, headers={"content-type": "application/x-safetensors"})

    def _result(self, doc: dict) -> ExemplarResult:
        hw = (doc["height"], doc["width"])
        low = torch.from_numpy(unpack_array(doc["lowResLogits"], "lowResLogits"))
        n = len(doc["objIds"])
        masks = torch.from_numpy(rles_to_masks(doc["masks"], [n], hw))
        scores = torch.tensor(doc["objectScoreLogits"], dtype=torch.float32)
        return ExemplarResult(
            obj_ids=list(doc["objIds"]),
            masks=masks,
            mask_logits=upscale_masks(low, hw)[:, 0],
            low_res_logits=low,
            scores=torch.tensor(doc["scores"], dtype=torch.float32),
            object_score_logits=scores,
            presence=torch.tensor(doc["presence"], dtype=torch.float32),
        )

    # ------------------------------------------------------------ the predictor's methods

    def add_example(
        self, image: ImageSource, obj_id: int, points: Any = None, labels: Any = None, box: Any = None, mask: Any = None
    ) -> ExemplarResult:
        """Same as :meth:`masklet.ExemplarPredictor.add_example` (a mask must be binary: it travels as COCO RLE)."""
        check_obj_id(obj_id)
        if mask is not None and (points is not None or labels is not None or box is not None):
            raise E.InvalidInputError("give a mask alone, or points with labels and/or a box")
        if mask is None and points is None and labels is None and box is None:
            raise E.InvalidInputError("give points with labels, a box, or a mask for the example")
        pixels = load_image(image)
        hw = pixels.shape[:2]
        args: dict[str, Any] = {"objId": int(obj_id)}
        if mask is not None:
            m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            if m.ndim != 2 or np.iscomplexobj(m) or not (m.dtype == bool or np.issubdtype(m.dtype, np.number)):
                raise E.InvalidInputError(
                    f"mask: expected a 2-D (H, W) binary mask (bool or 0/1 numbers), got {m.dtype} of shape {m.shape}"
                )
            if m.shape != hw:
                raise E.InvalidInputError(f"mask: expected the image size {hw} (H, W), got {m.shape}")
            if m.dtype != bool and not np.isin(m, (0, 1)).all():
                raise E.InvalidInputError("mask: a remote mask must be binary (bool or 0/1); it travels as COCO RLE")
            args["mask"] = encode_rle(m.astype(bool)[None])[0]
        else:
            prompts = ImagePredictor.prepare_prompts(self._shim, points, labels, box, None, hw, True)
            if prompts.points is None or prompts.points[0].shape[0] != 1:
                raise E.InvalidInputError("points / box: an example is one object; give (P, 2) points and one box")
            for name, value in (("points", points), ("box", box)):
                if value is not None:
                    args[name] = np.asarray(
                        value.cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64
                    ).tolist()
            if labels is not None:
                args["labels"] = (
                    np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(int).tolist()
                )
        doc = self._send("POST", "/examples", pixels, args)
        self._log.append(("example", pixels, args))
        if int(obj_id) not in self._obj_ids:
            self._obj_ids.append(int(obj_id))
        return self._result(doc)

    def segment(self, image: ImageSource, update_memory: bool = False) -> ExemplarResult:
        """Same as :meth:`masklet.ExemplarPredictor.segment`."""
        if not self._obj_ids:
            raise E.PredictorStateError("no objects in the memory: add_example(...) first")
        pixels = load_image(image)
        doc = self._send("POST", "/segment", pixels, {"updateMemory": bool(update_memory)})
        if update_memory:
            self._log.append(("segment", pixels, None))
        return self._result(doc)

    def remove_object(self, obj_id: int) -> list[int]:
        """Forget an object and its memories; returns the remaining ids."""
        check_obj_id(obj_id)
        if int(obj_id) not in self._obj_ids:
            raise E.InvalidInputError(f"obj_id: unknown object {obj_id!r}; known objects: {self.obj_ids}")
        self._obj_ids = list(self._send("DELETE", f"/objects/{int(obj_id)}")["objIds"])
        self._log.append(("remove", None, int(obj_id)))
        return self.obj_ids

    def reset(self) -> None:
        """Forget every object and memory."""
        self._send("POST", "/reset")
        self._log = [("reset", None, None)]  # nothing before a reset matters to a replay
        self._obj_ids = []

    def save(self, path: str | os.PathLike) -> None:
        """Download the bank to a safetensors file (the format of ``ExemplarPredictor.save``)."""
        if not self._obj_ids:
            raise E.PredictorStateError("the memory bank is empty: nothing to save")
        data = self._send("GET", "/bank")
        with open(os.fspath(path), "wb") as f:
            f.write(data)

    def load(self, path: str | os.PathLike) -> None:
        """Upload a bank that ``save`` (here or locally) wrote; it replaces the server's."""
        try:
            with open(os.fspath(path), "rb") as f:
                data = f.read()
        except OSError as err:
            raise E.InvalidInputError(f"{path}: not a readable safetensors file ({err})") from None
        info = self._send("PUT", "/bank", content=data, headers={"content-type": "application/x-safetensors"})
        self._log = [("load", data, None)]
        self._obj_ids = list(info["objIds"])

    def close(self) -> None:
        """Close the server session (frees its bank)."""
        try:
            self.client.request("DELETE", f"/v1/exemplars/{self.session_id}")
        except E.MaskletError as err:
            if getattr(err, "code", None) != "unknown_session":
                raise
