"""Training ingest: a dataset's manifest and its shards as a Ray Dataset of model-ready arrays.

The shards are schema v1 (DESIGN.md); only the columns the model needs are read. Decoding
(PNG frames, fixed-shape tensors to numpy) runs as a Ray Data map on the CPUs the training
workers leave free, so it overlaps the training steps instead of stalling them.
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pipelines import shards

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

    def decoded_gb(self, split: str) -> float:
        """Size of the split once decoded (float32 points, RGBA frames), for the caching choice."""
        d, res = self.dims, self.manifest["config"]["render"]["resolution"]
        per_row = d["T"] * (4 * 6 * (d["N"] + d["Ns"] + d["Q"] + d["Qs"]) + 4 * res * res)
        return self.rows(split) * per_row / 2**30

    def shard_paths(self) -> list[str]:
        """Shard files as paths Ray Data can read (local absolute paths or URIs)."""
        return [f"{self.uri.rstrip('/')}/{s['path']}" for s in self.manifest["shards"]]


def open_dataset(path: str) -> DatasetInfo:
    """Read <path>/manifest.json; a clear error when the folder is not a finished dataset."""
    out = shards.Output(path)
    if not out.exists("manifest.json"):
        raise FileNotFoundError(f"data.path {out.uri}: no manifest.json (build it with `python -m jobs.build_dataset`)")
    return DatasetInfo(out.uri, json.loads(out.read_bytes("manifest.json")))


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


def decode_batch(table, split: str) -> dict[str, np.ndarray]:
    """The `split` rows of a pyarrow batch of shard rows -> numpy arrays: surface [b,T,N,6],
    queries [b,T,Q,6], (sharp_surface, sharp_queries), frames [b,T,H,W,4] uint8."""
    import pyarrow.compute as pc

    table = table.filter(pc.equal(table.column("split"), split))
    if table.num_rows == 0:
        return {}
    out = {}
    for name in ("surface", "queries", "sharp_surface", "sharp_queries"):
        if name in table.column_names:
            out[name] = table.column(name).combine_chunks().to_numpy_ndarray().astype(np.float32, copy=False)
    out["frames"] = np.stack([decode_video(clip) for clip in table.column("video").to_pylist()])
    return out


def ray_dataset(info: DatasetInfo, split: str, materialize_below_gb: float = 0.0):
    """The `split` rows of the dataset, decoded, as a Ray Dataset: streaming, or decoded once into
    the object store when smaller than `materialize_below_gb` (each streamed epoch re-reads and
    re-decodes, seconds of start-up that dominate when an epoch is only a few steps)."""
    import ray

    columns = ["split"] + [c for c in ARRAYS if c in info.manifest["columns"]]
    ds = ray.data.read_parquet(info.shard_paths(), columns=columns)
    ds = ds.map_batches(decode_batch, fn_kwargs={"split": split}, batch_format="pyarrow", batch_size=1)
    return ds.materialize() if info.decoded_gb(split) < materialize_below_gb else ds
