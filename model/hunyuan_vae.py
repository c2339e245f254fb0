"""Hunyuan3D-2.1's ShapeVAE, parameter-compatible with the release (hunyuan3d-vae-v2-1).

The same Michelangelo/VecSet lineage as Step1X-3D's VAE (model/vae.py), built from its blocks with
the options the release turns on: per-head LayerNorm on queries and keys (qk_norm, eps 1e-6,
with bias), block LayerNorms with eps 1e-6, qkv without bias. Differences from Step1X:
  * one input projection for all points; a point is [xyz, normal, sharp-edge flag] (7 channels),
    the flag being 0 for uniform surface samples and 1 for sharp-edge samples, so there is no
    second (sharp) cross-attention branch;
  * the SDF head is called `geo_decoder`;
  * DiT latents are the encoder's latents times `z_scale_factor` (1.0039506158752403).

Shapes: B batch, N surface points, L latents (the encoder's queries), M decoder queries,
D width, C latent channels. The field is an SDF, POSITIVE INSIDE (like Step1X-3D).

As in model/vae.py the encoder's queries are GIVEN (the release picks them by FPS on a shuffled
subset of the surface points; `encode_points` is its encoder after that sampling step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from model.vae import CrossAttentionBlock, Decoder, FourierEmbedder, LatentSetVAE, Perceiver

BLOCK_EPS = 1e-6  # the blocks' LayerNorms (ln_1/ln_2/ln_3); ln_post keeps torch's 1e-5


@dataclass
class ShapeVAEConfig:
    width: int = 1024
    heads: int = 16
    num_encoder_layers: int = 8
    num_decoder_layers: int = 16
    embed_dim: int = 64  # latent channels C
    num_freqs: int = 8  # Fourier frequencies 2^0..2^7, no pi (include_pi=False)
    point_feats: int = 4  # normal + sharp-edge flag
    z_scale_factor: float = 1.0039506158752403


class PointEncoder(nn.Module):
    """Cross-attention from the query points to the data points, self-attention, ln_post."""

    def __init__(self, cfg: ShapeVAEConfig, embedder: FourierEmbedder):
        super().__init__()
        self.embedder = embedder
        self.input_proj = nn.Linear(embedder.out_dim + cfg.point_feats, cfg.width)  # queries and data
        self.cross_attn = CrossAttentionBlock(cfg.width, cfg.heads, qk_norm=True, eps=BLOCK_EPS)
        self.self_attn = Perceiver(cfg.width, cfg.heads, cfg.num_encoder_layers, qk_norm=True, eps=BLOCK_EPS)
        self.ln_post = nn.LayerNorm(cfg.width)

    def project(self, points_BNF: torch.Tensor) -> torch.Tensor:
        return self.input_proj(torch.cat([self.embedder(points_BNF[..., :3]), points_BNF[..., 3:]], dim=-1))

    def forward(self, surface_BN7: torch.Tensor, queries_BL7: torch.Tensor) -> torch.Tensor:
        latents_BLD = self.cross_attn(self.project(queries_BL7), self.project(surface_BN7))
        return self.ln_post(self.self_attn(latents_BLD))


def _flagged(points_BN6: torch.Tensor, flag: float) -> torch.Tensor:
    return torch.cat([points_BN6, points_BN6.new_full((*points_BN6.shape[:-1], 1), flag)], dim=-1)


class ShapeVAE(LatentSetVAE):
    Config = ShapeVAEConfig

    def __init__(self, cfg: ShapeVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.fourier_embedder = FourierEmbedder(cfg.num_freqs)
        self.encoder = PointEncoder(cfg, self.fourier_embedder)
        self.pre_kl = nn.Linear(cfg.width, 2 * cfg.embed_dim)
        self.post_kl = nn.Linear(cfg.embed_dim, cfg.width)
        self.transformer = Perceiver(cfg.width, cfg.heads, cfg.num_decoder_layers, qk_norm=True, eps=BLOCK_EPS)
        self.geo_decoder = Decoder(cfg, self.fourier_embedder, qk_norm=True, eps=BLOCK_EPS)

    def encode(
        self,
        surface_BN6: torch.Tensor,
        queries_BL6: torch.Tensor,
        sharp_surface_BN6: torch.Tensor | None = None,
        sharp_queries_BL6: torch.Tensor | None = None,
        sample: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents z [B,L,C] (scaled), mean, logvar) from [xyz, normal] points; L = uniform + sharp queries.

        Builds the release's 7-channel points: uniform ones get sharp flag 0, sharp-edge ones flag 1.
        """
        surface, queries = [_flagged(surface_BN6, 0.0)], [_flagged(queries_BL6, 0.0)]
        if sharp_surface_BN6 is not None:
            surface.append(_flagged(sharp_surface_BN6, 1.0))
        if sharp_queries_BL6 is not None:
            queries.append(_flagged(sharp_queries_BL6, 1.0))
        return self.encode_points(torch.cat(surface, dim=1), torch.cat(queries, dim=1), sample=sample)

    def encode_points(
        self, surface_BN7: torch.Tensor, queries_BL7: torch.Tensor, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The release's encoder after its sampling step: data points [B,N,7], query points [B,L,7]."""
        return self.posterior(self.encoder(surface_BN7, queries_BL7), sample)

    def query(self, xyz_BM3: torch.Tensor, latents_BLD: torch.Tensor) -> torch.Tensor:
        """SDF [B,M,1] at points, positive inside."""
        return self.geo_decoder(xyz_BM3, latents_BLD)

