"""Benchmark of the dataset stages: `python -m benchmarks.stages [--config FILE] [key=value ...]`.

Runs `process_asset` (no Ray: one process, one core) on every asset of the configured source
(default: the shipped samples at the paper's resolutions) and prints CPU-seconds per clip for
each stage, plus the FPS time for picking the queries, as ratios of the whole; per asset, its
CPU-seconds per frame and the process's peak resident memory so far (what one asset worker
needs). Not a test: numbers depend on the machine.
"""
from __future__ import annotations

import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from pipelines import process, queries, sources, surface
from pipelines.config import DatasetConfig

SAMPLES = Path(__file__).resolve().parents[1] / "pipelines" / "samples"


def fps_time(n_points: int, n_queries: int, tree_height: int, repeats: int = 5) -> float:
    """Best-of CPU-seconds to pick n_queries of n_points surface samples by FPS."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=5)
    pts = surface.sample_surface(np.asarray(m.vertices), np.asarray(m.faces), n_points, np.random.default_rng(0))[:, :3]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        queries.fps(pts, n_queries, tree_height)
        best = min(best, time.process_time() - t0)
    return best


def main(argv: list[str]) -> None:
    from jobs import config as config_lib

    cfg = config_lib.cli(DatasetConfig, argv, __doc__.splitlines()[0])
    if not cfg.source.path:
        cfg.source.path = str(SAMPLES)
    refs, _ = sources.list_assets(cfg.source)
    total: Counter = Counter()
    clips = 0
    print(f"{len(refs)} assets from {cfg.source.path}: T={cfg.num_frames} N={cfg.num_surface_points} "
          f"Q={cfg.num_queries} watertight {cfg.watertight.resolution}^3 render {cfg.render.resolution}px")
    for ref in refs:
        t0 = time.time()
        res = process.process_asset(ref, cfg, "benchmark")
        clips += len(res.rows)
        total.update(res.cpu_s)
        status = f"{len(res.rows)} clip(s)" + "".join(f", rejected {r.stage}/{r.reason}" for r in res.rejects)
        cpu = sum(res.cpu_s.values())
        frames = max(len(res.rows), 1) * cfg.num_frames
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        print(f"  {ref.uid:<20} {status:<24} {cpu:7.1f} CPU-s  {cpu / frames:5.2f}/frame  "
              f"{time.time() - t0:6.1f} s wall  peak {peak_mib:5.0f} MiB")
    clips = max(clips, 1)
    whole = sum(total.values())
    print(f"\nCPU-seconds per clip by stage ({clips} clips; share of the whole):")
    for stage in [s for s in process.STAGES if s in total]:
        print(f"  {stage:<11} {total[stage] / clips:8.2f}   {total[stage] / whole:6.1%}")
    print(f"  {'total':<11} {whole / clips:8.2f}   per frame {whole / clips / cfg.num_frames:.2f}")
    fps = fps_time(cfg.queries.num_candidates, cfg.num_queries, cfg.queries.fps_tree_height)
    print(f"\nFPS: {cfg.num_queries} of {cfg.queries.num_candidates} points in {fps * 1e3:.1f} CPU-ms "
          f"({fps / (whole / clips):.2%} of a clip)")


if __name__ == "__main__":
    main(sys.argv[1:])
