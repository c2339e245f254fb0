"""Can one driver core write the shards of a 128-CPU cluster? `python -m benchmarks.shard_writer`

The dataset job's driver receives every processed asset (a pickled AssetResult from the object
store, each clip already encoded as a one-row-group Parquet file (zstd) by the asset's process),
cuts the ordered rows into shards by appending those row groups (pipelines.parquet_concat),
hashes and writes them, and journals. This measures that work per clip on ONE core, on real rows: one clip of the
`bending_tube` sample is processed at the paper's sizes (16 frames, 32,768 surface points, 8,192
sharp points, 1,024 queries, 8,192 + 24,576 SDF samples, 518 px video) and replicated under
distinct sample ids. It prints the driver's clips/s and MB/s, the worker CPU-seconds that one
clip costs, and their ratio: how many worker CPUs one driver core keeps busy.

    python -m benchmarks.shard_writer [--clips 64] [--rows-per-shard 16] [--out DIR] [key=value ...]

Extra arguments are dataset config overrides for the measured clip (e.g. watertight.resolution=128).
"""
from __future__ import annotations

import argparse
import copy
import os
import pickle
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from jobs import config as config_lib
from pipelines import analytic, process, shards, sources
from pipelines.config import DatasetConfig
from pipelines.records import AssetResult


def one_real_clip(overrides: list[str]) -> tuple[AssetResult, DatasetConfig]:
    with tempfile.TemporaryDirectory() as src:
        analytic.write_samples(src)
        cfg = config_lib.load(DatasetConfig, None, [f"source.path={src}", "source.uids=[bending_tube]", *overrides])
        ref = sources.list_assets(cfg.source)[0][0]
        t0 = time.process_time()
        result = process.process_asset(ref, cfg, "benchmark")
        if not result.rows:
            raise SystemExit(f"the sample clip was rejected: {result.rejects}")
        result.cpu_s = {"total": time.process_time() - t0}
        return result, cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shard_writer", description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--rows-per-shard", type=int, default=16)
    parser.add_argument("--worker-cpu-s", type=float, default=22.5,
                        help="also rate the driver against this worker cost per clip (default: the 327,680-face asset "
                        "of README 'Limits', 22.5 CPU-s at the paper's sizes)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary one)")
    args, overrides = parser.parse_known_args(argv)

    print("processing one real clip at the configured sizes (paper sizes by default) ...", flush=True)
    clip, cfg = one_real_clip(overrides)
    # What a worker sends: one pickled AssetResult per asset (one clip each here), packed as in
    # pipelines.isolate; packing is worker time.
    payloads, pack_cpu = [], 0.0
    for i in range(args.clips):
        res = copy.copy(clip)
        row = dict(clip.rows[0], uid=f"bench{i:05d}", sample_id=f"bench{i:05d}:a0:c0")
        t0 = time.process_time()
        res.uid, res.rows, res.packed = row["uid"], [], shards.pack([row], process.dims(cfg))
        pack_cpu += time.process_time() - t0
        # As Ray Data holds it: a binary cell of an Arrow block, which iter_rows copies out.
        payloads.append(pa.array([pickle.dumps(res, protocol=5)], pa.binary()))
    worker_cpu_s = clip.cpu_s["total"] + pack_cpu / args.clips
    mb_per_clip = payloads[0].nbytes / 2**20

    with tempfile.TemporaryDirectory() as tmp:
        out_path = str(args.out or Path(tmp) / "ds")
        out = shards.Output(out_path)
        out.check_writable()
        state = shards.ResumeState.load(out, "benchmark", overwrite=True)
        sink = shards.ShardSink(out, process.dims(cfg), args.rows_per_shard, {}, "benchmark", state)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for p in payloads:
            sink.add(pickle.loads(p[0].as_py()))
        sink.close()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        written = sum(os.path.getsize(os.path.join(out_path, s["shard"]["path"])) for s in state.records if s["shard"])

    clips_per_s = args.clips / cpu
    print(f"\nclip: {mb_per_clip:.1f} MB pickled from the worker, {written / args.clips / 2**20:.1f} MB in the shard "
          f"(zstd); worker cost {worker_cpu_s:.1f} CPU-s per clip on this machine, of which encoding it to "
          f"Parquet (moved from the driver) {pack_cpu / args.clips:.3f}")
    print(f"driver, {args.clips} clips in shards of {args.rows_per_shard}: {cpu:.2f} CPU-s ({wall:.2f} s wall)")
    print(f"  {clips_per_s:.2f} clips/s per driver core, {clips_per_s * mb_per_clip:.0f} MB/s in, "
          f"{written / cpu / 2**20:.0f} MB/s written")
    print(f"  one driver core keeps up with {clips_per_s * worker_cpu_s:.0f} worker CPUs "
          f"(= driver clips/s x worker CPU-s per clip); ratio to 128 CPUs: {clips_per_s * worker_cpu_s / 128:.1f}x")
    print(f"  at {args.worker_cpu_s:g} CPU-s per clip (--worker-cpu-s): {clips_per_s * args.worker_cpu_s:.0f} worker CPUs, "
          f"{clips_per_s * args.worker_cpu_s / 128:.1f}x of 128")


if __name__ == "__main__":
    main()
