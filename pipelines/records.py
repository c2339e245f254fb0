"""What one processed asset hands to the shard writer: its rows, its rejects, its CPU time and memory."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Reject:
    uid: str
    sample_id: str  # "" when the whole asset was rejected
    stage: str
    reason: str
    detail: str


@dataclass
class Packed:
    """An asset's kept rows, each already a finished one-row-group Parquet file (`shards.pack`).

    Encoded and compressed in the asset's own process, so the job's driver, which sees every clip
    of the run, only appends row groups (pipelines.parquet_concat); the ids say where each row
    goes without reading it."""

    sample_ids: list[str]
    splits: list[str]
    pieces: list[bytes]


@dataclass
class AssetResult:
    uid: str
    rows: list[dict] = field(default_factory=list)  # one dict per clip; or, once packed, [] and:
    packed: Packed | None = None
    rejects: list[Reject] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # per stage
    wall_s: float = 0.0  # the asset's wall time in its process (pipelines.isolate)
    peak_rss_mb: float = 0.0  # that process's peak resident memory on this asset

    @property
    def num_clips(self) -> int:
        return len(self.packed.sample_ids) if self.packed else len(self.rows)
