"""Pretrain a small 3D base from scratch: `python -m jobs.pretrain_base --config FILE [key=value ...]`.

The real Step1X-3D weights cannot be downloaded everywhere, so the small-scale reproduction
trains its own frozen prior, as the paper's base was trained: (1) the VecSet VAE on single
frames of the shards (SDF regression on the uniform + near-surface samples, KL), then (2) the
base DiT on single frames (flow matching on the VAE's latents, DINOv2 condition of the frame's
rendered view), optionally training the condition encoder with it (`train_condition`; the
trained encoder is written to <output_path>/condition, `model.condition.model` of the
fine-tuning). The result reports how much the DiT reads the image (`condition_use`: flow
loss with each frame's own image vs another frame's). The result is written in the release layout that `build_base` + the loader
read (`model.base.checkpoint=<output.path>` in the training job), logged to MLflow and registered as a
base model. Each phase checkpoints every `checkpoint_every` steps and a re-run resumes it;
a finished phase is skipped. Exit status: 0 done, 1 could not run, 2 bad config key.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from jobs import components, ingest, tracking
from jobs import config as config_lib
from jobs.registry import RegistryConfig
from jobs.tracking import MlflowConfig
from model import build_base, checkpoint, flow
from model.checkpoint import load_base, save_base
from model.base import BaseConfig
from model.condition import ConditionConfig, preprocess
from model.st_layer import STConfig
from model.fit import PerFrameBase, vae_loss
from jobs.runtime import hms, lr_factor

log = logging.getLogger("shapegen4d.pretrain_base")
CONDITION = "condition"  # <output_path>/condition: the trained encoder (Hugging Face layout)


@dataclass
class PhaseConfig:
    steps: int = 2000
    batch_frames: int = 16  # single frames per step
    lr: float = 1e-3
    warmup_steps: int = 50
    checkpoint_every: int = 200


def tiny_model() -> components.ModelConfig:
    """The small-scale base: tiny widths, a seeded tiny DINOv2 at 56 px."""
    return components.ModelConfig(base=BaseConfig(size="tiny"),
                                  condition=ConditionConfig(model=components.TINY_DINO, image_size=56))


@dataclass
class PretrainConfig:
    data_path: str = "out/dataset"
    split: str = "train"
    # Check every shard's sha256 against manifest.json before reading (a changed shard is an
    # error naming it); false for trusted stores: skips hashing every shard at start-up.
    verify_sha256: bool = True
    # The base to train (model.base: name, size, seed; its checkpoint stays "") and the condition
    # encoder it reads; model.flow is the base's flow-matching loss. No S-T layers are built here.
    model: components.ModelConfig = field(default_factory=tiny_model)
    num_surface_points: int = 2048  # per frame, seeded subset
    num_sdf_points: int = 4096  # per frame, half uniform volume / half near-surface
    kl_weight: float = 1e-3
    # VAE training decodes a posterior sample (the official autoencoder's sample_posterior) or, false,
    # its mean: measured here (benchmarks/vae_quality.py), the tiny VAE's held-out IoU after 300 steps
    # is 0.11 with samples and 0.32 with means, as the early posterior noise drowns the latents.
    sample_posterior: bool = True
    # Train the condition encoder with the DiT (both frozen afterwards; written to
    # <output_path>/condition for model.condition.model). false = keep the given encoder as it is
    # (a pretrained DINOv2; or the seeded random tiny one, whose tokens a short run reads sooner:
    # trained tokens first collapse, see jobs/configs/ablate.yaml).
    train_condition: bool = True
    vae: PhaseConfig = field(default_factory=PhaseConfig)
    dit: PhaseConfig = field(default_factory=PhaseConfig)
    output_path: str = "out/base-tiny"
    seed: int = 0  # of the batches and the flow noise (the weights' init is model.base.seed)
    device: str = ""  # "" = cuda when available
    log_every: int = 50
    mlflow: MlflowConfig = field(default_factory=lambda: MlflowConfig(experiment="shapegen4d-bases"))
    # A base is registered as a version of this model (no alias: a base is pinned by version).
    registry: RegistryConfig = field(default_factory=lambda: RegistryConfig(name="shapegen4d-base", alias=""))


@dataclass
class Frames:
    """Every frame of the split as one array per column: F frames."""

    surface: np.ndarray  # [F,N,6]
    queries: np.ndarray  # [F,Q,6]
    sdf: np.ndarray  # [F,Nv+Nn,4] xyz + signed distance, negative inside
    images: np.ndarray  # [F,H,W,4] uint8
    sharp_surface: np.ndarray | None = None  # [F,Ns,6] when the dataset has sharp-edge points
    sharp_queries: np.ndarray | None = None  # [F,Qs,6] when it has sharp queries

    @property
    def count(self) -> int:
        return len(self.surface)

    def encoder_inputs(self, i, num_surface_points: int, rng: np.random.Generator, to) -> tuple:
        """(surface, queries, sharp_surface, sharp_queries) of frames `i`, as fine-tuning feeds the
        VAE (jobs.train_loop._encode): a seeded subset of the uniform surface points, every sharp
        point, each sharp set through the VAE's sharp branch (None where the dataset has none)."""
        sharp = lambda a: None if a is None else to(a[i])  # noqa: E731
        return (to(_subset(self.surface[i], num_surface_points, rng)), to(self.queries[i]),
                sharp(self.sharp_surface), sharp(self.sharp_queries))


