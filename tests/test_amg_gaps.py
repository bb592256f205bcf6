"""Behaviours of the AMG package and mask NMS that the parity tests did not pin (issue 15 mutation gate).

Each test here kills mutants that survived ``tests/test_amg.py`` and ``tests/test_amg_grid_decoder.py``
(docs/mutation-report.md, "Survivors of amg"). Fast: plain arrays, or one small random model.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

from masklet import MaskGenerator, load_model
from masklet.amg import GridDecoder, build_all_layer_point_grids, build_point_grid
from masklet.amg.grids import generate_crop_boxes, near_crop_edge
from masklet.amg.options import Progress
from masklet.errors import InvalidInputError
from masklet.mask_nms import mask_iou_nms
from masklet.masks import encode_rle, encode_uncompressed_rle
from masklet.model import Sam2Model
from masklet.synthetic import make_scene
from masklet.transforms import preprocess
from reference.amg_compare import assert_same_masks, blob_image, image, official_records
from reference.official import SMALL
from reference.pairs import make_pair, test_image

# ---------------------------------------------------------------------------------------------
# mask NMS (masklet.mask_nms)
# ---------------------------------------------------------------------------------------------


def _mask(h: int, w: int, ys: slice, xs: slice) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[ys, xs] = True
    return m


def _records(*masks_and_scores: tuple[np.ndarray, float]) -> list[dict]:
    return [{"segmentation": m, "predicted_iou": s} for m, s in masks_and_scores]


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.5", None])
def test_mask_nms_threshold_gets_its_whole_message(bad):
    with pytest.raises(InvalidInputError) as info:
        mask_iou_nms([], bad)
    assert str(info.value) == f"iou_thresh: expected a number in (0, 1], got {bad!r}"


def test_mask_nms_of_fewer_than_two_records_is_a_new_list():
    one = _records((_mask(6, 6, slice(0, 3), slice(0, 3)), 0.5))
    out = mask_iou_nms(one, 1)  # an int threshold is a number too
    assert out == one
    assert out is not one
    assert mask_iou_nms([], 0.5) == []


def test_mask_nms_drops_the_lower_scored_of_two_copies():
    shape = _mask(8, 8, slice(1, 5), slice(2, 6))
    records = _records((shape, 0.4), (shape.copy(), 0.6))
    assert mask_iou_nms(records, 0.5) == [records[1]]
    # ties keep the first given
    tied = _records((shape, 0.5), (shape.copy(), 0.5))
    assert mask_iou_nms(tied, 0.5) == [tied[0]]


def test_mask_nms_single_pixel_and_thin_copies_are_duplicates():
    pixel = _mask(9, 9, slice(4, 5), slice(7, 8))
    row = _mask(9, 9, slice(8, 9), slice(0, 9))  # the last row: the overlap slice must include it
    column = _mask(9, 9, slice(0, 9), slice(8, 9))  # the last column
    for m in (pixel, row, column):
        records = _records((m, 0.9), (m.copy(), 0.8))
        assert mask_iou_nms(records, 0.99) == [records[0]]


def test_mask_nms_boxes_touching_at_one_row_or_column_overlap():
    # two 10x6 rectangles sharing exactly one column (then one row): IoU = 10 / 110
    h, w = 12, 12
    left, right = _mask(h, w, slice(0, 10), slice(0, 6)), _mask(h, w, slice(0, 10), slice(5, 11))
    records = _records((left, 0.9), (right, 0.8))
    assert mask_iou_nms(records, 0.09) == [records[0]]
    assert mask_iou_nms(records, 0.091) == records
    top, bottom = left.T.copy(), right.T.copy()
    records = _records((bottom, 0.8), (top, 0.9))
    assert mask_iou_nms(records, 0.09) == [records[1]]
    assert mask_iou_nms(records, 0.091) == records


def test_mask_nms_iou_equal_to_the_threshold_is_kept():
    big = _mask(8, 8, slice(0, 2), slice(0, 4))  # 8 pixels
    half = _mask(8, 8, slice(0, 2), slice(0, 2))  # 4 of them: IoU exactly 0.5
    records = _records((big, 0.9), (half, 0.8))
    assert mask_iou_nms(records, 0.5) == records
    assert mask_iou_nms(records, 0.49) == [records[0]]


def test_mask_nms_compares_only_with_kept_masks_and_keeps_the_given_order():
    # c (best) suppresses b; a overlaps b a lot but c only a little, so a stays
    h, w = 4, 30
    a = _mask(h, w, slice(0, 4), slice(0, 10))
    b = _mask(h, w, slice(0, 4), slice(2, 14))
    c = _mask(h, w, slice(0, 4), slice(5, 16))
    records = _records((a, 0.1), (b, 0.5), (c, 0.9))
    kept = mask_iou_nms(records, 0.55)
    assert kept == [records[0], records[2]]


def test_mask_nms_keeps_empty_masks_and_reads_every_output_mode():
    empty = np.zeros((6, 7), bool)
    shape = _mask(6, 7, slice(1, 4), slice(1, 6))
    records = _records((empty, 0.9), (empty.copy(), 0.8), (shape, 0.7))
    assert mask_iou_nms(records, 0.1) == records  # empty masks overlap nothing
    binary = _records((shape.astype(np.uint8), 0.3), (shape, 0.6))
    assert mask_iou_nms(binary, 0.9) == [binary[1]]
    for encode in (encode_rle, encode_uncompressed_rle):
        rles = encode(np.stack([shape, shape, empty]))
        coded = _records((rles[0], 0.2), (rles[1], 0.7), (rles[2], 0.9))
        assert mask_iou_nms(coded, 0.9) == [coded[1], coded[2]]


@pytest.mark.parametrize("segmentation, kind", [([[0, 1]], "list"), ({"size": [2, 2]}, "dict"), (None, "NoneType")])
def test_mask_nms_bad_segmentation_gets_its_whole_message(segmentation, kind):
    records = [
        {"segmentation": segmentation, "predicted_iou": 0.5},
        {"segmentation": segmentation, "predicted_iou": 0.4},
    ]
    with pytest.raises(InvalidInputError) as info:
        mask_iou_nms(records, 0.5)
    assert str(info.value) == f"segmentation: expected an (H, W) array or an RLE dict, got {kind}"


# ---------------------------------------------------------------------------------------------
# the generator on a small random model
# ---------------------------------------------------------------------------------------------


@functools.cache
def _model() -> Sam2Model:
    """The small sam2.1 configuration of the parity tests, seeded random weights (no official side)."""
    return make_pair("sam2.1-hiera-tiny", seed=2, **SMALL)[1]


_NO_FILTERS = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
LOW = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.95)


def _same_records(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x["segmentation"], y["segmentation"])
        assert {k: v for k, v in x.items() if k != "segmentation"} == {
            k: v for k, v in y.items() if k != "segmentation"
        }


def test_a_backend_grid_decoder_gets_the_image_levels():
    """A model may bring its own grid decoder (an ONNX backend does); it is built from the crop's levels."""
    model = _model()
    plain = MaskGenerator(model, **LOW).generate(image(2))
    calls = []

    def factory(levels):
        calls.append(levels)
        return GridDecoder(model, levels)

    model.grid_decoder = factory
    try:
        custom = MaskGenerator(model, **LOW).generate(image(2))
    finally:
        del model.grid_decoder
    assert len(calls) == 1
    assert all(isinstance(x, torch.Tensor) for x in calls[0])
    assert len(plain) > 3
    _same_records(custom, plain)


