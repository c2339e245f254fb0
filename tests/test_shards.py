"""Shard schema and the resume logic of the shard writer, on synthetic rows (no Ray, fast)."""
import dataclasses
import json
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import shards
from pipelines.records import AssetResult, Reject
from pipelines.schema import Dims, column_shapes, to_table

DIMS = Dims(T=3, N=8, Ns=4, Q=5, Qs=0, Nv=6, Nn=7)


def _row(uid: str, k: int) -> dict:
    rng = np.random.default_rng(abs(hash((uid, k))) % 2**32)
    d = DIMS
    return {
        "sample_id": f"{uid}:a0:c{k}", "uid": uid, "source": "local", "source_sha256": "0" * 64, "license": "cc0",
        "animation_index": 0, "animation_name": "walk", "clip_index": k, "split": "train",
        "frame_times": np.linspace(0, 1, d.T), "normalization": {"center": [0.0, 1.0, 2.0], "scale": 0.5},
        "surface": rng.random((d.T, d.N, 6)), "sharp_surface": rng.random((d.T, d.Ns, 6)),
        "queries": rng.random((d.T, d.Q, 6)), "query_face": np.arange(d.Q), "query_bary": rng.random((d.Q, 3)),
        "sdf_volume": rng.random((d.T, d.Nv, 4)), "sdf_near": rng.random((d.T, d.Nn, 4)),
        "video": [b"png%d" % i for i in range(d.T)],
        "camera": {"intrinsics": np.eye(3), "extrinsics": np.eye(4), "azimuth_deg": 0.0, "elevation_deg": 0.0,
                   "distance": 3.0, "resolution": 64},
        "stats": {"motion_mean": 0.1, "motion_max": 0.2, "source_vertices": 10, "source_faces": 12,
                  "watertight": [True] * d.T, "watertight_faces": [100] * d.T, "sharp_edges": 3,
                  "source_area": [2.0] * d.T, "coverage": [1.0] * d.T, "extent_ratio": [1.02] * d.T,
                  "components": [1] * d.T, "components_dropped": [0] * d.T, "watertight_area": [2.1] * d.T,
                  "watertight_volume": [0.3] * d.T},
        "schema_version": 2, "config_digest": "abc",
    }


def _results() -> list[AssetResult]:
    """7 assets: clip counts 2,0,3,1,1,0,2 (asset 1 and 5 rejected whole, asset 2 loses a clip)."""
    out = []
    for i, n in enumerate([2, 0, 3, 1, 1, 0, 2]):
        uid = f"u{i}"
        res = AssetResult(uid, rows=[_row(uid, k) for k in range(n)])
        if n == 0:
            res.rejects.append(Reject(uid, "", "bake", "no_animation", "none"))
        if i == 2:
            res.rejects.append(Reject(uid, f"{uid}:a0:c3", "motion", "static", "still"))
        res.cpu_s["bake"] = 1.0
        out.append(res)
    return out


def test_pyarrow_alone_reads_every_column_with_documented_shapes(tmp_path):
    table = to_table([_row("a", 0), _row("b", 1)], DIMS)
    pq.write_table(table, tmp_path / "s.parquet")
    back = pq.read_table(tmp_path / "s.parquet")
    for col, shape in column_shapes(DIMS).items():
        arr = back.column(col).combine_chunks()
        data = arr.to_numpy_ndarray() if hasattr(arr, "to_numpy_ndarray") else np.array(arr.to_pylist())
        assert data.shape == (2, *shape), col
    assert "sharp_queries" not in back.column_names  # Qs = 0: disabled, column left out
    np.testing.assert_allclose(back.column("surface").combine_chunks().to_numpy_ndarray()[1], _row("b", 1)["surface"], rtol=1e-6)
    cam = back.column("camera").combine_chunks().field("extrinsics").to_numpy_ndarray()
    assert cam.shape == (2, 4, 4)


def _build(path, results, crash_after=None):
    out = shards.Output(str(path))
    state = shards.ResumeState.load(out, "digest", overwrite=False)
    sink = shards.ShardSink(out, DIMS, rows_per_shard=3, config={"k": 1, "sub": {"n": 2}}, config_digest="digest", state=state)
    for i, res in enumerate(r for r in results if r.uid not in state.completed):
        if crash_after is not None and i == crash_after:
            return None  # simulated kill: no close, no manifest
        sink.add(res)
    sink.close()
    return shards.finalize(out, state, [], len(results), {"k": 1}, "digest", DIMS, "test")


