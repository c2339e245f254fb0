"""glTF 2.0 reading: container (.glb / .gltf), buffers and accessor decoding, in json + numpy.

Animation and geometry semantics live in `pipelines.bake`; this module only turns bytes into
the JSON document plus typed numpy arrays, following the glTF 2.0 specification:
GLB header and chunks, `data:` URIs, external buffers, byteStride/byteOffset, all component
types, `normalized` dequantisation, matrix column padding, sparse accessors, and accessors
without a bufferView (zeros).

Errors are `AssetError("read", reason, detail)`; reasons (stable):
- ``corrupt_file``: not glTF, bad JSON, bad GLB magic or chunk layout, an accessor or
  bufferView that is malformed or points outside its buffer view, an out-of-range index.
- ``truncated_file``: a GLB shorter than the length its header declares.
- ``unsupported_version``: glTF 1.x (GLB version 1 or asset.version "1.x").
- ``missing_buffer``: an external buffer that cannot be read, or a buffer shorter than a
  bufferView needs.
- ``unsupported_extension``: `extensionsRequired` names an extension that changes how geometry
  or animation is decoded and that we cannot decode (Draco, meshopt, GPU instancing, ...).
"""
from __future__ import annotations

import base64
import binascii
import json
import struct
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pipelines.errors import AssetError

GLB_MAGIC = b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942

COMPONENT_DTYPES: dict[int, np.dtype] = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
TYPE_SHAPES: dict[str, tuple[int, ...]] = {
    "SCALAR": (),
    "VEC2": (2,),
    "VEC3": (3,),
    "VEC4": (4,),
    "MAT2": (2, 2),
    "MAT3": (3, 3),
    "MAT4": (4, 4),
}
# Divisors of the spec's dequantisation (signed types are also clamped at -1).
NORMALIZE_DIVISOR = {5120: 127.0, 5121: 255.0, 5122: 32767.0, 5123: 65535.0, 5125: 4294967295.0}

# Required extensions we can honour: quantisation is plain normalized/integer accessors, which
# we decode; the rest only change appearance (materials, textures, lights) or metadata, which
# baking ignores. Anything else required (Draco, meshopt, GPU instancing, animation pointers...)
# would silently give wrong geometry, so it is rejected.
SUPPORTED_REQUIRED_EXTENSIONS = {
    "KHR_mesh_quantization",
    "KHR_texture_transform",
    "KHR_texture_basisu",
    "EXT_texture_webp",
    "EXT_texture_avif",
    "KHR_lights_punctual",
    "KHR_materials_variants",
    "KHR_xmp_json_ld",
}
SUPPORTED_REQUIRED_PREFIXES = ("KHR_materials_",)


def _err(reason: str, detail: str) -> AssetError:
    return AssetError("read", reason, detail)