@pytest.mark.parametrize("multimask", [True, False])
def test_masks_are_upscaled_only_for_prompts_that_can_pass_the_iou_filter(monkeypatch, multimask):
    """The documented saving: mask tokens and upscaling run only for prompts with an IoU above
    ``pred_iou_thresh`` (the records are the same either way, the work is not)."""
    model = _model()
    decoded: list[torch.Tensor] = []
    upscaled: list[int] = []
    decode, masks = GridDecoder.decode, GridDecoder.masks

    def spy_decode(self, coords, labels, mask_input):
        iou, state = decode(self, coords, labels, mask_input)
        decoded.append(iou)
        return iou, state

    def spy_masks(self, state, which):
        upscaled.append(len(state))
        return masks(self, state, which)

    monkeypatch.setattr(GridDecoder, "decode", spy_decode)
    monkeypatch.setattr(GridDecoder, "masks", spy_masks)

    def run(thresh: float) -> tuple[list[dict], torch.Tensor]:
        decoded.clear()
        upscaled.clear()
        options = dict(points_per_side=8, stability_score_thresh=0.0, multimask_output=multimask)
        records = MaskGenerator(model, pred_iou_thresh=thresh, **options).generate(image(2))
        iou = torch.cat(decoded)
        # the best IoU a point can be given: of the three mask tokens, or (single output, chosen
        # by stability) of all four
        return records, (iou[:, 1:] if multimask else iou).max(1).values

    _, bound = run(0.0)
    assert bound.shape == (64,)
    assert sum(upscaled) == 64  # no IoU filter: every point
    thresh = float(bound.sort().values[32])  # exactly one point's bound: not above it, so no masks
    records, bound = run(thresh)
    assert sum(upscaled) == int((bound > thresh).sum())
    assert sum(upscaled) == 31  # no ties at the threshold
    assert records
    assert all(r["predicted_iou"] > thresh for r in records)


