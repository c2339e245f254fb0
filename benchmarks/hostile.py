"""The dataset job on the shipped samples + the hostile corpus: wall time, outcome, peak memory.

    python -m benchmarks.hostile [--out DIR] [--keep] [--num-cpus N] [key=value ...]

Writes the four samples and `pipelines.hostile`'s corpus (in `hostile/`) into a temporary source
folder, runs the real job in this process (`jobs.build_dataset.main`, MLflow off) with the small
config of tests/test_hostile.py plus the limits the corpus is sized for, and prints:
- the wall time of the build, the rows kept and the rejects by stage/reason, and every hostile
  case whose reject differs from the one `pipelines.hostile` expects (or is missing);
- the peak resident memory of the workers: per asset from the journal (`peak_rss_mb`, recorded by
  the per-asset process of `pipelines.isolate`), with the asset that had the largest; and, from
  sampling every 0.2 s with psutil, the largest Ray worker (`ray::...`) and asset process
  (`python -m pipelines.isolate`) seen, so the number exists even where the journal has none.
Extra key=value arguments override the dataset config (e.g. watertight.resolution=64).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from jobs import build_dataset
from jobs import config as config_lib
from pipelines import analytic, hostile
from jobs.build_dataset import DatasetJobConfig

SMALL = hostile.JOB_OVERRIDES
LIMITS = {**hostile.CORPUS_LIMITS, "timeout_s": hostile.JOB_TIMEOUT_S}


class RssSampler(threading.Thread):
    """Largest resident memory seen per process kind: Ray workers and asset processes."""

    def __init__(self, interval_s: float = 0.2):
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak: dict[str, tuple[int, int, str]] = {}  # kind -> (rss bytes, pid, name)
        self._halt = threading.Event()

    @staticmethod
    def kind(p: psutil.Process) -> str | None:
        name = p.info.get("name") or ""
        cmdline = p.info.get("cmdline") or []
        if name.startswith("ray::") or (cmdline and cmdline[0].startswith("ray::")):
            return "ray worker"
        if "pipelines.isolate" in cmdline:
            return "asset process"
        return None

    def run(self) -> None:
        while not self._halt.is_set():
            for p in psutil.process_iter(["name", "cmdline"]):
                try:
                    kind = self.kind(p)
                    if kind is None:
                        continue
                    rss = p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                if rss > self.peak.get(kind, (0,))[0]:
                    label = " ".join((p.info.get("cmdline") or [p.info.get("name") or "?"])[:3])
                    self.peak[kind] = (rss, p.pid, label)
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def journal_peaks(out: Path) -> dict[str, float]:
    """uid -> peak_rss_mb over the journal records that carry it."""
    peaks: dict[str, float] = {}
    for path in sorted((out / "_journal").glob("*.json")):
        for uid, mb in json.loads(path.read_text()).get("peak_rss_mb", {}).items():
            peaks[uid] = max(peaks.get(uid, 0.0), float(mb or 0.0))
    return peaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--num-cpus", type=int, default=0, help="ray.num_cpus (default 0: every core)")
    args, extra = parser.parse_known_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="hostile-bench-"))
    if work.exists() and any(work.iterdir()):
        parser.error(f"{work} is not empty")
    src, out = work / "src", work / "ds"
    try:
        analytic.write_samples(src)
        t0 = time.time()
        corpus = hostile.write_corpus(src / "hostile", LIMITS, max_faces=hostile.BAD_MAX_FACES)
        corpus_s = time.time() - t0
        size = sum(p.stat().st_size for p in (src / "hostile").rglob("*") if p.is_file() and not p.is_symlink())
        cfg = config_lib.load(DatasetJobConfig, None, [
            f"source.path={src}", f"output.path={out}", "output.log_to_mlflow=false", f"ray.num_cpus={args.num_cpus}",
            *SMALL, *hostile.job_overrides(LIMITS), *extra,
        ])
        sampler = RssSampler()
        sampler.start()
        t0 = time.time()
        try:
            summary = build_dataset.main(cfg)
        finally:
            wall = time.time() - t0
            sampler.stop()

        rejects = pq.read_table(out / "rejects.parquet").to_pylist()
        by_uid: dict[str, list[tuple[str, str]]] = {}
        for r in rejects:
            by_uid.setdefault(r["uid"], []).append((r["stage"], r["reason"]))
        wrong = {case: by_uid.get(hostile.uid_of(rel, "hostile"), [])
                 for case, (rel, expected) in corpus.items() if by_uid.get(hostile.uid_of(rel, "hostile")) != [expected]}
        print()
        print(f"corpus: {len(corpus)} hostile files, {size / 2**20:.2f} MiB, written in {corpus_s:.2f} s "
              f"(+ {len(analytic.SAMPLES)} samples)")
        print(f"build wall time: {wall:.1f} s (ray.num_cpus={cfg.ray.num_cpus or 'all'}, {psutil.cpu_count()} cores)")
        print(f"rows: {summary.manifest['rows']}, rejects: {len(rejects)}, "
              f"internal_error: {sum(r['reason'] == 'internal_error' for r in rejects)}")
        for (stage, reason), n in sorted(Counter((r["stage"], r["reason"]) for r in rejects).items()):
            print(f"  {stage}/{reason}: {n}")
        print(f"hostile cases with another outcome than expected: {len(wrong)}")
        for case, got in wrong.items():
            print(f"  {case}: expected {corpus[case][1]}, got {got}")
        peaks = journal_peaks(out)
        if peaks:
            top = max(peaks, key=peaks.get)
            values = sorted(peaks.values())
            print(f"peak RSS per asset (journal, {len(peaks)} assets): max {peaks[top]:.0f} MiB ({top}), "
                  f"median {values[len(values) // 2]:.0f} MiB")
        else:
            print("peak RSS per asset: not in the journal (no peak_rss_mb records)")
        for kind, (rss, pid, label) in sorted(sampler.peak.items()):
            print(f"peak RSS sampled every {sampler.interval_s} s, {kind}: {rss / 2**20:.0f} MiB (pid {pid}, {label})")
        driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"peak RSS of this driver process: {driver:.0f} MiB")
    finally:
        if args.keep or args.out:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
