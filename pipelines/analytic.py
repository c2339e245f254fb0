"""The four procedural animated glTF samples with analytic ground truth (`pipelines/samples/`).

Four small animations exercise each way glTF moves vertices (skinning, node TRS, hierarchy,
morph targets) and the LINEAR/CUBICSPLINE samplers. Each builder returns a `Sample`: the .glb
bytes, the faces, the rest POSITION data as written, and `positions(t)`, the world-space
vertex positions at time t (seconds) derived from the definition of the motion, not from
the file. The vertex order is that of the POSITION accessors concatenated over primitives
in scene (depth-first) node order; every vertex is used by a face.

"Analytic" means exact up to float64 rounding: the truth is evaluated from the same float32
numbers the file stores (rest positions, weights, keyframe values), and the motions are
chosen so that glTF's interpolation reproduces them exactly: rotations about one fixed axis
per joint (slerp = linear in the angle), piecewise-linear translations/weights, and a
CUBICSPLINE scale whose piecewise Hermite cubic is itself the truth.

All sources are closed, consistently outward-oriented 2-manifolds (checked in the tests).
Output is deterministic: the same code gives byte-identical files (tests compare them with
the committed copies in `pipelines/samples/`).

Written by `python -m pipelines.procedural --out DIR`; the random assets of `source.kind=procedural`
are in pipelines.procedural, the deliberately broken ones in pipelines.bad_assets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipelines import surface
from pipelines.gltf_write import Channel, GltfBuilder, Primitive, quantize_weights
from pipelines.shapes import box_grid, capped_cylinder, f32, uv_sphere

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


@dataclass(frozen=True)
class Sample:
    name: str
    glb: bytes
    faces: np.ndarray  # [F,3] int64 into the concatenated vertices
    rest: np.ndarray  # [V,3] float64: the POSITION data as stored (float32 values)
    duration: float  # seconds; the animation spans [0, duration]
    positions: Callable[[float], np.ndarray]  # t -> [V,3] float64 world positions
    description: str



def _axis_angle(axis: int, angle: float) -> np.ndarray:
    """4x4 rotation about coordinate axis 0/1/2 by `angle` radians."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = (axis + 1) % 3, (axis + 2) % 3
    m = np.eye(4)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _quat(axis: int, angle: np.ndarray) -> np.ndarray:
    """Quaternions [n,4] (x, y, z, w) of rotations about a coordinate axis."""
    q = np.zeros((len(angle), 4))
    q[:, axis] = np.sin(angle / 2)
    q[:, 3] = np.cos(angle / 2)
    return q


def _translate(t) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:3, :3].T + m[:3, 3]


# ---------------------------------------------------------------- the four samples


def bending_tube() -> Sample:
    """Capped cylinder skinned to a chain of 5 joints (up to 5 influences per vertex, so
    JOINTS_1/WEIGHTS_1 are used); joints 1-4 rotate about fixed axes with LINEAR keys."""
    base, spacing, n_joints, duration = np.array([1.5, 0.25, -0.5]), 0.3125, 5, 2.0
    local, faces = capped_cylinder(radius=0.125, length=spacing * (n_joints - 1), segments=24, rings=40)
    rest = f32(local + base)
    heights = spacing * np.arange(n_joints)
    # Smooth, wide influence: weight_k = (1 - |y - h_k| / R)^2 with R = 2.2 joint spacings.
    y = rest[:, 1] - base[1]
    raw = np.clip(1 - np.abs(y[:, None] - heights) / (2.2 * spacing), 0, None) ** 2
    joints = np.broadcast_to(np.arange(n_joints), raw.shape)

    axes, amps, phases = [2, 2, 0, 2], [0.5, 0.6, 0.4, 0.5], [0.0, 0.6, 1.2, 1.8]
    times = np.arange(33) / 16.0  # 0 .. 2 s, exact binary fractions
    wanted = [a * (np.sin(2 * np.pi * times / duration + p) - np.sin(p)) for a, p in zip(amps, phases)]

    b = GltfBuilder()
    mat = b.add_material((0.85, 0.55, 0.2, 1.0), name="tube")
    prim = Primitive(rest, faces, normals=surface.vertex_normals(rest, faces), joints=joints, weights=raw, material=mat)
    chain = [b.add_node(translation=base, name="joint0")]
    for k in range(1, n_joints):
        chain.append(b.add_node(parent=chain[-1], translation=(0.0, spacing, 0.0), name=f"joint{k}"))
    # Bind pose = rest pose with identity rotations: IBM_k = translation by -(joint k's position).
    ibm = np.stack([_translate(-(base + [0.0, h, 0.0])) for h in heights])
    skin = b.add_skin(chain, ibm, skeleton=chain[0])
    # A skinned mesh node sits at the root with no transform of its own (the spec ignores it).
    b.add_node(mesh=b.add_mesh([prim], name="tube"), skin=skin, name="tube")
    channels, key_angles = [], []
    for k, (axis, angle) in enumerate(zip(axes, wanted), start=1):
        q = _quat(axis, angle)
        channels.append(Channel(chain[k], "rotation", times, q))
        # The angle the stored float32 quaternion encodes (slerp about one axis is linear in it).
        q32 = f32(q)
        key_angles.append(2 * np.arctan2(q32[:, axis], q32[:, 3]))
    b.add_animation(channels, name="bend")
    glb = b.to_glb()

    w32 = _stored_weights(raw)

    def positions(t: float) -> np.ndarray:
        world = [_translate(base)]
        for k in range(1, n_joints):
            a = float(np.interp(t, times, key_angles[k - 1]))
            world.append(world[-1] @ _translate([0.0, spacing, 0.0]) @ _axis_angle(axes[k - 1], a))
        skin = np.stack([m @ inv for m, inv in zip(world, ibm)])  # [J,4,4]
        per_joint = np.einsum("jab,vb->vja", skin[:, :3, :3], rest) + skin[:, :3, 3]
        return np.einsum("vj,vja->va", w32, per_joint)

    return Sample("bending_tube", glb, faces, rest, duration, positions,
                  f"capped cylinder ({len(faces):,} faces) skinned to a 5-joint chain; joints rotate about z, z, x, z "
                  "with LINEAR keys every 1/16 s; up to 5 joint influences per vertex (JOINTS_0/1, WEIGHTS_0/1)")


