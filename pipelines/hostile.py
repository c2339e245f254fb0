"""A fuzz corpus of hostile glTF files: `python -m pipelines.hostile --out DIR`.

Every file is broken in exactly one way (everything else is a valid animated tetrahedron from
`bad_assets.moving_asset`), and the dataset job must answer each with ONE reject row of a stable
(stage, reason) -- never `internal_error` -- without reading outside the asset's folder,
without allocating what the file merely declares, and without hanging:

- external buffer URIs that escape the asset's folder or name something that is not a regular
  file (`../` chains, percent-encoded `..` and `/`, backslashes, a NUL byte, an empty uri,
  absolute paths, `/proc/self/environ`, `file://`, `http://`, a symlink out of the folder, a
  symlinked folder on the way out, a symlink to /dev/zero, a directory, a FIFO), and a GLB whose
  buffer names `../secret.bin`: ("read", "unsafe_uri"). Each is `uri/<case>/asset.gltf`, so the
  uids differ by the folder; the file they aim at, `secret.bin` at the corpus root (a copy in
  `secret_dir/`), holds a random token that must never reach any output;
- sizes above `limits.*` (an external .bin over max_file_mb, with its byteLength declared or
  not; accessor, vertex, morph, node, joint and keyframe counts declared in the JSON with no bytes
  behind them): ("read", "too_large"), the detail naming a `limits.<key>` of `TOO_LARGE_KEYS`;
- texture images and materials: an image URI out of the folder or missing, a PNG header declaring
  more than limits.max_texture_pixels, bytes no decoder reads, a texture with only a KTX2 (basisu)
  source, a sampler wrap mode glTF does not define, a word where a number belongs;
- malformed declarations and containers (negative or non-integer counts, bad strides, views
  outside their buffer, a buffer longer than its BIN chunk or data: URI, sparse blocks larger than
  their accessor, an index accessor declaring far more faces than its bytes hold, NaN or decreasing
  keyframe times, node cycles, out-of-range indices, broken GLB chunk layouts, invalid UTF-8, JSON
  nested 100,000 deep, an empty file, a JSON array): ("read", "corrupt_file"), or
  "truncated_file" for a GLB shorter than its header says;
- the 8 bad assets of `bad_assets.bad_assets` (in `bad/`), with `bad_assets.BAD_ASSET_REASONS`.

Sizes follow the limits the job runs with: `write_corpus(folder, limits_overrides)` sizes each
declared count from `LimitsConfig` with `CORPUS_LIMITS` and the overrides applied, and
`job_overrides(...)` gives the matching `limits.<key>=<value>` arguments for the job. With the
library defaults the counts are those of the issue (10^6 nodes, ~10^6 joints, 5M keyframes,
1.5M vertices); `CORPUS_LIMITS` lowers the file, node and joint limits so the corpus stays ~2 MB
(declared counts cost nothing, but the node and joint lists are real JSON and the two oversized
.bin files real bytes) and the shipped samples (up to 165 KB) still pass the file limit. Writing
it takes well under a second.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import math
import os
import secrets
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipelines import bad_assets
from pipelines.gltf_write import FLOAT, UINT32, Channel, GltfBuilder, Primitive
from pipelines.limits import LimitsConfig

GLB_MAGIC = b"glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942

# Limits the corpus is sized for (merged under the caller's overrides): a file limit above the
# shipped samples (<= 165 KB) and the bad assets (<= 245 KB), and node/joint limits low enough
# that the node and joint lists which exceed them stay small files.
CORPUS_LIMITS: dict[str, Any] = {"max_file_mb": 0.5, "max_nodes": 1000, "max_joints": 1000}
BAD_MAX_FACES = 20_000  # procedural's default: bad/too_many_faces has this + 1 faces
# A small but complete job over samples + corpus (every stage runs, with the real code paths), used
# by tests/test_hostile.py and benchmarks/hostile.py: tiny sizes, the corpus's limits, and a
# wall-clock limit well above a sample's few seconds, so a read that blocks (a FIFO, /dev/zero)
# costs at most this long instead of hanging the run.
JOB_OVERRIDES = [
    "num_frames=4", "num_surface_points=512", "num_sharp_points=64", "num_queries=32", "num_sharp_queries=16",
    "queries.num_candidates=1024", "watertight.resolution=48", "sdf.num_volume=256", "sdf.num_near=384",
    "render.resolution=64", "output.rows_per_shard=1", f"bake.max_faces={BAD_MAX_FACES}", "source.min_faces=0",
    "limits.memory_per_asset_gb=1",
]
JOB_TIMEOUT_S = 90
SECRET_FILE = "secret.bin"  # at the corpus root: the file the escaping URIs aim at
SECRET_DIR = "secret_dir"  # at the corpus root, holding another copy of it
URI_DIR = "uri"

CORRUPT = ("read", "corrupt_file")
UNSAFE = ("read", "unsafe_uri")
TOO_LARGE = ("read", "too_large")

# too_large cases -> the limits keys their detail may name (the first one the reader checks).
TOO_LARGE_KEYS: dict[str, tuple[str, ...]] = {
    "external_bin_too_large": ("max_file_mb",),
    "external_bin_too_large_undeclared": ("max_file_mb",),
    "accessor_count_huge": ("max_accessor_elements", "max_vertices"),
    "vertices_huge": ("max_vertices",),
    "keyframes_summed_huge": ("max_keyframes",),
    "indices_no_view_huge": ("max_accessor_elements",),
    "morph_targets_huge": ("max_morph_values",),
    "nodes_huge": ("max_nodes",),
    "joints_huge": ("max_joints",),
    "keyframes_huge": ("max_keyframes", "max_accessor_elements"),
    "image_png_huge_header": ("max_texture_pixels",),
}

Expected = tuple[str, str]
Corpus = dict[str, tuple[str, Expected]]


# ---------------------------------------------------------------- GLB / JSON helpers


def dumps(doc: Any) -> bytes:
    """Compact JSON bytes (no NaN: JSON has none)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def split_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(JSON document, BIN chunk or b"") of a well-formed GLB such as `GltfBuilder.to_glb` writes."""
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != GLB_MAGIC or version != 2 or length != len(data):
        raise ValueError("not a well-formed GLB 2.0")
    jlen, jtype = struct.unpack_from("<II", data, 12)
    if jtype != CHUNK_JSON:
        raise ValueError("the first chunk is not JSON")
    doc = json.loads(data[20 : 20 + jlen])
    pos, bin_ = 20 + jlen, b""
    if pos + 8 <= length:
        blen, btype = struct.unpack_from("<II", data, pos)
        if btype == CHUNK_BIN:
            bin_ = data[pos + 8 : pos + 8 + blen]
    return doc, bin_


def chunk(kind: int, payload: bytes, pad: bytes) -> bytes:
    """One GLB chunk: length, type, payload padded to 4 bytes with `pad` (the length includes it)."""
    payload = payload + pad * (-len(payload) % 4)
    return struct.pack("<II", len(payload), kind) + payload


def pack_glb(doc: dict[str, Any] | bytes, bin_: bytes | None = None, *, version: int = 2,
             declared_length: int | None = None) -> bytes:
    """A GLB of a JSON document (a dict, or JSON bytes used as they are) and an optional BIN chunk:
    JSON padded with spaces and BIN with zeros to 4 bytes, as the spec requires. The header's
    length is the file's unless `declared_length` says otherwise."""
    js = doc if isinstance(doc, bytes) else dumps(doc)
    body = chunk(CHUNK_JSON, js, b" ") + (chunk(CHUNK_BIN, bin_, b"\0") if bin_ else b"")
    length = 12 + len(body) if declared_length is None else declared_length
    return struct.pack("<4sII", GLB_MAGIC, version, length) + body


