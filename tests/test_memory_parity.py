"""The video-side modules (memory encoder, memory attention, object pointers) vs the official track_step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masklet.model import MemoryBank
from masklet.transforms import preprocess
from reference.official import SMALL
from reference.pairs import make_pair, test_image


def close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 1e-4) -> None:
    diff = float((a.float() - b.float()).abs().max())
    assert diff <= atol, f"{what}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("variant", ["sam2.1-hiera-tiny", "sam2-hiera-tiny"])
def test_track_steps_match_official(variant):
    official, ours = make_pair(variant, seed=13, **SMALL)
    frames = [preprocess(test_image(256, 256, seed=s), 256, torch.device("cpu"), torch.float32) for s in range(5)]
    ref_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    bank = MemoryBank(cond={}, non_cond={})
    clicks = {
        "point_coords": torch.tensor([[[100.0, 120.0]], [[30.0, 200.0]]]),
        "point_labels": torch.ones(2, 1, dtype=torch.int32),
    }
    box_mask = torch.zeros(2, 1, 256, 256)
    box_mask[0, :, 50:150, 60:200] = 1
    box_mask[1, :, 10:40, 10:90] = 1
    # frame 0: clicks; frame 2: a mask prompt (used as output); others tracked from memory
    prompts = {0: (clicks, None), 2: (None, box_mask)}
    with torch.inference_mode():
        for t, pixels in enumerate(frames):
            out = official.forward_image(pixels.expand(2, -1, -1, -1))
            _, feats, pos, sizes = official._prepare_backbone_features(out)
            points, mask = prompts.get(t, (None, None))
            is_cond = t in prompts
            kwargs = dict(
                frame_idx=t,
                is_init_cond_frame=t == 0,
                current_vision_feats=feats,
                current_vision_pos_embeds=pos,
                feat_sizes=sizes,
                point_inputs=points,
                mask_inputs=mask,
                num_frames=len(frames),
            )
            ref = official.track_step(output_dict=ref_dict, **kwargs)
            mine = ours.track_step(memory=bank, **kwargs)
            for key in ("pred_masks", "pred_masks_high_res", "obj_ptr", "object_score_logits", "maskmem_features"):
                close(getattr(mine, key), ref[key], f"frame {t} {key}")
            close(mine.maskmem_pos_enc, ref["maskmem_pos_enc"][-1], f"frame {t} maskmem_pos_enc")
            ref_dict["cond_frame_outputs" if is_cond else "non_cond_frame_outputs"][t] = ref
            (bank.cond if is_cond else bank.non_cond)[t] = mine
            assert 0 < float((mine.pred_masks > 0).float().mean()) < 1, "degenerate masks prove nothing"
        # tracking backwards from the end uses the reverse memory rules
        _, feats, pos, sizes = official._prepare_backbone_features(
            official.forward_image(frames[1].expand(2, -1, -1, -1))
        )
        kwargs = dict(
            frame_idx=1,
            is_init_cond_frame=False,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=None,
            mask_inputs=None,
            num_frames=len(frames),
            track_in_reverse=True,
        )
        ref = official.track_step(output_dict=ref_dict, **kwargs)
        mine = ours.track_step(memory=bank, **kwargs)
        close(mine.pred_masks, ref["pred_masks"], "reverse pred_masks")
        close(mine.obj_ptr, ref["obj_ptr"], "reverse obj_ptr")


def test_select_closest_cond_frames_matches_official():
    from sam2.modeling.sam2_utils import select_closest_cond_frames as official_select

    from masklet.model.sam2 import select_closest_cond_frames

    rng = np.random.default_rng(0)
    for _ in range(50):
        frames = {int(t): {"t": int(t)} for t in rng.choice(100, size=rng.integers(1, 10), replace=False)}
        idx, limit = int(rng.integers(0, 100)), int(rng.choice([-1, 2, 3, 5]))
        assert select_closest_cond_frames(idx, frames, limit) == official_select(idx, frames, limit)
