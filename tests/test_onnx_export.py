"""ONNX export parity: each exported part against masklet's PyTorch modules, and the ONNX Runtime
backend's ImagePredictor, MaskGenerator and VideoPredictor outputs against the PyTorch backend."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from masklet import ImagePredictor, load_model  # noqa: E402
from masklet.amg import MaskGenerator  # noqa: E402
from masklet.export.manifest import high_res_shapes  # noqa: E402
from masklet.export.onnx import export_onnx  # noqa: E402
from masklet.export.ort import OrtSam2Model  # noqa: E402
from masklet.model.outputs import MemoryBank  # noqa: E402
from masklet.transforms import preprocess  # noqa: E402
from masklet.video import VideoPredictor  # noqa: E402
from reference.official import SMALL  # noqa: E402
from reference.pairs import make_pair, test_image  # noqa: E402

ATOL = 1e-4


def close(a, b, what: str, atol: float = ATOL) -> None:
    diff = float((torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max())
    assert diff <= atol, f"{what}: max abs diff {diff:.3g}"


@pytest.fixture(scope="module", params=["small", "nano"])
def pair(request, tmp_path_factory):
    """(PyTorch model, ONNX Runtime model) on seeded random tiny weights or masklet-nano."""
    if request.param == "small":
        _, model = make_pair("sam2.1-hiera-tiny", seed=7, **SMALL)
    else:
        model = load_model("masklet-nano")
    out = export_onnx(model, tmp_path_factory.mktemp(f"onnx-{request.param}"), source=request.param)
    return model, OrtSam2Model(model, out)


def test_manifest_describes_parts(pair):
    model, ort = pair
    manifest = ort.manifest
    assert set(manifest["parts"]) == {
        "encoder",
        "no_memory",
        "decoder",
        "memory_attention",
        "memory_encoder",
        "mask_prompt",
    }
    assert manifest["preprocess"]["image_size"] == model.image_size
    dec = manifest["parts"]["decoder"]
    assert [i["name"] for i in dec["inputs"]] == [s.name for s in ort.sessions["decoder"].get_inputs()]
    json.dumps(manifest)


def test_encoder_parity(pair):
    model, ort = pair
    pixels = preprocess(test_image(300, 200, seed=1), model.image_size, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        ref = model.encode_image(pixels)
        got = ort.encode_image(pixels)
        for i, (a, b) in enumerate(zip(got.levels, ref.levels)):
            close(a, b, f"level {i}")
        close(got.positions[-1], ref.positions[-1], "position")
        close(ort.image_embeddings(got)[-1], model.image_embeddings(ref)[-1], "image embedding")


@pytest.mark.parametrize("objects,points,with_mask", [(1, 1, False), (3, 2, False), (2, 5, True), (4, 3, True)])
def test_decoder_parity(pair, objects, points, with_mask):
    model, ort = pair
    e, s = model.config.embedding_size, model.image_size
    g = torch.Generator().manual_seed(objects * 10 + points)
    pixels = preprocess(test_image(s, s, seed=2), s, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        levels = model.image_embeddings(model.encode_image(pixels))
        coords = torch.rand(objects, points, 2, generator=g) * s
        labels = torch.randint(0, 4, (objects, points), generator=g, dtype=torch.int32)
        mask = torch.randn(objects, 1, 4 * e, 4 * e, generator=g) * 5 if with_mask else None
        for multimask in (True, False):
            ref = model.decode_masks(levels[-1], levels[:-1], (coords, labels), mask, multimask)
            got = ort.decode_masks(levels[-1], levels[:-1], (coords, labels), mask, multimask)
            for name, a, b in zip(("masks", "iou", "object logits"), got, ref):
                close(a, b, f"{name} (multimask={multimask})")
        # per-object image maps (the video path) and the object pointers
        per_obj = [
            lv.expand(objects, -1, -1, -1) + 0.1 * torch.randn(objects, *lv.shape[1:], generator=g) for lv in levels
        ]
        inputs = {"point_coords": coords, "point_labels": labels}
        for multimask in (True, False):
            ref = model.forward_sam_heads(per_obj[-1], inputs, mask, per_obj[:-1], multimask)
            got = ort.forward_sam_heads(per_obj[-1], inputs, mask, per_obj[:-1], multimask)
            for name in ("low_res_masks", "ious", "obj_ptr", "object_score_logits"):
                close(getattr(got, name), getattr(ref, name), f"{name} (multimask={multimask})")


@dataclass
class _Entry:
    maskmem_features: torch.Tensor
    maskmem_pos_enc: torch.Tensor
    obj_ptr: torch.Tensor


def _bank(model, objects: int, cond: list[int], tracked: list[int], seed: int) -> MemoryBank:
    """A memory bank of random entries on the given conditioning and tracked frames."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    e = c.embedding_size

    def entry() -> _Entry:
        return _Entry(
            torch.randn(objects, c.mem_dim, e, e, generator=g),
            torch.randn(objects, c.mem_dim, e, e, generator=g),
            torch.randn(objects, c.hidden_dim, generator=g),
        )

    return MemoryBank(cond={t: entry() for t in cond}, non_cond={t: entry() for t in tracked})


