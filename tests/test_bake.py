"""glTF reading and animation baking against analytic answers on tiny hand-built files, plus
every real sample asset in tests/data/gltf."""
from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from pipelines import bake
from pipelines.errors import AssetError
from pipelines.gltf_io import load_gltf

ASSETS = Path(__file__).resolve().parent / "data" / "gltf"  # Khronos glTF samples, licences in LICENSES.md
CTYPES = {np.dtype(np.int8): 5120, np.dtype(np.uint8): 5121, np.dtype(np.int16): 5122,
          np.dtype(np.uint16): 5123, np.dtype(np.uint32): 5125, np.dtype(np.float32): 5126}
TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}


class Builder:
    """A minimal glTF writer for tests: one binary buffer, accessors appended to it."""

    def __init__(self) -> None:
        self.doc: dict = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": []}], "nodes": [],
                          "meshes": [], "accessors": [], "bufferViews": [], "buffers": []}
        self.blob = bytearray()

    def _add(self, key: str, item: dict) -> int:
        self.doc.setdefault(key, []).append(item)
        return len(self.doc[key]) - 1

    def view(self, raw: bytes, stride: int | None = None) -> int:
        self.blob += b"\0" * (-len(self.blob) % 4)
        bv = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(raw)}
        if stride:
            bv["byteStride"] = stride
        self.blob += raw
        return self._add("bufferViews", bv)

    def accessor(self, arr, dtype=np.float32, type_: str | None = None, **extra) -> int:
        a = np.ascontiguousarray(np.asarray(arr, dtype=dtype))
        if a.ndim == 3:  # matrices: glTF stores them column-major
            a = np.ascontiguousarray(a.transpose(0, 2, 1))
        width = int(np.prod(a.shape[1:])) if a.ndim > 1 else 1
        acc = {"bufferView": self.view(a.tobytes()), "componentType": CTYPES[a.dtype],
               "count": len(a), "type": type_ or TYPES[width], **extra}
        return self._add("accessors", acc)

    def node(self, root: bool = True, **kw) -> int:
        i = self._add("nodes", kw)
        if root:
            self.doc["scenes"][0]["nodes"].append(i)
        return i

    def mesh(self, positions, indices=None, **prim_extra) -> int:
        prim = {"attributes": {"POSITION": self.accessor(positions)}, **prim_extra}
        if indices is not None:
            prim["indices"] = self.accessor(np.asarray(indices).reshape(-1), np.uint16)
        return self._add("meshes", {"primitives": [prim]})

    def animate(self, node: int, path: str, times, values, interpolation: str = "LINEAR", anim: int = 0) -> None:
        anims = self.doc.setdefault("animations", [])
        while len(anims) <= anim:
            anims.append({"channels": [], "samplers": []})
        a = anims[anim]
        vals = np.asarray(values, np.float32)
        a["samplers"].append({"input": self.accessor(np.asarray(times, np.float32)),
                              "output": self.accessor(vals.reshape(len(vals), -1) if path != "weights" else vals.reshape(-1)),
                              "interpolation": interpolation})
        a["channels"].append({"sampler": len(a["samplers"]) - 1, "target": {"node": node, "path": path}})

    def gltf_bytes(self, uri: str | None = None) -> bytes:
        doc = json.loads(json.dumps(self.doc))
        data = base64.b64encode(bytes(self.blob)).decode()
        doc["buffers"] = [{"byteLength": len(self.blob), "uri": uri or f"data:application/octet-stream;base64,{data}"}]
        return json.dumps(doc).encode()

    def glb(self) -> bytes:
        doc = json.loads(json.dumps(self.doc))
        doc["buffers"] = [{"byteLength": len(self.blob)}]
        js = json.dumps(doc).encode()
        js += b" " * (-len(js) % 4)
        bin_ = bytes(self.blob) + b"\0" * (-len(self.blob) % 4)
        body = struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(bin_), 0x004E4942) + bin_
        return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


TRI = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)


def _bake(b: Builder, times, anim: int = 0, config: bake.BakeConfig | None = None) -> bake.Baked:
    return bake.bake(load_gltf(b.glb()), anim, np.asarray(times, float), config)


def _reason(fn) -> str:
    with pytest.raises(AssetError) as e:
        fn()
    return e.value.reason


def _rz(deg: float) -> list[float]:
    """glTF quaternion (x, y, z, w) for a rotation of `deg` degrees about +Z."""
    h = np.radians(deg) / 2
    return [0.0, 0.0, float(np.sin(h)), float(np.cos(h))]


