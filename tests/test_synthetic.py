"""Tests for masklet.synthetic: synthetic scenes / clips and their COCO / DAVIS writers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from masklet.errors import InvalidInputError
from masklet.io import palette
from masklet.masks import masks_to_boxes
from masklet.synthetic import (
    BACKGROUND_KINDS,
    SHAPE_KINDS,
    TEXTURE_KINDS,
    Clip,
    Scene,
    clip_stream,
    make_clip,
    make_scene,
    min_visible_area,
    save_clip_dataset,
    save_scene_dataset,
    scene_stream,
)

MIN_AREA = min_visible_area(256, 256)


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    """50 default scenes (seeds 0..49)."""
    return [make_scene(seed) for seed in range(50)]


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    """30 default 8-frame clips (seeds 0..29)."""
    return [make_clip(seed) for seed in range(30)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def _same_scene(a: Scene, b: Scene) -> bool:
    """True when two scenes are identical bit for bit."""
    return (
        a.image.tobytes() == b.image.tobytes()
        and a.masks.shape == b.masks.shape
        and a.masks.tobytes() == b.masks.tobytes()
        and a.kinds == b.kinds
        and a.textures == b.textures
    )


# ---------------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------------


def test_min_visible_area() -> None:
    assert min_visible_area(256, 256) == 263
    assert min_visible_area(64, 64) == 40
    assert min_visible_area(1024, 1024) == 4195


def test_scene_shapes_and_dtypes(scenes: list[Scene]) -> None:
    for scene in scenes[:10]:
        n = len(scene.masks)
        assert scene.image.shape == (256, 256, 3) and scene.image.dtype == np.uint8
        assert scene.masks.shape == (n, 256, 256) and scene.masks.dtype == np.bool_
        assert 1 <= n <= 6
        assert len(scene.kinds) == len(scene.textures) == n
        assert scene.colors.shape == (n, 3) and scene.colors.dtype == np.uint8
        assert scene.background in BACKGROUND_KINDS
        boxes = scene.boxes
        assert boxes.shape == (n, 4) and boxes.dtype == np.float32
        np.testing.assert_array_equal(boxes, masks_to_boxes(scene.masks).numpy())
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_scene_non_square_size() -> None:
    scene = make_scene(3, size=(64, 96), num_shapes=(3, 5))
    assert scene.image.shape == (64, 96, 3)
    assert scene.masks.shape[1:] == (64, 96)
    assert 1 <= len(scene.masks) <= 5


def test_scene_is_deterministic_and_ignores_global_rng() -> None:
    np.random.seed(0)
    a = make_scene(1234)
    np.random.seed(99)
    np.random.random(1000)
    b = make_scene(1234)
    assert _same_scene(a, b)
    assert not _same_scene(a, make_scene(1235))
    assert a.image.tobytes() != make_scene(1235).image.tobytes()
    assert a.seed == 1234


def test_scene_masks_disjoint_nonempty_and_large_enough(scenes: list[Scene]) -> None:
    for scene in scenes:
        assert scene.masks.sum(axis=0).max() <= 1  # visible masks never overlap
        areas = scene.masks.reshape(len(scene.masks), -1).sum(axis=1)
        assert (areas >= MIN_AREA).all()


def test_scene_mask_pixels_have_the_objects_colour(scenes: list[Scene]) -> None:
    """Inside each flat object's visible mask (away from edges) pixels are that object's colour.

    A mask that wrongly included pixels of a shape drawn on top of it, or of the background,
    would drag the median away from the object's colour.
    """
    checked = 0
    for scene in scenes:
        for mask, texture, color in zip(scene.masks, scene.textures, scene.colors):
            core = ndimage.binary_erosion(mask, iterations=2)
            if texture != "flat" or core.sum() < 30:
                continue
            pixels = scene.image[core].astype(np.float32)
            median = np.median(pixels, axis=0)
            assert np.abs(median - color).max() <= 8, (scene.seed, median, color)
            # nearly all pixels are the object's colour up to noise
            close = (np.abs(pixels - color.astype(np.float32)).max(axis=1) <= 24).mean()
            assert close >= 0.97, (scene.seed, close)
            checked += 1
    assert checked >= 20


def test_scene_mask_edges_follow_the_image(scenes: list[Scene]) -> None:
    """Flat objects: the pixels just outside a mask differ from the object more than inside."""
    for scene in scenes[:20]:
        for mask, texture, color in zip(scene.masks, scene.textures, scene.colors):
            if texture != "flat":
                continue
            ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
            core = ndimage.binary_erosion(mask, iterations=2)
            if core.sum() < 30 or ring.sum() < 30:
                continue
            dist = np.abs(scene.image.astype(np.float32) - color.astype(np.float32)).max(axis=2)
            assert np.median(dist[ring]) > np.median(dist[core]), scene.seed


def test_scene_variety(scenes: list[Scene]) -> None:
    kinds = {k for scene in scenes for k in scene.kinds}
    textures = {t for scene in scenes for t in scene.textures}
    backgrounds = {scene.background for scene in scenes}
    assert kinds == set(SHAPE_KINDS)
    assert textures == set(TEXTURE_KINDS)
    assert backgrounds == set(BACKGROUND_KINDS)
    counts = np.array([len(scene.masks) for scene in scenes])
    assert counts.min() >= 1 and counts.max() <= 6
    assert counts.mean() >= 3.0 and len(set(counts.tolist())) >= 4
    overlapping = sum(  # some instance is partly hidden: another mask borders it
        any((ndimage.binary_dilation(m) & scene.masks[j + 1 :].any(axis=0)).any() for j, m in enumerate(scene.masks))
        for scene in scenes
    )
    assert overlapping >= 15
    # the images themselves differ in colour statistics
    means = np.array([scene.image.reshape(-1, 3).mean(axis=0) for scene in scenes])
    assert means.std(axis=0).min() > 20


@pytest.mark.parametrize("num_shapes", [(1, 1), (3, 3), (8, 12)])
def test_scene_num_shapes_bounds_instances(num_shapes: tuple[int, int]) -> None:
    counts = [len(make_scene(seed, size=128, num_shapes=num_shapes).masks) for seed in range(10)]
    assert all(1 <= c <= num_shapes[1] for c in counts)
    if num_shapes[0] >= 8:
        assert max(counts) >= 5


# ---------------------------------------------------------------------------------------------
# clips
# ---------------------------------------------------------------------------------------------


def test_clip_shapes_and_dtypes(clips: list[Clip]) -> None:
    for clip in clips[:10]:
        t, n = clip.masks.shape[:2]
        assert t == 8 and 2 <= n <= 4
        assert clip.frames.shape == (8, 256, 256, 3) and clip.frames.dtype == np.uint8
        assert clip.masks.shape == (8, n, 256, 256) and clip.masks.dtype == np.bool_
        np.testing.assert_array_equal(clip.object_ids, np.arange(1, n + 1))
        assert clip.amodal_areas.shape == (8, n)
        assert len(clip.kinds) == len(clip.textures) == len(clip.motions) == n
        assert clip.boxes.shape == (8, n, 4)
        visible = clip.masks.sum(axis=(2, 3))
        assert (visible <= clip.amodal_areas).all()
        assert (clip.masks.sum(axis=1) <= 1).all()  # disjoint in every frame
        assert (visible[0] >= MIN_AREA).all()  # promptable in frame 0


def test_clip_other_sizes() -> None:
    clip = make_clip(1, num_frames=1, size=(48, 80), num_objects=(1, 1))
    assert clip.frames.shape == (1, 48, 80, 3) and clip.masks.shape == (1, 1, 48, 80)
    assert clip.masks[0, 0].sum() >= min_visible_area(48, 80)
    clip = make_clip(2, num_frames=20, size=64, num_objects=(5, 6))
    assert clip.frames.shape == (20, 64, 64, 3) and clip.masks.shape[1] in (5, 6)


def test_clip_with_many_objects_keeps_all_visible_in_frame0() -> None:
    clip = make_clip(3, num_frames=2, size=64, num_objects=(20, 20))
    assert clip.masks.shape[1] == 20
    assert (clip.masks[0].sum(axis=(1, 2)) >= min_visible_area(64, 64)).all()
    with pytest.raises(InvalidInputError, match="num_objects"):
        make_clip(0, size=64, num_objects=(200, 200))  # cannot all be visible


def test_clip_is_deterministic() -> None:
    np.random.seed(1)
    a = make_clip(77, num_frames=4, size=96)
    np.random.seed(2)
    b = make_clip(77, num_frames=4, size=96)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.masks.tobytes() == b.masks.tobytes()
    c = make_clip(78, num_frames=4, size=96)
    assert a.frames.tobytes() != c.frames.tobytes()


def test_clip_objects_move_smoothly(clips: list[Clip]) -> None:
    ious = []
    for clip in clips:
        visible = clip.masks.sum(axis=(2, 3))
        for n in range(clip.masks.shape[1]):
            for t in range(clip.masks.shape[0] - 1):
                if visible[t, n] >= 100 and visible[t + 1, n] >= 100:
                    ious.append(_iou(clip.masks[t, n], clip.masks[t + 1, n]))
    ious_arr = np.array(ious)
    assert len(ious_arr) >= 300
    assert np.median(ious_arr) >= 0.7
    assert (ious_arr >= 0.5).mean() >= 0.85


def test_clip_objects_do_move(clips: list[Clip]) -> None:
    moved = sum(_iou(clip.masks[0, n], clip.masks[-1, n]) < 0.9 for clip in clips for n in range(clip.masks.shape[1]))
    total = sum(clip.masks.shape[1] for clip in clips)
    assert moved >= 0.7 * total


def test_clips_have_entering_leaving_and_occlusion(clips: list[Clip]) -> None:
    left = entered = occluded = 0
    for clip in clips:
        visible = clip.masks.sum(axis=(2, 3))
        for n in range(clip.masks.shape[1]):
            gone = (clip.amodal_areas[1:, n] == 0) & (visible[1:, n] == 0)
            left += bool(gone.any())
            on_border = (
                clip.masks[0, n, 0].any()
                or clip.masks[0, n, -1].any()
                or clip.masks[0, n, :, 0].any()
                or clip.masks[0, n, :, -1].any()
            )
            entered += bool(on_border and visible[1:, n].max() >= 1.5 * visible[0, n])
            occluded += bool((visible[:, n] < 0.8 * clip.amodal_areas[:, n]).any())
    assert left >= 5 and entered >= 5 and occluded >= 5
    motions = {m for clip in clips for m in clip.motions}
    assert motions == {"roam", "enter", "leave"}


@pytest.mark.parametrize("num_frames", [3, 8, 15])
def test_crossing_clips_overlap_and_start_visible(num_frames: int) -> None:
    for seed in range(6):
        clip = make_clip(seed, num_frames=num_frames, crossing=True)
        assert clip.masks.shape[1] == 2 and clip.motions == ("cross", "cross")
        visible = clip.masks.sum(axis=(2, 3))
        assert (visible[0] >= MIN_AREA).all()  # both promptable in frame 0
        hidden = clip.amodal_areas - visible  # pixels of each object covered by the other
        t = int(np.argmax(hidden.max(axis=1)))
        back = int(np.argmax(hidden[t]))
        front = 1 - back
        assert hidden[t, back] >= 0.2 * clip.amodal_areas[t, back]
        assert (hidden[:, front] == 0).all()  # constant z-order: the front one is never hidden
        # the hidden part lies under the front object, which borders the back one (if still seen)
        if clip.masks[t, back].any():
            grown = ndimage.binary_dilation(clip.masks[t, front])
            assert (grown & clip.masks[t, back]).any()
        assert 0 < t < num_frames - 1  # they cross mid-clip, not at the ends


def test_crossing_objects_start_apart() -> None:
    apart = 0
    for seed in range(10):
        clip = make_clip(seed, crossing=True)
        hidden0 = clip.amodal_areas[0] - clip.masks[0].sum(axis=(1, 2))
        apart += bool((hidden0 == 0).all())
    assert apart >= 7


# ---------------------------------------------------------------------------------------------
# streams and datasets
# ---------------------------------------------------------------------------------------------


def test_streams_are_deterministic_and_infinite() -> None:
    a = scene_stream(5, size=64)
    first = [next(a) for _ in range(4)]
    again = [next(scene_stream(5, size=64)) for _ in range(1)]
    assert _same_scene(first[0], again[0])
    assert len({s.seed for s in first}) == 4
    assert all(s.image.shape == (64, 64, 3) for s in first)
    assert _same_scene(first[2], make_scene(first[2].seed, size=64))
    assert not _same_scene(first[0], next(scene_stream(6, size=64)))
    b = clip_stream(5, num_frames=2, size=64)
    c0, c1 = next(b), next(b)
    assert c0.frames.shape == (2, 64, 64, 3) and c0.seed != c1.seed
    c0_again = next(clip_stream(5, num_frames=2, size=64))
    assert c0.frames.tobytes() == c0_again.frames.tobytes()


def test_streams_validate_eagerly() -> None:
    with pytest.raises(InvalidInputError):
        scene_stream(0, size=8)
    with pytest.raises(InvalidInputError):
        clip_stream(0, num_frames=0)
    with pytest.raises(InvalidInputError):
        scene_stream(-1)
    with pytest.raises(TypeError):
        scene_stream(0, colour="red")


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_scene_dataset_round_trips_through_pycocotools(tmp_path: Path) -> None:
    coco_module = pytest.importorskip("pycocotools.coco")
    root = save_scene_dataset(tmp_path / "coco", count=4, seed=11, size=(64, 80))
    assert root == tmp_path / "coco"
    coco = coco_module.COCO(str(root / "annotations.json"))
    data = json.loads((root / "annotations.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    stream = scene_stream(11, size=(64, 80))
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4]
    total = 0
    for image_id in range(1, 5):
        scene = next(stream)
        info = coco.loadImgs(image_id)[0]
        assert (info["height"], info["width"]) == (64, 80)
        pixels = np.asarray(Image.open(root / "images" / info["file_name"]))
        np.testing.assert_array_equal(pixels, scene.image)  # PNG is lossless
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) == len(scene.masks)
        for ann, mask, box in zip(anns, scene.masks, scene.boxes):
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
            assert ann["area"] == mask.sum()
            x0, y0, x1, y1 = box.tolist()
            assert ann["bbox"] == [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert isinstance(ann["segmentation"]["counts"], str)
        total += len(anns)
    assert len(data["annotations"]) == total
    assert len({a["id"] for a in data["annotations"]}) == total


def test_clip_dataset_round_trips(tmp_path: Path) -> None:
    root = save_clip_dataset(tmp_path / "davis", count=2, seed=4, num_frames=3, size=64)
    assert sorted(p.name for p in (root / "JPEGImages").iterdir()) == ["clip00000", "clip00001"]
    stream = clip_stream(4, num_frames=3, size=64)
    for name in ("clip00000", "clip00001"):
        clip = next(stream)
        frames = sorted((root / "JPEGImages" / name).iterdir())
        labels = sorted((root / "Annotations" / name).iterdir())
        assert [p.name for p in frames] == ["00000.jpg", "00001.jpg", "00002.jpg"]
        assert [p.name for p in labels] == ["00000.png", "00001.png", "00002.png"]
        for t in range(3):
            jpeg = np.asarray(Image.open(frames[t]).convert("RGB")).astype(np.int16)
            assert np.abs(jpeg - clip.frames[t]).mean() < 3.0
            png = Image.open(labels[t])
            assert png.mode == "P"
            pal = np.array(png.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
            np.testing.assert_array_equal(pal[0], [0, 0, 0])
            np.testing.assert_array_equal(pal[1:5], palette(4))
            ids = np.asarray(png)
            for obj_id, mask in zip(clip.object_ids, clip.masks[t]):
                np.testing.assert_array_equal(ids == obj_id, mask)
            assert ((ids == 0) == ~clip.masks[t].any(axis=0)).all()


# ---------------------------------------------------------------------------------------------
# speed and errors
# ---------------------------------------------------------------------------------------------


def test_generation_speed() -> None:
    make_scene(0)
    start = time.perf_counter()
    for seed in range(20):
        make_scene(seed)
    scene_ms = (time.perf_counter() - start) / 20 * 1e3
    start = time.perf_counter()
    for seed in range(5):
        make_clip(seed)
    clip_ms = (time.perf_counter() - start) / 5 * 1e3
    # typical: ~5 ms per 256 px scene, ~20 ms per 8-frame clip; generous bounds for slow CI
    assert scene_ms < 40, scene_ms
    assert clip_ms < 240, clip_ms


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 16},
        {"size": 31},
        {"size": (256, 8)},
        {"size": (256,)},
        {"size": "256"},
        {"size": 64.0},
        {"size": True},
        {"size": 100_000},
        {"num_shapes": (0, 2)},
        {"num_shapes": (3, 2)},
        {"num_shapes": (2,)},
        {"num_shapes": 4},
        {"num_shapes": (1.0, 2)},
        {"num_shapes": (1, 300)},
        {"seed": -1},
        {"seed": 1.5},
        {"seed": True},
        {"seed": "1"},
    ],
)
def test_make_scene_rejects_bad_arguments(kwargs: dict) -> None:
    args = {"seed": 0, **kwargs}
    with pytest.raises(InvalidInputError):
        make_scene(**args)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_frames": 0},
        {"num_frames": -3},
        {"num_frames": 2.0},
        {"num_frames": 2, "crossing": True},
        {"size": 8},
        {"num_objects": (0, 1)},
        {"num_objects": (4, 2)},
        {"num_objects": (1, 256)},
        {"crossing": "yes"},
        {"seed": -5},
    ],
)
def test_make_clip_rejects_bad_arguments(kwargs: dict) -> None:
    args = {"seed": 0, **kwargs}
    with pytest.raises(InvalidInputError):
        make_clip(**args)


def test_dataset_writers_reject_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        save_scene_dataset(tmp_path, count=0, seed=0)
    with pytest.raises(InvalidInputError):
        save_scene_dataset(tmp_path, count=1, seed=0, size=4)
    with pytest.raises(InvalidInputError):
        save_clip_dataset(tmp_path, count=-1, seed=0)
    with pytest.raises(InvalidInputError):
        save_clip_dataset(tmp_path, count=1, seed=0, num_frames=0)
    with pytest.raises(InvalidInputError):
        save_clip_dataset(tmp_path, count=1, seed=-1)


def test_error_messages_name_the_argument() -> None:
    with pytest.raises(InvalidInputError, match="size"):
        make_scene(0, size=10)
    with pytest.raises(InvalidInputError, match="num_shapes"):
        make_scene(0, num_shapes=(5, 1))
    with pytest.raises(InvalidInputError, match="num_frames"):
        make_clip(0, num_frames=0)
    with pytest.raises(InvalidInputError, match="num_objects"):
        make_clip(0, num_objects=(3, 1))


def test_grayscale_and_multicolor_mix() -> None:
    from masklet.synthetic import MULTICOLOR_TEXTURE_KINDS

    plain = make_scene(21, size=96)
    multi = make_scene(21, size=96, multicolor_share=1.0)
    assert set(multi.textures) <= set(MULTICOLOR_TEXTURE_KINDS) and not multi.grayscale
    np.testing.assert_array_equal(multi.masks, plain.masks)  # colours change, shapes do not
    assert multi.image.tobytes() != plain.image.tobytes()
    assert _same_scene(multi, make_scene(21, size=96, multicolor_share=1.0))
    for mask in multi.masks:  # several distinct colours inside one object
        core = ndimage.binary_erosion(mask, iterations=2)
        if core.sum() >= 100:
            colours = np.unique(multi.image[core] // 32, axis=0)
            assert len(colours) >= 2
    gray = make_scene(21, size=96, grayscale_share=1.0)
    assert gray.grayscale and (gray.image[..., 0] == gray.image[..., 1]).all()
    assert (gray.image[..., 1] == gray.image[..., 2]).all()
    assert _same_scene(gray, make_scene(21, size=96, grayscale_share=1.0))
    assert gray.masks.sum(axis=0).max() <= 1 and (gray.masks.reshape(len(gray.masks), -1).sum(1) >= 40).all()
    clip = make_clip(4, num_frames=3, size=96, grayscale_share=1.0, multicolor_share=1.0)
    assert clip.grayscale and (clip.frames[..., 0] == clip.frames[..., 2]).all()
    with pytest.raises(InvalidInputError, match="grayscale_share"):
        make_scene(0, grayscale_share=2.0)
