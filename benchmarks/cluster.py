"""The dataset job on a local multi-node Ray cluster: `python -m benchmarks.cluster`

Starts a Ray cluster of separate node processes on this machine (a head node with no CPUs for
the driver, plus worker nodes of `--cpus-per-node` CPUs each; `ray.cluster_utils.Cluster`, the
same raylets `ray start` launches), then:
1. scaling: builds the same procedural dataset with 1, 2, ... `--max-nodes` worker nodes and
   prints assets/s and clips/s for each;
2. node loss: builds it again on `--max-nodes` nodes and kills one worker node (its raylet and
   every worker on it, SIGKILL) once `--kill-after` journal records exist; checks that the run
   ends, that no asset is missing or duplicated, and that the shards are byte-identical to the
   clean run's.

    python -m benchmarks.cluster [--assets 24] [--max-nodes 2] [--cpus-per-node 1] [key=value ...]

Extra arguments are dataset config overrides (defaults: 8 frames, small grids, see SIZES).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SIZES = [
    "num_frames=8", "num_surface_points=8192", "num_sharp_points=1024", "num_queries=256",
    "watertight.resolution=64", "sdf.num_volume=2048", "sdf.num_near=4096", "render.resolution=128",
    "output.rows_per_shard=4", "limits.memory_per_asset_gb=1", "output.log_to_mlflow=false",
]


def build(address: str, out: Path, assets: int, overrides: list[str]) -> tuple[float, dict]:
    from jobs import build_dataset
    from jobs import config as config_lib
    from jobs.build_dataset import DatasetJobConfig

    cfg = config_lib.load(DatasetJobConfig, None, [
        "source.kind=procedural", f"source.count={assets}", f"output.path={out}", f"ray.address={address}",
        *SIZES, *overrides])
    t0 = time.perf_counter()
    summary = build_dataset.main(cfg)
    return time.perf_counter() - t0, summary.manifest


def shard_digests(out: Path, manifest: dict) -> dict[str, str]:
    return {s["path"]: hashlib.sha256((out / s["path"]).read_bytes()).hexdigest() for s in manifest["shards"]}


def sample_ids(out: Path, manifest: dict) -> list[str]:
    return [sid for s in manifest["shards"] for sid in pq.read_table(out / s["path"]).column("sample_id").to_pylist()]


def main(argv: list[str] | None = None) -> None:
    import ray
    from ray.cluster_utils import Cluster

    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=24)
    parser.add_argument("--max-nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--kill-after", type=int, default=3, help="journal records before a node is killed")
    args, overrides = parser.parse_known_args(argv)
    # Worker processes on every node import this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))

    tmp = Path(tempfile.mkdtemp(prefix="sg4d-cluster-"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = []
    rates = []
    try:
        for n in range(1, args.max_nodes + 1):
            nodes.append(cluster.add_node(num_cpus=args.cpus_per_node, memory=4 * 2**30))
            cluster.wait_for_nodes()
            out = tmp / f"nodes{n}"
            wall, manifest = build(cluster.address, out, args.assets, overrides)
            ray.shutdown()
            rates.append((n, wall, manifest))
            print(f"{n} worker node(s) x {args.cpus_per_node} CPU: {wall:6.1f} s, {args.assets / wall:.3f} assets/s, "
                  f"{manifest['rows'] / wall:.3f} clips/s", flush=True)
        base = rates[0][1]
        for n, wall, _ in rates[1:]:
            print(f"  speed-up with {n} nodes: {base / wall:.2f}x (ideal {n:.0f}x)")
        clean_out, clean = tmp / f"nodes{args.max_nodes}", rates[-1][2]

        # Node loss: kill one worker node mid-job; the job must finish with exactly the clean result.
        out = tmp / "node-loss"
        journal = out / "_journal"
        killed = {}

        def killer():
            while not killed:
                if journal.exists() and len(list(journal.glob("[0-9]*.json"))) >= args.kill_after:
                    victim = nodes[-1]
                    killed["at"] = time.time()
                    cluster.remove_node(victim, allow_graceful=False)
                    nodes.pop()
                    print(f"killed worker node {victim.node_id[:12]} after {args.kill_after} journal records", flush=True)
                    return
                time.sleep(0.2)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        wall, manifest = build(cluster.address, out, args.assets, overrides)
        ray.shutdown()
        ids, clean_ids = sample_ids(out, manifest), sample_ids(clean_out, clean)
        same = shard_digests(out, manifest) == shard_digests(clean_out, clean)
        print(f"node loss: {'a node was killed' if killed else 'NO node was killed (job too short?)'}; "
              f"{wall:.1f} s; {len(ids)} clips, {len(set(ids))} distinct, clean run {len(clean_ids)}; "
              f"missing {sorted(set(clean_ids) - set(ids))}, duplicated {len(ids) - len(set(ids))}; "
              f"shards byte-identical to the clean run: {same}; funnel {json.dumps(manifest['funnel']['rejected_by_stage'])}")
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
