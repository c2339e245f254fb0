"""ShapeGen4D: a frozen 3D base denoiser lifted to T-frame clips by S-T layers.

Each frame runs through the base exactly as a single shape would; after EVERY base block
an S-T layer mixes information across the frames of the clip. Only the S-T layers (and, for a
base without an image stream, the projection that starts theirs) have `requires_grad`.

The S-T layers attend over the shape latents AND the image tokens of every frame (the paper's
ablation: without image tokens they do worse). Step1X-3D carries image tokens through its blocks,
so the S-T layers read and update that stream. Hunyuan3D-2.1's blocks only cross-attend to fixed
DINOv2 features, so there is no stream to read: ShapeGen4D starts its own, a trainable linear
projection of the features to the base width (what Step1X's frozen proj_cross_attention does),
and lets the S-T layers carry it from layer to layer. Deep S-T layers then see image tokens that
have attended to the clip's latents, as they do over Step1X, instead of the raw features again.

Time and velocity go through the base's adapter (model/adapter.py): forward takes the canonical
sigma and returns the canonical velocity whatever the base's own convention.
Shapes: B clips, T frames, L latents, C latent channels, N image tokens per frame, K condition
width, D base width.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from model.st_layer import STConfig, STLayer


@dataclass
class ShapeGen4DConfig:
    st: STConfig = field(default_factory=STConfig)


class ShapeGen4D(nn.Module):
    Config = ShapeGen4DConfig

    def __init__(self, base: nn.Module, cfg: ShapeGen4DConfig | None = None):
        """`base`: a base denoiser (model.dit.FluxDenoiser, model.hunyuan_dit.HunyuanDiT) with
        `adapter`, `cfg.width/heads/mlp_ratio/cross_attention_dim`, `block_count()` and
        `forward_blocks(x, t, cond, after_block)`."""
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
        self.adapter = base.adapter
        self.base.requires_grad_(False)
        self.st_layers = nn.ModuleList(STLayer(cfg.st) for _ in range(base.block_count()))
        st_sees_image = cfg.st.use_image_tokens and not cfg.st.temporal_only
        self.image_in = (nn.Linear(base.cfg.cross_attention_dim, base.cfg.width)
                         if st_sees_image and not self.adapter.image_stream else None)
        # Everything trained, as one module whose keys are the S-T layers' ("0.norm...", as saved
        # since the first release) plus "image_in.*" where there is one. Not registered as a child:
        # it shares the parameters above, it does not own copies.
        trained = nn.Module()
        for i, layer in enumerate(self.st_layers):
            trained.add_module(str(i), layer)
        if self.image_in is not None:
            trained.add_module("image_in", self.image_in)
        object.__setattr__(self, "_trained", trained)

    def trained_weights(self) -> nn.Module:
        """What a checkpoint or a registered model stores: the S-T layers (+ image_in)."""
        return self._trained

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self._trained.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "ShapeGen4D":
        super().train(mode)
        self.base.eval()  # frozen: no dropout or other train-time behaviour in the base
        return self

    def forward(
        self, latents_BTLC: torch.Tensor, sigma_B: torch.Tensor, cond_BTNK: torch.Tensor, frames_T: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Velocity eps - x0 [B,T,L,C] for a clip at noise level sigma_B in [0, 1] (1 = noise), shared by its frames."""
        B, T, L, C = latents_BTLC.shape
        N = cond_BTNK.shape[2]
        # The S-T layers' own image stream when the base has none (see the module doc); the
        # temporal-only and no-image ablations never read it.
        own = {"c": self.image_in(cond_BTNK) if self.image_in is not None else None}

        def after_block(i: int, x, c, temb):
            c_BTND = own["c"] if c is None else c.view(B, T, N, -1)
            x_BTLD, c_BTND = self.st_layers[i](x.view(B, T, L, -1), c_BTND, temb.view(B, T, -1)[:, 0], frames_T)
            if c is None:
                own["c"] = c_BTND
                return x_BTLD.reshape(B * T, L, -1), None
            return x_BTLD.reshape(B * T, L, -1), c_BTND.reshape(B * T, N, -1)

        out = self.base.forward_blocks(
            latents_BTLC.reshape(B * T, L, C),
            self.adapter.model_time(sigma_B).repeat_interleave(T),
            cond_BTNK.reshape(B * T, N, -1),
            after_block,
        )
        return self.adapter.velocity(out).view(B, T, L, C)
