"""Preview MP4 (pipelines.sequence_video): decoded, its panels agree with the input camera and
mask, carry the vertex colours, turn the turntable, and leave empty frames white."""
from __future__ import annotations

import io
import os

import av
import numpy as np
import pytest
import trimesh
from PIL import Image

from pipelines import render  # noqa: F401  (first: it picks the headless GL platform)
from pipelines import sequence_video

pytestmark = pytest.mark.skipif(
    not (os.environ.get("PYOPENGL_PLATFORM") or render.egl_works() or render.osmesa_works()),
    reason=f"headless rendering is unavailable (neither EGL nor OSMesa initialises): {render.INSTALL_HINT}",
)

# Input frames smaller than the panel and not square, with fx != fy and an off-centre principal
# point: a wrong scaling of K, or a half-pixel slip (1-1.3 px at this scale), shows in panel 2.
H, W, SIZE = 48, 64, 128
K = np.array([[55.0, 0.0, 28.0], [0.0, 60.0, 21.0], [0.0, 0.0, 1.0]])
RADIUS = 0.5
DEPTHS = (3.0, 2.6, 2.2, 1.8)  # one per frame, on the optical axis
DIFF = 40  # a pixel is drawn when it differs from white by more than this (compression noise)


def _decode(data: bytes) -> tuple[str, float, np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])
        return stream.codec_context.name, float(stream.average_rate), frames


def _panel(video: np.ndarray, k: int, size: int) -> np.ndarray:
    return video[:, :, k * size:(k + 1) * size].astype(int)


def _drawn(panel: np.ndarray) -> np.ndarray:
    return np.abs(panel - 255).max(axis=-1) > DIFF