@pytest.mark.parametrize("crash_after", [1, 2, 3, 5, 6])
def test_kill_and_resume_gives_the_uninterrupted_dataset(tmp_path, crash_after):
    full = _build(tmp_path / "full", _results())
    assert _build(tmp_path / "resumed", _results(), crash_after=crash_after) is None
    resumed = _build(tmp_path / "resumed", _results())
    drop = lambda m: {k: v for k, v in m.items() if k != "created_at"}
    assert drop(resumed) == drop(full)
    for s in full["shards"]:
        assert (tmp_path / "full" / s["path"]).read_bytes() == (tmp_path / "resumed" / s["path"]).read_bytes()
    ids = [sid for p in sorted((tmp_path / "resumed" / "data").glob("*.parquet")) for sid in pq.read_table(p).column("sample_id").to_pylist()]
    assert len(ids) == len(set(ids)) == 9  # no duplicate, none lost
    assert [s["rows"] for s in full["shards"]] == [3, 3, 3]
    rej = pq.read_table(tmp_path / "resumed" / "rejects.parquet").to_pylist()
    assert [(r["uid"], r["reason"]) for r in rej] == [("u1", "no_animation"), ("u2", "static"), ("u5", "no_animation")]
    assert full["funnel"]["clips_kept"] == 9 and full["funnel"]["assets_without_clips"] == 2


def test_rows_packed_in_the_asset_process_give_the_same_shards(tmp_path):
    """Workers send their rows packed (one Parquet file per row, pickled through Ray); the driver
    only appends row groups: the shards are byte-identical to encoding the rows in one go."""
    packed = []
    for res in _results():
        res.packed, res.rows = shards.pack(res.rows, DIMS), []
        packed.append(pickle.loads(pickle.dumps(res, protocol=5)))
    plain = _build(tmp_path / "plain", _results())
    assert _build(tmp_path / "packed", packed)["shards"] == plain["shards"]
    rows = [r for res in _results() for r in res.rows]
    for s in plain["shards"]:  # and to encoding them in one go
        data = (tmp_path / "plain" / s["path"]).read_bytes()
        ids = pq.read_table(tmp_path / "plain" / s["path"]).column("sample_id").to_pylist()
        assert data == shards.parquet_bytes(to_table([r for r in rows if r["sample_id"] in ids], DIMS))
    wrong = AssetResult("u9", packed=shards.pack([_row("u9", 0)], dataclasses.replace(DIMS, Ns=0)))  # no sharp_surface
    with pytest.raises(ValueError, match="does not have the expected schema"):
        _build(tmp_path / "wrong", [wrong])


def test_other_config_in_the_output_is_refused(tmp_path):
    _build(tmp_path, _results())
    with pytest.raises(ValueError, match=r"another config .*differing keys: sub\.n \(2 -> 3\)"):
        shards.ResumeState.load(shards.Output(str(tmp_path)), "other", overwrite=False, config={"k": 1, "sub": {"n": 3}})
    assert shards.ResumeState.load(shards.Output(str(tmp_path)), "other", overwrite=True).records == []


def test_unwritable_output_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermissionError, match="not writable"):
        shards.Output(str(tmp_path / "file" / "sub")).check_writable()


def test_journal_and_shards_leave_no_temporary_files(tmp_path):
    _build(tmp_path, _results())
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []
    recs = [json.loads(p.read_text()) for p in sorted((tmp_path / "_journal").glob("*.json"))]
    assert sorted(u for r in recs for u in r["completed"]) == [f"u{i}" for i in range(7)]


@pytest.mark.parametrize("fail_at", [1, 3, 5, 7])  # odd calls: a file's fsync (even: its folder's)
def test_a_failed_write_leaves_a_resumable_folder(tmp_path, monkeypatch, fail_at):
    """Disk full on the n-th fsync (shard or journal record): the write raises, a `.tmp-*` file is
    left behind, and the next run removes it and ends with the uninterrupted dataset."""
    import errno
    import os

    full = _build(tmp_path / "full", _results())
    real_fsync, calls = os.fsync, {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        _build(tmp_path / "resumed", _results())
    monkeypatch.setattr(os, "fsync", real_fsync)
    leftovers = [p for p in (tmp_path / "resumed").rglob(".tmp-*")]
    assert leftovers, "the failed write should have left its temporary file"
    resumed = _build(tmp_path / "resumed", _results())
    drop = lambda m: {k: v for k, v in m.items() if k != "created_at"}
    assert drop(resumed) == drop(full)
    assert not list((tmp_path / "resumed").rglob(".tmp-*"))


def test_leftover_partial_journal_temp_file_is_ignored_even_with_overwrite(tmp_path):
    """A kill between write and rename leaves `_journal/.tmp-<hex>-000003.json` (here cut mid-JSON):
    it is never parsed as a record, with or without output.overwrite."""
    _build(tmp_path / "a", _results())
    (tmp_path / "a" / "_journal" / ".tmp-0123abcd-000099.json").write_text('{"index": 99, "config_dig')
    (tmp_path / "a" / "data" / ".tmp-0123abcd-shard-00099.parquet").write_bytes(b"PAR1")
    state = shards.ResumeState.load(shards.Output(str(tmp_path / "a")), "digest", overwrite=False)
    assert [r["index"] for r in state.records] == list(range(len(state.records)))
    assert state.completed == {f"u{i}" for i in range(7)}
    assert not list((tmp_path / "a").rglob(".tmp-*"))
    (tmp_path / "a" / "_journal" / ".tmp-0123abcd-000100.json").write_text("{")
    assert shards.ResumeState.load(shards.Output(str(tmp_path / "a")), "other", overwrite=True).records == []
