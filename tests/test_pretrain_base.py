"""Pretraining a tiny base: it learns, lands in the release layout, resumes, and is registered."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jobs import components
from jobs import config as config_lib
from jobs import pretrain_base
from model import build_base
from model.base import BaseConfig
from model.checkpoint import files, load_base
from model.condition import ConditionConfig, ImageConditioner
from pipelines import analytic

REPO = Path(__file__).resolve().parents[1]
DATASET = ["num_frames=4", "num_surface_points=512", "num_sharp_points=64", "num_queries=32", "num_sharp_queries=0",
           "queries.num_candidates=1024", "watertight.resolution=48", "sdf.num_volume=512", "sdf.num_near=512",
           "render.resolution=64", "output.rows_per_shard=2", "source.min_faces=0", "ray.num_cpus=2",
           "limits.memory_per_asset_gb=1", "watertight.min_component_ratio=0.05", "output.log_to_mlflow=false",
           "split.val=0", "split.test=0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pretrain-data")
    analytic.write_samples(root / "src")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    built = subprocess.run([sys.executable, "-m", "jobs.build_dataset", "--config", "jobs/configs/demo.yaml",
                            f"source.path={root / 'src'}", f"output.path={root / 'ds'}", *DATASET],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    return root / "ds"


def _cfg(data: Path, out: Path, tracking: str, *extra: str) -> pretrain_base.PretrainConfig:
    return config_lib.load(pretrain_base.PretrainConfig, None, [
        f"data_path={data}", f"output_path={out}", f"mlflow.tracking_uri={tracking}", "model.condition.image_size=28",
        "num_surface_points=256", "num_sdf_points=512", "vae.steps=60", "vae.batch_frames=8", "vae.lr=0.003",
        "vae.warmup_steps=5", "dit.steps=40", "dit.batch_frames=8", "dit.warmup_steps=5", "log_every=20",
        "vae.checkpoint_every=30", "dit.checkpoint_every=20", *extra])


def test_pretrained_base_learns_loads_strictly_resumes_and_is_registered(dataset, tmp_path):
    import mlflow

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "base"
    result = pretrain_base.main(_cfg(dataset, out, tracking))
    assert result["frames"] == 16  # 4 clips x 4 frames, all in train
    # Both phases learn: the VAE's SDF error and the DiT's flow loss fall well below their start.
    vae, dit = result["vae"], result["dit"]
    print("pretrain", json.dumps({"vae": vae, "dit": dit}))
    assert vae["last"]["sdf"] < 0.5 * vae["first"]["sdf"], vae
    assert vae["last"]["sign_acc"] > vae["first"]["sign_acc"] + 0.05, vae
    assert dit["last"]["loss"] < 0.8 * dit["first"]["loss"], dit
    base = load_base(build_base("step1x3d", "tiny"), out)  # strict: every key, every shape
    assert base.vae.cfg.z_scale_factor == pytest.approx(result["z_scale_factor"])
    assert build_base("step1x3d", "tiny").vae.cfg.z_scale_factor == 1.0  # the size table is untouched
    ref = components.base_reference(BaseConfig(checkpoint=str(out)))
    assert ref["sha256"] == result["sha256"] and set(ref["sha256"]) == set(files("step1x3d"))
    # The condition encoder trained with the DiT: saved beside the base, loadable, moved off its init.
    assert result["condition"] == str((out / pretrain_base.CONDITION).resolve())
    trained = ImageConditioner.from_pretrained(ConditionConfig(model=result["condition"], image_size=28)).encoder
    init = components.tiny_dino(32, 28, 0)
    assert not all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), init.state_dict().values()))
    assert set(result["condition_use"]) == {"loss_own_image", "loss_other_image"}

    # Re-running finds both phases finished: nothing trains, the weights are byte-identical.
    before = {rel: (out / rel).read_bytes() for rel in files("step1x3d")}
    again = pretrain_base.main(_cfg(dataset, out, tracking))
    assert again["vae"] == {} and again["dit"] == {}
    assert all((out / rel).read_bytes() == data for rel, data in before.items())

    client = mlflow.MlflowClient(tracking)
    versions = client.search_model_versions("name = 'shapegen4d-base'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    v1 = client.get_model_version("shapegen4d-base", "1")
    assert v1.run_id == result["run_id"] and v1.tags["dataset.digest"] == json.loads(
        (dataset / "manifest.json").read_text())["digest"]
    mlflow.set_tracking_uri(tracking)
    local = Path(mlflow.artifacts.download_artifacts("models:/shapegen4d-base/1"))
    pulled = load_base(build_base("step1x3d", "tiny"), local)
    assert all(torch.equal(a, b) for a, b in zip(pulled.dit.state_dict().values(), base.dit.state_dict().values()))


def test_the_vae_sees_the_sharp_sets_as_fine_tuning_does(dataset):
    """Sharp-edge points (and sharp queries, when built) go through the VAE's sharp branch in
    pretraining exactly as in jobs.train_loop._encode, not appended to the uniform queries: the
    latents a base is pretrained on are the ones its fine-tuning encodes."""
    import numpy as np
    import pyarrow.parquet as pq

    from jobs import ingest

    info = ingest.open_dataset(str(dataset))
    frames = pretrain_base.load_frames(info, "train")
    assert frames.sharp_surface.shape[1:] == (64, 6) and frames.sharp_queries is None  # num_sharp_queries=0
    assert frames.queries.shape[1:] == (32, 6)
    table = pq.read_table(dataset / info.manifest["shards"][0]["path"], columns=["split", "sharp_surface"])
    first = table.filter(table["split"].to_numpy(zero_copy_only=False) == "train")
    np.testing.assert_array_equal(frames.sharp_surface[0], first["sharp_surface"].combine_chunks().to_numpy_ndarray()[0, 0])
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    i = np.array([0, 3])
    surface, queries, sharp_surface, sharp_queries = frames.encoder_inputs(i, 100, np.random.default_rng(0), to)
    assert surface.shape == (2, 100, 6) and torch.equal(sharp_surface, to(frames.sharp_surface[i])) and sharp_queries is None
    vae = build_base("step1x3d", "tiny").vae.eval()
    with torch.no_grad():
        with_sharp = vae.encode(surface, queries, sharp_surface, sample=False)[1]
        without = vae.encode(surface, queries, sample=False)[1]
    assert with_sharp.shape == (2, 32, 8) and not torch.allclose(with_sharp, without)
