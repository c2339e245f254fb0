"""Declared sizes are never trusted: hostile glTF files are refused from their JSON alone, fast
and without allocating anything of the size they declare (pipelines.limits, gltf_io, bake).

Each case builds a tiny valid animated tetrahedron with the repo's writer, edits its JSON, and
checks the (stage, reason) of the refusal, the limit it names, the time it took, and (with
tracemalloc, which sees numpy's allocations too) that the peak allocation stayed within what
parsing the file's own JSON costs plus a few MB.
"""
from __future__ import annotations

import copy
import json
import struct
import time
import tracemalloc

import numpy as np
import pytest

from pipelines import bake
from pipelines.errors import AssetError
from pipelines.gltf_io import load_gltf
from pipelines.gltf_write import Channel, GltfBuilder, Primitive
from pipelines.limits import LimitsConfig

TETRA = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int64)
MB = 2**20
SLACK = 4 * MB  # allocations allowed beyond what parsing the file's JSON costs
MAX_SECONDS = 5.0  # generous for a 2-core CI machine; every case takes well under a second here


def _tetra() -> tuple[dict, bytes]:
    """(JSON document, binary buffer) of a one-node tetrahedron moved by a LINEAR animation."""
    b = GltfBuilder()
    node = b.add_node(mesh=b.add_mesh([Primitive(TETRA, TETRA_FACES)]))
    b.add_animation([Channel(node, "translation", np.array([0.0, 1.0]), np.array([[0, 0, 0], [1, 0, 0]]))])
    return b.document(), b.binary()


def _glb(doc: dict, bin_: bytes | None) -> bytes:
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    body = struct.pack("<II", len(js), 0x4E4F534A) + js
    if bin_ is not None:
        data = bin_ + b"\0" * (-len(bin_) % 4)
        body += struct.pack("<II", len(data), 0x004E4942) + data
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def _prim(doc: dict) -> dict:
    return doc["meshes"][0]["primitives"][0]


def _add(doc: dict, key: str, item: dict) -> int:
    doc.setdefault(key, []).append(item)
    return len(doc[key]) - 1


def _run(data: bytes, *, do_bake: bool, limits: LimitsConfig | None, config: bake.BakeConfig | None, reader=None):
    g = load_gltf(data, reader, limits)
    if do_bake:  # what process_asset / process_clip do next
        infos = bake.list_animations(g)
        bake.bake(g, 0, bake.frame_times(infos[0], 16), config)
    return g


def _refused(doc: dict, bin_: bytes | None = None, *, do_bake: bool = False, limits: LimitsConfig | None = None,
             config: bake.BakeConfig | None = None, reader=None) -> AssetError:
    """The AssetError the GLB of (doc, bin_) is refused with; asserts it is fast and small."""
    data = _glb(doc, bin_)
    text = json.dumps(doc)
    tracemalloc.start()
    json.loads(text)  # what the JSON alone costs to parse: the floor of any reader
    parse_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    t0 = time.perf_counter()
    with pytest.raises(AssetError) as e:
        _run(data, do_bake=do_bake, limits=limits, config=config, reader=reader)
    elapsed = time.perf_counter() - t0
    assert elapsed < MAX_SECONDS, f"refused in {elapsed:.1f} s"

    tracemalloc.start()
    try:
        _run(data, do_bake=do_bake, limits=limits, config=config, reader=reader)
    except AssetError as again:
        assert (again.stage, again.reason) == (e.value.stage, e.value.reason)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    budget = parse_peak + 2 * len(data) + SLACK
    assert peak < budget, f"peak allocation {peak / MB:.1f} MB > {budget / MB:.1f} MB ({e.value})"
    return e.value


def _outcome(err: AssetError) -> tuple[str, str]:
    return err.stage, err.reason


# ---------------------------------------------------------------- too_large


