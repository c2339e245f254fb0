"""Shard schema v2 (docs/design.md "Data contract"): one row = one clip of T frames.

Every array column is an Arrow canonical fixed-shape tensor (or a fixed-size list for 1-D
data), so `pyarrow.parquet.read_table(f).column(c).combine_chunks().to_numpy_ndarray()`
gives numpy with the documented shape, without any project code.

Optional point sets (sharp-edge surface points, sharp queries) are left out of the schema
when their count is 0: Parquet cannot round-trip zero-width fixed-size lists, and an absent
column says "disabled" more plainly than an empty one. The manifest lists the columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 2  # v2 (from v1): stats gains the per-frame quality figures (pipelines.quality)


@dataclass(frozen=True)
class Dims:
    """The fixed sizes of one dataset: frames, surface / sharp points, queries, SDF points."""

    T: int
    N: int
    Ns: int
    Q: int
    Qs: int
    Nv: int
    Nn: int


def _tensor(shape: list[int], dtype=pa.float32()) -> pa.DataType:
    return pa.fixed_shape_tensor(dtype, shape)


def schema(d: Dims) -> pa.Schema:
    fields = [
        ("sample_id", pa.string()),
        ("uid", pa.string()),
        ("source", pa.string()),
        ("source_sha256", pa.string()),
        ("license", pa.string()),
        ("animation_index", pa.int32()),
        ("animation_name", pa.string()),
        ("clip_index", pa.int32()),
        ("split", pa.string()),
        ("frame_times", pa.list_(pa.float32(), d.T)),
        ("normalization", pa.struct([("center", pa.list_(pa.float64(), 3)), ("scale", pa.float64())])),
        ("surface", _tensor([d.T, d.N, 6])),
        ("sharp_surface", _tensor([d.T, d.Ns, 6]) if d.Ns else None),
        ("queries", _tensor([d.T, d.Q, 6])),
        ("query_face", pa.list_(pa.int32(), d.Q)),
        ("query_bary", _tensor([d.Q, 3])),
        ("sharp_queries", _tensor([d.T, d.Qs, 6]) if d.Qs else None),
        ("sharp_query_face", pa.list_(pa.int32(), d.Qs) if d.Qs else None),
        ("sharp_query_bary", _tensor([d.Qs, 3]) if d.Qs else None),
        ("sdf_volume", _tensor([d.T, d.Nv, 4])),
        ("sdf_near", _tensor([d.T, d.Nn, 4])),
        ("video", pa.list_(pa.binary(), d.T)),
        (
            "camera",
            pa.struct(
                [
                    ("intrinsics", _tensor([3, 3], pa.float64())),
                    ("extrinsics", _tensor([4, 4], pa.float64())),
                    ("azimuth_deg", pa.float64()),
                    ("elevation_deg", pa.float64()),
                    ("distance", pa.float64()),
                    ("resolution", pa.int32()),
                ]
            ),
        ),
        (
            "stats",
            pa.struct(
                [
                    ("motion_mean", pa.float64()),
                    ("motion_max", pa.float64()),
                    ("source_vertices", pa.int64()),
                    ("source_faces", pa.int64()),
                    ("watertight", pa.list_(pa.bool_(), d.T)),
                    ("watertight_faces", pa.list_(pa.int64(), d.T)),
                    ("sharp_edges", pa.int64()),
                    # Per frame, against the source (pipelines.quality): source surface area, the share of
                    # its outer surface the watertight mesh covers, the extent ratio, components kept and
                    # dropped by watertight.min_component_ratio, watertight area and volume.
                    ("source_area", pa.list_(pa.float32(), d.T)),
                    ("coverage", pa.list_(pa.float32(), d.T)),
                    ("extent_ratio", pa.list_(pa.float32(), d.T)),
                    ("components", pa.list_(pa.int32(), d.T)),
                    ("components_dropped", pa.list_(pa.int32(), d.T)),
                    ("watertight_area", pa.list_(pa.float32(), d.T)),
                    ("watertight_volume", pa.list_(pa.float32(), d.T)),
                ]
            ),
        ),
        ("schema_version", pa.int32()),
        ("config_digest", pa.string()),
    ]
    return pa.schema([pa.field(name, tp, nullable=False) for name, tp in fields if tp is not None])


def column_shapes(d: Dims) -> dict[str, list[int]]:
    """Documented numpy shape of each array column of one row (for the manifest and tests)."""
    shapes = {
        "frame_times": [d.T],
        "surface": [d.T, d.N, 6],
        "sharp_surface": [d.T, d.Ns, 6],
        "queries": [d.T, d.Q, 6],
        "query_face": [d.Q],
        "query_bary": [d.Q, 3],
        "sharp_queries": [d.T, d.Qs, 6],
        "sharp_query_face": [d.Qs],
        "sharp_query_bary": [d.Qs, 3],
        "sdf_volume": [d.T, d.Nv, 4],
        "sdf_near": [d.T, d.Nn, 4],
        "video": [d.T],
    }
    present = set(schema(d).names)
    return {k: v for k, v in shapes.items() if k in present}


def _column(values: list, tp: pa.DataType) -> pa.Array:
    if isinstance(tp, pa.FixedShapeTensorType):
        stacked = np.stack(values).astype(tp.value_type.to_pandas_dtype(), copy=False)
        return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(stacked))
    if isinstance(tp, pa.StructType):
        children = [_column([v[f.name] for v in values], f.type) for f in tp]
        return pa.StructArray.from_arrays(children, fields=list(tp))
    if isinstance(tp, pa.FixedSizeListType) and tp.value_type != pa.binary():
        flat = np.concatenate([np.asarray(v).reshape(-1) for v in values])
        inner = pa.array(flat.astype(tp.value_type.to_pandas_dtype()), type=tp.value_type)
        return pa.FixedSizeListArray.from_arrays(inner, tp.list_size)
    return pa.array(values, type=tp)


def to_table(rows: list[dict], d: Dims) -> pa.Table:
    """Rows (dicts of numpy / python values keyed by column) -> a table of exactly schema(d)."""
    sch = schema(d)
    if not rows:
        return pa.Table.from_batches([], schema=sch)  # sch.empty_table() fails on tensor columns
    missing = [n for n in sch.names if n not in rows[0]]
    if missing:
        raise KeyError(f"row lacks columns {missing}")
    return pa.Table.from_arrays([_column([r[f.name] for r in rows], f.type) for f in sch], schema=sch)
