"""The evaluation job: ground truth rebuilt from the source assets, metrics per clip, MLflow
records, tags on the model version, and the champion promotion rule.

One tiny dataset is built by the real dataset job (subprocess) from the procedural samples, with
two of its four assets in the `test` split. Three model versions are registered without training:
v1 the real ShapeGen4D pyfunc (jobs.registry.pack of the tiny seeded network), v2 an "oracle" that
returns each clip's ground-truth meshes (CD exactly 0: better than anything), v3 a fixed sphere
(worse than the oracle). The real model runs once, through the command line; the others run
in-process (seconds each).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import config as config_lib
from jobs import evaluate, ingest, registry
from pipelines.ground_truth import GroundTruth

try:
    import mlflow.pyfunc

    _PythonModel = mlflow.pyfunc.PythonModel
except ImportError:  # pragma: no cover
    _PythonModel = object

REPO = Path(__file__).resolve().parents[1]
# tests/test_train.py's tiny dataset; uid hashes put bending_tube and separating_parts in test.
DATASET = ["num_frames=4", "num_surface_points=512", "num_sharp_points=64", "num_queries=32", "num_sharp_queries=16",
           "queries.num_candidates=1024", "watertight.resolution=48", "sdf.num_volume=256", "sdf.num_near=256",
           "render.resolution=64", "output.rows_per_shard=2", "source.min_faces=0", "ray.num_cpus=2",
           "limits.memory_per_asset_gb=1", "watertight.min_component_ratio=0.05", "split.test=0.6", "split.val=0",
           "output.log_to_mlflow=false"]
TEST_UIDS = ["bending_tube", "separating_parts"]
FAST = ["metrics.num_points=2000", "metrics.num_uniform=2000", "metrics.num_near=2000", "metrics.align_points=300",
        "metrics.temporal_points=1000", "mesh_resolution=16", "steps=1", "seeds=2"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
NAME = "shapegen4d"


def _run(args: list[str], cwd: Path, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------- stand-in models


def _key(frames) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()


class _Oracle(_PythonModel):
    """Returns the ground-truth meshes of the clip whose video it is given (looked up by hash)."""

    def load_context(self, context):
        self.gt = dict(np.load(context.artifacts["gt"]))

    def predict(self, context, model_input, params=None):
        k = _key(model_input)
        n = len(model_input)
        return [{"vertices": self.gt[f"{k}/{t}/v"], "faces": self.gt[f"{k}/{t}/f"]} for t in range(n)]


class _Sphere(_PythonModel):
    """A sphere of radius 0.5 in every frame, whatever the video."""

    def predict(self, context, model_input, params=None):
        import trimesh

        s = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
        return [{"vertices": np.asarray(s.vertices, np.float32), "faces": np.asarray(s.faces, np.int64)}
                for _ in range(len(model_input))]


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    from pipelines import analytic

    root = tmp_path_factory.mktemp("eval-data")
    analytic.write_samples(root / "src")
    built = _run(["-m", "jobs.build_dataset", "--config", str(REPO / "jobs/configs/demo.yaml"),
                  f"source.path={root / 'src'}", f"output.path={root / 'ds'}", *DATASET], cwd=root)
    assert built.returncode == 0, built.stderr[-3000:]
    manifest = json.loads((root / "ds" / "manifest.json").read_text())
    assert manifest["splits"] == {"test": 2, "train": 2}
    return root / "ds", manifest


@pytest.fixture(scope="module")
def store(dataset, tmp_path_factory) -> dict:
    """A SQLite MLflow store with versions 1 (real model), 2 (oracle), 3 (sphere) of `shapegen4d`."""
    import mlflow
    from safetensors.torch import save_file

    from jobs import components, registry, tracking
    from jobs.registry import RegistryConfig, SampleConfig
    from model.base import BaseConfig
    from model.condition import ConditionConfig

    data, _ = dataset
    root = tmp_path_factory.mktemp("eval-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    info = ingest.open_dataset(str(data))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # experiments' artifact folders land under the cwd's mlruns/
        exp = tracking.experiment("test-models", uri)
        spec = components.ModelConfig(base=BaseConfig(size="tiny"), condition=ConditionConfig(model="tiny-random", image_size=28),
                                      num_latents=info.num_latents)
        st = root / "st.safetensors"
        save_file(components.cpu_state_dict(components.build(spec).model.st_layers), str(st))
        folder = registry.pack(root / "packed", spec, st, SampleConfig(steps=1, mesh_resolution=16, window=4, overlap=1),
                               {"dataset_digest": info.digest})
        with mlflow.start_run(experiment_id=exp):
            real = registry.log_and_register(folder, RegistryConfig(NAME, "candidate"), {"dataset.digest": info.digest})

        # The oracle's table: every test clip's ground truth, keyed by its video.
        gt = GroundTruth(evaluate.dataset_config(info.manifest))
        clips = evaluate.list_clips(info, "test")
        arrays = {}
        for c in clips:
            frames = evaluate.read_videos(info, c.shard, {c.sample_id})[c.sample_id]
            for t, (v, f) in enumerate(gt.frames(c)):
                arrays[f"{_key(frames)}/{t}/v"], arrays[f"{_key(frames)}/{t}/f"] = v, f
        np.savez(root / "gt.npz", **arrays)
        versions = {"real": real["version"]}
        for kind, model, artifacts in (("oracle", _Oracle(), {"gt": str(root / "gt.npz")}), ("sphere", _Sphere(), None)):
            with mlflow.start_run(experiment_id=exp):
                info_ = mlflow.pyfunc.log_model(name="model", python_model=model, artifacts=artifacts,
                                                signature=registry.signature(), pip_requirements=["numpy", "trimesh"],
                                                registered_model_name=NAME)
            versions[kind] = str(info_.registered_model_version)
    assert versions == {"real": "1", "oracle": "2", "sphere": "3"}
    return {"uri": uri, "root": root, "versions": versions, "data": data}


def _cfg(store: dict, model: str, out: Path, *extra: str) -> evaluate.EvaluateConfig:
    return config_lib.load(evaluate.EvaluateConfig, REPO / "jobs/configs/evaluate.yaml",
                           [f"model={model}", f"data.path={store['data']}", "split=test", f"output.path={out}",
                            f"mlflow.tracking_uri={store['uri']}", *FAST, *extra])


@pytest.fixture(scope="module")
def first_promotion(store) -> subprocess.CompletedProcess:
    """The command line on the real model (v1) with promote=true and no champion yet."""
    out = store["root"] / "eval-v1"
    return _run(["-m", "jobs.evaluate", "--config", str(REPO / "jobs/configs/evaluate.yaml"), "model=models:/shapegen4d/1",
                 f"data.path={store['data']}", "split=test", "promote=true", f"output.path={out}",
                 f"mlflow.tracking_uri={store['uri']}", *FAST], cwd=store["root"])


# ------------------------------------------------------------------------------------ tests


def test_promotion_rule():
    assert registry.decide(0.3, None, "lower")[0]  # first evaluated version
    assert registry.decide(0.2, 0.3, "lower") == (True, "candidate metric 0.2 beats champion 0.3 (lower is better)")
    won, why = registry.decide(0.4, 0.3, "lower", metric="chamfer_aligned")
    assert not won and why == "candidate chamfer_aligned 0.4 does not beat champion 0.3 (lower is better)"
    assert not registry.decide(0.3, 0.3, "lower")[0]  # a tie keeps the champion
    assert registry.decide(0.9, 0.8, "higher")[0] and not registry.decide(0.7, 0.8, "higher")[0]
    assert not registry.decide(0.25, 0.3, "lower", min_delta=0.1)[0] and registry.decide(0.15, 0.3, "lower", min_delta=0.1)[0]
    assert not registry.decide(math.nan, 0.3)[0] and not registry.decide(0.1, math.nan)[0]
    assert registry.decide(0.5, math.inf, "lower")[0] and not registry.decide(math.inf, 0.5, "lower")[0]
    assert not registry.decide(math.inf, math.inf, "lower")[0]
    with pytest.raises(ValueError):
        registry.decide(0.1, 0.2, "smaller")


def test_conditioning_gap_is_zero_on_average_for_a_model_that_ignores_its_video_and_positive_for_one_that_reads_it():
    """Analytic clips: spheres of different radii and centres over 3 frames. Predicting each clip's
    own shapes gives a gap equal to the mean Chamfer to the other clips (own CD 0 up to sampling);
    predicting one shape for every clip gives gaps that sum to exactly 0 over the clips."""
    from pipelines import metrics, shapes

    v, f = shapes.uv_sphere(1.0, 12, 24)
    clips = {f"c{i}": [(v * (0.3 + 0.15 * i) + np.array([0.1 * i, 0.05 * t, 0.0]), f) for t in range(3)] for i in range(4)}
    samples = lambda frames, seed: [metrics.sample_points(a, b, 1500, seed) for a, b in frames]  # noqa: E731
    gt = {k: [(p, metrics.nn_tree(p)) for p in samples(fr, 1)] for k, fr in clips.items()}

    def gaps(pred_of):
        ev = evaluate.Evaluation(registry.ModelRef("u", "u", "", "", ""), "candidate")
        for k in clips:
            ev.clips.append({"sample_id": k, "draw": 0, "status": "ok", "summary": {}})
            ev.samples[(k, 0)] = samples(pred_of(k), 2)
        evaluate.conditioning_gaps(ev, gt)
        return np.array([c["summary"]["conditioning_gap"] for c in ev.clips]), ev

    reads, ev = gaps(lambda k: clips[k])
    assert (reads > 0.05).all(), reads
    own = np.array([c["summary"]["chamfer_other_clips"] for c in ev.clips]) - reads
    assert (own < 0.1).all(), own  # two samplings of 1,500 points of the same surface
    ignores, _ = gaps(lambda k: clips["c1"])
    assert abs(ignores.sum()) < 1e-9 and (ignores > 0).any() and (ignores < 0).any(), ignores
    # Empty predicted frames are left out; an all-empty prediction gets no gap.
    ev = evaluate.Evaluation(registry.ModelRef("u", "u", "", "", ""), "candidate")
    ev.clips = [{"sample_id": "c0", "draw": 0, "status": "ok", "summary": {}}]
    ev.samples[("c0", 0)] = [None, None, None]
    evaluate.conditioning_gaps(ev, gt)
    assert "conditioning_gap" not in ev.clips[0]["summary"]


def test_ground_truth_rebuild_is_the_mesh_the_shards_were_sampled_from(dataset):
    import open3d as o3d

    from pipelines import gltf_io, sources, watertight

    data, manifest = dataset
    info = ingest.open_dataset(str(data))
    clips = evaluate.list_clips(info, "test")
    assert sorted(c.uid for c in clips) == TEST_UIDS and len(evaluate.list_clips(info, "test", limit=1)) == 1
    gt = GroundTruth(evaluate.dataset_config(info.manifest))
    h = 2 / manifest["config"]["watertight"]["resolution"]
    for c in clips:
        table = pq.read_table(data / c.shard)
        row = table["sample_id"].to_pylist().index(c.sample_id)
        surface = table["surface"].combine_chunks().to_numpy_ndarray()[row]
        stats = table["stats"][row].as_py()
        # The build's float64 frame times are recovered from the asset (they round to the stored ones).
        data_bytes, ext = sources.fetch(gt.ref(c.uid), gt.cfg.source)
        times = gt.times(gltf_io.load_gltf(data_bytes, ext), c)
        assert times.dtype == np.float64 and np.array_equal(times.astype(np.float32), c.frame_times)
        frames = gt.frames(c)
        assert len(frames) == manifest["dims"]["T"]
        for t, (v, f) in enumerate(frames):
            assert watertight.is_closed_consistent(f, len(v))
            assert len(f) == stats["watertight_faces"][t]  # the very mesh of the build, face for face
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
            d = scene.compute_distance(o3d.core.Tensor(surface[t, :, :3].astype(np.float32))).numpy()
            # Every stored surface point lies on the rebuilt frame (measured <= 7.5e-6; float32 storage).
            assert d.max() < 1e-3 * h, (c.sample_id, t, d.max())
        # The stored normalisation is what places it: frame 0 of the next clip's mesh does not fit.
        other = gt.frames(next(o for o in clips if o.uid != c.uid))[0]
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(other[0].astype(np.float32)), o3d.core.Tensor(other[1].astype(np.uint32)))
        assert scene.compute_distance(o3d.core.Tensor(surface[0, :, :3].astype(np.float32))).numpy().max() > h


def test_read_clips_takes_the_first_ids_of_a_split_and_decodes_only_their_videos(dataset, monkeypatch):
    """The benchmarks' loader (benchmarks/st_attention, latent_alignment): the same arrays the
    training ingest decodes, for the first `limit` sample_ids by name."""
    info = ingest.open_dataset(str(dataset[0]))
    decoded = []
    monkeypatch.setattr(ingest, "decode_video", lambda pngs, dv=ingest.decode_video: decoded.append(1) or dv(pngs))
    test_ids = sorted(c.sample_id for c in evaluate.list_clips(info, "test"))
    assert len(test_ids) == 2
    first = ingest.read_clips(info, "test", 1, ("surface", "queries", "frames"))
    assert list(first) == test_ids[:1] and len(decoded) == 1
    shard = next(c.shard for c in evaluate.list_clips(info, "test") if c.sample_id == test_ids[0])
    want = ingest.decode_batch(ingest.read_shard(info, shard), "test", test_ids[:1])
    for k in ("surface", "queries", "frames"):
        np.testing.assert_array_equal(first[test_ids[0]][k], want[k][0])
        assert first[test_ids[0]][k].flags.writeable  # torch.from_numpy takes it without a warning
    everything = ingest.read_clips(info, "test")
    assert list(everything) == test_ids and set(everything[test_ids[1]]) == {"surface", "queries"}
    assert len(decoded) == 2  # the first call's + decode_batch's; no video without "frames"
    with pytest.raises(ValueError, match="no 'val' clips"):
        ingest.read_clips(info, "val")


def test_cli_evaluates_every_clip_and_the_first_version_becomes_champion(first_promotion, store, dataset):
    import mlflow

    _, manifest = dataset
    done = first_promotion
    assert done.returncode == 0, done.stderr[-5000:]
    log = done.stderr
    assert "[1/2  50%] bending_tube:a0:c0" in log and "[2/2 100%] separating_parts:a0:c0" in log and "ETA" in log
    assert "promoted: no current champion" in log

    out = store["root"] / "eval-v1"
    doc = json.loads((out / "metrics.json").read_text())
    n = manifest["splits"]["test"]
    assert len(doc["clips"]) == 2 * n == doc["clips_evaluated"] and doc["seeds_per_clip"] == 2  # 2 draws per clip
    assert all(c["status"] == "ok" and c["num_frames"] == 4 and c["pred_faces_mean"] > 0 for c in doc["clips"])
    # every clip and draw has its own seed: seed + clip index + draw * clips
    assert sorted(c["seed"] for c in doc["clips"]) == list(range(2 * n))
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * n and "chamfer_aligned" in rows[0] and ",seed,draw," in rows[0]
    # The summary is the mean over clips of each clip metric, raw and aligned, plus jitter.
    for k in ("chamfer", "chamfer_aligned", "fscore_aligned", "iou_aligned", "jitter", "jitter_aligned"):
        assert doc["summary"][k] == pytest.approx(np.mean([c["summary"][k] for c in doc["clips"]]))
        # the bootstrap interval over clips holds the mean and lies within the per-clip means' range
        lo, hi = doc["summary_ci"][k]
        per_clip = [np.mean([c["summary"][k] for c in doc["clips"] if c["sample_id"] == sid])
                    for sid in {c["sample_id"] for c in doc["clips"]}]
        assert min(per_clip) - 1e-12 <= lo <= doc["summary"][k] <= hi <= max(per_clip) + 1e-12
    assert doc["summary"]["empty_frame_rate"] == 0.0
    assert doc["summary"]["chamfer_aligned"] <= doc["summary"]["chamfer"] + 1e-9  # alignment only helps

    client = mlflow.MlflowClient(store["uri"])
    mv = client.get_model_version(NAME, "1")
    run = client.get_run(mv.tags["eval.test.run_id"])
    assert run.data.params["model.version"] == "1" and run.data.params["dataset.digest"] == manifest["digest"]
    assert run.data.params["split"] == "test" and run.data.params["metrics.num_points"] == "2000"
    assert run.data.tags["model.name"] == NAME and run.data.tags["dataset.digest"] == manifest["digest"]
    assert run.data.metrics["chamfer_aligned"] == pytest.approx(doc["summary"]["chamfer_aligned"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "metrics.csv", "previews"}
    # The first clips' registered sequences travel with the run: what a reviewer opens.
    previews = {a.path for a in client.list_artifacts(run.info.run_id, "previews")}
    assert len(previews) == min(4, n)  # one per clip (its first draw)
    files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, sorted(previews)[0])}
    assert {"sequence.glb", "preview.mp4", "registration.json", "frame_0000.obj"} <= files
    # Silhouettes against the row's masks: registration can only be judged against the front view
    # and the true camera, and every value is an IoU.
    for c in doc["clips"]:
        assert all(0.0 <= c["summary"][k] <= 1.0 for k in evaluate.SILHOUETTE_KEYS)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == manifest["digest"]
    # The registry shows the numbers on the version itself, and the alias moved to it.
    assert float(mv.tags["eval.test.chamfer_aligned"]) == pytest.approx(doc["summary"]["chamfer_aligned"])
    assert mv.tags["eval.test.dataset_digest"] == manifest["digest"] and mv.tags["eval.test.clips"] == "4/4"
    assert run.data.metrics["chamfer_aligned_ci_low"] == pytest.approx(doc["summary_ci"]["chamfer_aligned"][0])
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert mv.tags["promotion.decision"] == "promoted"


def test_better_version_takes_champion_and_worse_one_does_not(first_promotion, store, tmp_path, monkeypatch):
    import mlflow

    assert first_promotion.returncode == 0, first_promotion.stderr[-3000:]
    monkeypatch.chdir(store["root"])
    client = mlflow.MlflowClient(store["uri"])
    v = store["versions"]
    v1 = float(client.get_model_version(NAME, "1").tags["eval.test.chamfer_aligned"])

    # The oracle beats v1 (compared with v1's tags from the command line's run: same protocol).
    r = evaluate.main(_cfg(store, f"models:/{NAME}/{v['oracle']}", tmp_path / "oracle", "promote=true"))
    assert r.decision["decision"] == "promoted" and r.decision["champion_before"] == "1"
    assert r.evaluations[0].summary["chamfer_aligned"] < 1e-9 < v1
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v["oracle"]
    mv = client.get_model_version(NAME, v["oracle"])
    assert "beats champion" in mv.tags["promotion.reason"] and f"{v1:.4g}" in mv.tags["promotion.reason"]
    assert "tags of shapegen4d v1" in mv.tags["promotion.reason"]
    oracle_run = r.evaluations[0].run_id

    # The sphere loses. With another metric seed (another protocol) the champion has no comparable
    # evaluation, so it is evaluated too, on the same clips, and tagged.
    r = evaluate.main(_cfg(store, f"models:/{NAME}/{v['sphere']}", tmp_path / "sphere", "promote=true", "metrics.seed=1"))
    assert [e.model.version for e in r.evaluations] == [v["sphere"], v["oracle"]]
    assert r.evaluations[1].role == "champion" and r.evaluations[1].summary["chamfer_aligned"] < 1e-9
    assert (tmp_path / "sphere" / f"champion-{NAME}-v{v['oracle']}" / "metrics.json").is_file()
    assert r.decision["decision"] == "kept"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v["oracle"]
    mv = client.get_model_version(NAME, v["sphere"])
    sphere = r.evaluations[0].summary["chamfer_aligned"]
    assert mv.tags["promotion.decision"] == "kept" and "does not beat" in mv.tags["promotion.reason"]
    oracle = registry.fmt(r.evaluations[1].summary["chamfer_aligned"])
    assert f"{sphere:.4g} does not beat champion {oracle} " in mv.tags["promotion.reason"]
    champion = client.get_model_version(NAME, v["oracle"])
    assert champion.tags["eval.test.protocol"] == mv.tags["eval.test.protocol"]

    # Back on the first protocol: the champion's tags now describe the other one, so its value
    # comes from its earlier evaluation run of this protocol (nothing is re-evaluated).
    r = evaluate.main(_cfg(store, f"models:/{NAME}/{v['sphere']}", tmp_path / "sphere0", "promote=true"))
    assert len(r.evaluations) == 1 and r.decision["decision"] == "kept"
    assert f"from evaluation run {oracle_run}" in r.decision["reason"]

    # Without permission to evaluate the champion, a protocol it lacks is refused before any work.
    runs_before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    with pytest.raises(evaluate.EvaluationError, match="no complete evaluation of this protocol"):
        evaluate.main(_cfg(store, f"models:/{NAME}/{v['sphere']}", tmp_path / "refused", "promote=true",
                           "metrics.seed=2", "evaluate_champion=false"))
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == runs_before
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v["oracle"]


def test_a_clip_without_its_source_is_an_error_row_and_the_rest_go_on(store, dataset, tmp_path, monkeypatch):
    import mlflow

    data, manifest = dataset
    src = Path(manifest["config"]["source"]["path"])
    monkeypatch.chdir(store["root"])
    oracle = f"models:/{NAME}/{store['versions']['oracle']}"

    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(src / "bending_tube.glb", partial)
    r = evaluate.main(_cfg(store, oracle, tmp_path / "out", f"data.source_path={partial}"))
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    by_id = {c["sample_id"]: c for c in doc["clips"]}
    assert len(doc["clips"]) == 4 and by_id["bending_tube:a0:c0"]["status"] == "ok"  # 2 clips x 2 draws
    bad = by_id["separating_parts:a0:c0"]
    assert (bad["status"], bad["error_stage"], bad["error_reason"]) == ("error", "fetch", "source_unavailable")
    ok = [c["summary"] for c in doc["clips"] if c["status"] == "ok"]  # the error rows weigh nothing
    finite = [k for k in ok[0] if all(c[k] is not None for c in ok)]
    assert {k: doc["summary"][k] for k in finite} == pytest.approx({k: np.mean([c[k] for c in ok]) for k in finite})
    assert "error,fetch,source_unavailable" in (tmp_path / "out" / "metrics.csv").read_text()
    mv = mlflow.MlflowClient(store["uri"]).get_model_version(NAME, store["versions"]["oracle"])
    assert mv.tags["eval.test.clips"] == "2/4" and mv.tags["eval.test.clips_failed"] == "2"
    assert r.evaluations[0].failed == 2

    # Nothing evaluable: the other asset changed (same name, other bytes), this one is missing.
    changed = tmp_path / "changed"
    changed.mkdir()
    shutil.copy(src / "morph_wave.glb", changed / "separating_parts.glb")
    with pytest.raises(evaluate.EvaluationError, match="no clip of 'test' could be evaluated"):
        evaluate.main(_cfg(store, oracle, tmp_path / "none", f"data.source_path={changed}"))
    reasons = {c["sample_id"]: c["error_reason"] for c in json.loads((tmp_path / "none" / "metrics.json").read_text())["clips"]}
    assert reasons == {"bending_tube:a0:c0": "source_unavailable", "separating_parts:a0:c0": "source_changed"}


def test_cli_exit_status(store, tmp_path):
    base = ["-m", "jobs.evaluate", "--config", str(REPO / "jobs/configs/evaluate.yaml"), f"data.path={store['data']}",
            f"mlflow.tracking_uri={store['uri']}", f"output.path={tmp_path / 'out'}"]
    bad = _run([*base, "metrics.num_pionts=10"], cwd=tmp_path)
    assert bad.returncode == 2 and "metrics.num_pionts" in bad.stderr
    empty = _run([*base, "split=val"], cwd=tmp_path)
    assert empty.returncode == 1 and "split 'val'" in empty.stderr and "has no rows" in empty.stderr
    missing = _run([*base, "model=models:/shapegen4d/99"], cwd=tmp_path)
    assert missing.returncode == 1 and "models:/shapegen4d/99 not found" in missing.stderr
    unregistered = _run([*base, "model=models:/nosuch@candidate"], cwd=tmp_path)
    assert unregistered.returncode == 1 and "not found" in unregistered.stderr
    assert not (tmp_path / "out").exists()


def test_bootstrap_interval_of_a_metric_with_an_empty_frame_is_inf_not_nan():
    """One clip of five has an empty predicted frame (CD inf): the mean is inf, and the interval
    keeps the resamples without that clip finite instead of interpolating inf - inf = NaN."""
    entries = [{"sample_id": f"c{i}", "status": "ok", "empty_pred_frames": int(i == 0), "num_frames": 4,
                "summary": {"chamfer_aligned": math.inf if i == 0 else 0.1 * (i + 1), "iou_aligned": 0.5}}
               for i in range(5)]
    summary, ci = evaluate.summarize(entries, n_boot=2000, seed=0)
    assert summary["chamfer_aligned"] == math.inf
    lo, hi = ci["chamfer_aligned"]
    assert 0.2 <= lo <= 0.5 and hi == math.inf  # attained resample means: finite low, inf high
    assert ci["iou_aligned"] == [0.5, 0.5]
    assert all(not math.isnan(v) for pair in ci.values() for v in pair)


def test_clip_interval_weighs_every_draw_of_every_resampled_clip():
    """The shared bootstrap (evaluate.summarize and ablate.paired) against a plain loop over the
    resamples: clips with different draw counts, each resample's mean over all draws it holds."""
    draws = [[0.1, 0.3, 0.2], [0.9], [0.4, 0.5], [0.0, 0.05, 0.1, 0.15]]
    per_clip = np.array([[sum(d), len(d)] for d in draws])
    picks = evaluate.clip_picks(len(draws), 500, seed=3)
    assert picks.shape == (500, 4) and (evaluate.clip_picks(4, 500, seed=3) == picks).all()
    means = sorted(float(np.mean([v for c in row for v in draws[c]])) for row in picks)
    lo, hi = evaluate.clip_interval(per_clip, picks)
    assert lo == pytest.approx(means[math.floor(0.025 * 499)]) and hi == pytest.approx(means[math.ceil(0.975 * 499)])
    pooled = np.mean([v for d in draws for v in d])
    assert lo < pooled < hi
    # a resample of clips with no draws has no mean: left out, and none left is [nan, nan]
    assert all(math.isnan(v) for v in evaluate.clip_interval(np.zeros((2, 2)), picks[:, :2] % 2))
