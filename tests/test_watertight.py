"""Watertight stage and SDF supervision on small synthetic meshes (low resolution, fast)."""
from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import trimesh

from pipelines import watertight as wt
from pipelines.errors import AssetError
from pipelines.sdf import SdfConfig, near_counts, raycasting_scene, sample_sdf, signed_distance
from pipelines.surface import sample_surface
from pipelines.watertight import WatertightConfig, make_watertight

RES = 64
H = 2.0 / RES  # voxel size at RES
EPS = 1.0 * H  # default eps_cells = 1


def sphere(radius=0.5, center=(0.0, 0.0, 0.0), subdivisions=3):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(m.vertices) + np.asarray(center), np.asarray(m.faces, np.int64)


def join(*parts):
    vs, fs, off = [], [], 0
    for v, f in parts:
        vs.append(v)
        fs.append(f + off)
        off += len(v)
    return np.concatenate(vs), np.concatenate(fs)


def distance(v, f, points):
    scene = raycasting_scene(v, f)
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy().astype(np.float64)


def check_closed(v, f, info):
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_watertight and m.is_winding_consistent
    assert info["watertight"] and info["num_components"] == m.body_count
    assert info["volume"] > 0 and m.volume > 0  # outward normals
    assert np.isclose(m.volume, info["volume"]) and np.isclose(m.area, info["area"])
    assert len(m.split(only_watertight=False)) == info["num_components"]
    tri = v[f]
    assert (np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) > 0).all()


def run(v, f, **kw):
    out = make_watertight(v, f, WatertightConfig(resolution=RES, **kw))
    check_closed(*out)
    return out