# ---------------------------------------------------------------------------------------------
# options: every message whole (masklet.amg.options, masklet.amg.grids)
# ---------------------------------------------------------------------------------------------

_GRID = np.full((4, 2), 0.5)
_OPTION_MESSAGES = [
    (dict(crop_n_layers=1.0), "crop_n_layers: expected an int, got 1.0"),
    (dict(crop_n_layers=-1), "crop_n_layers: expected an int >= 0, got -1"),
    (dict(crop_n_points_downscale_factor=0), "crop_n_points_downscale_factor: expected an int >= 1, got 0"),
    (dict(points_per_batch=0), "points_per_batch: expected an int >= 1, got 0"),
    (dict(points_per_batch="8"), "points_per_batch: expected an int, got '8'"),
    (
        dict(points_per_side=None),
        "points_per_side, point_grids: give exactly one of them (points_per_side=None, point_grids=None); "
        "to use point_grids, pass points_per_side=None",
    ),
    (
        dict(point_grids=[_GRID]),
        "points_per_side, point_grids: give exactly one of them (points_per_side=32, point_grids=given); "
        "to use point_grids, pass points_per_side=None",
    ),
    (dict(points_per_side=2.5), "points_per_side: expected an int, got 2.5"),
    (dict(points_per_side=0), "points_per_side: expected an int >= 1, got 0 (a grid of zero points)"),
    (
        dict(points_per_side=4, crop_n_layers=3, crop_n_points_downscale_factor=2),
        "crop_n_layers=3, crop_n_points_downscale_factor=2: crop layer 3 gets int(4 / 2**3) = 0 points per "
        "side; use fewer crop layers, a smaller factor or more points_per_side",
    ),
    (
        dict(points_per_side=None, point_grids=_GRID),
        "point_grids: expected a list of (N, 2) arrays (one per crop layer), got ndarray",
    ),
    (
        dict(points_per_side=None, point_grids=torch.zeros(1, 4, 2)),
        "point_grids: expected a list of (N, 2) arrays (one per crop layer), got Tensor",
    ),
    (
        dict(points_per_side=None, point_grids=5),
        "point_grids: expected a list of (N, 2) arrays (one per crop layer), got int",
    ),
    (
        dict(points_per_side=None, point_grids=[_GRID], crop_n_layers=2),
        "point_grids: crop_n_layers=2 needs 3 grids (one per crop layer), got 1",
    ),
    (
        dict(points_per_side=None, point_grids=[_GRID, [["a", "b"]]], crop_n_layers=1),
        "point_grids[1]: expected an (N, 2) array of numbers, got list",
    ),
    (
        dict(points_per_side=None, point_grids=[_GRID, np.zeros((2, 3))], crop_n_layers=1),
        "point_grids[1]: expected shape (N, 2) of normalised (x, y), got (2, 3)",
    ),
    (
        dict(points_per_side=None, point_grids=[np.zeros(4)]),
        "point_grids[0]: expected shape (N, 2) of normalised (x, y), got (4,)",
    ),
    (
        dict(points_per_side=None, point_grids=[np.zeros((0, 2))]),
        "point_grids[0]: a grid of zero points; give at least one point",
    ),
    *[
        (
            dict(points_per_side=None, point_grids=[bad]),
            "point_grids[0]: points are normalised to [0, 1]; got values outside",
        )
        for bad in (np.full((2, 2), -0.01), np.full((2, 2), 1.01), np.full((2, 2), np.nan))
    ],
    *[
        (dict(**{name: value}), f"{name}: expected a number in [0, 1], got {value!r}")
        for name in (
            "pred_iou_thresh",
            "stability_score_thresh",
            "box_nms_thresh",
            "crop_nms_thresh",
            "crop_overlap_ratio",
        )
        for value in (-0.01, 1.01, "0.5")
    ],
    *[
        (dict(**{name: value}), f"{name}: expected a finite number, got {value!r}")
        for name in ("stability_score_offset", "mask_threshold")
        for value in (float("inf"), float("nan"), None)
    ],
    *[
        (dict(min_mask_region_area=value), f"min_mask_region_area: expected a number >= 0, got {value!r}")
        for value in (-1, float("inf"), float("nan"), "10")
    ],
    *[
        (dict(mask_nms_thresh=value), f"mask_nms_thresh: expected a number in [0, 1] (0: off), got {value!r}")
        for value in (-0.5, 1.5, "0.5")
    ],
    (dict(output_mode="png"), "output_mode: expected one of binary_mask, uncompressed_rle, coco_rle, got 'png'"),
    (dict(use_m2m=1), "use_m2m: expected True or False, got 1"),
    (dict(multimask_output=None), "multimask_output: expected True or False, got None"),
    (dict(progress="bar"), "progress: expected True, False or a callable progress(done, total), got 'bar'"),
]


