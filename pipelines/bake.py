"""Animation baking: one glTF animation evaluated at T times -> T vertex frames, one topology.

Follows the glTF 2.0 specification: default scene (`scene`, else scenes[0], else every root
node), node hierarchy (matrix or TRS), animated TRS and morph-weight channels with LINEAR
(rotations: shortest-path slerp of the keys normalised to unit length), STEP and CUBICSPLINE (Hermite, tangents scaled by the key
interval, rotations re-normalised) interpolation, clamped outside the keyframe range; skins
(inverse bind matrices, every JOINTS_n/WEIGHTS_n set, weights renormalised; the skinned mesh
node's own transform is ignored); morph targets (POSITION deltas; weights from mesh.weights,
node.weights, animation). All mesh instances and primitives of the scene are merged into one
mesh in world space (glTF Y-up, metres, no normalisation).

Choices the spec leaves open, documented here:
- Primitives in TRIANGLE_STRIP/FAN mode are converted to triangles; POINTS/LINES primitives and
  primitives without POSITION are skipped and counted in `Baked.skipped_primitives`.
- Faces whose three indices are not distinct (strip restarts, degenerate data) are dropped, and
  so are vertices no triangle uses (primitives often index a shared vertex buffer).
- Colours: material baseColorFactor (or KHR_materials_pbrSpecularGlossiness diffuseFactor)
  times COLOR_0, per vertex. Textures are left to the renderer: the bake keeps each vertex's
  TEXCOORD_0/1 and each face's material (pipelines.materials reads the images).
- A skinned vertex whose weights sum to 0 is not deformed by the skin: it follows the mesh
  node's world transform, like a vertex outside every vertex group in Blender.

Untrusted sizes: `load_gltf` has already checked every declaration of the document and the
default scene's vertex and morph sizes against `LimitsConfig` (stage "read", reason
``too_large``; keyframes too, for every animation, before `list_animations` or `bake` samples
anything). `bake` then checks the scene's face count as the JSON declares it (index elements
// 3, strips/fans - 2, summed over every mesh instance) against `BakeConfig.max_faces` before
decoding any accessor; points/lines primitives are skipped without being decoded.

Errors are `AssetError("bake", reason, detail)`; reasons (stable):
``no_animation``, ``animation_index_out_of_range``, ``single_keyframe`` (zero duration),
``no_geometry`` (no triangles in the scene), ``too_many_faces`` (the faces the JSON declares
> BakeConfig.max_faces, checked before decoding anything; a max_faces of 0 allows none),
``non_finite_vertices`` (NaN/inf in a baked frame), ``zero_area`` (every face has zero area in
frame 0). Structurally broken files raise `AssetError("read", "corrupt_file", ...)`, including
keyframe times that are empty, NaN/inf or decreasing (found when a sampler is first read, by
`list_animations` or `bake`), a joint index (JOINTS_n) outside its skin, a primitive index
outside POSITION; the node hierarchy is walked iteratively, never recursively, and a cycle or
a node with two parents is ``corrupt_file``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy.spatial.transform import Rotation

from pipelines.errors import AssetError
from pipelines.gltf_io import TRIANGLE_MODES, Gltf, declared_faces
from pipelines.surface import face_area_volume

TRS_PATHS = {"translation": 3, "rotation": 4, "scale": 3}
INTERPOLATIONS = ("LINEAR", "STEP", "CUBICSPLINE")


@dataclass
class BakeConfig:
    max_faces: int = 500_000  # reject bigger meshes before any per-frame work
    # Skinning blends one 3x4 matrix per vertex and frame; vertices are processed in chunks of
    # this size so memory stays ~chunk * T * 96 bytes however large the mesh is.
    skin_chunk_vertices: int = 65_536


@dataclass(frozen=True)
class AnimationInfo:
    index: int
    name: str  # "" when the animation has no name
    start: float  # seconds: min over the samplers' first keyframes
    end: float  # seconds: max over the samplers' last keyframes
    num_keyframes: int  # distinct keyframe times over all samplers


@dataclass
class Baked:
    vertices: np.ndarray  # [T,V,3] float64, world space
    faces: np.ndarray  # [F,3] int64
    colors: np.ndarray  # [V,4] float32 RGBA, linear
    times: np.ndarray  # [T] float64 seconds
    texcoords: np.ndarray | None = None  # [V,2,2] float32: TEXCOORD_0/1 per vertex, NaN where a primitive has none
    face_material: np.ndarray | None = None  # [F] int32 glTF material index per face, -1 = none
    skipped_primitives: int = 0  # points/lines/no-POSITION primitives left out


def _bake_err(reason: str, detail: str) -> AssetError:
    return AssetError("bake", reason, detail)


def _corrupt(detail: str) -> AssetError:
    return AssetError("read", "corrupt_file", detail)


# ---------------------------------------------------------------- animations


@dataclass
class _Channel:
    node: int
    path: str  # translation | rotation | scale | weights
    times: np.ndarray  # [n] keyframe times
    values: np.ndarray  # [n, 1 or 3 (CUBICSPLINE in/value/out), C]
    interpolation: str


def _key_times(g: Gltf, sampler: dict, anim_index: int) -> np.ndarray:
    times = np.asarray(g.accessor(sampler.get("input")), np.float64).reshape(-1)
    if len(times) == 0 or not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        raise _corrupt(f"animation {anim_index}: keyframe times empty, non-finite or decreasing")
    return times


def _channels(g: Gltf, anim_index: int) -> list[_Channel]:
    anim = g.item("animations", anim_index)
    samplers, out = anim.get("samplers", []), []
    for ch in anim.get("channels", []):
        target = ch.get("target", {})
        node, path = target.get("node"), target.get("path")
        # Channels without a node (KHR_animation_pointer) animate nothing we bake.
        if node is None or path not in (*TRS_PATHS, "weights"):
            continue
        g.item("nodes", node)
        s = ch.get("sampler")
        if not isinstance(s, int) or not 0 <= s < len(samplers):
            raise _corrupt(f"animation {anim_index}: channel sampler {s!r} does not exist")
        sampler = samplers[s]
        times = _key_times(g, sampler, anim_index)
        interp = sampler.get("interpolation", "LINEAR")
        if interp not in INTERPOLATIONS:
            raise _corrupt(f"animation {anim_index}: unknown interpolation {interp!r}")
        k = 3 if interp == "CUBICSPLINE" else 1
        values = np.asarray(g.accessor(sampler.get("output")), np.float64).reshape(-1)
        width = TRS_PATHS.get(path)
        if width is None:  # weights: a flat scalar list, n * k * (number of morph targets)
            if values.size % (len(times) * k):
                raise _corrupt(f"animation {anim_index}: weights output does not match its keyframes")
            width = values.size // (len(times) * k)
        if values.size != len(times) * k * width:
            raise _corrupt(f"animation {anim_index}: sampler {s} output size {values.size} for {len(times)} keys")
        out.append(_Channel(node, path, times, values.reshape(len(times), k, width), interp))
    return out


def list_animations(g: Gltf) -> list[AnimationInfo]:
    """Every animation of the file with its time range (over all of its samplers)."""
    infos = []
    for i, anim in enumerate(g.items("animations")):
        inputs = [_key_times(g, s, i) for s in anim.get("samplers", [])]
        allt = np.concatenate(inputs) if inputs else np.zeros(0)
        start, end = (float(allt.min()), float(allt.max())) if len(allt) else (0.0, 0.0)
        infos.append(AnimationInfo(i, str(anim.get("name", "")), start, end, int(len(np.unique(allt)))))
    return infos


def frame_times(info: AnimationInfo, num_frames: int, window: tuple[float, float] | None = None) -> np.ndarray:
    """`num_frames` times evenly over [start, end] (both included), or over `window`."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    lo, hi = window if window is not None else (info.start, info.end)
    return np.linspace(float(lo), float(hi), num_frames)


