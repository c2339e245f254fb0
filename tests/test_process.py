"""process_asset on single assets (no Ray): rejects that need a valid file, and clip choice."""
import numpy as np
import pytest
import trimesh

from jobs import config as config_lib
from pipelines import process, queries, sdf, sources
from pipelines.config import DatasetConfig
from pipelines.gltf_write import Channel, GltfBuilder, Primitive

TINY = ["num_frames=3", "num_surface_points=256", "num_sharp_points=32", "num_queries=16",
        "queries.num_candidates=512", "watertight.resolution=32", "sdf.num_volume=64", "sdf.num_near=96",
        "render.resolution=32", "source.min_faces=0"]


def _asset(tmp_path, name: str, animations: list[np.ndarray]) -> sources.AssetRef:
    """A box on one node with one translation animation per entry (keyframe values [k,3])."""
    box = trimesh.creation.box()
    b = GltfBuilder()
    node = b.add_node(mesh=b.add_mesh([Primitive(np.asarray(box.vertices), np.asarray(box.faces))]))
    for values in animations:
        times = np.linspace(0.0, 1.0, len(values))
        b.add_animation([Channel(node, "translation", times, np.asarray(values, np.float64))])
    (tmp_path / f"{name}.glb").write_bytes(b.to_glb())
    cfg = sources.SourceConfig(path=str(tmp_path), min_faces=0)
    (ref,), _ = sources.list_assets(cfg)
    return ref


def _cfg(tmp_path, *extra) -> DatasetConfig:
    return config_lib.load(DatasetConfig, None, [f"source.path={tmp_path}", *TINY, *extra])


def test_a_static_clip_is_rejected_by_the_motion_filter(tmp_path):
    ref = _asset(tmp_path, "still", [np.zeros((2, 3))])
    result = process.process_asset(ref, _cfg(tmp_path), "d")
    assert result.rows == []
    (rej,) = result.rejects
    assert (rej.stage, rej.reason, rej.sample_id) == ("motion", "static", "still:a0:c0")


def test_animation_choice_and_windows(tmp_path):
    moving = [np.array([[0, 0, 0], [1, 0, 0]]), np.array([[0, 0, 0], [0, 1, 0], [0, 2, 0]])]
    ref = _asset(tmp_path, "two", moving)
    by_index = process.process_asset(ref, _cfg(tmp_path, "clips.animations=1"), "d")
    assert [r["sample_id"] for r in by_index.rows] == ["two:a1:c0"]
    every = process.process_asset(ref, _cfg(tmp_path, "clips.animations=all"), "d")
    assert [r["sample_id"] for r in every.rows] == ["two:a0:c0", "two:a1:c0"]
    missing = process.process_asset(ref, _cfg(tmp_path, "clips.animations=5"), "d")
    assert [(r.stage, r.reason) for r in missing.rejects] == [("bake", "animation_index_out_of_range")]
    windows = process.process_asset(ref, _cfg(tmp_path, "clips.window=0.5", "clips.stride=0.25", "clips.max_per_animation=0"), "d")
    times = [np.asarray(r["frame_times"]) for r in windows.rows]
    np.testing.assert_allclose([t[[0, -1]] for t in times], [[0, 0.5], [0.25, 0.75], [0.5, 1.0]], atol=1e-6)


def test_rows_are_identical_when_an_asset_is_processed_again(tmp_path):
    ref = _asset(tmp_path, "mover", [np.array([[0, 0, 0], [1, 0, 0]])])
    a = process.process_asset(ref, _cfg(tmp_path), "d").rows[0]
    b = process.process_asset(ref, _cfg(tmp_path), "d").rows[0]
    for key in ("surface", "queries", "sdf_volume", "sdf_near", "sharp_surface"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["video"] == b["video"]
    c = process.process_asset(ref, _cfg(tmp_path, "seed=1"), "d").rows[0]
    assert not np.array_equal(a["surface"], c["surface"])


def test_projected_queries_lie_on_the_watertight_surface():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces, dtype=np.int64)
    pts = np.random.default_rng(0).normal(size=(50, 3))
    pts = np.c_[pts, np.zeros_like(pts)]
    snapped = queries.project(pts, sdf.raycasting_scene(v, f))
    _, dist, _ = trimesh.proximity.closest_point(sphere, snapped[:, :3])
    assert dist.max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(snapped[:, 3:], axis=1), 1.0, atol=1e-5)
    assert (np.einsum("nd,nd->n", snapped[:, 3:], snapped[:, :3]) > 0).all()  # outward


@pytest.mark.parametrize("mode", ["aligned", "independent"])
def test_query_modes_and_projection_run_in_the_pipeline(tmp_path, mode):
    ref = _asset(tmp_path, "mover", [np.array([[0, 0, 0], [1, 0, 0]])])
    row = process.process_asset(ref, _cfg(tmp_path, f"queries.mode={mode}", "queries.project_to_watertight=true"), "d").rows[0]
    assert row["queries"].shape == (3, 16, 6)
    assert (row["query_face"] >= 0).all() == (mode == "aligned")
