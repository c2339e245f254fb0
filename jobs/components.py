"""The networks a job needs, built from a `ModelConfig`: frozen base (VAE + DiT), DINOv2 condition, ShapeGen4D.

The training workers, the registered MLflow model and the generate job all build their
networks here, from the same typed config (JSON in a packed model), so a model logged by training loads into
exactly the network it was trained as. Random-init pieces (tests, demos) are seeded, so every
worker builds identical weights without any file; a logged model ships those weights instead.
"""
from __future__ import annotations

import hashlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from jobs import config as config_lib
from model import build_base
from model.base import Base, BaseConfig
from model import checkpoint
from model.checkpoint import load_base
from model.condition import ConditionConfig, ImageConditioner
from model.flow import FlowConfig
from model.shapegen4d import ShapeGen4D, ShapeGen4DConfig
from model.st_layer import STConfig

TINY_DINO = "tiny-random"


@dataclass
class ModelConfig:
    """Everything that decides the network, not how it is trained: the `model` section of the
    training and pretraining configs, and what a packed model stores (shapegen4d.json "spec").
    Each part is the model's own config dataclass; nothing is copied between them."""

    base: BaseConfig = field(default_factory=BaseConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    st: STConfig = field(default_factory=STConfig)  # the S-T layers (pretraining builds none)
    flow: FlowConfig = field(default_factory=FlowConfig)
    num_latents: int = 0  # shape latents per frame; 0 = the training data's (uniform + sharp queries)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Strict, as a job config; also reads the flat spec of models packed before this layout."""
        if "base_name" in d:
            d = {"base": {"name": d["base_name"], "size": d["size"], "checkpoint": d["base_checkpoint"], "seed": d["base_seed"]},
                 # Those models saw frames padded and resized bilinearly, not recentred.
                 "condition": {"model": d["condition_model"], "image_size": d["image_size"], "recenter": False,
                               "resize": "bilinear"},
                 "st": {"use_image_tokens": d["use_image_tokens"], "temporal_only": d["temporal_only"]},
                 "flow": d["flow"], "num_latents": d["num_latents"]}
        return config_lib.from_dict(cls, d)


@dataclass
class Components:
    base: Base
    conditioner: ImageConditioner
    model: ShapeGen4D


def random_base(cfg: BaseConfig) -> Base:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_base(cfg.name, cfg.size)


def is_uri(ref: str) -> bool:
    """A reference MLflow resolves (models:/, runs:/, s3://, file://, ...), not a plain path."""
    return ref.startswith(("models:/", "runs:/")) or "://" in ref


_FETCHED: dict[str, Path] = {}


def fetch_folder(ref: str) -> Path:
    """A local folder holding `ref`: the path itself, a file:// URI's path, or MLflow's download of
    any other URI (the registry, a run's artifacts, s3://...), fetched once per process."""
    if not is_uri(ref):
        return Path(ref)
    if ref.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(ref).path))
    if ref not in _FETCHED:
        import mlflow.artifacts

        _FETCHED[ref] = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
    return _FETCHED[ref]


def base_for(cfg: BaseConfig) -> Base:
    base = (load_base(build_base(cfg.name, cfg.size), str(fetch_folder(cfg.checkpoint)))
            if cfg.checkpoint else random_base(cfg))
    base.vae.eval().requires_grad_(False)
    return base


def tiny_dino(width: int, image_size: int, seed: int):
    """A seeded DINOv2-with-registers of toy size whose hidden width matches the tiny base."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    cfg = Dinov2WithRegistersConfig(hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=2 * width, image_size=image_size, patch_size=14,
                                    num_register_tokens=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Dinov2WithRegistersModel(cfg)


def conditioner_for(cfg: ConditionConfig, width: int, seed: int, folder: str | None = None) -> ImageConditioner:
    """`folder` overrides the config's model (a logged model's own copy of its condition weights);
    `seed` is the base's, of the tiny random encoder."""
    if folder is None and cfg.model == TINY_DINO:
        return ImageConditioner(tiny_dino(width, cfg.image_size, seed), cfg)
    model = folder or (str(fetch_folder(cfg.model)) if is_uri(cfg.model) else cfg.model)
    return ImageConditioner.from_pretrained(dataclasses.replace(cfg, model=model))


def build(cfg: ModelConfig, device: torch.device | str = "cpu", condition_folder: str | None = None,
          base: Base | None = None) -> Components:
    base = base or base_for(cfg.base)
    # S-T layers are seeded too: every data-parallel worker must start from the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.base.seed + 1)
        model = ShapeGen4D(base.dit, ShapeGen4DConfig(cfg.st))
    cond = conditioner_for(cfg.condition, base.dit.cfg.cross_attention_dim, cfg.base.seed, condition_folder)
    base.vae.to(device)
    return Components(base, cond.to(device), model.to(device))


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """fp32, contiguous, on CPU: what checkpoints and logged models store (e.g. of `model.st_layers`)."""
    return {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and exact bytes (bit-identity checks)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def reference(ref: str, files: list[str] | None = None) -> dict:
    """How a logged model points at weights it does not carry: a URI MLflow can resolve on any
    machine that reaches the same store (a plain folder becomes its file:// URI, which only its own
    machine resolves: consumers elsewhere override it) and the sha256 of each file."""
    folder = fetch_folder(ref)
    if files is None:
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    uri = ref if is_uri(ref) else folder.resolve().as_uri()
    return {"uri": uri, "sha256": {rel: file_sha256(folder / rel) for rel in files}}


def base_reference(cfg: BaseConfig) -> dict:
    """The base of a logged model: seeded random init (shipped inside the model), or a reference."""
    if not cfg.checkpoint:
        return {"random_init": True, "seed": cfg.seed}
    return {"random_init": False, **reference(cfg.checkpoint, checkpoint.files(cfg.name))}


def condition_reference(cfg: ConditionConfig) -> dict | None:
    """The condition encoder when it is a folder or URI (not a hub id, not the shipped tiny one)."""
    cm = cfg.model
    if cm == TINY_DINO or not (is_uri(cm) or Path(cm).is_dir()):
        return None
    return reference(cm)
