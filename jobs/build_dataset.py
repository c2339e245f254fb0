"""Build the 4D training set: `python -m jobs.build_dataset --config jobs/configs/<name>.yaml [key=value ...]`.

Writes <output.path>/manifest.json, rejects.parquet and data/shard-*.parquet (schema v2, see
docs/design.md), resuming from whatever an earlier run into the same output finished. Exit status:
0 when the job ran to completion (rejected assets included), 1 when it could not run (missing
source, unwritable output, a different config in the output folder), 2 on a bad config key.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from jobs import config as config_lib
from jobs import runtime, tracking
from pipelines import dataset_job, preview, shards
from pipelines.config import RUNTIME_KEYS, DatasetConfig

log = logging.getLogger("shapegen4d.build_dataset")


@dataclass
class DatasetJobConfig(DatasetConfig):
    """The dataset's config (pipelines/config.py) plus where the job runs and is tracked."""

    ray: runtime.RayConfig = field(default_factory=runtime.RayConfig)
    mlflow: tracking.MlflowConfig = field(default_factory=lambda: tracking.MlflowConfig(experiment="shapegen4d-datasets"))


def dataset_sections(cfg: DatasetConfig) -> dict:
    """The sections of DatasetConfig, as they are in `cfg` (a DatasetConfig or a DatasetJobConfig)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(DatasetConfig)}


def dataset_part(cfg: DatasetConfig) -> DatasetConfig:
    """The dataset's own config, without the job's sections: what pipelines/ receives (and what the
    asset processes unpickle: a DatasetJobConfig of `python -m jobs.build_dataset` lives in __main__)."""
    return DatasetConfig(**dataset_sections(cfg))


def content_config(cfg: DatasetConfig) -> dict:
    """The part of the config that decides row contents (what config_digest covers)."""
    tree = config_lib.content(dataset_part(cfg))
    for key in RUNTIME_KEYS:
        *parents, leaf = key.split(".")
        node = tree
        for k in parents:
            node = node[k]
        del node[leaf]
    return tree


def log_to_mlflow(cfg: DatasetJobConfig, summary: dataset_job.Summary, preview_files: list[str] = ()) -> str:
    """Record the build: params, manifest artifact, and the dataset as an MLflow dataset input."""
    import mlflow
    from mlflow.data.dataset_source_registry import get_registered_sources, resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    uri = tracking.tracking_uri(cfg.mlflow)
    exp_id = tracking.experiment(cfg.mlflow.experiment, uri)
    manifest = summary.manifest
    with mlflow.start_run(experiment_id=exp_id, run_name=f"build-{manifest['name']}") as run:
        tracking.log_params(config_lib.flatten(config_lib.to_dict(cfg)))
        mlflow.set_tags(
            {
                "shapegen4d.kind": "dataset",
                "dataset.digest": manifest["digest"],
                "dataset.path": summary.output,
                "dataset.config_digest": manifest["config_digest"],
                "code.git": manifest["code_version"]["git"],
            }
        )
        f = manifest["funnel"]
        mlflow.log_metrics(
            {
                "rows": manifest["rows"],
                "shards": len(manifest["shards"]),
                "clips_rejected": f["clips_rejected"],
                "assets_without_clips": f["assets_without_clips"] + f["rejected_on_metadata"],
                "wall_s": summary.wall_s,
                **({"peak_rss_mb.max": max(summary.peak_rss_mb.values())} if summary.peak_rss_mb else {}),
                **{f"cpu_s.{k}": v for k, v in summary.cpu_s.items()},
            }
        )
        mlflow.log_dict(manifest, "manifest.json")
        out_fs = shards.Output(summary.output)
        for rel in preview_files:  # the contact sheets and report.html, under preview/
            _log_bytes(out_fs.read_bytes(rel), rel)
        out = summary.output
        # MLflow registers its local source class twice and warns about the tie; pick it ourselves.
        local = [c for c in get_registered_sources() if c.__name__ == "LocalArtifactDatasetSource"][:1]
        source = resolve_dataset_source(out, candidate_sources=local if "://" not in out else None)
        dataset = MetaDataset(source, name=manifest["name"], digest=manifest["digest"])
        mlflow.log_input(dataset, context="build")
        return run.info.run_id


def _log_bytes(data: bytes, artifact_path: str) -> None:
    import os
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, os.path.basename(artifact_path))
        with open(path, "wb") as f:
            f.write(data)
        mlflow.log_artifact(path, os.path.dirname(artifact_path))


def main(cfg: DatasetJobConfig) -> dataset_job.Summary:
    content = content_config(cfg)
    summary = dataset_job.run(dataset_part(cfg), content, config_lib.digest(content),
                              start_ray=lambda: runtime.init_ray(cfg.ray),
                              code=runtime.code_version())
    files = []
    if cfg.preview.enabled:
        files = preview.write(shards.Output(summary.output), cfg.preview)
        log.info("preview: %s/%s", summary.output, preview.PREVIEW + "/report.html")
    if cfg.output.log_to_mlflow:
        run_id = log_to_mlflow(cfg, summary, files)
        log.info("MLflow run %s (%s)", run_id, tracking.tracking_uri(cfg.mlflow))
    print(summary.text(), flush=True)
    return summary


if __name__ == "__main__":
    config_lib.run_job(main, DatasetJobConfig, __doc__)