@dataclass
class Gltf:
    """A parsed glTF document: the JSON plus lazily resolved buffers and decoded accessors.

    `accessor(i)` returns float64 for float and normalized accessors, int64 for integer ones;
    shape [count] for SCALAR, [count, n] for VECn, [count, n, n] for MATn (indexed [row, col],
    i.e. the column-major storage already transposed into ordinary matrix layout).
    """

    json: dict[str, Any]
    _buffer_sources: list[bytes | str | None]
    _read_external: Callable[[str], bytes] | None = None
    _buffers: dict[int, bytes] = field(default_factory=dict)
    _accessors: dict[int, np.ndarray] = field(default_factory=dict)

    def items(self, key: str) -> list[dict[str, Any]]:
        """A top-level array of the document (empty when absent)."""
        value = self.json.get(key, [])
        if not isinstance(value, list):
            raise _err("corrupt_file", f"'{key}' is not an array")
        return value

    def item(self, key: str, index: Any) -> dict[str, Any]:
        """Element `index` of a top-level array, with the index range-checked."""
        items = self.items(key)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(items):
            raise _err("corrupt_file", f"{key}[{index!r}] does not exist ({len(items)} defined)")
        item = items[index]
        if not isinstance(item, dict):
            raise _err("corrupt_file", f"{key}[{index}] is not an object")
        return item

    def buffer(self, index: int) -> bytes:
        if index in self._buffers:
            return self._buffers[index]
        self.item("buffers", index)
        if not 0 <= index < len(self._buffer_sources):
            raise _err("corrupt_file", f"buffer {index} has no source")
        source = self._buffer_sources[index]
        if source is None:
            raise _err("missing_buffer", f"buffer {index} has no uri and there is no GLB BIN chunk")
        if isinstance(source, str):
            if self._read_external is None:
                raise _err("missing_buffer", f"buffer {index} is external ({source!r}) and no reader was given")
            try:
                source = self._read_external(source)
            except (OSError, KeyError, ValueError) as e:
                raise _err("missing_buffer", f"buffer {index} ({source!r}) could not be read: {e}") from e
        self._buffers[index] = source
        return source

    def buffer_view(self, index: int) -> tuple[memoryview, int]:
        """The bytes of a bufferView and its byteStride (0 when tightly packed)."""
        bv = self.item("bufferViews", index)
        offset, length = int(bv.get("byteOffset", 0)), bv.get("byteLength")
        if not isinstance(length, int) or length < 0 or offset < 0:
            raise _err("corrupt_file", f"bufferView {index} has an invalid byteOffset/byteLength")
        buf = self.buffer(bv.get("buffer"))
        if offset + length > len(buf):
            raise _err(
                "missing_buffer",
                f"bufferView {index} needs bytes {offset}..{offset + length} of buffer {bv.get('buffer')}, "
                f"which has {len(buf)}",
            )
        return memoryview(buf)[offset : offset + length], int(bv.get("byteStride", 0))

    def accessor(self, index: int) -> np.ndarray:
        if index not in self._accessors:
            arr = self._decode_accessor(index)
            arr.flags.writeable = False  # cached and shared between callers
            self._accessors[index] = arr
        return self._accessors[index]

    def _decode_accessor(self, index: int) -> np.ndarray:
        acc = self.item("accessors", index)
        ctype, atype, count = acc.get("componentType"), acc.get("type"), acc.get("count")
        if ctype not in COMPONENT_DTYPES or atype not in TYPE_SHAPES:
            raise _err("corrupt_file", f"accessor {index}: componentType {ctype!r} / type {atype!r} unknown")
        if not isinstance(count, int) or count < 0:
            raise _err("corrupt_file", f"accessor {index}: invalid count {count!r}")
        dtype, shape = COMPONENT_DTYPES[ctype], TYPE_SHAPES[atype]
        if "bufferView" in acc:
            data, stride = self.buffer_view(acc["bufferView"])
            raw = _strided_elements(data, int(acc.get("byteOffset", 0)), stride, count, dtype, shape, index)
        else:
            raw = np.zeros((count, *shape), dtype)
        if "sparse" in acc:
            raw = self._apply_sparse(raw, acc["sparse"], dtype, shape, index)
        if len(shape) == 2:
            raw = np.swapaxes(raw, 1, 2)  # column-major storage -> [row, col]
        if acc.get("normalized", False) and ctype != 5126:
            out = raw.astype(np.float64) / NORMALIZE_DIVISOR[ctype]
            return np.maximum(out, -1.0) if dtype.kind == "i" else out
        return raw.astype(np.float64 if ctype == 5126 else np.int64)

    def _apply_sparse(self, base: np.ndarray, sparse: dict, dtype: np.dtype, shape: tuple, index: int) -> np.ndarray:
        try:
            n = int(sparse["count"])
            ind, val = sparse["indices"], sparse["values"]
            ind_dtype = COMPONENT_DTYPES[ind["componentType"]]
            ind_view, val_view = ind["bufferView"], val["bufferView"]
        except (KeyError, TypeError, ValueError) as e:
            raise _err("corrupt_file", f"accessor {index}: malformed sparse block ({e!r})") from e
        idata, _ = self.buffer_view(ind_view)
        vdata, _ = self.buffer_view(val_view)
        idx = _strided_elements(idata, int(ind.get("byteOffset", 0)), 0, n, ind_dtype, (), index).astype(np.int64)
        values = _strided_elements(vdata, int(val.get("byteOffset", 0)), 0, n, dtype, shape, index)
        if n and (idx.min() < 0 or idx.max() >= len(base)):
            raise _err("corrupt_file", f"accessor {index}: sparse index out of range")
        out = base.copy()
        out[idx] = values
        return out


