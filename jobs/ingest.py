"""Training ingest: a dataset's manifest and its shards as a Ray Dataset of model-ready arrays.

The shards are schema v2 (docs/design.md; v1 shards have the same columns it reads); only the
columns the model needs are read. Decoding (PNG frames, fixed-shape tensors to numpy) runs as a
Ray Data map on the CPUs the training workers leave free, so it overlaps the training steps
instead of stalling them.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pipelines import shards

log = logging.getLogger("shapegen4d.ingest")

# Array columns the model reads; sharp sets exist only when the dataset was built with them.
ARRAYS = ("surface", "queries", "sharp_surface", "sharp_queries", "video")


@dataclass
class DatasetInfo:
    uri: str
    manifest: dict

    @property
    def digest(self) -> str:
        return self.manifest["digest"]

    @property
    def dims(self) -> dict:
        return self.manifest["dims"]

    @property
    def num_latents(self) -> int:
        return self.dims["Q"] + self.dims["Qs"]

    def rows(self, split: str) -> int:
        return int(self.manifest["splits"].get(split, 0))

    def decoded_gb(self, rows: int) -> float:
        """Size of `rows` clips once decoded (float32 points, RGBA frames), for the caching choice."""
        d, res = self.dims, self.manifest["config"]["render"]["resolution"]
        per_row = d["T"] * (4 * 6 * (d["N"] + d["Ns"] + d["Q"] + d["Qs"]) + 4 * res * res)
        return rows * per_row / 2**30

    def shard_paths(self) -> list[str]:
        """Shard files as paths Ray Data can read (local absolute paths or URIs)."""
        return [f"{self.uri.rstrip('/')}/{s['path']}" for s in self.manifest["shards"]]


def open_dataset(path: str) -> DatasetInfo:
    """Read <path>/manifest.json; a clear error when the folder is not a finished dataset."""
    out = shards.Output(path)
    if not out.exists("manifest.json"):
        raise FileNotFoundError(f"data.path {out.uri}: no manifest.json (build it with `python -m jobs.build_dataset`)")
    return DatasetInfo(out.uri, json.loads(out.read_bytes("manifest.json")))


class ShardIntegrityError(ValueError):
    """A shard the job would read is missing, not listed, or not the bytes its manifest names (exit status 1)."""


HASH_CHUNK = 4 << 20  # bytes read at a time per shard being hashed: memory stays bounded whatever the shard size


def _sha256(fs, path: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with fs.open_input_stream(path) as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def verify_shards(data_path: str, manifest: dict, paths: Iterable[str] | None = None,
                  key: str = "data.verify_sha256", threads: int = 4, enabled: bool = True) -> int:
    """Check that each shard the job will read (`paths`: shard paths as the manifest lists them;
    None = every shard of the manifest) is the file the manifest names: its sha256, streamed
    through pyarrow's filesystem of `data_path` (local folder or URI), equals the manifest's.
    Jobs read the shards the manifest lists, never a folder listing, so a stray file in data/
    is never read. Raises ShardIntegrityError naming every shard that is missing, changed (both
    digests) or not listed in the manifest; `key` is the config key that skips the check, for
    the messages, and `enabled` its value (False: only logs that the shards are read unchecked).
    Returns the bytes hashed; logs the time spent."""
    import pyarrow.fs as pafs

    if not enabled:
        log.info("%s=false: the shards of %s are read unchecked", key, data_path)
        return 0

    t0 = time.time()
    out = shards.Output(data_path)
    listed = {s["path"]: s for s in manifest.get("shards", [])}
    wanted = list(listed) if paths is None else list(dict.fromkeys(paths))
    problems: list[str] = []
    full = {rel: f"{out.uri.rstrip('/')}/{rel}" for rel in wanted}
    present = []
    infos = out.fs.get_file_info([f"{out.root.rstrip('/')}/{rel}" for rel in wanted]) if wanted else []
    for rel, fi in zip(wanted, infos):
        expected = listed.get(rel, {}).get("sha256")
        if rel not in listed:
            problems.append(f"{full[rel]}: not listed in the manifest")
        elif not expected:
            problems.append(f"{full[rel]}: the manifest has no sha256 for it")
        elif fi.type != pafs.FileType.File:
            problems.append(f"{full[rel]}: missing (the manifest expects sha256 {expected})")
        else:
            present.append((rel, fi.path, expected))
    total = 0
    if present:
        with ThreadPoolExecutor(max(1, min(threads, len(present)))) as pool:
            hashed = list(pool.map(lambda p: _sha256(out.fs, p[1]), present))
        for (rel, _, expected), (actual, size) in zip(present, hashed):
            total += size
            if actual != expected:
                problems.append(f"{full[rel]}: sha256 {actual}, the manifest expects {expected}")
    if problems:
        raise ShardIntegrityError(
            f"{len(problems)} of {len(wanted)} shard(s) of dataset {out.uri} do not match its manifest.json:\n  "
            + "\n  ".join(problems) + f"\nthe shards changed after the dataset was built: rebuild it "
            f"(python -m jobs.build_dataset) or restore them; {key}=false skips this check (trusted stores only)")
    log.info("verified the sha256 of %d shard(s) of %s (%.1f MiB) in %.2f s", len(present), out.uri, total / 2**20,
             time.time() - t0)
    return total


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA"))


def decode_video(pngs: list[bytes]) -> np.ndarray:
    """One row's `video` (a PNG per frame) -> uint8 frames [T,H,W,4]."""
    return np.stack([decode_png(b) for b in pngs])


def read_shard(info: DatasetInfo, shard: str, columns: list[str] | None = None):
    """The pyarrow table of one shard (`shard`: its path in the manifest), `columns` only when given."""
    import pyarrow.parquet as pq

    out = shards.Output(info.uri)
    with out.fs.open_input_file(f"{out.root.rstrip('/')}/{shard}") as f:
        return pq.read_table(f, columns=columns)


