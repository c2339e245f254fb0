"""The frozen 3D base: `build_base("step1x3d", size="full" | "tiny")` -> Base(vae, dit).

"full" is the released Step1X-3D geometry model (VAE 191,591,553 params, denoiser
1,316,287,808); "tiny" is the same code at toy widths for CPU tests and demos.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch.nn as nn

from model.dit import DiTConfig, FluxDenoiser
from model.vae import VAEConfig, VecSetVAE

SIZES = {
    ("step1x3d", "full"): (VAEConfig(), DiTConfig()),
    ("step1x3d", "tiny"): (
        VAEConfig(width=64, heads=4, num_encoder_layers=2, num_decoder_layers=2, embed_dim=8),
        DiTConfig(width=64, heads=4, num_layers=2, num_single_layers=2, in_channels=8, cross_attention_dim=32),
    ),
}


@dataclass
class BaseConfig:
    """Which base, and where its weights come from (jobs load them; see jobs/components.py)."""

    name: str = "step1x3d"
    size: Literal["full", "tiny"] = "full"
    # Folder or URI of the release weights (vae/, transformer/). "" = seeded random init, for tests
    # and demos only: the run is tagged base.random_init=true and the weights ship with the model.
    checkpoint: str = ""
    seed: int = 0  # of a random init, and of the S-T layers' init (seed + 1)


@dataclass
class Base:
    vae: VecSetVAE
    dit: FluxDenoiser

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae, "dit": self.dit}


def build_base(name: str = "step1x3d", size: str = "full") -> Base:
    """Build under `torch.device("meta")` to inspect the full model without allocating it."""
    if (name, size) not in SIZES:
        raise ValueError(f"unknown base {name!r} size {size!r}; known: {sorted(SIZES)}")
    vae_cfg, dit_cfg = SIZES[(name, size)]
    # Copies: a module may change its own config (e.g. a loaded latent scale), never the table's.
    return Base(VecSetVAE(dataclasses.replace(vae_cfg)), FluxDenoiser(dataclasses.replace(dit_cfg)))