def edit_glb(glb: bytes, edit: Callable[[dict[str, Any], bytearray], None]) -> bytes:
    """Re-pack a GLB after `edit(doc, bin)` changed its JSON (and possibly appended to its BIN)."""
    doc, bin_ = split_glb(glb)
    buf = bytearray(bin_)
    edit(doc, buf)
    return pack_glb(doc, bytes(buf))


def append_view(doc: dict[str, Any], buf: bytearray, data: bytes) -> int:
    """Append `data` to the BIN (4-byte aligned) as a new bufferView of buffer 0; keeps
    buffers[0].byteLength equal to the BIN's length; returns the view index."""
    buf.extend(b"\0" * (-len(buf) % 4))
    views = doc.setdefault("bufferViews", [])
    views.append({"buffer": 0, "byteOffset": len(buf), "byteLength": len(data)})
    buf.extend(data)
    doc["buffers"][0]["byteLength"] = len(buf)
    return len(views) - 1


def uid_of(rel: str, prefix: str = "") -> str:
    """The job's uid of corpus file `rel` when the corpus is `<source>/<prefix>` (pipelines.sources)."""
    path = f"{prefix.strip('/')}/{rel}" if prefix else rel
    return os.path.splitext(path)[0].replace("/", "__")


# ---------------------------------------------------------------- the base asset and its parts
#
# _moving(_TETRA, _TETRA_FACES): accessors 0 POSITION [4 VEC3], 1 indices [12 uint32],
# 2 keyframe times [2], 3 translations [2 VEC3]; bufferView i holds accessor i; node 0 = the mesh,
# translated by animation 0 (channel 0, sampler 0).


