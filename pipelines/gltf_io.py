"""glTF 2.0 reading: container (.glb / .gltf), buffers and accessor decoding, in json + numpy.

Animation and geometry semantics live in `pipelines.bake`; this module only turns bytes into
the JSON document plus typed numpy arrays, following the glTF 2.0 specification:
GLB header and chunks, `data:` URIs, external buffers, byteStride/byteOffset, all component
types, `normalized` dequantisation, matrix column padding, sparse accessors, and accessors
without a bufferView (zeros).

Nothing the file declares is trusted. `load_gltf` checks the whole document before any buffer
is read or any array allocated, in pure JSON arithmetic (O(number of JSON objects)):
- structure: every index (buffer, bufferView, accessor, mesh, node, skin, sampler, scene) in
  range; every count, offset, length and stride a non-negative integer; each bufferView inside
  its buffer's declared byteLength; each accessor's elements (byteOffset, byteStride, count)
  inside its bufferView; sparse blocks (count <= accessor count, indices and values inside
  their views); the node hierarchy a forest (no node with two parents, no node its own child,
  no cycle); a skin's inverseBindMatrices covering its joints; the attributes the baker reads
  (POSITION VEC3, COLOR_0, JOINTS_n, WEIGHTS_n, morph target POSITION) with POSITION's count;
- sizes, against `LimitsConfig` (`pipelines.limits`; a limit of 0 means none): each buffer's
  byteLength (max_file_mb), each accessor's count, with or without a bufferView
  (max_accessor_elements), the number of nodes (max_nodes), joints summed over every skin
  (max_joints), keyframes summed over every sampler of each animation (max_keyframes; every
  animation is checked, since `bake.list_animations` reads them all), and, over the default
  scene's triangle primitives counted once per mesh instance, POSITION elements (max_vertices)
  and morph targets x POSITION elements (max_morph_values).
The face count the JSON declares for the default scene is kept in `Gltf.scene_sizes`, so the
baker can check `BakeConfig.max_faces` before decoding anything.

Errors are `AssetError("read", reason, detail)`; reasons (stable):
- ``corrupt_file``: not glTF, bad JSON (also nested too deep to parse), bad GLB magic or chunk
  layout, a GLB BIN chunk or `data:` buffer shorter than its buffer's byteLength, and any
  malformed declaration: a negative or non-integer count/offset/length/index, a byteLength or
  byteOffset above 2**53, a byteStride outside 4..252 or not a multiple of the accessor's
  component size or smaller than its element, an accessor or bufferView outside its bufferView
  or buffer, sparse.count above the accessor's count, an out-of-range index, a node hierarchy
  cycle or a node with two parents, a scene that reaches a node twice.
- ``too_large``: a declared size above a `LimitsConfig` limit; the detail names
  ``limits.<key>``.
- ``truncated_file``: a GLB shorter than the length its header declares.
- ``unsupported_version``: glTF 1.x (GLB version 1 or asset.version "1.x").
- ``missing_buffer``: an external buffer that cannot be read, or shorter than its byteLength
  (a longer one is cut to byteLength); a buffer with neither uri nor GLB BIN chunk.
- ``unsupported_extension``: `extensionsRequired` names an extension that changes how geometry
  or animation is decoded and that we cannot decode (Draco, meshopt, GPU instancing, ...).
The external reader is called as `read_external(uri, byte_length)`; an `AssetError` it raises
(e.g. ``unsafe_uri``, ``too_large``) propagates unchanged, an OSError/KeyError/ValueError
becomes ``missing_buffer``.
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
from pipelines.limits import LimitsConfig, check

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
SPARSE_INDEX_TYPES = (5121, 5123, 5125)  # spec: unsigned integers only
MAX_BYTES = 2**53  # no real byteLength/byteOffset is larger: such a number is corrupt, not big
TRIANGLE_MODES = (4, 5, 6)  # TRIANGLES, TRIANGLE_STRIP, TRIANGLE_FAN

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

ExternalReader = Callable[[str, "int | None"], bytes]  # (relative path, byteLength or None: whole file)


def _err(reason: str, detail: str) -> AssetError:
    return AssetError("read", reason, detail)


@dataclass(frozen=True)
class SceneSizes:
    """What the default scene declares, from the JSON alone (counted once per mesh instance)."""

    mesh_nodes: tuple[int, ...] = ()  # nodes with a mesh, depth-first in document order
    vertices: int = 0  # POSITION elements of triangle primitives (each accessor once per instance)
    morph_values: int = 0  # morph targets x POSITION elements of triangle primitives
    faces: int = 0  # upper bound on triangles: indices // 3 (strips/fans: indices - 2)


@dataclass
class Gltf:
    """A parsed glTF document: the JSON plus lazily resolved buffers and decoded accessors.

    `accessor(i)` returns float64 for float and normalized accessors, int64 for integer ones;
    shape [count] for SCALAR, [count, n] for VECn, [count, n, n] for MATn (indexed [row, col],
    i.e. the column-major storage already transposed into ordinary matrix layout).
    Made by `load_gltf`, which has checked the document against `limits`.
    """

    json: dict[str, Any]
    _buffer_sources: list[bytes | str | None]
    _read_external: ExternalReader | None = None
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    scene_sizes: SceneSizes = field(default_factory=SceneSizes)
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
        """The bytes of buffer `index`: exactly its declared byteLength (a longer source is cut)."""
        if index in self._buffers:
            return self._buffers[index]
        declared = _int(self.item("buffers", index), "byteLength", f"buffer {index}", None, MAX_BYTES)
        if not 0 <= index < len(self._buffer_sources):
            raise _err("corrupt_file", f"buffer {index} has no source")
        source = self._buffer_sources[index]
        if source is None:
            raise _err("missing_buffer", f"buffer {index} has no uri and there is no GLB BIN chunk")
        if isinstance(source, str):
            if self._read_external is None:
                raise _err("missing_buffer", f"buffer {index} is external ({source!r}) and no reader was given")
            try:
                data = self._read_external(source, declared)
            except AssetError:
                raise  # the reader's own verdict (unsafe_uri, too_large, ...) stands
            except (OSError, KeyError, ValueError) as e:
                raise _err("missing_buffer", f"buffer {index} ({source!r}) could not be read: {e}") from e
            if len(data) < declared:
                raise _err("missing_buffer", f"buffer {index} ({source!r}) has {len(data):,} bytes, "
                           f"its byteLength declares {declared:,}")
            source = bytes(data[:declared])
        self._buffers[index] = source
        return source

    def image(self, index: int) -> bytes:
        """The encoded bytes of image `index`: from its bufferView, a `data:` URI, or an external
        file read through the same confined reader as buffers (at most limits.max_file_mb)."""
        img = self.item("images", index)
        if "bufferView" in img:
            return bytes(self.buffer_view(img["bufferView"])[0])
        uri = img.get("uri")
        if not isinstance(uri, str):
            raise _err("corrupt_file", f"image {index} has neither a bufferView nor a uri")
        if uri.startswith("data:"):
            return _decode_data_uri(uri, index)
        if self._read_external is None:
            raise _err("missing_image", f"image {index} is external ({uri!r}) and no reader was given")
        try:
            return self._read_external(urllib.parse.unquote(uri), None)
        except AssetError:
            raise  # the reader's own verdict (unsafe_uri, too_large, ...) stands
        except (OSError, KeyError, ValueError) as e:
            raise _err("missing_image", f"image {index} ({uri!r}) could not be read: {e}") from e

    def buffer_view(self, index: int) -> tuple[memoryview, int]:
        """The bytes of a bufferView and its byteStride (0 when tightly packed)."""
        bv = self.item("bufferViews", index)
        offset = _int(bv, "byteOffset", f"bufferView {index}", 0, MAX_BYTES)
        length = _int(bv, "byteLength", f"bufferView {index}", None, MAX_BYTES)
        buf = self.buffer(bv.get("buffer"))
        if offset + length > len(buf):
            raise _err(
                "missing_buffer",
                f"bufferView {index} needs bytes {offset}..{offset + length} of buffer {bv.get('buffer')}, "
                f"which has {len(buf)}",
            )
        return memoryview(buf)[offset : offset + length], _int(bv, "byteStride", f"bufferView {index}", 0, 252)

    def accessor(self, index: int) -> np.ndarray:
        if index not in self._accessors:
            arr = self._decode_accessor(index)
            arr.flags.writeable = False  # cached and shared between callers
            self._accessors[index] = arr
        return self._accessors[index]

    def _decode_accessor(self, index: int) -> np.ndarray:
        acc = self.item("accessors", index)
        ctype, atype = acc.get("componentType"), acc.get("type")
        if ctype not in COMPONENT_DTYPES or atype not in TYPE_SHAPES:
            raise _err("corrupt_file", f"accessor {index}: componentType {ctype!r} / type {atype!r} unknown")
        count = _int(acc, "count", f"accessor {index}", None, MAX_BYTES)
        # load_gltf checked this already; kept so no path allocates an unchecked size.
        check("read", f"accessor {index} count", count, "max_accessor_elements", self.limits.max_accessor_elements)
        dtype, shape = COMPONENT_DTYPES[ctype], TYPE_SHAPES[atype]
        if "bufferView" in acc:
            data, stride = self.buffer_view(acc["bufferView"])
            offset = _int(acc, "byteOffset", f"accessor {index}", 0, MAX_BYTES)
            raw = _strided_elements(data, offset, stride, count, dtype, shape, index)
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

    def _apply_sparse(self, base: np.ndarray, sparse: Any, dtype: np.dtype, shape: tuple, index: int) -> np.ndarray:
        what = f"accessor {index} sparse"
        ind, val = _sparse_parts(sparse, len(base), what)
        n = sparse["count"]
        idata, _ = self.buffer_view(ind.get("bufferView"))
        vdata, _ = self.buffer_view(val.get("bufferView"))
        ind_dtype = COMPONENT_DTYPES[ind["componentType"]]
        idx = _strided_elements(idata, _int(ind, "byteOffset", what, 0, MAX_BYTES), 0, n, ind_dtype, (), index)
        values = _strided_elements(vdata, _int(val, "byteOffset", what, 0, MAX_BYTES), 0, n, dtype, shape, index)
        idx = idx.astype(np.int64)
        if n and (idx.min() < 0 or idx.max() >= len(base)):
            raise _err("corrupt_file", f"accessor {index}: sparse index out of range")
        out = base.copy()
        out[idx] = values
        return out


def _int(obj: dict, key: str, what: str, default: int | None, hi: int) -> int:
    """obj[key] as an integer in [0, hi] (`default` when absent; None: required), else corrupt_file."""
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        shown = "missing" if value is None else f"{value!r}"[:40]
        raise _err("corrupt_file", f"{what}: {key} {shown} is not an integer in 0..{hi:,}")
    return value


def _element_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """Bytes of one element; matrix columns of 1- or 2-byte components are padded to 4 bytes."""
    if len(shape) == 2:
        return -(-shape[0] * dtype.itemsize // 4) * 4 * shape[1]
    return dtype.itemsize * int(np.prod(shape, dtype=np.int64))


def _strided_elements(
    data: memoryview, offset: int, stride: int, count: int, dtype: np.dtype, shape: tuple[int, ...], index: int
) -> np.ndarray:
    """`count` elements of `shape` starting at `offset`, `stride` bytes apart (0 = packed).

    Matrix columns are padded to 4-byte boundaries (MAT2/MAT3 of 1- or 2-byte components)."""
    size = dtype.itemsize
    elem_bytes = _element_bytes(dtype, shape)
    if len(shape) == 2:
        col_bytes = elem_bytes // shape[1]
        strides = (col_bytes, size)  # (column, row) within an element: column-major storage
    else:
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


def _sparse_parts(sparse: Any, count: int, what: str) -> tuple[dict, dict]:
    """The (indices, values) objects of a sparse block, with their shape checked."""
    if not isinstance(sparse, dict):
        raise _err("corrupt_file", f"{what} is not an object")
    n = _int(sparse, "count", what, None, MAX_BYTES)
    if n > count:
        raise _err("corrupt_file", f"{what}: count {n:,} > the accessor's count {count:,}")
    ind, val = sparse.get("indices"), sparse.get("values")
    if not isinstance(ind, dict) or not isinstance(val, dict):
        raise _err("corrupt_file", f"{what}: indices/values missing")
    if ind.get("componentType") not in SPARSE_INDEX_TYPES:
        raise _err("corrupt_file", f"{what}: indices componentType {ind.get('componentType')!r} is not unsigned")
    return ind, val


# ---------------------------------------------------------------- document checks


class _Checker:
    """Checks a glTF document's declarations (structure and sizes) from the JSON alone."""

    def __init__(self, doc: dict[str, Any], limits: LimitsConfig):
        self.doc, self.limits = doc, limits
        self.arrays = {
            key: self._array(key)
            for key in ("buffers", "bufferViews", "accessors", "meshes", "nodes", "skins", "animations", "scenes")
        }

    def _array(self, key: str) -> list[dict[str, Any]]:
        value = self.doc.get(key, [])
        if not isinstance(value, list):
            raise _err("corrupt_file", f"'{key}' is not an array")
        if key == "nodes":  # before looking at each of them
            check("read", "nodes", len(value), "max_nodes", self.limits.max_nodes)
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise _err("corrupt_file", f"{key}[{i}] is not an object")
        return value

    def index(self, key: str, value: Any, what: str) -> int:
        n = len(self.arrays[key])
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
            raise _err("corrupt_file", f"{what}: {key}[{f'{value!r}'[:40]}] does not exist ({n} defined)")
        return value

    def indices(self, key: str, value: Any, what: str) -> list[int]:
        if not isinstance(value, list):
            raise _err("corrupt_file", f"{what} is not an array")
        return [self.index(key, v, what) for v in value]

    def run(self) -> SceneSizes:
        self.buffers()
        self.buffer_views()
        self.accessors()
        self.skins()  # joint totals before the per-node work
        self.nodes()
        self.meshes()
        self.animations()
        return self.scene()

    def buffers(self) -> None:
        mb = self.limits.max_file_mb
        for i, buf in enumerate(self.arrays["buffers"]):
            n = _int(buf, "byteLength", f"buffer {i}", None, MAX_BYTES)
            if mb and n > mb * 2**20:
                raise _err("too_large", f"buffer {i} byteLength: {n:,} bytes > limits.max_file_mb={mb:g}")

    def buffer_views(self) -> None:
        buffers = self.arrays["buffers"]
        for i, bv in enumerate(self.arrays["bufferViews"]):
            what = f"bufferView {i}"
            b = self.index("buffers", bv.get("buffer"), what)
            offset = _int(bv, "byteOffset", what, 0, MAX_BYTES)
            length = _int(bv, "byteLength", what, None, MAX_BYTES)
            if offset + length > buffers[b]["byteLength"]:
                raise _err("corrupt_file", f"{what}: bytes {offset:,}..{offset + length:,} outside buffer {b} "
                           f"(byteLength {buffers[b]['byteLength']:,})")
            if "byteStride" in bv:
                stride = _int(bv, "byteStride", what, None, MAX_BYTES)
                if not 4 <= stride <= 252:
                    raise _err("corrupt_file", f"{what}: byteStride {stride} outside 4..252")

    def _fits(self, view: int, offset: int, stride: int, count: int, elem: int, what: str) -> None:
        length = self.arrays["bufferViews"][view]["byteLength"]
        if count and offset + stride * (count - 1) + elem > length:
            raise _err("corrupt_file", f"{what}: {count:,} elements of {elem} bytes (stride {stride}, offset "
                       f"{offset:,}) do not fit in bufferView {view} ({length:,} bytes)")

    def accessors(self) -> None:
        views = self.arrays["bufferViews"]
        for i, acc in enumerate(self.arrays["accessors"]):
            what = f"accessor {i}"
            ctype, atype = acc.get("componentType"), acc.get("type")
            if ctype not in COMPONENT_DTYPES or atype not in TYPE_SHAPES:
                raise _err("corrupt_file", f"{what}: componentType {ctype!r} / type {atype!r} unknown")
            count = _int(acc, "count", what, None, MAX_BYTES)
            dtype, shape = COMPONENT_DTYPES[ctype], TYPE_SHAPES[atype]
            elem = _element_bytes(dtype, shape)
            if "bufferView" in acc:
                v = self.index("bufferViews", acc["bufferView"], what)
                offset = _int(acc, "byteOffset", what, 0, MAX_BYTES)
                stride = views[v].get("byteStride", 0) or elem
                if stride < elem:
                    raise _err("corrupt_file", f"{what}: byteStride {stride} of bufferView {v} is smaller than "
                               f"its {elem}-byte element")
                if stride % dtype.itemsize:
                    raise _err("corrupt_file", f"{what}: byteStride {stride} of bufferView {v} is not a multiple "
                               f"of its component size {dtype.itemsize}")
                self._fits(v, offset, stride, count, elem, what)
            check("read", f"{what} count", count, "max_accessor_elements", self.limits.max_accessor_elements)
            if "sparse" in acc:
                ind, val = _sparse_parts(acc["sparse"], count, f"{what} sparse")
                n = acc["sparse"]["count"]
                for part, size in ((ind, COMPONENT_DTYPES[ind["componentType"]].itemsize), (val, elem)):
                    v = self.index("bufferViews", part.get("bufferView"), f"{what} sparse")
                    self._fits(v, _int(part, "byteOffset", f"{what} sparse", 0, MAX_BYTES), size, n, size,
                               f"{what} sparse")

    def skins(self) -> None:
        skins = self.arrays["skins"]
        total = 0
        for i, skin in enumerate(skins):
            joints = skin.get("joints", [])
            if not isinstance(joints, list):
                raise _err("corrupt_file", f"skin {i}: joints is not an array")
            total += len(joints)
        check("read", "joints over all skins", total, "max_joints", self.limits.max_joints)
        accessors = self.arrays["accessors"]
        for i, skin in enumerate(skins):
            joints = self.indices("nodes", skin.get("joints", []), f"skin {i} joints")
            if "skeleton" in skin:
                self.index("nodes", skin["skeleton"], f"skin {i} skeleton")
            if "inverseBindMatrices" in skin:
                a = accessors[self.index("accessors", skin["inverseBindMatrices"], f"skin {i} inverseBindMatrices")]
                if a["type"] != "MAT4" or a["count"] < len(joints):
                    raise _err("corrupt_file", f"skin {i}: inverseBindMatrices ({a['count']} {a['type']}) do not "
                               f"cover its {len(joints)} joints")

    def nodes(self) -> None:
        nodes = self.arrays["nodes"]
        parent = [-1] * len(nodes)
        for i, node in enumerate(nodes):
            what = f"node {i}"
            for c in self.indices("nodes", node.get("children", []), f"{what} children"):
                if c == i:
                    raise _err("corrupt_file", f"{what} is its own child")
                if parent[c] != -1:
                    raise _err("corrupt_file", f"node {c} has more than one parent ({parent[c]} and {i})")
                parent[c] = i
            if "mesh" in node:
                self.index("meshes", node["mesh"], what)
            if "skin" in node:
                self.index("skins", node["skin"], what)
            for key, n in (("matrix", 16), ("translation", 3), ("rotation", 4), ("scale", 3), ("weights", None)):
                if key in node:
                    _numbers(node[key], n, f"{what} {key}")
        # Every node has at most one parent: the hierarchy is a forest unless some nodes form a
        # cycle, and exactly those are unreachable from the roots.
        stack = [i for i in range(len(nodes)) if parent[i] < 0]
        reached = 0
        while stack:
            i = stack.pop()
            reached += 1
            stack.extend(nodes[i].get("children", []))
        if reached != len(nodes):
            raise _err("corrupt_file", f"node hierarchy has a cycle ({len(nodes) - reached} nodes in or under it)")

    def meshes(self) -> None:
        accessors = self.arrays["accessors"]
        for m, mesh in enumerate(self.arrays["meshes"]):
            prims = mesh.get("primitives", [])
            if not isinstance(prims, list):
                raise _err("corrupt_file", f"mesh {m}: primitives is not an array")
            if "weights" in mesh:
                _numbers(mesh["weights"], None, f"mesh {m} weights")
            for p, prim in enumerate(prims):
                what = f"mesh {m} primitive {p}"
                if not isinstance(prim, dict) or not isinstance(prim.get("attributes", {}), dict):
                    raise _err("corrupt_file", f"{what} (or its attributes) is not an object")
                mode = prim.get("mode", 4)
                if isinstance(mode, bool) or not isinstance(mode, int):
                    raise _err("corrupt_file", f"{what}: mode {mode!r} is not an integer")
                attrs = prim.get("attributes", {})
                for name, a in attrs.items():
                    self.index("accessors", a, f"{what} {name}")
                if "indices" in prim:
                    self.index("accessors", prim["indices"], f"{what} indices")
                targets = prim.get("targets", [])
                if not isinstance(targets, list):
                    raise _err("corrupt_file", f"{what}: targets is not an array")
                for k, tgt in enumerate(targets):
                    if not isinstance(tgt, dict):
                        raise _err("corrupt_file", f"{what} target {k} is not an object")
                    for name, a in tgt.items():
                        self.index("accessors", a, f"{what} target {k} {name}")
                if "POSITION" not in attrs:
                    continue
                pos = accessors[attrs["POSITION"]]
                if pos["type"] != "VEC3":
                    raise _err("corrupt_file", f"{what}: POSITION is {pos['type']}, not VEC3")
                # Every per-vertex accessor the baker reads must have POSITION's count.
                used = [(n, attrs[n]) for n in attrs if n == "COLOR_0" or n.startswith(("JOINTS_", "WEIGHTS_"))]
                used += [(f"target {k} POSITION", t["POSITION"]) for k, t in enumerate(targets) if "POSITION" in t]
                for name, a in used:
                    if accessors[a]["count"] != pos["count"]:
                        raise _err("corrupt_file", f"{what}: {name} has {accessors[a]['count']:,} elements, "
                                   f"POSITION {pos['count']:,}")

    def animations(self) -> None:
        accessors = self.arrays["accessors"]
        for i, anim in enumerate(self.arrays["animations"]):
            what = f"animation {i}"
            samplers, channels = anim.get("samplers", []), anim.get("channels", [])
            if not isinstance(samplers, list) or not isinstance(channels, list):
                raise _err("corrupt_file", f"{what}: samplers/channels is not an array")
            keyframes = 0
            for s, sampler in enumerate(samplers):
                if not isinstance(sampler, dict):
                    raise _err("corrupt_file", f"{what} sampler {s} is not an object")
                a = accessors[self.index("accessors", sampler.get("input"), f"{what} sampler {s} input")]
                self.index("accessors", sampler.get("output"), f"{what} sampler {s} output")
                keyframes += a["count"] * _components(a["type"])
            check("read", f"{what} keyframes over its samplers", keyframes, "max_keyframes", self.limits.max_keyframes)
            for c, ch in enumerate(channels):
                if not isinstance(ch, dict) or not isinstance(ch.get("target", {}), dict):
                    raise _err("corrupt_file", f"{what} channel {c} (or its target) is not an object")
                s = ch.get("sampler")
                if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < len(samplers):
                    raise _err("corrupt_file", f"{what} channel {c}: sampler {s!r} does not exist")
                node = ch.get("target", {}).get("node")
                if node is not None:
                    self.index("nodes", node, f"{what} channel {c} target")

    def scene(self) -> SceneSizes:
        """Sizes of the default scene (`scene`, else scenes[0], else every root node)."""
        nodes, meshes, scenes = self.arrays["nodes"], self.arrays["meshes"], self.arrays["scenes"]
        for s, sc in enumerate(scenes):
            self.indices("nodes", sc.get("nodes", []), f"scene {s} nodes")
        if scenes:
            roots = scenes[self.index("scenes", self.doc.get("scene", 0), "scene")].get("nodes", [])
        else:
            children = {c for node in nodes for c in node.get("children", [])}
            roots = [i for i in range(len(nodes)) if i not in children]
        mesh_nodes, stack, seen = [], [*reversed(roots)], set()
        while stack:
            i = stack.pop()
            if i in seen:
                raise _err("corrupt_file", f"node {i} reached twice from the scene")
            seen.add(i)
            if "mesh" in nodes[i]:
                mesh_nodes.append(i)
            stack.extend(reversed(nodes[i].get("children", [])))
        per_mesh: dict[int, tuple[int, int, int]] = {}
        vertices = morph = faces = 0
        for i in mesh_nodes:
            m = nodes[i]["mesh"]
            if m not in per_mesh:
                per_mesh[m] = self._mesh_sizes(meshes[m])
            dv, dm, df = per_mesh[m]
            vertices, morph, faces = vertices + dv, morph + dm, faces + df
            check("read", "vertices of the scene", vertices, "max_vertices", self.limits.max_vertices)
            check("read", "morph targets x vertices of the scene", morph, "max_morph_values",
                  self.limits.max_morph_values)
        return SceneSizes(tuple(mesh_nodes), vertices, morph, faces)

    def _mesh_sizes(self, mesh: dict) -> tuple[int, int, int]:
        """(POSITION elements, morph targets x POSITION elements, declared faces) of one instance."""
        accessors = self.arrays["accessors"]
        positions: set[int] = set()
        morph = faces = 0
        for prim in mesh.get("primitives", []):
            attrs, mode = prim.get("attributes", {}), prim.get("mode", 4)
            if "POSITION" not in attrs or mode not in TRIANGLE_MODES:
                continue  # skipped by the baker, never decoded
            count = accessors[attrs["POSITION"]]["count"]
            faces += declared_faces(accessors, prim)
            positions.add(attrs["POSITION"])
            morph += len(prim.get("targets", [])) * count
        return sum(accessors[a]["count"] for a in positions), morph, faces


