"""Per-asset isolation: a hung, crashed, killed or memory-hungry asset becomes a reject row and
the run goes on; a dead Ray worker is retried a bounded number of times.

The supervisor is tested directly (no Ray), then through the real Ray job with faults injected
into the asset processes by $SHAPEGEN4D_ASSET_FAULTS (pipelines.isolate).
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import build_dataset
from jobs import config as config_lib
from pipelines import analytic, isolate, sources
from jobs.build_dataset import DatasetJobConfig

TINY = [
    "num_frames=4", "num_surface_points=512", "num_sharp_points=64", "num_queries=32", "num_sharp_queries=0",
    "queries.num_candidates=1024", "watertight.resolution=32", "sdf.num_volume=256", "sdf.num_near=256",
    "render.resolution=32", "output.rows_per_shard=1", "source.min_faces=0",
]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("samples")
    analytic.write_samples(src)
    return src


def _request(src: Path, uid: str):
    cfg = config_lib.load(DatasetJobConfig, None, [f"source.path={src}", *TINY])
    ref = next(r for r in sources.list_assets(cfg.source)[0] if r.uid == uid)
    return (asdict(ref), cfg, "digest", isolate.faults())


@pytest.fixture
def supervisor(monkeypatch):
    monkeypatch.setenv(isolate.FAULTS_ENV, "swelling_sphere=hang,morph_wave=kill,separating_parts=segv")
    sup = isolate.Supervisor()
    yield sup
    sup.close()


def test_supervisor_turns_hangs_and_crashes_into_rejects_and_recovers(samples, supervisor):
    def run(uid, timeout_s=60.0, memory=0):
        t0 = time.monotonic()
        res = supervisor.run(uid, _request(samples, uid), timeout_s, memory)
        return res, time.monotonic() - t0

    good, _ = run("bending_tube")
    assert good.num_clips == 1 and not good.rejects
    assert good.packed.sample_ids == ["bending_tube:a0:c0"] and good.cpu_s["pack"] > 0  # packed in the child
    assert good.peak_rss_mb > 50 and good.wall_s > 0
    first_child = supervisor._child.proc.pid

    hung, wall = run("swelling_sphere", timeout_s=3.0)
    assert [(r.stage, r.reason) for r in hung.rejects] == [("worker", "timeout")]
    assert "limits.timeout_s" in hung.rejects[0].detail and 3.0 <= wall < 8.0
    with pytest.raises(ProcessLookupError):
        os.kill(first_child, 0)  # the hung process was killed, not left running

    killed, _ = run("morph_wave")
    assert [(r.stage, r.reason) for r in killed.rejects] == [("worker", "worker_died")]
    assert "SIGKILL" in killed.rejects[0].detail
    crashed, _ = run("separating_parts")
    assert [(r.stage, r.reason) for r in crashed.rejects] == [("worker", "worker_died")]
    assert "SIGSEGV" in crashed.rejects[0].detail and "native code" in crashed.rejects[0].detail

    # A fresh process takes the next asset, and gives the same row as the first process did.
    again, _ = run("bending_tube")
    assert supervisor._child.proc.pid != first_child
    assert again.packed.pieces == good.packed.pieces

    # Memory: a limit below what the process needs kills it.
    oom, _ = run("bending_tube", memory=64 * 2**20)
    assert [(r.stage, r.reason) for r in oom.rejects] == [("worker", "out_of_memory")]
    assert "limits.memory_gb" in oom.rejects[0].detail


def test_real_job_survives_hang_kill_segv_and_dead_ray_workers(samples, tmp_path, monkeypatch):
    """Through the real Ray job: a hung asset (timeout), an asset process SIGKILLed mid-asset and one
    that segfaults (worker_died), a Ray worker killed once (retried: its rows are kept) and a Ray
    worker killed on every attempt (worker_died after limits.retries). The job ends, every asset has
    its outcome, and the good assets' rows equal those of a clean run."""
    src = tmp_path / "src"
    shutil.copytree(samples, src)
    for name in ("hang", "kill", "segv", "rayonce", "rayalways"):
        shutil.copy(src / "bending_tube.glb", src / f"fault_{name}.glb")
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(isolate.FAULTS_ENV, ",".join([
        "fault_hang=hang", "fault_kill=kill", "fault_segv=segv",
        f"fault_rayonce=kill-ray-once:{marker}", "fault_rayalways=kill-ray",
    ]))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [*TINY, "ray.num_cpus=2", "limits.memory_per_asset_gb=1", f"mlflow.tracking_uri={tracking}",
              "limits.timeout_s=30", "limits.retries=1"]
    t0 = time.monotonic()
    summary = build_dataset.main(config_lib.load(DatasetJobConfig, None, [f"source.path={src}", f"output.path={tmp_path / 'ds'}", *common]))
    wall = time.monotonic() - t0
    assert marker.exists(), "the Ray worker was not killed"

    rejects = {r["uid"]: (r["stage"], r["reason"]) for r in pq.read_table(tmp_path / "ds" / "rejects.parquet").to_pylist()}
    assert rejects == {
        "fault_hang": ("worker", "timeout"),
        "fault_kill": ("worker", "worker_died"),
        "fault_segv": ("worker", "worker_died"),
        "fault_rayalways": ("worker", "worker_died"),
    }
    m = summary.manifest
    kept = sorted(sid.split(":")[0] for s in m["shards"] for sid in
                  pq.read_table(tmp_path / "ds" / s["path"]).column("sample_id").to_pylist())
    assert kept == sorted(["bending_tube", "morph_wave", "separating_parts", "swelling_sphere", "fault_rayonce"])
    assert m["funnel"]["rejected_by_stage"]["worker"] == {"timeout": 1, "worker_died": 3}
    assert summary.peak_rss_mb and max(summary.peak_rss_mb.values()) < 1024
    # The hung asset held the run for its 30 s limit, not longer.
    assert wall < 240, wall

    monkeypatch.delenv(isolate.FAULTS_ENV)
    clean = build_dataset.main(config_lib.load(DatasetJobConfig, None, [f"source.path={samples}", f"output.path={tmp_path / 'clean'}", *common]))
    # Rows equal to the clean run's (config_digest differs: source.path is part of the config).
    def by_uid(root: Path, manifest: dict) -> dict:
        tables = [pq.read_table(root / s["path"]).drop_columns(["config_digest"]) for s in manifest["shards"]]
        return {t.column("uid")[0].as_py(): t for t in tables}

    got, want = by_uid(tmp_path / "ds", m), by_uid(tmp_path / "clean", clean.manifest)
    assert sorted(want) == ["bending_tube", "morph_wave", "separating_parts", "swelling_sphere"]
    for uid, table in want.items():
        assert got[uid].equals(table), uid

    # The failures were passing (here: the faults are gone). Giving assets more time changes no
    # digest, and output.retry_failed=true re-runs exactly the four worker failures into the same
    # folder: they are kept, their old rejects are gone, the earlier shards are untouched.
    before = {s["path"]: s["sha256"] for s in m["shards"]}
    retried = build_dataset.main(config_lib.load(DatasetJobConfig, None, [
        f"source.path={src}", f"output.path={tmp_path / 'ds'}", *common, "limits.timeout_s=120", "output.retry_failed=true"]))
    r = retried.manifest
    assert retried.processed_this_run == 4 and retried.skipped_done == 5
    assert pq.read_table(tmp_path / "ds" / "rejects.parquet").num_rows == 0
    assert r["funnel"]["rejected_by_stage"] == {} and r["funnel"]["clips_kept"] == 9
    assert {s["path"]: s["sha256"] for s in r["shards"][: len(before)]} == before
    ids = [sid for s in r["shards"] for sid in pq.read_table(tmp_path / "ds" / s["path"]).column("sample_id").to_pylist()]
    assert sorted(i.split(":")[0] for i in ids[len(before):]) == ["fault_hang", "fault_kill", "fault_rayalways", "fault_segv"]
    assert len(ids) == len(set(ids)) == 9
