"""The training job end to end: Ray Train + DeepSpeed on 2 CPU workers, MLflow lineage and registry.

Every run is the real command in a subprocess (its own local Ray), on a tiny dataset built by
the real dataset job from the procedural samples. One run goes through an `mlflow server` on
127.0.0.1 (what a cluster uses); the others through the embedded SQLite default.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from jobs import components, ingest, train_loop
from jobs import config as config_lib
from jobs.train_config import TrainConfig
from pipelines import analytic

REPO = Path(__file__).resolve().parents[1]
DATASET = ["num_frames=4", "num_surface_points=512", "num_sharp_points=64", "num_queries=32", "num_sharp_queries=16",
           "queries.num_candidates=1024", "watertight.resolution=48", "sdf.num_volume=256", "sdf.num_near=256",
           "render.resolution=64", "output.rows_per_shard=2", "source.min_faces=0", "ray.num_cpus=2",
           "limits.memory_per_asset_gb=1", "watertight.min_component_ratio=0.05"]
TRAIN = ["data.num_surface_points=256", "model.condition.image_size=28", "train.log_every=1", "sample.steps=2",
         "sample.mesh_resolution=16", "sample.window=4", "sample.overlap=1"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}


def _run(args: list[str], env=None, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout, **kw)


def _train_cmd(data: Path, runs: Path, name: str, tracking: str, *extra: str) -> list[str]:
    return ["-m", "jobs.train", "--config", "jobs/configs/train_demo.yaml", f"data.path={data}",
            f"run.storage_path={runs}", f"run.name={name}", f"mlflow.tracking_uri={tracking}", *TRAIN, *extra]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server (SQLite backend, served artifacts) on a free local port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
                             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
                            cwd=root, stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
        assert time.time() < deadline, "mlflow server did not come up in 120 s"
        time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # a graceful shutdown can take longer on a loaded machine
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, server) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("train-data")
    analytic.write_samples(root / "src")
    built = _run(["-m", "jobs.build_dataset", "--config", "jobs/configs/demo.yaml", f"source.path={root / 'src'}",
                  f"output.path={root / 'ds'}", f"mlflow.tracking_uri={server}", *DATASET])
    assert built.returncode == 0, built.stderr[-3000:]
    manifest = json.loads((root / "ds" / "manifest.json").read_text())
    assert manifest["splits"]["train"] >= 2 and manifest["splits"].get("val", 0) >= 1
    return root / "ds", manifest


def _spec(data: Path, *extra: str) -> components.ModelConfig:
    from jobs import train

    cfg = config_lib.load(TrainConfig, REPO / "jobs/configs/train_demo.yaml", [f"data.path={data}", *TRAIN, *extra])
    return train.make_spec(cfg, ingest.open_dataset(str(data)))


def _registered_step(runs: Path, name: str) -> int | None:
    """Step of the latest checkpoint Ray Train has registered for run `name` (None: none yet)."""
    snapshot = runs / name / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being written
        return None
    return latest["metrics"]["step"] if latest else None


def _final_state(runs: Path, name: str) -> dict:
    states = [train_loop.read_state(p) for p in (runs / name).glob("checkpoint_*") if (p / train_loop.STATE).exists()]
    return max(states, key=lambda s: s["step"])


def test_lr_factor_warms_up_then_follows_a_cosine_to_its_floor():
    from jobs.runtime import lr_factor

    assert [lr_factor(s, 4, 100, 1.0) for s in (0, 1, 3, 50, 100, 200)] == pytest.approx([0.25, 0.5, 1, 1, 1, 1])
    cos = [lr_factor(s, 0, 100, 0.1) for s in range(0, 121)]
    assert cos[0] == 1.0 and cos[50] == pytest.approx(0.55) and cos[100] == pytest.approx(0.1) and cos[120] == cos[100]
    assert all(a > b for a, b in zip(cos[:100], cos[1:101]))  # strictly decreasing to the floor
    assert lr_factor(1, 4, 100, 0.1) == pytest.approx(0.5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 100))))


def test_train_registers_a_model_whose_lineage_reaches_the_dataset(dataset, server, tmp_path):
    import mlflow

    data, manifest = dataset
    runs = tmp_path / "runs"
    done = _run(_train_cmd(data, runs, "lineage", server, "train.steps=3", "train.checkpoint_every=3",
                           "train.decay_to=0.2", "data.max_clips=2"))
    assert done.returncode == 0, done.stderr[-5000:]
    assert "registered models:/shapegen4d@candidate" in done.stdout
    client = mlflow.MlflowClient(server)
    version = client.get_model_version_by_alias("shapegen4d", "candidate")
    run = client.get_run(version.run_id)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == manifest["digest"]
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    build = client.get_run(run.data.tags["dataset.build_run_id"])
    assert build.data.tags["dataset.digest"] == manifest["digest"]
    assert run.data.tags["base.random_init"] == "true" and run.data.params["train.lr"] == "0.001"
    trained_on = client.download_artifacts(run.info.run_id, "train_clips.txt", str(tmp_path))
    assert Path(trained_on).read_text().split() == ingest.subset_ids(ingest.open_dataset(str(data)), "train", 2)
    assert Path(client.get_experiment(run.info.experiment_id).artifact_location).is_absolute() or \
        client.get_experiment(run.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == [1, 2, 3]
    assert {"samples_per_s", "grad_norm", "lr", "memory_gb"} <= set(run.data.metrics)
    # The logged lr after step k is the one the next step uses: warm-up over 2 steps, then the
    # cosine reaches 0.2 * lr at step 3.
    lrs = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)]
    assert lrs == pytest.approx([1e-3 * f for f in (0.8, 0.4, 0.2)])

    # Only the S-T layers moved: the frozen base after 3 optimizer steps is bit-identical to the
    # seeded base it started from; the S-T weights are not their initial values.
    state = _final_state(runs, "lineage")
    spec = _spec(data)
    assert state["base_fingerprint"] == components.fingerprint(components.random_base(spec.base).dit.state_dict())
    initial_st = components.cpu_state_dict(components.build(spec).model.st_layers)
    assert state["st_fingerprint"] != components.fingerprint(initial_st)

    # A consumer pulls the model from the registry and turns a video into a mesh sequence.
    mlflow.set_tracking_uri(server)
    model = mlflow.pyfunc.load_model("models:/shapegen4d@candidate")
    from jobs.generate import VideoConfig, read_frames

    frames, _ = read_frames(VideoConfig(dataset=str(data), split="val"))
    meshes = model.predict(frames, params={"seed": 0})
    assert len(meshes) == len(frames) == manifest["dims"]["T"]
    for m in meshes:
        assert m["vertices"].dtype == np.float32 and m["vertices"].shape[1:] == (3,)
        assert m["faces"].dtype == np.int64 and m["faces"].shape[1:] == (3,)
        assert m["faces"].size == 0 or m["faces"].max() < len(m["vertices"])
    again = model.predict(frames, params={"seed": 0})
    assert all(np.array_equal(a["vertices"], b["vertices"]) for a, b in zip(meshes, again))


def test_killed_run_resumes_from_its_checkpoint_and_continues_its_curve(dataset, tmp_path):
    import mlflow

    data, _ = dataset
    runs, tracking = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, *_train_cmd(data, runs, "resume", tracking, "train.steps=6", "train.checkpoint_every=2",
                                       "registry.name=")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    # Kill once Ray Train has REGISTERED a checkpoint (its snapshot names it): a checkpoint folder
    # whose report was not committed yet is, rightly, not what a re-run resumes from.
    while _registered_step(runs, "resume") is None:
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint within 400 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes in its group
    proc.wait()
    # A Ray worker outside the driver's process group may still finish the checkpoint it was
    # writing before it notices the driver is gone (seen on a loaded machine: registered 2 at the
    # kill, 4 a moment later). Wait until the registered checkpoint has stopped changing.
    registered, stable_since = _registered_step(runs, "resume"), time.time()
    while time.time() - stable_since < 5:
        time.sleep(0.5)
        now = _registered_step(runs, "resume")
        if now != registered:
            registered, stable_since = now, time.time()
    killed_at = int(time.time() * 1000)
    assert 2 <= registered < 6, "the run finished before the kill"

    done = _run(cmd[1:])
    assert done.returncode == 0, done.stderr[-5000:]
    out = done.stdout + done.stderr
    assert "continuing MLflow run" in out
    resumed_at = [int(line.split("resumed from checkpoint at step ")[1].split()[0])
                  for line in out.splitlines() if "resumed from checkpoint at step" in line]
    assert resumed_at == [registered]
    assert _final_state(runs, "resume")["step"] == 6

    client = mlflow.MlflowClient(tracking)
    exp = client.get_experiment_by_name("shapegen4d-training")
    (run,) = client.search_runs([exp.experiment_id])  # one run, continued
    history = client.get_metric_history(run.info.run_id, "loss")
    assert {m.step for m in history} == set(range(1, 7))
    after = [m.step for m in history if m.timestamp > killed_at]
    assert min(after) == resumed_at[0] + 1  # the curve continues where the checkpoint left it
    assert run.info.status == "FINISHED"


def test_a_worker_death_recovers_from_the_last_zero3_checkpoint(dataset, tmp_path):
    data, _ = dataset
    runs, tracking = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    marker = tmp_path / "failed-once"
    env = {**ENV, train_loop.FAIL_ENV: f"3:{marker}"}
    # The timeout only guards against a hang: the recovery starts a second worker group, and with
    # another Ray job training on the same 2 cores this run once took over 600 s (5.5 min beside an
    # evaluation, about 4 min under the suite alone).
    done = _run(_train_cmd(data, runs, "fail", tracking, "train.steps=4", "train.checkpoint_every=2",
                           "deepspeed.stage=3", "run.max_failures=1"), env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-5000:]
    assert marker.exists(), "the fault was not injected"
    assert "resumed from checkpoint at step 2" in done.stdout + done.stderr
    state = _final_state(runs, "fail")
    assert state["step"] == 4
    # ZeRO-3 partitions parameters: the exported S-T weights must be the full, gathered tensors.
    from safetensors.torch import load_file

    final = max((p for p in (runs / "fail").glob("checkpoint_*") if (p / train_loop.STATE).exists()),
                key=lambda p: train_loop.read_state(p)["step"])
    saved = load_file(str(final / train_loop.ST_WEIGHTS))
    want = components.build(_spec(data)).model.st_layers.state_dict()
    assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in want.items()}
    assert state["base_fingerprint"] == components.fingerprint(components.random_base(_spec(data).base).dit.state_dict())


def test_max_clips_takes_a_fixed_nested_subset_of_the_split(dataset):
    import pyarrow as pa

    data, manifest = dataset
    info = ingest.open_dataset(str(data))
    rows = [ingest.read_shard(info, s["path"], ["sample_id", "split"]).to_pydict() for s in manifest["shards"]]
    train_ids = sorted(i for t in rows for i, sp in zip(t["sample_id"], t["split"]) if sp == "train")
    n = len(train_ids)
    subsets = [ingest.subset_ids(info, "train", k) for k in range(1, n + 1)]
    assert [len(s) for s in subsets] == list(range(1, n + 1)) and subsets[-1] == train_ids
    assert all(set(a) < set(b) for a, b in zip(subsets, subsets[1:]))  # nested: a data-scaling series
    assert ingest.subset_ids(info, "train", 1) == subsets[0]  # and the same on every call
    with pytest.raises(ValueError, match=f"has {n} clip"):
        ingest.subset_ids(info, "train", n + 1)
    # The ingest decodes only the chosen rows of the split.
    table = pa.concat_tables(ingest.read_shard(info, s["path"], ["sample_id", "split", "surface", "queries", "video"])
                             for s in manifest["shards"])
    assert len(ingest.decode_batch(table, "train")["surface"]) == n
    assert len(ingest.decode_batch(table, "train", subsets[0])["surface"]) == 1
    assert len(ingest.decode_batch(table, "val", subsets[0])) == 0  # a train id is not in val


def test_bad_inputs_fail_before_training_with_a_reason(dataset, tmp_path):
    data, _ = dataset
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    missing = _run(_train_cmd(tmp_path / "nope", tmp_path / "runs", "x", tracking))
    assert missing.returncode == 1 and "manifest.json" in missing.stderr
    odd = _run(_train_cmd(data, tmp_path / "runs", "x", tracking, "train.global_batch_size=3"))
    assert odd.returncode == 1 and "not a multiple" in odd.stderr
    many = _run(_train_cmd(data, tmp_path / "runs", "x", tracking, "scaling.num_workers=64", "train.global_batch_size=64"))
    assert many.returncode == 1 and "need at least 64" in many.stderr
    over = _run(_train_cmd(data, tmp_path / "runs", "x", tracking, "data.max_clips=1000"))
    assert over.returncode == 1 and "data.max_clips=1000 but split 'train'" in over.stderr
    bad_key = _run(_train_cmd(data, tmp_path / "runs", "x", tracking, "train.stepz=1"))
    assert bad_key.returncode == 2 and "train.stepz" in bad_key.stderr


def test_deepspeed_config_fills_the_global_batch_by_accumulation():
    cfg = config_lib.load(TrainConfig, None, ["train.global_batch_size=64", "train.micro_batch_size=2",
                                              "scaling.num_workers=8"])
    ds = train_loop.deepspeed_config(cfg, use_bf16=True)
    assert ds["gradient_accumulation_steps"] == 4 and ds["train_batch_size"] == 64
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"]
    assert cfg.train.lr == 5e-5 and cfg.deepspeed.stage == 2  # the paper's defaults


def test_a_run_continues_only_with_its_checkpoints_and_its_dataset(tmp_path):
    import mlflow

    from jobs import train

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = config_lib.load(TrainConfig, None, [f"mlflow.tracking_uri={uri}"])
    run_key = str(tmp_path / "runs" / "r")
    exp_id = train.tracking.experiment(cfg.mlflow.experiment, uri)
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.set_tags({"train.run_key": run_key, "dataset.digest": "a" * 32})
    assert train.find_run(cfg, uri, run_key, "a" * 32)[1] is None  # no checkpoints: start over
    (tmp_path / "runs" / "r" / "checkpoint_2026-01-01_00-00-00.0").mkdir(parents=True)
    assert train.find_run(cfg, uri, run_key, "a" * 32)[1].info.run_id == run.info.run_id
    with pytest.raises(ValueError, match="trained on dataset a{32}"):
        train.find_run(cfg, uri, run_key, "b" * 32)
    with pytest.raises(ValueError, match="data.max_clips=0, not 5"):  # a subset is other training data
        train.find_run(config_lib.load(TrainConfig, None, [f"mlflow.tracking_uri={uri}", "data.max_clips=5"]),
                       uri, run_key, "a" * 32)
