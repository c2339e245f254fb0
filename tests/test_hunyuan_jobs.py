"""Every job over the Hunyuan3D-2.1 base (`model.base.name=hunyuan3d21`), at tiny size.

One chain, as a user runs it: pretrain_base (in-process) -> train from that base (the real
command: local Ray Train + DeepSpeed, 2 CPU workers) -> the registered model from MLflow ->
generate and evaluate (their commands). The ablation's configs carry the base name to every
stage. The model-level properties (adapter conventions, frozen base, zero-init S-T layers,
official equality) are in tests/test_model_*.py.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs import ablate, components, ingest, pretrain_base, train, train_loop
from jobs import config as config_lib
from jobs.train_config import TrainConfig
from model import build_base
from model.checkpoint import files, load_base
from pipelines import analytic
from tests.test_evaluate import DATASET  # its tiny dataset: bending_tube and separating_parts in `test`

REPO = Path(__file__).resolve().parents[1]
HY = "model.base.name=hunyuan3d21"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
pytestmark = pytest.mark.timeout(1800)


def _run(args: list[str], timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hunyuan-data")
    analytic.write_samples(root / "src")
    built = _run(["-m", "jobs.build_dataset", "--config", "jobs/configs/demo.yaml", f"source.path={root / 'src'}",
                  f"output.path={root / 'ds'}", *DATASET])
    assert built.returncode == 0, built.stderr[-3000:]
    return root / "ds"


def test_pretrain_train_generate_and_evaluate_over_the_hunyuan_base(dataset, tmp_path):
    import mlflow

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "base"
    pre = pretrain_base.main(config_lib.load(pretrain_base.PretrainConfig, None, [
        f"data_path={dataset}", f"output_path={out}", f"mlflow.tracking_uri={tracking}", HY,
        "model.condition.image_size=28", "num_surface_points=256", "num_sdf_points=512", "vae.steps=20",
        "vae.batch_frames=4", "dit.steps=20", "dit.batch_frames=4", "log_every=10"]))
    # The release layout of this base, loaded strictly (every key and shape) into a fresh tiny build.
    assert set(pre["sha256"]) == set(files("hunyuan3d21")) == {
        "hunyuan3d-vae-v2-1/model.fp16.safetensors", "hunyuan3d-dit-v2-1/model.fp16.safetensors"}
    base = load_base(build_base("hunyuan3d21", "tiny"), out)
    assert base.vae.cfg.z_scale_factor == pytest.approx(pre["z_scale_factor"])
    assert pre["vae"]["last"]["sdf"] < pre["vae"]["first"]["sdf"], pre["vae"]

    runs = tmp_path / "runs"
    overrides = [f"data.path={dataset}", f"run.storage_path={runs}", "run.name=hy", f"mlflow.tracking_uri={tracking}",
                 HY, f"model.base.checkpoint={out}", f"model.condition.model={pre['condition']}",
                 "model.condition.image_size=28", "data.num_surface_points=256", "train.steps=2",
                 "train.checkpoint_every=2", "sample.steps=2", "sample.mesh_resolution=16", "sample.window=4",
                 "sample.overlap=1"]
    tcfg = config_lib.load(TrainConfig, REPO / "jobs/configs/train_demo.yaml", overrides)
    done = _run(["-m", "jobs.train", "--config", "jobs/configs/train_demo.yaml", *overrides])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-5000:]
    assert "registered models:/shapegen4d@candidate" in done.stdout
    client = mlflow.MlflowClient(tracking)
    version = client.get_model_version_by_alias("shapegen4d", "candidate")
    assert client.get_run(version.run_id).data.params["model.base.name"] == "hunyuan3d21"
    # The frozen Hunyuan DiT is bit-identical after training; what trains (S-T layers + the image
    # stream's projection) moved.
    states = [train_loop.read_state(p) for p in (runs / "hy").glob("checkpoint_*") if (p / train_loop.STATE).exists()]
    state = max(states, key=lambda s: s["step"])
    assert state["step"] == 2
    assert state["base_fingerprint"] == components.fingerprint(base.dit.state_dict())

    # A consumer: the registered pyfunc (Hunyuan base, its adapter, 4 frames) turns a video into meshes.
    mlflow.set_tracking_uri(tracking)
    model = mlflow.pyfunc.load_model("models:/shapegen4d@candidate")
    from jobs.generate import VideoConfig, read_frames

    frames, _ = read_frames(VideoConfig(dataset=str(dataset), split="test"))
    meshes = model.predict(frames, params={"seed": 0})
    assert len(meshes) == len(frames) == 4
    pipeline = model.unwrap_python_model().pipeline
    assert pipeline.cfg.mesh.bounds == 1.01  # the Hunyuan pipeline's box_v, from the base's adapter
    loaded = pipeline.model
    assert type(loaded.base).__name__ == "HunyuanDiT" and loaded.image_in is not None
    initial = components.build(train.make_spec(tcfg, ingest.open_dataset(str(dataset)))).model
    assert components.fingerprint(components.cpu_state_dict(loaded.trained_weights())) == state["st_fingerprint"]
    assert not torch.equal(loaded.image_in.weight, initial.image_in.weight)  # the image stream's projection trained
    assert all(not m["faces"].size or m["faces"].max() < len(m["vertices"]) for m in meshes)

    gen = _run(["-m", "jobs.generate", "model=models:/shapegen4d@candidate", f"mlflow.tracking_uri={tracking}",
                f"video.dataset={dataset}", "video.split=test", f"output.path={tmp_path / 'gen'}", "steps=2",
                "mesh_resolution=16"])
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert (tmp_path / "gen" / "sequence.glb").is_file() and len(list((tmp_path / "gen").glob("frame_*.obj"))) == 4

    ev = _run(["-m", "jobs.evaluate", "--config", "jobs/configs/evaluate.yaml", f"model=models:/shapegen4d/{version.version}",
               f"data.path={dataset}", "split=test", f"output.path={tmp_path / 'eval'}", f"mlflow.tracking_uri={tracking}",
               "metrics.num_points=2000", "metrics.num_uniform=2000", "metrics.num_near=2000", "metrics.align_points=300",
               "metrics.temporal_points=1000", "mesh_resolution=16", "steps=2", "seeds=1"])
    assert ev.returncode == 0, ev.stderr[-3000:]
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    text = json.dumps(doc)
    assert "chamfer_aligned" in text and "NaN" not in text
    chamfer = _find(doc, "chamfer_aligned")
    assert chamfer is not None and math.isfinite(chamfer) and chamfer > 0


def _find(doc, key: str):
    """The first number stored under `key` (directly or as {"mean": ...}) anywhere in a JSON tree."""
    if isinstance(doc, dict):
        if key in doc:
            v = doc[key]
            return v.get("mean") if isinstance(v, dict) else v
        children = doc.values()
    elif isinstance(doc, list):
        children = doc
    else:
        return None
    for child in children:
        found = _find(child, key)
        if found is not None:
            return found
    return None


def test_the_ablation_carries_the_base_name_to_every_stage(tmp_path):
    cfg = config_lib.load(ablate.AblateConfig, REPO / "jobs" / "configs" / "ablate.yaml",
                          [f"output_path={tmp_path}", "pretrain.model.base.name=hunyuan3d21"])
    pcfg, _ = ablate.pretrain_cfg(cfg, "sqlite:///x.db", str(tmp_path / "ds"))
    assert pcfg.model.base.name == "hunyuan3d21"
    tcfg = ablate.train_cfg(cfg, "sqlite:///x.db", [], str(tmp_path / "ds"),
                            {"output": str(tmp_path / "base"), "condition": str(tmp_path / "cond")}, alias="a")
    assert tcfg.model.base.name == "hunyuan3d21" and tcfg.model.base.checkpoint == str(tmp_path / "base")


def test_the_hunyuan_train_config_runs_the_paper_variant():
    cfg = config_lib.load(TrainConfig, REPO / "jobs" / "configs" / "train_hunyuan3d21.yaml", [])
    assert (cfg.model.base.name, cfg.model.base.size) == ("hunyuan3d21", "full")
    assert cfg.model.condition.model == "facebook/dinov2-large" and cfg.model.condition.border_ratio == 0.85
    # Its flow keeps the base's conventions: nothing in the config overrides the adapter.
    assert cfg.model.flow.guidance is None and cfg.model.flow.loss_weighting == "official"
    assert np.isclose(build_base("hunyuan3d21", "tiny").dit.adapter.guidance, 5.0)
    assert torch.equal(build_base("hunyuan3d21", "tiny").dit.adapter.model_time(torch.tensor([1.0, 0.0])),
                       torch.tensor([0.0, 1.0]))
