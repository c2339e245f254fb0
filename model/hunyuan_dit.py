"""Flow-matching denoiser, parameter-compatible with Hunyuan3D-2.1's HunYuanDiTPlain (3.05B release).

A plain pre-norm transformer over [time token; latents]: self-attention, cross-attention to the
DINOv2 tokens, MLP (a mixture of experts in the last blocks), and U-Net-style long skips from the
first half of the blocks into the second. No positional encoding: the latent set has no order.
Time t is in [0, 1] with 0 = pure noise, 1 = data; the output is the velocity data - noise.
Shapes: B batch, L latents, N condition tokens, D width, K condition width, C latent channels,
S flattened tokens (B * (L + 1)), E experts.

`forward_blocks` takes a hook called after every block, so ShapeGen4D can insert its
spatio-temporal layers without copying this file (same contract as model.dit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.adapter import HUNYUAN3D21
from model.dit import timestep_embedding


@dataclass
class HunyuanDiTConfig:
    width: int = 2048  # hidden_size
    heads: int = 16  # head dim 128
    depth: int = 21
    in_channels: int = 64
    cross_attention_dim: int = 1024  # context_dim (DINOv2-L)
    # The release hard-codes 4x for both the MLP and the experts; 4.0 reproduces it.
    mlp_ratio: float = 4.0
    num_moe_layers: int = 6  # the last blocks use MoE
    num_experts: int = 8
    moe_top_k: int = 2


def layer_norm(width: int) -> nn.LayerNorm:
    return nn.LayerNorm(width, eps=1e-6)


def split_heads_interleaved(fused_BLF: torch.Tensor, heads: int, n: int) -> tuple[torch.Tensor, ...]:
    """The release's head split of cat(q, k, v) (n=3) or cat(k, v) (n=2), each [B, L, D].

    The fused row is viewed as (heads, n * head_dim) and head h takes its n consecutive
    head_dim chunks as its q, k, v: NOT to_q's rows for q. For n=3 and 16 heads, heads 0-5
    read their "q" from to_q, later ones from to_k / to_v rows. The weights were trained
    this way, so it is reproduced rather than fixed. Returns n tensors [B, H, L, d].
    """
    B, L, F_ = fused_BLF.shape
    parts = fused_BLF.view(B, L, heads, n, F_ // (heads * n)).unbind(3)
    return tuple(p.transpose(1, 2) for p in parts)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        head_dim = width // heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(width, width, bias=False) for _ in range(3))
        self.q_norm, self.k_norm = nn.RMSNorm(head_dim, eps=1e-6), nn.RMSNorm(head_dim, eps=1e-6)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        qkv = torch.cat([self.to_q(x_BLD), self.to_k(x_BLD), self.to_v(x_BLD)], dim=-1)
        q, k, v = split_heads_interleaved(qkv, self.heads, 3)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class CrossAttention(nn.Module):
    def __init__(self, width: int, context_width: int, heads: int):
        super().__init__()
        self.heads = heads
        head_dim = width // heads
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_k = nn.Linear(context_width, width, bias=False)
        self.to_v = nn.Linear(context_width, width, bias=False)
        self.q_norm, self.k_norm = nn.RMSNorm(head_dim, eps=1e-6), nn.RMSNorm(head_dim, eps=1e-6)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x_BLD: torch.Tensor, cond_BNK: torch.Tensor) -> torch.Tensor:
        B, L, D = x_BLD.shape
        # q: the ordinary contiguous split; k, v: interleaved like self-attention's.
        q = self.to_q(x_BLD).view(B, L, self.heads, -1).transpose(1, 2)
        k, v = split_heads_interleaved(torch.cat([self.to_k(cond_BNK), self.to_v(cond_BNK)], dim=-1), self.heads, 2)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class FeedForward(nn.Module):
    """diffusers FeedForward(activation_fn="gelu"), exact GELU: keys net.0.proj and net.2."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.net = nn.ModuleList([nn.Module(), nn.Dropout(0.0), nn.Linear(hidden, width)])
        self.net[0].proj = nn.Linear(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](F.gelu(self.net[0].proj(x)))


