"""Release weights in, strictly: the Step1X-3D folder layout, safetensors only (no pickle).

    <folder>/vae/diffusion_pytorch_model.safetensors          -> Base.vae
    <folder>/transformer/diffusion_pytorch_model.safetensors  -> Base.dit (keys "dit_model.*")

Loading is strict: a missing or unexpected key or a shape mismatch is an error that names
them, because a silently half-loaded frozen base trains S-T layers against noise.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch.nn as nn

from model.base import Base

FILES = {"vae": "vae/diffusion_pytorch_model.safetensors", "dit": "transformer/diffusion_pytorch_model.safetensors"}
# Our own bases also fix the latent scale (the release's is 1.0, in its code); weights cannot hold it.
LATENT_SCALE = "vae/shapegen4d_latent_scale.json"


class CheckpointError(ValueError):
    pass


def load_strict(module: nn.Module, state: dict, what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def show(items: list[str]) -> str:
            return ", ".join(items[:10]) + (f" (+{len(items) - 10} more)" if len(items) > 10 else "")

        raise CheckpointError(
            f"{what}: {len(missing)} missing key(s) [{show(missing)}], {len(unexpected)} unexpected key(s) "
            f"[{show(unexpected)}], {len(shapes)} shape mismatch(es) [{show(shapes)}]"
        )
    module.load_state_dict(state, strict=True, assign=any(p.is_meta for p in module.parameters()))


def load_base(base: Base, folder: str | Path) -> Base:
    """Fill `base` from a local release folder (a hub snapshot downloaded beforehand)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name, rel in FILES.items():
        path = folder / rel
        if not path.is_file():
            raise FileNotFoundError(f"base checkpoint: {path} not found (expected the release layout {FILES})")
        load_strict(getattr(base, name), load_file(str(path)), f"{path}")
    if (folder / LATENT_SCALE).is_file():
        scale = float(json.loads((folder / LATENT_SCALE).read_text())["z_scale_factor"])
        base.vae.cfg = dataclasses.replace(base.vae.cfg, z_scale_factor=scale)
    return base


def save_base(base: Base, folder: str | Path) -> None:
    """Write `base` in the release layout (used for our own pretrained tiny bases and tests)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    for name, rel in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in getattr(base, name).state_dict().items()}
        save_file(state, str(folder / rel))
    if base.vae.cfg.z_scale_factor != 1.0:
        (folder / LATENT_SCALE).write_text(json.dumps({"z_scale_factor": base.vae.cfg.z_scale_factor}))
