import numpy as np
import trimesh

from pipelines import queries, sharp, surface
from pipelines.normalize import MotionConfig, NormalizeConfig, apply, clip_transform, motion
from pipelines.queries import QueryConfig


def _animated_sphere(T=5):
    """An icosphere under a known per-frame affine motion (rotation, anisotropic scale, shift)."""
    m = trimesh.creation.icosphere(subdivisions=3)
    v0, f = np.asarray(m.vertices), np.asarray(m.faces, dtype=np.int64)
    mats, shifts = [], []
    for t in range(T):
        a = 0.3 * t
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        mats.append(rot @ np.diag([1 + 0.1 * t, 1.0, 1 - 0.05 * t]))
        shifts.append(np.array([0.1 * t, -0.05 * t, 0.0]))
    verts = np.stack([v0 @ A.T + b for A, b in zip(mats, shifts)])
    return verts, f, mats, shifts


def test_propagated_queries_follow_the_analytic_motion_and_stay_on_the_surface():
    verts, faces, mats, shifts = _animated_sphere()
    cfg = QueryConfig(num_candidates=4096)
    face_idx, bary = queries.pick(verts[0], faces, 256, cfg, np.random.default_rng(0))
    q = queries.propagate(verts, faces, face_idx, bary)
    assert q.shape == (5, 256, 6)
    rest = np.linalg.solve(mats[0], (q[0, :, :3] - shifts[0]).T).T  # frame-1 points in rest space
    for t in range(5):
        expected = rest @ mats[t].T + shifts[t]
        np.testing.assert_allclose(q[t, :, :3], expected, atol=1e-12)
        _, dist, _ = trimesh.proximity.closest_point(trimesh.Trimesh(verts[t], faces, process=False), q[t, :, :3])
        assert dist.max() < 1e-5
        # Normals: unit length and outward on a sphere-like shape.
        np.testing.assert_allclose(np.linalg.norm(q[t, :, 3:], axis=1), 1.0, atol=1e-9)
        centre = verts[t].mean(axis=0)
        assert (np.einsum("nd,nd->n", q[t, :, 3:], q[t, :, :3] - centre) > 0).all()


def test_fps_spreads_points_better_than_random_and_is_deterministic():
    verts, faces, _, _ = _animated_sphere(1)
    cfg = QueryConfig(num_candidates=8192)
    f1, b1 = queries.pick(verts[0], faces, 128, cfg, np.random.default_rng(1))
    f2, b2 = queries.pick(verts[0], faces, 128, cfg, np.random.default_rng(1))
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(b1, b2)

    def min_gap(p):
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)
        return d[~np.eye(len(p), dtype=bool)].min()

    fps_pts = surface.evaluate(verts[0], faces, f1, b1)[:, :3]
    rnd_pts = surface.sample_surface(verts[0], faces, 128, np.random.default_rng(1))[:, :3]
    assert min_gap(fps_pts) > 3 * min_gap(rnd_pts)


def test_independent_mode_picks_unrelated_points_per_frame():
    verts, faces, mats, shifts = _animated_sphere(3)
    q = queries.independent(verts, faces, 64, QueryConfig(num_candidates=2048), np.random.default_rng(0))
    rest1 = np.linalg.solve(mats[1], (q[1, :, :3] - shifts[1]).T).T
    rest0 = np.linalg.solve(mats[0], (q[0, :, :3] - shifts[0]).T).T
    assert np.linalg.norm(rest1 - rest0, axis=1).mean() > 0.05


def test_clip_normalisation_is_shared_by_all_frames():
    verts, faces, _, _ = _animated_sphere()
    verts = verts * 7 + 3
    center, scale = clip_transform(verts, NormalizeConfig(margin=0.1))
    v = apply(verts, center, scale)
    assert np.abs(v).max() <= 0.9 + 1e-12
    assert np.isclose(np.abs(v).max(), 0.9)
    # One transform: relative motion between frames is kept (per-frame normalising would not).
    assert np.ptp(v[..., 0].mean(axis=1)) > 0.05


def test_motion_statistic_separates_static_from_moving():
    verts, faces, _, _ = _animated_sphere()
    static = np.repeat(verts[:1], 5, axis=0)
    assert motion(static)[1] == 0.0
    assert motion(verts)[1] > MotionConfig().min_motion


def test_sharp_edges_of_a_cube_survive_split_vertices():
    box = trimesh.creation.box()
    v, f = np.asarray(box.vertices), np.asarray(box.faces, dtype=np.int64)
    split_v = v[f.reshape(-1)]  # every face with its own vertices, as glTF exporters do
    split_f = np.arange(len(split_v)).reshape(-1, 3)
    for verts, faces in ((v, f), (split_v, split_f)):
        ef, ek = sharp.sharp_edges(verts, faces, 30.0)
        assert len(ef) == 12
        fi, b, n = sharp.sample(verts, faces, 500, sharp.SharpConfig(), np.random.default_rng(0))
        assert n == 12
        p = surface.evaluate(verts, faces, fi, b)[:, :3]
        # On a cube edge two coordinates sit at +-0.5.
        assert ((np.isclose(np.abs(p), 0.5, atol=1e-12)).sum(axis=1) >= 2).all()


def test_smooth_mesh_falls_back_to_surface_samples():
    m = trimesh.creation.icosphere(subdivisions=3)
    fi, b, n = sharp.sample(np.asarray(m.vertices), np.asarray(m.faces, dtype=np.int64), 100, sharp.SharpConfig(), np.random.default_rng(0))
    assert n == 0 and len(fi) == 100
