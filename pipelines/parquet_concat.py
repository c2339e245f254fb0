"""Append finished Parquet row groups into one file without decoding them.

The dataset job's asset processes encode and compress each clip as a one-row-group Parquet file
(the expensive part); the job's driver, which sees every clip of the run, only lays those row
groups end to end and writes one footer for them. A Parquet file is `PAR1`, the column chunks,
then the footer: a Thrift (compact protocol) `FileMetaData` listing the row groups with absolute
byte offsets into the file, its length, and `PAR1`. Concatenating the chunk bytes of several
files therefore only needs their row groups listed in one footer with every offset moved by
where the chunks now start (the same idea as parquet-mr's `ParquetFileWriter.appendRowGroups`).

The footer codec below is generic: it keeps every field it reads, known or not, and writes them
back unchanged, so a newer writer's footer fields survive; only the offsets named in OFFSETS
change. Pieces must share one schema (checked) and carry no page index or bloom filter outside
their chunks (`parquet_bytes` writes neither), which the check on offsets also rejects.
"""
from __future__ import annotations

import struct

MAGIC = b"PAR1"

# Thrift compact protocol type ids.
_STOP, _TRUE, _FALSE, _I8, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)

# parquet.thrift field ids used here.
_FMD_SCHEMA, _FMD_NUM_ROWS, _FMD_ROW_GROUPS, _FMD_KV = 2, 3, 4, 5
_RG_COLUMNS, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 3, 5, 7
_CC_FILE_OFFSET, _CC_META, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX = 2, 3, 4, 6
_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE, _CMD_BLOOM = 9, 10, 11, 14
_SIDE_STRUCTURES = (_CC_OFFSET_INDEX, _CC_COLUMN_INDEX)  # page index: written after all chunks


class ParquetConcatError(ValueError):
    pass


# ---------------------------------------------------------------- Thrift compact protocol
# A struct is a list of [field id, type, value]; a list/set is (element type, [values]); a map
# is (key type, value type, [(k, v)]); booleans inside containers keep their raw byte.