def _stored_weights(raw: np.ndarray) -> np.ndarray:
    """Weights as a reader sees them: the written float32 values, renormalised in float64."""
    w = quantize_weights(raw).astype(np.float64)[:, : raw.shape[1]]
    return w / w.sum(1, keepdims=True)


def swelling_sphere() -> Sample:
    """UV sphere whose node scale swells and shrinks (CUBICSPLINE), under an offset parent."""
    duration, offset = 1.5, np.array([-0.75, 1.125, 0.625])
    verts, faces = uv_sphere(radius=0.375, n_lat=24, n_lon=32)
    rest = f32(verts)
    up = (rest[:, 1] / 0.375 + 1) / 2  # 0 at the south pole, 1 at the north pole
    colors = np.stack([0.2 + 0.7 * up, 0.4 * np.ones_like(up), 0.9 - 0.7 * up], 1)

    # s(t) = 1 + 0.35 sin(2 pi t / T): keys every 0.25 s with exact derivatives as tangents.
    times = np.arange(7) * 0.25
    value = 1 + 0.35 * np.sin(2 * np.pi * times / duration)
    slope = 0.35 * 2 * np.pi / duration * np.cos(2 * np.pi * times / duration)
    keys = np.stack([slope, value, slope], 1)[:, :, None].repeat(3, axis=2)  # [n, in/value/out, xyz]

    b = GltfBuilder()
    mat = b.add_material((1.0, 1.0, 1.0, 1.0), name="sphere")
    mesh = b.add_mesh([Primitive(rest, faces, normals=surface.vertex_normals(rest, faces), colors=colors, material=mat)], name="sphere")
    parent = b.add_node(translation=offset, name="offset")
    node = b.add_node(mesh=mesh, parent=parent, name="sphere")
    b.add_animation([Channel(node, "scale", times, keys, "CUBICSPLINE")], name="swell")
    glb = b.to_glb()

    v32, m32 = f32(value), f32(slope)

    def scale(t: float) -> float:
        # The Hermite cubic of glTF's CUBICSPLINE between the two keys around t (clamped).
        t = min(max(t, times[0]), times[-1])
        i = min(int(np.searchsorted(times, t, side="right")) - 1, len(times) - 2)
        d = times[i + 1] - times[i]
        u = (t - times[i]) / d
        return ((2 * u**3 - 3 * u**2 + 1) * v32[i] + (u**3 - 2 * u**2 + u) * d * m32[i]
                + (-2 * u**3 + 3 * u**2) * v32[i + 1] + (u**3 - u**2) * d * m32[i + 1])

    def positions(t: float) -> np.ndarray:
        return rest * scale(t) + offset

    return Sample("swelling_sphere", glb, faces, rest, duration, positions,
                  f"UV sphere ({len(faces):,} faces, per-vertex COLOR_0) under an offset parent node; its own node scale "
                  "follows 1 + 0.35 sin(2 pi t / 1.5 s) through CUBICSPLINE keys every 0.25 s")


