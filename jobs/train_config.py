"""The training job's config (`python -m jobs.train`): one dataclass tree, strict YAML + overrides.

Defaults are the paper's fine-tuning setup on a GPU cluster: Step1X-3D base, batch 64,
lr 5e-5, 25k steps, ZeRO-2, bf16. `jobs/configs/train_demo.yaml` shrinks it to a tiny
random base on 2 CPU workers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from model.flow import FlowConfig



@dataclass
class DataConfig:
    path: str = "out/dataset"  # a build_dataset output (folder or URI) holding manifest.json
    split: str = "train"
    # Surface points per frame fed to the VAE encoder: 0 = all the shard has; fewer = a seeded
    # random subset (cheaper encoder cross-attention, same queries).
    num_surface_points: int = 0
    # Decode the split once into Ray's object store when it is smaller than this (GiB); larger
    # splits stream from the shards every epoch.
    materialize_below_gb: float = 2.0
    # Check every shard's sha256 against manifest.json before training (a changed shard is an
    # error naming it); false for trusted stores: skips hashing every shard at start-up.
    verify_sha256: bool = True


@dataclass
class BaseConfig:
    name: str = "step1x3d"
    # Local folder of the release weights (vae/, transformer/). "" = seeded random init, for
    # tests and demos only: the run is tagged base.random_init=true and the weights ship with it.
    checkpoint: str = ""
    seed: int = 0


@dataclass
class ConditionConfig:
    # DINOv2-with-registers: a hub id, a local folder, or "tiny-random" (a seeded tiny model of
    # the same class whose width matches the tiny base; tests and demos).
    model: str = "facebook/dinov2-with-registers-large"
    image_size: int = 518


@dataclass
class ModelConfig:
    size: Literal["full", "tiny"] = "full"
    use_image_tokens: bool = True  # ablation: S-T layers without image tokens
    temporal_only: bool = False  # ablation: pure 1D attention across frames


@dataclass
class TrainParams:
    steps: int = 25_000  # optimizer steps
    global_batch_size: int = 64  # clips per optimizer step over all workers (gradient accumulation fills it)
    micro_batch_size: int = 1  # clips per worker per forward
    lr: float = 5e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500  # linear warm-up, then constant
    grad_clip: float = 1.0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0


@dataclass
class ScalingConfig:
    num_workers: int = 8
    use_gpu: bool = True
    # CPUs each worker reserves. On CPU-only machines keep it below cores/num_workers so Ray
    # Data keeps CPUs for ingest (with every CPU reserved by workers ingest never runs: a hang).
    cpus_per_worker: float = 1.0


@dataclass
class DeepSpeedConfig:
    stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto = bf16 on GPU, fp32 on CPU
    # DeepSpeed's shared-memory CPU all-reduce compiles a C++ op on first use (~90 s); gloo is
    # plenty for CPU runs, so it stays off unless asked for.
    cpu_shm_comm: bool = False


@dataclass
class MlflowConfig:
    tracking_uri: str = ""  # "" = $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db
    experiment: str = "shapegen4d-training"
    dataset_experiment: str = "shapegen4d-datasets"  # where the dataset's build run is looked up
    registered_model: str = "shapegen4d"  # "" = log the model without registering it
    alias: str = "candidate"


@dataclass
class RunConfig:
    name: str = "shapegen4d-st"
    # Ray Train storage (checkpoints): a local folder (made absolute) or s3://, gs://, a shared FS.
    # The same name + storage_path resumes from the latest checkpoint.
    storage_path: str = "out/runs"
    max_failures: int = 2  # worker failures survived by restarting from the last checkpoint


@dataclass
class RayConfig:
    address: str = ""  # "" = start a local Ray instance; "auto" joins the cluster of `ray job submit`
    num_cpus: int = 0  # local instance only; 0 = all cores


@dataclass
class SampleConfig:
    """What the registered model's predict() uses by default (overridable per call)."""

    steps: int = 30
    guidance: float = 7.5
    window: int = 16
    overlap: int = 4
    mesh_resolution: int = 256
    seed: int = 0


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainParams = field(default_factory=TrainParams)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    run: RunConfig = field(default_factory=RunConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)



