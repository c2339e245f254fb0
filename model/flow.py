"""Rectified flow for clips: shared noise, logit-normal times, CFG Euler sampling with a time shift.

One canonical convention for every base (model/adapter.py): sigma in [0, 1] with 1 = pure noise,
x_sigma = (1 - sigma) x0 + sigma eps, and the model callable `model(x_BTLC, sigma_B, cond_BTNK)`
returns the velocity eps - x0. The callable carries its base's adapter as `model.adapter`, and
every FlowConfig field left at None / "official" takes that base's official value:
- loss_weighting "sigma2": Step1X-3D's loss is on the x0 estimate x_sigma - sigma v
  (precondition_outputs), which is sigma^2 (v - (eps - x0))^2; "uniform" is the plain velocity
  MSE (Hunyuan3D-2.1's);
- sigma_grid "official": the base's sampler grid (adapter.official_sigmas); "linear":
  linspace(1, 0, steps + 1). The time shift applies to either;
- zero_first_step: Step1X-3D's sampler zeroes the velocity of the first step (use_zero_init);
- guidance: the base's CFG scale, CFG batched in the base's order.
ShapeGen4D draws ONE eps per clip and uses it for every frame, in training and in sampling,
so frame-to-frame differences come from the data, not from independent noise.
Shapes: B clips, T frames, L latents, C channels, N condition tokens, K condition width.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from model.adapter import BaseAdapter


class ClipModel(Protocol):
    """What flow.loss / flow.sample call: ShapeGen4D, or fit.PerFrameBase for the base alone."""

    adapter: BaseAdapter

    def __call__(self, x_BTLC: torch.Tensor, sigma_B: torch.Tensor, cond_BTNK: torch.Tensor) -> torch.Tensor:
        """The velocity eps - x0 [B,T,L,C] at noise level sigma_B (1 = noise)."""


@dataclass
class FlowConfig:
    shared_noise: bool = True  # ablation: False draws independent noise per frame
    logit_mean: float = 0.0  # logit-normal timestep sampling (SD3)
    logit_std: float = 1.0
    cond_dropout: float = 0.1  # per clip, for classifier-free guidance
    time_shift: float = 3.0  # sampling: > 1 spends more steps at high noise; 1 = no shift (ablation)
    steps: int = 30
    guidance: float | None = None  # None = the base's (Step1X-3D 7.5, Hunyuan3D-2.1 5.0)
    loss_weighting: str = "official"  # the base's, or "sigma2" (x0-preconditioned) / "uniform" velocity MSE
    sigma_grid: str = "official"  # the base's sampler grid, or "linear": linspace(1, 0, steps + 1)
    zero_first_step: bool | None = None  # None = the base's (Step1X-3D: the first step's velocity is zeroed)


def resolve(cfg: FlowConfig, adapter) -> FlowConfig:
    """`cfg` with every base-dependent field set to `adapter`'s official value where left open."""
    if cfg.loss_weighting not in ("official", "sigma2", "uniform"):
        raise ValueError(f"loss_weighting must be 'official', 'sigma2' or 'uniform', not {cfg.loss_weighting!r}")
    if cfg.sigma_grid not in ("official", "linear"):
        raise ValueError(f"sigma_grid must be 'official' or 'linear', not {cfg.sigma_grid!r}")
    return dataclasses.replace(
        cfg,
        guidance=adapter.guidance if cfg.guidance is None else cfg.guidance,
        loss_weighting=adapter.loss_weighting if cfg.loss_weighting == "official" else cfg.loss_weighting,
        zero_first_step=adapter.zero_first_step if cfg.zero_first_step is None else cfg.zero_first_step,
    )