def _base_glb() -> bytes:
    return bad_assets.moving_asset(bad_assets.TETRA, bad_assets.TETRA_FACES).to_glb()


def _base() -> tuple[dict[str, Any], bytearray]:
    doc, bin_ = split_glb(_base_glb())
    return doc, bytearray(bin_)


def _skinned(joint_value: int = 0) -> GltfBuilder:
    """A tetrahedron skinned to one animated joint node; every vertex names joint `joint_value`."""
    b = GltfBuilder()
    joint = b.add_node(name="joint")
    prim = Primitive(bad_assets.TETRA, bad_assets.TETRA_FACES,
                     joints=np.full((4, 1), joint_value), weights=np.ones((4, 1)))
    b.add_node(mesh=b.add_mesh([prim]), skin=b.add_skin([joint]))
    b.add_animation([Channel(joint, "translation", np.array([0.0, 1.0]), np.array([[0.0, 0, 0], [0.5, 0.25, 0]]))])
    return b


def _sparse_from_view(doc: dict[str, Any], buf: bytearray, acc: int, count: int) -> None:
    """Make accessor `acc` one of `count` elements with no bufferView: zeros, except its current
    (real) elements, kept by a sparse block. A reader that allocates `count` elements gets a valid
    mesh, so only the declared size can be the reason for a reject."""
    a = doc["accessors"][acc]
    n = a["count"]
    idx = append_view(doc, buf, np.arange(n, dtype="<u4").tobytes())
    a["sparse"] = {"count": n, "indices": {"bufferView": idx, "componentType": UINT32},
                   "values": {"bufferView": a.pop("bufferView")}}
    a["count"] = count


# ---------------------------------------------------------------- cases


@dataclasses.dataclass
class _Ctx:
    root: Path
    limits: LimitsConfig
    max_faces: int

    def write(self, rel: str, data: bytes) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return rel

    def limit(self, key: str) -> float:
        value = getattr(self.limits, key)
        if not value:
            raise ValueError(f"limits.{key}=0 (no limit): the corpus needs a limit to exceed")
        return value


def _gltf_with_uri(ctx: _Ctx, case: str, uri: Any, byte_length: int | None = None) -> str:
    """`uri/<case>/asset.gltf`: the base asset whose only buffer is the external `uri`."""
    doc, buf = _base()
    doc["buffers"] = [{"byteLength": len(buf) if byte_length is None else byte_length, "uri": uri}]
    return ctx.write(f"{URI_DIR}/{case}/asset.gltf", dumps(doc))