@pytest.mark.parametrize(
    "objects,frame,cond,tracked,reverse,shared",
    [
        (1, 1, [0], [], False, True),
        (3, 5, [0, 3], [1, 2, 4], False, True),
        (2, 9, [0], list(range(1, 9)), False, False),  # a full bank: every memory slot and many pointers
        (2, 2, [6], [3, 4, 5], True, False),  # tracking backwards
        (1, 3, [6], [], False, True),  # no object pointer at all (the only prompt is in the future)
    ],
)
def test_memory_attention_parity(pair, objects, frame, cond, tracked, reverse, shared):
    """The exported step (temporal encodings, pointer projection, attention) on a bank vs PyTorch's."""
    model, ort = pair
    c = model.config
    hw, e = c.embedding_size**2, c.embedding_size
    g = torch.Generator().manual_seed(frame)
    cb = 1 if shared else objects
    curr = torch.randn(hw, cb, c.hidden_dim, generator=g).expand(hw, objects, -1)
    curr_pos = torch.randn(hw, cb, c.hidden_dim, generator=g).expand(hw, objects, -1)
    if not shared:
        curr, curr_pos = curr.contiguous(), curr_pos.contiguous()
    bank = _bank(model, objects, cond, tracked, seed=frame)
    with torch.inference_mode():
        args = (frame, False, curr, curr_pos, (e, e), bank, 12, reverse)
        ref = model.condition_on_memory(*args)
        got = ort.condition_on_memory(*args)
        close(got, ref, "memory attention")
        first = (0, True, curr, curr_pos, (e, e), bank, 12, reverse)
        close(ort.condition_on_memory(*first), model.condition_on_memory(*first), "first frame (no memory)")