def _moving_triangle(interp: str, times, values) -> Builder:
    b = Builder()
    n = b.node(mesh=b.mesh(TRI, [0, 1, 2]))
    b.animate(n, "translation", times, values, interp)
    return b


def test_translation_linear_step_clamped():
    b = _moving_triangle("LINEAR", [1.0, 3.0], [[0, 0, 0], [2, 4, 0]])
    out = _bake(b, [0.0, 1.0, 1.5, 2.0, 3.0, 9.0])
    np.testing.assert_allclose(out.vertices[:, 0], [[0, 0, 0], [0, 0, 0], [0.5, 1, 0], [1, 2, 0], [2, 4, 0], [2, 4, 0]])
    np.testing.assert_allclose(out.vertices[:, 1] - out.vertices[:, 0], np.tile([1, 0, 0], (6, 1)))

    b = _moving_triangle("STEP", [0.0, 1.0, 2.0], [[0, 0, 0], [5, 0, 0], [7, 0, 0]])
    out = _bake(b, [0.0, 0.99, 1.0, 1.5, 2.0, 3.0])
    np.testing.assert_allclose(out.vertices[:, 0, 0], [0, 0, 5, 5, 7, 7])


def test_translation_cubicspline_scales_tangents_by_key_interval():
    # keys at 0 and 2 s: value 0 -> 1, out-tangent 1/s at key 0, in-tangent 0 at key 1.
    # Hermite at u = 0.5: 0.5*0 + 0.125*2*1 + 0.5*1 - 0.125*2*0 = 0.75.
    values = [[0, 0, 0], [0, 0, 0], [1, 0, 0],  # key 0: in, value, out
              [0, 0, 0], [1, 0, 0], [0, 0, 0]]  # key 1
    b = _moving_triangle("CUBICSPLINE", [0.0, 2.0], values)
    out = _bake(b, [0.0, 1.0, 2.0, 5.0])
    np.testing.assert_allclose(out.vertices[:, 0, 0], [0, 0.75, 1, 1], atol=1e-6)


def test_rotation_slerp_shortest_path():
    b = Builder()
    n = b.node(mesh=b.mesh(TRI, [0, 1, 2]))
    # The second key is written as -q (same rotation): shortest path is still +90 degrees.
    b.animate(n, "rotation", [0.0, 1.0], [_rz(0), [-c for c in _rz(90)]])
    out = _bake(b, [0.25, 0.5, 1.0])
    for t, deg in zip(range(3), [22.5, 45.0, 90.0]):  # slerp: angle linear in time (nlerp gives ~18.4 at 0.25)
        a = np.radians(deg)
        np.testing.assert_allclose(out.vertices[t, 1], [np.cos(a), np.sin(a), 0], atol=1e-6)


def test_hierarchy_composes_matrix_and_trs():
    b = Builder()
    m = b.mesh(TRI, [0, 1, 2])
    child = b.node(root=False, mesh=m, translation=[0, 0, 1], scale=[2, 2, 2])
    mid = b.node(root=False, children=[child], rotation=_rz(90))
    shift = np.eye(4)
    shift[:3, 3] = [10, 0, 0]
    b.node(children=[mid], matrix=shift.T.reshape(-1).tolist())
    b.animate(mid, "translation", [0.0, 1.0], [[0, 0, 0], [0, 2, 0]])
    out = _bake(b, [0.0, 1.0])
    # world = shift * (T(t) R90) * (T(0,0,1) S2); vertex (1,0,0) -> (2,0,1) -> (0,2,1) -> + T(t) + shift
    np.testing.assert_allclose(out.vertices[0, 1], [10, 2, 1], atol=1e-6)
    np.testing.assert_allclose(out.vertices[1, 1], [10, 4, 1], atol=1e-6)