def separating_parts() -> Sample:
    """A box and a sphere on two child nodes of a rotated, offset parent; they move apart."""
    duration = 2.5
    rig_t, rig_angle = np.array([0.5, -1.0, 0.25]), math.radians(30.0)
    box_v, box_f = box_grid((2.0, 1.5, 1.5), (8, 6, 6))
    ball_v, ball_f = uv_sphere(radius=0.8, n_lat=16, n_lon=24)
    box_rest, ball_rest = f32(box_v), f32(ball_v)

    # Eased separation along the parent's x axis, keyed every 0.25 s, LINEAR between keys.
    times = np.arange(11) * 0.25
    ease = (1 - np.cos(np.pi * times / duration)) / 2
    box_keys = np.stack([-1.1 - 1.0 * ease, 0.0 * ease, 0.2 * ease], 1)
    ball_keys = np.stack([1.0 + 1.2 * ease, 0.5 * ease, -0.1 * ease], 1)

    # The static node translation is the first key as stored (float32), so the rest state and
    # the animation at t=0 agree exactly.
    b = GltfBuilder()
    red, blue = b.add_material((0.8, 0.15, 0.1, 1.0), name="box"), b.add_material((0.1, 0.3, 0.85, 1.0), name="ball")
    # Trigonometry written as JSON text is rounded to float32 first, so a last-bit difference
    # between maths libraries cannot change the file's bytes.
    rig_q = f32(_quat(1, np.array([rig_angle]))[0])
    rig = b.add_node(translation=rig_t, rotation=rig_q, name="rig")
    box = b.add_node(mesh=b.add_mesh([Primitive(box_rest, box_f, normals=surface.vertex_normals(box_rest, box_f), material=red)], name="box"),
                     parent=rig, translation=f32(box_keys[0]), name="box")
    ball = b.add_node(mesh=b.add_mesh([Primitive(ball_rest, ball_f, normals=surface.vertex_normals(ball_rest, ball_f), material=blue)], name="ball"),
                      parent=rig, translation=f32(ball_keys[0]), name="ball")
    b.add_animation([Channel(box, "translation", times, box_keys), Channel(ball, "translation", times, ball_keys)], name="separate")
    glb = b.to_glb()

    rig_m = _translate(rig_t) @ _axis_angle(1, 2 * math.atan2(rig_q[1], rig_q[3]))  # the stored angle
    box32, ball32 = f32(box_keys), f32(ball_keys)
    faces = np.concatenate([box_f, ball_f + len(box_rest)])

    def positions(t: float) -> np.ndarray:
        parts = []
        for rest, keys in ((box_rest, box32), (ball_rest, ball32)):
            tr = [np.interp(t, times, keys[:, c]) for c in range(3)]
            parts.append(_apply(rig_m @ _translate(tr), rest))
        return np.concatenate(parts)

    return Sample("separating_parts", glb, faces, np.concatenate([box_rest, ball_rest]), duration, positions,
                  f"box ({len(box_f):,} faces) and UV sphere ({len(ball_f):,} faces) on two nodes under a parent rotated 30 deg about y "
                  "and offset; eased LINEAR translation keys every 0.25 s move them apart")


def morph_wave() -> Sample:
    """A thick plate with 4 morph targets (Gaussian bumps along x); LINEAR weight keys make
    one bump after the other rise and fall, so a wave travels along the plate."""
    duration, centre = 3.0, np.array([0.25, -0.6, 1.0])
    verts, faces = box_grid((3.2, 0.16, 1.0), (64, 1, 12))
    rest = f32(verts + centre)
    bumps = np.array([-1.2, -0.4, 0.4, 1.2])
    # Every vertex of a cross-section moves by the same amount: thickness is kept, no self-overlap.
    lift = 0.3 * np.exp(-(((verts[:, 0, None] - bumps) / 0.35) ** 2))  # [V,K]
    deltas = [np.stack([np.zeros(len(verts)), lift[:, k], np.zeros(len(verts))], 1) for k in range(len(bumps))]

    times = np.arange(25) * 0.125  # 0 .. 3 s
    front = -2.0 + 4.0 * times / duration  # the crest position along x
    weights = np.clip(1 - np.abs(front[:, None] - bumps) / 0.8, 0, 1)  # [n,K], 0 at both ends

    b = GltfBuilder()
    mat = b.add_material((0.3, 0.75, 0.35, 1.0), name="plate")
    prim = Primitive(rest, faces, normals=surface.vertex_normals(rest, faces), targets=deltas, material=mat)
    node = b.add_node(mesh=b.add_mesh([prim], weights=[0.0] * len(bumps), name="plate"), name="plate")
    b.add_animation([Channel(node, "weights", times, weights)], name="wave")
    glb = b.to_glb()

    d32 = np.stack([f32(d) for d in deltas])  # [K,V,3]
    w32 = f32(weights)

    def positions(t: float) -> np.ndarray:
        w = np.array([np.interp(t, times, w32[:, k]) for k in range(len(bumps))])
        return rest + np.einsum("k,kva->va", w, d32)

    return Sample("morph_wave", glb, faces, rest, duration, positions,
                  f"thick plate ({len(faces):,} faces) with 4 morph targets (Gaussian bumps along x, POSITION "
                  "deltas); LINEAR weight keys every 0.125 s raise them in turn so a wave travels along x")


SAMPLES: dict[str, Callable[[], Sample]] = {
    "bending_tube": bending_tube,
    "swelling_sphere": swelling_sphere,
    "separating_parts": separating_parts,
    "morph_wave": morph_wave,
}


def write_samples(folder: str | Path) -> dict[str, Path]:
    """Write every sample as `<folder>/<name>.glb`; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, build in SAMPLES.items():
        out[name] = folder / f"{name}.glb"
        out[name].write_bytes(build().glb)
    return out

