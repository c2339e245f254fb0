"""Blender's evaluation of glTF animations, the independent reference for tests/test_bake_blender.py.

Runs under the separate bpy interpreter (bpy 5.0.1 needs numpy < 2), NOT the project venv:

    .venv-bpy/bin/python tests/blender_reference.py job.json

job.json is a list of {"path": "<file.glb>", "animation": i, "times": [seconds...], "out": "<dir>"};
for each job this writes <out>/frame_000.npz ... with `vertices` [V,3] float64 (world space, glTF
Y-up) and `faces` [F,3] int64 (Blender's loop triangles of every evaluated mesh object, merged).

How Blender is driven, and why:
- Factory settings before each job, so no user preference (fps, importer options) leaks in.
- Blender's importer stores all animations as muted NLA tracks and activates the first one; a
  node that the chosen animation does not target would keep whatever pose another animation
  left. So the importer is given a copy of the GLB whose JSON keeps only the requested
  animation (geometry and buffers are untouched).
- The importer keys glTF second t at frame t * fps * fps_base (io_scene_gltf2
  blender/imp/animation_node.py); we set exactly that frame, with the fraction as subframe.
"""
from __future__ import annotations

import json
import math
import os
import struct
import sys
import tempfile

import bpy
import numpy as np


def only_animation(glb: bytes, index: int) -> bytes:
    """The GLB with `animations` reduced to the one at `index`."""
    magic, version, _ = struct.unpack_from("<4sII", glb, 0)
    if magic != b"glTF" or version != 2:
        raise ValueError("not a GLB 2.0 file")
    json_len, json_type = struct.unpack_from("<II", glb, 12)
    if json_type != 0x4E4F534A:
        raise ValueError("first GLB chunk is not JSON")
    doc = json.loads(glb[20 : 20 + json_len])
    doc["animations"] = [doc["animations"][index]]
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    rest = glb[20 + json_len :]
    body = struct.pack("<II", len(js), 0x4E4F534A) + js + rest
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def evaluated_mesh(depsgraph) -> tuple[np.ndarray, np.ndarray]:
    verts, faces, offset = [], [], 0
    for obj in bpy.context.scene.objects:
        if obj.type != "MESH":
            continue
        ev = obj.evaluated_get(depsgraph)
        mesh = ev.to_mesh()
        try:
            mesh.calc_loop_triangles()
            co = np.empty(len(mesh.vertices) * 3, np.float32)
            mesh.vertices.foreach_get("co", co)
            tri = np.empty(len(mesh.loop_triangles) * 3, np.int32)
            mesh.loop_triangles.foreach_get("vertices", tri)
        finally:
            ev.to_mesh_clear()
        m = np.array(ev.matrix_world, np.float64)
        co = co.reshape(-1, 3).astype(np.float64) @ m[:3, :3].T + m[:3, 3]
        verts.append(co)
        faces.append(tri.reshape(-1, 3).astype(np.int64) + offset)
        offset += len(co)
    v = np.concatenate(verts) if verts else np.zeros((0, 3))
    # Blender Z-up (x, y, z) -> glTF Y-up (x, z, -y): the inverse of the importer's (x, -z, y).
    v = np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)
    return v, np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)


def run(job: dict, tmp: str) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    with open(job["path"], "rb") as f:
        glb = only_animation(f.read(), job["animation"])
    path = os.path.join(tmp, "asset.glb")
    with open(path, "wb") as f:
        f.write(glb)
    # disable_bone_shape: otherwise the importer adds a mesh object as the display shape of bones.
    result = bpy.ops.import_scene.gltf(filepath=path, disable_bone_shape=True)
    if result != {"FINISHED"}:
        raise RuntimeError(f"glTF import of {job['path']} failed: {result}")
    scene = bpy.context.scene
    fps = scene.render.fps * scene.render.fps_base  # the importer's seconds -> frames factor
    os.makedirs(job["out"], exist_ok=True)
    for k, t in enumerate(job["times"]):
        frame = t * fps
        whole = math.floor(frame)
        scene.frame_set(int(whole), subframe=frame - whole)
        v, f = evaluated_mesh(bpy.context.evaluated_depsgraph_get())
        np.savez(os.path.join(job["out"], f"frame_{k:03d}.npz"), vertices=v, faces=f, time=t)


def main() -> None:
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        for job in jobs:
            run(job, tmp)


if __name__ == "__main__":
    main()