def _uri_cases(ctx: _Ctx) -> dict[str, tuple[str, Expected]]:
    out: dict[str, tuple[str, Expected]] = {}
    deep = "../" * 24  # enough to reach / from any folder: normpath stops there
    for case, uri in {
        "uri_dotdot_passwd": deep + "etc/passwd",
        "uri_percent_dotdot": "%2e%2e/%2e%2e/" + SECRET_FILE,  # -> <root>/secret.bin, a real file
        "uri_percent_absolute": "%2Fetc%2Fpasswd",
        "uri_absolute_passwd": "/etc/passwd",
        "uri_proc_environ": "/proc/self/environ",
        "uri_file_scheme": "file:///etc/passwd",
        "uri_http_metadata": "http://169.254.169.254/latest/meta-data/",
        "uri_dotdot_dev_zero": deep + "dev/zero",
        "uri_backslash_dotdot": "..\\..\\" + SECRET_FILE,
        "uri_nul_byte": "asset.bin%00.png",
        "uri_empty": "",
    }.items():
        out[case] = (_gltf_with_uri(ctx, case, uri), UNSAFE)

    rel = _gltf_with_uri(ctx, "uri_symlink_outside", "link.bin")
    os.symlink(f"../../{SECRET_FILE}", ctx.root / URI_DIR / "uri_symlink_outside" / "link.bin")
    out["uri_symlink_outside"] = (rel, UNSAFE)

    # A symlinked folder on the way out: d -> <root>/secret_dir (which holds only a .bin, so a
    # folder scan that follows the link finds no extra asset).
    rel = _gltf_with_uri(ctx, "uri_symlink_folder", f"d/{SECRET_FILE}")
    os.symlink(f"../../{SECRET_DIR}", ctx.root / URI_DIR / "uri_symlink_folder" / "d")
    out["uri_symlink_folder"] = (rel, UNSAFE)

    rel = _gltf_with_uri(ctx, "uri_symlink_dev_zero", "zero.bin")
    os.symlink("/dev/zero", ctx.root / URI_DIR / "uri_symlink_dev_zero" / "zero.bin")
    out["uri_symlink_dev_zero"] = (rel, UNSAFE)

    rel = _gltf_with_uri(ctx, "uri_directory", "buffers")
    (ctx.root / URI_DIR / "uri_directory" / "buffers").mkdir()
    out["uri_directory"] = (rel, UNSAFE)

    if hasattr(os, "mkfifo"):  # reading a FIFO nobody writes blocks forever
        rel = _gltf_with_uri(ctx, "uri_fifo", "pipe.bin")
        os.mkfifo(ctx.root / URI_DIR / "uri_fifo" / "pipe.bin")
        out["uri_fifo"] = (rel, UNSAFE)

    # A GLB is self-contained, yet its buffer may still name a file: here the secret, one level up.
    doc, _ = _base()
    doc["buffers"][0]["uri"] = f"../{SECRET_FILE}"
    out["glb_external_uri"] = (ctx.write("glb_external_uri/asset.glb", pack_glb(doc)), UNSAFE)

    # An external .bin above limits.max_file_mb: declared as such in the JSON, or declared with
    # the size of its real data (so only the file's size on disk can stop the read).
    big = int(math.ceil(ctx.limit("max_file_mb") * 2**20 * 1.5)) + 4096
    for case, declared in (("external_bin_too_large", big), ("external_bin_too_large_undeclared", None)):
        doc, buf = _base()
        doc["buffers"] = [{"byteLength": declared or len(buf), "uri": "asset.bin"}]
        rel = ctx.write(f"{URI_DIR}/{case}/asset.gltf", dumps(doc))
        ctx.write(f"{URI_DIR}/{case}/asset.bin", bytes(buf) + b"\0" * (big - len(buf)))
        out[case] = (rel, TOO_LARGE)
    return out


