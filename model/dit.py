"""Rectified-flow denoiser, parameter-compatible with Step1X-3D's FluxDenoiser (1.3B release).

FLUX-style: double-stream blocks (latents and condition tokens with their own weights, one
joint attention), then single-stream blocks over [condition; latents]. No positional encoding
anywhere: the latent set has no order. Time t is in [0, 1000] with 1000 = pure noise.
Shapes: B batch, L latents, N condition tokens, D width, C latent channels.

Block lists are exposed (`transformer_blocks`, `single_transformer_blocks`) and
`forward_blocks` takes a hook called after every block, so ShapeGen4D can insert its
spatio-temporal layers without copying this file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.adapter import STEP1X3D


@dataclass
class DiTConfig:
    width: int = 1280
    heads: int = 20
    num_layers: int = 12  # double-stream blocks
    num_single_layers: int = 24
    in_channels: int = 64
    cross_attention_dim: int = 1024  # DINOv2-L hidden size
    mlp_ratio: float = 4.0


def timestep_embedding(t_B: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoid [B, dim], sin half first (diffusers Timesteps, flip_sin_to_cos=False, shift 0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t_B.device) / half)
    args = t_B.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class TimestepMLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear_1 = nn.Linear(width, 4 * width)
        self.linear_2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32: bf16 squares lose the small head channels.
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class AdaNorm(nn.Module):
    """LayerNorm without affine, modulated by `n` (shift, scale, gate, ...) chunks from time."""

    def __init__(self, width: int, n: int):
        super().__init__()
        self.linear = nn.Linear(width, n * width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)

    def forward(self, x_BLD: torch.Tensor, temb_BD: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mods = self.linear(F.silu(temb_BD))[:, None].chunk(self.linear.out_features // x_BLD.shape[-1], dim=-1)
        shift, scale = mods[0], mods[1]
        return (self.norm(x_BLD) * (1 + scale) + shift, *mods[2:])


class FeedForward(nn.Module):
    """diffusers FeedForward(gelu-approximate): keys net.0.proj and net.2."""

    def __init__(self, width: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.net = nn.ModuleList([nn.Module(), nn.Dropout(0.0), nn.Linear(hidden, width)])
        self.net[0].proj = nn.Linear(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](F.gelu(self.net[0].proj(x), approximate="tanh"))


class Attention(nn.Module):
    """Joint attention of the release (diffusers Attention + FluxAttnProcessor2_0 names)."""

    def __init__(self, width: int, heads: int, joint: bool, pre_only: bool, head_dim: int = 0):
        """`head_dim` 0: width / heads, as in the release; S-T layers may take wider heads."""
        super().__init__()
        self.heads = heads
        head_dim = head_dim or width // heads
        inner = heads * head_dim
        self.to_q, self.to_k, self.to_v = (nn.Linear(width, inner) for _ in range(3))
        self.norm_q, self.norm_k = RMSNorm(head_dim), RMSNorm(head_dim)
        if joint:
            self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(width, inner) for _ in range(3))
            self.norm_added_q, self.norm_added_k = RMSNorm(head_dim), RMSNorm(head_dim)
            self.to_add_out = nn.Linear(inner, width)
        if not pre_only:
            self.to_out = nn.ModuleList([nn.Linear(inner, width), nn.Dropout(0.0)])

    def _qkv(self, x: torch.Tensor, q, k, v, nq, nk) -> tuple[torch.Tensor, ...]:
        B, L, _ = x.shape
        split = lambda t: t.view(B, L, self.heads, -1).transpose(1, 2)  # noqa: E731
        return nq(split(q(x))), nk(split(k(x))), split(v(x))

    def forward(self, x_BLD: torch.Tensor, context_BND: torch.Tensor | None = None, rotate: Callable | None = None,
                bias_HLL: torch.Tensor | None = None):
        """`rotate(q_or_k [B,H,L,d])`: a positional rotation (the base uses none; S-T layers use RoPE).
        `bias_HLL`: added to the attention logits (self-attention only; the base uses none)."""
        q, k, v = self._qkv(x_BLD, self.to_q, self.to_k, self.to_v, self.norm_q, self.norm_k)
        if rotate is not None:
            q, k = rotate(q), rotate(k)
        if context_BND is None:
            mask = None if bias_HLL is None else bias_HLL.to(q.dtype)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)
        cq, ck, cv = self._qkv(context_BND, self.add_q_proj, self.add_k_proj, self.add_v_proj, self.norm_added_q, self.norm_added_k)
        # Condition tokens first, as the release orders them.
        out = F.scaled_dot_product_attention(torch.cat([cq, q], 2), torch.cat([ck, k], 2), torch.cat([cv, v], 2))
        out = out.transpose(1, 2).flatten(2)
        N = context_BND.shape[1]
        return self.to_out[0](out[:, N:]), self.to_add_out(out[:, :N])


class DoubleStreamBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D = cfg.width
        self.norm1, self.norm1_context = AdaNorm(D, 6), AdaNorm(D, 6)
        self.attn = Attention(D, cfg.heads, joint=True, pre_only=False)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.norm2_context = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.ff, self.ff_context = FeedForward(D, cfg.mlp_ratio), FeedForward(D, cfg.mlp_ratio)

    def forward(self, x_BLD, c_BND, temb_BD):
        nx, gate, shift2, scale2, gate2 = self.norm1(x_BLD, temb_BD)
        nc, cgate, cshift2, cscale2, cgate2 = self.norm1_context(c_BND, temb_BD)
        ax, ac = self.attn(nx, nc)
        x_BLD = x_BLD + gate * ax
        x_BLD = x_BLD + gate2 * self.ff(self.norm2(x_BLD) * (1 + scale2) + shift2)
        c_BND = c_BND + cgate * ac
        c_BND = c_BND + cgate2 * self.ff_context(self.norm2_context(c_BND) * (1 + cscale2) + cshift2)
        return x_BLD, c_BND


class SingleStreamBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D, hidden = cfg.width, int(cfg.width * cfg.mlp_ratio)
        self.norm = AdaNorm(D, 3)
        self.proj_mlp = nn.Linear(D, hidden)
        self.attn = Attention(D, cfg.heads, joint=False, pre_only=True)
        self.proj_out = nn.Linear(D + hidden, D)

    def forward(self, x_BSD, temb_BD):
        nx, gate = self.norm(x_BSD, temb_BD)
        mlp = F.gelu(self.proj_mlp(nx), approximate="tanh")
        return x_BSD + gate * self.proj_out(torch.cat([self.attn(nx), mlp], dim=-1))


class FluxTransformer(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.width
        self.time_proj = TimestepMLP(D)  # the release's name for the MLP (diffusers calls it time_embedding)
        self.proj_in = nn.Linear(cfg.in_channels, D)
        self.proj_cross_attention = nn.Linear(cfg.cross_attention_dim, D)
        self.transformer_blocks = nn.ModuleList(DoubleStreamBlock(cfg) for _ in range(cfg.num_layers))
        self.single_transformer_blocks = nn.ModuleList(SingleStreamBlock(cfg) for _ in range(cfg.num_single_layers))
        self.norm_out = nn.Module()
        self.norm_out.linear = nn.Linear(D, 2 * D)
        self.proj_out = nn.Linear(D, cfg.in_channels)

    def embed(self, x_BLC, t_B, cond_BNK):
        temb_BD = self.time_proj(timestep_embedding(t_B, self.cfg.width).to(x_BLC.dtype))
        return self.proj_in(x_BLC), self.proj_cross_attention(cond_BNK), temb_BD

    def head(self, x_BLD, temb_BD):
        scale, shift = self.norm_out.linear(F.silu(temb_BD))[:, None].chunk(2, dim=-1)
        x_BLD = F.layer_norm(x_BLD, x_BLD.shape[-1:], eps=1e-6) * (1 + scale) + shift
        return self.proj_out(x_BLD)

    def forward_blocks(
        self,
        x_BLC: torch.Tensor,
        t_B: torch.Tensor,
        cond_BNK: torch.Tensor,
        after_block: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """forward, with `after_block(i, x_BLD, c_BND, temb) -> (x, c)` called after block i."""
        x, c, temb = self.embed(x_BLC, t_B, cond_BNK)
        for i, block in enumerate(self.transformer_blocks):
            x, c = block(x, c, temb)
            if after_block is not None:
                x, c = after_block(i, x, c, temb)
        N = c.shape[1]
        s = torch.cat([c, x], dim=1)
        for j, block in enumerate(self.single_transformer_blocks):
            s = block(s, temb)
            if after_block is not None:
                x, c = after_block(len(self.transformer_blocks) + j, s[:, N:], s[:, :N], temb)
                s = torch.cat([c, x], dim=1)
        return self.head(s[:, N:], temb)

    def forward(self, x_BLC: torch.Tensor, t_B: torch.Tensor, cond_BNK: torch.Tensor) -> torch.Tensor:
        return self.forward_blocks(x_BLC, t_B, cond_BNK)


class FluxDenoiser(nn.Module):
    """The release's wrapper: its weights live under `dit_model.`."""

    Config = DiTConfig
    adapter = STEP1X3D

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.dit_model = FluxTransformer(cfg)

    def block_count(self) -> int:
        return self.cfg.num_layers + self.cfg.num_single_layers

    def forward_blocks(self, x_BLC, t_B, cond_BNK, after_block=None) -> torch.Tensor:
        """See FluxTransformer.forward_blocks: `after_block(i, x_BLD, c_BND, temb_BD) -> (x, c)`."""
        return self.dit_model.forward_blocks(x_BLC, t_B, cond_BNK, after_block)

    def forward(self, x_BLC: torch.Tensor, t_B: torch.Tensor, cond_BNK: torch.Tensor) -> torch.Tensor:
        """Velocity (noise - data) [B,L,C] at time t in [0, 1000] given DINOv2 tokens [B,N,1024]."""
        return self.dit_model(x_BLC, t_B, cond_BNK)
