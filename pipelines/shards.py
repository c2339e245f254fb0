"""Output folder: atomic Parquet shards, a resume journal, rejects.parquet and manifest.json.

Rows arrive in a fixed order (assets sorted by uid, clips in order), so cutting them every
`rows_per_shard` rows gives the same shards on every run. After each shard the sink writes a
journal record naming the shard and the assets now complete (all their rows written, their
rejects recorded). A re-run reads the journal, skips complete assets and rows already written,
and so continues the very same row sequence: killed at any point, it ends with the shards and
manifest of an uninterrupted run. Files appear atomically (written aside, then moved).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines import parquet_concat
from pipelines.records import AssetResult, Packed, Reject
from pipelines.schema import SCHEMA_VERSION, Dims, column_shapes, to_table

log = logging.getLogger("shapegen4d.dataset")

JOURNAL = "_journal"
SHARDS = "data"
TMP_PREFIX = ".tmp-"  # files being written (see Output.write_bytes); never read as data
_RECORD = re.compile(r"^\d{6}\.json$")  # a journal record: _journal/000042.json

CONVENTIONS = {
    "coordinates": "glTF Y-up; every frame of a clip mapped by one similarity: x_norm = (x - center) * scale, "
    "into [-1, 1]^3 (margin in config.normalize)",
    "sdf": "signed distance to the frame's watertight mesh, NEGATIVE INSIDE, positive outside, normalised units",
    "surface": "xyz + unit outward normal, area-weighted samples of the frame's watertight mesh",
    "queries": "farthest-point samples of frame 1 of the source mesh, kept as (query_face, query_bary) and "
    "re-evaluated on every frame (xyz + deformed face normal)",
    "camera": "intrinsics in pixels; extrinsics world-to-camera, OpenCV axes (x right, y down, z forward)",
    "video": "T RGBA PNG images, transparent background",
}


class Output:
    """A dataset folder on any pyarrow filesystem (local path, s3://, gs://, file://)."""

    def __init__(self, path: str):
        if "://" not in path:
            path = str(Path(path).expanduser().resolve())
        self.fs, self.root = pafs.FileSystem.from_uri(path)
        self.uri = path

    def _p(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    def check_writable(self) -> None:
        """Create the folder and write a probe file; raise a clear error if that is impossible."""
        try:
            self.fs.create_dir(self.root, recursive=True)
            probe = f".write-probe-{uuid.uuid4().hex}"
            self.write_bytes(probe, b"ok")
            self.fs.delete_file(self._p(probe))
        except (OSError, pa.ArrowException) as e:
            raise PermissionError(f"output path {self.uri} is not writable: {e}") from e

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self._p(rel)).type == pafs.FileType.File

    def open_input(self, rel: str):
        """A random-access file (pyarrow NativeFile): readers take only the columns they need."""
        return self.fs.open_input_file(self._p(rel))

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self._p(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write aside, then move into place: readers never see a half-written file.

        On a local disk the data and the folder entry are fsynced around the rename, so a crash
        or power loss leaves either the old file or the whole new one; object stores publish an
        object whole when its upload completes. A failed write leaves at most a `.tmp-*` file,
        which every reader of this folder ignores and the next run removes (`remove_temp_files`).
        """
        final = self._p(rel)
        parent = final.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}-{final.rsplit('/', 1)[1]}"
        if isinstance(self.fs, pafs.LocalFileSystem):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            dir_fd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, final)

    def remove_temp_files(self, rel: str) -> list[str]:
        """Delete what interrupted writes left in folder `rel`; returns their names."""
        sel = pafs.FileSelector(self._p(rel), allow_not_found=True)
        leftovers = [i.path for i in self.fs.get_file_info(sel)
                     if i.type == pafs.FileType.File and i.base_name.startswith(TMP_PREFIX)]
        for path in leftovers:
            self.fs.delete_file(path)
        return leftovers

    def list(self, rel: str) -> list[str]:
        sel = pafs.FileSelector(self._p(rel), allow_not_found=True)
        base = self.root.rstrip("/") + "/"
        return sorted(i.path[len(base):] for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and not i.base_name.startswith(TMP_PREFIX))


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    # One row group per clip: a reader streams a clip at a time, never a whole shard. No dictionary
    # encoding: on float tensors it never pays and cost 6.5x the write time and 1.6x the size
    # (paper sizes: 0.59 -> 0.09 CPU-s and 31 -> 20 MB per clip, benchmarks/shard_writer.py).
    # No page index: a shard is concatenated from per-clip files (pack, parquet_concat).
    pq.write_table(table, buf, row_group_size=1, compression="zstd", use_dictionary=False, write_page_index=False)
    return buf.getvalue()


def pack(rows: list[dict], dims: Dims) -> Packed:
    """An asset's rows -> one finished Parquet file per row, as the shard writer appends them.

    A shard concatenated from these is byte-identical to `parquet_bytes` of its rows (one row
    group per clip either way), so where the encoding ran never shows in the dataset."""
    table = to_table(rows, dims)
    return Packed([r["sample_id"] for r in rows], [r["split"] for r in rows],
                  [parquet_bytes(table.slice(i, 1)) for i in range(len(rows))])


@dataclass
class ResumeState:
    """What earlier runs into this folder already finished, read back from the journal."""

    records: list[dict] = field(default_factory=list)

    @property
    def completed(self) -> set[str]:
        return {uid for r in self.records for uid in r["completed"]}

    @property
    def latest(self) -> dict[str, dict]:
        """uid -> the journal record that completed it last (a retried asset is completed twice)."""
        return {uid: r for r in self.records for uid in r["completed"]}

    @property
    def worker_failed(self) -> set[str]:
        """Assets whose last attempt ended as a worker failure (timeout, out of memory, died)."""
        return {rj["uid"] for uid, r in self.latest.items() for rj in r["rejects"]
                if rj["uid"] == uid and rj["stage"] == "worker"}

    @property
    def written_ids(self) -> set[str]:
        return {sid for r in self.records for sid in r["sample_ids"]}

    @property
    def num_shards(self) -> int:
        return sum(1 for r in self.records if r["shard"])

    @classmethod
    def load(cls, out: Output, config_digest: str, overwrite: bool, config: dict | None = None) -> "ResumeState":
        for folder in (JOURNAL, SHARDS, ""):
            for path in out.remove_temp_files(folder):
                log.warning("removed %s, left by an interrupted write", path)
        records = journal_records(out)
        if records and records[0]["config_digest"] != config_digest:
            if not overwrite:
                raise ValueError(
                    f"{out.uri} holds a dataset built with another config (digest {records[0]['config_digest'][:12]} "
                    f"vs {config_digest[:12]}{_differences(records[0].get('config'), config)}); "
                    "choose a new output.path or set output.overwrite=true"
                )
            for p in out.list(JOURNAL) + out.list(SHARDS):
                out.fs.delete_file(out._p(p))
            return cls()
        if [r["index"] for r in records] != list(range(len(records))):
            raise ValueError(f"{out.uri}/{JOURNAL} has gaps: {[r['index'] for r in records]}")
        return cls(records)


def journal_records(out: Output) -> list[dict]:
    """The journal's records in order (files being written, `.tmp-*`, are not records)."""
    records = [json.loads(out.read_bytes(p)) for p in out.list(JOURNAL) if _RECORD.match(p.rsplit("/", 1)[-1])]
    return sorted(records, key=lambda r: r["index"])


def _differences(old: dict | None, new: dict | None) -> str:
    """", differing keys: a.b (old -> new), ..." for the error message, when both are known."""
    if not old or not new:
        return ""

    def diff(a: dict, b: dict, prefix: str = ""):
        for k in sorted(set(a) | set(b)):
            x, y = a.get(k), b.get(k)
            if isinstance(x, dict) and isinstance(y, dict):
                yield from diff(x, y, f"{prefix}{k}.")
            elif x != y:
                yield f"{prefix}{k} ({x!r} -> {y!r})"

    return ", differing keys: " + ", ".join(list(diff(old, new))[:8])


@dataclass
class _Row:
    uid: str
    sample_id: str
    split: str
    piece: bytes  # the row alone as a Parquet file (pack)


class ShardSink:
    """Cuts the ordered row stream into shards of exactly `rows_per_shard` rows (the last may be short)."""

    # Journal reject-only assets at least this often, so a run of bad assets is not redone after a crash.
    FLUSH_COMPLETED_EVERY = 64

    def __init__(
        self, out: Output, dims: Dims, rows_per_shard: int, config: dict, config_digest: str, state: ResumeState
    ):
        self.out, self.dims, self.rows_per_shard = out, dims, rows_per_shard
        self.config, self.config_digest = config, config_digest
        self.state = state
        self.written_ids = state.written_ids
        self.empty = parquet_bytes(to_table([], dims))  # the schema every row's piece must have
        self.buffer: list[_Row] = []
        self.remaining: dict[str, int] = {}  # uid -> its rows still in the buffer
        self.open: dict[str, AssetResult] = {}
        self.completed: list[str] = []  # complete since the last journal record

    def add(self, result: AssetResult) -> None:
        """Take one asset's result, in asset order. Its rows come packed from the asset's process
        (pipelines.isolate); unpacked rows (direct callers) are packed here."""
        packed = result.packed or pack(result.rows, self.dims)
        keep = [i for i, sid in enumerate(packed.sample_ids) if sid not in self.written_ids]
        self.open[result.uid] = result
        self.remaining[result.uid] = len(keep)
        self.buffer.extend(_Row(result.uid, packed.sample_ids[i], packed.splits[i], packed.pieces[i]) for i in keep)
        if not keep:
            self._complete(result.uid)
        while len(self.buffer) >= self.rows_per_shard:
            self._write(self.buffer[: self.rows_per_shard])
            self.buffer = self.buffer[self.rows_per_shard :]
        if len(self.completed) >= self.FLUSH_COMPLETED_EVERY:
            self._journal(None, [])

    def close(self) -> None:
        if self.buffer:
            self._write(self.buffer)
            self.buffer = []
        if self.completed:
            self._journal(None, [])

    def _complete(self, uid: str) -> None:
        del self.remaining[uid]
        self.completed.append(uid)

    def _write(self, rows: list[_Row]) -> None:
        name = f"{SHARDS}/shard-{self.state.num_shards:05d}.parquet"
        data = parquet_concat.concat([r.piece for r in rows], like=self.empty)
        self.out.write_bytes(name, data)
        for r in rows:
            self.remaining[r.uid] -= 1
            if self.remaining[r.uid] == 0:
                self._complete(r.uid)
        self._journal({"path": name, "sha256": hashlib.sha256(data).hexdigest(), "splits": dict(Counter(r.split for r in rows))}, rows)

    def _journal(self, shard: dict | None, rows: list[_Row]) -> None:
        done = [self.open.pop(uid) for uid in self.completed]
        record = {
            "index": len(self.state.records),
            "config_digest": self.config_digest,
            # The first record keeps the whole config, so a refusal can say what changed.
            "config": self.config if not self.state.records else None,
            "shard": shard,
            "sample_ids": [r.sample_id for r in rows],
            "completed": list(self.completed),
            "rejects": [asdict(rj) for res in done for rj in res.rejects],
            "kept": {res.uid: res.num_clips for res in done},
            "cpu_s": {res.uid: dict(res.cpu_s) for res in done},
            "wall_s": {res.uid: round(res.wall_s, 3) for res in done},
            "peak_rss_mb": {res.uid: round(res.peak_rss_mb, 1) for res in done},
            "written_at": time.time(),
        }
        self.out.write_bytes(f"{JOURNAL}/{record['index']:06d}.json", json.dumps(record).encode())
        self.state.records.append(record)
        self.written_ids.update(record["sample_ids"])
        self.completed = []


def finalize(
    out: Output,
    state: ResumeState,
    curate_rejects: list[Reject],
    num_candidates: int,
    config: dict,
    config_digest: str,
    dims: Dims,
    name: str,
    code: dict | None = None,
) -> dict:
    """Write rejects.parquet and manifest.json from the journal; return the manifest. `code` is the
    code version that built it (jobs.runtime.code_version), recorded in the manifest."""
    records, latest = state.records, state.latest
    rejects = sorted(
        [asdict(r) for r in curate_rejects] + [rj for rec in records for rj in rec["rejects"] if latest[rj["uid"]] is rec],
        key=lambda r: (r["uid"], r["sample_id"], r["stage"]),
    )
    cols = ["uid", "sample_id", "stage", "reason", "detail"]
    rej_table = pa.table({c: pa.array([r[c] for r in rejects], type=pa.string()) for c in cols})
    out.write_bytes("rejects.parquet", parquet_bytes(rej_table))

    shards = [r["shard"] | {"rows": len(r["sample_ids"])} for r in records if r["shard"]]
    splits: Counter = Counter()
    for s in shards:
        splits.update(s["splits"])
    kept = {uid: rec["kept"][uid] for uid, rec in latest.items()}
    by_stage: dict[str, Counter] = defaultdict(Counter)
    for r in rejects:
        by_stage[r["stage"]][r["reason"]] += 1
    funnel = {
        "candidates": num_candidates,
        "rejected_on_metadata": len(curate_rejects),
        "assets_processed": len(kept),
        "assets_kept": sum(1 for n in kept.values() if n > 0),
        "assets_without_clips": sum(1 for n in kept.values() if n == 0),
        "clips_kept": sum(kept.values()),
        "clips_rejected": sum(1 for r in rejects if r["sample_id"]),
        "clips_rejected_by_quality_gate": sum(1 for r in rejects if r["stage"] == "quality"),
        "rejected_by_stage": {stage: dict(sorted(c.items())) for stage, c in sorted(by_stage.items())},
    }
    # 128 bits, so it also fits MLflow's 36-character dataset digest (the training run's lineage).
    digest = hashlib.sha256(
        json.dumps({"config": config_digest, "schema": SCHEMA_VERSION, "shards": [(s["path"], s["sha256"]) for s in shards]}).encode()
    ).hexdigest()[:32]
    manifest = {
        "name": name,
        "schema_version": SCHEMA_VERSION,
        "digest": digest,
        "config_digest": config_digest,
        "config": config,
        "code_version": code or {"git": "unknown", "dirty": False},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dims": asdict(dims),
        "columns": column_shapes(dims),
        "conventions": CONVENTIONS,
        "rows": sum(s["rows"] for s in shards),
        "splits": dict(sorted(splits.items())),
        "shards": shards,
        "rejects": {"path": "rejects.parquet", "rows": len(rejects)},
        "funnel": funnel,
    }
    out.write_bytes("manifest.json", json.dumps(manifest, indent=2).encode())
    return manifest


def cpu_seconds(state: ResumeState) -> dict[str, float]:
    """Total CPU-seconds per stage over every asset in the journal (all runs into this folder)."""
    total: Counter = Counter()
    for rec in state.records:
        for per_stage in rec["cpu_s"].values():
            total.update(per_stage)
    return dict(total)
