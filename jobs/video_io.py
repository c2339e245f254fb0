"""Video in: a video file (MP4, WebM, GIF, MOV, MKV; decoded with PyAV), a folder of frames, or an array.

Everything becomes uint8 RGBA [T,H,W,4], the form the model was trained on: the conditioning
frames of the dataset are renders with a transparent background. A video without an alpha
channel (or with one that is opaque everywhere) gets one here (`foreground_alpha`): the object is what differs from the background colour,
estimated per frame from the image border. That holds for the plain backgrounds of studio shots,
product videos and renders; a cluttered background needs RGBA input (matte it first). No
background-removal network is used: none ships its weights inside a package, and a download at
load time would break offline consumers.

This module travels with the registered model (its code_paths), so a consumer can use it:

    model = mlflow.pyfunc.load_model("models:/shapegen4d@candidate")
    from jobs.video_io import read_video
    meshes = model.predict(read_video("clip.mp4"))
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".mov", ".mkv", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def read_video(source, max_frames: int = 0) -> np.ndarray:
    """uint8 RGBA [T,H,W,4] from a video file path or its bytes, a folder of frames (sorted by
    name), or an array [T,H,W,3|4]; at most `max_frames` frames (0 = all)."""
    if isinstance(source, np.ndarray):
        frames = source
    elif isinstance(source, (bytes, bytearray)):
        frames = _decode(io.BytesIO(bytes(source)), "the given bytes", max_frames)
    else:
        path = Path(source)
        if path.is_dir():
            frames = _folder(path, max_frames)
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            frames = _decode(str(path), str(path), max_frames)
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            frames = _folder_files([path], str(path))
        else:
            raise FileNotFoundError(f"{source}: not a video file ({', '.join(VIDEO_SUFFIXES)}), an image or a folder of "
                                    f"frames ({', '.join(IMAGE_SUFFIXES)})")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (3, 4) or len(frames) == 0:
        raise ValueError(f"expected uint8 frames [T,H,W,3|4], got {frames.dtype} {frames.shape}")
    if max_frames:
        frames = frames[:max_frames]
    if frames.shape[-1] == 4 and (frames[..., 3] == 255).all():
        frames = frames[..., :3]  # an alpha channel that masks nothing (GIFs decode to BGRA) says nothing
    if frames.shape[-1] == 3:
        frames = np.concatenate([frames, foreground_alpha(frames)[..., None]], axis=-1)
    return np.ascontiguousarray(frames)


def _decode(file, what: str, max_frames: int) -> np.ndarray:
    import av

    try:
        with av.open(file) as container:
            if not container.streams.video:
                raise ValueError(f"{what} has no video stream")
            frames = []
            for frame in container.decode(video=0):
                # GIF and VP8/VP9 WebM may carry alpha; keep it when the stream has it.
                frames.append(frame.to_ndarray(format="rgba" if _has_alpha(frame) else "rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as e:
        raise ValueError(f"{what} cannot be decoded as a video: {e}") from e
    if not frames:
        raise ValueError(f"{what} has no frames")
    return np.stack(frames)


def _has_alpha(frame) -> bool:
    return "a" in frame.format.name.replace("gray", "")  # yuva420p, rgba, pal8 (GIF) has none in its name


def _folder(path: Path, max_frames: int) -> np.ndarray:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} frames found")
    return _folder_files(files[:max_frames] if max_frames else files, str(path))


def _folder_files(files: list[Path], what: str) -> np.ndarray:
    from PIL import Image

    frames = []
    for f in files:
        img = Image.open(f)
        has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
        frames.append(np.asarray(img.convert("RGBA" if has_alpha else "RGB")))
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"{what}: frames differ in size or channels: {sorted({f.shape for f in frames})}")
    return np.stack(frames)


def foreground_alpha(frames_THW3: np.ndarray, tolerance: int = 24) -> np.ndarray:
    """uint8 alpha [T,H,W]: 255 where a pixel differs from its frame's background colour (the
    median of the image border) by more than `tolerance` levels in any channel, holes filled,
    specks under 0.1% of the image removed."""
    from scipy import ndimage

    out = np.empty(frames_THW3.shape[:3], np.uint8)
    for t, img in enumerate(frames_THW3.astype(np.int16)):
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        background = np.median(border, axis=0)
        fg = np.abs(img - background).max(axis=-1) > tolerance
        fg = ndimage.binary_fill_holes(ndimage.binary_opening(fg, iterations=1))
        labels, n = ndimage.label(fg)
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            fg = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.001 * fg.size))
        out[t] = np.where(fg, 255, 0)
    return out
