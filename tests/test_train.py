"""Fine-tuning: prompt sampling, losses, a short run that lowers the loss, checkpoints, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masklet import load_model
from masklet.model import Sam2Model, variant_config
from masklet.train import ImageSample, TrainConfig, Trainer, VideoSample
from masklet.train.losses import dice_loss, mask_iou, sam_loss, sigmoid_focal_loss
from masklet.train.prompts import corrective_clicks, initial_clicks, jittered_boxes


def rectangles(seed: int, count: int | None = None):
    """Images of three coloured rectangles (a tiny, learnable dataset)."""
    rng = np.random.default_rng(seed)
    made = 0
    while count is None or made < count:
        image = np.full((256, 256, 3), 40, np.uint8)
        masks = []
        for _ in range(3):
            x0, y0 = rng.integers(0, 180, 2)
            w, h = rng.integers(30, 75, 2)
            m = np.zeros((256, 256), bool)
            m[y0 : y0 + h, x0 : x0 + w] = True
            for prev in masks:
                prev &= ~m
            image[m] = rng.integers(90, 255, 3)
            masks.append(m)
        made += 1
        yield ImageSample(image, np.stack(masks))


def moving_square(seed: int):
    rng = np.random.default_rng(seed)
    while True:
        x, y = rng.integers(20, 150, 2)
        frames, masks = [], []
        for t in range(3):
            image = np.full((256, 256, 3), 40, np.uint8)
            m = np.zeros((1, 256, 256), bool)
            m[0, y + 6 * t : y + 6 * t + 50, x + 6 * t : x + 6 * t + 50] = True
            image[m[0]] = (200, 80, 30)
            frames.append(image)
            masks.append(m)
        yield VideoSample(np.stack(frames), np.stack(masks))


def test_prompts_come_from_the_ground_truth():
    g = torch.Generator().manual_seed(0)
    gt = torch.zeros(3, 40, 50, dtype=torch.bool)
    gt[0, 5:20, 10:30] = True
    gt[1, 30:38, 0:5] = True
    gt[2, 0:40, 45:50] = True
    points, labels = initial_clicks(gt, g)
    assert points.shape == (3, 1, 2) and (labels == 1).all()
    for i in range(3):
        x, y = points[i, 0].long()
        assert gt[i, y, x]
    corners, corner_labels = jittered_boxes(gt, g)
    assert corners.shape == (3, 2, 2) and corner_labels.tolist() == [[2, 3]] * 3
    assert (corners[:, 0] <= corners[:, 1]).all() and (corners >= 0).all()
    assert (corners[0] - torch.tensor([[10.0, 5.0], [29.0, 19.0]])).abs().max() <= 2.0 + 1e-6
    pred = gt.clone()
    pred[0, 5:20, 10:20] = False  # missed part: the correction must be positive there
    pred[1, 0:5, 40:50] = True  # extra part: the correction must be negative there
    points, labels = corrective_clicks(gt, pred, g)
    x, y = points[0, 0].long()
    assert labels[0, 0] == 1 and gt[0, y, x] and not pred[0, y, x]
    x, y = points[1, 0].long()
    assert labels[1, 0] == 0 and pred[1, y, x] and not gt[1, y, x]


def test_losses():
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50
    assert sigmoid_focal_loss(perfect, target).max() < 1e-6
    assert dice_loss(perfect, target).max() < 1e-3
    assert dice_loss(-perfect, target).min() > 0.9
    assert mask_iou(perfect > 0, target > 0).tolist() == [1.0, 1.0]
    # best-of-three: a good candidate among bad ones gives a low mask loss
    logits = torch.stack([-perfect, perfect, -perfect], dim=1)
    losses = sam_loss(logits, torch.tensor([[0.0, 1.0, 0.0]] * 2), torch.full((2, 1), 10.0), target > 0)
    assert losses["focal"] < 1e-5 and losses["iou"] < 1e-5 and losses["total"] < 0.01


def _held_out_loss(trainer: Trainer, batch: list[ImageSample]) -> float:
    trainer.generator.manual_seed(123)
    trainer.rng.seed(123)
    with torch.no_grad():
        return float(trainer.image_step(batch)["total"])


def test_a_few_steps_lower_the_loss_and_checkpoints_reload(tmp_path):
    torch.manual_seed(0)
    model = Sam2Model(variant_config("masklet-nano"))
    data = list(rectangles(1, count=4))
    config = TrainConfig(steps=30, batch_size=4, lr=1e-3, warmup_steps=3, save_every=15, correction_rounds=1)
    trainer = Trainer(model, config, images=data, out_dir=tmp_path)
    before = _held_out_loss(trainer, data)
    trainer.generator.manual_seed(0)
    history = trainer.fit(progress=False)
    after = _held_out_loss(trainer, data)
    assert len(history) == 30 and not model.training
    assert after < 0.7 * before, (before, after)

    reloaded = load_model(tmp_path / "model.pt")  # model.yaml beside it gives the config
    assert reloaded.config == model.config
    for name, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name

    # the official package loads the very same checkpoint strictly
    import yaml
    from hydra.utils import instantiate

    official_dict = yaml.safe_load((tmp_path / "model.yaml").read_text())["model"]
    official = instantiate(official_dict, _recursive_=True)
    official.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True)["model"], strict=True)


def test_freeze_resume_and_video_steps(tmp_path):
    torch.manual_seed(1)
    model = Sam2Model(variant_config("masklet-nano"))
    encoder_before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    decoder_before = model.sam_mask_decoder.output_upscaling[0].weight.clone()
    config = TrainConfig(steps=4, batch_size=2, warmup_steps=1, video_fraction=0.5, freeze=("image_encoder",), seed=3)
    trainer = Trainer(model, config, images=rectangles, videos=moving_square, out_dir=tmp_path)
    history = trainer.fit(progress=False)
    assert {r["video"] for r in history} == {0.0, 1.0}, "both kinds of step ran"
    for k, v in model.image_encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k]), f"{k} changed although frozen"
    assert not torch.equal(model.sam_mask_decoder.output_upscaling[0].weight, decoder_before)

    resumed = Trainer(
        Sam2Model(variant_config("masklet-nano")),
        TrainConfig(**{**config.__dict__, "steps": 6}),
        images=rectangles,
        videos=moving_square,
        out_dir=tmp_path,
    )
    resumed.resume(tmp_path)
    assert resumed.step == 4 and len(resumed.history) == 4
    assert torch.equal(
        resumed.model.sam_mask_decoder.output_upscaling[0].weight, model.sam_mask_decoder.output_upscaling[0].weight
    )
    resumed.fit(progress=False)
    assert resumed.step == 6


def test_bad_training_arguments():
    model = Sam2Model(variant_config("masklet-nano"))
    from masklet import InvalidInputError

    with pytest.raises(InvalidInputError, match="freeze"):
        Trainer(model, TrainConfig(freeze=("encoder_of_nothing",)), images=rectangles)
    with pytest.raises(InvalidInputError, match="video dataset"):
        Trainer(model, TrainConfig(video_fraction=0.5), images=rectangles)
    with pytest.raises(InvalidInputError, match="prob_video_mask_prompt"):
        Trainer(model, TrainConfig(prob_video_mask_prompt=1.5), images=rectangles)


def test_mask_prompted_clips_train_the_decoder_reading_of_the_mask():
    # with the first frame prompted by its mask, that frame's mask is given as the output; the SAM
    # heads that read it into the object pointer are supervised on that frame itself (a one-frame
    # clip has no later frame through which the pointer could be trained)
    torch.manual_seed(2)
    model = Sam2Model(variant_config("masklet-nano"))
    trainer = Trainer(model, TrainConfig(video_fraction=1.0, prob_video_mask_prompt=1.0), videos=moving_square)
    model.train()
    clip = next(moving_square(0))
    losses = trainer.video_step(VideoSample(clip.frames[:1], clip.masks[:1]))
    assert torch.isfinite(losses["total"]) and losses["focal"] > 0 and losses["dice"] > 0
    losses["total"].backward()
    for module in (model.mask_downsample, model.sam_mask_decoder.iou_prediction_head.layers[0]):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0


def test_training_after_inference_mode_evaluation():
    # RoPE tables first built under torch.inference_mode (evaluation) must not break a later
    # training step: inference tensors cannot be saved for backward
    torch.manual_seed(3)
    model = Sam2Model(variant_config("masklet-nano")).eval()
    from masklet.video import VideoPredictor

    clip = next(moving_square(0))
    predictor = VideoPredictor(model)
    state = predictor.init_state(list(clip.frames))
    predictor.add_new_mask(state, 0, 1, clip.masks[0, 0])
    assert len(list(predictor.propagate_in_video(state))) == 3
    trainer = Trainer(model, TrainConfig(video_fraction=1.0, prob_video_mask_prompt=0.0), videos=moving_square)
    model.train()
    trainer.video_step(next(moving_square(0)))["total"].backward()
    assert model.memory_attention.layers[0].self_attn.q_proj.weight.grad is not None


def test_synthetic_clips_mix_crossing_clips():
    from masklet import InvalidInputError
    from masklet.synthetic import make_clip
    from masklet.train import synthetic_clips
    from masklet.train.data import HELD_OUT_SEED, training_seeds

    seeds = training_seeds(5)
    items = [next(seeds) for _ in range(10)]
    assert len(set(items)) == 10 and all(s >= 2**63 > HELD_OUT_SEED + 10**6 for s in items)
    mixed = synthetic_clips(5, size=96, num_frames=3, crossing_share=0.5, grayscale_share=0, multicolor_share=0)
    kinds = []
    for item in items:
        clip = next(mixed)
        free = make_clip(item, num_frames=3, size=96)
        if np.array_equal(clip.frames, free.frames):
            kinds.append("free")
        else:
            crossing = make_clip(item, num_frames=3, size=96, crossing=True)
            assert np.array_equal(clip.frames, crossing.frames) and clip.masks.shape[1] == 2
            kinds.append("crossing")
    assert set(kinds) == {"free", "crossing"}
    with pytest.raises(InvalidInputError, match="crossing_share"):
        next(synthetic_clips(0, crossing_share=1.5))


def test_step_stream_workers_reproducible_and_disjoint():
    from masklet.train import synthetic_images
    from masklet.train.loader import StepStream, stream_seed

    stream = StepStream(
        synthetic_images, None, size=64, batch_size=2, clips_per_step=1, max_objects=3, video_fraction=0.0, seed=0
    )
    a = [next(stream.worker_streams(w, 2)) for w in range(2)]
    b = [next(stream.worker_streams(w, 2)) for w in range(2)]
    assert all(torch.equal(x.pixels, y.pixels) for x, y in zip(a, b))
    assert not torch.equal(a[0].pixels, a[1].pixels)
    assert len({stream_seed(0, "images", w) for w in range(8)}) == 8
    assert a[0].pixels.shape == (2, 3, 64, 64) and a[0].masks.shape[0] == a[0].owners.shape[0]