def load_frames(info: ingest.DatasetInfo, split: str) -> Frames:
    import pyarrow.compute as pc

    sharp = [c for c in ("sharp_surface", "sharp_queries") if c in info.manifest["columns"]]
    columns = ["sample_id", "split", "surface", "queries", "sdf_volume", "sdf_near", *sharp]
    parts: dict[str, list] = {k: [] for k in ("surface", "queries", "sdf", "images", *sharp)}
    for shard in info.manifest["shards"]:
        t = ingest.read_shard(info, shard["path"], columns)
        t = t.filter(pc.equal(t["split"], split))
        if not t.num_rows:
            continue
        flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731  [clips, T, ...] -> [clips * T, ...]
        arr = lambda c: flat(t[c].combine_chunks().to_numpy_ndarray().astype(np.float32))  # noqa: E731
        for c in ("surface", "queries", *sharp):
            parts[c].append(arr(c))
        parts["sdf"].append(np.concatenate([arr("sdf_volume"), arr("sdf_near")], axis=1))
        videos = ingest.read_videos(info, shard["path"], split=split)
        parts["images"].append(np.concatenate([videos[sid] for sid in t["sample_id"].to_pylist()]))
    if not parts["surface"]:
        raise ValueError(f"{info.uri} has no {split!r} rows")
    return Frames(**{k: np.concatenate(v) for k, v in parts.items()})


