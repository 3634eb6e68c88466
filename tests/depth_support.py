"""Tiny randomly initialised transformers depth models saved to a folder, for the tests that estimate depth
(`iterview prepare`, `iterview lift`) without downloading the official ones."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_dpt(folder: Path) -> Path:
    """A DPT with a BEiT backbone (the layout of Intel/dpt-beit-large-512) in folder; returns folder."""
    from transformers import BeitConfig, DPTConfig, DPTForDepthEstimation
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    backbone = BeitConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=16,
        out_indices=[1, 2, 3, 4],
        use_relative_position_bias=True,
        reshape_hidden_states=False,
    )
    config = DPTConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[16, 16, 16, 16],
        fusion_hidden_size=16,
        reassemble_factors=[4, 2, 1, 0.5],
        head_in_index=-1,
        readout_type="project",
    )
    torch.manual_seed(0)
    model = DPTForDepthEstimation(config).eval()
    with torch.no_grad():  # MiDaS-like output magnitudes (thousands) instead of ~0
        model.head.head[4].weight.mul_(2000)
        model.head.head[4].bias.fill_(5000)
    model.save_pretrained(folder)
    processor = DPTImageProcessorPil(
        size={"height": 32, "width": 32},
        keep_aspect_ratio=True,
        ensure_multiple_of=16,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor.save_pretrained(folder)
    return folder


def save_tiny_depth_anything(folder: Path, varied: bool = True) -> Path:
    """A Depth Anything (DINOv2 backbone, relative disparity head) in folder; returns folder. varied: a positive
    disparity that varies by ±10 % across the image; else a near-constant positive one (its peak in every crop)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=28,
        patch_size=14,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[16, 16, 16, 16],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():  # a random head's output is ~0, or zeros after the final ReLU
        if varied:
            for layer in (model.head.conv1, model.head.conv2):
                layer.weight.mul_(30)
            model.head.conv3.weight.mul_(300)
        model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(folder)
    processor = DPTImageProcessorPil(
        size={"height": 28, "width": 28},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor.save_pretrained(folder)
    return folder
