"""The dataset job end to end on Ray: samples + bad inputs -> shards, manifest, rejects, MLflow.

One tiny-config build is shared by most tests (module fixture); the kill-and-resume test runs
the real command in a subprocess, kills it after its first shard and runs it again.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import build_dataset
from jobs import config as config_lib
from pipelines import analytic, bad_assets, bake, gltf_io
from jobs.build_dataset import DatasetJobConfig

REPO = Path(__file__).resolve().parents[1]
MAX_FACES = 20_000

# Small but complete: every stage runs, with the real code paths.
TINY = [
    "num_frames=4",
    "num_surface_points=512",
    "num_sharp_points=64",
    "num_queries=32",
    "num_sharp_queries=16",
    "queries.num_candidates=1024",
    "watertight.resolution=48",
    "sdf.num_volume=256",
    "sdf.num_near=384",
    "render.resolution=64",
    "output.rows_per_shard=1",
    f"bake.max_faces={MAX_FACES}",
    "source.min_faces=0",
    "ray.num_cpus=2",
    "limits.memory_per_asset_gb=1",
]

BAD_REASONS = bad_assets.BAD_ASSET_REASONS


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    analytic.write_samples(src)
    bad = bad_assets.bad_assets(src / "bad", max_faces=MAX_FACES)
    assert set(bad) == set(BAD_REASONS)
    return src


def _cfg(source: Path, out: Path, tracking: str, *extra: str) -> DatasetJobConfig:
    return config_lib.load(
        DatasetJobConfig,
        None,
        [f"source.path={source}", f"output.path={out}", f"mlflow.tracking_uri={tracking}", *TINY, *extra],
    )


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    summary = build_dataset.main(_cfg(source, root / "ds", tracking))
    return root, summary, tracking


def _read_all(out: Path) -> dict:
    import pyarrow as pa

    manifest = json.loads((out / "manifest.json").read_text())
    tables = [pq.read_table(out / s["path"]) for s in manifest["shards"]]
    return {"manifest": manifest, "table": pa.concat_tables(tables)}


def test_counts_schema_and_shapes(built):
    root, summary, _ = built
    got = _read_all(root / "ds")
    m, t = got["manifest"], got["table"]
    n_samples = len(analytic.SAMPLES)
    assert m["rows"] == t.num_rows == n_samples
    assert [s["rows"] for s in m["shards"]] == [1] * n_samples
    assert sum(m["splits"].values()) == n_samples
    for col, shape in m["columns"].items():
        arr = t.column(col).combine_chunks()
        data = arr.to_numpy_ndarray() if hasattr(arr, "to_numpy_ndarray") else np.array(arr.to_pylist())
        assert data.shape == (n_samples, *shape), col
    surface = t.column("surface").combine_chunks().to_numpy_ndarray()
    assert np.abs(surface[..., :3]).max() <= 1.0
    np.testing.assert_allclose(np.linalg.norm(surface[..., 3:], axis=-1), 1.0, atol=1e-4)
    stats = t.column("stats").to_pylist()
    assert all(all(s["watertight"]) for s in stats)
    assert all(s["motion_max"] > 0.01 for s in stats)
    assert "sdf" in m["conventions"] and "NEGATIVE INSIDE" in m["conventions"]["sdf"]


def test_every_bad_input_gives_its_reject_row_and_good_assets_are_kept(built):
    root, summary, _ = built
    rejects = pq.read_table(root / "ds" / "rejects.parquet").to_pylist()
    by_uid = {r["uid"]: r for r in rejects}
    for case, (stage, reason) in BAD_REASONS.items():
        r = by_uid[f"bad__{case}"]
        assert (r["stage"], r["reason"]) == (stage, reason), (case, r)
        assert r["detail"]
    assert len(rejects) == len(BAD_REASONS)
    kept = {u for s in summary.manifest["shards"] for u in pq.read_table(root / "ds" / s["path"]).column("uid").to_pylist()}
    assert kept == set(analytic.SAMPLES)
    funnel = summary.manifest["funnel"]
    assert funnel["candidates"] == funnel["assets_processed"] == len(analytic.SAMPLES) + len(BAD_REASONS)
    assert funnel["assets_without_clips"] == len(BAD_REASONS)
    assert funnel["clips_kept"] == funnel["assets_kept"] == len(analytic.SAMPLES)


def test_queries_lie_on_their_frame_source_surface(built, source):
    """Re-bake each clip independently and check every propagated query against its frame."""
    import trimesh

    root, _, _ = built
    t = _read_all(root / "ds")["table"]
    for row in t.to_pylist():
        g = gltf_io.load_gltf((source / f"{row['uid']}.glb").read_bytes())
        baked = bake.bake(g, row["animation_index"], np.asarray(row["frame_times"], dtype=np.float64), bake.BakeConfig())
        center, scale = np.asarray(row["normalization"]["center"]), row["normalization"]["scale"]
        q = np.asarray(row["queries"]).reshape(4, 32, 6)
        for k in range(4):
            mesh = trimesh.Trimesh((baked.vertices[k] - center) * scale, baked.faces, process=False)
            _, dist, _ = trimesh.proximity.closest_point(mesh, q[k, :, :3])
            assert dist.max() < 1e-5, (row["uid"], k, dist.max())
        # Frame-to-frame, the same query moves with the animation (not re-sampled).
        assert np.linalg.norm(q[:, :, :3] - q[:1, :, :3], axis=-1).max() > 0.01


def test_the_build_is_recorded_in_mlflow(built):
    import mlflow

    _, summary, tracking = built
    client = mlflow.MlflowClient(tracking)
    exp = client.get_experiment_by_name("shapegen4d-datasets")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["dataset.digest"] == summary.manifest["digest"]
    assert run.data.params["num_frames"] == "4"
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == [summary.manifest["digest"]]
    assert Path(exp.artifact_location.removeprefix("file://")).is_absolute()


def test_the_build_writes_a_preview_and_logs_it(built):
    """preview/: one contact sheet per shard whose query dots sit where the queries project, and a
    report with the funnel, every reject reason and the quality histograms; the same files in MLflow."""
    import mlflow
    from PIL import Image

    from jobs import preview as preview_job
    from pipelines import preview

    root, summary, tracking = built
    m = summary.manifest
    folder = root / "ds" / "preview"
    sheets = sorted(folder.glob("sheet-*.png"))
    assert len(sheets) == len(m["shards"]) and (folder / "report.html").exists()
    cfg = preview.PreviewConfig()
    sheet = np.asarray(Image.open(sheets[0]).convert("RGB"), int)
    T = 4
    assert sheet.shape == (14 + cfg.thumb, cfg.thumb * (T + 3) + 8, 3)  # one clip per shard here: 4 frames + 3 marked
    # The query dots: at the projected position of query 0 on marked frame 1, its colour.
    t = pq.read_table(root / "ds" / m["shards"][0]["path"])
    q0 = t.column("queries").combine_chunks().to_numpy_ndarray()[0, 0, :1, :3]
    cam = t.column("camera").combine_chunks()
    K, E = cam.field("intrinsics").to_numpy_ndarray()[0], cam.field("extrinsics").to_numpy_ndarray()[0]
    u, v = preview.project(q0, K, E)[0] * cfg.thumb / 64  # render.resolution=64 in TINY
    x, y = int(cfg.thumb * T + 8 + u), int(14 + v)
    patch = sheet[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3)
    assert np.abs(patch - preview.query_colours(1)[0]).max(axis=1).min() < 60, patch
    report = (folder / "report.html").read_text()
    for reason in {r for r in BAD_REASONS.values()}:
        assert reason[1] in report
    assert "lowest coverage of the source" in report and "<svg" in report and "CPU-s per clip" in report

    client = mlflow.MlflowClient(tracking)
    run = client.search_runs([client.get_experiment_by_name("shapegen4d-datasets").experiment_id])[0]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "preview")}
    assert logged == {f"preview/{p.name}" for p in folder.iterdir()}

    # jobs.preview makes the same files for an existing dataset.
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    preview_job.main(config_lib.load(preview_job.PreviewJobConfig, None, [f"dataset={root / 'ds'}"]))
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix == ".png"} == \
        {k: v for k, v in before.items() if k.endswith(".png")}
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        preview_job.main(config_lib.load(preview_job.PreviewJobConfig, None, [f"dataset={root / 'nothing'}"]))


def test_same_config_gives_identical_shards(built, source, tmp_path):
    root, summary, tracking = built
    again = build_dataset.main(_cfg(source, tmp_path / "ds", tracking, "output.log_to_mlflow=false"))
    assert again.manifest["digest"] == summary.manifest["digest"]
    for s in summary.manifest["shards"]:
        assert (root / "ds" / s["path"]).read_bytes() == (tmp_path / "ds" / s["path"]).read_bytes()


def _command(source: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.build_dataset", f"source.path={source}", f"output.path={out}",
            "output.log_to_mlflow=false", *TINY, *extra]


def test_kill_and_resume_gives_the_uninterrupted_result(built, source, tmp_path):
    root, summary, _ = built
    out = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(_command(source, out), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    # Kill right after the first journal record: the 8 bad assets are journaled with the first
    # shard (bending_tube) while the later samples are still being processed.
    while not (out / "_journal" / "000000.json").exists():
        assert proc.poll() is None, "job ended before it could be killed"
        assert time.time() < deadline, "no shard written within 240 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    assert not (out / "manifest.json").exists(), "the job finished before the kill"
    assert 0 < len(list((out / "data").glob("*.parquet"))) < summary.manifest["rows"]
    done = subprocess.run(_command(source, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "already done" in done.stdout
    resumed = json.loads((out / "manifest.json").read_text())
    drop = lambda m: {k: v for k, v in m.items() if k not in ("created_at", "config")}
    assert drop(resumed) == drop(summary.manifest)
    ids = [i for s in resumed["shards"] for i in pq.read_table(out / s["path"]).column("sample_id").to_pylist()]
    assert len(ids) == len(set(ids)) == summary.manifest["rows"]
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(Path(s["path"]).name for s in resumed["shards"])


def test_job_level_errors_exit_non_zero_with_a_message(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    missing = subprocess.run(_command(tmp_path / "nope", tmp_path / "out"), cwd=REPO, env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "nope" in missing.stderr
    (tmp_path / "file").write_text("x")
    (tmp_path / "src").mkdir()
    analytic.write_samples(tmp_path / "src")
    unwritable = subprocess.run(_command(tmp_path / "src", tmp_path / "file" / "out"), cwd=REPO, env=env, capture_output=True, text=True)
    assert unwritable.returncode == 1 and "not writable" in unwritable.stderr
    bad_key = subprocess.run(_command(tmp_path / "src", tmp_path / "out", "watertight.resolutoin=3"), cwd=REPO, env=env, capture_output=True, text=True)
    assert bad_key.returncode == 2 and "watertight.resolutoin" in bad_key.stderr