class MoE(nn.Module):
    """Softmax gate, top-k experts weighted by their RAW gate probabilities (the release does not
    renormalise the k weights to sum 1), plus a shared expert every token goes through.

    Unlike the release's eval path (under no_grad) this one is differentiable: ShapeGen4D trains
    layers inserted BEFORE these blocks through the frozen base. No load-balancing loss: the
    gate is frozen with the base. Tokens are gathered per expert, so each expert only runs on
    the tokens routed to it.
    """

    def __init__(self, width: int, hidden: int, num_experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.experts = nn.ModuleList(FeedForward(width, hidden) for _ in range(num_experts))
        self.gate = nn.Linear(width, num_experts, bias=False)  # the release's MoEGate.weight [E, D]
        self.shared_experts = FeedForward(width, hidden)

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        x_SD = x_BLD.reshape(-1, x_BLD.shape[-1])
        weight_SK, expert_SK = self.gate(x_SD).softmax(dim=-1).topk(self.top_k, dim=-1)
        routed_SD = torch.zeros_like(x_SD)
        for e, expert in enumerate(self.experts):
            token, slot = (expert_SK == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            out = expert(x_SD[token]) * weight_SK[token, slot, None]
            routed_SD = routed_SD.index_add(0, token, out.to(routed_SD.dtype))
        # Routed sum first, then the shared expert: the release's order of additions.
        return (routed_SD + self.shared_experts(x_SD)).view_as(x_BLD)


class Block(nn.Module):
    def __init__(self, cfg: HunyuanDiTConfig, skip: bool, moe: bool):
        super().__init__()
        D, hidden = cfg.width, int(cfg.width * cfg.mlp_ratio)
        if skip:
            self.skip_linear = nn.Linear(2 * D, D)
            self.skip_norm = layer_norm(D)
        self.norm1 = layer_norm(D)
        self.attn1 = SelfAttention(D, cfg.heads)
        self.norm2 = layer_norm(D)
        self.attn2 = CrossAttention(D, cfg.cross_attention_dim, cfg.heads)
        self.norm3 = layer_norm(D)
        self.use_moe = moe
        if moe:
            self.moe = MoE(D, hidden, cfg.num_experts, cfg.moe_top_k)
        else:
            self.mlp = Mlp(D, hidden)

    def forward(self, x_BLD: torch.Tensor, cond_BNK: torch.Tensor, skip_BLD: torch.Tensor | None) -> torch.Tensor:
        if skip_BLD is not None:
            x_BLD = self.skip_norm(self.skip_linear(torch.cat([skip_BLD, x_BLD], dim=-1)))
        x_BLD = x_BLD + self.attn1(self.norm1(x_BLD))
        x_BLD = x_BLD + self.attn2(self.norm2(x_BLD), cond_BNK)
        ff = self.moe if self.use_moe else self.mlp
        return x_BLD + ff(self.norm3(x_BLD))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm_final = layer_norm(width)
        self.linear = nn.Linear(width, out_channels)

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm_final(x_BLD))


class HunyuanDiT(nn.Module):
    Config = HunyuanDiTConfig
    adapter = HUNYUAN3D21  # t = 1 - sigma, velocity data - noise, CFG [cond, uncond] at 5.0

    def __init__(self, cfg: HunyuanDiTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.width
        self.x_embedder = nn.Linear(cfg.in_channels, D)
        # Sinusoid over D dims -> Linear(D, 4D) -> GELU -> Linear (the release's TimestepEmbedder).
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
        half = cfg.depth // 2
        self.blocks = nn.ModuleList(
            Block(cfg, skip=i > half, moe=cfg.depth - i <= cfg.num_moe_layers) for i in range(cfg.depth)
        )
        self.final_layer = FinalLayer(D, cfg.in_channels)

    def block_count(self) -> int:
        return self.cfg.depth

    def embed_time(self, t_B: torch.Tensor) -> torch.Tensor:
        mlp = self.t_embedder.mlp
        return mlp(timestep_embedding(t_B, self.cfg.width).to(mlp[0].weight.dtype))

    def forward_blocks(
        self,
        x_BLC: torch.Tensor,
        t_B: torch.Tensor,
        cond_BNK: torch.Tensor,
        after_block: Callable[[int, torch.Tensor, None, torch.Tensor], tuple[torch.Tensor, object]] | None = None,
    ) -> torch.Tensor:
        """Velocity (data - noise) [B,L,C] at t in [0, 1] (0 = noise) given DINOv2 tokens [B,N,K].

        `after_block(i, x_BLD, None, temb_BD) -> (x_BLD, _)` runs after block i on the latent
        tokens only (the time token is put back in front for the next block). What it returns
        replaces the block output everywhere, the long-skip stack included.
        """
        temb_BD = self.embed_time(t_B)
        # The time embedding rides along as token 0: the blocks have no other time input.
        h = torch.cat([temb_BD[:, None], self.x_embedder(x_BLC)], dim=1)
        half, skips = self.cfg.depth // 2, []
        for i, block in enumerate(self.blocks):
            # U-Net long skips: blocks after the middle one consume, in reverse, the outputs of
            # the blocks before it; the middle block neither pushes nor pops.
            h = block(h, cond_BNK, skips.pop() if i > half else None)
            if after_block is not None:
                x_BLD, _ = after_block(i, h[:, 1:], None, temb_BD)
                h = torch.cat([h[:, :1], x_BLD], dim=1)
            if i < half:
                skips.append(h)
        # LayerNorm is per token, so dropping the time token first changes nothing.
        return self.final_layer(h[:, 1:])

    def forward(self, x_BLC: torch.Tensor, t_B: torch.Tensor, cond_BNK: torch.Tensor) -> torch.Tensor:
        return self.forward_blocks(x_BLC, t_B, cond_BNK)
