"""Random animated 4D assets for `source.kind=procedural`, and the samples' CLI.

CLI: `python -m pipelines.procedural --out DIR [--bad] [--max-faces N]` (the four analytic samples
of pipelines.analytic, and the bad assets of pipelines.bad_assets), or
`python -m pipelines.procedural --out DIR --random N [--seed S] [--families tube,blob,...]`.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipelines import surface
from pipelines.analytic import write_samples
from pipelines.bad_assets import bad_assets
from pipelines.gltf_write import Channel, GltfBuilder, Primitive
from pipelines.shapes import box_grid, capped_cylinder, f32, uv_sphere


# ---------------------------------------------------------------- random 4D assets (source.kind=procedural)
#
# Five families of randomised animated assets, generated in memory for `source.kind=procedural`
# (pipelines.sources) so a dataset of hundreds of varied clips needs no download. Unlike the
# four samples above they carry no analytic truth: they exist to exercise the real read + bake
# path (and everything after it) at scale. An asset is a pure function of (family, seed, index):
# its parameters come from a generator seeded by SeedSequence([seed, crc32(family), index]) and
# are rounded to 4 decimals, and the GLB is written by the deterministic writer, so the same
# uid gives the same bytes on every run and every worker (numpy's Generator streams are stable
# within a numpy release; a new numpy may change them, which the dataset's source_sha256 shows).
# Every mesh part is a closed, outward-oriented surface; parts of one asset may overlap (the
# watertight stage takes their union), which is how the "split" family changes topology.

FAMILIES = ("tube", "blob", "figure", "split", "wave")
FAMILY_DOC = {
    "tube": "a tapered tube of elliptic cross-section skinned to a 3-7 joint chain that bends and twists (LINEAR quaternion keys)",
    "blob": "a sphere with 1-3 morph targets (uniform swell, Gaussian lobes) and an anisotropic node scale, "
            "weights and scale on CUBICSPLINE (or LINEAR) keys: it swells and shrinks",
    "figure": "an articulated figure of separate parts in a node hierarchy: box torso, sphere head, 2-6 limbs of "
              "1-3 cylinder segments, each part rotating about its own hinge",
    "split": "2-4 spheres/boxes that start overlapping and fly apart (split), the reverse (merge), or both "
             "(bounce): the watertight union changes its number of components",
    "wave": "a thick plate with 4-8 morph targets (spots or ridges) whose LINEAR weights make a wave travel across it",
}
PROCEDURAL_LICENSE = "cc0"
_UID_RE = re.compile(r"^proc-([a-z]+)-(\d+)-(\d+)$")
_KEY_DT = 1 / 16  # keyframe spacing of every sampled channel (an exact binary fraction)


@dataclass(frozen=True)
class AssetSpec:
    """The randomised parameters of one procedural asset and its counts (no geometry built)."""

    family: str
    seed: int
    index: int
    params: dict  # JSON-serialisable; tessellation included, so the counts follow from it
    num_vertices: int  # POSITION count summed over primitives, as written
    num_faces: int
    duration: float  # seconds; the animation spans [0, duration]

    @property
    def uid(self) -> str:
        return asset_uid(self.family, self.seed, self.index)


@dataclass(frozen=True)
class ProcAsset:
    spec: AssetSpec
    glb: bytes

    @property
    def uid(self) -> str:
        return self.spec.uid


def asset_uid(family: str, seed: int, index: int) -> str:
    """`proc-<family>-<seed>-<index>` with the index zero-padded to 5 digits."""
    return f"proc-{family}-{int(seed)}-{int(index):05d}"


def parse_uid(uid: str) -> tuple[str, int, int]:
    """(family, seed, index) of a procedural uid; ValueError for anything else."""
    m = _UID_RE.match(uid)
    if not m or m.group(1) not in FAMILIES or asset_uid(m.group(1), int(m.group(2)), int(m.group(3))) != uid:
        raise ValueError(f"{uid!r} is not a procedural asset uid (proc-<family>-<seed>-<index:05d>, family one of {FAMILIES})")
    return m.group(1), int(m.group(2)), int(m.group(3))


def asset_spec(family: str, seed: int, index: int) -> AssetSpec:
    """Parameters of asset `index` of `family` for `seed` (cheap: no mesh is built)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown procedural family {family!r}; choose from {list(FAMILIES)}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(family.encode()), int(index)]))
    params = _PARAMS[family](rng)
    v, f = _counts(params["parts"])
    return AssetSpec(family, int(seed), int(index), params, v, f, params["duration"])