def test_open_quad_becomes_thin_closed_slab():
    v = np.array([[-0.5, -0.5, 0.01], [0.5, -0.5, 0.01], [0.5, 0.5, 0.01], [-0.5, 0.5, 0.01]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    wv, wf, info = run(v, f)
    # A slab of thickness 2*eps around the unit quad, with rounded rims.
    assert 2 * EPS * 0.8 < info["volume"] < 2 * EPS * 1.3
    assert np.abs(wv[:, 2] - 0.01).max() <= EPS + 1e-6
    d = distance(v, f, wv)
    assert np.abs(d - EPS).max() < 0.25 * H  # every output vertex sits on the eps-offset


def test_open_hemisphere_within_eps_plus_one_voxel():
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    keep = m.triangles_center[:, 2] > 0
    v, f = np.asarray(m.vertices), np.asarray(m.faces)[keep]
    wv, wf, _ = run(v, f)
    rng = np.random.default_rng(0)
    out_pts = sample_surface(wv, wf, 5000, rng)[:, :3]
    src_pts = sample_surface(v, f, 5000, rng)[:, :3]
    assert distance(v, f, out_pts).max() <= EPS + H  # output near the source ...
    assert distance(wv, wf, src_pts).max() <= EPS + H  # ... and the source covered by the output


def test_overlapping_spheres_give_their_union_without_interior_faces():
    c1, c2, r = np.array([-0.2, 0.0, 0.0]), np.array([0.25, 0.05, 0.0]), 0.45
    v, f = join(sphere(r, c1), sphere(r, c2))
    wv, wf, info = run(v, f)
    union = np.minimum(np.linalg.norm(wv - c1, axis=1), np.linalg.norm(wv - c2, axis=1)) - r
    # Every vertex lies on the eps-offset of the union (faceting of the icospheres < 0.01);
    # an interior face would sit at union < 0.
    assert union.min() > EPS - 0.5 * H and union.max() < EPS + 0.5 * H
    assert info["num_components_raw"] == 1


def test_flipped_faces_change_nothing():
    v, f = sphere(0.6)
    flipped = f.copy()
    flipped[::2] = flipped[::2, ::-1]
    a = make_watertight(v, f, WatertightConfig(resolution=RES))
    b = make_watertight(v, flipped, WatertightConfig(resolution=RES))
    check_closed(*b)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_internal_leftover_part_is_removed():
    outer = sphere(0.7)
    v, f = join(outer, sphere(0.2, (0.1, 0.0, 0.0)))
    wv, wf, info = run(v, f)
    ref_v, ref_f, _ = make_watertight(*outer, WatertightConfig(resolution=RES))
    np.testing.assert_array_equal(wv, ref_v)  # the inner sphere left no trace at all
    np.testing.assert_array_equal(wf, ref_f)
    assert info["num_components_raw"] == 1


def test_min_component_ratio_keeps_real_parts_and_drops_specks():
    # A body, a separate part (area ratio (0.15/0.5)^2 = 0.09 of the source) and a speck whose
    # watertight shell (radius ~ 0.005 + eps) has under 1% of the body's area.
    v, f = join(sphere(0.5, (-0.3, 0, 0)), sphere(0.15, (0.7, 0, 0)), sphere(0.005, (0.0, 0.8, 0), subdivisions=1))
    wv, wf, info = make_watertight(v, f, WatertightConfig(resolution=RES))  # default ratio 0.01
    assert trimesh.Trimesh(wv, wf, process=False).is_watertight
    assert info["num_components_raw"] == 3 and info["num_components"] == 2
    assert wv[:, 0].max() > 0.8 and wv[:, 1].max() < 0.6  # the part stays, the speck is gone
    _, _, every = make_watertight(v, f, WatertightConfig(resolution=RES, min_component_ratio=0.0))
    assert every["num_components"] == 3
    _, _, big_only = make_watertight(v, f, WatertightConfig(resolution=RES, min_component_ratio=0.2))
    assert big_only["num_components"] == 1


def test_closed_box_offset_and_grid_bounds():
    m = trimesh.creation.box((1.8, 1.2, 0.6))  # big triangles that span the whole grid
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    wv, wf, info = run(v, f)
    half = np.array([0.9, 0.6, 0.3])
    assert (np.abs(wv) <= half + EPS + 1e-6).all()
    grid = wt.make_grid(WatertightConfig(resolution=RES))
    assert (np.abs(wv) < -grid.origin).all()  # inside the grid, away from its border
    # Volume of the eps-offset box (Minkowski sum with a ball), MC error a few percent.
    exact = np.prod(2 * half) + 2 * EPS * (4 * half[0] * half[1] + 4 * half[1] * half[2] + 4 * half[0] * half[2])
    exact += np.pi * EPS**2 * 2 * half.sum() + 4 / 3 * np.pi * EPS**3
    assert abs(info["volume"] - exact) / exact < 0.02


def test_deterministic_and_both_marching_cubes():
    v, f = join(sphere(0.5), sphere(0.3, (0.4, 0.2, 0.0)))
    a = make_watertight(v, f, WatertightConfig(resolution=RES))
    b = make_watertight(v, f, WatertightConfig(resolution=RES))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = run(v, f, marching_cubes="mcubes")
    assert abs(c[2]["volume"] - a[2]["volume"]) / a[2]["volume"] < 0.01


@pytest.mark.parametrize("method", ["skimage", "mcubes"])
def test_random_triangle_soups_always_close(method):
    rng = np.random.default_rng(11)
    for trial in range(8):
        k = int(rng.integers(1, 120))
        centers = rng.uniform(-0.7, 0.7, (k, 1, 3))
        v = np.clip((centers + rng.normal(size=(k, 3, 3)) * rng.choice([0.02, 0.1, 0.4], (k, 1, 1))).reshape(-1, 3), -1, 1)
        f = np.arange(len(v)).reshape(-1, 3)
        eps = float(rng.choice([0.5, 1.0, 1.5]))
        cfg = WatertightConfig(resolution=int(rng.choice([24, 48])), eps_cells=eps, band_cells=eps + 1, marching_cubes=method)
        wv, wf, info = make_watertight(v, f, cfg)
        check_closed(wv, wf, info)
        assert len(np.unique(wv, axis=0)) == len(wv)  # no two vertices at one position


def test_band_kernel_is_exact_and_misses_nothing():
    rng = np.random.default_rng(3)
    # Random triangles of all sizes, some slivers, inside [-0.9, 0.9].
    centers = rng.uniform(-0.6, 0.6, (40, 1, 3))
    v = (centers + rng.normal(size=(40, 3, 3)) * rng.choice([0.01, 0.1, 0.3], (40, 1, 1))).reshape(-1, 3)
    v = np.clip(v, -0.9, 0.9)  # (geometry beyond the grid margin is cut by design)
    f = np.arange(len(v)).reshape(-1, 3)
    cfg = WatertightConfig(resolution=48)
    d2, lo = wt.band_udf(v, f, cfg)
    grid = wt.make_grid(cfg)
    idx = np.argwhere(np.ones(d2.shape, bool))
    ref = distance(v, f, grid.origin + (idx + lo) * grid.h) / grid.h
    got = np.sqrt(d2[tuple(idx.T)].astype(np.float64))
    in_band = ref <= cfg.band_cells
    assert in_band.sum() > 1000
    np.testing.assert_allclose(got[in_band], ref[in_band], atol=1e-4)
    assert (got[~in_band] > cfg.band_cells - 1e-4).all()


def test_mesh_checks():
    tet = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    assert wt.is_closed_consistent(tet, 4)
    assert not wt.is_closed_consistent(tet[:3], 4)  # open
    assert not wt.is_closed_consistent(np.concatenate([tet[:3], tet[3:, ::-1]]), 4)  # one face flipped
    assert not wt.is_closed_consistent(np.concatenate([tet, tet]), 4)  # every edge used four times
    n, comp = wt.face_components(np.concatenate([tet, tet + 4]), 8)
    assert n == 2 and (comp == np.repeat([0, 1], 4)).all()


def test_bad_inputs_raise_asset_errors(monkeypatch):
    cfg = WatertightConfig(resolution=32)
    with pytest.raises(AssetError) as e:
        make_watertight(np.zeros((0, 3)), np.zeros((0, 3), np.int64), cfg)
    assert e.value.reason == "empty_watertight"
    with pytest.raises(AssetError) as e:  # only zero-area faces
        make_watertight(np.array([[0.0, 0, 0], [0.5, 0, 0], [1.0, 0, 0]]), np.array([[0, 1, 2]]), cfg)
    assert e.value.reason == "empty_watertight"
    with pytest.raises(AssetError) as e:
        make_watertight(np.array([[0.0, 0, 0], [np.nan, 0, 0], [0, 1.0, 0]]), np.array([[0, 1, 2]]), cfg)
    assert e.value.reason == "non_finite_vertices"
    with pytest.raises(ValueError):
        make_watertight(*sphere(), WatertightConfig(resolution=32, eps_cells=0.3))
    # A marching-cubes result with a hole must be caught by the final check.
    real = wt._marching_cubes
    monkeypatch.setattr(wt, "_marching_cubes", lambda field, method: (lambda v, f: (v, f[1:]))(*real(field, method)))
    with pytest.raises(AssetError) as e:
        make_watertight(*sphere(), cfg)
    assert e.value.reason == "not_watertight"


# --- SDF supervision ------------------------------------------------------------------------


def test_sdf_box_exact_values_and_signs():
    half = np.array([0.5, 0.4, 0.3])
    m = trimesh.creation.box(2 * half)
    cfg = SdfConfig(num_volume=20000, num_near=9000)
    vol, near = sample_sdf(np.asarray(m.vertices), np.asarray(m.faces), cfg, np.random.default_rng(0))
    assert vol.shape == (20000, 4) and near.shape == (9000, 4)
    assert vol.dtype == np.float32 and near.dtype == np.float32
    pts = np.concatenate([vol, near]).astype(np.float64)
    q = np.abs(pts[:, :3]) - half
    exact = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
    assert np.abs(pts[:, 3] - exact).max() < 1e-5
    decided = np.abs(exact) > 1e-5
    assert ((pts[:, 3] < 0) == (exact < 0))[decided].all()  # zero sign errors, negative inside
    assert (np.abs(vol[:, :3]) <= cfg.volume_bound).all()


def test_sdf_sphere_signs_and_near_distribution():
    r = 0.6
    v, f = sphere(r, subdivisions=4)
    cfg = SdfConfig(num_volume=10000, num_near=9001, near_sigmas=(0.002, 0.01, 0.04))
    vol, near = sample_sdf(v, f, cfg, np.random.default_rng(1))
    pts = np.concatenate([vol, near]).astype(np.float64)
    exact = np.linalg.norm(pts[:, :3], axis=1) - r
    facet = r * (1 - np.cos(np.radians(4.0)))  # icosphere(4) facets deviate < 0.0015 from the sphere
    assert np.abs(pts[:, 3] - exact).max() < facet
    decided = np.abs(exact) > facet
    assert ((pts[:, 3] < 0) == (exact < 0))[decided].all()
    # Near points: the counts per sigma and their spread follow the config.
    assert near_counts(cfg) == [3001, 3000, 3000]
    spread = [np.abs(near[a:b, 3]).mean() for a, b in ((0, 3001), (3001, 6001), (6001, 9001))]
    assert spread[0] < spread[1] < spread[2] and 0.02 < spread[2] < 0.05


def test_sdf_on_watertight_output_is_deterministic():
    v, f = join(sphere(0.5), sphere(0.3, (0.4, 0.2, 0.0)))
    wv, wf, _ = make_watertight(v, f, WatertightConfig(resolution=RES))
    cfg = SdfConfig(num_volume=2000, num_near=3000)
    a = sample_sdf(wv, wf, cfg, np.random.default_rng(7))
    b = sample_sdf(wv, wf, cfg, np.random.default_rng(7), raycasting_scene(wv, wf))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert signed_distance(raycasting_scene(wv, wf), np.zeros((1, 3)))[0] < -0.4  # centre is inside
