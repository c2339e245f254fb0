"""The whole loop on one machine: `python -m jobs.demo [key=value ...]` (what `bash infra/local.sh demo` runs).

build the sample dataset (jobs/configs/demo.yaml) -> train a tiny ShapeGen4D a few steps on
local Ray with 2 CPU workers (jobs/configs/train_demo.yaml) -> register it in the local MLflow
store -> load it back from the registry -> generate a mesh sequence from the video of a held-out
sample clip -> per-frame meshes + one animated .glb. Each stage is the real job's `main`, so a
second run resumes or skips what is done.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from jobs import build_dataset, generate, tracking, train
from jobs import config as config_lib
from jobs.build_dataset import DatasetJobConfig
from jobs.train_config import TrainConfig

log = logging.getLogger("shapegen4d.demo")


@dataclass
class DemoConfig:
    out: str = "out/demo"  # dataset/, runs/, generated/ go under it
    dataset_config: str = "jobs/configs/demo.yaml"
    train_config: str = "jobs/configs/train_demo.yaml"
    dataset_overrides: list[str] = field(default_factory=list)  # e.g. [watertight.resolution=64]
    train_overrides: list[str] = field(default_factory=list)  # e.g. [train.steps=4]
    video_split: str = "val"  # the generated sequence reproduces a clip of this split
    mlflow: tracking.MlflowConfig = field(default_factory=tracking.MlflowConfig)  # the store of all three steps


def main(cfg: DemoConfig) -> dict:
    t0 = time.time()
    out = Path(cfg.out)
    uri = tracking.tracking_uri(cfg.mlflow)
    # Paths and the store come from `out` and `mlflow`; the overrides change anything else.
    ds_cfg = config_lib.load(DatasetJobConfig, cfg.dataset_config, cfg.dataset_overrides)
    ds_cfg = replace(ds_cfg, output=replace(ds_cfg.output, path=str(out / "dataset")),
                     mlflow=replace(ds_cfg.mlflow, tracking_uri=uri))
    dataset = build_dataset.main(ds_cfg)
    t_ds = time.time()
    tr_cfg = config_lib.load(TrainConfig, cfg.train_config, cfg.train_overrides)
    tr_cfg = replace(tr_cfg, data=replace(tr_cfg.data, path=dataset.output),
                     run=replace(tr_cfg.run, storage_path=str(out / "runs")), mlflow=replace(tr_cfg.mlflow, tracking_uri=uri))
    trained = train.main(tr_cfg)
    t_train = time.time()
    model_uri = trained.model.get("registered_uri", trained.model["model_uri"])
    gen_cfg = generate.GenerateJobConfig(model=model_uri, mlflow=tracking.MlflowConfig(tracking_uri=uri),
                                         video=generate.VideoConfig(dataset=dataset.output, split=cfg.video_split),
                                         output=generate.OutputConfig(path=str(out / "generated")))
    glb = generate.main(gen_cfg)
    t_end = time.time()
    outputs = {"dataset": dataset.output, "mlflow": uri, "training_run": trained.run_id, "checkpoint": trained.checkpoint,
               "model": model_uri, "meshes": str((out / "generated").resolve()), "sequence": str(glb.resolve())}
    print(f"\ndemo done in {t_end - t0:.0f} s (dataset {t_ds - t0:.0f} s, training {t_train - t_ds:.0f} s, "
          f"registry load + generation {t_end - t_train:.0f} s)", flush=True)
    for k, v in outputs.items():
        print(f"  {k:<13} {v}")
    print(f"  browse runs:  .venv/bin/mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else "")
    return outputs


if __name__ == "__main__":
    config_lib.run_job(main, DemoConfig, __doc__)