def _normalize(q: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):  # a zero quaternion -> NaN, rejected later
        return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _slerp(q0: np.ndarray, q1: np.ndarray, u: np.ndarray) -> np.ndarray:
    q0, q1 = _normalize(q0), _normalize(q1)  # keys slightly off unit length would skew the angle
    d = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(d < 0, -q1, q1)  # shortest path
    d = np.clip(np.abs(d), 0.0, 1.0)
    theta = np.arccos(d)
    s = np.sin(theta)
    small = s < 1e-8  # nearly parallel: slerp degenerates to lerp
    safe = np.where(small, 1.0, s)
    w0 = np.where(small, 1 - u, np.sin((1 - u) * theta) / safe)
    w1 = np.where(small, u, np.sin(u * theta) / safe)
    return _normalize(w0 * q0 + w1 * q1)


def _sample(ch: _Channel, times: np.ndarray) -> np.ndarray:
    """Channel value [T, C] at each time (clamped to the keyframe range)."""
    key, v = ch.times, ch.values
    mid = 1 if ch.interpolation == "CUBICSPLINE" else 0  # the value among (in, value, out)
    rot = ch.path == "rotation"
    n = len(key)
    if n == 1:
        out = np.repeat(v[:1, mid], len(times), axis=0)
        return _normalize(out) if rot else out
    t = np.clip(times, key[0], key[-1])
    if ch.interpolation == "STEP":
        return v[np.clip(np.searchsorted(key, t, side="right") - 1, 0, n - 1), mid]
    i = np.clip(np.searchsorted(key, t, side="right") - 1, 0, n - 2)
    dt = key[i + 1] - key[i]
    u = np.where(dt > 0, (t - key[i]) / np.where(dt > 0, dt, 1.0), 1.0)[:, None]
    if ch.interpolation == "LINEAR":
        if rot:
            return _slerp(v[i, 0], v[i + 1, 0], u)
        return (1 - u) * v[i, 0] + u * v[i + 1, 0]
    # CUBICSPLINE (spec Appendix C): tangents are per second, scaled by the key interval.
    u2, u3, d = u * u, u * u * u, dt[:, None]
    out = (
        (2 * u3 - 3 * u2 + 1) * v[i, 1]
        + (u3 - 2 * u2 + u) * d * v[i, 2]
        + (-2 * u3 + 3 * u2) * v[i + 1, 1]
        + (u3 - u2) * d * v[i + 1, 0]
    )
    return _normalize(out) if rot else out


