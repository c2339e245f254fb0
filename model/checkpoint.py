"""Release weights in, strictly: each base's release folder layout, safetensors only (no pickle).

    step1x3d     <folder>/vae/diffusion_pytorch_model.safetensors          -> Base.vae
                 <folder>/transformer/diffusion_pytorch_model.safetensors  -> Base.dit (keys "dit_model.*")
    hunyuan3d21  <folder>/hunyuan3d-vae-v2-1/model.fp16.safetensors        -> Base.vae (no prefix)
                 <folder>/hunyuan3d-dit-v2-1/model.fp16.safetensors        -> Base.dit (keys "model.*";
                 the bundle's "vae.*" and "conditioner.*" entries are left to their own loaders)

Hunyuan3D-2.1 publishes pickled `model.fp16.ckpt` files by default; its loader reads the
`.safetensors` variant above (use_safetensors=True), and pickles are refused here because
unpickling runs code. Loading is strict: a missing or unexpected key or a shape mismatch is an
error that names them, because a silently half-loaded frozen base trains S-T layers against noise.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch.nn as nn

from model.base import Base

# base name -> part -> (file, key prefix inside the file, other prefixes the file may also hold)
LAYOUTS = {
    "step1x3d": {
        "vae": ("vae/diffusion_pytorch_model.safetensors", "", ()),
        "dit": ("transformer/diffusion_pytorch_model.safetensors", "", ()),
    },
    "hunyuan3d21": {
        "vae": ("hunyuan3d-vae-v2-1/model.fp16.safetensors", "", ()),
        "dit": ("hunyuan3d-dit-v2-1/model.fp16.safetensors", "model.", ("vae.", "conditioner.")),
    },
}
# Our own bases also fix the latent scale (the releases keep theirs in code; weights cannot hold
# it): a file beside the VAE's weights, read when present.
LATENT_SCALE = "shapegen4d_latent_scale.json"


class CheckpointError(ValueError):
    pass


def files(name: str) -> list[str]:
    """The weight files of base `name`'s release layout, relative to its folder."""
    return [rel for rel, _, _ in LAYOUTS[name].values()]


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


def _part(state: dict, prefix: str, others: tuple[str, ...], what: str) -> dict:
    if not prefix:
        return state
    stray = sorted(k for k in state if not k.startswith((prefix, *others)))
    if stray:
        raise CheckpointError(f"{what}: {len(stray)} key(s) outside {(prefix, *others)}: {', '.join(stray[:10])}")
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_base(base: Base, folder: str | Path) -> Base:
    """Fill `base` from a local release folder (a hub snapshot downloaded beforehand)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    layout = LAYOUTS[base.name]
    for part, (rel, prefix, others) in layout.items():
        path = folder / rel
        if not path.is_file():
            pickled = path.with_suffix(".ckpt")
            hint = (f"; {pickled.name} is there, but pickles are not loaded: convert it once with "
                    f"`python -m model.checkpoint convert {folder}`") if pickled.is_file() else ""
            raise FileNotFoundError(f"base checkpoint: {path} not found (the {base.name} release layout is "
                                    f"{files(base.name)}){hint}")
        load_strict(getattr(base, part), _part(load_file(str(path)), prefix, others, str(path)), str(path))
    scale_file = folder / Path(layout["vae"][0]).parent / LATENT_SCALE
    if scale_file.is_file():
        scale = float(json.loads(scale_file.read_text())["z_scale_factor"])
        base.vae.cfg = dataclasses.replace(base.vae.cfg, z_scale_factor=scale)
    return base


def save_base(base: Base, folder: str | Path) -> None:
    """Write `base` in its release layout (used for our own pretrained tiny bases and tests)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    layout = LAYOUTS[base.name]
    for part, (rel, prefix, _) in layout.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        state = {prefix + k: v.detach().cpu().contiguous() for k, v in getattr(base, part).state_dict().items()}
        save_file(state, str(folder / rel))
    scale_file = folder / Path(layout["vae"][0]).parent / LATENT_SCALE
    scale_file.write_text(json.dumps({"z_scale_factor": base.vae.cfg.z_scale_factor}))


def convert(folder: str | Path) -> list[Path]:
    """Write the `.safetensors` variant beside each pickled `.ckpt` of a Hunyuan3D-2.1 download.

    Reads with torch.load(weights_only=True), which rebuilds tensors and plain containers only
    (no code runs). A bundle {"model": ..., "vae": ..., "conditioner": ...} becomes flat keys
    "model.*", "vae.*", ... as the release's own safetensors variant names them.
    """
    import torch
    from safetensors.torch import save_file

    written = []
    for rel, _, _ in LAYOUTS["hunyuan3d21"].values():
        src = (Path(folder) / rel).with_suffix(".ckpt")
        if not src.is_file():
            raise FileNotFoundError(f"{src} not found")
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
        nested = all(isinstance(v, dict) for v in ckpt.values())
        flat = {f"{k}.{n}": t for k, sd in ckpt.items() for n, t in sd.items()} if nested else ckpt
        save_file({k: v.contiguous() for k, v in flat.items()}, str(Path(folder) / rel))
        written.append(Path(folder) / rel)
    return written


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "convert":
        sys.exit("usage: python -m model.checkpoint convert <hunyuan3d-2.1 folder>  (writes model.fp16.safetensors beside each .ckpt)")
    for path in convert(sys.argv[2]):
        print(path)