@pytest.mark.parametrize("options, message", _OPTION_MESSAGES)
def test_bad_options_get_their_whole_message(options, message):
    with pytest.raises(InvalidInputError) as info:
        MaskGenerator(_model(), **options)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "options",
    [
        dict(
            pred_iou_thresh=0, stability_score_thresh=1, box_nms_thresh=0.0, crop_nms_thresh=1.0, crop_overlap_ratio=0
        ),
        dict(min_mask_region_area=0.0, mask_nms_thresh=1.0, mask_threshold=-3, stability_score_offset=0),
        dict(use_m2m=np.bool_(True), multimask_output=np.bool_(False), progress=np.bool_(False)),
        dict(points_per_side=None, point_grids=[np.array([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])], crop_n_layers=1),
        dict(points_per_side=1, crop_n_layers=0, crop_n_points_downscale_factor=5, points_per_batch=1),
    ],
)
def test_options_on_the_edge_of_their_range_are_accepted(options):
    generator = MaskGenerator(_model(), **options)
    grids = generator.point_grids
    assert all(g.dtype == np.float64 for g in grids)
    assert all(g.ndim == 2 for g in grids)
    assert all(g.shape[1] == 2 for g in grids)


def test_point_grids_are_checked_copies_in_float64():
    grids = [np.array([[0.25, 0.75]], dtype=np.float32), torch.tensor([[0.5, 0.5], [1.0, 0.0]])]
    generator = MaskGenerator(_model(), points_per_side=None, point_grids=grids, crop_n_layers=1)
    assert [g.tolist() for g in generator.point_grids] == [[[0.25, 0.75]], [[0.5, 0.5], [1.0, 0.0]]]
    assert generator.points_per_side is None