# ---------------------------------------------------------------- node transforms


def _quat_to_mat(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] (x, y, z, w) -> rotation matrices [..., 3, 3]."""
    x, y, z, w = np.moveaxis(_normalize(q), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def _trs_matrix(t: np.ndarray, r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """[T,3], [T,4], [T,3] -> [T,4,4] = T * R * S."""
    m = np.zeros((len(t), 4, 4))
    m[:, :3, :3] = _quat_to_mat(r) * s[:, None, :]
    m[:, :3, 3] = t
    m[:, 3, 3] = 1.0
    return m


def _node_matrix(node: dict) -> np.ndarray | None:
    if "matrix" not in node:
        return None
    m = np.asarray(node["matrix"], np.float64)
    if m.shape != (16,):
        raise _corrupt("node matrix must have 16 numbers")
    return m.reshape(4, 4).T  # stored column-major


def _node_trs(node: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = _node_matrix(node)
    if m is None:
        out = tuple(
            np.asarray(node.get(key, default), np.float64)
            for key, default in (("translation", [0, 0, 0]), ("rotation", [0, 0, 0, 1]), ("scale", [1, 1, 1]))
        )
        if [x.shape for x in out] != [(3,), (4,), (3,)]:
            raise _corrupt("node translation/rotation/scale has the wrong length")
        return out
    # The spec forbids animating a node that has a matrix; tolerate it by decomposing.
    s = np.linalg.norm(m[:3, :3], axis=0)
    if np.linalg.det(m[:3, :3]) < 0:
        s[0] = -s[0]
    r = Rotation.from_matrix(m[:3, :3] / np.where(s == 0, 1, s)).as_quat()
    return m[:3, 3].copy(), r, s


def _parents(g: Gltf) -> np.ndarray:
    nodes = g.items("nodes")
    parent = np.full(len(nodes), -1, np.int64)
    for i, node in enumerate(nodes):
        for c in node.get("children", []):
            g.item("nodes", c)
            if parent[c] != -1 or c == i:
                raise _corrupt(f"node {c} has more than one parent")
            parent[c] = i
    return parent


def _world_matrices(g: Gltf, channels: list[_Channel], times: np.ndarray) -> np.ndarray:
    """World matrix of every node at every time, [N, T, 4, 4]."""
    nodes, T = g.items("nodes"), len(times)
    trs = {path: np.zeros((len(nodes), T, w)) for path, w in TRS_PATHS.items()}
    animated = {ch.node for ch in channels if ch.path in TRS_PATHS}
    fixed = {}  # nodes whose local matrix is given and not animated
    for i, node in enumerate(nodes):
        m = _node_matrix(node)
        if m is not None and i not in animated:
            fixed[i] = m
            continue
        for path, value in zip(TRS_PATHS, _node_trs(node)):
            trs[path][i] = value
    for ch in channels:
        if ch.path in TRS_PATHS:
            trs[ch.path][ch.node] = _sample(ch, times)
    flat = [trs[p].reshape(-1, w) for p, w in TRS_PATHS.items()]
    local = _trs_matrix(*flat).reshape(len(nodes), T, 4, 4)
    for i, m in fixed.items():
        local[i] = m
    parent = _parents(g)
    world = np.empty_like(local)
    done = np.zeros(len(nodes), bool)
    stack = [int(i) for i in np.flatnonzero(parent < 0)][::-1]
    while stack:
        i = stack.pop()
        world[i] = local[i] if parent[i] < 0 else world[parent[i]] @ local[i]
        done[i] = True
        stack.extend(reversed(nodes[i].get("children", [])))
    if not done.all():
        raise _corrupt("node hierarchy has a cycle")
    return world


# ---------------------------------------------------------------- geometry


def _triangles(g: Gltf, prim: dict, num_vertices: int) -> np.ndarray | None:
    """Triangle indices [F,3] of a primitive, or None for points/lines."""
    mode = prim.get("mode", 4)
    if mode not in (4, 5, 6):
        return None
    idx = g.accessor(prim["indices"]).reshape(-1) if "indices" in prim else np.arange(num_vertices)
    idx = idx.astype(np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= num_vertices):
        raise _corrupt(f"primitive index out of range (vertex count {num_vertices})")
    if mode == 4:
        tri = idx[: len(idx) // 3 * 3].reshape(-1, 3)
    elif len(idx) < 3:
        tri = np.zeros((0, 3), np.int64)
    elif mode == 5:  # strip: triangle i = (i, i+1+i%2, i+2-i%2), keeps the winding
        i = np.arange(len(idx) - 2)
        tri = np.stack([idx[i], idx[i + 1 + i % 2], idx[i + 2 - i % 2]], 1)
    else:  # fan: triangle i = (i+1, i+2, 0)
        i = np.arange(len(idx) - 2)
        tri = np.stack([idx[i + 1], idx[i + 2], np.full_like(i, idx[0])], 1)
    keep = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
    return tri[keep]


def _vertex_attr(g: Gltf, accessor: int, num_vertices: int, dtype=np.float64) -> np.ndarray:
    """A per-vertex accessor as [V, C], its count checked against POSITION."""
    a = np.asarray(g.accessor(accessor), dtype)
    if a.ndim != 2 or len(a) != num_vertices:
        raise _corrupt(f"accessor {accessor} has shape {a.shape}, expected {num_vertices} vectors")
    return a


def _colors(g: Gltf, prim: dict, num_vertices: int, used: np.ndarray) -> np.ndarray:
    factor = np.ones(4)
    if "material" in prim:
        mat = g.item("materials", prim["material"])
        sg = mat.get("extensions", {}).get("KHR_materials_pbrSpecularGlossiness", {})
        if "pbrMetallicRoughness" in mat:
            factor = np.asarray(mat["pbrMetallicRoughness"].get("baseColorFactor", factor), np.float64)
        elif "diffuseFactor" in sg:
            factor = np.asarray(sg["diffuseFactor"], np.float64)
    if factor.shape != (4,):
        raise _corrupt("material colour factor must have 4 numbers")
    colors = np.ones((len(used), 4))
    if "COLOR_0" in prim["attributes"]:
        c = _vertex_attr(g, prim["attributes"]["COLOR_0"], num_vertices)[used]
        if c.shape[1] not in (3, 4):
            raise _corrupt("COLOR_0 must be VEC3 or VEC4")
        colors[:, : c.shape[1]] = c
    return (colors * factor).astype(np.float32)


def _morph_weights(g: Gltf, node_index: int, mesh: dict, channels: list[_Channel], times: np.ndarray) -> np.ndarray:
    """Morph target weights [T, K] of a mesh instance (K = 0 without targets)."""
    node = g.item("nodes", node_index)
    default = node.get("weights", mesh.get("weights"))
    k = max((len(p.get("targets", [])) for p in mesh.get("primitives", [])), default=0)
    w = np.zeros((len(times), k))
    if default is not None:
        default = np.asarray(default, np.float64)[:k]
        w[:, : len(default)] = default
    for ch in channels:
        if ch.node == node_index and ch.path == "weights":
            a = _sample(ch, times)[:, :k]
            w[:, : a.shape[1]] = a
    return w


def _skin_setup(
    g: Gltf, skin_index: int, prim: dict, num_vertices: int, used: np.ndarray
) -> tuple[list[int], np.ndarray, scipy.sparse.csr_matrix] | None:
    """(joint nodes, inverse bind matrices [J,4,4], weights [len(used),J]) or None without JOINTS_0."""
    attrs = prim["attributes"]
    if "JOINTS_0" not in attrs or "WEIGHTS_0" not in attrs:
        return None
    skin = g.item("skins", skin_index)
    joints = list(skin.get("joints", []))
    for j in joints:
        g.item("nodes", j)
    if "inverseBindMatrices" in skin:
        ibm = np.asarray(g.accessor(skin["inverseBindMatrices"]), np.float64)
        if ibm.shape[1:] != (4, 4) or len(ibm) < len(joints):
            raise _corrupt(f"skin {skin_index}: inverseBindMatrices do not cover its {len(joints)} joints")
        ibm = ibm[: len(joints)]
    else:
        ibm = np.broadcast_to(np.eye(4), (len(joints), 4, 4))
    jsets, wsets, s = [], [], 0
    while f"JOINTS_{s}" in attrs and f"WEIGHTS_{s}" in attrs:
        jsets.append(_vertex_attr(g, attrs[f"JOINTS_{s}"], num_vertices, np.int64)[used])
        wsets.append(_vertex_attr(g, attrs[f"WEIGHTS_{s}"], num_vertices)[used])
        s += 1
    jidx, w = np.concatenate(jsets, 1), np.concatenate(wsets, 1)
    if jidx.shape != w.shape:
        raise _corrupt("JOINTS_n and WEIGHTS_n differ in width")
    used = w != 0
    if np.any(used & ((jidx < 0) | (jidx >= len(joints)))):
        raise _corrupt(f"skin {skin_index}: a joint index is out of range ({len(joints)} joints)")
    jidx = np.where(used, jidx, 0)
    total = w.sum(1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)  # renormalise
    rows = np.repeat(np.arange(len(used)), w.shape[1])
    weights = scipy.sparse.csr_matrix((w.ravel(), (rows, jidx.ravel())), shape=(len(used), len(joints)))
    return joints, ibm, weights


def _skin(points: np.ndarray, weights: scipy.sparse.csr_matrix, joint_mats: np.ndarray, chunk: int) -> np.ndarray:
    """Linear blend skinning of points [T,V,3] with joint matrices [T,J,4,4] -> [T,V,3]."""
    T, J = joint_mats.shape[:2]
    flat = joint_mats[:, :, :3, :].transpose(1, 0, 2, 3).reshape(J, T * 12)
    out = np.empty((T, points.shape[1], 3))
    for a in range(0, points.shape[1], chunk):
        m = (weights[a : a + chunk] @ flat).reshape(-1, T, 3, 4)  # blended 3x4 matrix per vertex, frame
        p = points[:, a : a + chunk].transpose(1, 0, 2)[:, :, None, :]  # [v,T,1,3]
        # m @ [p, 1] written out: a batched 3x3 mat-vec is much slower through einsum/matmul.
        v = m[..., 3] + m[..., 0] * p[..., 0] + m[..., 1] * p[..., 1] + m[..., 2] * p[..., 2]
        out[:, a : a + chunk] = v.transpose(1, 0, 2)
    return out


def _rigid(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """points [T,V,3] under per-frame matrices [T,4,4]."""
    return points @ m[:, :3, :3].transpose(0, 2, 1) + m[:, None, :3, 3]


# ---------------------------------------------------------------- bake


def bake(g: Gltf, animation_index: int, times: np.ndarray, config: BakeConfig | None = None) -> Baked:
    """Evaluate animation `animation_index` at `times` (seconds) on the default scene."""
    config = config or BakeConfig()
    times = np.asarray(times, np.float64).reshape(-1)
    if len(times) == 0 or not np.all(np.isfinite(times)):
        raise ValueError("times must be a non-empty array of finite seconds")
    animations = g.items("animations")
    if not animations:
        raise _bake_err("no_animation", "the file has no animations")
    if not 0 <= animation_index < len(animations):
        raise _bake_err("animation_index_out_of_range", f"animation {animation_index} of {len(animations)}")
    # Sizes first, from the JSON alone: nothing has been decoded yet.
    if g.scene_sizes.faces > config.max_faces:
        raise _bake_err("too_many_faces", f"the scene declares {g.scene_sizes.faces:,} faces > max_faces "
                        f"{config.max_faces:,}")
    channels = _channels(g, animation_index)
    if not channels:
        raise _bake_err("no_animation", f"animation {animation_index} has no channel targeting a node")
    if max(c.times[-1] for c in channels) <= min(c.times[0] for c in channels):
        raise _bake_err("single_keyframe", f"animation {animation_index} has zero duration")

    # Topology first: reject oversized meshes before any per-frame work.
    prims, skipped, num_faces = [], 0, 0
    accessors = g.items("accessors")
    plans: dict[int, tuple[list[dict], int]] = {}  # mesh -> (primitives with triangles, skipped)
    for n in g.scene_sizes.mesh_nodes:  # the default scene's, from load_gltf's check
        node = g.item("nodes", n)
        mesh = g.item("meshes", node["mesh"])
        if node["mesh"] not in plans:
            todo, skip = [], 0
            for prim in mesh.get("primitives", []):
                if "POSITION" not in prim.get("attributes", {}) or prim.get("mode", 4) not in TRIANGLE_MODES:
                    skip += 1  # never decoded
                elif declared_faces(accessors, prim):  # (primitives with no triangle add nothing)
                    todo.append(prim)
            plans[node["mesh"]] = (todo, skip)
        todo, skip = plans[node["mesh"]]
        skipped += skip
        for prim in todo:
            pos = np.asarray(g.accessor(prim["attributes"]["POSITION"]), np.float64)
            if pos.ndim != 2 or pos.shape[1] != 3:
                raise _corrupt("POSITION is not VEC3")
            tri = _triangles(g, prim, len(pos))
            # Keep only referenced vertices: primitives often share one big vertex buffer.
            used, inverse = np.unique(tri, return_inverse=True)
            tri = inverse.reshape(-1, 3).astype(np.int64)
            prims.append((n, node, mesh, prim, used, pos[used], tri))
            num_faces += len(tri)
    if num_faces == 0:
        raise _bake_err("no_geometry", f"no triangles in the scene ({skipped} primitives skipped)")

    world = _world_matrices(g, channels, times)
    T = len(times)
    verts, faces, colors, uvs, face_mat, offset = [], [], [], [], [], 0
    for n, node, mesh, prim, used, pos, tri in prims:
        count = int(g.item("accessors", prim["attributes"]["POSITION"])["count"])
        points = np.broadcast_to(pos, (T, *pos.shape))
        targets = prim.get("targets", [])
        if targets:
            w = _morph_weights(g, n, mesh, channels, times)
            deltas = np.zeros((len(targets), *pos.shape))
            for k, tgt in enumerate(targets):
                if "POSITION" in tgt:
                    deltas[k] = _vertex_attr(g, tgt["POSITION"], count)[used]
            points = pos + (w[:, : len(targets)] @ deltas.reshape(len(targets), -1)).reshape(T, *pos.shape)
        skin = _skin_setup(g, node["skin"], prim, count, used) if "skin" in node else None
        if skin is None:
            v = _rigid(points, world[n])
        else:
            joints, ibm, weights = skin
            joint_mats = world[joints] @ ibm[:, None]  # [J,T,4,4]
            v = _skin(points, weights, joint_mats.transpose(1, 0, 2, 3), config.skin_chunk_vertices)
            unweighted = np.flatnonzero(np.asarray(weights.sum(1)).reshape(-1) == 0)
            if len(unweighted):
                v[:, unweighted] = _rigid(points[:, unweighted], world[n])
        verts.append(v)
        faces.append(tri + offset)
        colors.append(_colors(g, prim, count, used))
        uv = np.full((len(used), 2, 2), np.nan, np.float32)
        for k in (0, 1):
            if f"TEXCOORD_{k}" in prim["attributes"]:
                t = _vertex_attr(g, prim["attributes"][f"TEXCOORD_{k}"], count)[used]
                if t.shape[1] != 2:
                    raise _corrupt(f"TEXCOORD_{k} must be VEC2")
                uv[:, k] = t
        uvs.append(uv)
        face_mat.append(np.full(len(tri), prim.get("material", -1), np.int32))
        offset += len(pos)

    vertices = np.concatenate(verts, axis=1)
    faces_all = np.concatenate(faces, axis=0)
    if not np.all(np.isfinite(vertices)):
        bad = np.flatnonzero(~np.isfinite(vertices).all(axis=(1, 2)))
        raise _bake_err("non_finite_vertices", f"NaN/inf vertices in frames {bad.tolist()[:8]}")
    areas, _ = face_area_volume(vertices[0], faces_all)
    if not np.any(areas > 0):
        raise _bake_err("zero_area", f"all {len(faces_all)} faces have zero area in frame 0")
    return Baked(
        vertices=vertices,
        faces=faces_all,
        colors=np.concatenate(colors, axis=0),
        times=times,
        skipped_primitives=skipped,
        texcoords=np.concatenate(uvs, axis=0),
        face_material=np.concatenate(face_mat),
    )