def _two_joint_skin(weights1=None, unweighted: tuple[int, ...] = ()) -> Builder:
    """A strip along +Y from 0 to 2; joint 1 (at y=1, child of joint 0) bends 90 degrees about Z."""
    b = Builder()
    ys = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    pos = np.concatenate([np.stack([np.zeros(5), ys, np.zeros(5)], 1), np.stack([np.full(5, 0.2), ys, np.zeros(5)], 1)])
    faces = [[i, i + 1, i + 5] for i in range(4)] + [[i + 1, i + 6, i + 5] for i in range(4)]
    upper = pos[:, 1] >= 1.0
    joints = np.zeros((10, 4), np.uint16)
    joints[upper, 0] = 1
    w = np.zeros((10, 4))
    w[:, 0] = 2.0  # not normalised on purpose: the baker must renormalise
    w[list(unweighted)] = 0.0
    j1 = b.node(root=False, translation=[0, 1, 0])
    j0 = b.node(children=[j1])
    ibm = np.stack([np.eye(4), np.eye(4)])
    ibm[1, 1, 3] = -1.0  # inverse of the bind translation of joint 1
    prim = {"attributes": {"POSITION": b.accessor(pos), "JOINTS_0": b.accessor(joints, np.uint16),
                           "WEIGHTS_0": b.accessor(w)}, "indices": b.accessor(np.asarray(faces).reshape(-1), np.uint16)}
    if weights1 is not None:
        prim["attributes"]["JOINTS_1"] = b.accessor(np.ones((10, 4)), np.uint8)
        prim["attributes"]["WEIGHTS_1"] = b.accessor(weights1)
    mesh = b._add("meshes", {"primitives": [prim]})
    b.doc["skins"] = [{"joints": [j0, j1], "inverseBindMatrices": b.accessor(ibm, type_="MAT4")}]
    b.node(mesh=mesh, skin=0, translation=[100, 0, 0])  # a skinned mesh node's transform is ignored
    b.animate(j1, "rotation", [0.0, 1.0], [_rz(0), _rz(90)])
    return b, pos, upper


def test_scene_selection():
    b = Builder()
    m = b.mesh(TRI, [0, 1, 2])
    first = b.node(mesh=m)
    second = b.node(root=False, mesh=m, translation=[0, 0, 3])
    b.doc["scenes"].append({"nodes": [second]})
    b.animate(first, "translation", [0, 1], [[0, 0, 0], [1, 0, 0]])
    assert _bake(b, [0.0]).vertices.shape[1] == 3
    b.doc["scene"] = 1
    np.testing.assert_allclose(_bake(b, [0.0]).vertices[0], TRI + [0, 0, 3])
    del b.doc["scene"], b.doc["scenes"]  # no scenes: every root node is drawn
    assert _bake(b, [0.0]).vertices.shape[1] == 6


def test_two_joint_skin_bent_90_degrees():
    b, pos, upper = _two_joint_skin()
    out = _bake(b, [0.0, 1.0])
    np.testing.assert_allclose(out.vertices[0], pos, atol=1e-6)
    expect = pos.copy()
    x, y = pos[upper, 0], pos[upper, 1]
    expect[upper] = np.stack([1 - y, 1 + x, np.zeros_like(x)], 1)  # rotate (x, y-1) by 90 about the joint
    np.testing.assert_allclose(out.vertices[1], expect, atol=1e-6)


def test_skin_vertex_without_weights_follows_the_mesh_node():
    b, pos, upper = _two_joint_skin(unweighted=(9,))  # vertex 9 is (0.2, 2, 0), in the bent part
    out = _bake(b, [1.0])
    np.testing.assert_allclose(out.vertices[0, 9], pos[9] + [100, 0, 0], atol=1e-9)
    np.testing.assert_allclose(out.vertices[0, 4], [-1, 1, 0], atol=1e-6)  # (0, 2, 0) bent about (0, 1, 0)


def test_skin_second_weight_set_blends_joints():
    w1 = np.zeros((10, 4))
    w1[:, 0] = 2.0  # JOINTS_1 = joint 1 with the same raw weight as set 0: a 50/50 blend after renormalising
    b, pos, upper = _two_joint_skin(w1)
    out = _bake(b, [1.0])
    x, y = pos[:, 0], pos[:, 1]
    bent = np.stack([1 - y, 1 + x, np.zeros_like(x)], 1)
    lower = ~upper  # set 0 says joint 0 (rest) for these; upper ones are joint 1 in both sets
    np.testing.assert_allclose(out.vertices[0, lower], 0.5 * pos[lower] + 0.5 * bent[lower], atol=1e-6)
    np.testing.assert_allclose(out.vertices[0, upper], bent[upper], atol=1e-6)


