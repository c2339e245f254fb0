"""The spatio-temporal (S-T) layer ShapeGen4D inserts after every block of the frozen base.

It has the structure of the base's single-stream block (AdaNorm -> joint attention + MLP ->
gated projection) but attends over the tokens of ALL T frames of a clip at once: the image
tokens and the shape latents of every frame. A 1D rotary embedding of the frame index on q
and k tells frames apart (latents themselves have no order, so nothing else is encoded).
The output projection starts at zero, so at step 0 the wrapped model IS the base.
Shapes: B clips, T frames, L latents, N image tokens, D width.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.dit import AdaNorm, Attention


@dataclass
class STConfig:
    # 0 = the base's: an S-T layer always has the width of the blocks it follows.
    width: int = 0
    heads: int = 0
    mlp_ratio: float = 0.0
    rope_theta: float = 10000.0
    use_image_tokens: bool = True  # ablation: False = S-T attends over shape latents only
    temporal_only: bool = False  # ablation: pure 1D attention across frames at the same latent index
    # Not in the paper, a probe: a learned per-head logit bonus from a latent to the latent of the
    # same index in every other frame. With aligned queries that index is the correspondence, which
    # 1D attention is handed and S-T attention must find by content; trained S-T layers here do not
    # find it (benchmarks/st_attention). This and the next were added after stored digests: at
    # their defaults digests leave them out (`later` in jobs/config.py).
    same_token_bias: bool = field(default=False, metadata={"later": True})
    # The bias's value at init. 0 leaves the layer the paper's at step 0 and gets little gradient
    # (7 of a query's ~2k keys are touched); log(keys / 7) puts half the mass on the same token,
    # so training starts near 1D attention plus the rest, keeps it, and draws level with 1D (README).
    same_token_init: float = field(default=0.0, metadata={"later": True})
    # Not in the paper, a capacity probe: the width of each head's q, k and v (0 = the base's,
    # width / heads: 64 in the release, 16 in the tiny base, where content alone must tell 256
    # latents apart). Added after stored digests, like the two above.
    head_dim: int = field(default=0, metadata={"later": True})


def rope_1d(x_BHSd: torch.Tensor, pos_S: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate channel pairs of q or k by angles pos * theta^(-2i/d) (pairs are (2i, 2i+1))."""
    d = x_BHSd.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x_BHSd.device) / d)
    ang = pos_S.float()[:, None] * freqs[None]  # [S, d/2]
    cos, sin = ang.cos(), ang.sin()
    x = x_BHSd.float().unflatten(-1, (d // 2, 2))
    x0, x1 = x[..., 0], x[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    return out.to(x_BHSd.dtype)


class STLayer(nn.Module):
    def __init__(self, cfg: STConfig):
        super().__init__()
        if not (cfg.width and cfg.heads and cfg.mlp_ratio):
            raise ValueError(f"S-T layer without a width/heads/mlp_ratio: {cfg} (ShapeGen4D takes them from the base)")
        if cfg.temporal_only and cfg.same_token_bias:
            raise ValueError("same_token_bias is for S-T attention: 1D temporal attention sees only the same token")
        if cfg.same_token_init and not cfg.same_token_bias:
            raise ValueError("same_token_init without same_token_bias: there is no bias to start at it")
        self.cfg = cfg
        D, hidden = cfg.width, int(cfg.width * cfg.mlp_ratio)
        inner = cfg.heads * (cfg.head_dim or D // cfg.heads)
        self.norm = AdaNorm(D, 3)
        self.attn = Attention(D, cfg.heads, joint=False, pre_only=True, head_dim=cfg.head_dim)
        self.proj_mlp = nn.Linear(D, hidden)
        self.proj_out = nn.Linear(inner + hidden, D)
        # Zero output projection: the layer adds exactly 0 until it has been trained. The gate is
        # NOT zeroed as well: with both at zero each one's gradient is the other (zero) and the
        # layer never leaves its initial state. Shift/scale start at 0 (a plain LayerNorm).
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        nn.init.zeros_(self.norm.linear.weight[: 2 * D])
        nn.init.zeros_(self.norm.linear.bias[: 2 * D])
        self.same_token = nn.Parameter(torch.full((cfg.heads,), cfg.same_token_init)) if cfg.same_token_bias else None

    def forward(
        self, x_BTLD: torch.Tensor, c_BTND: torch.Tensor | None, temb_BD: torch.Tensor, frames_T: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns updated (latents, image tokens). `frames_T`: frame indices (default 0..T-1).
        `c_BTND` None: no image tokens to attend to (they are passed through untouched otherwise)."""
        B, T, L, D = x_BTLD.shape
        frames_T = torch.arange(T, device=x_BTLD.device) if frames_T is None else frames_T
        if self.cfg.temporal_only:
            # Each latent index is its own length-T sequence; image tokens are left out.
            tokens = x_BTLD.permute(0, 2, 1, 3).reshape(B * L, T, D)
            h, gate = self.norm(tokens, temb_BD.repeat_interleave(L, dim=0))
            out = self._mix(h, gate, frames_T)
            return x_BTLD + out.view(B, L, T, D).permute(0, 2, 1, 3), c_BTND
        use_c = self.cfg.use_image_tokens and c_BTND is not None
        per_frame = torch.cat([c_BTND, x_BTLD], dim=2) if use_c else x_BTLD  # [B, T, N+L | L, D]
        P = per_frame.shape[2]
        h, gate = self.norm(per_frame.reshape(B, T * P, D), temb_BD)
        frame_S = frames_T.repeat_interleave(P)
        out = self._mix(h, gate, frame_S, self._same_token_bias(frame_S, P, P - L)).view(B, T, P, D)
        if not use_c:
            return x_BTLD + out, c_BTND
        N = c_BTND.shape[2]
        return x_BTLD + out[:, :, N:], c_BTND + out[:, :, :N]

    def _same_token_bias(self, frame_S: torch.Tensor, P: int, N: int) -> torch.Tensor | None:
        """[H, S, S] logit bonus between latents of one index in different frames (each frame's P
        tokens: N image tokens, then the latents), or None without `same_token_bias`."""
        if self.same_token is None:
            return None
        token_S = (torch.arange(frame_S.numel(), device=frame_S.device) % P) - N  # < 0: image tokens
        same_SS = (token_S[:, None] == token_S[None]) & (token_S[:, None] >= 0) & (frame_S[:, None] != frame_S[None])
        return self.same_token[:, None, None] * same_SS

    def _mix(self, h_BSD: torch.Tensor, gate: torch.Tensor, frame_S: torch.Tensor,
             bias_HSS: torch.Tensor | None = None) -> torch.Tensor:
        mlp = F.gelu(self.proj_mlp(h_BSD), approximate="tanh")
        attn = self.attn(h_BSD, rotate=lambda t: rope_1d(t, frame_S, self.cfg.rope_theta), bias_HLL=bias_HSS)
        return gate * self.proj_out(torch.cat([attn, mlp], dim=-1))
