"""VecSet VAE, parameter-compatible with Step1X-3D's MichelangeloAutoencoder.

Shapes: B batch, N surface points, L latents (the encoder's queries), M decoder queries,
D width, C latent channels. The decoded field is an SDF, POSITIVE INSIDE (Step1X-3D's
convention; our shards store negative inside, so a loss against them flips the sign).

The encoder's queries are GIVEN: in ShapeGen4D they are the temporally aligned points of the
shards (FPS on frame 1, carried by the animation). Like Step1X-3D, a query is the projected
feature of a surface point, so the query points go through the same Fourier embedding and
input projection as the data. `fps_queries` picks them inside the model for the
`independent` ablation and for single shapes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class VAEConfig:
    width: int = 768
    heads: int = 12
    num_encoder_layers: int = 8
    num_decoder_layers: int = 16
    embed_dim: int = 64  # latent channels C
    num_freqs: int = 8  # Fourier frequencies 2^0..2^7, no pi (include_pi=False)
    point_feats: int = 3  # normals
    with_sharp_data: bool = True  # second input projection + cross-attention for sharp-edge points
    z_scale_factor: float = 1.0


class FourierEmbedder(nn.Module):
    """x -> [x, sin(2^k x), cos(2^k x)]: 3 * (2 * num_freqs + 1) channels."""

    def __init__(self, num_freqs: int):
        super().__init__()
        self.register_buffer("frequencies", 2.0 ** torch.arange(num_freqs, dtype=torch.float32), persistent=False)
        self.out_dim = 3 * (2 * num_freqs + 1)

    def forward(self, x_BN3: torch.Tensor) -> torch.Tensor:
        emb = (x_BN3[..., None] * self.frequencies.to(x_BN3)).flatten(-2)
        return torch.cat([x_BN3, emb.sin(), emb.cos()], dim=-1)


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


def _heads(x_BLF: torch.Tensor, heads: int, parts: int) -> list[torch.Tensor]:
    """Split a fused projection the way the release does: per head, then q|k|v inside a head."""
    B, L, _ = x_BLF.shape
    chunks = x_BLF.view(B, L, heads, -1).split(x_BLF.shape[-1] // heads // parts, dim=-1)
    return [c.transpose(1, 2) for c in chunks]  # each [B, heads, L, head_dim]


class QKNorm(nn.Module):
    """Per-head LayerNorm (with bias) of queries and keys before the dot product.

    Hunyuan3D-2.1 uses it (qk_norm=True); Step1X-3D does not. Attention modules hold it under the
    name `attention`, which gives the release's keys `attn.attention.q_norm.weight` and so on.
    """

    def __init__(self, head_dim: int, eps: float = 1e-6):
        super().__init__()
        self.q_norm = nn.LayerNorm(head_dim, eps=eps)
        self.k_norm = nn.LayerNorm(head_dim, eps=eps)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q_norm(q), self.k_norm(k)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, qk_norm: bool = False):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width, bias=False)
        self.c_proj = nn.Linear(width, width)
        self.attention = QKNorm(width // heads) if qk_norm else None

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        q, k, v = _heads(self.c_qkv(x_BLD), self.heads, 3)
        if self.attention is not None:
            q, k = self.attention(q, k)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.c_proj(out)


class CrossAttention(nn.Module):
    def __init__(self, width: int, heads: int, qk_norm: bool = False):
        super().__init__()
        self.heads = heads
        self.c_q = nn.Linear(width, width, bias=False)
        self.c_kv = nn.Linear(width, 2 * width, bias=False)
        self.c_proj = nn.Linear(width, width)
        self.attention = QKNorm(width // heads) if qk_norm else None

    def forward(self, x_BLD: torch.Tensor, data_BND: torch.Tensor) -> torch.Tensor:
        (q,) = _heads(self.c_q(x_BLD), self.heads, 1)
        k, v = _heads(self.c_kv(data_BND), self.heads, 2)
        if self.attention is not None:
            q, k = self.attention(q, k)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.c_proj(out)


class SelfAttentionBlock(nn.Module):
    """Pre-norm block. `eps` is the block LayerNorms' (Step1X 1e-5, Hunyuan3D-2.1 1e-6)."""

    def __init__(self, width: int, heads: int, qk_norm: bool = False, eps: float = 1e-5):
        super().__init__()
        self.attn = SelfAttention(width, heads, qk_norm=qk_norm)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width)
        self.ln_2 = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CrossAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, qk_norm: bool = False, eps: float = 1e-5):
        super().__init__()
        self.attn = CrossAttention(width, heads, qk_norm=qk_norm)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width)
        self.ln_3 = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), self.ln_2(data))
        return x + self.mlp(self.ln_3(x))