def build_asset(family: str, seed: int, index: int) -> ProcAsset:
    """The animated GLB of one procedural asset (deterministic bytes)."""
    spec = asset_spec(family, seed, index)
    return ProcAsset(spec, _BUILD[family](spec.params))


def build_uid(uid: str) -> ProcAsset:
    return build_asset(*parse_uid(uid))


def family_of(index: int, families: Sequence[str]) -> str:
    """The family of asset `index` in a listing over `families` (round robin)."""
    return families[index % len(families)]


def write_random(folder: str | Path, count: int, seed: int = 0, families: Sequence[str] = FAMILIES) -> dict[str, Path]:
    """Write `count` procedural assets as `<uid>.glb` + `<uid>.meta.json` (a local-source sidecar)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(count):
        a = build_asset(family_of(i, families), seed, i)
        out[a.uid] = folder / f"{a.uid}.glb"
        out[a.uid].write_bytes(a.glb)
        meta = {"name": a.uid, "license": PROCEDURAL_LICENSE, "animationCount": 1,
                "faceCount": a.spec.num_faces, "vertexCount": a.spec.num_vertices}
        (folder / f"{a.uid}.meta.json").write_text(json.dumps(meta, sort_keys=True) + "\n")
    return out


# -------------------------------------------------- helpers


def _r(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _rand_dir(rng: np.random.Generator) -> list[float]:
    return [_r(x) for x in _unit(rng.normal(size=3))]


def _rand_quat(rng: np.random.Generator) -> list[float]:
    """A uniformly random rotation (x, y, z, w), rounded."""
    return [_r(x) for x in _unit(rng.normal(size=4))]


def _duration(rng: np.random.Generator, lo: float = 1.5, hi: float = 3.0) -> float:
    return int(rng.integers(round(lo * 8), round(hi * 8) + 1)) / 8  # a multiple of 1/8 s


def _key_times(duration: float) -> np.ndarray:
    return np.arange(round(duration / _KEY_DT) + 1) * _KEY_DT


def _counts(parts: list[dict]) -> tuple[int, int]:
    v = f = 0
    for p in parts:
        if p["shape"] == "cylinder":
            s, r = p["segments"], p["rings"]
            v, f = v + (r + 1) * s + 2, f + 2 * r * s + 2 * s
        elif p["shape"] == "sphere":
            a, b = p["n_lat"], p["n_lon"]
            v, f = v + (a - 1) * b + 2, f + 2 * b * (a - 1)
        else:  # box
            a, b, c = p["divisions"]
            v, f = v + (a + 1) * (b + 1) * (c + 1) - (a - 1) * (b - 1) * (c - 1), f + 4 * (a * b + b * c + c * a)
    return v, f


def _quat_axis(axis, angle: np.ndarray) -> np.ndarray:
    """Quaternions [n,4] (x, y, z, w) of rotations by `angle` [n] about the unit `axis`."""
    angle = np.atleast_1d(np.asarray(angle, np.float64))
    return np.concatenate([np.outer(np.sin(angle / 2), _unit(axis)), np.cos(angle / 2)[:, None]], 1)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of quaternion arrays [...,4] (x, y, z, w): the rotation b, then a."""
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz], -1)


def _quat_from_to(a, b) -> np.ndarray:
    """The shortest rotation (x, y, z, w) taking direction a onto direction b."""
    a, b = _unit(a), _unit(b)
    c = float(a @ b)
    if c < -1 + 1e-9:  # opposite: half a turn about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        return np.append(_unit(axis), 0.0)
    q = np.append(np.cross(a, b), 1 + c)
    return q / np.linalg.norm(q)


