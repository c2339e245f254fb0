"""The dataset job on Ray Data: list -> (per asset: fetch..render) -> ordered shards -> manifest.

One streaming pipeline: a Ray Data `map` runs `process_asset` on each pending asset with a CPU
and memory reservation, and the driver consumes the results in input order (preserve_order),
handing them to the ShardSink. Ordered consumption is what makes shard contents identical
across runs and resumes; the price is that one slow asset briefly holds back the writes of
faster ones behind it, which the object store absorbs.
"""
from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta

from pipelines import isolate, process, shards, sources
from pipelines.records import AssetResult, Reject
from pipelines.config import DatasetConfig

log = logging.getLogger("shapegen4d.dataset")


@dataclass
class Summary:
    output: str
    manifest: dict
    wall_s: float
    cpu_s: dict[str, float]
    processed_this_run: int
    skipped_done: int
    peak_rss_mb: dict[str, float]  # uid -> peak resident memory of its asset process (runs that recorded it)

    def text(self) -> str:
        f = self.manifest["funnel"]
        lines = [
            f"dataset {self.manifest['name']} -> {self.output}",
            f"  digest {self.manifest['digest'][:16]}  schema v{self.manifest['schema_version']}  "
            f"{self.manifest['rows']} clips in {len(self.manifest['shards'])} shards  splits {self.manifest['splits']}",
            f"  assets: {f['candidates']} candidates, {f['rejected_on_metadata']} rejected on metadata, "
            f"{f['assets_kept']} kept, {f['assets_without_clips']} without a usable clip; "
            f"clips: {f['clips_kept']} kept, {f['clips_rejected']} rejected",
            f"  this run: {self.processed_this_run} assets processed, {self.skipped_done} already done, wall {self.wall_s:.1f} s",
        ]
        if f["rejected_by_stage"]:
            lines.append("  rejected by stage/reason:")
            for stage, reasons in f["rejected_by_stage"].items():
                lines.append("    " + stage + ": " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
        clips = max(f["clips_kept"] + f["clips_rejected"], 1)
        if self.cpu_s:
            lines.append("  CPU-s per stage (total | per clip):")
            order = [s for s in process.STAGES if s in self.cpu_s] + sorted(set(self.cpu_s) - set(process.STAGES))
            for s in order:
                lines.append(f"    {s:<11} {self.cpu_s[s]:9.1f} | {self.cpu_s[s] / clips:7.2f}")
        if self.peak_rss_mb:
            top = max(self.peak_rss_mb, key=self.peak_rss_mb.get)
            values = sorted(self.peak_rss_mb.values())
            lines.append(f"  peak memory of an asset process: median {values[len(values) // 2]:.0f} MiB, "
                         f"max {self.peak_rss_mb[top]:.0f} MiB ({top})")
        return "\n".join(lines)


_SUPERVISOR = None  # one per Ray worker process: it keeps its asset process between tasks
# An asset process holds ~0.55 GiB with its libraries loaded (EGL, open3d, compiled kernels)
# before it reads an asset: a lower memory limit would kill every asset.
MIN_MEMORY_GB = 1.0


def memory_limit_gb(cfg: DatasetConfig) -> float:
    """The resident-memory limit of an asset process; ValueError when it cannot hold one."""
    gb = cfg.limits.memory_gb or cfg.limits.memory_per_asset_gb
    if gb < MIN_MEMORY_GB:
        raise ValueError(f"the asset memory limit is {gb:g} GiB (limits.memory_gb, 0 = limits.memory_per_asset_gb): an "
                         f"asset process needs ~0.55 GiB before it reads anything; use at least {MIN_MEMORY_GB:g}")
    return gb


def _map_fn(cfg: DatasetConfig, config_digest: str):
    memory_gb = memory_limit_gb(cfg)
    fault_spec = isolate.faults()  # read on the driver: tests inject faults (pipelines.isolate)

    def fn(item: dict) -> dict:
        global _SUPERVISOR
        if _SUPERVISOR is None:
            _SUPERVISOR = isolate.Supervisor()
        request = (json.loads(item["ref"]), cfg, config_digest, fault_spec)
        result = _SUPERVISOR.run(item["uid"], request, cfg.limits.timeout_s, int(memory_gb * 2**30))
        # The driver is the only consumer; pickling keeps arrays exact and avoids a schema per asset.
        return {"uid": item["uid"], "result": pickle.dumps(result, protocol=5)}

    return fn


def run(cfg: DatasetConfig, config: dict, config_digest: str, start_ray: Callable[[], None],
        code: dict | None = None) -> Summary:
    """Build (or finish building) the dataset described by cfg; return its summary. `start_ray`
    starts or joins Ray (called only when there is something to process: a finished dataset needs
    none); `code` is the code version recorded in the manifest."""
    t0 = time.time()
    memory_limit_gb(cfg)  # a config error before anything is listed or written
    out = shards.Output(cfg.output.path)
    out.check_writable()
    refs, curate_rejects = sources.list_assets(cfg.source)
    state = shards.ResumeState.load(out, config_digest, cfg.output.overwrite, config)
    retry = state.worker_failed if cfg.output.retry_failed else set()
    done = state.completed - retry
    pending = [r for r in refs if r.uid not in done]
    log.info(
        "%d candidate assets, %d rejected on metadata, %d to process (%d of them worker failures retried: "
        "output.retry_failed), %d already done (%s)", len(refs) + len(curate_rejects), len(curate_rejects),
        len(pending), len(retry & {r.uid for r in pending}), len(refs) - len(pending), out.uri,
    )
    dims = process.dims(cfg)
    sink = shards.ShardSink(out, dims, cfg.output.rows_per_shard, config, config_digest, state)
    if pending:
        start_ray()
        _stream(cfg, config_digest, pending, sink)
    sink.close()
    manifest = shards.finalize(
        out, state, curate_rejects, len(refs) + len(curate_rejects), config, config_digest, dims, cfg.output.name, code
    )
    peak = {uid: mb for rec in state.records for uid, mb in rec.get("peak_rss_mb", {}).items() if mb}
    return Summary(out.uri, manifest, time.time() - t0, shards.cpu_seconds(state), len(pending),
                   len(refs) - len(pending), peak)


def _stream(cfg: DatasetConfig, config_digest: str, pending: list, sink: shards.ShardSink) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = cfg.output.progress_bars
    # One block per asset. A task whose Ray worker dies (its node lost, the worker killed) is
    # re-run at most limits.retries times (Ray Data's default is forever, which would hold every
    # asset behind it); after that its block is dropped instead of failing the dataset, and the
    # asset is recorded below as worker/worker_died. Problems of the asset itself never get here:
    # its own process (pipelines.isolate) turns them into reject rows.
    ctx.max_errored_blocks = -1
    items = [{"uid": r.uid, "ref": json.dumps(asdict(r))} for r in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
        _map_fn(cfg, config_digest),
        num_cpus=cfg.limits.cpus_per_asset,
        memory=int(cfg.limits.memory_per_asset_gb * 2**30),
        # Ray 2.60 warns that remote args like this are deprecated but names no replacement for
        # max_retries (ray_remote_args_fn is deprecated too); without it Ray Data retries forever.
        max_retries=cfg.limits.retries,
    )
    t0 = time.time()
    seen: set[str] = set()
    for i, row in enumerate(ds.iter_rows(), start=1):
        result: AssetResult = pickle.loads(row["result"])
        seen.add(result.uid)
        sink.add(result)
        _log_progress(result, i, len(pending), time.time() - t0)
    for r in pending:
        if r.uid not in seen:
            lost = AssetResult(uid=r.uid, rejects=[Reject(
                r.uid, "", "worker", "worker_died",
                f"its Ray task failed {cfg.limits.retries + 1} times (limits.retries={cfg.limits.retries}): the Ray "
                "worker process died each time (node lost, killed, or out of memory); see the Ray logs")])
            log.error("%s: no result from Ray after %d attempts: recorded as worker/worker_died", r.uid, cfg.limits.retries + 1)
            sink.add(lost)


def _log_progress(result: AssetResult, i: int, n: int, elapsed: float) -> None:
    status = f"{result.num_clips} clip(s)" + (
        f", rejected: {', '.join(f'{r.stage}/{r.reason}' for r in result.rejects)}" if result.rejects else ""
    )
    log.info("[%d/%d %3.0f%%] %s: %s | %.0f CPU-s, %.0f s, peak %.0f MiB | elapsed %s, ETA %s", i, n, 100 * i / n,
             result.uid, status, sum(result.cpu_s.values()), result.wall_s, result.peak_rss_mb, _hms(elapsed),
             _hms(elapsed / i * (n - i)))
    for r in result.rejects:
        if r.reason == "internal_error":
            log.error("internal error on %s %s:\n%s", r.uid, r.sample_id, r.detail)
        elif r.stage == "worker":
            log.warning("%s: %s/%s: %s", r.uid, r.stage, r.reason, r.detail)


def _hms(s: float) -> str:
    return str(timedelta(seconds=int(s)))