def test_progress_true_without_tqdm_says_how_to_fix_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm" or name.startswith("tqdm."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    with pytest.raises(InvalidInputError) as info:
        MaskGenerator(_model(), progress=True)
    assert str(info.value) == (
        "progress=True draws a tqdm bar, but tqdm is not installed (pip install tqdm); "
        "or pass a callable progress(done, total)"
    )
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_a_model_that_is_not_a_sam2_model_is_rejected_whole():
    with pytest.raises(InvalidInputError) as info:
        MaskGenerator(object())
    assert str(info.value) == "model: expected a masklet Sam2Model (see masklet.load_model), got object"


# ---------------------------------------------------------------------------------------------
# grids and crop boxes: the official sam2.utils.amg values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 8, 32])
def test_point_grid_is_the_official(n):
    from sam2.utils.amg import build_point_grid as official

    ours = build_point_grid(n)
    assert ours.shape == (n * n, 2)
    assert np.array_equal(ours, official(n))


@pytest.mark.parametrize("n, layers, scale", [(32, 0, 1), (16, 2, 2), (9, 3, 2), (12, 2, 3)])
def test_layer_grids_are_the_official(n, layers, scale):
    from sam2.utils.amg import build_all_layer_point_grids as official

    ours, theirs = build_all_layer_point_grids(n, layers, scale), official(n, layers, scale)
    assert len(ours) == layers + 1
    assert len(theirs) == layers + 1
    for a, b in zip(ours, theirs):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("size", [(180, 240), (240, 180), (517, 333), (1000, 1000), (64, 1500)])
@pytest.mark.parametrize("layers, overlap", [(0, 512 / 1500), (1, 512 / 1500), (2, 0.0), (3, 0.2)])
def test_crop_boxes_are_the_official(size, layers, overlap):
    from sam2.utils.amg import generate_crop_boxes as official

    boxes, layer_idxs = generate_crop_boxes(size, layers, overlap)
    ref_boxes, ref_layers = official(size, layers, overlap)
    assert boxes == [list(map(int, b)) for b in ref_boxes]
    assert layer_idxs == list(ref_layers)
    assert all(type(v) is int for b in boxes for v in b)


def test_near_crop_edge_is_the_official():
    from sam2.utils.amg import is_box_near_crop_edge as official

    gen = torch.Generator().manual_seed(0)
    crop, orig = [100, 50, 300, 250], [0, 0, 300, 400]
    x0 = torch.randint(0, 200, (400, 1), generator=gen)
    y0 = torch.randint(0, 200, (400, 1), generator=gen)
    w = torch.randint(0, 60, (400, 1), generator=gen)
    h = torch.randint(0, 60, (400, 1), generator=gen)
    boxes = torch.cat([x0, y0, (x0 + w).clamp(max=200), (y0 + h).clamp(max=200)], 1)
    # distances of exactly 20 px (the tolerance) to an edge are in the set
    boxes = torch.cat([boxes, torch.tensor([[20, 30, 100, 100], [21, 21, 179, 179], [0, 0, 199, 199]])])
    ours = near_crop_edge(boxes, crop, orig)
    ref = official(boxes.float(), crop, orig)
    assert ours.dtype == torch.bool
    assert torch.equal(ours, ref)
    assert int(ours.sum()) > 0
    assert int(ours.sum()) < len(boxes)