def _quat_matrix(q) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _static_quat(q) -> np.ndarray:
    """A node rotation as written: unit length, rounded to float32 (so JSON text is libm-proof)."""
    return f32(np.asarray(q, np.float64) / np.linalg.norm(q))


def _hinge(rng: np.random.Generator) -> list[float]:
    """A random unit axis in the local xz plane (a hinge across a part that extends along +y)."""
    a = rng.uniform(0, 2 * np.pi)
    return [_r(math.cos(a)), 0.0, _r(math.sin(a))]


def _cycles(rng: np.random.Generator) -> float:
    """Oscillations per clip: not an integer, so no choice of frame times can sample one phase
    only (2 cycles seen at t = 0, T/2, T would be three identical frames)."""
    return _r(rng.uniform(0.6, 1.8), 2)


def _wave(t: np.ndarray, duration: float, cycles: float, phase: float) -> np.ndarray:
    return np.sin(2 * np.pi * cycles * t / duration + phase)


def _color(rng: np.random.Generator) -> list[float]:
    return [_r(x, 3) for x in rng.uniform(0.15, 0.95, 3)] + [1.0]


def _prim(b: GltfBuilder, verts: np.ndarray, faces: np.ndarray, color, **kw) -> Primitive:
    return Primitive(verts, faces, normals=surface.vertex_normals(verts, faces), material=b.add_material(color), **kw)


# -------------------------------------------------- tube: skinned bend + twist


def _tube_params(rng: np.random.Generator) -> dict:
    n_joints = int(rng.integers(3, 8))
    length = _r(rng.uniform(1.0, 2.5))
    max_bend = min(0.8, 2.6 / (n_joints - 1))  # keeps the whole curl below ~150 degrees
    cycles = _cycles(rng)
    joints = [{
        "axis": _hinge(rng),
        "bend": _r(rng.uniform(0.4, 1.0) * max_bend),
        "twist": _r(rng.uniform(0.0, 0.6)),
        "phase": _r(rng.uniform(0, 2 * np.pi)),
        "twist_phase": _r(rng.uniform(0, 2 * np.pi)),
    } for _ in range(n_joints - 1)]
    sway = _r(rng.uniform(0.05, 0.25) * length) if rng.random() < 0.5 else 0.0
    return {
        "length": length,
        "radius": _r(rng.uniform(0.06, 0.14) * length),
        "ellipse": _r(rng.uniform(0.45, 0.8)),  # minor/major axis: makes the twist visible
        "taper": _r(rng.uniform(0.0, 0.6)),
        "influence": _r(rng.uniform(1.5, 2.5)),  # skin kernel radius in joint spacings
        "orientation": _rand_quat(rng),
        "sway": sway,
        "sway_dir": _rand_dir(rng),
        "cycles": cycles,
        "joints": joints,
        "color": _color(rng),
        "duration": _duration(rng),
        "parts": [{"shape": "cylinder", "segments": int(rng.choice([16, 20, 24, 32])),
                   "rings": int(rng.integers(6, 11)) * (n_joints - 1)}],
    }


