"""Silhouette rasteriser, pose registration and texture projection, checked against frames that
OpenGL renders (pipelines.render, the dataset's renderer) from a known camera."""
import io

import numpy as np
import pytest
import trimesh
from PIL import Image

from pipelines import raster, registration, texturing
from pipelines.render import RenderConfig, render_clip


def asymmetric_shape() -> tuple[np.ndarray, np.ndarray]:
    """A slab with an arm and a ball on different sides: no rotation maps its silhouette onto itself."""
    a = trimesh.creation.box((1.2, 0.6, 0.4))
    b = trimesh.creation.box((0.3, 0.8, 0.3))
    b.apply_translation((0.45, 0.5, 0.0))
    c = trimesh.creation.icosphere(2, 0.25)
    c.apply_translation((-0.5, 0.0, 0.3))
    m = trimesh.util.concatenate([a, b, c])
    return np.asarray(m.vertices), np.asarray(m.faces)


def rendered(vertices_TV3, faces, colors=None, azimuth=55.0, elevation=20.0, resolution=160, **light):
    cfg = RenderConfig(resolution=resolution, camera="random", azimuth_deg=(azimuth, azimuth),
                       elevation_deg=(elevation, elevation), textures=False, **light)
    clip = render_clip(np.asarray(vertices_TV3), faces, colors, cfg, np.random.default_rng(0))
    frames = np.stack([np.asarray(Image.open(io.BytesIO(p)).convert("RGBA")) for p in clip.png])
    return frames, clip


def to_camera(v: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    return v @ extrinsics[:3, :3].T + extrinsics[:3, 3]


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1.0, 1.0))))


def test_silhouette_and_depth_match_opengl():
    v, f = asymmetric_shape()
    frames, clip = rendered(v[None], f)
    K, E = clip.intrinsics, clip.extrinsics
    depth, face = raster.rasterize(to_camera(v, E), f, K, 160, 160)
    gl_mask = frames[0, ..., 3] > 127
    assert raster.iou(face >= 0, gl_mask) > 0.97
    # depth of the hit face at a pixel equals the ray's intersection with that face's plane
    ys, xs = np.nonzero(face >= 0)
    tri = to_camera(v, E)[f[face[ys, xs]]]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    ray = np.linalg.solve(K, np.stack([xs, ys, np.ones_like(xs)]).astype(float)).T  # z = 1
    z_plane = np.sum(n * tri[:, 0], 1) / np.sum(n * ray, 1)
    np.testing.assert_allclose(depth[ys, xs], z_plane, rtol=1e-4)


def test_registration_recovers_the_pose_of_rendered_frames():
    v, f = asymmetric_shape()
    T = 4
    verts = np.stack([v * 0.8 + [0.0, 0.04 * t, 0.0] for t in range(T)])  # a small motion
    frames, clip = rendered(verts, f)
    meshes = [(vt, f) for vt in verts]
    reg = registration.register(meshes, registration.masks_of(frames))
    true_R = clip.extrinsics[:3, :3]
    assert rotation_error_deg(reg.rotation, true_R) < 10.0
    ious = registration.silhouette_ious([(reg.apply(vt), f) for vt in verts], registration.masks_of(frames),
                                        reg.intrinsics)
    assert ious.min() > 0.9, ious
    assert reg.iou_before < 0.7 < reg.iou_first  # the canonical front view does not fit this camera
    # scale and depth trade off under a narrow lens: the ratio is what the silhouette fixes
    assert abs(reg.scale / reg.translation[2] - 1.0 / clip.distance) < 0.03 / clip.distance


def test_registration_of_an_empty_mask_keeps_the_front_pose():
    v, f = asymmetric_shape()
    reg = registration.register([(v, f)], np.zeros((1, 64, 64), bool))
    np.testing.assert_array_equal(reg.rotation, registration.FRONT)
    assert reg.scale == 1.0


def test_projected_colours_are_the_rendered_colours():
    # Unlit render (ambient 1, no lights): a pixel's colour is the albedo of the surface it shows.
    m = trimesh.creation.icosphere(4, 0.7)
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    rgba = np.where((v[:, 0] > 0)[:, None], [0.9, 0.1, 0.1, 1.0], [0.1, 0.2, 0.9, 1.0]).astype(np.float32)
    frames, clip = rendered(v[None], f, rgba, azimuth=0.0, elevation=0.0, resolution=256,
                            ambient=1.0, key_light=0.0, fill_light=0.0)
    cam = to_camera(v, clip.extrinsics)
    colors, visible = texturing.project_colors(cam, f, frames[0], clip.intrinsics)
    assert 0.3 < visible.mean() < 0.6  # about the front half of a sphere
    away = np.abs(v[:, 0]) > 0.1  # away from the colour border
    # colours of the render are sRGB-encoded albedo: compare the hue, not the exact level
    red = colors[:, 0].astype(int) - colors[:, 2]
    assert (red[visible & away & (v[:, 0] > 0)] > 100).all()
    assert (red[visible & away & (v[:, 0] < 0)] < -100).all()
    # hidden vertices take a visible neighbour's colour, so the back keeps the same split
    assert (red[~visible & away & (v[:, 0] > 0)] > 100).mean() > 0.95
    # propagation onto another tessellation of the same (registered) surface keeps the split
    m2 = trimesh.creation.uv_sphere(0.7, count=(40, 40))
    v2 = np.asarray(m2.vertices)
    c2 = texturing.propagate(cam, colors, to_camera(v2, clip.extrinsics))
    red2 = c2[:, 0].astype(int) - c2[:, 2]
    far = np.abs(v2[:, 0]) > 0.1
    assert ((red2 > 0) == (v2[:, 0] > 0))[far].mean() > 0.98


def test_sequence_colours_follow_the_first_frame():
    m = trimesh.creation.icosphere(3, 0.5)
    v, f = np.asarray(m.vertices) + [0.0, 0.0, 3.0], np.asarray(m.faces)
    K = registration.pinhole(64, 64, 40.0)
    frame = np.zeros((64, 64, 4), np.uint8)
    frame[..., :3] = (0, 255, 0)
    frame[..., 3] = 255 * raster.silhouette(v, f, K, 64, 64)
    seq = texturing.sequence_colors([(v, f), (v + [0.01, 0, 0], f), (np.zeros((0, 3)), np.zeros((0, 3), int)),
                                     (v, f)], frame, K)
    assert [len(c) for c in seq] == [len(v), len(v), 0, len(v)]
    for c in (seq[0], seq[1], seq[3]):
        assert (c[:, 1] == 255).all() and (c[:, 0] == 0).all()


@pytest.mark.parametrize("bad", ["behind", "edge_on"])
def test_rasteriser_skips_faces_it_cannot_draw(bad):
    K = registration.pinhole(32, 32, 40.0)
    if bad == "behind":
        v = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, -1.0], [0.0, 1.0, -1.0]])
    else:
        v = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, 4.0]])  # zero screen area
    depth, face = raster.rasterize(v, np.array([[0, 1, 2]]), K, 32, 32)
    assert (face == -1).all() and np.isinf(depth).all()