def noise(shape_BTLC: tuple[int, ...], shared: bool, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    B, T, L, C = shape_BTLC
    if shared:
        return torch.randn(B, 1, L, C, generator=generator, device=device).expand(B, T, L, C).contiguous()
    return torch.randn(B, T, L, C, generator=generator, device=device)


def sample_sigma(B: int, cfg: FlowConfig, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    return torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(B, generator=generator, device=device))


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """sigma' = s*sigma / (1 + (s-1)*sigma): the same endpoints, more of the schedule near 1."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def loss(
    model: ClipModel,
    x0_BTLC: torch.Tensor,
    cond_BTNK: torch.Tensor,
    cfg: FlowConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Flow-matching MSE of one batch of clips (condition dropped to zeros with cond_dropout)."""
    cfg = resolve(cfg, model.adapter)
    B = x0_BTLC.shape[0]
    eps = noise(tuple(x0_BTLC.shape), cfg.shared_noise, generator, x0_BTLC.device).to(x0_BTLC.dtype)
    sigma = sample_sigma(B, cfg, generator, x0_BTLC.device).to(x0_BTLC.dtype)
    x_t = (1 - sigma)[:, None, None, None] * x0_BTLC + sigma[:, None, None, None] * eps
    keep = (torch.rand(B, generator=generator, device=x0_BTLC.device) >= cfg.cond_dropout).to(cond_BTNK.dtype)
    v = model(x_t, sigma, cond_BTNK * keep[:, None, None, None])
    if cfg.loss_weighting == "uniform":
        return F.mse_loss(v.float(), (eps - x0_BTLC).float())
    w = sigma.float()[:, None, None, None] ** 2
    return (w * (v.float() - (eps - x0_BTLC).float()) ** 2).mean()


def sigma_grid(cfg: FlowConfig, adapter, device=None) -> torch.Tensor:
    """Sigmas from 1 to 0 (see the module doc), time-shifted; one Euler step per consecutive pair."""
    if cfg.sigma_grid == "official":
        grid = adapter.official_sigmas(cfg.steps, device)
    elif cfg.sigma_grid == "linear":
        grid = torch.linspace(1.0, 0.0, cfg.steps + 1, device=device)
    else:
        raise ValueError(f"sigma_grid must be 'official' or 'linear', not {cfg.sigma_grid!r}")
    return shift_sigma(grid, cfg.time_shift)


@torch.no_grad()
def sample(
    model: ClipModel,
    cond_BTNK: torch.Tensor,
    shape_BTLC: tuple[int, ...],
    cfg: FlowConfig,
    generator: torch.Generator | None = None,
    known_BTLC: torch.Tensor | None = None,
    known_T: torch.Tensor | None = None,
) -> torch.Tensor:
    """Euler integration from sigma = 1 (noise) to 0 with classifier-free guidance.

    `known_BTLC` with a bool mask `known_T` pins those frames (e.g. the overlap with the
    previous window of a long video): after every step they are reset to their clean value
    noised to the current sigma with the same noise, so they end exactly at the known value
    while the other frames attend to them throughout.
    """
    adapter = model.adapter
    cfg = resolve(cfg, adapter)
    eps = noise(shape_BTLC, cfg.shared_noise, generator, cond_BTNK.device).to(cond_BTNK.dtype)
    x = eps.clone()
    sigmas = sigma_grid(cfg, adapter, cond_BTNK.device)
    B = shape_BTLC[0]
    uncond = torch.zeros_like(cond_BTNK)
    # The base's CFG batch order: the same numbers either way, but batch-dependent kernels (and a
    # comparison with the official sampler) see the order it was run with.
    pair = [cond_BTNK, uncond] if adapter.cfg_cond_first else [uncond, cond_BTNK]
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        if i == 0 and cfg.zero_first_step:
            v = torch.zeros_like(x)  # the official sampler's use_zero_init: no model call needed
        else:
            sigma = torch.full((2 * B,), float(s), device=cond_BTNK.device)
            v_a, v_b = model(torch.cat([x, x]), sigma, torch.cat(pair)).chunk(2)
            v_c, v_u = (v_a, v_b) if adapter.cfg_cond_first else (v_b, v_a)
            v = v_u + cfg.guidance * (v_c - v_u)
        x = x + (s_next - s) * v
        if known_BTLC is not None:
            x[:, known_T] = (1 - s_next) * known_BTLC[:, known_T] + s_next * eps[:, known_T]
    return x