def test_morph_weights_default_override_and_animation():
    b = Builder()
    d0 = np.array([[0, 0, 1]] * 3, float)
    d1 = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0]], float)
    prim = {"attributes": {"POSITION": b.accessor(TRI)}, "targets": [{"POSITION": b.accessor(d0)}, {"POSITION": b.accessor(d1)}]}
    m = b._add("meshes", {"primitives": [prim], "weights": [0.5, 0.0]})
    b.node(mesh=m, weights=[0.25, 1.0], translation=[0, 0, 10])  # node weights override mesh weights
    moving = b.node(mesh=m)
    b.animate(moving, "weights", [0.0, 2.0], [[0.0, 0.0], [1.0, 0.5]])
    out = _bake(b, [0.0, 1.0])
    np.testing.assert_allclose(out.vertices[:, :3], np.broadcast_to(TRI + [0, 0, 10] + 0.25 * d0 + d1, (2, 3, 3)))
    np.testing.assert_allclose(out.vertices[1, 3:], TRI + 0.5 * d0 + 0.25 * d1)
    np.testing.assert_allclose(out.vertices[0, 3:], TRI)
    # a node without animation keeps its default weights (mesh.weights) in a non-morph animation
    b2 = Builder()
    m2 = b2._add("meshes", {"primitives": [{"attributes": {"POSITION": b2.accessor(TRI)}, "targets": [{"POSITION": b2.accessor(d0)}]}],
                             "weights": [0.5]})
    n2 = b2.node(mesh=m2)
    b2.animate(n2, "translation", [0, 1], [[0, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(_bake(b2, [0.0]).vertices[0], TRI + 0.5 * d0)


def test_primitives_instances_merged_with_colors_and_modes():
    b = Builder()
    quad = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    b.doc["materials"] = [{"pbrMetallicRoughness": {"baseColorFactor": [1, 0.5, 0.25, 1]}}]
    p_list = {"attributes": {"POSITION": b.accessor(TRI), "COLOR_0": b.accessor(np.full((3, 3), 128), np.uint8, normalized=True)},
              "indices": b.accessor(np.array([0, 1, 2], np.uint16), np.uint16), "material": 0}
    p_strip = {"attributes": {"POSITION": b.accessor(quad)}, "mode": 5}  # no indices: 0,1,2,3
    p_fan = {"attributes": {"POSITION": b.accessor(quad)}, "mode": 6, "indices": b.accessor(np.array([0, 1, 3, 2], np.uint16), np.uint16)}
    p_lines = {"attributes": {"POSITION": b.accessor(quad)}, "mode": 1}
    m = b._add("meshes", {"primitives": [p_list, p_strip, p_fan, p_lines]})
    n0 = b.node(mesh=m)
    b.node(mesh=m, translation=[0, 0, 5])
    b.animate(n0, "translation", [0, 1], [[0, 0, 0], [1, 0, 0]])
    out = _bake(b, [0.0])
    assert out.vertices.shape == (1, 2 * (3 + 4 + 4), 3)
    assert out.skipped_primitives == 2
    strip = [[3, 4, 5], [4, 6, 5]]  # spec: triangle i = (i, i+1+i%2, i+2-i%2), keeps the winding
    fan = [[8, 10, 7], [10, 9, 7]]
    expect = np.array([[0, 1, 2], *strip, *fan])
    np.testing.assert_array_equal(out.faces, np.concatenate([expect, expect + 11]))
    np.testing.assert_allclose(out.colors[0], [128 / 255, 0.5 * 128 / 255, 0.25 * 128 / 255, 1], rtol=1e-6)
    np.testing.assert_allclose(out.colors[3], [1, 1, 1, 1])
    np.testing.assert_allclose(out.vertices[0, 11:] - out.vertices[0, :11], np.tile([0, 0, 5], (11, 1)))
    # every triangle keeps the +Z winding of its source
    tri = out.vertices[0][out.faces]
    assert np.all(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2] > 0)


def test_shared_vertex_buffer_keeps_only_referenced_vertices():
    b = Builder()
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5], [9, 0, 0], [9, 1, 0]], float)
    col = b.accessor(np.linspace(0, 1, 24).reshape(6, 4))
    shared = {"POSITION": b.accessor(pos), "COLOR_0": col}
    prims = [{"attributes": shared, "indices": b.accessor(np.array(ix, np.uint16), np.uint16)} for ix in ([2, 0, 1], [1, 4, 5])]
    n = b.node(mesh=b._add("meshes", {"primitives": prims}))
    b.animate(n, "translation", [0, 1], [[0, 0, 0], [1, 0, 0]])
    out = _bake(b, [0.0])
    keep = [0, 1, 2, 1, 4, 5]  # vertex 3 is used by no triangle; vertex 1 is in both primitives
    np.testing.assert_array_equal(out.vertices[0], pos[keep])
    np.testing.assert_array_equal(out.faces, [[2, 0, 1], [3, 4, 5]])
    np.testing.assert_allclose(out.colors, np.linspace(0, 1, 24).reshape(6, 4)[keep], rtol=1e-6)