class Perceiver(nn.Module):
    def __init__(self, width: int, heads: int, layers: int, qk_norm: bool = False, eps: float = 1e-5):
        super().__init__()
        self.resblocks = nn.ModuleList(SelfAttentionBlock(width, heads, qk_norm, eps) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig, embedder: FourierEmbedder):
        super().__init__()
        self.embedder = embedder
        in_dim = embedder.out_dim + cfg.point_feats
        self.input_proj = nn.Linear(in_dim, cfg.width)
        self.cross_attn = CrossAttentionBlock(cfg.width, cfg.heads)
        if cfg.with_sharp_data:
            self.input_proj_sharp = nn.Linear(in_dim, cfg.width)
            self.cross_attn_sharp = CrossAttentionBlock(cfg.width, cfg.heads)
        self.self_attn = Perceiver(cfg.width, cfg.heads, cfg.num_encoder_layers)
        self.ln_post = nn.LayerNorm(cfg.width)

    def project(self, points_BN6: torch.Tensor, sharp: bool = False) -> torch.Tensor:
        proj = self.input_proj_sharp if sharp else self.input_proj
        return proj(torch.cat([self.embedder(points_BN6[..., :3]), points_BN6[..., 3:]], dim=-1))

    def forward(
        self,
        surface_BN6: torch.Tensor,
        queries_BL6: torch.Tensor,
        sharp_surface_BN6: torch.Tensor | None = None,
        sharp_queries_BL6: torch.Tensor | None = None,
    ) -> torch.Tensor:
        query_BLD = self.project(queries_BL6)
        if sharp_queries_BL6 is not None:
            query_BLD = torch.cat([query_BLD, self.project(sharp_queries_BL6, sharp=True)], dim=1)
        latents_BLD = self.cross_attn(query_BLD, self.project(surface_BN6))
        if sharp_surface_BN6 is not None:
            latents_BLD = latents_BLD + self.cross_attn_sharp(query_BLD, self.project(sharp_surface_BN6, sharp=True))
        return self.ln_post(self.self_attn(latents_BLD))


class Decoder(nn.Module):
    """SDF at query points from the decoded latent set: one cross-attention block, ln_post,
    output_proj (Hunyuan3D-2.1's `geo_decoder` is the same with qk_norm)."""

    def __init__(self, cfg: VAEConfig, embedder: FourierEmbedder, qk_norm: bool = False, eps: float = 1e-5):
        super().__init__()
        self.embedder = embedder
        self.query_proj = nn.Linear(embedder.out_dim, cfg.width)
        self.cross_attn_decoder = CrossAttentionBlock(cfg.width, cfg.heads, qk_norm=qk_norm, eps=eps)
        self.ln_post = nn.LayerNorm(cfg.width)
        self.output_proj = nn.Linear(cfg.width, 1)

    def forward(self, xyz_BM3: torch.Tensor, latents_BLD: torch.Tensor) -> torch.Tensor:
        query_BMD = self.query_proj(self.embedder(xyz_BM3).to(latents_BLD.dtype))
        return self.output_proj(self.ln_post(self.cross_attn_decoder(query_BMD, latents_BLD)))


def fps_queries(points_BN6: torch.Tensor, n: int) -> torch.Tensor:
    """n farthest-point samples per batch item (plain O(N n) loop; starts at point 0)."""
    B, N, _ = points_BN6.shape
    xyz = points_BN6[..., :3]
    idx = torch.zeros(B, n, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), math.inf, device=xyz.device)
    last = torch.zeros(B, dtype=torch.long, device=xyz.device)
    rows = torch.arange(B, device=xyz.device)
    for i in range(n):
        idx[:, i] = last
        dist = torch.minimum(dist, ((xyz - xyz[rows, last][:, None]) ** 2).sum(-1))
        last = dist.argmax(dim=1)
    return torch.gather(points_BN6, 1, idx[..., None].expand(-1, -1, points_BN6.shape[-1]))


class LatentSetVAE(nn.Module):
    """What both bases' VAEs share after their encoders: the KL bottleneck (pre_kl -> diagonal
    Gaussian -> latents scaled by z_scale_factor) and the latent-set decoder (post_kl ->
    transformer). Subclasses own `cfg`, `pre_kl`, `post_kl`, `transformer` and their encoder/head."""

    def posterior(self, h_BLD: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents z (scaled), mean, logvar) of the encoder's latent tokens."""
        mean_BLC, logvar_BLC = self.pre_kl(h_BLD).chunk(2, dim=-1)
        logvar_BLC = logvar_BLC.clamp(-30.0, 20.0)  # as the releases' DiagonalGaussianDistribution
        z = mean_BLC + torch.randn_like(mean_BLC) * torch.exp(0.5 * logvar_BLC) if sample else mean_BLC
        return z * self.cfg.z_scale_factor, mean_BLC, logvar_BLC

    def decode(self, z_BLC: torch.Tensor) -> torch.Tensor:
        """Latent set [B,L,D] the SDF head attends to, from scaled latents."""
        return self.transformer(self.post_kl(z_BLC / self.cfg.z_scale_factor))

    @staticmethod
    def kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=(1, 2))


class VecSetVAE(LatentSetVAE):
    Config = VAEConfig

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.embedder = FourierEmbedder(cfg.num_freqs)
        self.encoder = Encoder(cfg, self.embedder)
        self.pre_kl = nn.Linear(cfg.width, 2 * cfg.embed_dim)
        self.post_kl = nn.Linear(cfg.embed_dim, cfg.width)
        self.transformer = Perceiver(cfg.width, cfg.heads, cfg.num_decoder_layers)
        self.decoder = Decoder(cfg, self.embedder)

    def encode(
        self,
        surface_BN6: torch.Tensor,
        queries_BL6: torch.Tensor,
        sharp_surface_BN6: torch.Tensor | None = None,
        sharp_queries_BL6: torch.Tensor | None = None,
        sample: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents z [B,L,C] (scaled), mean, logvar). L = uniform + sharp queries."""
        return self.posterior(self.encoder(surface_BN6, queries_BL6, sharp_surface_BN6, sharp_queries_BL6), sample)

    def query(self, xyz_BM3: torch.Tensor, latents_BLD: torch.Tensor) -> torch.Tensor:
        """SDF [B,M,1] at points, positive inside."""
        return self.decoder(xyz_BM3, latents_BLD)
