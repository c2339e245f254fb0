"""The per-frame quality figures and the gate (pipelines.quality), through process_asset.

Known answers: a two-part asset keeps both parts (full coverage) with the default
min_component_ratio and loses one (coverage ~2/3, a `watertight_lost_geometry` reject) when only
the largest part is kept; a sphere whose morph target collapses it to a speck for two frames is
`degenerate_frames`; a plain clip records coverage 1 and its component counts.
"""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from jobs import config as config_lib
from pipelines import gltf_write as gw
from pipelines import analytic, process, quality, sources
from pipelines.config import DatasetConfig
from pipelines.errors import AssetError

TINY = ["num_frames=4", "num_surface_points=256", "num_sharp_points=0", "num_queries=16", "queries.num_candidates=256",
        "watertight.resolution=48", "sdf.num_volume=64", "sdf.num_near=64", "render.resolution=32", "source.min_faces=0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    analytic.write_samples(root)
    # A sphere that a morph target shrinks to 1% of its size between t = 0.3 and 0.7.
    m = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    b = gw.GltfBuilder()
    node = b.add_node(mesh=b.add_mesh([gw.Primitive(v, f, targets=[-0.99 * v])], weights=[0.0]))
    b.add_animation([gw.Channel(node, "weights", np.array([0.0, 0.3, 0.7, 1.0]), np.array([[0.0], [1.0], [1.0], [0.0]]))])
    (root / "collapsing.glb").write_bytes(b.to_glb())
    return root


def _run(folder, uid: str, *overrides: str):
    cfg = config_lib.load(DatasetConfig, None, [f"source.path={folder}", *TINY, *overrides])
    ref = next(r for r in sources.list_assets(cfg.source)[0] if r.uid == uid)
    return process.process_asset(ref, cfg, "d")


def test_two_parts_are_kept_and_fully_covered(folder):
    (row,) = _run(folder, "separating_parts").rows
    st = row["stats"]
    assert min(st["coverage"]) >= 0.99 and min(st["extent_ratio"]) > 0.9
    # The parts touch at t = 0 and separate after.
    assert st["components"] == [1, 2, 2, 2] and st["components_dropped"] == [0] * 4
    assert all(a > 0 for a in st["source_area"]) and all(v > 0 for v in st["watertight_volume"])


def test_keeping_only_the_largest_part_is_lost_geometry(folder):
    res = _run(folder, "separating_parts", "watertight.min_component_ratio=1.0")
    assert res.rows == [] and [(r.stage, r.reason) for r in res.rejects] == [("quality", "watertight_lost_geometry")]
    assert "quality.min_coverage" in res.rejects[0].detail
    # With the gate off, the same clip is kept and its figures say what happened.
    (row,) = _run(folder, "separating_parts", "watertight.min_component_ratio=1.0", "quality.enabled=false").rows
    st = row["stats"]
    assert st["components_dropped"] == [0, 1, 1, 1] and 0.3 < min(st["coverage"]) < 0.8


def test_a_source_collapsing_to_a_speck_is_degenerate(folder):
    res = _run(folder, "collapsing", "motion.min_motion=0")
    assert [(r.stage, r.reason) for r in res.rejects] == [("quality", "degenerate_frames")]
    assert "frames [1, 2]" in res.rejects[0].detail
    assert res.cpu_s.get("watertight", 0.0) == 0.0  # rejected before any watertight work


def test_plain_clip_figures(folder):
    (row,) = _run(folder, "bending_tube").rows
    st = row["stats"]
    assert min(st["coverage"]) >= 0.99 and st["components"] == [1] * 4
    assert all(1.0 <= e < 1.2 for e in st["extent_ratio"])  # the shell sits eps outside the source


def test_gate_thresholds():
    cfg = quality.QualityConfig()
    quality.check_watertight([1.0, 0.95], [1.0, 1.0], cfg)
    with pytest.raises(AssetError, match="frame 1 covers 80.0%"):
        quality.check_watertight([1.0, 0.8], [1.0, 1.0], cfg)
    with pytest.raises(AssetError, match="watertight_lost_geometry|0.40x"):
        quality.check_watertight([1.0, 1.0], [1.0, 0.4], cfg)
    h = 2 / 64
    # Points deeper than coverage_cells inside are interior (not outer surface); far outside: lost.
    assert quality.coverage(np.array([0.0, 0.01, -0.5, -0.5]), h, cfg) == 1.0
    assert quality.coverage(np.array([0.0, 0.3, -0.5]), h, cfg) == 0.5