def test_mask_as_output_parity(pair):
    """A video mask prompt (the mask_prompt model + the decoder), an empty mask included, vs PyTorch."""
    model, ort = pair
    c = model.config
    g = torch.Generator().manual_seed(3)
    e, s = c.embedding_size, c.image_size
    feats = torch.randn(3, c.hidden_dim, e, e, generator=g)
    high_res = [torch.randn(3, *shape, generator=g) for shape in high_res_shapes(model)]
    masks = torch.zeros(3, 1, s, s)
    masks[0, :, s // 4 : s // 2, s // 4 : s // 2] = 1
    masks[1, :, s // 2 :, :] = 1  # masks[2] stays empty: the no-object pointer
    levels = high_res if c.use_high_res_features_in_sam else None
    with torch.inference_mode():
        ref = model.use_mask_as_output(feats, levels, masks)
        got = ort.use_mask_as_output(feats, levels, masks)
    for name in ("low_res_masks", "high_res_masks", "obj_ptr", "object_score_logits"):
        close(getattr(got, name), getattr(ref, name), name)


@pytest.mark.parametrize("objects", [1, 3])
def test_memory_encoder_parity(pair, objects):
    model, ort = pair
    c = model.config
    g = torch.Generator().manual_seed(objects)
    pix = torch.randn(objects, c.hidden_dim, c.embedding_size, c.embedding_size, generator=g)
    masks = torch.randn(objects, 1, c.image_size, c.image_size, generator=g) * 4
    scores = torch.tensor([[3.0], [-2.0], [0.5]])[:objects]
    with torch.inference_mode():
        for from_pts in (True, False):
            ref = model.encode_memory(pix, masks, scores, from_pts, non_overlap=False)
            got = ort.encode_memory(pix, masks, scores, from_pts, non_overlap=False)
            close(got[0], ref[0], f"memory features (from points={from_pts})")
            close(got[1], ref[1], "memory position")


def _same_away_from_threshold(got_logits, ref_logits, what: str, margin: float = 1e-2) -> None:
    got, ref = torch.as_tensor(got_logits), torch.as_tensor(ref_logits)
    sure = ref.abs() > margin
    assert bool(((got > 0) == (ref > 0))[sure].all()), f"{what}: binary masks differ away from the threshold"
    assert 0 < float((ref > 0).float().mean()) < 1, f"{what}: degenerate masks prove nothing"


def test_image_predictor_backend(pair):
    model, ort = pair
    image = test_image(240, 320, seed=3)
    preds = [ImagePredictor(m) for m in (model, ort)]
    for p in preds:
        p.set_image(image)
    boxes = np.array([[20, 30, 200, 180], [150, 60, 300, 220]], dtype=np.float32)
    clicks = np.array([[[100, 100]], [[220, 140]]], dtype=np.float32)
    outs = [
        p.predict(
            point_coords=clicks, point_labels=np.ones((2, 1)), box=boxes, multimask_output=True, return_logits=True
        )
        for p in preds
    ]
    _same_away_from_threshold(outs[1][0], outs[0][0], "two objects")
    close(outs[1][1], outs[0][1], "scores")
    # refinement: a second click with the previous low-res logits as mask prompt
    best = outs[0][1].argmax(-1)
    prev = outs[0][2][np.arange(2), best][:, None]
    refine = [
        p.predict(
            point_coords=np.concatenate([clicks, clicks + 15], 1),
            point_labels=np.array([[1, 0], [1, 1]]),
            mask_input=prev,
            multimask_output=False,
            return_logits=True,
        )
        for p in preds
    ]
    _same_away_from_threshold(refine[1][0], refine[0][0], "refinement")


def test_mask_generator_backend(pair):
    model, ort = pair
    image = test_image(128, 160, seed=4)
    kwargs = dict(points_per_side=8, points_per_batch=32, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    ref = MaskGenerator(model, **kwargs).generate(image)
    got = MaskGenerator(ort, **kwargs).generate(image)
    assert len(ref) > 0 and len(got) == len(ref)
    for a, b in zip(got, ref):
        agree = float((a["segmentation"] == b["segmentation"]).mean())
        assert agree > 0.999, f"AMG mask agreement {agree}"
        assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-3


def _poisoned(model, ort):
    """A fresh ONNX Runtime model whose PyTorch weights are all NaN and whose modules record any call:
    a tracking loop that matches PyTorch with it runs every network and parameter in ONNX Runtime."""
    fresh = OrtSam2Model(model, ort.folder)
    with torch.no_grad():
        for tensor in [*fresh.parameters(), *fresh.buffers()]:
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    calls: list[str] = []
    for name, module in fresh.named_modules():
        if module is not fresh:
            module.register_forward_pre_hook(lambda _m, _a, name=name: calls.append(name))
    return fresh, calls


def test_video_predictor_backend(pair):
    """Three objects (clicks, a box, a mask), a refinement click, then propagation: ORT vs PyTorch."""
    model, ort = pair
    poisoned, calls = _poisoned(model, ort)
    frames = [test_image(96, 128, seed=10 + (t // 2)) for t in range(4)]
    mask = np.zeros((96, 128), bool)
    mask[20:60, 70:110] = True
    results = []
    for m in (model, poisoned):
        vp = VideoPredictor(m)
        state = vp.init_state(frames)
        vp.add_new_points_or_box(state, 0, 1, points=[[40, 40]], labels=[1])
        vp.add_new_points_or_box(state, 0, 2, box=[60, 30, 120, 90])
        vp.add_new_mask(state, 0, 3, mask)
        vp.add_new_points_or_box(state, 2, 1, points=[[40, 40], [70, 50]], labels=[1, 0])  # a correction
        results.append([f.mask_logits for f in vp.propagate_in_video(state)])
    assert calls == [], f"PyTorch modules ran on the ONNX Runtime hot path: {sorted(set(calls))}"
    assert len(results[0]) == len(frames)
    assert len(results[1]) == len(frames)
    for t, (a, b) in enumerate(zip(results[1], results[0])):
        assert a.shape[0] == 3
        _same_away_from_threshold(a, b, f"frame {t}", margin=1e-2)


def test_stream_tracker_backend(pair):
    from masklet.video import StreamTracker

    model, ort = pair
    poisoned, calls = _poisoned(model, ort)
    frames = [test_image(96, 128, seed=20 + (t // 2)) for t in range(4)]
    results = []
    for m in (model, poisoned):
        # Hole filling off: it is the same NumPy post-processing on both sides, and on these random
        # weights one near-zero pixel decides whether a background region is a hole (a float32
        # summation order, MKL's or oneDNN's, moved whole regions by 2 logits at step 3).
        tracker = StreamTracker(m, fill_hole_area=0)
        out = [tracker.track(frames[0])]
        out.append(tracker.add_points(1, [[50, 40]], [1]))
        out.append(tracker.add_box(2, [10, 10, 60, 70]))
        out += [tracker.track(f) for f in frames[1:]]
        results.append([o.mask_logits for o in out[1:]])
    assert calls == [], f"PyTorch modules ran on the ONNX Runtime hot path: {sorted(set(calls))}"
    for t, (a, b) in enumerate(zip(results[1], results[0])):
        _same_away_from_threshold(a, b, f"stream step {t}")


def test_load_model_backend_and_cli(tmp_path):
    from masklet.cli import main
    from masklet.errors import ConfigError, InvalidInputError

    assert (
        main(["export", "onnx", "--model", "masklet-nano", "--out", str(tmp_path), "--parts", "encoder,decoder"]) == 0
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["parts"]) == {"encoder", "no_memory", "decoder"}
    assert manifest["source"] == "masklet-nano"
    ort = load_model("masklet-nano", backend="onnxruntime", onnx_dir=tmp_path)
    assert isinstance(ort, OrtSam2Model)
    ref = load_model("masklet-nano")
    image = test_image(100, 140, seed=5)
    outs = []
    for m in (ref, ort):
        p = ImagePredictor(m)
        p.set_image(image)
        outs.append(p.predict(point_coords=[[70, 50]], point_labels=[1], return_logits=True))
    _same_away_from_threshold(outs[1][0], outs[0][0], "load_model backend")
    with pytest.raises(InvalidInputError, match="memory_attention model"):
        ort.condition_on_memory(1, False, torch.zeros(16, 1, 8), torch.zeros(16, 1, 8), (4, 4), None, 2)
    with pytest.raises(ConfigError, match="backend"):
        load_model("masklet-nano", backend="tensorrt")
    assert main(["export", "onnx", "--model", "masklet-nano", "--out", str(tmp_path / "x"), "--parts", "video"]) == 2
    assert main(["export", "onnx", "--model", "masklet-nano", "--out", str(tmp_path / "y"), "--dtype", "bfloat16"]) == 2


def test_encoder_dynamic_batch(pair):
    """One encoder run for several images: each equals the PyTorch encoding of that image alone."""
    model, ort = pair
    dims = ort.sessions["encoder"].get_inputs()[0].shape
    assert isinstance(dims[0], str), f"encoder batch axis is fixed: {dims}"
    images = [test_image(200 + 20 * k, 260, seed=30 + k) for k in range(3)]
    pixels = torch.cat([preprocess(im, model.image_size, torch.device("cpu"), torch.float32) for im in images])
    with torch.inference_mode():
        got = ort.encode_image(pixels)
        for k in range(3):
            ref = model.encode_image(pixels[k : k + 1])
            for i, (a, b) in enumerate(zip(got.levels, ref.levels)):
                close(a[k : k + 1], b, f"image {k} level {i}")
    preds = [ImagePredictor(m) for m in (model, ort)]
    for p in preds:
        p.set_image_batch(images[:2])
    boxes = [np.array([[20, 30, 150, 180]], np.float32), np.array([[60, 40, 220, 200]], np.float32)]
    outs = [p.predict_batch(box_batch=boxes, multimask_output=False, return_logits=True) for p in preds]
    for k in range(2):
        _same_away_from_threshold(outs[1][0][k], outs[0][0][k], f"set_image_batch image {k}")


def test_float16_encoder_export_and_bfloat16_refused(tmp_path):
    from masklet.cli import main
    from masklet.errors import InvalidInputError

    model = load_model("masklet-nano")
    out = export_onnx(model, tmp_path / "fp16", parts=["encoder", "decoder"], dtype="float16")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dtype"] == "float16" and manifest["parts"]["encoder"]["compute_dtype"] == "float16"
    assert manifest["parts"]["decoder"]["compute_dtype"] == "float32"
    import onnx

    graph = onnx.load(str(out / "image_encoder.onnx")).graph
    assert {t.data_type for t in graph.initializer if len(t.dims) > 1} == {onnx.TensorProto.FLOAT16}
    ort = OrtSam2Model(model, out)
    image = test_image(180, 240, seed=6)
    masks = []
    for m in (model, ort):
        p = ImagePredictor(m)
        p.set_image(image)
        masks.append(p.predict(point_coords=[[120, 90]], point_labels=[1], multimask_output=False)[0][0])
    inter, union = (masks[0] & masks[1]).sum(), (masks[0] | masks[1]).sum()
    assert union > 0 and inter / union >= 0.98, f"float16 encoder IoU {inter / union:.3f} vs float32 PyTorch"
    with pytest.raises(InvalidInputError, match="bfloat16 Conv"):
        export_onnx(model, tmp_path / "bf16", dtype="bfloat16")
    with pytest.raises(InvalidInputError, match="float16"):
        export_onnx(model, tmp_path / "int8", dtype="int8")
    assert (
        main(
            [
                "export",
                "onnx",
                "--model",
                "masklet-nano",
                "--out",
                str(tmp_path / "cli"),
                "--parts",
                "encoder",
                "--dtype",
                "float16",
            ]
        )
        == 0
    )
