"""Video to 4D with a registered model: `python -m jobs.generate --config FILE [key=value ...]`.

    python -m jobs.generate model=models:/shapegen4d@candidate video.path=frames/ output.path=out/gen
    python -m jobs.generate model=models:/shapegen4d@candidate video.dataset=out/demo-dataset video.split=val

The video is a video file (MP4/WebM/GIF/MOV/MKV), a folder of frames (PNG/JPEG/WebP, sorted by
name) or the conditioning video of a row of a build_dataset output; frames without alpha get one
by foreground masking (jobs.video_io). The meshes are registered to the video and coloured from its
first frame (`register`, `texture`). Writes <output.path>/frame_0000.obj ... (one vertex-coloured
mesh per frame), sequence.glb (one animated glTF that plays the sequence, with the input camera),
preview.mp4 (input | mesh from the input camera | turntable) and registration.json
(pipelines.export.write_sequence). Exit status: 0 done, 1 bad input, 2 bad key.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jobs import config as config_lib
from jobs import tracking, video_io
from pipelines.export import write_sequence

log = logging.getLogger("shapegen4d.generate")


@dataclass
class VideoConfig:
    path: str = ""  # a video file (mp4, webm, gif, mov, mkv) or a folder of frames, sorted by file name
    dataset: str = ""  # or: a dataset folder/URI; its row `sample_id` (or the first row of `split`)
    sample_id: str = ""
    split: str = "val"


@dataclass
class OutputConfig:
    path: str = "out/generated"
    fps: float = 8.0  # playback rate of sequence.glb and preview.mp4
    preview_size: int = 256  # pixels per panel of preview.mp4


@dataclass
class GenerateJobConfig:
    model: str = "models:/shapegen4d@candidate"  # any MLflow model URI (models:/, runs:/, a local folder)
    mlflow: tracking.MlflowConfig = field(default_factory=tracking.MlflowConfig)  # the registry's store (generate logs no run)
    video: VideoConfig = field(default_factory=VideoConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 0
    steps: int = 0  # 0 = the model's default
    mesh_resolution: int = 0  # 0 = the model's default
    register: bool = True  # pose registration to the video's object masks (pipelines.registration)
    texture: bool = True  # vertex colours projected from the first frame (pipelines.texturing)


def read_frames(cfg: VideoConfig) -> tuple[np.ndarray, str]:
    """uint8 [T,H,W,4] and a description of where they came from."""
    if bool(cfg.path) == bool(cfg.dataset):
        raise ValueError("give exactly one of video.path (a video file or a folder of frames) and video.dataset")
    if cfg.path:
        frames = video_io.read_video(cfg.path)
        return frames, f"{len(frames)} frames from {cfg.path}"
    from jobs import ingest

    info = ingest.open_dataset(cfg.dataset)
    wanted = {"sample_ids": [cfg.sample_id]} if cfg.sample_id else {"split": cfg.split}
    for shard in info.manifest["shards"]:
        videos = ingest.read_videos(info, shard["path"], limit=1, **wanted)
        if videos:
            sample_id, frames = next(iter(videos.items()))
            return frames, f"video of {sample_id} in {info.uri}"
    what = f"sample_id {cfg.sample_id!r}" if cfg.sample_id else f"a row of split {cfg.split!r}"
    raise ValueError(f"video.dataset {info.uri} has no {what}")


def main(cfg: GenerateJobConfig) -> Path:
    import mlflow

    t0 = time.time()
    frames, where = read_frames(cfg.video)
    mlflow.set_tracking_uri(tracking.tracking_uri(cfg.mlflow))
    model = mlflow.pyfunc.load_model(cfg.model)
    log.info("loaded %s; generating from %s", cfg.model, where)
    params = {"seed": cfg.seed, "steps": cfg.steps, "mesh_resolution": cfg.mesh_resolution,
              "register": cfg.register, "texture": cfg.texture}
    rows = model.predict(frames, params=params)
    paths = write_sequence(rows, frames, cfg.output.path, cfg.output.fps, cfg.output.preview_size)
    faces = [len(m["faces"]) for m in rows]
    iou = np.mean([m["silhouette_iou"] for m in rows])
    print(f"generated {len(rows)} meshes ({min(faces)}-{max(faces)} faces) from {where} in {time.time() - t0:.1f} s; "
          f"silhouette IoU with the video {iou:.3f}\n"
          f"  per-frame meshes {Path(cfg.output.path).resolve()}/frame_*.obj\n  animated sequence {paths['sequence'].resolve()}\n"
          f"  preview {paths['preview'].resolve()}", flush=True)
    return paths["sequence"]


if __name__ == "__main__":
    config_lib.run_job(main, GenerateJobConfig, __doc__)