def _textured(image: dict[str, Any], image_bytes: bytes | None = None, texture_ext: dict | None = None) -> tuple[dict, bytearray]:
    """The base asset with a base colour texture whose image is `image` (a glTF image object;
    with `image_bytes`, embedded through a new bufferView)."""
    doc, buf = _base()
    if image_bytes is not None:
        image = {**image, "bufferView": append_view(doc, buf, image_bytes)}
    doc["images"] = [image]
    doc["textures"] = [{"source": 0} if texture_ext is None else {"extensions": texture_ext}]
    doc["materials"] = [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}]
    doc["meshes"][0]["primitives"][0]["material"] = 0
    doc["buffers"][0]["byteLength"] = len(buf)
    return doc, buf


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGBA pixels and holds none."""
    import zlib

    def png_chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)) \
        + png_chunk(b"IEND", b"")


def _image_cases(ctx: _Ctx) -> dict[str, tuple[str, Expected]]:
    """Texture images go through the same confined reader as buffers, and are checked from their
    header before they are decoded."""
    out: dict[str, tuple[str, Expected]] = {}
    for case, uri, expected in (
        ("image_uri_dotdot", f"../../{SECRET_FILE}", UNSAFE),
        ("image_uri_proc_environ", "/proc/self/environ", UNSAFE),
        ("image_uri_missing", "missing.png", ("read", "missing_image")),
    ):
        doc, buf = _textured({"uri": uri})
        rel = ctx.write(f"{URI_DIR}/{case}/asset.gltf", dumps({**doc, "buffers": [{
            "byteLength": len(buf), "uri": "asset.bin"}]}))
        ctx.write(f"{URI_DIR}/{case}/asset.bin", bytes(buf))
        out[case] = (rel, expected)
    side = int(math.isqrt(int(ctx.limit("max_texture_pixels")))) + 2
    for case, (image, data, ext), expected in (
        ("image_png_huge_header", ({"mimeType": "image/png"}, _png_header(side, side), None), TOO_LARGE),
        ("image_corrupt", ({"mimeType": "image/png"}, b"\x89PNG\r\n\x1a\n not really", None), ("read", "corrupt_image")),
        ("texture_basisu_only", ({"mimeType": "image/ktx2"}, b"\xabKTX 20\xbb\r\n\x1a\n",
                                 {"KHR_texture_basisu": {"source": 0}}), ("render", "unsupported_texture")),
    ):
        doc, buf = _textured(image, data, ext)
        out[case] = (ctx.write(f"{case}.glb", pack_glb(doc, bytes(buf))), expected)
    # Materials that contradict the spec: a sampler wrap mode GL does not have, a word for a number.
    doc, buf = _textured({"mimeType": "image/png"}, _png_header(2, 2))
    doc["samplers"], doc["textures"][0]["sampler"] = [{"wrapS": 1234}], 0
    out["sampler_bad_wrap"] = (ctx.write("sampler_bad_wrap.glb", pack_glb(doc, bytes(buf))), CORRUPT)
    doc, buf = _base()
    doc["materials"] = [{"emissiveFactor": [1, 1, 1], "extensions": {"KHR_materials_emissive_strength": {"emissiveStrength": "bright"}}}]
    doc["meshes"][0]["primitives"][0]["material"] = 0
    out["emissive_strength_word"] = (ctx.write("emissive_strength_word.glb", pack_glb(doc, bytes(buf))), CORRUPT)
    return out


def _declared_size_cases(ctx: _Ctx) -> dict[str, tuple[bytes, Expected]]:
    lim = ctx.limits
    out: dict[str, tuple[bytes, Expected]] = {}

    # POSITION of 30M elements (or more, above the limits) with no bufferView.
    n = max(30_000_000, 8 * max(lim.max_accessor_elements, lim.max_vertices))
    out["accessor_count_huge"] = (edit_glb(_base_glb(), lambda d, b: _sparse_from_view(d, b, 0, n)), TOO_LARGE)

    # POSITION of 1.5 x limits.max_vertices elements (1.5M by default), within max_accessor_elements.
    nv = int(1.5 * ctx.limit("max_vertices"))
    if lim.max_accessor_elements:
        nv = min(nv, lim.max_accessor_elements)
    if nv <= lim.max_vertices:
        raise ValueError("limits.max_accessor_elements leaves no room above limits.max_vertices")
    out["vertices_huge"] = (edit_glb(_base_glb(), lambda d, b: _sparse_from_view(d, b, 0, nv)), TOO_LARGE)

    # An index accessor of 3 x 10^8 elements with no bufferView: zeros = 10^8 degenerate faces.
    def indices_no_view(d, b):
        a = d["accessors"][1]
        del a["bufferView"]
        a["count"] = max(300_000_000, 8 * lim.max_accessor_elements) // 3 * 3

    out["indices_no_view_huge"] = (edit_glb(_base_glb(), indices_no_view), TOO_LARGE)

    # 256 morph targets (accessors with no bufferView) on a POSITION of V elements, V within the
    # vertex and accessor limits and 256 x V twice limits.max_morph_values.
    targets = 256
    v = max(len(bad_assets.TETRA), min(
        x for x in (lim.max_vertices, lim.max_accessor_elements, 2 * ctx.limit("max_morph_values") // targets + 1) if x))
    if targets * v <= lim.max_morph_values:
        raise ValueError("limits leave no room for a morph-target case: raise max_vertices/max_accessor_elements")

    def morph(d, b):
        _sparse_from_view(d, b, 0, v)
        accs = d["accessors"]
        prim = d["meshes"][0]["primitives"][0]
        prim["targets"] = []
        for _ in range(targets):
            accs.append({"componentType": FLOAT, "type": "VEC3", "count": v, "min": [0, 0, 0], "max": [0, 0, 0]})
            prim["targets"].append({"POSITION": len(accs) - 1})

    out["morph_targets_huge"] = (edit_glb(_base_glb(), morph), TOO_LARGE)

    # 10 x limits.max_nodes empty nodes besides the mesh node (10^6 with the default limit).
    n_nodes = 10 * int(ctx.limit("max_nodes"))
    out["nodes_huge"] = (edit_glb(_base_glb(), lambda d, b: d["nodes"].extend({} for _ in range(n_nodes))), TOO_LARGE)

    # A skin whose joint list repeats its joint node 16 x limits.max_joints times (~10^6 by default).
    n_joints = 16 * int(ctx.limit("max_joints"))

    def joints(d, b):
        d["skins"][0]["joints"] = d["skins"][0]["joints"] * n_joints

    out["joints_huge"] = (edit_glb(_skinned().to_glb(), joints), TOO_LARGE)

    # One sampler of K keyframes (5M with the default limits.max_keyframes), input and output
    # accessors with no bufferView; a sparse block makes the last time 1 s, so the times increase.
    k = int(ctx.limit("max_keyframes")) + max(1, int(lim.max_keyframes) // 4)

    def keyframes(d, b):
        sampler = d["animations"][0]["samplers"][0]
        t, o = d["accessors"][sampler["input"]], d["accessors"][sampler["output"]]
        del t["bufferView"], o["bufferView"]
        t.update(count=k, min=[0], max=[1], sparse={
            "count": 1,
            "indices": {"bufferView": append_view(d, b, struct.pack("<I", k - 1)), "componentType": UINT32},
            "values": {"bufferView": append_view(d, b, struct.pack("<f", 1.0))},
        })
        o["count"] = k

    out["keyframes_huge"] = (edit_glb(_base_glb(), keyframes), TOO_LARGE)

    # Two samplers (translations of the mesh node and of a child node) of K keyframes each, every accessor
    # within max_accessor_elements but 2 K = 1.25 x limits.max_keyframes in the animation.
    k2 = int(ctx.limit("max_keyframes")) * 5 // 8 + 1
    if lim.max_accessor_elements and k2 > lim.max_accessor_elements:
        raise ValueError("limits.max_accessor_elements is below limits.max_keyframes / 1.6")

    def keyframes_summed(d, b):
        accs, anim = d["accessors"], d["animations"][0]
        last = append_view(d, b, struct.pack("<I", k2 - 1))
        one = append_view(d, b, struct.pack("<f", 1.0))
        d["nodes"][0]["children"] = [len(d["nodes"])]
        d["nodes"].append({})
        anim["channels"] = [{"sampler": i, "target": {"node": node, "path": "translation"}}
                            for i, node in enumerate((0, len(d["nodes"]) - 1))]
        anim["samplers"] = []
        for _ in anim["channels"]:
            accs.append({"componentType": FLOAT, "type": "SCALAR", "count": k2, "min": [0], "max": [1], "sparse": {
                "count": 1, "indices": {"bufferView": last, "componentType": UINT32}, "values": {"bufferView": one}}})
            accs.append({"componentType": FLOAT, "type": "VEC3", "count": k2})  # zeros: a valid translation
            anim["samplers"].append({"input": len(accs) - 2, "output": len(accs) - 1, "interpolation": "LINEAR"})

    out["keyframes_summed_huge"] = (edit_glb(_base_glb(), keyframes_summed), TOO_LARGE)

    # An index accessor declaring 50 x bake.max_faces triangles (within max_accessor_elements)
    # over its real 48-byte bufferView. Either the declared face count or the view's size stops it.
    count = 3 * 50 * ctx.max_faces
    if lim.max_accessor_elements:
        count = min(count, lim.max_accessor_elements // 3 * 3)

    def faces(d, b):
        d["accessors"][1]["count"] = count

    out["faces_declared_huge"] = (edit_glb(_base_glb(), faces), CORRUPT)
    return out


def _structure_cases() -> dict[str, tuple[bytes, Expected]]:
    out: dict[str, tuple[bytes, Expected]] = {}

    def edited(fn: Callable[[dict[str, Any], bytearray], None]) -> bytes:
        return edit_glb(_base_glb(), fn)

    def set_(path: tuple, value: Any) -> Callable[[dict[str, Any], bytearray], None]:
        def fn(d, b):
            obj = d
            for key in path[:-1]:
                obj = obj[key]
            obj[path[-1]] = value
        return fn

    out["count_negative"] = (edited(set_(("accessors", 0, "count"), -4)), CORRUPT)
    out["count_not_integer"] = (edited(set_(("accessors", 0, "count"), 1e300)), CORRUPT)
    out["stride_3"] = (edited(set_(("bufferViews", 0, "byteStride"), 3)), CORRUPT)
    out["stride_huge"] = (edited(set_(("bufferViews", 0, "byteStride"), 10**9)), CORRUPT)
    out["view_offset_beyond_buffer"] = (edited(lambda d, b: d["bufferViews"][0].update(byteOffset=len(b) + 1024)), CORRUPT)
    out["view_length_beyond_bin"] = (edited(lambda d, b: d["bufferViews"][0].update(byteLength=len(b) + 4096)), CORRUPT)
    out["accessor_offset_negative"] = (edited(set_(("accessors", 0, "byteOffset"), -12)), CORRUPT)
    out["component_type_unknown"] = (edited(set_(("accessors", 0, "componentType"), 9999)), CORRUPT)
    out["accessor_view_out_of_range"] = (edited(set_(("accessors", 0, "bufferView"), 99)), CORRUPT)
    out["view_buffer_out_of_range"] = (edited(set_(("bufferViews", 0, "buffer"), 5)), CORRUPT)
    out["accessors_not_array"] = (edited(lambda d, b: d.update(accessors={"0": d["accessors"][0]})), CORRUPT)
    out["uri_not_string"] = (edited(set_(("buffers", 0, "uri"), 5)), CORRUPT)
    out["buffer_length_beyond_bin"] = (edited(lambda d, b: d["buffers"][0].update(byteLength=len(b) + 4096)), CORRUPT)
    out["position_not_vec3"] = (edited(lambda d, b: d["accessors"][0].update(type="VEC4", count=3)), CORRUPT)

    def sparse_over(d, b):  # 5 sparse entries (indices 0..4) on an accessor of 4 elements
        d["accessors"][0]["sparse"] = {
            "count": 5,
            "indices": {"bufferView": append_view(d, b, np.arange(5, dtype="<u4").tobytes()), "componentType": UINT32},
            "values": {"bufferView": append_view(d, b, np.zeros((5, 3), "<f4").tobytes())},
        }

    out["sparse_count_over_accessor"] = (edited(sparse_over), CORRUPT)

    def index_value(d, b):  # the first vertex index names vertex 1000 of 4
        view = d["bufferViews"][d["accessors"][1]["bufferView"]]
        b[view["byteOffset"] : view["byteOffset"] + 4] = struct.pack("<I", 1000)

    out["index_value_out_of_range"] = (edited(index_value), CORRUPT)

    def cycle(d, b):  # 0 -> 1 -> 0
        d["nodes"][0]["children"] = [1]
        d["nodes"].append({"children": [0]})

    out["node_cycle"] = (edited(cycle), CORRUPT)
    out["node_self_child"] = (edited(set_(("nodes", 0, "children"), [0])), CORRUPT)
    out["mesh_out_of_range"] = (edited(set_(("nodes", 0, "mesh"), 7)), CORRUPT)
    out["scene_out_of_range"] = (edited(set_(("scene",), 5)), CORRUPT)
    out["channel_node_out_of_range"] = (edited(lambda d, b: d["animations"][0]["channels"][0]["target"].update(node=42)), CORRUPT)
    out["channel_sampler_out_of_range"] = (edited(set_(("animations", 0, "channels", 0, "sampler"), 9)), CORRUPT)
    out["skin_joint_node_missing"] = (edit_glb(_skinned().to_glb(), lambda d, b: d["skins"][0].update(joints=[99])), CORRUPT)
    out["joint_index_out_of_range"] = (_skinned(joint_value=5).to_glb(), CORRUPT)  # a skin of 1 joint

    tetra, faces = bad_assets.TETRA, bad_assets.TETRA_FACES
    out["times_nan"] = (bad_assets.moving_asset(tetra, faces, times=(0.0, np.nan, 1.0)).to_glb(), CORRUPT)
    out["times_decreasing"] = (bad_assets.moving_asset(tetra, faces, times=(0.0, 1.0, 0.5)).to_glb(), CORRUPT)

    # Containers.
    doc, bin_ = split_glb(_base_glb())
    js = dumps(doc)
    out["glb_json_truncated"] = (pack_glb(js[: len(js) // 2], bin_), CORRUPT)
    good = pack_glb(doc, bin_)
    overflow = bytearray(good)
    struct.pack_into("<I", overflow, 12, 0xFFFFFFFC)  # the JSON chunk's length
    out["glb_chunk_overflow"] = (bytes(overflow), CORRUPT)
    out["glb_header_4gb"] = (pack_glb(doc, bin_, declared_length=0xFFFFFFFF), ("read", "truncated_file"))
    out["glb_version_99"] = (pack_glb(doc, bin_, version=99), CORRUPT)
    body = chunk(CHUNK_BIN, bin_, b"\0") + chunk(CHUNK_JSON, js, b" ")
    out["glb_bin_chunk_first"] = (struct.pack("<4sII", GLB_MAGIC, 2, 12 + len(body)) + body, CORRUPT)
    out["empty"] = (b"", CORRUPT)
    return out


def _json_cases() -> dict[str, tuple[bytes, Expected]]:
    """Self-contained .gltf files (buffer as a data: URI) broken at the JSON level."""
    doc, bin_ = split_glb(_base_glb())
    doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(bin_).decode()
    out: dict[str, tuple[bytes, Expected]] = {}
    marker = "@@NOT-UTF8@@"
    doc["asset"]["generator"] = marker
    out["json_invalid_utf8"] = (dumps(doc).replace(marker.encode(), b"\xc3\x28\xff\xfe"), CORRUPT)
    del doc["asset"]["generator"]
    depth = 100_000
    doc["extras"] = "@@DEEP@@"
    out["json_deep_nesting"] = (dumps(doc).replace(b'"@@DEEP@@"', b"[" * depth + b"]" * depth), CORRUPT)
    out["json_array"] = (b'[{"asset":{"version":"2.0"}}]', CORRUPT)
    del doc["extras"]
    # A data: URI holding half the bytes its buffer's byteLength declares.
    doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(bin_[: len(bin_) // 2]).decode()
    out["data_uri_short"] = (dumps(doc), CORRUPT)
    return out


# ---------------------------------------------------------------- corpus


def limits_config(limits_overrides: dict[str, Any] | None = None) -> LimitsConfig:
    """`LimitsConfig` with `CORPUS_LIMITS` and then `limits_overrides` applied."""
    values = {**CORPUS_LIMITS, **(limits_overrides or {})}
    known = {f.name for f in dataclasses.fields(LimitsConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown limits keys {unknown}; known: {sorted(known)}")
    return dataclasses.replace(LimitsConfig(), **values)


def job_overrides(limits_overrides: dict[str, Any] | None = None) -> list[str]:
    """The `limits.<key>=<value>` job arguments the corpus is sized for (CORPUS_LIMITS + overrides)."""
    return [f"limits.{k}={v}" for k, v in {**CORPUS_LIMITS, **(limits_overrides or {})}.items()]


def write_corpus(folder: str | Path, limits_overrides: dict[str, Any] | None = None,
                 max_faces: int = BAD_MAX_FACES, secret: bytes | None = None) -> Corpus:
    """Write the hostile corpus into `folder` (created; it must not hold an earlier corpus).

    Returns case -> (file relative to `folder`, expected (stage, reason) of its one reject row).
    `limits_overrides` are the `limits.*` values the job will run with (on top of CORPUS_LIMITS);
    `max_faces` is its `bake.max_faces`. `secret` (default: random) is written to
    `<folder>/secret.bin`, the target of the escaping URIs; read it back from there.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    ctx = _Ctx(root, limits_config(limits_overrides), max_faces)
    token = secret if secret is not None else b"SHAPEGEN4D-PLANTED-SECRET-" + secrets.token_hex(16).encode()
    for path in (root / SECRET_FILE, root / SECRET_DIR / SECRET_FILE):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes((token + b"\n") * max(1, -(-512 // (len(token) + 1))))

    corpus: Corpus = {}
    corpus.update(_uri_cases(ctx))
    corpus.update(_image_cases(ctx))
    for case, (data, expected) in _declared_size_cases(ctx).items():
        corpus[case] = (ctx.write(f"{case}.glb", data), expected)
    for case, (data, expected) in _structure_cases().items():
        corpus[case] = (ctx.write(f"{case}.glb", data), expected)
    for case, (data, expected) in _json_cases().items():
        corpus[case] = (ctx.write(f"{case}.gltf", data), expected)
    for name, fname in bad_assets.bad_assets(root / "bad", max_faces).items():
        corpus[f"bad_{name}"] = (f"bad/{fname}", bad_assets.BAD_ASSET_REASONS[name])
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.hostile",
        description="Write the hostile glTF corpus (one file per case, each broken in one way) and list "
        "each case's file and the (stage, reason) the dataset job must reject it with.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty or absent)")
    parser.add_argument("--limit", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a limits.* value the job will run with (repeatable; defaults {CORPUS_LIMITS})")
    parser.add_argument("--max-faces", type=int, default=BAD_MAX_FACES, help="the job's bake.max_faces")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for item in args.limit:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--limit {item!r}: expected KEY=VALUE")
        overrides[key.removeprefix("limits.")] = json.loads(value)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    corpus = write_corpus(args.out, overrides, args.max_faces)
    width = max(map(len, corpus))
    for case, (rel, (stage, reason)) in corpus.items():
        print(f"{case:<{width}}  {rel:<48}  {stage}/{reason}")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"{len(corpus)} cases, {total / 2**20:.2f} MiB in {args.out}")
    print("run the job with: " + " ".join([*job_overrides(overrides), f"bake.max_faces={args.max_faces}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
