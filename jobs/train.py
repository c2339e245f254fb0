"""Fine-tune ShapeGen4D's S-T layers: `python -m jobs.train --config jobs/configs/<name>.yaml [key=value ...]`.

Ray Train TorchTrainer + DeepSpeed (jobs/train_loop.py) over the shards of a build_dataset
output, tracked in MLflow: flattened config params, git revision, the dataset as a `training`
input whose digest is the manifest's (linked to the run that built it), metrics from rank 0,
and at the end the model as a pyfunc registered under `registry.name` with alias
`registry.alias`. Re-running with the same run.name + run.storage_path resumes from the latest
checkpoint and continues the same MLflow run. Exit status: 0 done, 1 could not run, 2 bad config key.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from jobs import components, ingest, registry, runtime, tracking, train_loop
from jobs import config as config_lib
from jobs.train_config import TrainConfig

log = logging.getLogger("shapegen4d.train")


@dataclass
class Result:
    run_id: str
    step: int
    checkpoint: str
    model: dict  # model_uri, version, registered_uri
    wall_s: float
    metrics: dict

    def text(self) -> str:
        lines = [f"trained {self.step} steps in {self.wall_s:.0f} s; MLflow run {self.run_id}",
                 f"  checkpoint {self.checkpoint}", f"  model {self.model.get('model_uri')}"]
        if "registered_uri" in self.model:
            lines.append(f"  registered {self.model['registered_uri']} (version {self.model['version']})")
        if self.metrics:
            lines.append("  last: " + ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items() if isinstance(v, float)))
        return "\n".join(lines)


def storage_path(cfg: TrainConfig) -> str:
    p = cfg.run.storage_path
    return p if "://" in p else str(Path(p).expanduser().resolve())


def make_spec(cfg: TrainConfig, data: ingest.DatasetInfo) -> components.ModelConfig:
    """The model section with the data's latent count (which a set `model.num_latents` must match)."""
    if cfg.model.num_latents not in (0, data.num_latents):
        raise ValueError(f"model.num_latents={cfg.model.num_latents} but {data.uri} has {data.num_latents} queries per "
                         "frame (uniform + sharp): leave it at 0 (= the data's)")
    return replace(cfg.model, num_latents=data.num_latents)


def clips(cfg: TrainConfig, data: ingest.DatasetInfo) -> list[str] | None:
    """The sample_ids training reads when data.max_clips limits them (None: the whole split)."""
    return ingest.subset_ids(data, cfg.data.split, cfg.data.max_clips) if cfg.data.max_clips > 0 else None


def check(cfg: TrainConfig, data: ingest.DatasetInfo) -> None:
    """Fail before any worker starts, with the reason."""
    train_loop.accumulation_steps(cfg)
    rows = data.rows(cfg.data.split)
    if cfg.data.max_clips > rows:
        raise ValueError(f"data.max_clips={cfg.data.max_clips} but split {cfg.data.split!r} of {data.uri} has {rows} clip(s)")
    rows = cfg.data.max_clips or rows
    need = cfg.train.micro_batch_size * cfg.scaling.num_workers
    if rows < need:
        raise ValueError(f"split {cfg.data.split!r} of {data.uri} has {rows} clip(s); {cfg.scaling.num_workers} "
                         f"workers x micro_batch_size {cfg.train.micro_batch_size} need at least {need}")
    ckpt = cfg.model.base.checkpoint
    if ckpt and not components.is_uri(ckpt) and not Path(ckpt).is_dir():
        raise FileNotFoundError(f"model.base.checkpoint {ckpt} is neither a folder nor a URI (models:/..., s3://...)")
    if cfg.train.checkpoint_every <= 0 or cfg.train.steps <= 0:
        raise ValueError("train.steps and train.checkpoint_every must be positive")


def find_run(cfg: TrainConfig, uri: str, run_key: str, digest: str):
    """The MLflow run to continue: the newest one of this run.name + storage_path, if its
    checkpoints are still there (otherwise training starts over, in a new run)."""
    import mlflow

    exp_id = tracking.experiment(cfg.mlflow.experiment, uri)
    found = mlflow.search_runs([exp_id], filter_string=f"tags.`train.run_key` = '{run_key}'",
                               order_by=["attributes.start_time DESC"], output_format="list")
    if not found or not has_checkpoints(run_key):
        return exp_id, None
    run = found[0]
    if run.data.tags.get("dataset.digest") != digest:
        raise ValueError(f"run {run_key} has checkpoints of a model trained on dataset {run.data.tags.get('dataset.digest')}, "
                         f"not on {digest}: choose another run.name (or remove its checkpoints to start over)")
    if run.data.params.get("data.max_clips", "0") != str(cfg.data.max_clips):
        raise ValueError(f"run {run_key} has checkpoints of a model trained with data.max_clips="
                         f"{run.data.params.get('data.max_clips', '0')}, not {cfg.data.max_clips}: choose another run.name")
    return exp_id, run


def has_checkpoints(run_dir: str) -> bool:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(run_dir if "://" in run_dir else Path(run_dir).as_uri())
    entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return any(e.base_name.startswith("checkpoint_") for e in entries)


