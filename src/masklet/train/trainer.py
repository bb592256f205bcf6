"""Train or fine-tune a masklet model on instance masks, as SAM2 was trained.

Image steps: prompts sampled from the ground truth (a click inside the object or a jittered box),
then corrective clicks in the error region over several rounds, with the previous logits as mask
input. Video steps: the first frame of a clip is prompted (click, box or the ground-truth mask) and
the others are tracked through memory; on a mask-prompted frame the SAM heads' reading of the
mask (which yields the object pointer) is supervised too. Losses: focal + dice on the best of the
candidate masks, L1 on the predicted IoU, BCE on the object score.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints import save_checkpoint, save_official_yaml
from ..errors import InvalidInputError
from ..model import ImageFeatures, MemoryBank, Sam2Model, TrackStepOutput
from ..model.common import to_maps, to_sequence
from ..transforms import preprocess, upscale_masks
from .data import ImageSample, VideoSample, endless
from .losses import LossWeights, sam_loss
from .prompts import corrective_clicks, initial_clicks, jittered_boxes


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run."""

    steps: int = 1000
    batch_size: int = 4  # images per image step
    max_objects: int = 4  # objects per image (or clip) per step
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    grad_clip: float = 1.0
    correction_rounds: int = 2  # corrective clicks after the first prompt, per image step
    prob_box: float = 0.5  # first prompt is a box (else a click)
    prob_mask_input: float = 0.5  # corrective rounds also feed the previous logits
    video_fraction: float = 0.0  # share of steps that train on clips
    prob_video_mask_prompt: float = 0.2  # first frame prompted with the ground-truth mask
    freeze: tuple[str, ...] = ()  # parameter-name prefixes kept fixed, e.g. ("image_encoder",)
    save_every: int = 500
    seed: int = 0
    loss_weights: LossWeights = field(default_factory=LossWeights)