def _build_tube(p: dict) -> bytes:
    n_joints, length, duration = len(p["joints"]) + 1, p["length"], p["duration"]
    spacing = length / (n_joints - 1)
    part = p["parts"][0]
    local, faces = capped_cylinder(p["radius"], length, part["segments"], part["rings"])
    shrink = 1 - p["taper"] * local[:, 1] / length
    local = local * np.stack([shrink, np.ones(len(local)), shrink * p["ellipse"]], 1)
    q_root = _static_quat(p["orientation"])
    r_root = _quat_matrix(q_root)
    rest = f32(local @ r_root.T)
    heights = spacing * np.arange(n_joints)
    y = local[:, 1]
    raw = np.clip(1 - np.abs(y[:, None] - heights) / (p["influence"] * spacing), 0, None) ** 2
    joints = np.broadcast_to(np.arange(n_joints), raw.shape)

    b = GltfBuilder()
    prim = _prim(b, rest, faces, p["color"], joints=joints, weights=raw)
    chain = [b.add_node(rotation=q_root, name="joint0")]
    for k in range(1, n_joints):
        chain.append(b.add_node(parent=chain[-1], translation=(0.0, spacing, 0.0), name=f"joint{k}"))
    ibm = []
    for h in heights:  # inverse of each joint's bind world matrix R_root * T(0, h, 0)
        m = np.eye(4)
        m[:3, :3] = r_root.T
        m[:3, 3] = -np.array([0.0, h, 0.0])
        ibm.append(m)
    skin = b.add_skin(chain, np.stack(ibm), skeleton=chain[0])
    b.add_node(mesh=b.add_mesh([prim], name="tube"), skin=skin, name="tube")
    t = _key_times(duration)
    channels = []
    for k, j in enumerate(p["joints"], start=1):
        bend = j["bend"] * _wave(t, duration, p["cycles"], j["phase"])
        twist = j["twist"] * _wave(t, duration, p["cycles"], j["twist_phase"])
        channels.append(Channel(chain[k], "rotation", t, _quat_mul(_quat_axis(j["axis"], bend), _quat_axis([0, 1, 0], twist))))
    if p["sway"]:
        sway = p["sway"] * np.outer(_wave(t, duration, p["cycles"], 0.0), p["sway_dir"])
        channels.append(Channel(chain[0], "translation", t, sway))
    b.add_animation(channels, name="bend_twist")
    return b.to_glb()


# -------------------------------------------------- blob: morph targets + CUBICSPLINE scale


def _blob_params(rng: np.random.Generator) -> dict:
    targets = []
    for k in range(int(rng.integers(1, 4))):
        kind = "swell" if k == 0 and rng.random() < 0.5 else "bump"
        targets.append({
            "kind": kind,
            # >= -0.3 each and at most 3 targets: the radius never reaches 0 (star-shaped, no fold)
            "amp": _r(rng.uniform(-0.3, 0.6)),
            "dir": _rand_dir(rng),
            "width": _r(rng.uniform(0.3, 0.9)),  # radians of the Gaussian lobe
            "cycles": _cycles(rng),
            "phase": _r(rng.uniform(0, 2 * np.pi)),
        })
    amp = rng.uniform(0.12, 0.35)
    aniso = rng.random() < 0.5
    return {
        "radius": _r(rng.uniform(0.4, 1.0)),
        "targets": targets,
        "interpolation": "CUBICSPLINE" if rng.random() < 0.7 else "LINEAR",
        "scale_amp": [_r(amp * (rng.uniform(0.3, 1.0) if aniso else 1.0)) for _ in range(3)],
        "scale_cycles": _cycles(rng),
        "scale_phase": _r(rng.uniform(0, 2 * np.pi)),
        "offset": [_r(x) for x in rng.uniform(-1, 1, 3)],
        "orientation": _rand_quat(rng),
        "colors": [_color(rng), _color(rng)],
        "color_axis": _rand_dir(rng),
        "duration": _duration(rng),
        "parts": [{"shape": "sphere", "n_lat": int(rng.integers(16, 33)), "n_lon": int(rng.integers(24, 49))}],
    }


