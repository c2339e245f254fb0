"""ShapeGen4D: a frozen 3D base denoiser lifted to T-frame clips by S-T layers.

Each frame runs through the base exactly as a single shape would; after EVERY base block
(double- and single-stream) an S-T layer mixes information across the frames of the clip.
Only the S-T layers have `requires_grad`. Shapes: B clips, T frames, L latents, C latent
channels, N image tokens per frame, K condition width.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from model.dit import FluxDenoiser
from model.st_layer import STConfig, STLayer


@dataclass
class ShapeGen4DConfig:
    st: STConfig = field(default_factory=STConfig)


class ShapeGen4D(nn.Module):
    Config = ShapeGen4DConfig

    def __init__(self, base: FluxDenoiser, cfg: ShapeGen4DConfig | None = None):
        super().__init__()
        cfg = cfg or ShapeGen4DConfig()
        # Unset (0) width/heads/mlp_ratio are the base's; a copy, so the caller's config stays as given.
        st = cfg.st
        cfg = dataclasses.replace(cfg, st=dataclasses.replace(
            st, width=st.width or base.cfg.width, heads=st.heads or base.cfg.heads, mlp_ratio=st.mlp_ratio or base.cfg.mlp_ratio))
        if (cfg.st.width, cfg.st.heads) != (base.cfg.width, base.cfg.heads):
            raise ValueError(f"S-T width/heads {cfg.st.width}/{cfg.st.heads} differ from the base's {base.cfg.width}/{base.cfg.heads}")
        self.cfg = cfg
        self.base = base
        self.base.requires_grad_(False)
        n_blocks = base.cfg.num_layers + base.cfg.num_single_layers
        self.st_layers = nn.ModuleList(STLayer(cfg.st) for _ in range(n_blocks))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.st_layers.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "ShapeGen4D":
        super().train(mode)
        self.base.eval()  # frozen: no dropout or other train-time behaviour in the base
        return self

    def forward(
        self, latents_BTLC: torch.Tensor, t_B: torch.Tensor, cond_BTNK: torch.Tensor, frames_T: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Velocity [B,T,L,C] for a clip at time t_B (shared by its frames), t in [0, 1000]."""
        B, T, L, C = latents_BTLC.shape
        N = cond_BTNK.shape[2]

        def after_block(i: int, x, c, temb):
            x_BTLD, c_BTND = x.view(B, T, L, -1), c.view(B, T, N, -1)
            x_BTLD, c_BTND = self.st_layers[i](x_BTLD, c_BTND, temb.view(B, T, -1)[:, 0], frames_T)
            return x_BTLD.reshape(B * T, L, -1), c_BTND.reshape(B * T, N, -1)

        out = self.base.dit_model.forward_blocks(
            latents_BTLC.reshape(B * T, L, C),
            t_B.repeat_interleave(T),
            cond_BTNK.reshape(B * T, N, -1),
            after_block,
        )
        return out.view(B, T, L, C)
