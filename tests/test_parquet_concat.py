"""Row groups appended without decoding (pipelines.parquet_concat), checked against pyarrow itself:
the concatenation of per-row files must be the very file pyarrow writes for all rows at once."""
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import parquet_concat
from pipelines.shards import parquet_bytes


def _table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(rng.random((n, 3, 5, 2), dtype=np.float32))
    return pa.table({
        "id": [f"row{i}" for i in range(n)],
        "k": pa.array(rng.integers(-2**40, 2**40, n), pa.int64()),
        "x": tensor,
        "frames": pa.array([[b"\x89PNG" * (i + 1), b""] for i in range(n)], pa.list_(pa.binary(), 2)),
        "st": pa.array([{"a": float(i), "b": [True, False, i % 2 == 0]} for i in range(n)]),
        "maybe": pa.array([None if i % 3 else i for i in range(n)], pa.int32()),
    })


@pytest.mark.parametrize("n", [1, 2, 17])  # 17 > 15: the long form of Thrift's list header
def test_concatenated_rows_are_the_file_pyarrow_writes_for_all_of_them(n):
    table = _table(n)
    merged = parquet_concat.concat([parquet_bytes(table.slice(i, 1)) for i in range(n)])
    assert merged == parquet_bytes(table)
    f = pq.ParquetFile(io.BytesIO(merged))
    assert f.metadata.num_rows == n and f.metadata.num_row_groups == n
    assert f.read_row_group(n - 1).equals(table.slice(n - 1, 1))


def test_pieces_of_several_row_groups_and_rows_keep_their_order():
    a, b = _table(3, seed=1), _table(4, seed=2)
    merged = parquet_concat.concat([parquet_bytes(a), parquet_bytes(b)])
    assert pq.read_table(io.BytesIO(merged)).equals(pa.concat_tables([a, b]))


def test_footer_codec_rewrites_what_it_reads_byte_for_byte():
    data = parquet_bytes(_table(5))
    body, meta = parquet_concat._split(data)
    out = bytearray()
    parquet_concat._write(parquet_concat._STRUCT, meta, out)
    n = int.from_bytes(data[-8:-4], "little")
    assert bytes(out) == data[-8 - n:-8]


def test_wrong_pieces_are_refused():
    good = parquet_bytes(_table(1))
    other = parquet_bytes(_table(1).drop_columns(["maybe"]))
    with pytest.raises(parquet_concat.ParquetConcatError, match="piece 1 does not have the expected schema"):
        parquet_concat.concat([good, other])
    with pytest.raises(parquet_concat.ParquetConcatError, match="piece 0 does not have the expected schema"):
        parquet_concat.concat([good], like=other)
    with pytest.raises(parquet_concat.ParquetConcatError, match="not a Parquet file"):
        parquet_concat.concat([b"PAR1 truncated"])
    buf = io.BytesIO()
    pq.write_table(_table(2), buf, write_page_index=True)
    with pytest.raises(parquet_concat.ParquetConcatError, match="page index"):
        parquet_concat.concat([buf.getvalue()])