def test_position_without_buffer_view_30m():
    doc, bin_ = _tetra()
    pos = _prim(doc)["attributes"]["POSITION"]
    doc["accessors"][pos] = {"componentType": 5126, "count": 30_000_000, "type": "VEC3"}  # no bufferView
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("read", "too_large") and "limits.max_accessor_elements" in err.detail


def _morph_asset(vertices: int, targets: int) -> tuple[dict, bytes]:
    """The tetrahedron's primitive replaced by `vertices` declared points (no bufferView, no
    indices) with `targets` morph targets sharing one declared delta accessor."""
    doc, bin_ = _tetra()
    prim = _prim(doc)
    del prim["indices"]
    prim["attributes"]["POSITION"] = _add(doc, "accessors", {"componentType": 5126, "count": vertices, "type": "VEC3"})
    delta = _add(doc, "accessors", {"componentType": 5126, "count": vertices, "type": "VEC3"})
    prim["targets"] = [{"POSITION": delta}] * targets
    return doc, bin_


def test_256_morph_targets_on_1_5m_vertices():
    doc, bin_ = _morph_asset(1_500_000, 256)
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("read", "too_large") and "limits." in err.detail
    assert "limits.max_vertices" in err.detail  # the first limit the file meets


def test_morph_values_limit():
    doc, bin_ = _morph_asset(100_000, 256)  # 25.6M values > 16M
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("read", "too_large") and "limits.max_morph_values" in err.detail


def test_vertices_counted_per_mesh_instance():
    doc, bin_ = _tetra()
    nodes = doc["nodes"]
    for _ in range(3):
        nodes.append({"mesh": 0})
        doc["scenes"][0]["nodes"].append(len(nodes) - 1)
    limits = LimitsConfig(max_vertices=4 * 4 - 1)  # 4 instances x 4 vertices
    err = _refused(doc, bin_, do_bake=True, limits=limits)
    assert _outcome(err) == ("read", "too_large") and "limits.max_vertices" in err.detail
    _run(_glb(doc, bin_), do_bake=True, limits=LimitsConfig(max_vertices=16), config=None)


def test_million_empty_nodes():
    doc, bin_ = _tetra()
    doc["nodes"] += [{} for _ in range(1_000_000)]
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("read", "too_large") and "limits.max_nodes" in err.detail


def test_skin_with_million_joints():
    doc, bin_ = _tetra()
    doc["skins"] = [{"joints": [0] * 1_000_000}]
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("read", "too_large") and "limits.max_joints" in err.detail
    doc["skins"] = [{"joints": [0] * 40_000}, {"joints": [0] * 40_000}]  # summed over skins
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("read", "too_large") and "limits.max_joints" in err.detail


def test_five_million_keyframes():
    doc, bin_ = _tetra()
    anim = doc["animations"][0]
    times = _add(doc, "accessors", {"componentType": 5126, "count": 5_000_000, "type": "SCALAR"})
    anim["samplers"][0]["input"] = times  # one accessor: its own limit fires first
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("read", "too_large") and "limits." in err.detail
    # 2 x 2.5M: each accessor within max_accessor_elements, the animation's sum is not
    doc, bin_ = _tetra()
    anim = doc["animations"][0]
    half = _add(doc, "accessors", {"componentType": 5126, "count": 2_500_000, "type": "SCALAR"})
    anim["samplers"][0]["input"] = half
    anim["samplers"].append(dict(anim["samplers"][0]))
    anim["channels"].append({"sampler": 1, "target": {"node": 0, "path": "scale"}})
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("read", "too_large") and "limits.max_keyframes" in err.detail


def test_buffer_byte_length_above_max_file_mb():
    doc, bin_ = _tetra()
    doc["buffers"][0]["byteLength"] = 600 * MB
    doc["bufferViews"].append({"buffer": 0, "byteOffset": 0, "byteLength": 600 * MB})
    err = _refused(doc, bin_)
    assert _outcome(err) == ("read", "too_large") and "limits.max_file_mb" in err.detail


# ---------------------------------------------------------------- faces before decoding


