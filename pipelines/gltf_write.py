"""A small glTF 2.0 writer: numpy arrays -> .glb bytes (or .gltf + external .bin).

Enough of the specification to write test and demo assets: meshes with several triangle
primitives (POSITION, NORMAL, TEXCOORD_0/1, COLOR_0, uint32 indices), materials (base colour
factor and texture, emissive, alpha mode, KHR_texture_transform), embedded images, a node
hierarchy with TRS, skins (any number of JOINTS_n/WEIGHTS_n sets), morph targets (POSITION
deltas, default weights) and animations of translation/rotation/scale/weights with LINEAR,
STEP or CUBICSPLINE samplers.

Layout choices, all for validity and reproducibility:
- One buffer; every accessor has its own bufferView, so no byteStride is needed; each
  bufferView starts on a 4-byte boundary (the spec's alignment rule for vertex attributes and
  the largest component size we write).
- Floats are stored as float32; accessor min/max (required for POSITION, morph target
  POSITION and animation inputs) are computed from the float32 values, so they match the
  stored data exactly.
- The JSON text is compact and its key order fixed, so equal inputs give identical bytes.
- Unit vectors/weights are re-normalised in float32 where the validator checks them
  (NORMAL, rotation outputs, WEIGHTS_n sums).
- Non-finite positions are written as they are (a bad-asset generator needs them); min/max
  then ignore them, since JSON has no NaN.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FLOAT, UINT8, UINT16, UINT32 = 5126, 5121, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
_DTYPES = {FLOAT: "<f4", UINT8: "<u1", UINT16: "<u2", UINT32: "<u4"}
_TRS_WIDTH = {"translation": 3, "rotation": 4, "scale": 3}
INTERPOLATIONS = ("LINEAR", "STEP", "CUBICSPLINE")


@dataclass
class Primitive:
    """One triangle primitive. Arrays are per vertex ([V, ...]) except faces [F,3]."""

    positions: np.ndarray  # [V,3]
    faces: np.ndarray  # [F,3] vertex indices (written as uint32)
    normals: np.ndarray | None = None  # [V,3], normalised on write
    colors: np.ndarray | None = None  # [V,3] or [V,4] linear RGB(A) in [0,1]
    texcoords: Sequence[np.ndarray] = ()  # TEXCOORD_0, TEXCOORD_1, ...: [V,2] each
    joints: np.ndarray | None = None  # [V,K] joint indices into the skin's joints list
    weights: np.ndarray | None = None  # [V,K]; K is padded to a multiple of 4 -> JOINTS_n/WEIGHTS_n
    targets: Sequence[np.ndarray] = ()  # morph targets, each POSITION deltas [V,3]
    material: int | None = None


@dataclass
class Channel:
    """One animated property: `values` [n, C] per key, or [n, 3, C] (in-tangent, value,
    out-tangent) for CUBICSPLINE. C = 3 (translation, scale), 4 (rotation quaternion x, y, z, w)
    or the number of morph targets (weights)."""

    node: int
    path: str  # translation | rotation | scale | weights
    times: np.ndarray  # [n] seconds, strictly increasing
    values: np.ndarray
    interpolation: str = "LINEAR"


@dataclass
class GltfBuilder:
    generator: str = "shapegen4d gltf_write"
    _bin: bytearray = field(default_factory=bytearray)
    _doc: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {k: [] for k in (
            "accessors", "bufferViews", "images", "samplers", "textures", "materials", "meshes", "nodes", "skins",
            "animations", "cameras")}
    )
    _roots: list[int] = field(default_factory=list)
    _inputs: dict[bytes, int] = field(default_factory=dict)  # keyframe times shared between samplers

    # ------------------------------------------------------------------ low level

    def add_accessor(
        self,
        array: np.ndarray,
        component_type: int = FLOAT,
        target: int | None = None,
        minmax: bool = False,
        width: int | None = None,
    ) -> int:
        """Append array data (one element per row; `width` components each, default the row
        size) as a new bufferView + accessor; returns the accessor index."""
        data = np.ascontiguousarray(np.asarray(array), dtype=_DTYPES[component_type])
        width = width if width is not None else int(np.prod(data.shape[1:], dtype=np.int64))
        flat = data.reshape(-1, width)
        while len(self._bin) % 4:
            self._bin.append(0)
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self._bin), "byteLength": flat.nbytes}
        if target is not None:
            view["target"] = target
        self._bin += flat.tobytes()
        self._doc["bufferViews"].append(view)
        acc: dict[str, Any] = {
            "bufferView": len(self._doc["bufferViews"]) - 1,
            "componentType": component_type,
            "count": len(flat),
            "type": _TYPES[width],
        }
        if minmax:
            # Bounds of the stored (rounded) values; non-finite entries are ignored.
            vals = np.where(np.isfinite(flat), flat, np.nan).astype(np.float64)
            acc["min"] = [_num(x) for x in np.nanmin(vals, axis=0)]
            acc["max"] = [_num(x) for x in np.nanmax(vals, axis=0)]
        self._doc["accessors"].append(acc)
        return len(self._doc["accessors"]) - 1

    # ------------------------------------------------------------------ scene content

    def add_image(self, data: bytes, mime_type: str = "image/png", uri: str | None = None) -> int:
        """An image embedded in the buffer (or, with `uri`, referenced as an external file)."""
        if uri is not None:
            self._doc["images"].append({"uri": uri})
        else:
            while len(self._bin) % 4:
                self._bin.append(0)
            self._doc["bufferViews"].append({"buffer": 0, "byteOffset": len(self._bin), "byteLength": len(data)})
            self._bin += data
            self._doc["images"].append({"bufferView": len(self._doc["bufferViews"]) - 1, "mimeType": mime_type})
        return len(self._doc["images"]) - 1

    def add_texture(self, image: int, wrap: tuple[int, int] | None = None, filters: tuple[int, int] | None = None) -> int:
        """A texture of `image`; `wrap` = (wrapS, wrapT) and `filters` = (magFilter, minFilter), GL enums."""
        tex: dict[str, Any] = {"source": image}
        if wrap is not None or filters is not None:
            sampler: dict[str, Any] = {}
            if wrap is not None:
                sampler["wrapS"], sampler["wrapT"] = wrap
            if filters is not None:
                sampler["magFilter"], sampler["minFilter"] = filters
            self._doc["samplers"].append(sampler)
            tex["sampler"] = len(self._doc["samplers"]) - 1
        self._doc["textures"].append(tex)
        return len(self._doc["textures"]) - 1

    def add_material(self, base_color: Sequence[float] = (0.8, 0.8, 0.8, 1.0), name: str = "",
                     metallic: float = 0.0, roughness: float = 0.8, double_sided: bool = False,
                     base_color_texture: dict | None = None, emissive: Sequence[float] | None = None,
                     emissive_texture: dict | None = None, alpha_mode: str | None = None,
                     alpha_cutoff: float | None = None) -> int:
        """Texture references are glTF textureInfo objects: {"index": t, "texCoord": n,
        "extensions": {"KHR_texture_transform": {...}}} (written as given)."""
        mat: dict[str, Any] = {
            "pbrMetallicRoughness": {
                "baseColorFactor": [_num(c) for c in base_color],
                "metallicFactor": _num(metallic),
                "roughnessFactor": _num(roughness),
            }
        }
        if base_color_texture is not None:
            mat["pbrMetallicRoughness"]["baseColorTexture"] = base_color_texture
        if emissive is not None:
            mat["emissiveFactor"] = [_num(c) for c in emissive]
        if emissive_texture is not None:
            mat["emissiveTexture"] = emissive_texture
        if alpha_mode is not None:
            mat["alphaMode"] = alpha_mode
        if alpha_cutoff is not None:
            mat["alphaCutoff"] = _num(alpha_cutoff)
        if name:
            mat["name"] = name
        if double_sided:
            mat["doubleSided"] = True
        self._doc["materials"].append(mat)
        return len(self._doc["materials"]) - 1

    def add_mesh(self, primitives: Sequence[Primitive], weights: Sequence[float] | None = None, name: str = "") -> int:
        """A mesh of triangle primitives; `weights` are the default morph target weights."""
        prims = [self._primitive(p) for p in primitives]
        n_targets = {len(p.targets) for p in primitives}
        if len(n_targets) > 1:
            raise ValueError("every primitive of a mesh must have the same number of morph targets")
        mesh: dict[str, Any] = {"primitives": prims}
        k = n_targets.pop() if n_targets else 0
        if weights is not None:
            if len(weights) != k:
                raise ValueError(f"{len(weights)} default weights for {k} morph targets")
            mesh["weights"] = [_num(w) for w in weights]
        if name:
            mesh["name"] = name
        self._doc["meshes"].append(mesh)
        return len(self._doc["meshes"]) - 1

    def _primitive(self, p: Primitive) -> dict[str, Any]:
        pos = np.asarray(p.positions, np.float64)
        faces = np.asarray(p.faces)
        if pos.ndim != 2 or pos.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError("positions must be [V,3] and faces [F,3]")
        if len(faces) and (faces.min() < 0 or faces.max() >= len(pos)):
            raise ValueError("face index out of range")
        attrs: dict[str, int] = {"POSITION": self.add_accessor(pos, FLOAT, ARRAY_BUFFER, minmax=True)}
        if p.normals is not None:
            n = np.asarray(p.normals, np.float32).astype(np.float64)
            n = n / np.linalg.norm(n, axis=1, keepdims=True)
            attrs["NORMAL"] = self.add_accessor(n, FLOAT, ARRAY_BUFFER)
        for k, uv in enumerate(p.texcoords):
            attrs[f"TEXCOORD_{k}"] = self.add_accessor(np.asarray(uv, np.float64), FLOAT, ARRAY_BUFFER)
        if p.colors is not None:
            attrs["COLOR_0"] = self.add_accessor(np.clip(p.colors, 0.0, 1.0), FLOAT, ARRAY_BUFFER)
        if (p.joints is None) != (p.weights is None):
            raise ValueError("joints and weights go together")
        if p.joints is not None:
            for s, (j, w) in enumerate(_weight_sets(np.asarray(p.joints), np.asarray(p.weights, np.float64))):
                jtype = UINT8 if j.max(initial=0) < 256 else UINT16
                attrs[f"JOINTS_{s}"] = self.add_accessor(j, jtype, ARRAY_BUFFER)
                attrs[f"WEIGHTS_{s}"] = self.add_accessor(w, FLOAT, ARRAY_BUFFER)
        prim: dict[str, Any] = {
            "attributes": attrs,
            "indices": self.add_accessor(faces.reshape(-1), UINT32, ELEMENT_ARRAY_BUFFER, width=1),
            "mode": 4,
        }
        if p.material is not None:
            prim["material"] = p.material
        if p.targets:
            prim["targets"] = [
                {"POSITION": self.add_accessor(np.asarray(d, np.float64), FLOAT, ARRAY_BUFFER, minmax=True)}
                for d in p.targets
            ]
        return prim

    def add_node(
        self,
        mesh: int | None = None,
        parent: int | None = None,
        translation: Sequence[float] | None = None,
        rotation: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        skin: int | None = None,
        weights: Sequence[float] | None = None,
        name: str = "",
        camera: int | None = None,
    ) -> int:
        """A node; without `parent` it is a root of the (single) scene. Rotation is x, y, z, w."""
        node: dict[str, Any] = {}
        if name:
            node["name"] = name
        if mesh is not None:
            node["mesh"] = mesh
        if camera is not None:
            node["camera"] = camera
        if skin is not None:
            node["skin"] = skin
        for key, value in (("translation", translation), ("rotation", rotation), ("scale", scale)):
            if value is not None:
                node[key] = [_num(v) for v in value]
        if weights is not None:
            node["weights"] = [_num(w) for w in weights]
        self._doc["nodes"].append(node)
        index = len(self._doc["nodes"]) - 1
        if parent is None:
            self._roots.append(index)
        else:
            self._doc["nodes"][parent].setdefault("children", []).append(index)
        return index

    def add_camera(self, yfov: float, aspect_ratio: float, znear: float, zfar: float | None = None, name: str = "") -> int:
        """A perspective camera (yfov in radians); its node looks down its local -z with +y up."""
        persp: dict[str, Any] = {"yfov": _num(yfov), "aspectRatio": _num(aspect_ratio), "znear": _num(znear)}
        if zfar is not None:
            persp["zfar"] = _num(zfar)
        cam: dict[str, Any] = {"type": "perspective", "perspective": persp}
        if name:
            cam["name"] = name
        self._doc["cameras"].append(cam)
        return len(self._doc["cameras"]) - 1

    def add_skin(self, joints: Sequence[int], inverse_bind_matrices: np.ndarray | None = None,
                 skeleton: int | None = None, name: str = "") -> int:
        """A skin over joint nodes; inverse bind matrices [J,4,4] in row-major math form."""
        skin: dict[str, Any] = {"joints": [int(j) for j in joints]}
        if inverse_bind_matrices is not None:
            ibm = np.asarray(inverse_bind_matrices, np.float64)
            if ibm.shape != (len(joints), 4, 4):
                raise ValueError(f"inverse bind matrices must be [{len(joints)},4,4]")
            # glTF matrices are column-major: store the transpose of each row-major matrix.
            skin["inverseBindMatrices"] = self.add_accessor(ibm.transpose(0, 2, 1).reshape(-1, 16), FLOAT)
        if skeleton is not None:
            skin["skeleton"] = skeleton
        if name:
            skin["name"] = name
        self._doc["skins"].append(skin)
        return len(self._doc["skins"]) - 1

    def add_animation(self, channels: Sequence[Channel], name: str = "") -> int:
        samplers, chans = [], []
        for ch in channels:
            if ch.interpolation not in INTERPOLATIONS:
                raise ValueError(f"unknown interpolation {ch.interpolation!r}")
            times = np.asarray(ch.times, np.float64).reshape(-1)
            values = np.asarray(ch.values, np.float64)
            per_key = 3 if ch.interpolation == "CUBICSPLINE" else 1
            values = values.reshape(len(times), per_key, -1)
            width = _TRS_WIDTH.get(ch.path)
            if ch.path != "weights" and width != values.shape[-1]:
                raise ValueError(f"{ch.path} values need {width} components, got {values.shape[-1]}")
            if ch.path == "rotation":
                # Unit quaternions (the validator checks); tangents are not quaternions.
                mid = values[:, per_key // 2]
                values[:, per_key // 2] = mid / np.linalg.norm(mid, axis=-1, keepdims=True)
            samplers.append({
                "input": self._input(times),
                "interpolation": ch.interpolation,
                # Morph weights are a flat SCALAR list; TRS outputs one vector per entry.
                "output": self.add_accessor(values.reshape(-1, 1 if ch.path == "weights" else width), FLOAT),
            })
            chans.append({"sampler": len(samplers) - 1, "target": {"node": ch.node, "path": ch.path}})
        anim: dict[str, Any] = {"channels": chans, "samplers": samplers}
        if name:
            anim["name"] = name
        self._doc["animations"].append(anim)
        return len(self._doc["animations"]) - 1

    def _input(self, times: np.ndarray) -> int:
        key = times.astype("<f4").tobytes()
        if key not in self._inputs:
            self._inputs[key] = self.add_accessor(times.reshape(-1, 1), FLOAT, minmax=True)
        return self._inputs[key]

    # ------------------------------------------------------------------ output

    def document(self, buffer_uri: str | None = None) -> dict[str, Any]:
        """The glTF JSON document (a new dict each call)."""
        doc: dict[str, Any] = {"asset": {"version": "2.0", "generator": self.generator}}
        doc["scene"] = 0
        doc["scenes"] = [{"nodes": list(self._roots)}]
        for key, items in self._doc.items():
            if items:
                doc[key] = json.loads(json.dumps(items))  # deep copy
        used = sorted(e for e in ("KHR_texture_transform",) if f'"{e}"' in json.dumps(self._doc["materials"]))
        if used:
            doc["extensionsUsed"] = used
        if self._bin:
            buf: dict[str, Any] = {"byteLength": len(self._bin)}
            if buffer_uri is not None:
                buf["uri"] = buffer_uri
            doc["buffers"] = [buf]
        return doc

    def binary(self) -> bytes:
        return bytes(self._bin)

    def to_glb(self) -> bytes:
        """The asset as one GLB: 12-byte header, JSON chunk (space padded), BIN chunk (zero padded)."""
        js = _dumps(self.document())
        js += b" " * (-len(js) % 4)
        chunks = struct.pack("<II", len(js), 0x4E4F534A) + js
        if self._bin:
            data = bytes(self._bin) + b"\0" * (-len(self._bin) % 4)
            chunks += struct.pack("<II", len(data), 0x004E4942) + data
        return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks

    def to_gltf_files(self, folder: str | Path, name: str) -> tuple[Path, Path]:
        """Write `<name>.gltf` and its external buffer `<name>.bin`; returns both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        gltf, bin_ = folder / f"{name}.gltf", folder / f"{name}.bin"
        gltf.write_bytes(_dumps(self.document(buffer_uri=bin_.name)))
        bin_.write_bytes(bytes(self._bin))
        return gltf, bin_