class Trainer:
    """Runs training steps on a :class:`Sam2Model` and saves official-format checkpoints.

    ``images`` and ``videos`` are datasets (``len`` + indexing) or generator functions of a seed
    yielding :class:`ImageSample` / :class:`VideoSample`.
    """

    def __init__(
        self,
        model: Sam2Model,
        config: TrainConfig,
        images: Iterable[ImageSample] | None = None,
        videos: Iterable[VideoSample] | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        for name in ("prob_box", "prob_mask_input", "video_fraction", "prob_video_mask_prompt"):
            value = getattr(config, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"{name}: expected a probability in [0, 1], got {value!r}")
        if images is None and config.video_fraction < 1:
            raise InvalidInputError("images: an image dataset is needed unless video_fraction is 1")
        if videos is None and config.video_fraction > 0:
            raise InvalidInputError("videos: a video dataset is needed when video_fraction > 0")
        self.model, self.config = model, config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = model.device
        names = [n for n, _ in model.named_parameters()]
        unknown = [p for p in config.freeze if not any(n.startswith(p) for n in names)]
        if unknown:
            raise InvalidInputError(
                f"freeze: no parameters start with {unknown}; e.g. 'image_encoder', 'memory_attention'"
            )
        for name, param in model.named_parameters():
            param.requires_grad_(not any(name.startswith(p) for p in config.freeze))
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.generator = torch.Generator().manual_seed(config.seed)
        self.rng = random.Random(config.seed)
        self._images = endless(images, config.seed) if images is not None else None
        self._videos = endless(videos, config.seed + 1) if videos is not None else None

    def _lr_factor(self, step: int) -> float:
        warm = self.config.warmup_steps
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, self.config.steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # ------------------------------------------------------------------ loop

    def fit(self, progress: bool = True) -> list[dict[str, float]]:
        """Train until ``config.steps``; saves every ``save_every`` steps and at the end."""
        from tqdm.auto import tqdm

        self.model.train()
        # Tiny gradients and moments become denormal floats, which slow CPU kernels by orders
        # of magnitude; flush them to zero while training (restored afterwards).
        flush = torch.set_flush_denormal(True)
        try:
            self._loop(tqdm, progress)
        finally:
            if flush:
                torch.set_flush_denormal(False)
        self.model.eval()
        return self.history

    def _loop(self, tqdm, progress: bool) -> None:
        bar = tqdm(total=self.config.steps, initial=self.step, disable=not progress, desc="training")
        while self.step < self.config.steps:
            video = self._videos is not None and self.rng.random() < self.config.video_fraction
            if video:
                assert self._videos is not None  # video_fraction > 0 only draws videos when given
                losses = self.video_step(next(self._videos))
            else:
                assert self._images is not None
                losses = self.image_step([next(self._images) for _ in range(self.config.batch_size)])
            self.optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], self.config.grad_clip
                )
            self.optimizer.step()
            self.schedule.step()
            self.step += 1
            record = {k: float(v.detach()) for k, v in losses.items()} | {"step": self.step, "video": float(video)}
            self.history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['total']:.3f}", kind="video" if video else "image")
            if self.out_dir is not None and (self.step % self.config.save_every == 0 or self.step == self.config.steps):
                self.save(self.out_dir)
        bar.close()

    # ------------------------------------------------------------- image step

    def _targets(self, masks: np.ndarray) -> torch.Tensor:
        """(N, H, W) masks -> (N, S, S) bool at the model's input resolution."""
        t = torch.from_numpy(np.ascontiguousarray(masks)).to(self.device)
        size = self.model.image_size
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t[:, None].float(), size=(size, size), mode="nearest")[:, 0] > 0.5
        return t.bool()

    def _pick_objects(self, masks: torch.Tensor) -> torch.Tensor:
        present = [i for i in range(masks.shape[0]) if masks[i].any()]
        self.rng.shuffle(present)
        return masks[sorted(present[: self.config.max_objects])]

    def _encode(self, images: list[np.ndarray]) -> ImageFeatures:
        size, device, dtype = self.model.image_size, self.device, self.model.encoder_dtype
        return self.model.encode_image(torch.cat([preprocess(img, size, device, dtype) for img in images]))

    def image_step(self, batch: list[ImageSample]) -> dict[str, torch.Tensor]:
        """Losses of one batch of images over the first prompt and the corrective rounds."""
        c = self.config
        levels = self.model.image_embeddings(self._encode([s.image for s in batch]))
        targets, owners = [], []
        for i, sample in enumerate(batch):
            picked = self._pick_objects(self._targets(sample.masks))
            targets.append(picked)
            owners += [i] * picked.shape[0]
        if not owners:
            raise InvalidInputError("a training batch has no object with a non-empty mask")
        gt = torch.cat(targets)  # (K, S, S)
        index = torch.tensor(owners, device=self.device)
        embed = levels[-1][index]
        high_res = [level[index] for level in levels[:-1]] or None

        use_box = self.rng.random() < c.prob_box
        points = jittered_boxes(gt, self.generator) if use_box else initial_clicks(gt, self.generator)
        mask_input = None
        totals: dict[str, torch.Tensor] = {}
        rounds = 1 + c.correction_rounds
        for r in range(rounds):
            multimask = r == 0 and not use_box  # one click is ambiguous: three candidates
            low_res, iou, obj = self.model.decode_masks(embed, high_res, points, mask_input, multimask)
            full = upscale_masks(low_res, gt.shape[-2:])
            losses = sam_loss(full, iou, obj, gt, c.loss_weights)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0) + v / rounds
            if r + 1 < rounds:
                best = iou.argmax(dim=1)
                rows = torch.arange(gt.shape[0], device=self.device)
                chosen = low_res[rows, best].detach()  # (K, h, w)
                new_points, new_labels = corrective_clicks(
                    gt,
                    upscale_masks(chosen[:, None], gt.shape[-2:])[:, 0] > 0,
                    self.generator,
                )
                points = (torch.cat((points[0], new_points), 1), torch.cat((points[1], new_labels), 1))
                mask_input = chosen[:, None] if self.rng.random() < c.prob_mask_input else None
        return totals

    # ------------------------------------------------------------- video step

    def video_step(self, clip: VideoSample) -> dict[str, torch.Tensor]:
        """Losses of one clip: frame 0 prompted, the other frames tracked through memory."""
        c = self.config
        model = self.model
        frames = clip.frames
        masks = torch.stack([self._targets(m) for m in clip.masks])  # (T, N, S, S)
        visible = [n for n in range(masks.shape[1]) if masks[0, n].any()]
        self.rng.shuffle(visible)
        chosen = sorted(visible[: c.max_objects])
        if not chosen:
            raise InvalidInputError("a training clip has no object visible in its first frame")
        masks = masks[:, chosen]
        num_frames, num_obj = masks.shape[:2]
        features = self._encode(list(frames))
        levels, positions = features.levels, features.positions
        sizes = [(int(level.shape[-2]), int(level.shape[-1])) for level in levels]
        cond: dict[int, TrackStepOutput] = {}
        non_cond: dict[int, TrackStepOutput] = {}
        bank = MemoryBank(cond=cond, non_cond=non_cond)
        totals: dict[str, torch.Tensor] = {}
        counted = 0
        for t in range(num_frames):
            feats = [to_sequence(level[t : t + 1].expand(num_obj, -1, -1, -1)) for level in levels]
            pos = [to_sequence(p[t : t + 1].expand(num_obj, -1, -1, -1)) for p in positions]
            point_inputs = mask_inputs = None
            if t == 0:
                if self.rng.random() < c.prob_video_mask_prompt:
                    mask_inputs = masks[0][:, None].float()
                else:
                    prompt = jittered_boxes if self.rng.random() < c.prob_box else initial_clicks
                    coords, labels = prompt(masks[0], self.generator)
                    point_inputs = {"point_coords": coords, "point_labels": labels}
            out = model.track_step(
                t,
                t == 0,
                feats,
                pos,
                sizes,
                point_inputs,
                mask_inputs,
                bank,
                num_frames,
            )
            (cond if t == 0 else non_cond)[t] = out
            if mask_inputs is not None:
                # The mask is the output as given; what is learnt is the SAM decoder's reading of it,
                # whose output token becomes the object pointer: supervise its mask, so the pointer
                # describes this object rather than the image.
                low_res, ious, object_logits = self._decode_given_mask(feats, sizes, mask_inputs)
            else:
                low_res, ious, object_logits = out.pred_multimasks, out.ious, out.object_score_logits
            full = upscale_masks(low_res, masks.shape[-2:], dtype=None)
            losses = sam_loss(full, ious, object_logits, masks[t], c.loss_weights)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0) + v
            counted += 1
        return {k: v / counted for k, v in totals.items()}

    def _decode_given_mask(
        self, feats: list[torch.Tensor], sizes: list[tuple[int, int]], mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The SAM heads on a frame prompted by ``mask`` (B, 1, S, S), as the tracker runs them to
        get the object pointer: low-res masks (B, 1, h, w), IoU (B, 1), object logits (B, 1)."""
        model = self.model
        maps = [to_maps(x, s) for x, s in zip(feats, sizes)]
        sam = model.forward_sam_heads(
            maps[-1],
            mask_inputs=model.mask_downsample(mask.to(model.mask_downsample.weight.dtype)),
            high_res_features=maps[:-1] or None,
        )
        return sam.low_res_multimasks, sam.ious, sam.object_score_logits

    # ------------------------------------------------------------ checkpoints

    def save(self, out_dir: str | Path, name: str = "model") -> Path:
        """Write ``name.pt`` (official format), ``name.yaml`` (official config) and the trainer state."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.model, out / f"{name}.pt")
        save_official_yaml(self.model.config, out / f"{name}.yaml")
        torch.save(
            {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "generator": self.generator.get_state(),
                "rng": self.rng.getstate(),
                "history": self.history,
                "config": asdict(self.config),
            },
            out / "trainer_state.pt",
        )
        return out / f"{name}.pt"

    def resume(self, out_dir: str | Path, name: str = "model") -> None:
        """Continue a run saved by :meth:`save`: weights, optimizer, schedule, step and RNG state."""
        from ..checkpoints import load_state_dict_strict, read_checkpoint

        out = Path(out_dir)
        state, _ = read_checkpoint(out / f"{name}.pt")
        load_state_dict_strict(self.model, state)
        saved = torch.load(out / "trainer_state.pt", map_location="cpu", weights_only=True)
        self.step = saved["step"]
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.generator.set_state(saved["generator"])
        self.rng.setstate(saved["rng"])
        self.history = saved["history"]