def _build_blob(p: dict) -> bytes:
    part, duration, radius = p["parts"][0], p["duration"], p["radius"]
    verts, faces = uv_sphere(radius, part["n_lat"], part["n_lon"])
    rest = f32(verts)
    dirs = verts / radius
    deltas = []
    for tg in p["targets"]:
        if tg["kind"] == "swell":
            g = np.full(len(verts), tg["amp"])
        else:
            angle = np.arccos(np.clip(dirs @ _unit(tg["dir"]), -1, 1))
            g = tg["amp"] * np.exp(-0.5 * (angle / tg["width"]) ** 2)
        deltas.append(radius * g[:, None] * dirs)
    u = (dirs @ _unit(p["color_axis"]) + 1) / 2
    c0, c1 = np.array(p["colors"][0][:3]), np.array(p["colors"][1][:3])
    colors = c0 + u[:, None] * (c1 - c0)

    b = GltfBuilder()
    mesh = b.add_mesh([_prim(b, rest, faces, (1.0, 1.0, 1.0, 1.0), colors=colors, targets=deltas)],
                      weights=[0.0] * len(deltas), name="blob")
    parent = b.add_node(translation=p["offset"], rotation=_static_quat(p["orientation"]), name="offset")
    node = b.add_node(mesh=mesh, parent=parent, name="blob")
    cubic = p["interpolation"] == "CUBICSPLINE"
    t = np.arange(round(duration * 8) + 1) / 8 if cubic else _key_times(duration)  # cubic keys every 1/8 s
    w, dw = [], []
    for tg in p["targets"]:
        arg = 2 * np.pi * tg["cycles"] * t / duration + tg["phase"]
        w.append(0.5 - 0.5 * np.cos(arg))
        dw.append(0.5 * 2 * np.pi * tg["cycles"] / duration * np.sin(arg))
    w, dw = np.stack(w, 1), np.stack(dw, 1)
    arg = 2 * np.pi * p["scale_cycles"] * t / duration + p["scale_phase"]
    amp = np.asarray(p["scale_amp"])
    s = 1 + np.outer(np.sin(arg), amp)
    ds = np.outer(2 * np.pi * p["scale_cycles"] / duration * np.cos(arg), amp)
    if cubic:
        channels = [Channel(node, "weights", t, np.stack([dw, w, dw], 1), "CUBICSPLINE"),
                    Channel(node, "scale", t, np.stack([ds, s, ds], 1), "CUBICSPLINE")]
    else:
        channels = [Channel(node, "weights", t, w), Channel(node, "scale", t, s)]
    b.add_animation(channels, name="swell")
    return b.to_glb()


# -------------------------------------------------- figure: articulated node hierarchy


_FIGURE_SIDES = {"+x": (0, 1.0), "-x": (0, -1.0), "-y": (1, -1.0), "+z": (2, 1.0), "-z": (2, -1.0)}


def _figure_params(rng: np.random.Generator) -> dict:
    size = [_r(rng.uniform(0.4, 0.8)), _r(rng.uniform(0.6, 1.2)), _r(rng.uniform(0.3, 0.6))]
    cycles = _cycles(rng)
    limbs = []
    for _ in range(int(rng.integers(2, 7))):
        side = str(rng.choice(list(_FIGURE_SIDES)))
        axis, sign = _FIGURE_SIDES[side]
        anchor = [_r(rng.uniform(-0.4, 0.4) * s) for s in size]
        anchor[axis] = _r(sign * size[axis] / 2)
        normal = np.zeros(3)
        normal[axis] = sign
        direction = _unit(normal + rng.normal(scale=0.35, size=3))
        segments = []
        for _ in range(int(rng.integers(1, 4))):
            segments.append({
                "length": _r(rng.uniform(0.25, 0.6)),
                "radius": _r(rng.uniform(0.05, 0.12)),
                "axis": _hinge(rng),
                "amp": _r(rng.uniform(0.3, 1.0)),
                "phase": _r(rng.uniform(0, 2 * np.pi)),
                "color": _color(rng),
            })
        limbs.append({"anchor": anchor, "dir": [_r(x) for x in direction], "segments": segments})
    head = {"radius": _r(rng.uniform(0.15, 0.3)), "axis": _hinge(rng), "amp": _r(rng.uniform(0.2, 0.6)),
            "phase": _r(rng.uniform(0, 2 * np.pi)), "color": _color(rng)}
    parts = [{"shape": "box", "divisions": [int(np.ceil(s * 10)) for s in size]},
             {"shape": "sphere", "n_lat": int(rng.integers(10, 17)), "n_lon": int(rng.integers(14, 25))}]
    for limb in limbs:
        for _ in limb["segments"]:
            parts.append({"shape": "cylinder", "segments": int(rng.choice([10, 12, 16])), "rings": int(rng.integers(3, 7))})
    return {
        "torso": {"size": size, "color": _color(rng)},
        "head": head,
        "limbs": limbs,
        "cycles": cycles,
        "yaw": _r(rng.uniform(0, 2 * np.pi)),
        "yaw_amp": _r(rng.uniform(0.0, 0.6)),
        "bob": _r(rng.uniform(0.0, 0.15) * size[1]),
        "duration": _duration(rng),
        "parts": parts,
    }