def _num(x: float) -> float | int:
    """A JSON number: integral values as int (shorter, and exact), others as float."""
    f = float(x)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def quantize_weights(weights: np.ndarray) -> np.ndarray:
    """Skin weights [V,K] as written: normalised, padded to a multiple of 4 columns, float32.

    The float32 weights of each vertex are made to sum to 1 in float32 (the largest weight
    absorbs the rounding), as the validator checks.
    """
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 2 or np.any(weights < 0) or np.any(weights.sum(1) <= 0):
        raise ValueError("weights must be [V,K], non-negative with a positive sum per vertex")
    w = np.pad(weights / weights.sum(1, keepdims=True), ((0, 0), (0, -weights.shape[1] % 4))).astype(np.float32)
    rows, top = np.arange(len(w)), np.argmax(w, axis=1)
    w[rows, top] = np.float32(1.0) - (w.sum(1, dtype=np.float32) - w[rows, top])
    return w


def _weight_sets(joints: np.ndarray, weights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split [V,K] joints/weights into sets of 4 (JOINTS_n/WEIGHTS_n); unused slots get
    joint 0 and weight 0."""
    if joints.shape != weights.shape or joints.ndim != 2:
        raise ValueError("joints and weights must both be [V,K]")
    w = quantize_weights(weights)
    joints = np.pad(np.where(weights > 0, joints, 0), ((0, 0), (0, w.shape[1] - joints.shape[1])))
    return [(joints[:, s : s + 4], w[:, s : s + 4]) for s in range(0, w.shape[1], 4)]
