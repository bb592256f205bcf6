"""Oracle from Ultralytics: its ``SAM2DynamicInteractivePredictor`` on the SMALL random architecture.

Ultralytics is installed with ``--no-deps``; at import it asks for torchvision's package version
only, so :func:`import_ultralytics` answers that one question for the duration of the import
(nothing of torchvision is imported). Its settings file goes to a temporary folder.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from typing import Any

import PIL.Image
import torch


def import_ultralytics() -> Any:
    """Import ``ultralytics.models.sam`` without a torchvision distribution; returns the module."""
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics-cfg-"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_AUTOINSTALL"] = "false"  # it would otherwise pip-install packages mid-test
    real = importlib.metadata.version

    def version(name: str) -> str:
        return "0.28.0" if name == "torchvision" else real(name)

    # Ultralytics patches PIL.Image.open and torch.save at import: undo that, so the other tests
    # of the session keep the libraries' own functions.
    image_open, torch_save = PIL.Image.open, torch.save
    importlib.metadata.version = version
    try:
        import ultralytics.models.sam.predict as predict
    finally:
        importlib.metadata.version = real
        PIL.Image.open, torch.save = image_open, torch_save
        torch.set_printoptions(profile="default")
    return predict


def build_ultralytics_sam2(state_dict: dict[str, torch.Tensor]) -> Any:
    """Ultralytics' SAM2Model with the SMALL architecture of ``reference.official`` (SAM2.1
    flags), loaded strictly with an official state dict."""
    import_ultralytics()
    from ultralytics.models.sam.modules.encoders import FpnNeck, Hiera, ImageEncoder, MemoryEncoder
    from ultralytics.models.sam.modules.memory_attention import MemoryAttention, MemoryAttentionLayer
    from ultralytics.models.sam.modules.sam import SAM2Model

    image_encoder = ImageEncoder(
        trunk=Hiera(
            embed_dim=16,
            num_heads=1,
            stages=[1, 2, 3, 1],
            global_att_blocks=[4, 5],
            window_pos_embed_bkg_spatial_size=(4, 4),
            window_spec=[8, 4, 4, 4],
        ),
        neck=FpnNeck(
            d_model=256, backbone_channel_list=[128, 64, 32, 16], fpn_top_down_levels=[2, 3], fpn_interp_model="nearest"
        ),
        scalp=1,
    )
    memory_attention = MemoryAttention(
        d_model=256, pos_enc_at_input=True, num_layers=2, layer=MemoryAttentionLayer(dim_feedforward=256)
    )
    model = SAM2Model(
        image_encoder=image_encoder,
        memory_attention=memory_attention,
        memory_encoder=MemoryEncoder(out_dim=64),
        num_maskmem=7,
        image_size=256,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=True,
        only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
        compile_image_encoder=False,
        no_obj_embed_spatial=True,
        proj_tpos_enc_in_obj_ptrs=True,
        use_signed_tpos_enc_to_obj_ptrs=True,
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
    )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def dynamic_predictor(model: Any, max_obj_num: int, image_size: int = 256) -> Any:
    """A ``SAM2DynamicInteractivePredictor`` around ``model``, taking preprocessed (1, 3, S, S) tensors."""
    predict = import_ultralytics()
    predictor = predict.SAM2DynamicInteractivePredictor(
        overrides={"imgsz": image_size, "device": "cpu", "verbose": False, "save": False}, max_obj_num=max_obj_num
    )
    predictor.setup_model(model=model, verbose=False)
    predictor.imgsz = (image_size, image_size)
    # src_shape reads the original image of the current batch: an (S, S, 3) stand-in, so prompts are model pixels
    predictor.batch = (None, [torch.zeros(image_size, image_size, 3).numpy()])
    return predictor