def _sphere(centre, colour=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    s = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    v = np.asarray(s.vertices) + centre
    colours = None if colour is None else np.tile(np.asarray(colour, np.uint8), (len(v), 1))
    return v, np.asarray(s.faces), colours


def _sphere_masks() -> np.ndarray:
    """[T,H,W] bool: an on-axis sphere of radius r at depth z images as the ellipse
    ((u-cx)/fx)^2 + ((v-cy)/fy)^2 <= r^2 / (z^2 - r^2) (its tangent cone), pixel centres at integers."""
    v, u = np.mgrid[0:H, 0:W].astype(float)
    q = ((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2
    return np.stack([q <= RADIUS**2 / (z**2 - RADIUS**2) for z in DEPTHS])


@pytest.fixture(scope="module")
def sphere_video():
    masks = _sphere_masks()
    frames = np.zeros((len(DEPTHS), H, W, 4), np.uint8)
    frames[..., :3] = (30, 90, 200)
    frames[..., 3] = masks * 255
    meshes = [_sphere([0.0, 0.0, z]) for z in DEPTHS]
    return masks, sequence_video.preview_mp4(frames, meshes, K, fps=8.0, size=SIZE)


def test_the_video_has_one_frame_of_three_panels_per_input_frame(sphere_video):
    _, data = sphere_video
    codec, fps, video = _decode(data)
    assert video.shape == (len(DEPTHS), SIZE, 3 * SIZE, 3)
    assert fps == 8.0
    assert codec == ("h264" if "libx264" in av.codecs_available else "mpeg4")


def test_the_input_camera_panel_covers_the_input_mask(sphere_video):
    masks, data = sphere_video
    video = _decode(data)[2]
    drawn = _drawn(_panel(video, 1, SIZE))
    sx, sy = SIZE / W, SIZE / H
    centre = np.array([(K[0, 2] + 0.5) * sx - 0.5, (K[1, 2] + 0.5) * sy - 0.5])  # the pixel-centre convention
    for t, mask in enumerate(masks):
        resized = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((SIZE, SIZE), Image.BILINEAR)) >= 128
        iou = (drawn[t] & resized).sum() / (drawn[t] | resized).sum()
        assert iou >= 0.9, (t, iou)
        ys, xs = np.nonzero(drawn[t])
        np.testing.assert_allclose([xs.mean(), ys.mean()], centre, atol=0.25)
    assert drawn[-1].sum() > 2 * drawn[0].sum()  # nearer is bigger: the frames really differ


def test_vertex_colours_reach_the_image():
    masks = _sphere_masks()[:2]
    frames = np.zeros((2, H, W, 4), np.uint8)
    frames[..., 3] = masks * 255
    meshes = [_sphere([0.0, 0.0, z], colour=(255, 0, 0, 255)) for z in DEPTHS[:2]]
    video = _decode(sequence_video.preview_mp4(frames, meshes, K, size=64))[2]
    for k in (1, 2):
        panel = _panel(video, k, 64)
        rgb = panel[_drawn(panel)]
        assert len(rgb) > 50
        r, g, b = rgb.mean(axis=0)
        assert r > g + 100 and r > b + 100, (k, r, g, b)


def _box_with_bump() -> tuple[np.ndarray, np.ndarray]:
    """An off-centre box with a sphere on one corner: asymmetric about every axis."""
    bump = trimesh.creation.icosphere(subdivisions=2, radius=0.25)
    bump.apply_translation([0.5, -0.3, 0.0])
    m = trimesh.util.concatenate([trimesh.creation.box(extents=(1.0, 0.6, 0.4)), bump])
    return np.asarray(m.vertices) + [0.2, 0.1, 3.0], np.asarray(m.faces)


def test_the_turntable_turns_and_the_input_panel_is_the_input_over_white():
    size, T = 64, 8
    v, f = _box_with_bump()
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.zeros((T, size, size, 4), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 4 * xx, 4 * yy, 180  # smooth: codec error stays small
    r = np.hypot(xx - 30, yy - 34)
    frames[..., 3] = np.clip((24 - r) * 64, 0, 255).astype(np.uint8)  # a disc with a soft edge
    K64 = np.array([[70.0, 0.0, 31.5], [0.0, 70.0, 31.5], [0.0, 0.0, 1.0]])
    video = _decode(sequence_video.preview_mp4(frames, [(v, f, None)] * T, K64, size=size))[2]

    a = frames[..., 3:] / 255
    expected = frames[..., :3] * a + 255 * (1 - a)
    error = np.abs(_panel(video, 0, size) - expected)
    assert error.mean() < 3.0 and np.percentile(error, 99) < 20, (error.mean(), np.percentile(error, 99))

    turntable = _panel(video, 2, size)
    drawn = _drawn(turntable)
    change = [(drawn[t] ^ drawn[t + 1]).mean() for t in range(T - 1)]
    assert min(change) > 0.01, change
    assert (drawn[0] ^ drawn[-1]).mean() > 0.01
    assert (drawn[0] ^ drawn[T // 2]).mean() > 0.05  # half a turn: the bump is on the other side
    # Framed on the bounding sphere: the object never leaves the panel (its border stays white).
    assert not drawn[:, [0, -1]].any() and not drawn[:, :, [0, -1]].any()
    # The input-camera panel of a rigid, unmoving mesh does not turn.
    fixed = _drawn(_panel(video, 1, size))
    assert (fixed[0] ^ fixed[-1]).mean() < 0.005


def test_an_empty_mesh_frame_is_white():
    size = 64
    v, f = _box_with_bump()
    frames = np.zeros((3, H, W, 4), np.uint8)
    meshes = [(v, f, None), (np.zeros((0, 3)), np.zeros((0, 3), np.int64), None), (v, f[:0], None)]
    video = _decode(sequence_video.preview_mp4(frames, meshes, K, size=size))[2]
    for k in (1, 2):
        drawn = _drawn(_panel(video, k, size))
        assert drawn[0].sum() > 100
        assert not drawn[1:].any()
    # A sequence with nothing to draw at all still makes a video.
    empty = [(np.zeros((0, 3)), np.zeros((0, 3), np.int64), None)] * 2
    assert (_decode(sequence_video.preview_mp4(frames[:2], empty, K, size=size))[2] > 255 - DIFF).all()


def test_mpeg4_when_no_h264_encoder(monkeypatch):
    monkeypatch.setattr(sequence_video, "CODECS", ("no-such-encoder", "mpeg4"))
    frames = np.zeros((3, H, W, 4), np.uint8)
    frames[..., 3] = _sphere_masks()[:3] * 255
    meshes = [_sphere([0.0, 0.0, z]) for z in DEPTHS[:3]]
    codec, _, video = _decode(sequence_video.preview_mp4(frames, meshes, K, fps=5.0, size=64))
    assert codec == "mpeg4" and video.shape == (3, 64, 192, 3)


def test_odd_sizes_and_mismatched_lengths_are_refused():
    frames = np.zeros((2, H, W, 4), np.uint8)
    mesh = _sphere([0.0, 0.0, 3.0])
    with pytest.raises(ValueError, match="even"):
        sequence_video.preview_mp4(frames, [mesh] * 2, K, size=63)
    with pytest.raises(ValueError, match="one mesh per frame"):
        sequence_video.preview_mp4(frames, [mesh], K, size=64)
