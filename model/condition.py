"""Image condition: frozen DINOv2-with-registers tokens per video frame, as the base expects.

Frames (uint8 RGB or RGBA, any size) are prepared the way Step1X-3D prepares its condition image
(each step a switch in ConditionConfig, the official default first):
  1. composite on a white background;
  2. recentre: crop to the object's box (alpha > 0) and scale it so it spans 0.95 of the frame,
     centred. One box for the whole clip, the union over its T frames, so the object's motion and
     changes of scale across frames survive (the official code, single-image, boxes each image);
  3. pad to a square, bicubic-resize the shorter side to 518 px, centre-crop 518 x 518;
  4. normalise with ImageNet statistics.
The encoder's last hidden state minus its register tokens is the condition: CLS + 37^2 patches =
1370 tokens of 1024 channels for the large model. Shapes: T frames, N tokens, K channels.

Official sources (github.com/stepfun-ai/Step1X-3D, step1x3d_geometry/): models/pipelines/pipeline.py
`Step1X3DGeometryPipeline.__call__` (background_color [255,255,255], foreground_ratio 0.95) calls
models/pipelines/pipeline_utils.py `preprocess_image` (steps 1-2 and the square pad, PIL, whose
`Image.resize` default filter is bicubic), then models/conditional_encoders/dinov2_encoder.py
`Dinov2Encoder.encode_image_dino` runs the model's AutoImageProcessor (transformers'
BitImageProcessor for DINOv2: RGBA->RGB, bicubic resize of the shortest edge to image_size=518,
centre crop 518, /255, ImageNet mean/std; configs/train-geometry-diffusion/*.yaml set 518).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ConditionConfig:
    model: str = "facebook/dinov2-with-registers-large"  # hub id, or a local folder (no network then)
    image_size: int = 518  # official: dinov2 image_size 518 (configs/train-geometry-diffusion/*.yaml)
    # Behind transparent pixels and in the padding; official: background_color [255,255,255]
    # (pipeline.py __call__ and the training data config).
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # Crop the object by its alpha > 0 box and rescale it to border_ratio of the frame, centred, as
    # pipeline_utils.preprocess_image does; the box is the union over all frames of the clip (one
    # call, or each clip_len group), so motion and scale changes across frames are kept. Needs
    # alpha: RGB frames, a clip with no alpha > 0 pixel (nothing to box) or with every alpha 255
    # (the official code then runs background removal, which we don't) are not recentred.
    recenter: bool = True
    # Object's box extent as a fraction of the frame: official foreground_ratio=0.95 (pipeline.py).
    border_ratio: float = 0.95
    # "frame": fit the box into border_ratio of the input H and W, then pad to a square, exactly as
    # preprocess_image (for a non-square frame the object is then < border_ratio of the square);
    # "square": its longer side is border_ratio of the padded square (the official training data
    # loader's geometry, data/base.py _process_img). Same result for square frames.
    recenter_fit: Literal["frame", "square"] = "frame"
    # Both resizes (the recentring one and the final one) use it, antialiased; bicubic output is
    # clamped to [0, 1] as PIL's uint8 bicubic is (official: PIL default bicubic in preprocess_image,
    # BitImageProcessor resample=BICUBIC). "bilinear" is this module's old behaviour.
    resize: Literal["bicubic", "bilinear"] = "bicubic"
    # Pad to a square with the background, keeping the aspect (preprocess_image's "expand to 1:1").
    pad_square: bool = True
    # Resize the shorter side to image_size, then centre-crop a square (BitImageProcessor: size and
    # crop_size = image_size); a no-op after pad_square. False: resize straight to image_size^2.
    center_crop: bool = True


def _resize(x_TCHW: torch.Tensor, size_hw: tuple[int, int], mode: str) -> torch.Tensor:
    x_TChw = F.interpolate(x_TCHW, size=size_hw, mode=mode, align_corners=False, antialias=True)
    return x_TChw.clamp(0, 1) if mode == "bicubic" else x_TChw  # bicubic overshoots at edges


def _recenter(x_TCHW: torch.Tensor, alpha_THW: torch.Tensor, bg_1C11: torch.Tensor, cfg: ConditionConfig):
    """One clip's composited frames -> the same frames with the union box of alpha > 0 rescaled to
    border_ratio of the frame (or of the square, cfg.recenter_fit) and centred; unchanged if the
    clip has no box or no pixel below 255 (module doc)."""
    if not bool((alpha_THW > 0).any()) or not bool((alpha_THW < 255).any()):
        return x_TCHW
    T, C, H, W = x_TCHW.shape
    fg_HW = (alpha_THW > 0).any(dim=0)
    rows, cols = fg_HW.any(dim=1).nonzero()[:, 0], fg_HW.any(dim=0).nonzero()[:, 0]
    y1, y2, x1, x2 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    dy, dx = y2 - y1, x2 - x1
    r = cfg.border_ratio
    if cfg.recenter_fit == "frame":
        Hc, Wc = H, W
        s = min(H * r / dy, W * r / dx)  # the official expression, so the int() truncation matches
    else:
        Hc = Wc = max(H, W)
        s = Hc * r / max(dy, dx)
    Ht, Wt = max(1, int(dy * s)), max(1, int(dx * s))
    out_TCHW = bg_1C11.expand(T, C, Hc, Wc).clone()
    top, left = (Hc - Ht) // 2, (Wc - Wt) // 2
    out_TCHW[:, :, top:top + Ht, left:left + Wt] = _resize(x_TCHW[:, :, y1:y2, x1:x2], (Ht, Wt), cfg.resize)
    return out_TCHW


def preprocess(frames_THWc: torch.Tensor, cfg: ConditionConfig, clip_len: int | None = None) -> torch.Tensor:
    """uint8 [T,H,W,3|4] -> normalised float [T,3,S,S] (module doc). The T frames are one clip
    (one recentring box) unless clip_len is given: then consecutive groups of clip_len frames are
    clips of their own (e.g. a flattened batch [B*T,...] with clip_len=T; 1 = per frame)."""
    if frames_THWc.dtype != torch.uint8 or frames_THWc.ndim != 4 or frames_THWc.shape[-1] not in (3, 4):
        raise ValueError(f"expected uint8 frames [T,H,W,3|4], got {frames_THWc.dtype} {tuple(frames_THWc.shape)}")
    if cfg.resize not in ("bicubic", "bilinear") or cfg.recenter_fit not in ("frame", "square"):
        raise ValueError(f"unknown resize {cfg.resize!r} or recenter_fit {cfg.recenter_fit!r}")
    if not 0 < cfg.border_ratio <= 1:
        raise ValueError(f"border_ratio must be in (0, 1], got {cfg.border_ratio}")
    T = frames_THWc.shape[0]
    clip_len = clip_len or T
    if T and T % clip_len:
        raise ValueError(f"{T} frames do not split into clips of {clip_len}")
    x_TCHW = frames_THWc.float().div(255).permute(0, 3, 1, 2)
    bg_1C11 = torch.tensor(cfg.background, dtype=x_TCHW.dtype, device=x_TCHW.device).view(1, 3, 1, 1)
    if x_TCHW.shape[1] == 4:
        alpha_T1HW = x_TCHW[:, 3:]
        x_TCHW = x_TCHW[:, :3] * alpha_T1HW + bg_1C11 * (1 - alpha_T1HW)
        if cfg.recenter and T:
            alpha_THW = frames_THWc[..., 3]
            x_TCHW = torch.cat([_recenter(x_TCHW[i:i + clip_len], alpha_THW[i:i + clip_len], bg_1C11, cfg)
                                for i in range(0, T, clip_len)])
    _, _, H, W = x_TCHW.shape
    if cfg.pad_square:
        side = max(H, W)
        pad = ((side - W) // 2, side - W - (side - W) // 2, (side - H) // 2, side - H - (side - H) // 2)
        x_TCHW = torch.stack([F.pad(x_TCHW[:, c], pad, value=cfg.background[c]) for c in range(3)], dim=1)
        H = W = side
    S = cfg.image_size
    if cfg.center_crop:
        # Shorter side -> S, the longer int(S * long / short) (transformers' shortest_edge rule),
        # then the central S x S (top/left rounded down, as BitImageProcessor.center_crop).
        h, w = (S, int(S * W / H)) if H <= W else (int(S * H / W), S)
        x_TCHW = _resize(x_TCHW, (h, w), cfg.resize)
        top, left = (h - S) // 2, (w - S) // 2
        x_TCSS = x_TCHW[:, :, top:top + S, left:left + S]
    else:
        x_TCSS = _resize(x_TCHW, (S, S), cfg.resize)
    mean_1C11 = torch.tensor(IMAGENET_MEAN, device=x_TCSS.device).view(1, 3, 1, 1)
    std_1C11 = torch.tensor(IMAGENET_STD, device=x_TCSS.device).view(1, 3, 1, 1)
    return (x_TCSS - mean_1C11) / std_1C11


class ImageConditioner(nn.Module):
    Config = ConditionConfig

    def __init__(self, encoder: nn.Module, cfg: ConditionConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder.eval().requires_grad_(False)
        self.num_registers = int(getattr(encoder.config, "num_register_tokens", 0))

    @classmethod
    def from_pretrained(cls, cfg: ConditionConfig) -> "ImageConditioner":
        # AutoModel: DINOv2 with registers (Step1X-3D) or without (Hunyuan3D-2.1, facebook/dinov2-large),
        # as the folder's config.json says; register tokens, if any, are dropped below.
        from transformers import AutoModel

        local = os.path.isdir(cfg.model)
        return cls(AutoModel.from_pretrained(cfg.model, local_files_only=local), cfg)

    @torch.no_grad()
    def forward(self, frames_THWc: torch.Tensor, clip_len: int | None = None) -> torch.Tensor:
        """uint8 frames [T,H,W,3|4] of one clip (or of clips of clip_len frames each, see
        preprocess) -> tokens [T,N,K] (CLS + patches; registers dropped)."""
        return self.tokens(preprocess(frames_THWc, self.cfg, clip_len))

    def tokens(self, pixels_T3SS: torch.Tensor) -> torch.Tensor:
        """Preprocessed frames -> tokens [T,N,K], differentiable: the small-scale base trains its
        encoder with the DiT (jobs.pretrain_base) before both are frozen."""
        hidden = self.encoder(pixel_values=pixels_T3SS.to(next(self.encoder.parameters()))).last_hidden_state
        return torch.cat([hidden[:, :1], hidden[:, 1 + self.num_registers :]], dim=1)