def declared_faces(accessors: list[dict[str, Any]], prim: dict[str, Any]) -> int:
    """Triangles a (checked) primitive declares, from the JSON: its index elements (POSITION's
    count without indices) // 3, or - 2 for strips and fans; 0 for other modes or no POSITION.
    An upper bound: the baker later drops degenerate triangles."""
    attrs, mode = prim.get("attributes", {}), prim.get("mode", 4)
    if "POSITION" not in attrs or mode not in TRIANGLE_MODES:
        return 0
    if "indices" in prim:
        a = accessors[prim["indices"]]
        n = a["count"] * _components(a["type"])  # the baker reads every component as an index
    else:
        n = accessors[attrs["POSITION"]]["count"]
    return n // 3 if mode == 4 else max(n - 2, 0)


def _components(atype: str) -> int:
    return int(np.prod(TYPE_SHAPES[atype], dtype=np.int64))


def _numbers(value: Any, n: int | None, what: str) -> None:
    if (not isinstance(value, list) or (n is not None and len(value) != n)
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)):
        raise _err("corrupt_file", f"{what} must be a list of {n or 'some'} numbers")


# ---------------------------------------------------------------- loading


def load_gltf(data: bytes, read_external: ExternalReader | None = None, limits: LimitsConfig | None = None) -> Gltf:
    """Parse a .glb or .gltf file and check its declarations against `limits` (None: defaults)
    before any buffer is read. `read_external(path, byte_length)` returns the bytes of an
    external buffer given its URL-decoded relative path and its declared byteLength (it may
    raise OSError/KeyError/ValueError when missing, or an AssetError of its own)."""
    limits = limits if limits is not None else LimitsConfig()
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
    if not isinstance(required, list):
        raise _err("corrupt_file", "'extensionsRequired' is not an array")
    unsupported = [
        e for e in required
        if e not in SUPPORTED_REQUIRED_EXTENSIONS and not str(e).startswith(SUPPORTED_REQUIRED_PREFIXES)
    ]
    if unsupported:
        raise _err("unsupported_extension", f"required extensions not supported: {unsupported}")

    sizes = _Checker(doc, limits).run()
    sources: list[bytes | str | None] = []
    for i, buf in enumerate(doc.get("buffers", [])):
        uri, length = buf.get("uri"), buf["byteLength"]
        if uri is None:
            # Only the first buffer of a GLB may refer to the BIN chunk (spec 4.4.3.3).
            source = bin_chunk if i == 0 else None
            what = "the GLB BIN chunk"
        elif not isinstance(uri, str):
            raise _err("corrupt_file", f"buffer {i} uri is not a string")
        elif uri.startswith("data:"):
            source = _decode_data_uri(uri, i)
            what = "its data: URI"
        else:
            sources.append(urllib.parse.unquote(uri))
            continue
        if source is not None:
            if len(source) < length:  # the file contradicts itself
                raise _err("corrupt_file", f"buffer {i}: {what} has {len(source):,} bytes, byteLength {length:,}")
            source = source[:length]
        sources.append(source)
    return Gltf(json=doc, _buffer_sources=sources, _read_external=read_external, limits=limits, scene_sizes=sizes)


def _parse_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _err("corrupt_file", f"neither GLB nor glTF JSON: {e}") from e
    except RecursionError as e:
        raise _err("corrupt_file", "JSON nested too deep") from e


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