def _strided_elements(
    data: memoryview, offset: int, stride: int, count: int, dtype: np.dtype, shape: tuple[int, ...], index: int
) -> np.ndarray:
    """`count` elements of `shape` starting at `offset`, `stride` bytes apart (0 = packed).

    Matrix columns are padded to 4-byte boundaries (MAT2/MAT3 of 1- or 2-byte components)."""
    size = dtype.itemsize
    if len(shape) == 2:
        rows = shape[0]
        col_bytes = -(-rows * size // 4) * 4  # columns start on 4-byte boundaries
        elem_bytes = col_bytes * shape[1]
        strides = (col_bytes, size)  # (column, row) within an element: column-major storage
    else:
        elem_bytes = size * int(np.prod(shape, dtype=np.int64))
        strides = (size,) * len(shape)
    stride = stride or elem_bytes
    if stride < elem_bytes or offset < 0:
        raise _err("corrupt_file", f"accessor {index}: byteStride {stride} smaller than element {elem_bytes}")
    if count and offset + stride * (count - 1) + elem_bytes > len(data):
        raise _err("corrupt_file", f"accessor {index}: {count} elements do not fit in its bufferView")
    if count == 0:
        return np.zeros((0, *shape), dtype)
    arr = np.ndarray((count, *shape), dtype, buffer=data, offset=offset, strides=(stride, *strides))
    return arr.copy()  # own the memory, aligned, independent of the buffer


def load_gltf(data: bytes, read_external: Callable[[str], bytes] | None = None) -> Gltf:
    """Parse a .glb or .gltf file. `read_external(path)` returns the bytes of an external
    buffer given its URL-decoded relative path (it may raise OSError/KeyError when missing)."""
    data = bytes(data)
    if data[:4] == GLB_MAGIC:
        doc, bin_chunk = _parse_glb(data)
    else:
        doc, bin_chunk = _parse_json(data), None
    if not isinstance(doc, dict) or not isinstance(doc.get("asset"), dict):
        raise _err("corrupt_file", "JSON has no 'asset' object: not a glTF document")
    version = str(doc["asset"].get("version", ""))
    if not version.startswith("2."):
        raise _err("unsupported_version", f"asset.version {version!r}; only glTF 2.x is supported")
    required = doc.get("extensionsRequired", []) or []
    unsupported = [
        e for e in required
        if e not in SUPPORTED_REQUIRED_EXTENSIONS and not str(e).startswith(SUPPORTED_REQUIRED_PREFIXES)
    ]
    if unsupported:
        raise _err("unsupported_extension", f"required extensions not supported: {unsupported}")

    sources: list[bytes | str | None] = []
    buffers = doc.get("buffers", [])
    if not isinstance(buffers, list):
        raise _err("corrupt_file", "'buffers' is not an array")
    for i, buf in enumerate(buffers):
        uri = buf.get("uri") if isinstance(buf, dict) else None
        if uri is None:
            # Only the first buffer of a GLB may refer to the BIN chunk (spec 4.4.3.3).
            sources.append(bin_chunk if i == 0 else None)
        elif not isinstance(uri, str):
            raise _err("corrupt_file", f"buffer {i} uri is not a string")
        elif uri.startswith("data:"):
            sources.append(_decode_data_uri(uri, i))
        else:
            sources.append(urllib.parse.unquote(uri))
    return Gltf(json=doc, _buffer_sources=sources, _read_external=read_external)


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _err("corrupt_file", f"neither GLB nor glTF JSON: {e}") from e


def _parse_glb(data: bytes) -> tuple[Any, bytes | None]:
    if len(data) < 12:
        raise _err("truncated_file", f"GLB of {len(data)} bytes has no complete header")
    _, version, length = struct.unpack_from("<4sII", data, 0)
    if version != 2:
        reason = "unsupported_version" if version == 1 else "corrupt_file"
        raise _err(reason, f"GLB container version {version}")
    if len(data) < length:
        raise _err("truncated_file", f"GLB header declares {length} bytes, file has {len(data)}")
    data = data[:length]  # bytes after the declared length are not part of the asset
    pos, doc, bin_chunk = 12, None, None
    while pos < length:
        if pos + 8 > length:
            raise _err("corrupt_file", f"GLB chunk header at {pos} runs past the end ({length})")
        chunk_len, chunk_type = struct.unpack_from("<II", data, pos)
        start, end = pos + 8, pos + 8 + chunk_len
        if end > length:
            raise _err("corrupt_file", f"GLB chunk at {pos} ({chunk_len} bytes) runs past the end ({length})")
        if doc is None:
            if chunk_type != CHUNK_JSON:
                raise _err("corrupt_file", "the first GLB chunk is not JSON")
            doc = _parse_json(data[start:end])
        elif chunk_type == CHUNK_BIN and bin_chunk is None:
            bin_chunk = data[start:end]
        # Other chunk types must be ignored (spec 4.4.3.1).
        pos = end  # chunkLength already includes the 4-byte alignment padding
    if doc is None:
        raise _err("corrupt_file", "GLB has no JSON chunk")
    return doc, bin_chunk


def _decode_data_uri(uri: str, index: int) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise _err("corrupt_file", f"buffer {index}: data URI without ','")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as e:
            raise _err("corrupt_file", f"buffer {index}: bad base64 ({e})") from e
    return urllib.parse.unquote_to_bytes(payload)
