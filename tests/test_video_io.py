"""Video in (jobs.video_io): files encoded here with PyAV/Pillow, folders, arrays, and the masking
of frames without alpha against the known shape drawn on them."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from jobs import registry, video_io
from tests.test_registry import _pack, _spec

H, W, T = 48, 64, 6


def _disc_frames() -> tuple[np.ndarray, np.ndarray]:
    """T RGB frames of a red disc moving across a white background, and the disc masks."""
    yy, xx = np.mgrid[:H, :W]
    masks = np.stack([(yy - 24) ** 2 + (xx - 16 - 6 * t) ** 2 < 12 ** 2 for t in range(T)])
    frames = np.full((T, H, W, 3), 255, np.uint8)
    frames[masks] = (200, 30, 30)
    return frames, masks


def _encode(frames: np.ndarray, fmt: str, codec: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=8)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return buf.getvalue()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("suffix,fmt,codec", [(".mp4", "mp4", "libx264"), (".webm", "webm", "libvpx-vp9")])
def test_video_files_decode_and_get_the_object_masked(tmp_path, suffix, fmt, codec):
    frames, masks = _disc_frames()
    data = _encode(frames, fmt, codec)
    (tmp_path / f"clip{suffix}").write_bytes(data)
    video = video_io.read_video(tmp_path / f"clip{suffix}")
    assert video.shape == (T, H, W, 4) and video.dtype == np.uint8
    for t in range(T):
        assert _iou(video[t, ..., 3] == 255, masks[t]) > 0.9
    assert np.abs(video[0][masks[0]][:, :3].astype(int) - (200, 30, 30)).mean() < 12  # colours survive the codec
    assert np.array_equal(video_io.read_video(data), video)  # the same from the file's bytes
    assert len(video_io.read_video(data, max_frames=2)) == 2


def test_gif_and_frame_folders(tmp_path):
    frames, masks = _disc_frames()
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(tmp_path / "clip.gif", save_all=True, append_images=imgs[1:], duration=125)
    gif = video_io.read_video(tmp_path / "clip.gif")
    assert gif.shape == (T, H, W, 4) and all(_iou(gif[t, ..., 3] == 255, masks[t]) > 0.9 for t in range(T))
    # RGBA frames keep their own alpha; RGB ones are masked.
    (tmp_path / "rgba").mkdir()
    (tmp_path / "rgb").mkdir()
    for t, f in enumerate(frames):
        rgba = np.concatenate([f, np.where(masks[t], 255, 0).astype(np.uint8)[..., None]], -1)
        Image.fromarray(rgba).save(tmp_path / "rgba" / f"{t:03d}.png")
        Image.fromarray(f).save(tmp_path / "rgb" / f"{t:03d}.png")
    assert np.array_equal(video_io.read_video(tmp_path / "rgba")[..., 3] == 255, masks)
    assert np.array_equal(video_io.read_video(tmp_path / "rgb")[..., 3] == 255, masks)
    assert np.array_equal(video_io.read_video(frames)[..., 3] == 255, masks)  # an RGB array: the same


def test_bad_inputs_say_what_is_wrong(tmp_path):
    (tmp_path / "fake.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="cannot be decoded"):
        video_io.read_video(tmp_path / "fake.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .png"):
        video_io.read_video(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a video file"):
        video_io.read_video(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="uint8"):
        video_io.read_video(np.zeros((2, 8, 8, 3), np.float32))


def test_the_model_takes_a_video_file(tmp_path):
    folder, _ = _pack(tmp_path, _spec())
    pipeline, meta = registry.load_pipeline(folder, device="cpu")
    frames, _ = _disc_frames()
    (tmp_path / "clip.mp4").write_bytes(_encode(frames, "mp4", "libx264"))
    from_file = registry.predict(pipeline, meta, str(tmp_path / "clip.mp4"), {"seed": 2})
    from_array = registry.predict(pipeline, meta, video_io.read_video(tmp_path / "clip.mp4"), {"seed": 2})
    assert len(from_file) == T and all(np.array_equal(a["vertices"], b["vertices"]) for a, b in zip(from_file, from_array))