def test_accessor_decoding_sparse_normalized_strided():
    b = Builder()
    base = b.accessor(np.arange(12, dtype=np.float32).reshape(4, 3))
    b.doc["accessors"][base]["sparse"] = {
        "count": 2,
        "indices": {"bufferView": b.view(np.array([1, 3], np.uint8).tobytes()), "componentType": 5121},
        "values": {"bufferView": b.view(np.array([[-1, -2, -3], [-4, -5, -6]], np.float32).tobytes())},
    }
    zero_based = b._add("accessors", {"componentType": 5126, "count": 3, "type": "SCALAR", "sparse": {
        "count": 1, "indices": {"bufferView": b.view(np.array([2], np.uint16).tobytes()), "componentType": 5123},
        "values": {"bufferView": b.view(np.array([7], np.float32).tobytes())}}})
    norm = {}
    for dt, vals in [(np.int8, [-128, -127, 0, 127]), (np.uint8, [0, 255, 51, 0]),
                     (np.int16, [-32768, 32767, 0, 0]), (np.uint16, [65535, 0, 0, 0])]:
        norm[np.dtype(dt).name] = b.accessor(np.array([vals]), dt, "VEC4", normalized=True)
    # interleaved: 3 vertices of (int16 xyz + 2 bytes pad + uint8 rgba), stride 12
    rec = np.zeros(3, dtype=[("p", "<i2", 3), ("pad", "<i2"), ("c", "u1", 4)])
    rec["p"] = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    rec["c"] = 255
    v = b.view(rec.tobytes(), stride=12)
    pos = b._add("accessors", {"bufferView": v, "componentType": 5122, "count": 3, "type": "VEC3"})
    col = b._add("accessors", {"bufferView": v, "byteOffset": 8, "componentType": 5121, "count": 3, "type": "VEC4", "normalized": True})
    g = load_gltf(b.glb())
    np.testing.assert_array_equal(g.accessor(base), [[0, 1, 2], [-1, -2, -3], [6, 7, 8], [-4, -5, -6]])
    np.testing.assert_array_equal(g.accessor(zero_based), [0, 0, 7])
    np.testing.assert_allclose(g.accessor(norm["int8"])[0], [-1, -1, 0, 1])
    np.testing.assert_allclose(g.accessor(norm["uint8"])[0], [0, 1, 0.2, 0])
    np.testing.assert_allclose(g.accessor(norm["int16"])[0], [-1, 1, 0, 0])
    np.testing.assert_allclose(g.accessor(norm["uint16"])[0], [1, 0, 0, 0])
    np.testing.assert_array_equal(g.accessor(pos), rec["p"])
    assert g.accessor(pos).dtype == np.int64
    np.testing.assert_array_equal(g.accessor(col), np.ones((3, 4)))


def test_external_buffer_and_gltf_glb_equivalence():
    b = _moving_triangle("LINEAR", [0.0, 1.0], [[0, 0, 0], [1, 1, 1]])
    asked = []

    def read(path: str, byte_length: int) -> bytes:
        asked.append((path, byte_length))
        return bytes(b.blob) + b"trailing bytes past byteLength are cut"

    ext = bake.bake(load_gltf(b.gltf_bytes("my%20data.bin"), read), 0, np.array([0.5]))
    assert asked == [("my data.bin", len(b.blob))]
    np.testing.assert_array_equal(ext.vertices, _bake(b, [0.5]).vertices)
    np.testing.assert_array_equal(bake.bake(load_gltf(b.gltf_bytes()), 0, np.array([0.5])).vertices, ext.vertices)