def _subset(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random rows of every item (axis 1), different per item."""
    if n >= x.shape[1]:
        return x
    idx = np.argsort(rng.random((x.shape[0], x.shape[1])), axis=1)[:, :n]
    return np.take_along_axis(x, idx[..., None], axis=1)


class Phase:
    """One optimisation phase with warm-up, progress lines, and resumable checkpoints."""

    def __init__(self, name: str, module: torch.nn.Module, cfg: PhaseConfig, folder: Path):
        self.name, self.module, self.cfg, self.folder = name, module, cfg, folder
        self.opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=cfg.lr)
        # warm-up, then cosine to 10%: a short from-scratch run needs the decay to settle.
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, 0.1))
        self.step = 0
        state = folder / f"{name}_state.pt"
        if state.is_file():
            saved = torch.load(state, weights_only=True)  # our own file; tensors and numbers only
            module.load_state_dict(saved["module"])
            self.opt.load_state_dict(saved["opt"])
            self.sched.load_state_dict(saved["sched"])
            self.step = int(saved["step"])
            log.info("%s: resumed at step %d", name, self.step)

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{self.name}_state.pt.tmp"
        torch.save({"module": self.module.state_dict(), "opt": self.opt.state_dict(),
                    "sched": self.sched.state_dict(), "step": self.step}, tmp)
        tmp.replace(self.folder / f"{self.name}_state.pt")

    def run(self, loss_fn, log_every: int, metrics_sink) -> dict:
        """{"first": metrics of this run's first step, "last": of its last} ({} if nothing to do)."""
        t0, start, first, last = time.time(), self.step, {}, {}
        self.module.train()
        while self.step < self.cfg.steps:
            loss, parts = loss_fn(self.step)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
            self.step += 1
            last = {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}}
            first = first or last
            if self.step % log_every == 0 or self.step == self.cfg.steps:
                eta = (time.time() - t0) / (self.step - start) * (self.cfg.steps - self.step)
                log.info("%s step %d/%d %s | ETA %s", self.name, self.step, self.cfg.steps,
                         " ".join(f"{k} {v:.4g}" for k, v in last.items()), hms(eta))
                metrics_sink({f"{self.name}.{k}": v for k, v in last.items()}, self.step)
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.save()
        self.module.eval()
        return {"first": first, "last": last} if last else {}


def register(registry: RegistryConfig, run_info, digest: str) -> str:
    """A model version whose files are the release-layout folder (not a pyfunc: bases are inputs
    to training, loaded with build_base + load_base after `mlflow.artifacts.download_artifacts`)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client, name = MlflowClient(), registry.name
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="ShapeGen4D frozen 3D bases in the Step1X-3D release layout")
    mv = client.create_model_version(name, source=f"{run_info.artifact_uri}/base", run_id=run_info.run_id,
                                     tags={"dataset.digest": digest})
    if registry.alias:
        client.set_registered_model_alias(name, registry.alias, mv.version)
    return f"models:/{name}/{mv.version}"


@torch.no_grad()
def condition_use(model, x0: torch.Tensor, tokens, count: int, flow_cfg: flow.FlowConfig, seed: int,
                  n: int = 256) -> dict[str, float]:
    """Flow loss of n frames with their own image vs with another frame's (same noise and times,
    no condition dropout): how much the trained DiT reads the image (equal = not at all)."""
    rng = np.random.default_rng(seed + 1)
    i = rng.choice(count, min(n, count), replace=False)
    cfg = dataclasses.replace(flow_cfg, cond_dropout=0.0)
    x = x0[torch.from_numpy(i).to(x0.device)][:, None]
    own_tokens = tokens(i)[:, None]
    own = flow.loss(model, x, own_tokens, cfg, generator=torch.Generator(x0.device).manual_seed(seed))
    # each frame with the image of the frame before it in the draw
    swapped = flow.loss(model, x, own_tokens.roll(1, 0), cfg, generator=torch.Generator(x0.device).manual_seed(seed))
    return {"loss_own_image": float(own), "loss_other_image": float(swapped)}


def main(cfg: PretrainConfig) -> dict:
    import mlflow

    t0 = time.time()
    if cfg.model.base.checkpoint or cfg.model.st != STConfig() or cfg.model.num_latents:
        raise config_lib.ConfigError("jobs.pretrain_base trains a base from scratch and builds no S-T layers: "
                                     "model.base.checkpoint, model.st and model.num_latents are the fine-tuning's")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = ingest.open_dataset(cfg.data_path)
    # load_frames reads every shard.
    ingest.verify_shards(info.uri, info.manifest, key="verify_sha256", enabled=cfg.verify_sha256)
    frames = load_frames(info, cfg.split)
    out = Path(cfg.output_path)
    work = out.with_name(out.name + ".pretrain-state")  # optimizer states, beside the release folder
    log.info("%d frames of %s (%s split) -> %s on %s", frames.count, info.uri, cfg.split, out, device)
    m = cfg.model
    base = components.random_base(m.base)
    vae, dit = base.vae.to(device), base.dit.to(device)
    conditioner = components.conditioner_for(m.condition, dit.cfg.cross_attention_dim, m.base.seed).to(device)
    rng = np.random.default_rng(cfg.seed)
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731

    uri = tracking.tracking_uri(cfg.mlflow)
    exp_id = tracking.experiment(cfg.mlflow.experiment, uri)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"pretrain-{m.base.size}") as run:
        tracking.log_params(config_lib.flatten(config_lib.to_dict(cfg)))
        mlflow.set_tags({"shapegen4d.kind": "base", "dataset.digest": info.digest, "dataset.path": info.uri})
        sink = lambda m, step: mlflow.log_metrics(m, step=step)  # noqa: E731

        def vae_step(step: int):
            i = rng.integers(0, frames.count, cfg.vae.batch_frames)
            surface, queries, sharp_surface, sharp_queries = frames.encoder_inputs(i, cfg.num_surface_points, rng, to)
            sdf = _subset(frames.sdf[i], cfg.num_sdf_points, rng)
            return vae_loss(vae, surface, queries, to(sdf[..., :3]), to(sdf[..., 3]), kl_weight=cfg.kl_weight,
                            sample=cfg.sample_posterior, sharp_surface_BN6=sharp_surface, sharp_queries_BL6=sharp_queries)

        vae_metrics = Phase("vae", vae, cfg.vae, work).run(vae_step, cfg.log_every, sink)
        vae.requires_grad_(False)

        # Latents of every frame once (posterior means), scaled to unit std like a release's
        # z_scale_factor.
        with torch.no_grad():
            means = torch.cat([vae.encode(*frames.encoder_inputs(slice(i, i + 64), cfg.num_surface_points, rng, to),
                                          sample=False)[1]
                               for i in range(0, frames.count, 64)])
            scale = float(1.0 / means.std().clamp_min(1e-6))
            vae.cfg = dataclasses.replace(vae.cfg, z_scale_factor=scale)
            x0 = means * scale
        model = PerFrameBase(dit)
        encoder = conditioner.encoder.requires_grad_(cfg.train_condition)

        def tokens(i: np.ndarray) -> torch.Tensor:
            # clip_len=1: the base learns single frames, each recentred by its own box (as the
            # official loader does); fine-tuning then boxes each clip as a whole.
            return conditioner.tokens(preprocess(torch.from_numpy(frames.images[i]), m.condition, clip_len=1).to(device))

        if not cfg.train_condition:  # a frozen encoder's tokens are the same every step: encode each frame once
            with torch.no_grad():
                frozen = torch.cat([tokens(np.arange(s, min(s + 64, frames.count))) for s in range(0, frames.count, 64)])
            tokens = lambda i: frozen[torch.from_numpy(i).to(device)]  # noqa: E731

        def dit_step(step: int):
            i = rng.integers(0, frames.count, cfg.dit.batch_frames)
            return flow.loss(model, x0[torch.from_numpy(i).to(device)][:, None], tokens(i)[:, None], m.flow, generator=g), {}

        trained = torch.nn.ModuleDict({"dit": dit, "condition": encoder}) if cfg.train_condition else dit
        # Its own state file: a run that switches train_condition does not resume the other's.
        phase = Phase("dit-condition" if cfg.train_condition else "dit", trained, cfg.dit, work)
        dit_metrics = phase.run(dit_step, cfg.log_every, sink)
        encoder.requires_grad_(False).eval()
        use = condition_use(model, x0, tokens, frames.count, m.flow, cfg.seed)
        log.info("flow loss with each frame's own image %.4f, with another frame's %.4f",
                 use["loss_own_image"], use["loss_other_image"])
        sink({f"dit.{k}": v for k, v in use.items()}, phase.step)
        save_base(base, out)
        if cfg.train_condition:
            encoder.save_pretrained(out / CONDITION)
        check = load_base(build_base(m.base.name, m.base.size), out)  # what consumers will load
        assert check.vae.cfg.z_scale_factor == scale
        subs = sorted({Path(rel).parts[0] for rel in checkpoint.files(m.base.name)})
        for sub in (*subs, *([CONDITION] if cfg.train_condition else [])):
            mlflow.log_artifacts(str(out / sub), artifact_path=f"base/{sub}")
        result = {"output": str(out.resolve()), "run_id": run.info.run_id, "frames": frames.count,
                  # the encoder fine-tuning must read the images with (model.condition.model)
                  "condition": str((out / CONDITION).resolve()) if cfg.train_condition else m.condition.model,
                  "z_scale_factor": scale, "vae": vae_metrics, "dit": dit_metrics, "condition_use": use,
                  "wall_s": time.time() - t0,
                  "sha256": components.base_reference(BaseConfig(name=m.base.name, checkpoint=str(out)))["sha256"]}
        mlflow.log_metrics({"wall_s": result["wall_s"], "z_scale_factor": scale})
        mlflow.log_dict(result, "result.json")
        if cfg.registry.name:
            result["registered"] = register(cfg.registry, run.info, info.digest)
    print(json.dumps(result, indent=2), flush=True)
    return result


if __name__ == "__main__":
    config_lib.run_job(main, PretrainConfig, __doc__)
