"""The frozen 3D base: `build_base(name, size="full" | "tiny")` -> Base(name, vae, dit).

- "step1x3d": Step1X-3D's geometry model (VAE 191,591,553 params, FLUX denoiser 1,316,287,808);
- "hunyuan3d21": Hunyuan3D-2.1's ShapeVAE (327,746,177) and HunYuanDiTPlain (3,050,758,720).
"tiny" is the same code at toy widths for CPU tests and demos. Each denoiser carries its
adapter (model/adapter.py): the only place where the bases' conventions differ.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch.nn as nn

from model.dit import DiTConfig, FluxDenoiser
from model.hunyuan_dit import HunyuanDiT, HunyuanDiTConfig
from model.hunyuan_vae import ShapeVAE, ShapeVAEConfig
from model.vae import VAEConfig, VecSetVAE

SIZES = {
    ("step1x3d", "full"): (VAEConfig(), DiTConfig()),
    ("step1x3d", "tiny"): (
        VAEConfig(width=64, heads=4, num_encoder_layers=2, num_decoder_layers=2, embed_dim=8),
        DiTConfig(width=64, heads=4, num_layers=2, num_single_layers=2, in_channels=8, cross_attention_dim=32),
    ),
    ("hunyuan3d21", "full"): (ShapeVAEConfig(), HunyuanDiTConfig()),
    ("hunyuan3d21", "tiny"): (
        ShapeVAEConfig(width=64, heads=4, num_encoder_layers=2, num_decoder_layers=2, embed_dim=8, z_scale_factor=1.0),
        # depth 5: blocks 3-4 take U-Net skips from blocks 1-0, and are the MoE blocks.
        HunyuanDiTConfig(width=64, heads=4, depth=5, in_channels=8, cross_attention_dim=32, num_moe_layers=2, num_experts=4),
    ),
}
MODULES = {"step1x3d": (VecSetVAE, FluxDenoiser), "hunyuan3d21": (ShapeVAE, HunyuanDiT)}


@dataclass
class BaseConfig:
    """Which base, and where its weights come from (jobs load them; see jobs/components.py)."""

    name: Literal["step1x3d", "hunyuan3d21"] = "step1x3d"
    size: Literal["full", "tiny"] = "full"
    # Folder or URI of the release weights (see model/checkpoint.py for each base's layout).
    # "" = seeded random init, for tests and demos only: the run is tagged base.random_init=true
    # and the weights ship with the model.
    checkpoint: str = ""
    seed: int = 0  # of a random init, and of the S-T layers' init (seed + 1)


@dataclass
class Base:
    name: str
    vae: nn.Module  # VecSetVAE | ShapeVAE: encode / decode / query, positive-inside field
    dit: nn.Module  # FluxDenoiser | HunyuanDiT: forward_blocks, adapter

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae, "dit": self.dit}


def build_base(name: str = "step1x3d", size: str = "full") -> Base:
    """Build under `torch.device("meta")` to inspect the full model without allocating it."""
    if (name, size) not in SIZES:
        raise ValueError(f"unknown base {name!r} size {size!r}; known: {sorted(SIZES)}")
    vae_cfg, dit_cfg = SIZES[(name, size)]
    vae_cls, dit_cls = MODULES[name]
    # Copies: a module may change its own config (e.g. a loaded latent scale), never the table's.
    return Base(name, vae_cls(dataclasses.replace(vae_cfg)), dit_cls(dataclasses.replace(dit_cfg)))
