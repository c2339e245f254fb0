import io

import numpy as np
import pytest
import trimesh
from PIL import Image

from pipelines import render
from pipelines.render import RenderConfig


def _alpha(png: bytes) -> np.ndarray:
    img = np.asarray(Image.open(io.BytesIO(png)))
    assert img.shape[2] == 4  # RGBA
    return img[..., 3]


def _project(points, clip):
    h = np.c_[points, np.ones(len(points))] @ (clip.intrinsics @ clip.extrinsics[:3]).T
    assert (h[:, 2] > 0).all()  # in front of the camera (OpenCV: +z forward)
    return h[:, :2] / h[:, 2:]


@pytest.fixture(scope="module")
def box_clip():
    box = trimesh.creation.box(extents=(1.0, 1.4, 0.8))
    v = np.asarray(box.vertices)
    frames = np.stack([v, v * 0.7 + [0.1, 0, 0], v * 1.2])  # the last frame is the largest
    return frames, np.asarray(box.faces, dtype=np.int64)


def test_silhouette_matches_the_projection_through_intrinsics_and_extrinsics(box_clip):
    frames, faces = box_clip
    cfg = RenderConfig(resolution=96)
    clip = render.render_clip(frames, faces, None, cfg, np.random.default_rng(0))
    assert len(clip.png) == 3
    for verts, png in zip(frames, clip.png):
        alpha = _alpha(png)
        assert alpha.shape == (96, 96)
        ys, xs = np.nonzero(alpha)
        uv = _project(verts, clip)
        # The box's silhouette is the hull of its projected corners (pixel centres at integers).
        assert abs(xs.min() - uv[:, 0].min()) <= 1.5 and abs(xs.max() - uv[:, 0].max()) <= 1.5
        assert abs(ys.min() - uv[:, 1].min()) <= 1.5 and abs(ys.max() - uv[:, 1].max()) <= 1.5
        assert (alpha[0] == 0).all() and (alpha[:, 0] == 0).all()  # transparent background, nothing cut off
    # Front camera: the origin lands on the image centre, +Y world is up in the image.
    c = _project(np.zeros((1, 3)), clip)[0]
    np.testing.assert_allclose(c, [47.5, 47.5], atol=1e-9)
    up = _project(np.array([[0.0, 0.5, 0.0]]), clip)[0]
    assert up[1] < c[1]


def test_deterministic_bytes_and_seeded_random_camera(box_clip):
    frames, faces = box_clip
    cfg = RenderConfig(resolution=64, camera="random")
    a = render.render_clip(frames, faces, None, cfg, np.random.default_rng(5))
    b = render.render_clip(frames, faces, None, cfg, np.random.default_rng(5))
    c = render.render_clip(frames, faces, None, cfg, np.random.default_rng(6))
    assert a.png == b.png
    np.testing.assert_array_equal(a.extrinsics, b.extrinsics)
    assert not np.allclose(a.extrinsics, c.extrinsics)
    lo, hi = cfg.elevation_deg
    assert lo <= a.elevation_deg <= hi
    # Every frame of every camera fits the image.
    for clip in (a, c):
        for verts in frames:
            uv = _project(verts, clip)
            assert uv.min() >= 0 and uv.max() <= 63


def test_vertex_colours_reach_the_image(box_clip):
    frames, faces = box_clip
    red = np.tile([1.0, 0.0, 0.0, 1.0], (frames.shape[1], 1))
    clip = render.render_clip(frames[:1], faces, red, RenderConfig(resolution=64), np.random.default_rng(0))
    img = np.asarray(Image.open(io.BytesIO(clip.png[0]))).astype(int)
    fg = img[..., 3] > 0
    assert (img[fg][:, 0] > img[fg][:, 1] + 50).all()
