"""Pose registration on held-out dataset clips, with the ground truth as the mesh:
`python -m benchmarks.registration data.path=<dataset> [split=test] [limit=0] [key=value ...]`.

For every clip of the split, the clip's ground-truth watertight meshes are rebuilt from its source
asset (pipelines.ground_truth, as jobs.evaluate does) and registered to the masks of the row's
conditioning video (pipelines.registration). Since the mesh is right, what is measured is the
registration itself: silhouette IoU of the canonical front view (no registration), after
registration, and through the camera the video was rendered with (the ceiling), the rotation
error against that camera (degrees; symmetric shapes can be registered correctly at another
angle, so read it with the IoU), and CPU seconds. Prints one line per clip and the means.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from jobs import config as config_lib
from jobs import evaluate, ingest
from pipelines import registration
from pipelines.ground_truth import GroundTruth


@dataclass
class BenchData:
    path: str = ""  # a build_dataset output
    source_path: str = ""  # where the source assets are now ("" = where the dataset found them)


@dataclass
class RegistrationBenchConfig:
    data: BenchData = field(default_factory=BenchData)
    split: str = "test"
    limit: int = 0
    registration: registration.RegistrationConfig = field(default_factory=registration.RegistrationConfig)


def main(argv: list[str]) -> None:
    cfg = config_lib.cli(RegistrationBenchConfig, argv, __doc__.splitlines()[0])
    info = ingest.open_dataset(cfg.data.path)
    clips = evaluate.list_clips(info, cfg.split, cfg.limit)
    if not clips:
        raise SystemExit(f"split {cfg.split!r} of {info.uri} has no rows")
    gt = GroundTruth(evaluate.dataset_config(info.manifest, cfg.data.source_path))
    gt.prepare([c.uid for c in clips])
    rows = []
    videos: dict[str, np.ndarray] = {}
    for clip in clips:
        if clip.sample_id not in videos:
            videos.update(ingest.read_videos(info, clip.shard, sample_ids=[c.sample_id for c in clips if c.shard == clip.shard]))
        frames = videos[clip.sample_id]
        meshes = gt.frames(clip)
        masks = registration.masks_of(frames)
        t0 = time.process_time()
        reg = registration.register(meshes, masks, cfg.registration)
        cpu = time.process_time() - t0
        front = registration.front_view(*masks.shape[1:], cfg.registration)
        R = clip.extrinsics[:3, :3]
        row = {
            "front": registration.posed_iou(meshes, masks, front.extrinsics(), front.intrinsics),
            "registered": registration.posed_iou(meshes, masks, reg.extrinsics(), reg.intrinsics),
            "true_camera": registration.posed_iou(meshes, masks, clip.extrinsics, clip.intrinsics),
            "rotation_error_deg": float(np.degrees(np.arccos(np.clip((np.trace(reg.rotation.T @ R) - 1) / 2, -1, 1)))),
            "cpu_s": cpu,
        }
        rows.append(row)
        print(f"  {clip.sample_id:<36} IoU front {row['front']:.3f}  registered {row['registered']:.3f}  "
              f"true camera {row['true_camera']:.3f}  rotation error {row['rotation_error_deg']:6.1f} deg  "
              f"{cpu:5.1f} CPU-s  ({len(meshes)} frames, {np.mean([len(f) for _, f in meshes]):.0f} faces)", flush=True)
    print(f"\n{len(rows)} clips of {cfg.split!r} in {info.uri}, means: " +
          ", ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in rows[0]) +
          f"; median rotation error {np.median([r['rotation_error_deg'] for r in rows]):.1f} deg")


if __name__ == "__main__":
    main(sys.argv[1:])