def _build_figure(p: dict) -> bytes:
    duration, cycles, parts = p["duration"], p["cycles"], iter(p["parts"])
    t = _key_times(duration)
    b = GltfBuilder()
    channels = []
    size = p["torso"]["size"]
    bv, bf = box_grid(tuple(size), tuple(next(parts)["divisions"]))
    torso = b.add_node(mesh=b.add_mesh([_prim(b, f32(bv), bf, p["torso"]["color"])], name="torso"), name="torso")
    yaw = p["yaw"] + p["yaw_amp"] * _wave(t, duration, cycles, 0.0)
    channels.append(Channel(torso, "rotation", t, _quat_axis([0, 1, 0], yaw)))
    bob = np.zeros((len(t), 3))
    bob[:, 1] = p["bob"] * _wave(t, duration, 2 * cycles, 0.0)
    channels.append(Channel(torso, "translation", t, bob))

    h = p["head"]
    sp = next(parts)
    hv, hf = uv_sphere(h["radius"], sp["n_lat"], sp["n_lon"])
    head = b.add_node(mesh=b.add_mesh([_prim(b, f32(hv), hf, h["color"])], name="head"), parent=torso,
                      translation=(0.0, _r(size[1] / 2 + 0.7 * h["radius"]), 0.0), name="head")
    channels.append(Channel(head, "rotation", t, _quat_axis(h["axis"], h["amp"] * _wave(t, duration, cycles, h["phase"]))))

    for i, limb in enumerate(p["limbs"]):
        parent = b.add_node(parent=torso, translation=limb["anchor"], rotation=_static_quat(_quat_from_to([0, 1, 0], limb["dir"])),
                            name=f"limb{i}")
        offset = 0.0
        for k, seg in enumerate(limb["segments"]):
            cp = next(parts)
            # Each segment reaches one radius back into its parent, so the joints stay closed.
            cv, cf = capped_cylinder(seg["radius"], seg["length"] + seg["radius"], cp["segments"], cp["rings"])
            cv[:, 1] -= seg["radius"]
            mesh = b.add_mesh([_prim(b, f32(cv), cf, seg["color"])], name=f"limb{i}_{k}")
            node = b.add_node(mesh=mesh, parent=parent, translation=(0.0, offset, 0.0), name=f"limb{i}_{k}")
            channels.append(Channel(node, "rotation", t, _quat_axis(seg["axis"], seg["amp"] * _wave(t, duration, cycles, seg["phase"]))))
            parent, offset = node, seg["length"]
    b.add_animation(channels, name="move")
    return b.to_glb()


# -------------------------------------------------- split: parts that separate / merge


def _split_params(rng: np.random.Generator) -> dict:
    n = int(rng.integers(2, 5))
    for _ in range(10_000):  # directions at least 60 degrees apart (always found for n <= 4)
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        cos = dirs @ dirs.T
        if np.all(cos[np.triu_indices(n, 1)] <= 0.5):
            break
    shapes, parts = [], []
    for i in range(n):
        r = _r(rng.uniform(0.3, 0.6))
        if rng.random() < 0.5:
            shapes.append({"shape": "sphere", "radius": r, "dir": [_r(x) for x in dirs[i]], "color": _color(rng)})
            parts.append({"shape": "sphere", "n_lat": int(rng.integers(12, 25)), "n_lon": int(rng.integers(16, 33))})
        else:
            size = [_r(r * rng.uniform(1.2, 1.8)) for _ in range(3)]
            shapes.append({"shape": "box", "radius": r, "size": size, "dir": [_r(x) for x in dirs[i]],
                           "spin_axis": _rand_dir(rng), "spin": _r(rng.uniform(0.5, 2.5)), "color": _color(rng)})
            parts.append({"shape": "box", "divisions": [int(np.ceil(s * 12)) for s in size]})
    return {
        "mode": str(rng.choice(["split", "merge", "bounce"])),
        "near": _r(rng.uniform(0.0, 0.3)),  # centre distance at contact, in units of the smallest radius
        "gap": _r(rng.uniform(0.15, 0.4)),  # clearance when apart, in units of the mean radius
        "shapes": shapes,
        "orientation": _rand_quat(rng),
        "duration": _duration(rng),
        "parts": parts,
    }