def split_ids(info: DatasetInfo, split: str) -> dict[str, str]:
    """{sample_id: shard path} of the rows of `split`, read from the id columns only."""
    where = {}
    for shard in info.manifest["shards"]:
        if shard.get("splits", {split: 1}).get(split, 0):  # per-split counts: skip shards without the split
            t = read_shard(info, shard["path"], ["sample_id", "split"]).to_pydict()
            where.update({sid: shard["path"] for sid, s in zip(t["sample_id"], t["split"]) if s == split})
    return where


def subset_ids(info: DatasetInfo, split: str, n: int) -> list[str]:
    """The `n` sample_ids of `split` whose sha256 ranks lowest, sorted: a fixed subset that does
    not depend on shard order, mixes the families (ids name them), and grows by nesting with n."""
    have = list(split_ids(info, split))
    if n > len(have):
        raise ValueError(f"data.max_clips={n} but split {split!r} of {info.uri} has {len(have)} clip(s)")
    return sorted(sorted(have, key=lambda sid: hashlib.sha256(sid.encode()).hexdigest())[:n])


def read_videos(info: DatasetInfo, shard: str, sample_ids: Iterable[str] | None = None, split: str | None = None,
                limit: int = 0) -> dict[str, np.ndarray]:
    """sample_id -> conditioning video, uint8 frames [T,H,W,4] (decoded PNGs), of rows of one shard
    in row order: the rows whose sample_id is in `sample_ids` and/or whose split is `split` (every
    row when neither is given), the first `limit` of them when > 0 (only those are decoded).
    A requested sample_id the shard does not hold is absent from the result: callers that need
    it say so (the shard holds only some of a dataset's rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = read_shard(info, shard, ["sample_id", "split", "video"])
    if sample_ids is not None:
        t = t.filter(pc.is_in(t["sample_id"], value_set=pa.array(sorted(set(sample_ids)), pa.string())))
    if split is not None:
        t = t.filter(pc.equal(t["split"], split))
    if limit > 0:
        t = t.slice(0, limit)
    return {sid: decode_video(video) for sid, video in zip(t["sample_id"].to_pylist(), t["video"].to_pylist())}


def read_clips(info: DatasetInfo, split: str, limit: int = 0,
               columns: Iterable[str] = ("surface", "queries")) -> dict[str, dict[str, np.ndarray]]:
    """{sample_id: {column: array}} of the first `limit` sample_ids of `split` in sorted order (all
    when 0), a fixed subset for benchmarks. Arrays are float32 (surface [T,N,6], queries [T,L,6],
    ...); `frames` is the decoded conditioning video, uint8 [T,H,W,4], decoded for those rows only."""
    import pyarrow as pa
    import pyarrow.compute as pc

    where = split_ids(info, split)
    if not where:
        raise ValueError(f"{info.uri} has no {split!r} clips")
    ids = sorted(where)[:limit] if limit > 0 else sorted(where)
    stored = {c: "video" if c == "frames" else c for c in columns}
    out = {}
    for path in dict.fromkeys(where[sid] for sid in ids):
        t = read_shard(info, path, ["sample_id", *stored.values()])
        t = t.filter(pc.is_in(t["sample_id"], value_set=pa.array([sid for sid in ids if where[sid] == path], pa.string())))
        arrays = {c: np.array(t[c].combine_chunks().to_numpy_ndarray(), dtype=np.float32)  # writable, for torch
                  for c in stored.values() if c != "video"}
        for i, sid in enumerate(t["sample_id"].to_pylist()):
            out[sid] = {c: decode_video(t["video"][i].as_py()) if c == "frames" else arrays[s][i] for c, s in stored.items()}
    return {sid: out[sid] for sid in ids}


def decode_batch(table, split: str, sample_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """The `split` rows (only those in `sample_ids` when given) of a pyarrow batch of shard rows ->
    numpy arrays: surface [b,T,N,6], queries [b,T,Q,6], (sharp_surface, sharp_queries), frames
    [b,T,H,W,4] uint8."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = table.filter(pc.equal(table.column("split"), split))
    if sample_ids is not None:
        table = table.filter(pc.is_in(table.column("sample_id"), value_set=pa.array(sample_ids, pa.string())))
    if table.num_rows == 0:
        return {}
    out = {}
    for name in ("surface", "queries", "sharp_surface", "sharp_queries"):
        if name in table.column_names:
            out[name] = table.column(name).combine_chunks().to_numpy_ndarray().astype(np.float32, copy=False)
    out["frames"] = np.stack([decode_video(clip) for clip in table.column("video").to_pylist()])
    return out


def ray_dataset(info: DatasetInfo, split: str, materialize_below_gb: float = 0.0,
                sample_ids: list[str] | None = None):
    """The `split` rows of the dataset (only those in `sample_ids` when given), decoded, as a Ray
    Dataset: streaming, or decoded once into the object store when smaller than
    `materialize_below_gb` (each streamed epoch re-reads and re-decodes, seconds of start-up that
    dominate when an epoch is only a few steps)."""
    import ray

    columns = ["sample_id", "split"] + [c for c in ARRAYS if c in info.manifest["columns"]]
    ds = ray.data.read_parquet(info.shard_paths(), columns=columns)
    ds = ds.map_batches(decode_batch, fn_kwargs={"split": split, "sample_ids": sample_ids}, batch_format="pyarrow",
                        batch_size=1)
    rows = info.rows(split) if sample_ids is None else len(sample_ids)
    return ds.materialize() if info.decoded_gb(rows) < materialize_below_gb else ds
