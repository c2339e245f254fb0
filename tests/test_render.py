"""Headless rendering: the images agree with the camera the clip reports, and are reproducible."""
import hashlib
import io
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.spatial import ConvexHull, Delaunay

from pipelines import render, surface
from pipelines.render import RenderConfig

CUBE = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])


def _rgba(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    assert img.mode == "RGBA"
    return np.asarray(img)


def _project(points: np.ndarray, clip: render.RenderedClip) -> np.ndarray:
    h = np.c_[points, np.ones(len(points))] @ (clip.intrinsics @ clip.extrinsics[:3]).T
    assert (h[:, 2] > 0).all()  # in front of the camera (OpenCV: +z forward)
    return h[:, :2] / h[:, 2:]


@pytest.fixture(scope="module")
def box_clip():
    """An off-centre, unequal box that grows over 3 frames: asymmetric, so a wrong rotation shows."""
    box = trimesh.creation.box(extents=(0.8, 1.2, 0.6))
    v = np.asarray(box.vertices) + [0.15, -0.1, 0.05]
    frames = np.stack([v, v * 0.7 + [0.1, 0.0, 0.0], v * 1.2])
    return frames, np.asarray(box.faces, dtype=np.int64)


def test_front_silhouette_matches_the_projection(box_clip):
    frames, faces = box_clip
    clip = render.render_clip(frames, faces, None, RenderConfig(resolution=96), np.random.default_rng(0))
    assert len(clip.png) == 3
    for verts, png in zip(frames, clip.png):
        alpha = _rgba(png)[..., 3]
        assert alpha.shape == (96, 96)
        ys, xs = np.nonzero(alpha)
        uv = _project(verts, clip)
        # The box's silhouette is the hull of its projected corners (pixel centres at integers).
        assert abs(xs.min() - uv[:, 0].min()) <= 1.5 and abs(xs.max() - uv[:, 0].max()) <= 1.5
        assert abs(ys.min() - uv[:, 1].min()) <= 1.5 and abs(ys.max() - uv[:, 1].max()) <= 1.5
        assert alpha[0].max() == 0 and alpha[:, 0].max() == 0  # transparent background around it
    # Front camera: the origin lands on the image centre, world +X right and +Y up in the image.
    c, right, up = _project(np.array([[0.0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]]), clip)
    np.testing.assert_allclose(c, [47.5, 47.5], atol=1e-9)
    assert right[0] > c[0] and abs(right[1] - c[1]) < 1e-9
    assert up[1] < c[1] and abs(up[0] - c[0]) < 1e-9
    assert (clip.azimuth_deg, clip.elevation_deg) == (0.0, 0.0)


def _distance_to_outline(points: np.ndarray, hull_pts: np.ndarray) -> np.ndarray:
    """Distance from each point to the outline of the convex hull of hull_pts."""
    ring = hull_pts[ConvexHull(hull_pts).vertices]
    a, b = ring, np.roll(ring, -1, axis=0)
    ab = b - a
    t = np.clip(np.einsum("pej,ej->pe", points[:, None] - a, ab) / (ab**2).sum(1), 0, 1)
    return np.linalg.norm(points[:, None] - (a + t[..., None] * ab), axis=2).min(axis=1)


@pytest.mark.parametrize("seed", [1, 2, 3, 6])
def test_random_view_mask_matches_the_projected_hull(box_clip, seed):
    frames, faces = box_clip
    res = 96
    clip = render.render_clip(frames[2:], faces, None, RenderConfig(resolution=res, camera="random"),
                              np.random.default_rng(seed))
    alpha = _rgba(clip.png[0])[..., 3]
    uv = _project(frames[2], clip)  # a convex body: its silhouette is the hull of its projected corners
    v, u = np.mgrid[0:res, 0:res]
    centres = np.c_[u.ravel(), v.ravel()].astype(float)
    inside = Delaunay(uv).find_simplex(centres) >= 0
    drawn = alpha.ravel() >= 128  # at least half covered
    assert (inside & drawn).sum() / (inside | drawn).sum() > 0.95
    # Every disagreement is an edge pixel: its centre lies within 0.75 px of the projected outline.
    assert _distance_to_outline(centres[inside != drawn], uv).max() <= 0.75


def test_extrinsics_are_a_rigid_opencv_camera_looking_at_the_origin():
    cfg = RenderConfig(resolution=64, camera="random", elevation_deg=(-60.0, 60.0))
    verts = CUBE[None] * 0.5
    faces = np.asarray(trimesh.creation.box().faces)
    for seed in range(3):
        clip = render.render_clip(verts, faces, None, cfg, np.random.default_rng(seed))
        rot, t = clip.extrinsics[:3, :3], clip.extrinsics[:3, 3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        np.testing.assert_array_equal(clip.extrinsics[3], [0, 0, 0, 1])
        centre = -rot.T @ t
        assert np.linalg.norm(centre) == pytest.approx(clip.distance)
        np.testing.assert_allclose(centre / clip.distance, render.view_direction(clip.azimuth_deg, clip.elevation_deg))
        np.testing.assert_allclose(t, [0, 0, clip.distance], atol=1e-12)  # origin straight ahead (+z)
        assert rot[1] @ [0.0, 1.0, 0.0] < 0  # world up points to image up (OpenCV y is down)
        assert clip.intrinsics.dtype == clip.extrinsics.dtype == np.float64


@pytest.mark.parametrize("camera", ["front", "random"])
def test_the_whole_cube_fits_every_view(camera):
    res = 64
    cfg = RenderConfig(resolution=res, camera=camera, elevation_deg=(-89.0, 89.0))
    faces = np.asarray(trimesh.creation.box().faces)
    for seed in range(20):
        clip = render.render_clip(CUBE[None], faces, None, cfg, np.random.default_rng(seed))
        off = np.abs(_project(CUBE, clip) - (res - 1) / 2).max()
        # Tight: the farthest corner reaches exactly `fill` of the half-image, so framing is
        # the same for every frame of any normalised clip (its vertices lie inside this cube).
        assert off == pytest.approx(cfg.fill * res / 2)
        if seed < 2:
            alpha = _rgba(clip.png[0])[..., 3]
            assert alpha[[0, -1]].max() == 0 and alpha[:, [0, -1]].max() == 0
            assert alpha.mean() > 0.3 * 255


def test_identical_bytes_on_repeat_and_seeded_random_camera(box_clip):
    frames, faces = box_clip
    cfg = RenderConfig(resolution=64, camera="random")
    a = render.render_clip(frames, faces, None, cfg, np.random.default_rng(5))
    render.render_clip(frames[:1], faces, None, RenderConfig(resolution=80), np.random.default_rng(5))  # resize between
    b = render.render_clip(frames, faces, None, cfg, np.random.default_rng(5))
    c = render.render_clip(frames, faces, None, cfg, np.random.default_rng(6))
    assert a.png == b.png
    np.testing.assert_array_equal(a.extrinsics, b.extrinsics)
    assert not np.allclose(a.extrinsics, c.extrinsics)
    assert a.png != c.png
    lo, hi = cfg.elevation_deg
    assert lo <= a.elevation_deg <= hi and lo <= c.elevation_deg <= hi
    # Distinct frames give distinct images (the mesh really is replaced per frame).
    assert len(set(a.png)) == 3
    # "front" draws nothing from the caller's rng.
    rng = np.random.default_rng(0)
    render.render_clip(frames[:1], faces, None, RenderConfig(resolution=32), rng)
    assert rng.uniform() == np.random.default_rng(0).uniform()


def test_identical_bytes_in_a_fresh_process(box_clip):
    frames, faces = box_clip
    clip = render.render_clip(frames, faces, None, RenderConfig(resolution=64, camera="random"), np.random.default_rng(9))
    code = (
        "import hashlib, sys, numpy as np, trimesh\n"
        "from pipelines import render\n"
        "box = trimesh.creation.box(extents=(0.8, 1.2, 0.6))\n"
        "v = np.asarray(box.vertices) + [0.15, -0.1, 0.05]\n"
        "frames = np.stack([v, v * 0.7 + [0.1, 0.0, 0.0], v * 1.2])\n"
        "c = render.render_clip(frames, np.asarray(box.faces), None,"
        " render.RenderConfig(resolution=64, camera='random'), np.random.default_rng(9))\n"
        "print(hashlib.sha256(b''.join(c.png)).hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256(b"".join(clip.png)).hexdigest()


def test_vertex_colours_reach_the_image_with_straight_alpha(box_clip):
    frames, faces = box_clip
    red = np.tile([1.0, 0.0, 0.0, 0.3], (frames.shape[1], 1))  # alpha is ignored: shapes render opaque
    clip = render.render_clip(frames[:1], faces, red, RenderConfig(resolution=64), np.random.default_rng(0))
    img = _rgba(clip.png[0]).astype(int)
    a = img[..., 3]
    assert a.max() == 255
    fg = a > 0
    assert (img[fg][:, 0] > img[fg][:, 1] + 50).all()
    # Anti-aliased edge pixels keep the surface colour (not darkened toward the black background).
    edge = (a > 20) & (a < 235)
    assert edge.sum() > 10
    assert img[edge][:, 0].mean() > 0.8 * img[a == 255][:, 0].mean()
    assert (img[a == 0][:, :3] == 0).all()


def test_smooth_normals_point_outward_on_a_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    v = np.asarray(sphere.vertices)
    n = surface.vertex_normals(v, np.asarray(sphere.faces))
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0)
    assert (np.einsum("ij,ij->i", n, v) > 0.99).all()


def test_renders_without_numpy_infty(monkeypatch, box_clip):
    # pyrender 0.1.45 uses np.infty (removed in numpy 2) in Mesh.bounds; render.py must not reach it
    # and must not patch numpy for it.
    monkeypatch.delattr(np, "infty", raising=False)
    frames, faces = box_clip
    render.render_clip(frames[:1], faces, None, RenderConfig(resolution=32), np.random.default_rng(0))
    assert not hasattr(np, "infty")


def test_inputs_outside_the_normalised_cube_are_refused(box_clip):
    frames, faces = box_clip
    with pytest.raises(ValueError, match="normalised"):
        render.render_clip(frames * 2, faces, None, RenderConfig(resolution=32), np.random.default_rng(0))


def test_missing_gl_libraries_name_the_debian_packages(monkeypatch):
    assert not render.egl_works("libEGL-does-not-exist.so.1")
    assert not render.osmesa_works("libOSMesa-does-not-exist.so.8")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setattr(render, "egl_works", lambda: False)
    monkeypatch.setattr(render, "osmesa_works", lambda: False)
    with pytest.raises(RuntimeError, match="apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri") as e:
        render.choose_platform("auto")
    assert "libosmesa6" in str(e.value)
