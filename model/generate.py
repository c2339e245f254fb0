"""Video to 4D: T frames -> T meshes, in overlapping windows for videos longer than one clip.

frames -> DINOv2 tokens per frame -> shared-noise CFG sampling of the clip's latents ->
VAE decode -> marching cubes per frame. A video longer than `window` frames is generated in
windows that overlap by `overlap` frames; each window starts from the previous window's
overlap frames pinned (flow.sample's known frames), so shared frames are identical and the
new frames continue them. Shapes: T frames, L latents, C channels, N tokens, K width.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from model import flow
from model.mesh import MeshConfig, extract
from model.shapegen4d import ShapeGen4D
from model.vae import VecSetVAE


@dataclass
class GenerateConfig:
    num_latents: int = 1024
    window: int = 16  # frames per clip the model was trained on
    overlap: int = 4  # frames shared by consecutive windows of a longer video
    flow: flow.FlowConfig = field(default_factory=flow.FlowConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)


def window_starts(T: int, window: int, overlap: int) -> list[int]:
    """Start frames of the windows covering T frames; the last one ends at T."""
    if T <= window:
        return [0]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap {overlap} must be in [0, window={window})")
    starts = list(range(0, T - window, window - overlap)) + [T - window]
    return sorted(set(starts))


class VideoTo4D:
    def __init__(
        self,
        conditioner: Callable[[torch.Tensor], torch.Tensor],
        model: ShapeGen4D,
        vae: VecSetVAE,
        cfg: GenerateConfig,
    ):
        self.conditioner, self.model, self.vae, self.cfg = conditioner, model.eval(), vae.eval(), cfg

    @torch.no_grad()
    def latents(self, cond_TNK: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents [T,L,C] for a whole video's condition tokens, window by window."""
        T = cond_TNK.shape[0]
        W = min(self.cfg.window, T)
        C = self.vae.cfg.embed_dim
        out = torch.zeros(T, self.cfg.num_latents, C, dtype=cond_TNK.dtype, device=cond_TNK.device)
        done = torch.zeros(T, dtype=torch.bool)
        for start in window_starts(T, W, self.cfg.overlap):
            frames = slice(start, start + W)
            known = done[frames].clone()
            z = flow.sample(self.model, cond_TNK[None, frames], (1, W, self.cfg.num_latents, C), self.cfg.flow,
                            generator, known_BTLC=out[None, frames], known_T=known)
            out[frames] = z[0]
            done[frames] = True
        return out

    @torch.no_grad()
    def meshes(self, latents_TLC: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        result = []
        for z_LC in latents_TLC:
            decoded = self.vae.decode(z_LC[None])
            field = lambda xyz: self.vae.query(xyz[None], decoded)[0, :, 0]  # noqa: E731
            result.append(extract(field, self.cfg.mesh, device=z_LC.device))
        return result

    def __call__(self, frames_THWc: torch.Tensor, generator: torch.Generator | None = None):
        """uint8 video frames [T,H,W,3|4] -> T meshes (vertices [V,3], faces [F,3]) in [-1,1]^3."""
        return self.meshes(self.latents(self.conditioner(frames_THWc), generator))