def test_near_crop_edge_stays_on_the_boxes_device():
    """Boxes on another device (the meta device stands in for a GPU) never meet CPU edge tensors."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 8.0, 8.0]], device="meta")
    out = near_crop_edge(boxes, [0, 0, 20, 20], [0, 0, 40, 40])
    assert out.device.type == "meta"
    assert out.shape == (2,) and out.dtype == torch.bool


def test_progress_reports_to_a_callback_or_a_bar(capsys):
    calls = []
    progress = Progress(lambda done, total: calls.append((done, total)), 10)
    progress.advance(3)
    progress.advance(7)
    progress.close()
    assert calls == [(3, 10), (10, 10)]
    assert progress.bar is None
    bar = Progress(True, 5)
    bar.advance(2)
    bar.advance(3)
    bar.close()
    err = capsys.readouterr().err
    assert "masklet amg" in err
    assert "5/5" in err
    assert "prompt/s" in err
    silent = Progress(False, 4)
    silent.advance(4)
    silent.close()
    assert silent.done == 4
    assert silent.callback is None
    assert silent.bar is None
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# the grid decoder on two-way transformers of other depths
# ---------------------------------------------------------------------------------------------


@functools.cache
def _depth_model(depth: int) -> Sam2Model:
    """The small model's architecture with a ``depth``-block two-way transformer, seeded weights.

    Depth 1 has no factored second block (every block goes through the generic path, the first
    with shared image tokens); depth 3 has a generic block after the two factored ones."""
    base = _model().config
    config = dataclasses.replace(base, decoder=dataclasses.replace(base.decoder, transformer_depth=depth))
    torch.manual_seed(depth)
    model = Sam2Model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("with_mask", [False, True])
@torch.inference_mode()
def test_grid_decoder_of_other_depths_matches_the_model_decoder(depth, with_mask):
    model = _depth_model(depth)
    pixels = preprocess(test_image(96, 128, seed=3), model.image_size, model.device, model.encoder_dtype)
    levels = model.image_embeddings(model.encode_image(pixels))
    gen = torch.Generator().manual_seed(1)
    coords = torch.rand(5, 1, 2, generator=gen) * model.image_size
    labels = torch.ones(5, 1, dtype=torch.int32)
    h, w = levels[-1].shape[-2:]
    mask_input = torch.randn(5, 1, 4 * h, 4 * w, generator=gen) * 4 if with_mask else None
    decoder = GridDecoder(model, levels)
    assert decoder.factored == (depth >= 2)
    iou, state = decoder.decode(coords, labels, mask_input)
    ref, ref_iou, _ = model.decode_masks(levels[-1], levels[:-1] or None, (coords, labels), mask_input, True)
    ours = decoder.masks(state, [1, 2, 3])
    scale = max(1.0, float(ref.abs().max()))
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max()) <= 2e-4 * scale
    assert float((iou[:, 1:] - ref_iou).abs().max()) <= 2e-4


@torch.inference_mode()
def test_grid_decoder_decodes_a_cache_sized_chunk_on_a_cpu():
    """On a CPU, prompts go through in chunks whose per-prompt image tokens fit 16 MB (decoding)
    and 24 MB (upscaling, three feature maps per prompt); never more than ``points_per_batch``."""
    model = _model()
    pixels = preprocess(test_image(96, 128, seed=3), model.image_size, model.device, model.encoder_dtype)
    decoder = GridDecoder(model, model.image_embeddings(model.encode_image(pixels)))
    n, c = decoder.keys0.shape[1:]
    per_prompt = n * c * decoder.keys0.element_size()
    assert decoder.chunk(10**6, upscale=False) == (16 << 20) // per_prompt
    assert decoder.chunk(10**6, upscale=True) == (24 << 20) // (3 * per_prompt)
    assert decoder.chunk(3, upscale=False) == 3
    assert decoder.chunk(3, upscale=True) == 3
    assert decoder.chunk(1, upscale=True) == 1


@pytest.mark.parametrize("options", [dict(multimask_output=False), dict(use_m2m=True), dict()])
def test_no_prompt_passing_the_iou_filter_gives_no_masks(options):
    """When no prompt can pass pred_iou_thresh the upscaling gets no prompts: an empty result."""
    model, image = load_model("masklet-nano"), make_scene(1, size=(120, 160)).image
    assert MaskGenerator(model, points_per_side=4, **_NO_FILTERS, **options).generate(image)  # masks without filters
    strict = MaskGenerator(model, points_per_side=4, pred_iou_thresh=0.999, min_mask_region_area=5, **options)
    assert strict.generate(image) == []


def test_cpu_chunks_follow_the_decode_and_upscale_budgets(monkeypatch):
    """Point batches and m2m refinements are decoded in decode-sized chunks, masks upscaled in the
    smaller upscale-sized ones (budgets shrunk so that a 4x4 grid spans several chunks)."""
    import masklet.amg.decoder as decoder_module

    model = _model()
    pixels = preprocess(test_image(96, 128, seed=3), model.image_size, model.device, model.encoder_dtype)
    probe = GridDecoder(model, model.image_embeddings(model.encode_image(pixels)))
    per_prompt = probe.keys0.shape[1] * probe.keys0.shape[2] * probe.keys0.element_size()
    monkeypatch.setattr(decoder_module, "_CPU_DECODE_BYTES", 7 * per_prompt)
    monkeypatch.setattr(decoder_module, "_CPU_UPSCALE_BYTES", 3 * 2 * per_prompt)
    sizes: dict[str, list[int]] = {"decode": [], "refine": [], "masks": []}
    decode, masks = GridDecoder.decode, GridDecoder.masks

    def spy_decode(self, coords, labels, mask_input):
        sizes["decode" if mask_input is None else "refine"].append(coords.shape[0])
        return decode(self, coords, labels, mask_input)

    def spy_masks(self, state, *args, **kwargs):
        sizes["masks"].append(len(state))
        return masks(self, state, *args, **kwargs)

    monkeypatch.setattr(GridDecoder, "decode", spy_decode)
    monkeypatch.setattr(GridDecoder, "masks", spy_masks)
    generator = MaskGenerator(model, points_per_side=4, points_per_batch=64, use_m2m=True, **_NO_FILTERS)
    generator.generate(test_image(96, 128, seed=3))
    assert max(sizes["decode"]) == 7 and sum(sizes["decode"]) == 16
    assert max(sizes["refine"]) == 7 and sum(sizes["refine"]) == 48  # 3 masks per point refined
    assert max(sizes["masks"]) == 2


# ---------------------------------------------------------------------------------------------
# filters and m2m beyond the parity cases of test_amg.py
# ---------------------------------------------------------------------------------------------


def test_stability_filter_applies_to_crops_like_official():
    """With crop layers the stability filter still applies (test_amg's crop case has it off)."""
    official, ours = make_pair("sam2.1-hiera-tiny", seed=3, **SMALL)

    options = dict(
        points_per_side=8,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.01,  # random weights: removes 4 of 10 masks
        box_nms_thresh=0.95,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
    )
    reference = official_records(official, blob_image(3), **options)
    unfiltered = official_records(official, blob_image(3), **{**options, "stability_score_thresh": 0.0})
    assert len(reference) >= 5
    assert len(reference) < len(unfiltered)  # the threshold removes masks
    assert len({tuple(r["crop_box"]) for r in unfiltered}) > 1  # crops found masks
    assert_same_masks(MaskGenerator(ours, **options).generate(blob_image(3)), reference)


@pytest.mark.parametrize("multimask", [True, False])
def test_m2m_results_and_progress_do_not_depend_on_batching(multimask):
    """m2m refines every candidate in chunks; the chunking (``points_per_batch``) changes nothing,
    and progress counts the first pass and the refinement (box NMS off: every mask compared)."""
    model = _model()
    runs = {}
    for batch in (64, 5):
        calls = []
        runs[batch] = MaskGenerator(
            model,
            points_per_side=4,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.0,
            box_nms_thresh=1.0,
            use_m2m=True,
            multimask_output=multimask,
            points_per_batch=batch,
            progress=lambda done, total, seen=calls: seen.append((done, total)),
        ).generate(image(2))
        per_point = 3 if multimask else 1
        assert calls[-1] == (16 * (1 + per_point), 16 * (1 + per_point))
    assert len(runs[64]) > 3
    assert_same_masks(runs[5], runs[64], score_atol=1e-5, stability_atol=5e-4)


def test_an_empty_crop_gets_its_whole_message():
    """Crop layers finer than the image: the message names the options, the crop and the way out."""
    generator = MaskGenerator(_model(), crop_n_layers=3)
    with pytest.raises(InvalidInputError) as caught:
        generator.generate(np.zeros((4, 4, 3), dtype=np.uint8))
    assert str(caught.value) == (
        f"crop_n_layers=3, crop_overlap_ratio={generator.crop_overlap_ratio}: the crop [0, 4, 1, 4] (XYXY) "
        "of the 4x4 image is empty; use fewer crop layers or a smaller overlap"
    )