def _build_split(p: dict) -> bytes:
    duration, shapes = p["duration"], p["shapes"]
    dirs = np.array([s["dir"] for s in shapes])
    # Bounding radius of each part: the sphere's radius, half the box diagonal.
    bound = np.array([s["radius"] if s["shape"] == "sphere" else np.linalg.norm(s["size"]) / 2 for s in shapes])
    radii = np.array([s["radius"] for s in shapes])
    # Together: every centre within 0.3 r_min of the origin, so each pair overlaps (inscribed radii
    # are >= 0.6 r). Apart: every pair of bounding spheres separated by `gap` mean radii.
    d_near = p["near"] * radii.min()
    d_far = max((bound[i] + bound[j] + p["gap"] * radii.mean()) / np.linalg.norm(dirs[i] - dirs[j])
                for i in range(len(shapes)) for j in range(i + 1, len(shapes)))
    t = _key_times(duration)
    u = t / duration
    ease = {"split": (1 - np.cos(np.pi * u)) / 2, "merge": (1 + np.cos(np.pi * u)) / 2,
            "bounce": (1 + np.cos(2 * np.pi * u)) / 2}[p["mode"]]
    dist = d_near + (d_far - d_near) * ease
    b = GltfBuilder()
    rig = b.add_node(rotation=_static_quat(p["orientation"]), name="rig")
    channels = []
    for i, (s, part) in enumerate(zip(shapes, p["parts"])):
        if s["shape"] == "sphere":
            v, f = uv_sphere(s["radius"], part["n_lat"], part["n_lon"])
        else:
            v, f = box_grid(tuple(s["size"]), tuple(part["divisions"]))
        keys = np.outer(dist, dirs[i])
        node = b.add_node(mesh=b.add_mesh([_prim(b, f32(v), f, s["color"])], name=f"part{i}"), parent=rig,
                          translation=f32(keys[0]), name=f"part{i}")
        channels.append(Channel(node, "translation", t, keys))
        if s["shape"] == "box":
            channels.append(Channel(node, "rotation", t, _quat_axis(s["spin_axis"], s["spin"] * u)))
    b.add_animation(channels, name=p["mode"])
    return b.to_glb()


# -------------------------------------------------- wave: travelling morph-target wave


def _wave_params(rng: np.random.Generator) -> dict:
    lx, lz = _r(rng.uniform(2.0, 4.0)), _r(rng.uniform(0.6, 2.0))
    return {
        "size": [lx, _r(rng.uniform(0.08, 0.25)), lz],
        "bumps": int(rng.integers(4, 9)),
        "mode": str(rng.choice(["spot", "ridge"])),
        "angle": _r(rng.uniform(-0.5, 0.5)),  # travel direction in the plate, radians off its long axis
        "amp": _r(rng.uniform(0.12, 0.25) * lx * rng.choice([-1.0, 1.0])),
        "width": _r(rng.uniform(0.6, 1.0)),  # Gaussian sigma in bump spacings
        # Plate crossings per clip (> 1: the crest turns back); not a whole number, so the crest
        # is on the plate at t = T/2 and the clip does not end where it started.
        "passes": _r(rng.uniform(0.7, 1.6), 2),
        "orientation": _rand_quat(rng),
        "color": _color(rng),
        "duration": _duration(rng, 2.0, 3.0),
        "parts": [{"shape": "box", "divisions": [int(np.ceil(lx * 16)), 1, int(np.ceil(lz * 12))]}],
    }