def log_lineage(cfg: TrainConfig, data: ingest.DatasetInfo, run_key: str, sample_ids: list[str] | None) -> None:
    """Params, tags and the dataset input of a new training run (the active run); with
    data.max_clips, the clips trained on as the artifact train_clips.txt."""
    import mlflow
    from mlflow.data.dataset_source_registry import get_registered_sources, resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    build_runs = []
    ds_exp = mlflow.get_experiment_by_name(cfg.data.build_experiment)
    if ds_exp is not None:
        build_runs = mlflow.search_runs([ds_exp.experiment_id], filter_string=f"tags.`dataset.digest` = '{data.digest}'",
                                        order_by=["attributes.start_time DESC"], output_format="list")
    if not build_runs:
        log.warning("no MLflow run in experiment %r built dataset %s: lineage stops at the manifest",
                    cfg.data.build_experiment, data.digest)
    tracking.log_params(config_lib.flatten(config_lib.to_dict(cfg)))
    mlflow.set_tags({
        "shapegen4d.kind": "training",
        "train.run_key": run_key,
        "code.git": runtime.code_version()["git"],
        "base.random_init": str(not cfg.model.base.checkpoint).lower(),
        "dataset.digest": data.digest,
        "dataset.path": data.uri,
        "dataset.build_run_id": build_runs[0].info.run_id if build_runs else "",
    })
    # MLflow registers its local source class twice and warns about the tie; pick it ourselves.
    local = [c for c in get_registered_sources() if c.__name__ == "LocalArtifactDatasetSource"][:1]
    source = resolve_dataset_source(data.uri, candidate_sources=local if "://" not in data.uri else None)
    mlflow.log_input(MetaDataset(source, name=data.manifest["name"], digest=data.digest), context="training")
    if sample_ids is not None:
        mlflow.log_text("\n".join(sample_ids) + "\n", "train_clips.txt")


def fit(cfg: TrainConfig, spec: components.ModelConfig, data: ingest.DatasetInfo, uri: str, run_id: str,
        sample_ids: list[str] | None = None):
    import ray.data
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    runtime.init_ray(cfg.ray)
    ray.data.DataContext.get_current().enable_progress_bars = False  # our own step lines instead
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = 1
    env = {"DS_ACCELERATOR": "cuda" if cfg.scaling.use_gpu else "cpu"}
    if os.environ.get(train_loop.FAIL_ENV):
        env[train_loop.FAIL_ENV] = os.environ[train_loop.FAIL_ENV]
    trainer = TorchTrainer(
        train_loop.train_func,
        train_loop_config={"cfg": config_lib.to_dict(cfg), "spec": asdict(spec), "tracking_uri": uri, "run_id": run_id},
        torch_config=TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.run.name, storage_path=storage_path(cfg),
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            worker_runtime_env={"env_vars": env},
        ),
        datasets={"train": ingest.ray_dataset(data, cfg.data.split, cfg.data.materialize_below_gb, sample_ids)},
    )
    return trainer.fit()


def main(cfg: TrainConfig) -> Result:
    import mlflow

    t0 = time.time()
    data = ingest.open_dataset(cfg.data.path)
    check(cfg, data)
    # Once, here on the driver (the workers read through Ray Data): every shard the ingest reads.
    ingest.verify_shards(data.uri, data.manifest, enabled=cfg.data.verify_sha256)
    sample_ids = clips(cfg, data)
    spec = make_spec(cfg, data)
    uri = tracking.tracking_uri(cfg.mlflow)
    run_key = f"{storage_path(cfg).rstrip('/')}/{cfg.run.name}"
    exp_id, existing = find_run(cfg, uri, run_key, data.digest)
    if existing is not None and existing.data.tags.get("train.completed"):
        done = json.loads(existing.data.tags["train.completed"])
        log.info("run %s already completed (%s); nothing to do", run_key, done)
        return Result(existing.info.run_id, done["step"], done["checkpoint"], done["model"], 0.0, {})
    with mlflow.start_run(run_id=existing.info.run_id if existing else None, experiment_id=exp_id,
                          run_name=None if existing else cfg.run.name) as run:
        if existing is None:
            log_lineage(cfg, data, run_key, sample_ids)
        log.info("%s MLflow run %s (%s); dataset %s digest %s, %d %s clips%s; %d steps of %d clips",
                 "continuing" if existing else "started", run.info.run_id, uri, data.uri, data.digest,
                 data.rows(cfg.data.split), cfg.data.split,
                 "" if sample_ids is None else f" of which {len(sample_ids)} train (data.max_clips)",
                 cfg.train.steps, cfg.train.global_batch_size)
        try:
            result = fit(cfg, spec, data, uri, run.info.run_id, sample_ids)
            if result.error:
                raise result.error
            if result.checkpoint is None:
                raise RuntimeError("training ended without a checkpoint")
            with result.checkpoint.as_directory() as d:
                state = train_loop.read_state(Path(d))
                if state["step"] < cfg.train.steps:
                    raise RuntimeError(f"training stopped at step {state['step']} of {cfg.train.steps}")
                folder = registry.pack(Path(tempfile.mkdtemp(prefix="shapegen4d-model-")), spec,
                                       Path(d) / train_loop.ST_WEIGHTS, cfg.sample,
                                       {"dataset_digest": data.digest, "trained_steps": state["step"],
                                        "run_id": run.info.run_id})
            model = registry.log_and_register(folder, cfg.registry, {"dataset.digest": data.digest, "train.steps": state["step"]})
            shutil.rmtree(folder, ignore_errors=True)
            mlflow.set_tag("train.completed", json.dumps({"step": state["step"], "checkpoint": result.checkpoint.path,
                                                          "model": model}))
        except BaseException:
            mlflow.end_run("FAILED")
            raise
    out = Result(run.info.run_id, state["step"], result.checkpoint.path, model, time.time() - t0, state.get("metrics", {}))
    print(out.text(), flush=True)
    return out


if __name__ == "__main__":
    config_lib.run_job(main, TrainConfig, __doc__)
