"""What the flow code and ShapeGen4D need to know about a base: one adapter per base.

`flow.py` works in ONE canonical convention: sigma in [0, 1] with 1 = pure noise,
x_sigma = (1 - sigma) x0 + sigma eps, velocity eps - x0. Each base's network was trained in its
own convention; its adapter maps sigma to the time that network reads and the network's output
to the canonical velocity, and carries the base's official training and sampling defaults (the
values a `flow.FlowConfig` field left at None / "official" takes). Nothing outside this file
branches on a base's name.

- Step1X-3D (FluxDenoiser): t = 1000 sigma (1000 = noise), predicts eps - x0; CFG batch
  [uncond, cond] at 7.5; loss on the x0 estimate (sigma^2-weighted velocity MSE); sampler grid
  linspace(1, 0.001, N) then 0 with the first step's velocity zeroed; meshes decoded in
  [-1.05, 1.05]^3 (stepfun-ai/Step1X-3D, systems/shape_rectified_flow.py and
  models/pipelines/pipeline.py).
- Hunyuan3D-2.1 (HunYuanDiTPlain): t = 1 - sigma in [0, 1] (0 = noise), predicts x0 - eps (data
  minus noise); CFG batch [cond, uncond] at 5.0; plain velocity MSE; sampler t = linspace(0, 1, N)
  then a zero-length last step, i.e. sigma linspace(1, 0, N): N - 1 moves; meshes decoded in
  [-1.01, 1.01]^3, box_v (Tencent-Hunyuan/Hunyuan3D-2.1, hy3dshape/models/diffusion/transport
  and pipelines.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BaseAdapter:
    name: str
    time_offset: float  # the network's time = time_offset + time_scale * sigma
    time_scale: float
    velocity_sign: float  # canonical velocity = velocity_sign * network output
    cfg_cond_first: bool  # batch order of the official CFG sampler
    guidance: float
    loss_weighting: str  # "sigma2" | "uniform"
    sigma_min: float  # official grid: linspace(1, sigma_min, steps), then 0 when sigma_min > 0
    zero_first_step: bool
    # Does the network carry image tokens through its blocks (Step1X's double/single stream) or
    # cross-attend to fixed image features (Hunyuan)? Without a stream, ShapeGen4D keeps its own.
    image_stream: bool
    release_latents: int  # latent tokens the release was trained with
    mesh_bounds: float  # the official pipeline's decoding box [-b, b]^3 for marching cubes

    def model_time(self, sigma_B: torch.Tensor) -> torch.Tensor:
        return self.time_offset + self.time_scale * sigma_B

    def velocity(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.velocity_sign == 1 else self.velocity_sign * out

    def official_sigmas(self, steps: int, device=None) -> torch.Tensor:
        grid = torch.linspace(1.0, self.sigma_min, steps, device=device)
        return torch.cat([grid, torch.zeros(1, device=device)]) if self.sigma_min > 0 else grid


STEP1X3D = BaseAdapter(
    name="step1x3d", time_offset=0.0, time_scale=1000.0, velocity_sign=1.0, cfg_cond_first=False, guidance=7.5,
    loss_weighting="sigma2", sigma_min=1e-3, zero_first_step=True, image_stream=True, release_latents=2048,
    mesh_bounds=1.05,
)
HUNYUAN3D21 = BaseAdapter(
    name="hunyuan3d21", time_offset=1.0, time_scale=-1.0, velocity_sign=-1.0, cfg_cond_first=True, guidance=5.0,
    loss_weighting="uniform", sigma_min=0.0, zero_first_step=False, image_stream=False, release_latents=4096,
    mesh_bounds=1.01,
)