def _build_wave(p: dict) -> bytes:
    size, duration, k = p["size"], p["duration"], p["bumps"]
    verts, faces = box_grid(tuple(size), tuple(p["parts"][0]["divisions"]))
    rest = f32(verts)
    d = np.array([math.cos(p["angle"]), 0.0, math.sin(p["angle"])])
    along = verts @ d
    lo, hi = along.min(), along.max()
    spacing = (hi - lo) / k
    centres = lo + spacing * (np.arange(k) + 0.5)
    sigma = p["width"] * spacing
    deltas = []
    for c in centres:
        if p["mode"] == "ridge":
            lift = p["amp"] * np.exp(-0.5 * ((along - c) / sigma) ** 2)
        else:  # a round spot on the plate's centre line along d
            across = verts[:, [0, 2]] - c * d[[0, 2]]
            lift = p["amp"] * np.exp(-0.5 * (np.linalg.norm(across, axis=1) / max(sigma, 0.25 * size[2])) ** 2)
        # Every vertex of a cross-section moves by the same amount: thickness kept, no self-overlap.
        deltas.append(np.stack([np.zeros(len(verts)), lift, np.zeros(len(verts))], 1))
    t = _key_times(duration)
    u = t / duration
    travel = 1 - np.abs(1 - np.mod(p["passes"] * u, 2))  # triangle wave: 0 -> 1 (far side) -> 0
    front = (lo - 1.5 * spacing) + (hi - lo + 3 * spacing) * travel  # starts and ends off the plate
    weights = np.clip(1 - np.abs(front[:, None] - centres) / (1.2 * spacing), 0, 1)
    b = GltfBuilder()
    node_mesh = b.add_mesh([_prim(b, rest, faces, p["color"], targets=deltas)], weights=[0.0] * k, name="plate")
    parent = b.add_node(rotation=_static_quat(p["orientation"]), name="tilt")
    node = b.add_node(mesh=node_mesh, parent=parent, name="plate")
    b.add_animation([Channel(node, "weights", t, weights)], name="wave")
    return b.to_glb()


_PARAMS: dict[str, Callable[[np.random.Generator], dict]] = {
    "tube": _tube_params, "blob": _blob_params, "figure": _figure_params, "split": _split_params, "wave": _wave_params,
}
_BUILD: dict[str, Callable[[dict], bytes]] = {
    "tube": _build_tube, "blob": _build_blob, "figure": _build_figure, "split": _build_split, "wave": _build_wave,
}



# ---------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.procedural",
        description="Write the procedural animated glTF samples (bending_tube, swelling_sphere, "
        "separating_parts, morph_wave) as <name>.glb, and optionally the bad-asset set; or, with --random N, "
        "N random assets of the source.kind=procedural families as <uid>.glb + <uid>.meta.json.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--bad", action="store_true", help="also write the bad assets into OUT/bad/")
    parser.add_argument("--max-faces", type=int, default=20_000,
                        help="face limit the too_many_faces case must exceed (default 20000)")
    parser.add_argument("--random", type=int, default=0, metavar="N",
                        help="write N random procedural assets instead of the samples (the assets source.kind=procedural lists)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random assets (default 0)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated families of the random assets, taken in turn (default {','.join(FAMILIES)})")
    args = parser.parse_args(argv)
    if args.random:
        families = [f for f in args.families.split(",") if f]
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown or not families:
            parser.error(f"--families: unknown {unknown}; choose from {','.join(FAMILIES)}")
        for uid, path in write_random(args.out, args.random, args.seed, families).items():
            print(f"{uid}: {path} ({path.stat().st_size:,} bytes)")
        return 0
    for name, path in write_samples(args.out).items():
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")
    if args.bad:
        for case, fname in bad_assets(args.out / "bad", args.max_faces).items():
            print(f"bad/{case}: {args.out / 'bad' / fname}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