def test_faces_from_json_before_decoding():
    # 3M indices with no bufferView (zeros) = 1M faces > max_faces 500k: refused, nothing decoded
    doc, bin_ = _tetra()
    _prim(doc)["indices"] = _add(doc, "accessors", {"componentType": 5125, "count": 3_000_000, "type": "SCALAR"})
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("bake", "too_many_faces")
    # many faces declared over a tiny buffer: corrupt_file, before anything is read
    doc, bin_ = _tetra()
    doc["accessors"][_prim(doc)["indices"]]["count"] = 3_000_000
    err = _refused(doc, bin_, do_bake=True)
    assert _outcome(err) == ("read", "corrupt_file")


def test_too_many_faces_decodes_nothing():
    doc, bin_ = _tetra()
    g = load_gltf(_glb(doc, bin_))
    assert g.scene_sizes.faces == 4
    with pytest.raises(AssetError) as e:
        bake.bake(g, 0, np.array([0.0, 1.0]), bake.BakeConfig(max_faces=3))
    assert _outcome(e.value) == ("bake", "too_many_faces")
    assert g._accessors == {} and g._buffers == {}  # refused before touching any buffer
    bake.bake(g, 0, np.array([0.0, 1.0]), bake.BakeConfig(max_faces=4))
    # strips and fans declare count - 2 triangles; points/lines none
    for mode, faces in ((5, 12 - 2), (6, 12 - 2), (4, 12 // 3), (1, 0), (0, 0)):
        d = copy.deepcopy(doc)
        _prim(d)["mode"] = mode
        assert load_gltf(_glb(d, bin_)).scene_sizes.faces == faces, mode
    d = copy.deepcopy(doc)
    del _prim(d)["indices"]
    assert load_gltf(_glb(d, bin_)).scene_sizes.faces == 4 // 3  # POSITION count // 3


# ---------------------------------------------------------------- corrupt declarations


def _corrupt_cases() -> dict[str, tuple[dict, bytes]]:
    cases = {}

    def case(name):
        doc, bin_ = _tetra()
        cases[name] = (doc, bin_)
        return doc

    doc = case("negative_count")
    doc["accessors"][_prim(doc)["attributes"]["POSITION"]]["count"] = -1
    doc = case("negative_count_no_view")
    doc["accessors"].append({"componentType": 5126, "count": -5, "type": "VEC3"})
    doc = case("float_count")
    doc["accessors"][0]["count"] = 3.5
    doc = case("bool_count")
    doc["accessors"][0]["count"] = True
    doc = case("negative_byte_offset")
    doc["bufferViews"][0]["byteOffset"] = -4
    doc = case("huge_byte_offset")
    doc["bufferViews"][0]["byteOffset"] = 2**62
    doc = case("huge_byte_length")
    doc["buffers"][0]["byteLength"] = 2**62
    doc = case("view_outside_buffer")
    doc["bufferViews"][0]["byteLength"] = doc["buffers"][0]["byteLength"] + 4
    doc = case("no_byte_length")
    del doc["buffers"][0]["byteLength"]
    doc = case("absurd_byte_stride")
    doc["bufferViews"][doc["accessors"][_prim(doc)["attributes"]["POSITION"]]["bufferView"]]["byteStride"] = 4096
    doc = case("byte_stride_not_multiple_of_component")
    doc["bufferViews"][doc["accessors"][_prim(doc)["attributes"]["POSITION"]]["bufferView"]]["byteStride"] = 14
    doc = case("byte_stride_smaller_than_element")
    doc["bufferViews"][doc["accessors"][_prim(doc)["attributes"]["POSITION"]]["bufferView"]]["byteStride"] = 8
    doc = case("accessor_outside_view")
    doc["accessors"][_prim(doc)["attributes"]["POSITION"]]["byteOffset"] = 4
    doc = case("sparse_count_above_count")
    pos = _prim(doc)["attributes"]["POSITION"]
    view = doc["accessors"][pos]["bufferView"]
    doc["accessors"][pos]["sparse"] = {"count": 5, "indices": {"bufferView": view, "componentType": 5121},
                                       "values": {"bufferView": view}}
    doc = case("sparse_negative_count")
    doc["accessors"][pos]["sparse"] = {"count": -1, "indices": {"bufferView": view, "componentType": 5121},
                                       "values": {"bufferView": view}}
    doc = case("sparse_values_outside_view")
    small = _add(doc, "bufferViews", {"buffer": 0, "byteOffset": 0, "byteLength": 4})
    doc["accessors"][pos]["sparse"] = {"count": 2, "indices": {"bufferView": small, "componentType": 5121},
                                       "values": {"bufferView": small}}
    doc = case("node_cycle")
    doc["nodes"] += [{"children": [2]}, {"children": [1]}]
    doc = case("node_own_child")
    doc["nodes"].append({"children": [1]})
    doc = case("node_two_parents")
    doc["nodes"] += [{"children": [3]}, {"children": [3]}, {}]
    doc = case("cycle_reached_from_scene")
    doc["nodes"] += [{"children": [2]}, {"children": [1]}]
    doc["scenes"][0]["nodes"].append(1)
    doc = case("mesh_index_out_of_range")
    doc["nodes"][0]["mesh"] = 7
    doc = case("accessor_index_out_of_range")
    _prim(doc)["indices"] = 99
    doc = case("skin_joint_out_of_range")
    doc["skins"] = [{"joints": [0, 5]}]
    doc = case("children_not_a_list")
    doc["nodes"][0]["children"] = 3
    doc = case("keyframe_sampler_out_of_range")
    doc["animations"][0]["channels"][0]["sampler"] = 3
    doc = case("target_count_differs")
    _prim(doc)["targets"] = [{"POSITION": _add(doc, "accessors", {"componentType": 5126, "count": 5, "type": "VEC3"})}]
    return cases


@pytest.mark.parametrize("name", sorted(_corrupt_cases()))
def test_malformed_declarations_are_corrupt_file(name):
    doc, bin_ = _corrupt_cases()[name]
    assert _outcome(_refused(doc, bin_, do_bake=True)) == ("read", "corrupt_file")


def _times_glb(times) -> bytes:
    b = GltfBuilder()
    node = b.add_node(mesh=b.add_mesh([Primitive(TETRA, TETRA_FACES)]))
    n = len(times)
    b.add_animation([Channel(node, "translation", np.asarray(times, np.float64), np.zeros((n, 3)))])
    return b.to_glb()


@pytest.mark.parametrize("times", [[0.0, np.nan], [0.0, np.inf], [1.0, 0.0], [np.nan, 1.0]], ids=str)
def test_bad_keyframe_times_are_corrupt_file(times):
    g = load_gltf(_times_glb(times))
    for fn in (lambda: bake.list_animations(g), lambda: bake.bake(g, 0, np.array([0.0, 1.0]))):
        with pytest.raises(AssetError) as e:
            fn()
        assert _outcome(e.value) == ("read", "corrupt_file")


def test_joint_index_out_of_range_is_corrupt_file():
    b = GltfBuilder()
    j = b.add_node()
    joints = np.array([[0, 0, 0, 0]] * 3 + [[3, 0, 0, 0]])  # joint 3 of a one-joint skin
    weights = np.array([[1.0, 0, 0, 0]] * 4)
    mesh = b.add_mesh([Primitive(TETRA, TETRA_FACES, joints=joints, weights=weights)])
    b.add_node(mesh=mesh, skin=b.add_skin([j]))
    b.add_animation([Channel(j, "translation", np.array([0.0, 1.0]), np.array([[0, 0, 0], [1, 0, 0]]))])
    g = load_gltf(b.to_glb())
    with pytest.raises(AssetError) as e:
        bake.bake(g, 0, np.array([0.0, 1.0]))
    assert _outcome(e.value) == ("read", "corrupt_file")


def test_deeply_nested_json_is_corrupt_file():
    data = b'{"asset": {"version": "2.0"}, "extras": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(AssetError) as e:
        load_gltf(data)
    assert _outcome(e.value) == ("read", "corrupt_file")


# ---------------------------------------------------------------- buffers


def test_glb_bin_chunk_shorter_than_byte_length():
    doc, bin_ = _tetra()
    doc["buffers"][0]["byteLength"] = len(bin_) + 64
    with pytest.raises(AssetError) as e:
        load_gltf(_glb(doc, bin_))
    assert _outcome(e.value) == ("read", "corrupt_file")


def test_external_reader_gets_byte_length():
    doc, bin_ = _tetra()
    doc["buffers"][0]["uri"] = "tetra%20data.bin"
    data = json.dumps(doc).encode()
    times = np.array([0.0, 0.5, 1.0])
    expect = bake.bake(load_gltf(_glb(*_tetra())), 0, times).vertices
    asked = []

    def longer(uri: str, byte_length: int) -> bytes:
        asked.append((uri, byte_length))
        return bin_ + b"\xff" * 100  # bytes past byteLength are cut

    g = load_gltf(data, longer)
    np.testing.assert_array_equal(bake.bake(g, 0, times).vertices, expect)
    assert asked == [("tetra data.bin", len(bin_))]
    assert len(g.buffer(0)) == len(bin_)

    g = load_gltf(data, lambda uri, n: bin_[:-1])  # shorter than byteLength
    with pytest.raises(AssetError) as e:
        bake.bake(g, 0, times)
    assert _outcome(e.value) == ("read", "missing_buffer")

    own = AssetError("read", "unsafe_uri", "refused by the reader")

    def refusing(uri: str, byte_length: int) -> bytes:
        raise own

    g = load_gltf(data, refusing)
    with pytest.raises(AssetError) as e:
        bake.bake(g, 0, times)
    assert e.value is own  # propagates unchanged


# ---------------------------------------------------------------- limits of 0, valid assets


def test_limit_of_zero_means_no_limit():
    doc, bin_ = _tetra()
    doc["nodes"] += [{} for _ in range(10)]
    doc["accessors"].append({"componentType": 5126, "count": 6_000_000, "type": "VEC3"})  # not decoded
    data = _glb(doc, bin_)
    with pytest.raises(AssetError) as e:
        load_gltf(data, limits=LimitsConfig(max_nodes=5))
    assert _outcome(e.value) == ("read", "too_large") and "limits.max_nodes=5" in e.value.detail
    with pytest.raises(AssetError) as e:
        load_gltf(data)
    assert "limits.max_accessor_elements" in e.value.detail
    off = LimitsConfig(max_file_mb=0, max_accessor_elements=0, max_vertices=0, max_morph_values=0, max_nodes=0,
                       max_joints=0, max_keyframes=0)
    g = load_gltf(data, limits=off)
    assert g.limits is off
    times = np.array([0.0, 0.5, 1.0])
    np.testing.assert_array_equal(bake.bake(g, 0, times).vertices,
                                  bake.bake(load_gltf(_glb(*_tetra())), 0, times).vertices)


def test_valid_asset_bakes_identically_under_any_limits():
    doc, bin_ = _tetra()
    data = _glb(doc, bin_)
    times = np.array([0.0, 0.25, 1.0])
    default = bake.bake(load_gltf(data), 0, times)
    off_limits = LimitsConfig(max_accessor_elements=0, max_vertices=0, max_nodes=0)
    off = bake.bake(load_gltf(data, limits=off_limits), 0, times)
    tight = bake.bake(load_gltf(data, limits=LimitsConfig(max_accessor_elements=12, max_vertices=4, max_nodes=1,
                                                          max_keyframes=2, max_morph_values=1, max_joints=1)), 0, times)
    for out in (off, tight):
        np.testing.assert_array_equal(out.vertices, default.vertices)
        np.testing.assert_array_equal(out.faces, default.faces)
    np.testing.assert_allclose(default.vertices[2], TETRA + [1, 0, 0])