class _Reader:
    def __init__(self, buf: bytes):
        self.buf, self.pos = memoryview(buf), 0

    def byte(self) -> int:
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ParquetConcatError("corrupt footer: varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, tp: int, depth: int = 0):
        if depth > 64:
            raise ParquetConcatError("corrupt footer: nested too deep")
        if tp in (_I16, _I32, _I64):
            return self.zigzag()
        if tp in (_I8, _TRUE, _FALSE):  # _TRUE/_FALSE here: a boolean element of a container
            return self.byte()
        if tp == _DOUBLE:
            v = bytes(self.buf[self.pos:self.pos + 8])
            self.pos += 8
            return v
        if tp == _BINARY:
            n = self.varint()
            v = bytes(self.buf[self.pos:self.pos + n])
            self.pos += n
            return v
        if tp in (_LIST, _SET):
            head = self.byte()
            size, et = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return (et, [self.value(et, depth + 1) for _ in range(size)])
        if tp == _MAP:
            size = self.varint()
            if not size:
                return (0, 0, [])
            kv = self.byte()
            kt, vt = kv >> 4, kv & 0x0F
            return (kt, vt, [(self.value(kt, depth + 1), self.value(vt, depth + 1)) for _ in range(size)])
        if tp == _STRUCT:
            fields, fid = [], 0
            while True:
                head = self.byte()
                ft = head & 0x0F
                if ft == _STOP:
                    return fields
                delta = head >> 4
                fid = fid + delta if delta else self.zigzag()
                fields.append([fid, ft, ft == _TRUE if ft in (_TRUE, _FALSE) else self.value(ft, depth + 1)])
        raise ParquetConcatError(f"corrupt footer: thrift type {tp}")


def _varint(n: int, out: bytearray) -> None:
    while True:
        if n < 0x80:
            out.append(n)
            return
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def _zigzag(n: int, out: bytearray) -> None:
    _varint((n << 1) ^ (n >> 63), out)


def _write(tp: int, v, out: bytearray) -> None:
    if tp in (_I16, _I32, _I64):
        _zigzag(v, out)
    elif tp in (_I8, _TRUE, _FALSE):
        out.append(v & 0xFF)
    elif tp == _DOUBLE:
        out += v
    elif tp == _BINARY:
        _varint(len(v), out)
        out += v
    elif tp in (_LIST, _SET):
        et, items = v
        if len(items) < 15:
            out.append(len(items) << 4 | et)
        else:
            out.append(0xF0 | et)
            _varint(len(items), out)
        for item in items:
            _write(et, item, out)
    elif tp == _MAP:
        kt, vt, items = v
        _varint(len(items), out)
        if items:
            out.append(kt << 4 | vt)
            for k, val in items:
                _write(kt, k, out)
                _write(vt, val, out)
    elif tp == _STRUCT:
        last = 0
        for fid, ft, val in v:
            wire = (_TRUE if val else _FALSE) if ft in (_TRUE, _FALSE) else ft
            if 0 < fid - last <= 15:
                out.append((fid - last) << 4 | wire)
            else:
                out.append(wire)
                _zigzag(fid, out)
            if ft not in (_TRUE, _FALSE):
                _write(ft, val, out)
            last = fid
        out.append(_STOP)
    else:
        raise ParquetConcatError(f"thrift type {tp}")


def _field(struct_: list, fid: int):
    return next((f for f in struct_ if f[0] == fid), None)


def _set(struct_: list, fid: int, tp: int, value) -> None:
    f = _field(struct_, fid)
    if f is None:
        struct_.append([fid, tp, value])
        struct_.sort(key=lambda x: x[0])
    else:
        f[2] = value


# ---------------------------------------------------------------- the concatenation


def _split(data: bytes) -> tuple[memoryview, list]:
    """One Parquet file -> (its column-chunk bytes, its parsed FileMetaData)."""
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        raise ParquetConcatError("not a Parquet file (magic bytes missing)")
    n = int.from_bytes(data[-8:-4], "little")
    if n > len(data) - 12:
        raise ParquetConcatError("corrupt Parquet footer length")
    reader = _Reader(data[len(data) - 8 - n:len(data) - 8])
    meta = reader.value(_STRUCT)
    return memoryview(data)[4:len(data) - 8 - n], meta


def _schema(meta: list) -> tuple:
    """The schema elements and key-value metadata (Arrow's schema) of a FileMetaData."""
    return _field(meta, _FMD_SCHEMA), _field(meta, _FMD_KV)


def _shift_offsets(row_group: list, shift: int, body_len: int) -> None:
    def move(struct_: list, fid: int) -> None:
        f = _field(struct_, fid)
        if f is not None and f[2] is not None:
            if not 4 <= f[2] < 4 + body_len and not (fid == _CC_FILE_OFFSET and f[2] == 0):
                raise ParquetConcatError(f"offset {f[2]} points outside the column chunks (page index or bloom filter?)")
            f[2] += shift

    move(row_group, _RG_FILE_OFFSET)
    for chunk in _field(row_group, _RG_COLUMNS)[2][1]:
        if any(_field(chunk, fid) for fid in _SIDE_STRUCTURES):
            raise ParquetConcatError("pieces must be written without a page index (write_page_index=False)")
        f = _field(chunk, _CC_FILE_OFFSET)
        if f is not None and f[2]:
            move(chunk, _CC_FILE_OFFSET)
        meta = _field(chunk, _CC_META)
        if meta is None:
            raise ParquetConcatError("column chunk without metadata (encrypted file?)")
        for fid in (_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE, _CMD_BLOOM):
            move(meta[2], fid)


def concat(pieces: list[bytes], like: bytes | None = None) -> bytes:
    """Parquet files of one schema -> one Parquet file holding all their row groups, in order.

    The chunks are copied byte for byte (no decoding, no recompression); readers get the rows of
    `pieces[0]`, then `pieces[1]`, ... exactly as from the pieces themselves. `like`, a Parquet
    file (an empty one will do), names the schema every piece must have; default: piece 0's."""
    if not pieces:
        raise ParquetConcatError("nothing to concatenate")
    out = [MAGIC]
    pos = 4
    merged, row_groups, rows = None, [], 0
    expected = _schema(_split(like)[1]) if like is not None else None
    for i, data in enumerate(pieces):
        body, meta = _split(data)
        if merged is None:
            merged, expected = meta, expected or _schema(meta)
        if _schema(meta) != expected:
            raise ParquetConcatError(f"piece {i} does not have the expected schema")
        rgs = _field(meta, _FMD_ROW_GROUPS)
        for rg in rgs[2][1] if rgs else []:
            _shift_offsets(rg, pos - 4, len(body))
            if _field(rg, _RG_ORDINAL) is not None:
                _set(rg, _RG_ORDINAL, _I16, len(row_groups))
            row_groups.append(rg)
        rows += _field(meta, _FMD_NUM_ROWS)[2]
        out.append(body)
        pos += len(body)
    _set(merged, _FMD_NUM_ROWS, _I64, rows)
    _set(merged, _FMD_ROW_GROUPS, _LIST, (_STRUCT, row_groups))
    footer = bytearray()
    _write(_STRUCT, merged, footer)
    out += [footer, struct.pack("<I", len(footer)), MAGIC]
    return b"".join(out)
