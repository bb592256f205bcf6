"""Drop-in for the official ``sam2`` package: same module paths, names and call signatures.

Change ``from sam2.build_sam import build_sam2`` to ``from masklet.sam2.build_sam import build_sam2``
(likewise ``sam2_image_predictor``, ``sam2_video_predictor``, ``automatic_mask_generator``); the
masklet classes do the work. No Hydra, no CUDA extension, no torchvision needed.
"""