def test_list_animations_and_frame_times():
    b = _moving_triangle("LINEAR", [0.5, 2.5], [[0, 0, 0], [1, 0, 0]])
    b.animate(0, "scale", [1.0, 3.0, 4.0], [[1, 1, 1]] * 3, anim=1)
    b.doc["animations"][1]["name"] = "grow"
    infos = bake.list_animations(load_gltf(b.glb()))
    assert infos == [bake.AnimationInfo(0, "", 0.5, 2.5, 2), bake.AnimationInfo(1, "grow", 1.0, 4.0, 3)]
    np.testing.assert_allclose(bake.frame_times(infos[0], 5), [0.5, 1.0, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(bake.frame_times(infos[1], 3, (1.5, 2.5)), [1.5, 2.0, 2.5])


def test_read_errors():
    b = _moving_triangle("LINEAR", [0.0, 1.0], [[0, 0, 0], [1, 0, 0]])
    glb = b.glb()
    assert _reason(lambda: load_gltf(b"\x00\x01garbage")) == "corrupt_file"
    assert _reason(lambda: load_gltf(b"glTF" + struct.pack("<II", 2, 40) + b"\0" * 28)) == "corrupt_file"
    assert _reason(lambda: load_gltf(glb[: len(glb) - 10])) == "truncated_file"
    assert _reason(lambda: load_gltf(b'{"asset": {"version": "1.0"}}')) == "unsupported_version"
    bad_chunk = glb[:12] + struct.pack("<I", 10**6) + glb[16:]
    assert _reason(lambda: load_gltf(bad_chunk)) == "corrupt_file"

    def missing(path: str, byte_length: int) -> bytes:
        raise FileNotFoundError(path)

    g = load_gltf(b.gltf_bytes("data.bin"), missing)
    assert _reason(lambda: bake.bake(g, 0, np.array([0.0]))) == "missing_buffer"
    g = load_gltf(b.gltf_bytes("data.bin"), lambda p, n: bytes(b.blob[:20]))  # shorter than byteLength
    assert _reason(lambda: bake.bake(g, 0, np.array([0.0]))) == "missing_buffer"
    b.doc["extensionsRequired"] = ["KHR_draco_mesh_compression"]
    assert _reason(lambda: load_gltf(b.glb())) == "unsupported_extension"
    b.doc["extensionsRequired"] = ["KHR_mesh_quantization", "KHR_materials_emissive_strength"]
    load_gltf(b.glb())


def test_bake_errors():
    still = Builder()
    still.node(mesh=still.mesh(TRI, [0, 1, 2]))
    assert _reason(lambda: _bake(still, [0.0])) == "no_animation"
    moving = _moving_triangle("LINEAR", [0.0, 1.0], [[0, 0, 0], [1, 0, 0]])
    assert _reason(lambda: _bake(moving, [0.0], anim=1)) == "animation_index_out_of_range"
    assert _reason(lambda: _bake(_moving_triangle("LINEAR", [1.0], [[0, 0, 0]]), [0.0])) == "single_keyframe"
    nan = _moving_triangle("LINEAR", [0.0, 1.0], [[0, 0, 0], [np.nan, 0, 0]])
    assert _reason(lambda: _bake(nan, [0.0, 1.0])) == "non_finite_vertices"
    assert _reason(lambda: _bake(moving, [0.0], config=bake.BakeConfig(max_faces=0))) == "too_many_faces"
    flat = Builder()
    n = flat.node(mesh=flat.mesh([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [0, 1, 2]))
    flat.animate(n, "translation", [0.0, 1.0], [[0, 0, 0], [1, 0, 0]])
    assert _reason(lambda: _bake(flat, [0.0])) == "zero_area"
    lines = Builder()
    n = lines.node(mesh=lines.mesh(TRI, None, mode=1))
    lines.animate(n, "translation", [0.0, 1.0], [[0, 0, 0], [1, 0, 0]])
    assert _reason(lambda: _bake(lines, [0.0])) == "no_geometry"


ASSET_FILES = sorted(ASSETS.glob("*.glb"))


@pytest.mark.parametrize("path", ASSET_FILES, ids=lambda p: p.stem)
def test_real_assets_bake_and_twins_agree(path: Path):
    glb = load_gltf(path.read_bytes())
    gltf = load_gltf(path.with_suffix(".gltf").read_bytes())
    infos = bake.list_animations(glb)
    assert infos and infos == bake.list_animations(gltf)
    for info in infos:
        times = bake.frame_times(info, 16)
        a, b = bake.bake(glb, info.index, times), bake.bake(gltf, info.index, times)
        assert a.vertices.shape[0] == 16 and np.all(np.isfinite(a.vertices))
        assert a.faces.min() >= 0 and a.faces.max() < a.vertices.shape[1]
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.faces, b.faces)
        np.testing.assert_array_equal(a.colors, b.colors)
        # the animation moves something (every sample is animated)
        assert np.abs(a.vertices - a.vertices[:1]).max() > 1e-3


def test_assets_present():
    assert len(ASSET_FILES) >= 7, f"sample assets missing from {ASSETS}"
