"""Accuracy of the SDF samples against an independent exact reference:
`python -m benchmarks.sdf_accuracy [--frames 3] [key=value ...]` (dataset config keys, as the
dataset job takes them; default source: the shipped samples and the glTF test models).

For frames 1, T/2 and T of every asset's first clip, the watertight mesh is built exactly as the
dataset job builds it and `pipelines.sdf.sample_sdf` draws its volume and near points. The same
points are then measured with libigl's `signed_distance` in float64 with the pseudonormal sign
(Baerentzen & Aanaes: exact on a closed, consistently oriented mesh), a different method from
ours (open3d's float32 closest point and a ray-parity vote). Prints, per point set, the largest,
99th-percentile and mean absolute distance error in voxels of the watertight grid, and the count
of sign disagreements with the largest distance at which one occurred. Needs `pip install libigl` (a benchmark tool, not a dependency of the jobs).
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipelines import bake, gltf_io, normalize, process, sdf, sources
from pipelines.config import DatasetConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCES = (ROOT / "pipelines" / "samples", ROOT / "tests" / "data" / "gltf")


def frames_of(ref: sources.AssetRef, cfg: DatasetConfig, picks: list[int]):
    """(t, vertices, faces) of the watertight frames `picks` of the asset's first clip."""
    data, read_external = sources.fetch(ref, cfg.source, cfg.limits)
    gltf = gltf_io.load_gltf(data, read_external, cfg.limits)
    plan = process.plan_clips(bake.list_animations(gltf), cfg.num_frames, cfg.clips)[0]
    baked = bake.bake(gltf, plan.animation_index, plan.times, cfg.bake)
    center, scale = normalize.clip_transform(baked.vertices, cfg.normalize)
    for t, (v, f, _) in enumerate(process.watertight_frames(baked, center, scale, cfg.watertight)):
        if t in picks:
            yield t, v, f
        if t >= max(picks):
            return


def main(argv: list[str]) -> None:
    import igl

    from jobs import config as config_lib

    n_frames = 3
    if argv[:1] == ["--frames"]:
        n_frames, argv = int(argv[1]), argv[2:]
    cfg = config_lib.cli(DatasetConfig, argv, __doc__.splitlines()[0])
    cfg.source.min_faces = 0
    folders = [Path(cfg.source.path)] if cfg.source.path else list(DEFAULT_SOURCES)
    paths = [p for d in folders for p in (sorted(d.glob("*.glb")) if d.is_dir() else [d])]
    picks = sorted({round(i * (cfg.num_frames - 1) / max(n_frames - 1, 1)) for i in range(n_frames)})
    h = 2.0 / cfg.watertight.resolution
    names = ["volume"] + [f"near sigma={s:g}" for s in cfg.sdf.near_sigmas]
    err: dict[str, list] = defaultdict(list)
    sign_bad: dict[str, list] = defaultdict(list)  # |exact distance| (voxels) of each sign disagreement
    for path in paths:
        cfg.source.path = str(path)
        refs, _ = sources.list_assets(cfg.source)
        for ref in refs:
            for t, v, f in frames_of(ref, cfg, picks):
                vol, near = sdf.sample_sdf(v, f, cfg.sdf, np.random.default_rng(t))
                exact, *_ = igl.signed_distance(np.concatenate([vol, near])[:, :3].astype(np.float64), v, f,
                                                sign_type=igl.SIGNED_DISTANCE_TYPE_PSEUDONORMAL)
                ours = np.concatenate([vol, near])[:, 3].astype(np.float64)
                bounds = np.cumsum([0, len(vol), *sdf.near_counts(cfg.sdf)])
                for name, a, b in zip(names, bounds[:-1], bounds[1:]):
                    err[name].append(np.abs(np.abs(ours[a:b]) - np.abs(exact[a:b])) / h)
                    wrong = np.sign(ours[a:b]) != np.sign(exact[a:b])
                    sign_bad[name].extend((np.abs(exact[a:b][wrong]) / h).tolist())
                print(f"  {ref.uid:<20} frame {t:2d}: {len(f):8d} faces", flush=True)
    print(f"\nSDF samples vs libigl (float64, pseudonormal sign), voxels of h = {h:.5f}:")
    print(f"  {'points':<18} {'count':>8} {'max |err|':>10} {'p99':>10} {'mean':>10} {'sign errors':>12} {'at |d| <=':>10}")
    for name in names:
        e = np.concatenate(err[name])
        print(f"  {name:<18} {len(e):8d} {e.max():10.2e} {np.percentile(e, 99):10.2e} {e.mean():10.2e} "
              f"{len(sign_bad[name]):12d} {max(sign_bad[name], default=0.0):10.1e}")


if __name__ == "__main__":
    main(sys.argv[1:])
