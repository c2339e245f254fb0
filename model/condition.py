"""Image condition: frozen DINOv2-with-registers tokens per video frame, as the base expects.

Frames (uint8 RGB or RGBA, any size) are composited on a background, padded to a square
(keeping the aspect ratio), resized to 518 px and normalised with ImageNet statistics; the
encoder's last hidden state minus its register tokens is the condition: CLS + 37^2 patches =
1370 tokens of 1024 channels for the large model. Shapes: T frames, N tokens, K channels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ConditionConfig:
    model: str = "facebook/dinov2-with-registers-large"  # hub id, or a local folder (no network then)
    image_size: int = 518
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # behind transparent pixels


def preprocess(frames_THWc: torch.Tensor, cfg: ConditionConfig) -> torch.Tensor:
    """uint8 [T,H,W,3|4] -> normalised float [T,3,S,S]."""
    if frames_THWc.dtype != torch.uint8 or frames_THWc.ndim != 4 or frames_THWc.shape[-1] not in (3, 4):
        raise ValueError(f"expected uint8 frames [T,H,W,3|4], got {frames_THWc.dtype} {tuple(frames_THWc.shape)}")
    x = frames_THWc.float().div(255).permute(0, 3, 1, 2)
    if x.shape[1] == 4:
        alpha = x[:, 3:]
        x = x[:, :3] * alpha + torch.tensor(cfg.background).view(1, 3, 1, 1) * (1 - alpha)
    T, _, H, W = x.shape
    side = max(H, W)
    pad = ((side - W) // 2, side - W - (side - W) // 2, (side - H) // 2, side - H - (side - H) // 2)
    x = torch.stack([F.pad(x[:, c], pad, value=cfg.background[c]) for c in range(3)], dim=1)
    x = F.interpolate(x, size=(cfg.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


class ImageConditioner(nn.Module):
    Config = ConditionConfig

    def __init__(self, encoder: nn.Module, cfg: ConditionConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder.eval().requires_grad_(False)
        self.num_registers = int(getattr(encoder.config, "num_register_tokens", 0))

    @classmethod
    def from_pretrained(cls, cfg: ConditionConfig) -> "ImageConditioner":
        from transformers import Dinov2WithRegistersModel

        local = os.path.isdir(cfg.model)
        return cls(Dinov2WithRegistersModel.from_pretrained(cfg.model, local_files_only=local), cfg)

    @torch.no_grad()
    def forward(self, frames_THWc: torch.Tensor) -> torch.Tensor:
        """uint8 frames [T,H,W,3|4] -> tokens [T,N,K] (CLS + patches; registers dropped)."""
        pixels = preprocess(frames_THWc, self.cfg).to(next(self.encoder.parameters()))
        hidden = self.encoder(pixel_values=pixels).last_hidden_state
        return torch.cat([hidden[:, :1], hidden[:, 1 + self.num_registers :]], dim=1)
